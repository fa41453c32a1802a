"""The CRM Sync service: what a CRM's events do to the circle.

Every purchase and refund goes through `loyalty.services.record_transaction` /
`refund_transaction` with the id `<provider>:<id in the CRM>`, so a webhook, a retried
webhook and a later sync of the same visit make one purchase: the (business, external id)
unique key decides. Each record the CRM told us about is kept as a `CrmRecord`, also when
it could not become a purchase (no phone, too old), so nothing is dropped silently.

The catalogue's functions keep their names: `sync_transactions`, `process_webhook`,
`test_crm_connection`.
"""

import json
import logging
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from urllib.parse import urlencode

from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from accounts.models import Business, Membership
from accounts.phones import InvalidPhone, normalize_phone
from integrations.models import CRMIntegration, CrmRecord, WebhookDelivery
from integrations.providers import get_provider
from integrations.providers.base import (
    CrmEvent,
    ProviderError,
    WebhookRejected,
    WebhookUnauthorized,
)
from loyalty import services as loyalty
from loyalty.models import Transaction

logger = logging.getLogger(__name__)

Health = CRMIntegration.Health


@dataclass
class Outcome:
    """What a batch of events did: counts by result, and the purchases touched."""

    counts: Counter = field(default_factory=Counter)
    transactions: list = field(default_factory=list)
    reasons: list = field(default_factory=list)  # (external id, reason) of what was not recorded

    def as_dict(self) -> dict:
        return {"counts": dict(self.counts), "notes": [f"{eid}: {why}" for eid, why in self.reasons[:50]]}


def purchase_id(integration: CRMIntegration, external_id: str) -> str:
    """The circle's purchase id for a CRM record: unique per business and provider."""
    return f"{integration.provider}:{external_id}"[:100]


# --- Applying events ------------------------------------------------------------------------


def apply_events(integration: CRMIntegration, events, *, via: str, outcome: Outcome | None = None) -> Outcome:
    """Apply a CRM's events in order; one bad record never stops the others."""
    outcome = outcome or Outcome()
    for event in events:
        result = apply_event(integration, event, via=via, outcome=outcome)
        outcome.counts[result] += 1
    return outcome


def apply_event(integration: CRMIntegration, event: CrmEvent, *, via: str, outcome: Outcome) -> str:
    if event.kind == CrmEvent.PURCHASE:
        return _apply_purchase(integration, event, via=via, outcome=outcome)
    if event.kind == CrmEvent.REFUND:
        return _apply_refund(integration, event, via=via, outcome=outcome)
    outcome.reasons.append((event.external_id, event.reason or "ignored"))
    return "ignored"


def _apply_purchase(integration, event: CrmEvent, *, via, outcome) -> str:
    def keep(status, reason="", txn=None):
        _keep_record(integration, event, kind=CrmRecord.Kind.PURCHASE, status=status, reason=reason, txn=txn, via=via)
        if reason:
            outcome.reasons.append((event.external_id, reason))

    if event.amount is None or event.amount <= 0:
        keep(CrmRecord.Status.IGNORED, "no money paid")
        return "ignored"
    if not event.phone:
        keep(CrmRecord.Status.UNMATCHED, "the CRM has no phone for this customer")
        return "unmatched"
    try:
        phone = normalize_phone(event.phone)
    except InvalidPhone:
        keep(CrmRecord.Status.UNMATCHED, f"the phone {event.phone!r} is not a valid number")
        return "unmatched"
    try:
        result = loyalty.record_transaction(
            business=integration.business,
            external_id=purchase_id(integration, event.external_id),
            amount=event.amount,
            phone=phone,
            occurred_at=event.occurred_at,
            source=via,
        )
    except loyalty.IdempotencyConflict:
        # The CRM changed a record after we counted it (amount, time or customer): the
        # first version stands, and the record says what changed for the partner to see.
        txn = Transaction.objects.select_related("customer").get(
            business=integration.business, external_id=purchase_id(integration, event.external_id)
        )
        keep(CrmRecord.Status.RECORDED, _what_changed(txn, event, phone), txn)
        outcome.transactions.append(txn)
        return "changed"
    except (loyalty.InvalidPurchase, loyalty.InsufficientBonuses, loyalty.RedemptionOverLimit) as exc:
        keep(CrmRecord.Status.REJECTED, str(exc.message))
        return "rejected"
    keep(CrmRecord.Status.RECORDED, txn=result.transaction)
    outcome.transactions.append(result.transaction)
    return "recorded" if result.created else "duplicate"


