"""The Notification service: push, SMS and email that respect people's wishes and never
block a purchase.

`notify(user, kind, context, event_key=...)` decides who hears what and how: it writes one
`NotificationLog` row per message (the idempotency key makes a second notify for the
same event a no-op) and enqueues its delivery after commit. `deliver(log_id)` sends one
queued message through its channel, outside any lock, and records the outcome. A write tells
its customer through `notify_after_commit`, which keeps the event in the write's own
transaction (a PendingEvent, the outbox) until a task decides it. Whatever the broker could
not take, or took and lost, waits in the database for `send_due_notifications`, so an
outage of the broker delays messages but loses none.

The catalogue's functions keep their names: `send_push`, `send_sms`, `send_email`.
"""

import contextlib
import logging
import uuid
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from decimal import Decimal
from time import monotonic
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.template import Context
from django.template.loader import get_template, render_to_string
from django.utils import timezone, translation

from accounts.models import User
from accounts.phones import mask_phone
from notifications.channels.sms import SmsError, SmsReceipt, get_sms_backend
from notifications.models import Device, NotificationLog, NotificationPreferences, PendingEvent

logger = logging.getLogger(__name__)

Channel = NotificationLog.Channel
Status = NotificationLog.Status


@dataclass(frozen=True)
class Kind:
    """A kind of message: the preference that governs it and the channels it may use."""

    category: str | None  # a boolean field of NotificationPreferences; None: a service message for partner staff
    push: bool = True
    sms: bool = False  # SMS costs money: only where the message matters without the app
    email: bool = True
    marketing: bool = False


KINDS = {
    "welcome": Kind("bonus_updates"),
    "bonus_accrued": Kind("bonus_updates", email=False),
    "bonus_spent": Kind("bonus_updates", email=False),
    "bonus_expiring": Kind("bonus_updates", sms=True),
    "tier_changed": Kind("bonus_updates"),
    "promotion": Kind("promotions", sms=True, marketing=True),
    "coupon_issued": Kind("coupons", email=False),
    # To a business's owners: their CRM stopped reaching the circle.
    "integration_failing": Kind(None, sms=True),
    # To a business's owners: a cross-promo chain proposed to them, accepted or declined.
    "chain_proposed": Kind(None),
    "chain_accepted": Kind(None),
    "chain_declined": Kind(None),
    # To customers about partners' events. A cancellation matters without the app: SMS then.
    "event_registered": Kind("events"),
    "event_waitlisted": Kind("events", email=False),
    "event_promoted": Kind("events", sms=True),
    "event_waitlist_missed": Kind("events"),
    "event_reminder": Kind("events", email=False),
    "event_changed": Kind("events", sms=True),
    "event_cancelled": Kind("events", sms=True),
    "event_published": Kind("events"),
}


# --- Preferences --------------------------------------------------------------------------

PREFERENCE_FIELDS = (
    "push_enabled",
    "sms_enabled",
    "email_enabled",
    "bonus_updates",
    "coupons",
    "events",
    "promotions",
    "quiet_hours_start",
    "quiet_hours_end",
    "time_zone",
)


def _parse_hhmm(value: str) -> time:
    hours, minutes = value.split(":")
    return time(int(hours), int(minutes))


def get_preferences(user: User) -> NotificationPreferences:
    """The customer's preferences; defaults (everything on, quiet hours from the settings)
    until they change something. Reading does not create a row."""
    prefs = NotificationPreferences.objects.filter(user=user).first()
    if prefs is None:
        prefs = NotificationPreferences(
            user=user,
            quiet_hours_start=_parse_hhmm(settings.NOTIFY_QUIET_HOURS_START),
            quiet_hours_end=_parse_hhmm(settings.NOTIFY_QUIET_HOURS_END),
        )
    return prefs


@transaction.atomic
def update_preferences(*, user: User, **changes) -> NotificationPreferences:
    """Change what the customer wants to hear about."""
    unknown = set(changes) - set(PREFERENCE_FIELDS)
    if unknown:
        raise ValueError(f"Not preference fields: {sorted(unknown)}")
    prefs = get_preferences(user)
    for field, value in changes.items():
        setattr(prefs, field, value)
    prefs.save()
    return prefs


