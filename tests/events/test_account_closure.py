"""Closing an account gives up the customer's seats and waitlist places in events not yet over,
as their own cancellation would, and withdraws their votes on proposals still open, in the
closure's transaction; what is over or decided stays as history."""

from datetime import timedelta

import pytest
import time_machine
from django.db import transaction
from django.utils import timezone, translation

from accounts.models import User
from accounts.services import close_account
from events import services
from events.models import Event, Registration, Vote
from loyalty.models import LedgerEntry
from loyalty.selectors import ledger_mismatches
from tests.events.test_services import D, balance_of, fresh, person

pytestmark = pytest.mark.django_db

RegStatus = Registration.Status
CUSTOMER = Registration.CancelledBy.CUSTOMER


def state_of(registration) -> tuple:
    registration = fresh(registration)
    return (registration.status, registration.cancelled_by, registration.paid_amount, registration.refunded_amount)


def books_balance():
    assert ledger_mismatches() == []


@pytest.fixture
def told(monkeypatch):
    """(user id, kind) of each message the Event service queued, recorded when its transaction
    commits (run the callbacks with django_capture_on_commit_callbacks(execute=True))."""
    calls = []

    def record(*, user_id, messages, event_key):
        for kind, _context in messages:
            transaction.on_commit(lambda kind=kind: calls.append((user_id, kind)))

    monkeypatch.setattr("notifications.services.notify_after_commit", record)
    return calls


def kinds_for(calls, user) -> list[str]:
    return [kind for user_id, kind in calls if user_id == user.pk]


def test_closing_the_account_gives_the_seat_to_the_first_on_the_waitlist(make_event):
    full = make_event(capacity=1)
    other = make_event(capacity=1, title="Master class")
    leaving, waiting, second = person(), person(), person()
    seat = services.register_for_event(leaving, full)
    services.register_for_event(waiting, full)
    services.register_for_event(second, full)
    services.register_for_event(person(), other)
    place = services.register_for_event(leaving, other)  # on the waitlist there

    close_account(user=leaving)

    assert fresh(leaving).is_active is False
    assert fresh(seat).cancelled_at is not None
    assert state_of(seat) == (RegStatus.CANCELLED, CUSTOMER, D(0), D(0))
    assert state_of(place) == (RegStatus.CANCELLED, CUSTOMER, D(0), D(0))
    assert Registration.objects.get(event=full, customer=waiting).status == RegStatus.REGISTERED
    assert Registration.objects.get(event=full, customer=second).status == RegStatus.WAITLISTED
    assert fresh(full).registered_count == 1
    assert fresh(other).registered_count == 1


def test_a_paid_ticket_given_up_by_the_refund_deadline_comes_back_into_the_closed_account(make_event):
    event = make_event(capacity=1, price=D(70))
    leaving, waiting = person(balance=100), person(balance=70)
    seat = services.register_for_event(leaving, event)
    services.register_for_event(waiting, event)

    with time_machine.travel(services.refund_deadline(event), tick=False):  # the boundary counts
        close_account(user=leaving)

    assert state_of(seat) == (RegStatus.CANCELLED, CUSTOMER, D(70), D(70))
    # The closed account keeps its ledger and balance: the ticket's 70 are back beside the other 30.
    assert balance_of(leaving) == D(100)
    returned = LedgerEntry.objects.get(account__user=leaving, kind=LedgerEntry.Kind.REFUND_RETURN)
    assert returned.amount == D(70)
    promoted = Registration.objects.get(customer=waiting)
    assert (promoted.status, promoted.paid_amount) == (RegStatus.REGISTERED, D(70))
    assert balance_of(waiting) == D(0)
    assert fresh(event).registered_count == 1
    books_balance()


