"""Seats: registration, the waitlist, cancellation with its refund, promotion, and a closing
account leaving its events.

Every change to an event's seats happens under the event row's lock, taken first, then the
registration's, then (inside loyalty) the customer's bonus account: one order everywhere,
so two paths never wait on each other. The seat count lives on the event row and a
constraint keeps it within the capacity, so no race can overbook."""

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from accounts.models import User
from events.models import ZERO, Event, Registration
from events.services.errors import CancellationRefused, NotRegistered, RegistrationClosed
from events.services.messages import tell
from loyalty import services as loyalty
from svoykrug import answers

logger = logging.getLogger(__name__)

RegStatus = Registration.Status

# The statuses a customer can give up: a seat or a place on the waitlist.
HELD = (RegStatus.REGISTERED, RegStatus.WAITLISTED)


@dataclass(frozen=True)
class CancelResult:
    registration: Registration
    refunded: Decimal
    was_cancelled: bool  # False: it had been cancelled before; nothing changed


def _payment_key(registration: Registration) -> str:
    return f"event:{registration.event_id}:ticket:{registration.pk}:{registration.attempt}"


def _pay(registration: Registration, event: Event) -> None:
    """Take the ticket's price from the customer's bonuses (spent at the host); raises
    loyalty's InsufficientBonuses and changes nothing if they do not cover it."""
    if event.price <= 0:
        registration.paid_amount = registration.refunded_amount = ZERO
        registration.payment_key = ""
        return
    key = _payment_key(registration)
    loyalty.apply_bonus_redemption(
        registration.customer,
        event.price,
        business=event.business,
        idempotency_key=key,
        reason=_("Ticket: %(title)s") % {"title": event.title},
    )
    registration.paid_amount = event.price
    registration.refunded_amount = ZERO
    registration.payment_key = key


def _open_for_registration(event: Event, now: datetime) -> None:
    if event.status != Event.Status.PUBLISHED:
        if event.status == Event.Status.PROPOSED:
            raise RegistrationClosed(_("The event is still a proposal: vote for it, registration opens if it is on."))
        raise RegistrationClosed(_("The event is %(status)s.") % {"status": event.get_status_display().lower()})
    if now >= event.registration_deadline:
        raise RegistrationClosed()


def register_for_event(user: User, event: Event) -> Registration:
    """A seat while seats remain (paid in bonuses at the host if the event has a price), a
    place on the waitlist when full. Registering again returns the existing registration
    (its `created` is False); a cancelled one is renewed. Never overbooks."""
    with transaction.atomic():
        # The customer's row first, as closing the account takes it before the events: a
        # registration racing the closure waits for it, then finds the account closed.
        # FOR NO KEY UPDATE: a purchase of the same customer (its rows reference this one) does
        # not wait for it, as it would behind FOR UPDATE while holding the bonus account that
        # this registration takes next: a deadlock.
        if not User.objects.select_for_update(no_key=True).filter(pk=user.pk, is_active=True).values_list("pk").first():
            raise RegistrationClosed(_("This account is closed."))
        event = Event.objects.select_for_update(of=("self",)).select_related("business").get(pk=event.pk)
        now = timezone.now()
        registration = Registration.objects.select_for_update(of=("self",)).filter(event=event, customer=user).first()
        if registration is not None and registration.status != RegStatus.CANCELLED:
            registration.created = False
            return registration
        _open_for_registration(event, now)
        if registration is None:
            registration = Registration(event=event, customer=user, registered_at=now, status=RegStatus.WAITLISTED)
            registration.waitlisted_at = now
            registration.save()
        else:
            # What the last seat kept (given up too late to be refunded) stays counted.
            registration.kept_before += registration.paid_amount - registration.refunded_amount
            registration.attempt += 1
            registration.registered_at = now
            registration.cancelled_at = None
            registration.cancelled_by = ""
        registration.event = event
        if event.registered_count < event.capacity:
            _pay(registration, event)
            registration.status = RegStatus.REGISTERED
            registration.waitlisted_at = None
            event.registered_count += 1
            event.save(update_fields=["registered_count", "updated_at"])
            kind = "event_registered"
        else:
            if event.price > 0:
                available = loyalty.spendable_balance(loyalty.get_account(user), now)
                if available < event.price:
                    raise loyalty.InsufficientBonuses(
                        _("The waitlist is for those who can pay when a seat comes free: not enough bonuses."),
                        extra={"available": str(available)},
                    )
            registration.status = RegStatus.WAITLISTED
            registration.waitlisted_at = now
            registration.paid_amount = registration.refunded_amount = ZERO
            registration.payment_key = ""
            kind = "event_waitlisted"
        registration.save()
        tell(registration, kind, key=f"{kind}:{registration.attempt}", price=event.price)
    registration.created = True
    return registration