def quiet_until(prefs: NotificationPreferences, at: datetime) -> datetime | None:
    """If `at` falls in the customer's quiet hours, when they end; None otherwise."""
    start, end = prefs.quiet_hours_start, prefs.quiet_hours_end
    if start is None or end is None or start == end:
        return None
    local = at.astimezone(ZoneInfo(prefs.time_zone or settings.TIME_ZONE))
    now = local.time()
    quiet = (start <= now or now < end) if start > end else (start <= now < end)
    if not quiet:
        return None
    ends = local.replace(hour=end.hour, minute=end.minute, second=0, microsecond=0)
    if ends <= local:
        ends += timedelta(days=1)
    return ends


# --- Devices ------------------------------------------------------------------------------


@transaction.atomic
def register_device(*, user: User, token: str, platform: str, app_version: str = "") -> Device:
    """Register or refresh the app's push token. A token moves to the user who registers it
    last (a phone changing hands); registering the same token again only refreshes it."""
    device, _created = Device.objects.select_for_update().update_or_create(
        token=token,
        defaults={
            "user": user,
            "platform": platform,
            "app_version": app_version,
            "is_active": True,
            "last_seen_at": timezone.now(),
            "deactivated_reason": "",
        },
    )
    return device


def unregister_device(*, user: User, token: str) -> bool:
    """Forget a token of this user (logout on the phone). True if there was one."""
    if "\x00" in token:  # no token holds a NUL byte (and PostgreSQL refuses to compare with one)
        return False
    deleted, _by_model = Device.objects.filter(user=user, token=token).delete()
    return deleted > 0


def deactivate_device(token: str, reason: str) -> None:
    Device.objects.filter(token=token, is_active=True).update(is_active=False, deactivated_reason=reason[:200])


# --- Deciding who hears what ---------------------------------------------------------------


def _render(kind: str, part: str, context: dict, language: str | None = None) -> str:
    """A message part from `templates/notifications/<language>/<kind>/<part>` (Russian by
    default; English is there too)."""
    language = language or settings.LANGUAGE_CODE
    name = f"notifications/{language}/{kind}/{part}"
    with translation.override(language):
        if part.endswith(".html"):
            return render_to_string(name, context).strip()
        # Plain text is not HTML: a partner called "Tom & Jerry" stays so in a push or SMS.
        return get_template(name).template.render(Context(context, autoescape=False)).strip()


def notify(user: User, kind: str, context: dict, *, event_key: str) -> list[NotificationLog]:
    """Queue the messages for one event: push to the customer's active devices first; SMS
    only where the kind allows it and no push can reach them; email where they gave an
    address. Preferences decide, marketing needs consent and waits out quiet hours. The
    same event, kind and recipient are queued at most once."""
    created = _queue(user, kind, context, event_key=event_key)
    due = [log.pk for log in created if log.status == Status.QUEUED and not log.send_after]
    if due:
        transaction.on_commit(lambda: _enqueue(due))
    return created


