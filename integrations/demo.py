"""Demo integrations for `seed_demo`: one per provider, each in a state the portal can show
(healthy with synced purchases, a webhook log, unmatched records, degraded, failing).

Purchases go through `integrations.services.apply_events`, the path real CRM events take,
with fixed ids, so seeding twice records nothing twice. Each event is applied on the demo
clock (`loyalty.demo.clock_at`) when the scheduled sync after it would have picked it up,
so its purchase, ledger entries and record carry that time."""

import json
from datetime import datetime, timedelta
from decimal import Decimal
from operator import itemgetter

from django.conf import settings
from django.utils import timezone

from accounts.demo import customer_phone
from accounts.models import Business
from integrations import services
from integrations.models import CRMIntegration, WebhookDelivery
from integrations.providers.base import CrmEvent, purchase, refund
from loyalty.demo import clock_at
from loyalty.models import Transaction

# slug → provider, settings, demo credentials (not real keys), failures in a row, last error
DEMO = [
    ("len-salon", "yclients", {"company_id": "4564"}, {"user_token": "demo-yclients-user-token-7f3a"}, 0, ""),
    ("volga-bistro", "iiko", {"organization_ids": ""}, {"api_login": "demo-iiko-api-login-51c2"}, 0, ""),
    ("zerno-coffee", "onec", {"base_url": ""}, {}, 0, ""),
    (
        "asana-yoga",
        "amocrm",
        {"subdomain": "asana-yoga"},
        {"access_token": "demo-amocrm-access-token-90b1", "refresh_token": "demo-refresh-4411"},
        4,
        "amoCRM: access refused: Invalid user name or password. Reconnect amoCRM with a new authorization code.",
    ),
    (
        "dental-plus",
        "renovatio",
        {"clinic_id": "1"},
        {"api_key": "demo-renovatio-api-key-c0de"},
        12,
        "Renovatio: no answer in time (app.rnova.org).",
    ),
]


def seed_integrations() -> dict:
    now = timezone.now()
    created = recorded = 0
    for slug, provider, config, credentials, failures, error in DEMO:
        business = Business.objects.filter(slug=slug).first()
        if business is None:
            continue
        integration, is_new = CRMIntegration.objects.get_or_create(
            business=business, provider=provider, defaults={"config": config}
        )
        if is_new:
            integration.credentials = credentials
            created += 1
        outcome = services.Outcome()
        for synced_at, event in _events(provider, now):
            with clock_at(synced_at):
                services.apply_events(integration, [event], via=Transaction.Source.SYNC, outcome=outcome)
        recorded += outcome.counts["recorded"]
        if provider in ("iiko", "onec"):
            _webhook_log(integration, now)
        health = CRMIntegration.Health.OK
        if failures >= 10:
            health = CRMIntegration.Health.FAILING
        elif failures >= 3:
            health = CRMIntegration.Health.DEGRADED
        integration.health, integration.consecutive_failures = health, failures
        integration.last_error = error
        integration.last_error_at = now - timedelta(minutes=7) if error else None
        integration.last_sync_at = now - timedelta(minutes=7)
        integration.last_success_at = now - timedelta(minutes=7 + 15 * failures)
        integration.watermark = integration.last_success_at
        integration.save()
    return {"integrations": CRMIntegration.objects.count(), "created": created, "recorded": recorded}


def _events(provider: str, now: datetime) -> list[tuple[datetime, CrmEvent]]:
    """A few paid visits of demo customers, one without a phone (unmatched), one cancelled
    the next day; each with when the scheduled sync after it picked it up, in that order."""
    prefix = {"yclients": "record", "iiko": "order", "onec": "sale", "amocrm": "lead", "renovatio": "appointment"}[
        provider
    ]
    amounts = [Decimal("1850.00"), Decimal("2400.00"), Decimal("960.00"), Decimal("3150.00")]
    visits = [
        purchase(
            f"{prefix}:demo-{index}",
            amount,
            now - timedelta(days=index + 1, hours=3),
            phone=customer_phone(index + 3),
        )
        for index, amount in enumerate(amounts, start=1)
    ]
    visits.append(purchase(f"{prefix}:demo-walk-in", Decimal("700.00"), now - timedelta(days=1), customer_name="Гость"))
    interval = timedelta(minutes=settings.INTEGRATIONS_SYNC_INTERVAL_MINUTES)

    def synced(moment: datetime) -> datetime:
        return min(moment + interval, now)

    events = [(synced(visit.occurred_at), visit) for visit in visits]
    cancelled = refund(f"{prefix}:demo-4", refund_id=f"{prefix}:demo-4:cancelled")
    events.append((synced(visits[3].occurred_at + timedelta(days=1)), cancelled))
    return sorted(events, key=itemgetter(0))


def _webhook_log(integration: CRMIntegration, now) -> None:
    """Two processed deliveries and one rejected, so the webhook pages have rows."""
    if integration.webhooks.exists():
        return
    body = json.dumps({"demo": True, "note": "a seeded webhook; real bodies are kept as the CRM sent them"})
    WebhookDelivery.objects.create(
        integration=integration,
        content_type="application/json",
        body=body,
        status=WebhookDelivery.Status.PROCESSED,
        result={"counts": {"recorded": 1}},
        attempts=1,
        processed_at=now - timedelta(hours=2),
    )
    WebhookDelivery.objects.create(
        integration=integration,
        content_type="application/json",
        body=body,
        status=WebhookDelivery.Status.PROCESSED,
        result={"counts": {"duplicate": 1}},
        attempts=1,
        processed_at=now - timedelta(hours=1),
    )
    WebhookDelivery.objects.create(
        integration=integration,
        content_type="text/plain",
        body="not json",
        status=WebhookDelivery.Status.REJECTED,
        error="The body is not JSON: Expecting value: line 1 column 1 (char 0)",
        processed_at=now - timedelta(minutes=30),
    )
