"""What the Event service tells customers, through the notification service after commit.

Each message's context is plain JSON (times already in the host's time zone, amounts as
strings), because it travels through a task; each has an event key so a retried write or
task never sends the same message twice."""

import zoneinfo
from decimal import Decimal

from django.utils import timezone

from events.models import Event, Registration


def event_context(event: Event) -> dict:
    starts = timezone.localtime(event.starts_at, zoneinfo.ZoneInfo(event.business.time_zone))
    return {
        "event_id": event.pk,
        "event_title": event.title,
        "business_name": event.business.name,
        "starts_on": starts.date().isoformat(),
        "starts_time": starts.strftime("%H:%M"),
        "place": event.place_text(),
    }


def tell(registration: Registration, kind: str, *, key: str, **extra) -> None:
    """Queue `kind` to the registration's customer once the transaction commits."""
    from notifications.services import notify_after_commit

    context = event_context(registration.event) | {"ticket_code": registration.ticket_code}
    # Amounts always with two places ("0.00" reads as free or nothing returned in the templates).
    context |= {name: f"{value:.2f}" if isinstance(value, Decimal) else str(value) for name, value in extra.items()}
    notify_after_commit(
        user_id=registration.customer_id,
        messages=[(kind, context)],
        event_key=f"event:{registration.event_id}:{key}:{registration.pk}",
    )


def tell_customer(event: Event, customer_id, kind: str, *, key: str) -> None:
    """Queue `kind` about `event` to a customer who may have no registration (a voter)."""
    from notifications.services import notify_after_commit

    notify_after_commit(
        user_id=customer_id,
        messages=[(kind, event_context(event))],
        event_key=f"event:{event.pk}:{key}:{customer_id}",
    )