def _queue(user: User, kind: str, context: dict, *, event_key: str) -> list[NotificationLog]:
    """notify's decision: the log rows it creates for one event, without enqueueing their delivery."""
    spec = KINDS[kind]
    prefs = get_preferences(user)
    now = timezone.now()
    logs: list[NotificationLog] = []

    def skip(channel, recipient, reason):
        logs.append(_log(user, channel, recipient, kind, event_key, status=Status.SKIPPED, reason=reason))

    if not user.is_active:
        return []
    refusal = None
    if spec.category and not getattr(prefs, spec.category):
        refusal = f"the customer turned off {spec.category}"
    elif spec.marketing and not user.marketing_consent:
        refusal = "no marketing consent"
    if refusal:
        skip(Channel.PUSH, "-", refusal)
        return [log for log in logs if log]
    send_after = quiet_until(prefs, now) if spec.marketing else None

    pushed = False
    if spec.push and prefs.push_enabled:
        devices = list(Device.objects.filter(user=user, is_active=True))
        if devices:
            title, body = _render(kind, "title.txt", context), _render(kind, "body.txt", context)
            for device in devices:
                logs.append(
                    _log(
                        user,
                        Channel.PUSH,
                        device.token,
                        kind,
                        event_key,
                        subject=title,
                        body=body,
                        send_after=send_after,
                    )
                )
            pushed = True
    if spec.sms and not pushed and user.phone:
        if prefs.sms_enabled:
            logs.append(
                _log(
                    user,
                    Channel.SMS,
                    user.phone,
                    kind,
                    event_key,
                    body=_render(kind, "sms.txt", context),
                    send_after=send_after,
                )
            )
        else:
            skip(Channel.SMS, user.phone, "the customer turned off SMS")
    if spec.email and user.email:
        if prefs.email_enabled:
            logs.append(
                _log(
                    user,
                    Channel.EMAIL,
                    user.email,
                    kind,
                    event_key,
                    subject=_render(kind, "subject.txt", context),
                    body=_render(kind, "email.txt", context),
                    html=_render(kind, "email.html", context),
                )
            )
        else:
            skip(Channel.EMAIL, user.email, "the customer turned off email")
    return [log for log in logs if log is not None]


def _log(user, channel, recipient, kind, event_key, *, status=Status.QUEUED, reason="", **fields):
    """One log row per (event, kind, channel, recipient); None if it exists already."""
    key = f"{event_key}:{kind}:{channel}:{recipient}"[:300]
    try:
        with transaction.atomic():
            return NotificationLog.objects.create(
                user=user,
                channel=channel,
                recipient=recipient,
                kind=kind,
                status=status,
                reason=reason,
                idempotency_key=key,
                **fields,
            )
    except IntegrityError:
        return None


_muted: ContextVar[bool] = ContextVar("notifications_muted", default=False)


@contextlib.contextmanager
def muted():
    """Within this block, events queue no messages to customers: for bulk loads of data that
    did not just happen to anyone (the demo circle), where a message would be noise."""
    token = _muted.set(True)
    try:
        yield
    finally:
        _muted.reset(token)


_batch: ContextVar[list | None] = ContextVar("notifications_batch", default=None)


@contextlib.contextmanager
def batched():
    """Within this block, the events notify_after_commit is told of go out in one task per
    customer at commit instead of one task each: a purchase that earns bonuses and issues a
    coupon publishes once. An event asked for inside a savepoint that is rolled back is
    dropped with it, as without the batch. Nested blocks join the outermost."""
    if _batch.get() is not None:
        yield
        return
    pending: list = []
    token = _batch.set(pending)
    try:
        yield
    finally:
        _batch.reset(token)
        # Registered after every event's own hook, so it runs once those that survived have
        # run; on an error too, for the events whose writes are committed all the same.
        transaction.on_commit(lambda: _enqueue_pending(pending))


def notify_after_commit(*, user_id, messages: list[tuple[str, dict]], event_key: str) -> None:
    """Notify about one event once the current transaction commits. The write that caused
    it pays one INSERT; deciding and sending happen after commit in a task, so neither the
    broker nor a provider ever slows, blocks or fails it. `messages` are (kind, context)
    pairs; contexts must be JSON (amounts as strings).

    The event is written now, in the caller's transaction (a PendingEvent: it commits or
    rolls back with the write), and a task decides it after commit. If the broker is down or
    loses the task, send_due_notifications decides it later, so a message is delayed but
    never lost. Nothing is written inside `muted()`; inside `batched()` the events share a
    task."""
    if _muted.get():
        return
    event = PendingEvent.objects.create(
        user_id=user_id, messages=[list(message) for message in messages], event_key=event_key
    )
    entry = (str(user_id), event.pk)
    batch = _batch.get()
    if batch is not None:
        transaction.on_commit(lambda: batch.append(entry))
    else:
        transaction.on_commit(lambda: _enqueue_pending([entry]))


