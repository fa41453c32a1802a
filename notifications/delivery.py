"""Delivery reports from the providers: what became of a message after the provider took it.

Email: the ESP (SendGrid) posts events to anymail's webhook, /anymail/sendgrid/tracking/,
which checks the basic-auth secret (ANYMAIL["WEBHOOK_SECRET"]) and speaks only through its
`tracking` signal. `on_anymail_tracking` is the one receiver, connected in
NotificationsConfig.ready(); it hands each event to `record_email_event`, which is the rule.
"""

import logging
from datetime import datetime

from django.db.models import Q
from django.utils import timezone

from notifications.models import NotificationLog

logger = logging.getLogger(__name__)

# anymail's normalised event types (anymail.signals.EventType) that end the message:
# the receiving server accepted it, or the ESP or the receiving server gave up on it.
DELIVERED_EVENTS = frozenset({"delivered"})
FAILED_EVENTS = frozenset({"bounced", "rejected", "failed"})
# Everything else (queued, sent, deferred, opened, clicked, complained, unsubscribed,
# subscribed, autoresponded, unknown) leaves the status alone. A spam complaint or an
# unsubscribe comes after a delivery: the message did arrive.

# Rows an event no longer moves: a delivered or failed row stays as it is (skipped rows were never sent).
_FINAL_STATUSES = (NotificationLog.Status.DELIVERED, NotificationLog.Status.FAILED, NotificationLog.Status.SKIPPED)
# Ids the channels give when nothing was really sent (the console backend): not unique.
_PLACEHOLDER_IDS = frozenset({"", "console"})
_REASON_MAX_LENGTH = NotificationLog._meta.get_field("reason").max_length


def record_email_event(
    *,
    message_id: str | None,
    event_type: str,
    description: str | None,
    timestamp: datetime | None,
    notification_id: str | None = None,
) -> int:
    """Apply one ESP event to the email NotificationLog row(s) with this provider_message_id.

    delivered → status delivered, delivered_at = the event's time; bounced, rejected, failed →
    status failed with the reason "<event_type>: <description>". Delivered and failed rows do not
    move, so a delivered row never goes back and a repeated event changes nothing. Other event types
    and unknown message ids are ignored. Returns the number of rows changed.
    """
    match = Q()
    if message_id and message_id not in _PLACEHOLDER_IDS:
        match |= Q(provider_message_id=message_id)
    if notification_id and str(notification_id).isdigit():
        # Our own id, sent as metadata: finds the row even when the event outruns the
        # worker that is still saving the provider's id.
        match |= Q(pk=int(notification_id))
    if not match:
        return 0
    now = timezone.now()
    rows = NotificationLog.objects.filter(match, channel=NotificationLog.Channel.EMAIL).exclude(
        status__in=_FINAL_STATUSES
    )
    if event_type in DELIVERED_EVENTS:
        changed = rows.update(status=NotificationLog.Status.DELIVERED, delivered_at=timestamp or now, updated_at=now)
    elif event_type in FAILED_EVENTS:
        reason = f"{event_type}: {description}" if description else event_type
        changed = rows.update(status=NotificationLog.Status.FAILED, reason=reason[:_REASON_MAX_LENGTH], updated_at=now)
    else:
        return 0
    if changed:
        logger.info("Email %s: %s (%d notification(s) updated)", message_id, event_type, changed)
    else:
        logger.info("Email %s: %s matches no open notification; ignored", message_id, event_type)
    return changed


def on_anymail_tracking(sender, event, esp_name, **kwargs) -> None:
    """Receiver of anymail.signals.tracking: one call per event of the webhook's batch.

    An exception here makes the webhook answer 500, and the ESP posts the batch again later.
    """
    record_email_event(
        message_id=event.message_id,
        event_type=event.event_type,
        # SendGrid: the receiving server's answer for bounces; for drops, anymail's reject reason.
        description=event.mta_response or event.description or event.reject_reason or "",
        timestamp=event.timestamp,
        notification_id=(event.metadata or {}).get("notification_id"),
    )