def test_a_paid_ticket_given_up_after_the_refund_deadline_stays_spent(make_event):
    event = make_event(capacity=1, price=D(70))
    leaving, waiting = person(balance=100), person(balance=70)
    seat = services.register_for_event(leaving, event)
    services.register_for_event(waiting, event)

    with time_machine.travel(services.refund_deadline(event) + timedelta(seconds=1), tick=False):
        close_account(user=leaving)

    assert state_of(seat) == (RegStatus.CANCELLED, CUSTOMER, D(70), D(0))
    assert balance_of(leaving) == D(30)
    assert not LedgerEntry.objects.filter(kind=LedgerEntry.Kind.REFUND_RETURN).exists()
    assert Registration.objects.get(customer=waiting).status == RegStatus.REGISTERED
    assert balance_of(waiting) == D(0)
    assert fresh(event).registered_count == 1
    books_balance()


def test_registrations_of_ended_events_stay_as_history(make_event):
    start = timezone.now() + timedelta(days=3)
    came_to = make_event(starts_at=start, price=D(10), attendance_bonus=D(5))
    missed = make_event(starts_at=start, title="Run", price=D(10))
    upcoming = make_event(starts_at=start + timedelta(days=7), title="Concert")
    leaving = person(balance=100)
    came = services.register_for_event(leaving, came_to)
    absent = services.register_for_event(leaving, missed)
    ahead = services.register_for_event(leaving, upcoming)
    with time_machine.travel(services.door_opens_at(came_to), tick=False):
        services.check_in_participant(came.pk, event=came_to)
    balance, entries = balance_of(leaving), LedgerEntry.objects.count()

    # Both are over (neither marked finished nor no-show yet: that waits for beat); the third is not.
    with time_machine.travel(missed.ends_at, tick=False):
        close_account(user=leaving)

    assert state_of(came) == (RegStatus.CHECKED_IN, "", D(10), D(0))
    assert state_of(absent) == (RegStatus.REGISTERED, "", D(10), D(0))
    assert fresh(absent).cancelled_at is None
    assert (fresh(came_to).registered_count, fresh(missed).registered_count) == (1, 1)
    assert fresh(ahead).status == RegStatus.CANCELLED
    assert (balance_of(leaving), LedgerEntry.objects.count()) == (balance, entries)
    books_balance()


def test_a_seat_in_an_event_under_way_is_freed_with_nothing_returned(make_event):
    event = make_event(capacity=1, price=D(30))
    leaving, waiting = person(balance=30), person(balance=30)
    seat = services.register_for_event(leaving, event)
    services.register_for_event(waiting, event)

    with time_machine.travel(event.starts_at + timedelta(minutes=30), tick=False):
        close_account(user=leaving)

    assert state_of(seat) == (RegStatus.CANCELLED, CUSTOMER, D(30), D(0))
    assert balance_of(leaving) == D(0)
    # The waitlist does not move once an event has started, for any cancellation.
    assert Registration.objects.get(customer=waiting).status == RegStatus.WAITLISTED
    assert balance_of(waiting) == D(30)
    assert fresh(event).registered_count == 0
    books_balance()


def test_closing_an_account_without_registrations_changes_no_one_elses(make_event):
    event = make_event(capacity=1, price=D(20))
    seated, waiting = person(balance=20), person(balance=20)
    seat = services.register_for_event(seated, event)
    place = services.register_for_event(waiting, event)
    leaving = person(balance=50)
    before = (state_of(seat), state_of(place), LedgerEntry.objects.count())

    closed = close_account(user=leaving)

    assert (closed.is_active, closed.phone) == (False, None)
    assert fresh(leaving).deleted_at is not None
    assert (state_of(seat), state_of(place), LedgerEntry.objects.count()) == before
    assert fresh(event).registered_count == 1
    assert balance_of(leaving) == D(50)
    assert services.leave_events(user=leaving) == []