def _enqueue_pending(entries: list) -> None:
    """One task per customer for these (user_id, pending event id) entries."""
    from notifications.tasks import notify_pending

    by_user: dict[str, list] = {}
    for user_id, pending_id in entries:
        by_user.setdefault(user_id, []).append(pending_id)
    for user_id, pending_ids in by_user.items():
        try:
            _publish(notify_pending, user_id, pending_ids)
        except Exception as exc:  # a broker outage must not surface in the write that committed
            logger.warning(
                "Could not enqueue pending events %s of %s (%s): they wait for the sweeper", pending_ids, user_id, exc
            )


def decide_pending(pending_ids: list[int]) -> int:
    """Decide the messages of these pending events (notify), each event in one transaction
    that writes its log rows and deletes it: an event is decided once, whether its
    task or the sweeper comes first (its row is locked, and one already taken is skipped).
    An event that fails stays, logged, for the next sweep, and holds up none of the others.
    Returns how many log rows were written."""
    written = 0
    for pending_id in sorted(pending_ids):
        try:
            written += _decide(pending_id)
        except Exception:
            logger.exception("Could not decide pending event %s: it stays for the next sweep", pending_id)
    return written


def _decide(pending_id: int) -> int:
    with transaction.atomic():
        event = (
            PendingEvent.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("user")
            .filter(pk=pending_id)
            .first()
        )
        if event is None:  # decided already, or being decided right now
            return 0
        written = sum(
            len(notify(event.user, kind, context, event_key=event.event_key)) for kind, context in event.messages
        )
        event.delete()
    return written


def stale_pending(at: datetime | None = None, *, after: int = 0) -> list[int]:
    """Pending events left undecided past NOTIFY_PENDING_GRACE_SECONDS (their task never
    came: the broker was down or lost it), by id from `after` on, at most NOTIFY_PENDING_BATCH."""
    at = at or timezone.now()
    cutoff = at - timedelta(seconds=settings.NOTIFY_PENDING_GRACE_SECONDS)
    return list(
        PendingEvent.objects.filter(created_at__lte=cutoff, pk__gt=after)
        .order_by("pk")
        .values_list("pk", flat=True)[: settings.NOTIFY_PENDING_BATCH]
    )


def decide_stale_pending(at: datetime | None = None) -> int:
    """The sweeper's part for the outbox: decide the stale pending events batch after batch
    (NOTIFY_PENDING_BATCH each) for up to NOTIFY_PENDING_SWEEP_SECONDS, so that the backlog of
    a long broker outage drains in a few runs, not a batch a minute. One that fails is passed
    over (it stays for the next run). Returns how many log rows were written."""
    deadline = monotonic() + settings.NOTIFY_PENDING_SWEEP_SECONDS
    written, after = 0, 0
    while ids := stale_pending(at, after=after):
        written += decide_pending(ids)
        after = ids[-1]
        if monotonic() >= deadline:
            break
    return written


# One immediate reconnect (a pooled connection the broker dropped), not Celery's default of
# three more tries over ~0.8 s: a task that cannot be enqueued leaves its event or message in
# the database for the sweeper, so waiting for the broker buys nothing but a slower purchase.
PUBLISH_RETRY_POLICY = {"max_retries": 1, "interval_start": 0, "interval_step": 0, "interval_max": 0}


def _publish(task, *args) -> None:
    task.apply_async(args, retry_policy=PUBLISH_RETRY_POLICY)


def _enqueue(log_ids: list[int]) -> None:
    from notifications.tasks import deliver_notification

    for position, log_id in enumerate(log_ids):
        try:
            _publish(deliver_notification, log_id)
        except Exception as exc:  # they stay queued; send_due_notifications picks them up
            # The next ones would fail the same way: no point waiting for each.
            logger.warning("Could not enqueue notifications %s: %s", log_ids[position:], exc)
            return


