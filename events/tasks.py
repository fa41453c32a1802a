"""Celery tasks of the events app: thin wrappers, each safe to run twice."""

from celery import shared_task

from events import services


@shared_task(name="events.tasks.close_votes")
def close_votes() -> int:
    """Every 5 minutes: proposals whose voting closed short of the threshold are closed."""
    return services.close_votes()


@shared_task(name="events.tasks.send_reminders")
def send_reminders() -> int:
    """Every 10 minutes: the 24-hour and 2-hour reminders that are due."""
    return services.send_reminders()


@shared_task(name="events.tasks.finish_events")
def finish_events() -> list[int]:
    """Every hour: events past their end are finished; the next day, absentees are no-shows."""
    return list(services.finish_events())