def _what_changed(txn: Transaction, event: CrmEvent, phone: str) -> str:
    changes = []
    if txn.gross_amount != event.amount:
        changes.append(f"amount {txn.gross_amount} → {event.amount}")
    if event.occurred_at and txn.occurred_at != event.occurred_at:
        changes.append("time")
    if txn.customer.phone != phone:
        changes.append("customer")
    return f"changed in the CRM after it was counted ({', '.join(changes) or 'details'}); the first version stands"


def _apply_refund(integration, event: CrmEvent, *, via, outcome) -> str:
    external_id = purchase_id(integration, event.external_id)
    purchase = Transaction.objects.filter(business=integration.business, external_id=external_id).first()
    if purchase is None:
        # Never counted (unpaid, or unmatched): an unmatched record is closed so that it no
        # longer waits for a phone; anything else is nothing to undo.
        closed = CrmRecord.objects.filter(
            integration=integration, kind=CrmRecord.Kind.PURCHASE, external_id=event.external_id
        ).update(status=CrmRecord.Status.IGNORED, reason="cancelled in the CRM", updated_at=timezone.now())
        outcome.reasons.append((event.external_id, "refund of a purchase never counted"))
        return "closed" if closed else "skipped"
    try:
        result = loyalty.refund_transaction(
            business=integration.business,
            external_id=external_id,
            amount=event.amount,
            refund_id=purchase_id(integration, event.refund_id),
        )
    except (loyalty.RefundNotPossible, loyalty.InvalidPurchase, loyalty.IdempotencyConflict) as exc:
        left = exc.extra.get("refundable") if isinstance(exc, loyalty.RefundNotPossible) else None
        if left is not None and Decimal(left) <= 0:
            outcome.reasons.append((event.external_id, "already refunded in full"))
            return "duplicate"
        # A refund of more than is left is the CRM's mistake to see, not a repeat.
        reason = f"{exc.message} ({left} left)" if left is not None else str(exc.message)
        _keep_record(
            integration,
            event,
            kind=CrmRecord.Kind.REFUND,
            status=CrmRecord.Status.REJECTED,
            reason=reason,
            via=via,
        )
        outcome.reasons.append((event.external_id, reason))
        return "rejected"
    _keep_record(
        integration, event, kind=CrmRecord.Kind.REFUND, status=CrmRecord.Status.RECORDED, txn=purchase, via=via
    )
    outcome.transactions.append(purchase)
    return "refunded" if result.created else "duplicate"


def _keep_record(integration, event: CrmEvent, *, kind, status, reason="", txn=None, via) -> None:
    """Create or update the record of what the CRM said; parallel deliveries of one record
    meet on its unique key."""
    external_id = event.refund_id if kind == CrmRecord.Kind.REFUND else event.external_id
    values = {
        "status": status,
        "reason": str(reason)[:500],
        "phone": event.phone[:40],
        "customer_name": event.customer_name[:200],
        "amount": event.amount,
        "occurred_at": event.occurred_at,
        "transaction": txn,
        "via": via,
    }
    record, created = CrmRecord.objects.get_or_create(
        integration=integration, kind=kind, external_id=external_id[:100], defaults=values
    )
    if not created:
        if record.status == CrmRecord.Status.RECORDED and status != CrmRecord.Status.RECORDED:
            values = {"reason": values["reason"]}  # a counted record stays counted
        elif txn is None:
            values.pop("transaction")
        CrmRecord.objects.filter(pk=record.pk).update(
            **values, times_seen=F("times_seen") + 1, updated_at=timezone.now()
        )


# --- Webhooks --------------------------------------------------------------------------------


class WebhookNotFound(Exception):
    """Unknown integration, wrong secret or an inactive integration: answered 404, nothing stored."""