def test_the_closed_customer_is_told_nothing_and_the_promoted_one_as_usual(
    make_event, told, django_capture_on_commit_callbacks
):
    event = make_event(capacity=1, price=D(40))
    full = make_event(capacity=1, title="Master class")
    leaving, waiting = person(balance=100), person(balance=40)
    services.register_for_event(leaving, event)
    services.register_for_event(waiting, event)
    services.register_for_event(person(), full)
    services.register_for_event(leaving, full)  # a waitlist place given up too
    told.clear()

    with django_capture_on_commit_callbacks(execute=True):
        close_account(user=leaving)

    assert kinds_for(told, leaving) == []
    assert kinds_for(told, waiting) == ["event_promoted"]
    assert len(told) == 1


def test_the_seats_are_given_up_only_if_the_account_is_closed(make_event, monkeypatch):
    event = make_event(capacity=1, price=D(40))
    leaving, waiting = person(balance=40), person(balance=40)
    seat = services.register_for_event(leaving, event)
    services.register_for_event(waiting, event)

    def broken(user):
        raise RuntimeError("token store down")

    monkeypatch.setattr("accounts.services.revoke_all_tokens", broken)
    with pytest.raises(RuntimeError):
        close_account(user=leaving)

    assert User.objects.get(pk=leaving.pk).is_active is True
    assert state_of(seat) == (RegStatus.REGISTERED, "", D(40), D(0))
    assert Registration.objects.get(customer=waiting).status == RegStatus.WAITLISTED
    assert (balance_of(leaving), balance_of(waiting)) == (D(0), D(40))
    assert fresh(event).registered_count == 1
    books_balance()


# --- Votes ---------------------------------------------------------------------------------------


def proposal_of(make_event, threshold=3):
    return make_event(propose=True, vote_threshold=threshold, voting_deadline=timezone.now() + timedelta(days=1))


def test_closing_the_account_withdraws_its_votes_on_open_proposals(make_event):
    proposal, other = proposal_of(make_event), proposal_of(make_event, threshold=5)
    leaving, staying = person(), person()
    services.process_vote(leaving, proposal, "up")
    services.process_vote(staying, proposal, "up")
    services.process_vote(leaving, other, "down")
    assert services.vote_counts(proposal.pk) == {"up": 2, "down": 0}  # the counters are in the cache now

    close_account(user=leaving)

    assert not Vote.objects.filter(customer=leaving).exists()
    assert services.vote_counts(proposal.pk) == {"up": 1, "down": 0}
    assert services.vote_counts(other.pk) == {"up": 0, "down": 0}
    assert Vote.objects.filter(customer=staying, event=proposal, vote="up").count() == 1


def test_a_withdrawn_vote_no_longer_helps_publish_the_event(make_event):
    proposal = proposal_of(make_event, threshold=2)
    leaving, first, second = person(), person(), person()
    services.process_vote(leaving, proposal, "up")
    close_account(user=leaving)

    result = services.process_vote(first, proposal, "up")

    assert (result.up, result.published) == (1, False)
    assert fresh(proposal).status == Event.Status.PROPOSED
    assert services.process_vote(second, proposal, "up").published is True


def test_votes_on_decided_proposals_stay_as_history(make_event, manager):
    published = proposal_of(make_event)
    closed_voting = proposal_of(make_event)
    leaving = person()
    services.process_vote(leaving, published, "up")
    services.process_vote(leaving, closed_voting, "up")
    services.publish_event(published, by=manager)

    with time_machine.travel(timezone.now() + timedelta(days=2)):  # voting on the second is over
        close_account(user=leaving)

    assert Vote.objects.filter(customer=leaving).count() == 2


def test_a_closed_account_cannot_vote(make_event):
    proposal = proposal_of(make_event)
    leaving = person()
    close_account(user=leaving)

    with translation.override("en"), pytest.raises(services.VotingClosed) as refused:
        services.process_vote(leaving, proposal, "up")

    assert str(refused.value.message) == "This account is closed."

    assert not Vote.objects.filter(event=proposal).exists()
    assert services.vote_counts(proposal.pk) == {"up": 0, "down": 0}