def due_notifications(at: datetime | None = None, *, older_than_seconds: int = 60) -> list[int]:
    """Queued messages whose time has come: past their quiet hours, or left behind by a
    broker outage (queued over a minute ago). A message stuck in "sending" longer than
    NOTIFY_STALE_SENDING_MINUTES (its worker died) is queued again first: at least once
    beats never."""
    at = at or timezone.now()
    NotificationLog.objects.filter(
        status=Status.SENDING, updated_at__lt=at - timedelta(minutes=settings.NOTIFY_STALE_SENDING_MINUTES)
    ).update(status=Status.QUEUED, reason="queued again: the worker sending it stopped")
    return list(
        NotificationLog.objects.filter(status=Status.QUEUED)
        .filter(
            Q(send_after__lte=at)
            | Q(send_after__isnull=True, created_at__lte=at - timedelta(seconds=older_than_seconds))
        )
        .order_by("id")
        .values_list("id", flat=True)[:1000]
    )


# --- Sending ---------------------------------------------------------------------------------


class TemporaryFailure(Exception):
    """The provider may take the message later: the task retries with backoff."""


def deliver(log_id: int) -> str:
    """Send one queued message and record what happened. Claimed with a conditional update
    (queued → sending), so two workers never send it twice; no lock is held while the
    provider is called. Raises TemporaryFailure when a retry may succeed."""
    claimed = NotificationLog.objects.filter(pk=log_id, status=Status.QUEUED).update(
        status=Status.SENDING, attempts=F("attempts") + 1, updated_at=timezone.now()
    )
    if not claimed:
        return "not queued"
    log = NotificationLog.objects.get(pk=log_id)
    try:
        if log.channel == Channel.SMS:
            provider_id = _deliver_sms(log)
        elif log.channel == Channel.PUSH:
            provider_id = _deliver_push(log)
        else:
            provider_id = _deliver_email(log)
    except TemporaryFailure as exc:
        final = log.attempts >= settings.NOTIFY_MAX_RETRIES
        # The sweeper (send_due_notifications) honours the same backoff as the task's retry.
        backoff = timedelta(seconds=settings.NOTIFY_RETRY_BACKOFF_SECONDS * 2 ** (log.attempts - 1))
        NotificationLog.objects.filter(pk=log.pk).update(
            status=Status.FAILED if final else Status.QUEUED, reason=str(exc)[:500], send_after=timezone.now() + backoff
        )
        if final:
            return "failed"
        raise
    except _Skip as exc:
        NotificationLog.objects.filter(pk=log.pk).update(status=Status.SKIPPED, reason=str(exc)[:500])
        return "skipped"
    except _Permanent as exc:
        NotificationLog.objects.filter(pk=log.pk).update(status=Status.FAILED, reason=str(exc)[:500])
        return "failed"
    except Exception as exc:  # an unexpected error is a failure to record, never a crash of the caller
        logger.exception("Notification %s failed unexpectedly", log.pk)
        NotificationLog.objects.filter(pk=log.pk).update(status=Status.FAILED, reason=f"error: {exc}"[:500])
        return "failed"
    NotificationLog.objects.filter(pk=log.pk).update(provider_message_id=provider_id[:200], sent_at=timezone.now())
    # A delivery report may have arrived already and said more than "sent": keep it.
    NotificationLog.objects.filter(pk=log.pk, status=Status.SENDING).update(status=Status.SENT, reason="")
    return "sent"


class _Skip(Exception):
    pass


class _Permanent(Exception):
    pass


def sms_spent_today(at: datetime | None = None) -> Decimal:
    """Roubles of SMS sent since local midnight, counted at SMS_PRICE_RUB each."""
    at = at or timezone.now()
    midnight = timezone.localtime(at).replace(hour=0, minute=0, second=0, microsecond=0)
    count = NotificationLog.objects.filter(
        channel=Channel.SMS, status__in=[Status.SENT, Status.DELIVERED], sent_at__gte=midnight
    ).count()
    return Decimal(str(settings.SMS_PRICE_RUB)) * count


def _deliver_sms(log: NotificationLog) -> str:
    if sms_spent_today() >= settings.SMS_DAILY_SPEND_CAP_RUB:
        raise _Skip("the daily SMS budget is spent")
    try:
        return get_sms_backend().send(log.recipient, log.body).message_id
    except SmsError as exc:
        if exc.retryable:
            raise TemporaryFailure(str(exc)) from exc
        raise _Permanent(str(exc)) from exc