def receive_webhook(integration_id, secret: str, *, body: bytes, content_type: str, headers) -> WebhookDelivery:
    """Take a webhook: check who sent it, store the body as it came, check it can be read
    and queue its processing. Raises WebhookNotFound (nothing stored) or returns the
    delivery, REJECTED when the body cannot be read."""
    import secrets as _secrets

    integration = CRMIntegration.objects.select_related("business").filter(pk=integration_id, is_active=True).first()
    # As bytes: compare_digest refuses str with non-ASCII letters (a TypeError, not a 404).
    if integration is None or not _secrets.compare_digest(str(secret).encode(), integration.webhook_secret.encode()):
        raise WebhookNotFound()
    provider = get_provider(integration)
    if not provider.accepts_webhooks:
        raise WebhookNotFound()  # Renovatio sends none: nobody should be posting here
    try:
        provider.check_webhook(headers)
    except WebhookUnauthorized as exc:
        raise WebhookNotFound() from exc
    # PostgreSQL text cannot hold NUL; no readable body has one outside a string's escapes.
    text = body.decode("utf-8", errors="replace").replace("\x00", "\ufffd")
    delivery = WebhookDelivery(integration=integration, content_type=content_type[:200], body=text)
    try:
        events = provider.parse_webhook(body, content_type)
    except WebhookRejected as exc:
        delivery.status = WebhookDelivery.Status.REJECTED
        delivery.error = str(exc)[:2000]
        delivery.processed_at = timezone.now()
        delivery.save()
        return delivery
    delivery.result = {"events": len(events)}
    delivery.save()
    from integrations.tasks import process_webhook_delivery

    transaction.on_commit(lambda: process_webhook_delivery.delay(delivery.pk))
    return delivery


def process_delivery(delivery_id: int) -> WebhookDelivery:
    """Apply a stored webhook's events (again, for a reprocess: idempotent). A provider
    error (a CRM to ask for details was down) leaves it FAILED and raises for a retry."""
    delivery = WebhookDelivery.objects.select_related("integration__business").get(pk=delivery_id)
    integration = delivery.integration
    WebhookDelivery.objects.filter(pk=delivery.pk).update(attempts=F("attempts") + 1)
    provider = get_provider(integration)
    try:
        events = provider.parse_webhook(delivery.body.encode("utf-8"), delivery.content_type)
    except WebhookRejected as exc:
        return _finish(delivery, WebhookDelivery.Status.REJECTED, error=str(exc))
    try:
        events = [provider.complete(event) if event.needs_details else event for event in events]
        outcome = apply_events(integration, events, via=Transaction.Source.WEBHOOK)
    except ProviderError as exc:
        _finish(delivery, WebhookDelivery.Status.FAILED, error=exc.message)
        raise
    except Exception as exc:
        # Not left "received" as if still waiting: failed, for staff to see and reprocess.
        _finish(delivery, WebhookDelivery.Status.FAILED, error=f"internal error: {type(exc).__name__}")
        raise
    return _finish(delivery, WebhookDelivery.Status.PROCESSED, result=outcome.as_dict())


def _finish(delivery, status, *, error="", result=None) -> WebhookDelivery:
    delivery.status = status
    delivery.error = error[:2000]
    if result is not None:
        delivery.result = result
    delivery.processed_at = timezone.now()
    delivery.save(update_fields=["status", "error", "result", "processed_at"])
    return delivery


def process_webhook(business_id, payload, *, provider: str | None = None) -> Transaction | None:
    """The catalogue's entry point: apply one webhook payload (bytes, a dict or a list as
    the CRM sends it) for a business's integration, now, and return the first purchase it
    touched (None if it touched none). The HTTP endpoint stores the body first and then
    does the same in a task."""
    integrations = CRMIntegration.objects.select_related("business").filter(business_id=business_id, is_active=True)
    if provider:
        integrations = integrations.filter(provider=provider)
    integration = integrations.first()
    if integration is None:
        raise CRMIntegration.DoesNotExist(f"No active integration for business {business_id}.")
    content_type = "application/json"
    if isinstance(payload, bytes):
        body = payload
    elif integration.provider == CRMIntegration.Provider.AMOCRM and isinstance(payload, dict):
        body, content_type = urlencode(payload).encode(), "application/x-www-form-urlencoded"
    else:
        body = json.dumps(payload, ensure_ascii=False).encode()
    adapter = get_provider(integration)
    events = [adapter.complete(e) if e.needs_details else e for e in adapter.parse_webhook(body, content_type)]
    outcome = apply_events(integration, events, via=Transaction.Source.WEBHOOK)
    return outcome.transactions[0] if outcome.transactions else None