def release(registration: Registration, *, by: str, refund: bool, now: datetime) -> Decimal:
    """Cancel a held registration (the event and the registration locked by the caller) and,
    with `refund`, give back what its seat cost. The caller fixes the event's seat count.
    Returns the bonuses given back."""
    refunded = ZERO
    if refund and registration.status == RegStatus.REGISTERED and registration.paid_amount > 0:
        refunded = loyalty.return_bonus_redemption(
            registration.customer,
            idempotency_key=registration.payment_key,
            reason=_("Ticket returned: %(title)s") % {"title": registration.event.title},
        )
        registration.refunded_amount = registration.paid_amount
    registration.status = RegStatus.CANCELLED
    registration.cancelled_at = now
    registration.cancelled_by = by
    registration.save()
    return refunded


def refund_deadline(event: Event) -> datetime:
    return event.starts_at - timedelta(hours=settings.EVENTS_REFUND_CUTOFF_HOURS)


def cancel_registration(user: User, event: Event) -> CancelResult:
    """The customer gives up their seat or waitlist place before the start. The ticket's
    bonuses come back if it is cancelled at least EVENTS_REFUND_CUTOFF_HOURS before the
    start; the freed seat goes to the first on the waitlist. Cancelling twice changes nothing."""
    with transaction.atomic():
        event = Event.objects.select_for_update(of=("self",)).select_related("business").get(pk=event.pk)
        registration = Registration.objects.select_for_update().filter(event=event, customer=user).first()
        if registration is None:
            raise NotRegistered()
        registration.event = event
        if registration.status == RegStatus.CANCELLED:
            return CancelResult(registration, ZERO, was_cancelled=False)
        now = timezone.now()
        if registration.status not in (RegStatus.REGISTERED, RegStatus.WAITLISTED):
            shown = registration.get_status_display().lower()
            message = _("The registration reads “%(status)s”: it cannot be cancelled.")
            raise CancellationRefused(message % {"status": shown})
        if now >= event.starts_at:
            raise CancellationRefused(_("The event has started: the registration can no longer be cancelled."))
        refunded = _give_up(registration, event, now=now)
    return CancelResult(registration, refunded, was_cancelled=True)


def _give_up(registration: Registration, event: Event, *, now: datetime) -> Decimal:
    """The customer's own cancellation of a held seat or waitlist place (the event and the
    registration locked by the caller): the ticket's bonuses come back by the refund deadline,
    and a freed seat goes to the waitlist. Returns the bonuses given back."""
    held_seat = registration.status == RegStatus.REGISTERED
    refunded = release(
        registration, by=Registration.CancelledBy.CUSTOMER, refund=now <= refund_deadline(event), now=now
    )
    if held_seat:
        event.registered_count -= 1
        event.save(update_fields=["registered_count", "updated_at"])
        fill_seats(event, now=now)
    return refunded


