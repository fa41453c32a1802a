"""The door: a ticket checked in once, only for its event, only while the door is open, and
the attendance bonus paid once through the ledger.

A check-in locks the registration row, then (inside loyalty) the customer's account; it
never takes the event's lock, so the door does not queue behind registrations."""

import zoneinfo
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from accounts.models import User
from events.models import Event, Registration, normalize_ticket
from events.services.errors import CheckInRefused
from loyalty import services as loyalty

RegStatus = Registration.Status


@dataclass(frozen=True)
class CheckIn:
    registration: Registration
    checked_in_now: bool  # False: it had been checked in before, at registration.checked_in_at


def door_opens_at(event: Event) -> datetime:
    return event.starts_at - timedelta(minutes=settings.EVENTS_CHECKIN_OPENS_MINUTES)


def _refusal(registration: Registration, now: datetime) -> str | None:
    event = registration.event
    if registration.status == RegStatus.WAITLISTED:
        return _("This customer is on the waitlist and has no seat.")
    if registration.status == RegStatus.CANCELLED:
        return _("This registration was cancelled.")
    if registration.status == RegStatus.NO_SHOW:
        return _("This registration was marked as not come.")
    if event.status == Event.Status.CANCELLED:
        return _("The event is cancelled.")
    if now < door_opens_at(event):
        local = timezone.localtime(door_opens_at(event), zoneinfo.ZoneInfo(event.business.time_zone))
        return _("Check-in opens at %(time)s.") % {"time": local.strftime("%d.%m %H:%M")}
    if now > event.ends_at:
        return _("The event is over.")
    return None


def check_in_participant(registration_id, *, event: Event | None = None, by: User | None = None) -> bool:
    """Check the registration in: True when it is checked in now (and its attendance bonus
    paid), False when it had been already (nothing changes). Raises CheckInRefused when the
    ticket is for another event, has no seat, or the door is not open."""
    return _check_in(registration_id, event=event, by=by).checked_in_now


def _check_in(registration_id, *, event: Event | None, by: User | None) -> CheckIn:
    with transaction.atomic():
        registration = (
            Registration.objects.select_for_update(of=("self",))
            .select_related("event__business", "customer")
            .filter(pk=registration_id)
            .first()
        )
        if registration is None:
            raise CheckInRefused(_("No such ticket."))
        if event is not None and registration.event_id != event.pk:
            raise CheckInRefused(_("This ticket is for another event."))
        if registration.status == RegStatus.CHECKED_IN:
            return CheckIn(registration, checked_in_now=False)
        now = timezone.now()
        refusal = _refusal(registration, now)
        if refusal:
            raise CheckInRefused(refusal)
        registration.status = RegStatus.CHECKED_IN
        registration.checked_in_at = now
        registration.checked_in_by = by
        registration.save(update_fields=["status", "checked_in_at", "checked_in_by", "updated_at"])
        bonus = registration.event.attendance_bonus
        if bonus > 0:
            loyalty.adjust_balance(
                user=registration.customer,
                amount=bonus,
                reason=_("For coming to %(title)s") % {"title": registration.event.title},
                created_by=by,
                business=registration.event.business,
                idempotency_key=f"event:{registration.event_id}:attended:{registration.pk}",
            )
    return CheckIn(registration, checked_in_now=True)


def check_in_by_code(code: str, *, event: Event, by: User | None) -> CheckIn:
    """The door's one input: a ticket code as typed or scanned (the QR payload too)."""
    ticket = normalize_ticket(code)
    registration_id = Registration.objects.filter(ticket_code=ticket).values_list("pk", flat=True).first()
    if not ticket or registration_id is None:
        raise CheckInRefused(_("No ticket with this code."))
    return _check_in(registration_id, event=event, by=by)


def arrivals(event: Event) -> int:
    return event.registrations.filter(status=RegStatus.CHECKED_IN).count()