def delete_old_webhooks(now: datetime | None = None) -> int:
    cutoff = (now or timezone.now()) - timedelta(days=settings.INTEGRATIONS_WEBHOOK_RETENTION_DAYS)
    deleted, _by_model = WebhookDelivery.objects.filter(received_at__lt=cutoff).delete()
    return deleted


# --- Sync ------------------------------------------------------------------------------------


class SyncBusy(Exception):
    """Another sync of this integration is running."""


def sync_integration(integration: CRMIntegration, since: datetime | None = None) -> Outcome:
    """Fetch what changed in the CRM since the watermark (less an overlap, so records
    changed while the last sync ran are seen again; seeing one twice changes nothing),
    apply it, move the watermark. A provider error fails the whole sync and counts
    towards the integration's health; the watermark then stays where it was."""
    lock, token = f"crm-sync:{integration.pk}", uuid.uuid4().hex
    if not cache.add(lock, token, timeout=settings.INTEGRATIONS_SYNC_INTERVAL_MINUTES * 60):
        raise SyncBusy()
    try:
        until = timezone.now()
        if since is None:
            if integration.watermark:
                since = integration.watermark - timedelta(minutes=settings.INTEGRATIONS_SYNC_OVERLAP_MINUTES)
            else:
                since = until - timedelta(days=settings.INTEGRATIONS_FIRST_SYNC_DAYS)
        provider = get_provider(integration)
        outcome = Outcome()
        try:
            for page in provider.fetch_changes(since, until):
                page = [provider.complete(event) if event.needs_details else event for event in page]
                apply_events(integration, page, via=Transaction.Source.SYNC, outcome=outcome)
        except ProviderError as exc:
            record_failure(integration, exc.message)
            raise
        except Exception as exc:
            # A bug of ours, or a CRM answer no provider foresaw: it counts towards health too,
            # so that a sync that never succeeds does not stay "ok".
            record_failure(integration, f"internal error: {type(exc).__name__}")
            raise
        record_success(integration, watermark=max(until, integration.watermark or until))
        return outcome
    finally:
        if cache.get(lock) == token:  # a sync that outlived its lock leaves the next one's alone
            cache.delete(lock)


def sync_transactions(business_id, since: datetime | None = None) -> int:
    """The catalogue's entry point: sync every active integration of the business that can
    be polled; the number of new purchases recorded. A failing integration does not stop
    the others (its error is on the integration)."""
    recorded = 0
    for integration in CRMIntegration.objects.select_related("business").filter(
        business_id=business_id, is_active=True
    ):
        if not get_provider(integration).can_sync:
            continue
        try:
            recorded += sync_integration(integration, since=since).counts["recorded"]
        except (ProviderError, SyncBusy) as exc:
            logger.warning("Sync of %s failed: %s", integration.pk, getattr(exc, "message", "busy"))
    return recorded


def due_integrations(now: datetime | None = None) -> list:
    """Active integrations whose last sync is older than the interval."""
    now = now or timezone.now()
    cutoff = now - timedelta(minutes=settings.INTEGRATIONS_SYNC_INTERVAL_MINUTES) + timedelta(seconds=30)
    candidates = CRMIntegration.objects.filter(is_active=True).exclude(last_sync_at__gt=cutoff)
    from integrations.providers import provider_class

    return [pk for pk, code in candidates.values_list("pk", "provider") if provider_class(code).can_sync]


def test_crm_connection(integration: CRMIntegration) -> bool:
    """The catalogue's check: one cheap authenticated call to the CRM. The outcome (and the
    CRM's message on failure) is stored on the integration."""
    return check_connection(integration)[0]


test_crm_connection.__test__ = False  # a service, not a pytest test