def leave_events(*, user: User) -> list[CancelResult]:
    """A customer closing their account leaves the events: every seat and waitlist place in
    events that have not ended is given up as their own cancellation would be (the same refund
    rule, the freed seat to the waitlist), and their votes on proposals still open are
    withdrawn, so a closed account neither holds a seat nor helps publish an event. An event
    under way is no exception: its seat is freed with nothing returned. Registrations of
    ended events, check-ins and votes already decided stay as history. The customer is told
    nothing (they asked to leave); whoever gets a seat is told as usual. Returns the seats
    and places given up."""
    from events.models import Vote
    from events.services.votes import forget_vote_counts

    with transaction.atomic():
        now = timezone.now()
        seat_events = Registration.objects.filter(customer=user, status__in=HELD, event__ends_at__gt=now)
        open_votes = Vote.objects.filter(
            customer=user, event__status=Event.Status.PROPOSED, event__voting_deadline__gt=now
        )
        event_ids = {*seat_events.values_list("event_id", flat=True), *open_votes.values_list("event_id", flat=True)}
        if not event_ids:
            return []
        # Every event before any registration, vote or bonus account, in id order: each event's
        # cancellation takes bonus accounts, and no path may wait for an event while holding one.
        events = {
            event.pk: event
            for event in Event.objects.select_for_update(of=("self",))
            .select_related("business")
            .filter(pk__in=event_ids)
            .order_by("pk")
        }
        held = list(
            Registration.objects.select_for_update(of=("self",))
            .filter(customer=user, event_id__in=list(events), status__in=HELD)
            .select_related("customer")
            .order_by("event_id")
        )
        results = []
        for registration in held:
            event = events[registration.event_id]
            if event.ends_at <= now:  # read again under the lock
                continue
            registration.event = event
            refunded = _give_up(registration, event, now=now)
            results.append(CancelResult(registration, refunded, was_cancelled=True))
        # Read again under the events' locks: a proposal published or closed meanwhile keeps its votes.
        still_open = [
            pk for pk, event in events.items() if event.status == Event.Status.PROPOSED and event.voting_deadline > now
        ]
        withdrawn = Vote.objects.filter(customer=user, event_id__in=still_open).delete()[0] if still_open else 0
        # The counters are dropped while the events are locked: a reader rebuilding them takes
        # the event's lock first, so it counts from this transaction's outcome.
        for pk in still_open:
            forget_vote_counts(pk)
        if withdrawn:
            answers.changed("events")
        logger.info(
            "Customer %s gave up %d registration(s) and withdrew %d vote(s) on leaving",
            user.pk,
            len(results),
            withdrawn,
        )
    return results


def fill_seats(event: Event, *, now: datetime) -> int:
    """Give free seats of an upcoming published event (locked by the caller) to the waitlist
    in the order customers joined it. One who cannot pay the price any more loses their
    place and is told; the next is asked. Returns how many were promoted."""
    if event.status != Event.Status.PUBLISHED or now >= event.starts_at:
        return 0
    promoted = 0
    while event.registered_count < event.capacity:
        registration = (
            Registration.objects.select_for_update(of=("self",))
            .filter(event=event, status=RegStatus.WAITLISTED)
            .select_related("customer")
            .order_by("waitlisted_at", "id")
            .first()
        )
        if registration is None:
            break
        registration.event = event
        try:
            with transaction.atomic():
                _pay(registration, event)
        except loyalty.InsufficientBonuses:
            registration.status = RegStatus.CANCELLED
            registration.cancelled_at = now
            registration.cancelled_by = Registration.CancelledBy.UNPAID
            registration.save()
            tell(registration, "event_waitlist_missed", key=f"missed:{registration.attempt}", price=event.price)
            continue
        registration.status = RegStatus.REGISTERED
        registration.waitlisted_at = None
        registration.save()
        event.registered_count += 1
        promoted += 1
        tell(registration, "event_promoted", key=f"promoted:{registration.attempt}", price=event.price)
    if promoted:
        event.save(update_fields=["registered_count", "updated_at"])
    return promoted