def _deliver_push(log: NotificationLog) -> str:
    from notifications.channels.push import get_push_backend

    (outcome,) = get_push_backend().send([log.recipient], log.subject, log.body, {"kind": log.kind})
    if outcome.ok:
        return outcome.message_id
    if outcome.unregistered:
        deactivate_device(log.recipient, outcome.error or "unregistered")
        raise _Permanent(f"unregistered token: {outcome.error}")
    if outcome.retryable:
        raise TemporaryFailure(outcome.error)
    raise _Permanent(outcome.error)


def _deliver_email(log: NotificationLog) -> str:
    from notifications.channels.email import EmailError, send_email_message

    try:
        receipt = send_email_message(
            to=log.recipient,
            subject=log.subject,
            text_body=log.body,
            html_body=log.html or None,
            metadata={"notification_id": str(log.pk)},
            tags=[log.kind],
        )
    except EmailError as exc:
        if exc.retryable:
            raise TemporaryFailure(str(exc)) from exc
        raise _Permanent(str(exc)) from exc
    return receipt.message_id


# --- The catalogue's direct sends -------------------------------------------------------------


def deliver_sms(phone: str, message: str, *, purpose: str = "general") -> SmsReceipt:
    """Send one SMS now through the configured backend; raises SmsError and its kinds.

    Logged (without the text of a login code), so staff see what was sent and the SMS
    spend counts it. Login codes are never held back by the daily SMS budget."""
    if purpose != "login_code" and sms_spent_today() >= settings.SMS_DAILY_SPEND_CAP_RUB:
        raise SmsError("The daily SMS budget is spent; only login codes are sent.")
    log = NotificationLog.objects.create(
        channel=Channel.SMS,
        recipient=phone,
        kind=purpose,
        status=Status.SENDING,
        idempotency_key=f"direct:{uuid.uuid4()}",
        body="" if purpose == "login_code" else message,
        attempts=1,
    )
    try:
        receipt = get_sms_backend().send(phone, message)
    except SmsError as exc:
        NotificationLog.objects.filter(pk=log.pk).update(status=Status.FAILED, reason=str(exc)[:500])
        raise
    NotificationLog.objects.filter(pk=log.pk).update(
        status=Status.SENT, provider_message_id=receipt.message_id[:200], sent_at=timezone.now()
    )
    logger.info("SMS %s to %s sent via %s", purpose, mask_phone(phone), receipt.provider)
    return receipt


def send_sms(phone: str, message: str) -> bool:
    """Send one SMS now; True if the provider accepted it. Failures are logged, never raised."""
    try:
        deliver_sms(phone, message)
    except SmsError as exc:
        logger.warning("SMS to %s failed: %s", mask_phone(phone), exc)
        return False
    return True


def send_push(user_id, title: str, body: str) -> bool:
    """Push one message to every active device of a user now; True if any device took it.
    Unregistered tokens are deactivated."""
    from notifications.channels.push import get_push_backend

    tokens = list(Device.objects.filter(user_id=user_id, is_active=True).values_list("token", flat=True))
    if not tokens:
        return False
    outcomes = get_push_backend().send(tokens, title, body, {})
    for outcome in outcomes:
        if outcome.unregistered:
            deactivate_device(outcome.token, outcome.error or "unregistered")
    return any(outcome.ok for outcome in outcomes)


def send_email(email: str, template: str, variables: dict) -> bool:
    """Send one email now from `templates/notifications/<template>/` (subject.txt, email.txt,
    email.html); True if the provider accepted it."""
    from notifications.channels.email import EmailError, send_email_message

    try:
        send_email_message(
            to=email,
            subject=_render(template, "subject.txt", variables),
            text_body=_render(template, "email.txt", variables),
            html_body=_render(template, "email.html", variables),
            tags=[template],
        )
    except EmailError as exc:
        logger.warning("Email %s failed: %s", template, exc)
        return False
    return True
