"""Celery tasks of the notifications app: thin, safe to run twice, retried with backoff only
on a provider's temporary errors."""

from celery import shared_task
from django.conf import settings

from accounts.models import User
from notifications import services


@shared_task(name="notifications.tasks.notify_event")
def notify_event(user_id: str, messages: list, event_key: str) -> int:
    """Decide and queue the messages of one event, given as [kind, context] pairs (see
    services.notify). Returns how many were queued or recorded."""
    user = User.objects.filter(pk=user_id).first()
    if user is None:
        return 0
    return sum(len(services.notify(user, kind, context, event_key=event_key)) for kind, context in messages)


@shared_task(name="notifications.tasks.notify_events")
def notify_events(user_id: str, groups: list) -> int:
    """notify_event for several events of one customer, given as [messages, event_key]
    pairs: what one purchase tells (its bonuses, the coupons it issued) in one task."""
    user = User.objects.filter(pk=user_id).first()
    if user is None:
        return 0
    return sum(
        len(services.notify(user, kind, context, event_key=event_key))
        for messages, event_key in groups
        for kind, context in messages
    )


@shared_task(
    bind=True,
    name="notifications.tasks.deliver_notification",
    max_retries=None,  # the log row counts attempts against NOTIFY_MAX_RETRIES
)
def deliver_notification(self, log_id: int) -> str:
    try:
        return services.deliver(log_id)
    except services.TemporaryFailure as exc:
        countdown = settings.NOTIFY_RETRY_BACKOFF_SECONDS * 2**self.request.retries  # as deliver() set send_after
        if self.request.is_eager:
            # Without a broker there is nobody to retry later: the row stays queued and
            # send_due_notifications offers it again.
            return f"queued again: {exc}"
        raise self.retry(exc=exc, countdown=countdown) from exc


@shared_task(name="notifications.tasks.send_due_notifications")
def send_due_notifications() -> int:
    """Every minute: messages past their quiet hours, or stranded by a broker outage."""
    due = services.due_notifications()
    for log_id in due:
        deliver_notification.delay(log_id)
    return len(due)
