"""Reminders 24 hours and 2 hours before an event, to every customer holding a seat.

Each reminder is sent once per event: the event row records when it went out, and the
notification service's event key makes a rerun after a crash a no-op for those already told.
Customers who registered after a reminder's moment had their confirmation instead."""

from datetime import datetime, timedelta

from django.db import transaction
from django.utils import timezone

from events.models import Event, Registration
from events.services.messages import tell

# (hours before the start, the event's field recording it went out)
REMINDERS = ((24, "reminder_24h_sent_at"), (2, "reminder_2h_sent_at"))


def send_reminders(now: datetime | None = None) -> int:
    """Send the reminders that are due; returns how many customers were reminded."""
    now = now or timezone.now()
    told = 0
    for index, (hours, sent_field) in enumerate(REMINDERS):
        due = Event.objects.filter(
            status=Event.Status.PUBLISHED,
            starts_at__gt=now,
            starts_at__lte=now + timedelta(hours=hours),
            **{f"{sent_field}__isnull": True},
        ).order_by("id")
        for event in due:
            with transaction.atomic():
                event = Event.objects.select_for_update(of=("self",)).select_related("business").get(pk=event.pk)
                if getattr(event, sent_field) is not None:
                    continue
                # A later reminder already due makes this one redundant (an event made at short notice).
                later = REMINDERS[index + 1 :]
                redundant = any(event.starts_at <= now + timedelta(hours=h) for h, _field in later)
                moment = event.starts_at - timedelta(hours=hours)
                if not redundant:
                    for registration in event.registrations.filter(
                        status=Registration.Status.REGISTERED, registered_at__lte=moment
                    ).select_related("event__business"):
                        # Keyed by the start too: a moved event is reminded of again.
                        key = f"reminder:{hours}h:{event.starts_at:%Y%m%d%H%M}"
                        tell(registration, "event_reminder", key=key, hours=hours)
                        told += 1
                setattr(event, sent_field, now)
                event.save(update_fields=[sent_field, "updated_at"])
    return told
