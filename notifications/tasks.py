"""Celery tasks of the notifications app: thin, safe to run twice, retried with backoff only
on a provider's temporary errors."""

from celery import shared_task
from django.conf import settings

from notifications import services


@shared_task(name="notifications.tasks.notify_pending")
def notify_pending(user_id: str, pending_ids: list) -> int:
    """Decide the messages of one customer's pending events, written by the writes that
    caused them (services.notify_after_commit); one already decided is skipped. `user_id`
    only names whose they are in the worker's logs. Returns how many were queued or recorded."""
    return services.decide_pending(pending_ids)


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
    """Every minute: events whose task never came, then messages past their quiet hours or
    stranded by a broker outage. Returns how many messages it decided or offered."""
    decided = services.decide_stale_pending()
    due = services.due_notifications()
    for log_id in due:
        deliver_notification.delay(log_id)
    return decided + len(due)