def check_connection(integration: CRMIntegration) -> tuple[bool, str]:
    try:
        description = get_provider(integration).test_connection()
    except ProviderError as exc:
        CRMIntegration.objects.filter(pk=integration.pk).update(last_error=exc.message, last_error_at=timezone.now())
        integration.last_error = exc.message
        return False, exc.message
    # The settings work now: an old error would only mislead (health is the syncs' to set).
    CRMIntegration.objects.filter(pk=integration.pk).update(last_error="", last_error_at=None)
    integration.last_error, integration.last_error_at = "", None
    return True, description


def record_success(integration: CRMIntegration, *, watermark: datetime) -> None:
    now = timezone.now()
    integration.last_sync_at = integration.last_success_at = now
    integration.watermark = watermark
    integration.consecutive_failures = 0
    integration.health = Health.OK
    integration.save(
        update_fields=["last_sync_at", "last_success_at", "watermark", "consecutive_failures", "health", "updated_at"]
    )


def record_failure(integration: CRMIntegration, message: str) -> None:
    """Count a failed sync; past the thresholds the integration turns degraded, then failing,
    and its business's owners are told once when it turns failing."""
    now = timezone.now()
    with transaction.atomic():
        locked = CRMIntegration.objects.select_for_update().get(pk=integration.pk)
        before = locked.health
        locked.consecutive_failures += 1
        locked.last_sync_at = now
        locked.last_error, locked.last_error_at = message[:2000], now
        if locked.consecutive_failures >= settings.INTEGRATIONS_FAILING_AFTER:
            locked.health = Health.FAILING
        elif locked.consecutive_failures >= settings.INTEGRATIONS_DEGRADED_AFTER:
            locked.health = Health.DEGRADED
        locked.save(
            update_fields=[
                "consecutive_failures",
                "last_sync_at",
                "last_error",
                "last_error_at",
                "health",
                "updated_at",
            ]
        )
        if locked.health == Health.FAILING and before != Health.FAILING:
            _tell_owners(locked)
    for name in ("consecutive_failures", "last_sync_at", "last_error", "last_error_at", "health"):
        setattr(integration, name, getattr(locked, name))


def _tell_owners(integration: CRMIntegration) -> None:
    from notifications.services import notify_after_commit

    business: Business = integration.business
    context = {
        "business_name": business.name,
        "provider": integration.get_provider_display(),
        "failures": integration.consecutive_failures,
        "error": integration.last_error[:300],
    }
    owners = Membership.objects.filter(business=business, role=Membership.Role.OWNER, user__is_active=True)
    for user_id in owners.values_list("user_id", flat=True):
        notify_after_commit(
            user_id=user_id,
            messages=[("integration_failing", context)],
            event_key=f"crm-failing:{integration.pk}:{integration.last_error_at:%Y%m%d%H%M%S}",
        )


# --- Connecting --------------------------------------------------------------------------------


def connect_integration(*, business: Business, provider: str, form_data: dict) -> CRMIntegration:
    """Create or update the business's integration with a provider from the portal's form:
    secrets into the encrypted credentials (an empty secret field keeps the stored one),
    the rest into its settings; then the provider's own connect step (an OAuth code swap)."""
    from integrations.providers import provider_class

    spec = provider_class(provider)
    with transaction.atomic():
        integration, created = CRMIntegration.objects.select_for_update().get_or_create(
            business=business, provider=provider
        )
        _fill_from_form(integration, spec, form_data)
        if created:
            integration.is_active = True  # an edit keeps a paused integration paused
        integration.save()
        # Inside the transaction: a refused OAuth code leaves no half-made integration.
        get_provider(integration).on_connect(form_data)
    integration.refresh_from_db()
    return integration


def _fill_from_form(integration: CRMIntegration, spec, form_data: dict) -> None:
    credentials = integration.credentials
    config = dict(integration.config or {})
    for form_field in spec.fields:
        value = form_data.get(form_field.name)
        if isinstance(value, str):
            value = value.strip()
        if form_field.secret:
            if value:
                credentials[form_field.name] = value
        else:
            config[form_field.name] = value if value is not None else ""
    integration.credentials = credentials
    integration.config = config
