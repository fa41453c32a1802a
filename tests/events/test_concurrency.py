"""Seats, tickets, doors and votes under parallel load, on PostgreSQL with real connections (one
per thread), and Redis for the vote counters.

Each test says which lock it proves and how it would fail without it. Outcomes are counted,
never timed: the threads are released together by a barrier and the lock decides the order."""

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from decimal import Decimal
from itertools import pairwise

import pytest
from django.core.cache import cache
from django.db import connection, transaction
from django.utils import timezone

from events import services
from events.models import Event, Registration, Vote
from loyalty import services as loyalty
from loyalty.models import BonusAccount, LedgerEntry
from loyalty.selectors import ledger_mismatches
from tests.factories import UserFactory
from tests.parallel import run_parallel, wait_for_a_lock_or

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

RegStatus = Registration.Status


def D(value) -> Decimal:
    return Decimal(str(value))


def unexpected(outcomes, *expected_errors):
    """Exceptions that are not the refusals the race may legitimately end in (a deadlock, an
    integrity error, a lost update surfacing as a constraint violation...)."""
    return [o for o in outcomes if isinstance(o, Exception) and not isinstance(o, expected_errors)]


def wait_until_another_session_waits_for_a_lock(timeout=30):
    """Hold on until another session of this database is blocked on a lock: the other path
    has reached the row this one holds."""
    wait_for_a_lock_or(timeout=timeout)


def hold_then_race(holder, challenger):
    """Run holder() and, once it signals (through the returned `holding` event) that it holds
    its locks, challenger() in a second thread; returns (holder's, challenger's) outcome."""
    holding = threading.Event()

    def run(action, wait):
        if wait:
            assert holding.wait(timeout=30), "the holder never took its locks"
        try:
            return action()
        except Exception as exc:
            holding.set()  # a holder failing early must not leave the challenger waiting
            return exc
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=2) as pool:
        first = pool.submit(run, lambda: holder(holding), False)
        second = pool.submit(run, challenger, True)
        return first.result(), second.result()


def people(count, balance=None):
    made = [UserFactory() for _ in range(count)]
    if balance is not None:
        for user in made:
            loyalty.adjust_balance(user=user, amount=D(balance), reason="test", created_by=None)
    return made


def balance_of(user) -> Decimal:
    return BonusAccount.objects.get(user=user).balance


@pytest.fixture
def told(monkeypatch):
    """(user id, kind) of each message the Event service queued, recorded when the queuing
    transaction commits (in whichever thread committed it)."""
    calls, guard = [], threading.Lock()

    def record(*, user_id, messages, event_key):
        def committed():
            with guard:
                calls.extend((user_id, kind) for kind, _context in messages)

        transaction.on_commit(committed)

    monkeypatch.setattr("notifications.services.notify_after_commit", record)
    return calls


# --- 1. A hundred customers, ten seats ---------------------------------------------------------


def test_a_hundred_customers_racing_for_ten_paid_seats_and_the_queue_that_follows(make_event, told):
    """The event row's lock (register_for_event) serialises the race: exactly 10 seats are sold
    and paid, 90 join the waitlist in one strict order. Without it two customers would both
    read `registered_count` 9 and both sit down (an 11th REGISTERED row with the counter at 10,
    or the constraint failing the race), and the waitlist times could disagree with the order
    the rows were written in. Parallel cancellations then promote the head of the queue in
    order, one who can no longer pay loses the place, and the books balance."""
    event = make_event(capacity=10, price=D(50))
    crowd = people(100, balance=100)

    outcomes = run_parallel(100, lambda i: services.register_for_event(crowd[i], event))

    assert [o for o in outcomes if not isinstance(o, Registration)] == []
    assert all(o.created for o in outcomes)
    event.refresh_from_db()
    assert event.registered_count == 10
    seated = list(Registration.objects.filter(event=event, status=RegStatus.REGISTERED))
    assert len(seated) == 10
    assert Registration.objects.filter(event=event, status=RegStatus.WAITLISTED).count() == 90
    assert {r.paid_amount for r in seated} == {D(50)}
    assert sorted(balance_of(user) for user in crowd) == [D(50)] * 10 + [D(100)] * 90
    assert LedgerEntry.objects.filter(kind=LedgerEntry.Kind.REDEMPTION).count() == 10
    queue = list(Registration.objects.filter(event=event, status=RegStatus.WAITLISTED).order_by("waitlisted_at", "id"))
    # One total order: each customer joined after the one before them, by the clock and by the row.
    assert [r.pk for r in queue] == sorted(r.pk for r in queue)
    assert all(a.waitlisted_at < b.waitlisted_at for a, b in pairwise(queue))
    assert sorted(kind for _u, kind in told) == ["event_registered"] * 10 + ["event_waitlisted"] * 90

    # The second in the queue can no longer pay; three seated customers cancel at once.
    loyalty.adjust_balance(user=queue[1].customer, amount=D(-60), reason="test", created_by=None)
    leaving = [r.customer for r in seated[:3]]
    told.clear()

    cancelled = run_parallel(3, lambda i: services.cancel_registration(leaving[i], event))

    assert all(isinstance(o, services.CancelResult) and o.refunded == D(50) for o in cancelled), cancelled
    statuses = dict(Registration.objects.filter(event=event).values_list("pk", "status"))
    assert [statuses[r.pk] for r in queue[:5]] == [
        RegStatus.REGISTERED,
        RegStatus.CANCELLED,
        RegStatus.REGISTERED,
        RegStatus.REGISTERED,
        RegStatus.WAITLISTED,
    ]
    assert Registration.objects.get(pk=queue[1].pk).cancelled_by == Registration.CancelledBy.UNPAID
    assert Registration.objects.filter(event=event, status=RegStatus.WAITLISTED).count() == 86
    event.refresh_from_db()
    assert event.registered_count == 10
    assert Registration.objects.filter(event=event, status=RegStatus.REGISTERED).count() == 10
    assert [balance_of(user) for user in leaving] == [D(100)] * 3
    assert [balance_of(r.customer) for r in queue[:4]] == [D(50), D(40), D(50), D(50)]
    assert sorted(kind for _u, kind in told) == ["event_promoted"] * 3 + ["event_waitlist_missed"]
    assert ledger_mismatches() == []


def test_parallel_cancellations_and_registrations_keep_the_seat_count(make_event):
    """Ten of twenty seated customers cancel while ten newcomers register, with seats enough for
    all, so no waitlist refills (and hides) a miscount. Every change of the seat count is made
    under the event row's lock, so the counter ends equal to the seats actually held. Without
    the lock in cancel_registration a cancellation would write back a count it read before
    other cancellations and registrations committed: lost updates, a counter off the seats."""
    event = make_event(capacity=30, price=D(10))
    seated, newcomers = people(20, balance=10), people(10, balance=10)
    for customer in seated:
        services.register_for_event(customer, event)

    def act(index):
        if index % 2:
            return services.register_for_event(newcomers[index // 2], event)
        return services.cancel_registration(seated[index // 2], event)

    outcomes = run_parallel(20, act)

    assert unexpected(outcomes) == []
    event.refresh_from_db()
    held = Registration.objects.filter(event=event, status=RegStatus.REGISTERED).count()
    waiting = Registration.objects.filter(event=event, status=RegStatus.WAITLISTED).count()
    assert (event.registered_count, held, waiting) == (20, 20, 0)
    assert sum(balance_of(c) for c in seated + newcomers) == D(300) - D(10) * held
    assert ledger_mismatches() == []


# --- 2. One ticket, many doors -----------------------------------------------------------------


@pytest.mark.parametrize("doors", [2, 10])
def test_one_ticket_scanned_at_several_doors_at_once_is_checked_in_once(make_event, cashier, doors):
    """The registration row's lock (check-in) lets one door in: exactly one True, the others
    False. Without it every door would read "registered" and report a fresh check-in; the
    attendance bonus would then be saved from double payment only by its idempotency key."""
    event = make_event(starts_at=timezone.now() + timedelta(minutes=30), attendance_bonus=D(25))
    (customer,) = people(1)
    registration = services.register_for_event(customer, event)

    def scan(index):
        if index % 2:
            return services.check_in_by_code(registration.qr_payload, event=event, by=cashier).checked_in_now
        return services.check_in_participant(registration.pk, event=event, by=cashier)

    outcomes = run_parallel(doors, scan)

    assert sorted(outcomes) == [False] * (doors - 1) + [True], outcomes
    registration.refresh_from_db()
    assert registration.status == RegStatus.CHECKED_IN
    assert services.arrivals(event) == 1
    bonuses = LedgerEntry.objects.filter(account__user=customer, kind=LedgerEntry.Kind.ADJUSTMENT)
    assert [(e.amount, e.idempotency_key) for e in bonuses] == [(D(25), f"event:{event.pk}:attended:{registration.pk}")]
    assert balance_of(customer) == D(25)
    assert ledger_mismatches() == []


# --- 3. Votes: Redis counters against the database ---------------------------------------------


@pytest.fixture
def redis_cache(settings):
    assert settings.CACHES["default"]["BACKEND"].endswith("RedisCache")
    return cache


def database_counts(event) -> dict[str, int]:
    return {
        "up": Vote.objects.filter(event=event, vote="up").count(),
        "down": Vote.objects.filter(event=event, vote="down").count(),
    }


@pytest.mark.redis
def test_parallel_votes_and_changes_leave_the_counters_equal_to_the_database(make_event, redis_cache):
    """Votes on one event are written under its row's lock and each moves the Redis counters
    once (an atomic INCR), so the counters end equal to the database; readers rebuilding an
    emptied cache in the middle of the writes only add what is missing. Without the lock two
    first votes could each find the counters missing and rebuild them from a view lacking the
    other's vote, and the count would end one short."""
    event = make_event(propose=True, vote_threshold=1000, voting_deadline=timezone.now() + timedelta(days=1))
    voters = people(50)
    first = ["down" if i % 3 == 0 else "up" for i in range(50)]

    outcomes = run_parallel(50, lambda i: services.process_vote(voters[i], event, first[i]))

    assert all(isinstance(o, services.VoteResult) for o in outcomes), outcomes
    assert database_counts(event) == {"up": 33, "down": 17}
    assert services.vote_counts(event.pk) == database_counts(event)

    # Every fourth voter changes their mind, the rest repeat themselves, while 20 readers ask
    # for the counts of an emptied cache.
    second = [("up" if v == "down" else "down") if i % 4 == 0 else v for i, v in enumerate(first)]
    cache.clear()

    def act(index):
        if index < 50:
            return services.process_vote(voters[index], event, second[index])
        return services.vote_counts(event.pk)

    outcomes = run_parallel(70, act)

    assert unexpected(outcomes) == []
    expected = {"up": second.count("up"), "down": second.count("down")}
    assert database_counts(event) == expected
    assert services.vote_counts(event.pk) == expected
    assert all(set(o) == {"up", "down"} for o in outcomes[50:]), outcomes[50:]
    cache.clear()
    assert services.vote_counts(event.pk) == expected
    assert Event.objects.get(pk=event.pk).status == Event.Status.PROPOSED


@pytest.mark.redis
def test_a_threshold_crossed_by_a_crowd_publishes_the_event_exactly_once(make_event, redis_cache, told):
    """The event row's lock decides, once, that the threshold is reached: the event is published
    by exactly one vote, every later vote is refused, and each of the ten up-voters is told
    once. Without the lock several voters could count the threshold reached at the same time
    and each publish the event and tell everyone again."""
    event = make_event(propose=True, vote_threshold=10, voting_deadline=timezone.now() + timedelta(days=1))
    voters = people(40)
    votes = ["up" if i % 4 else "down" for i in range(40)]  # 30 up, 10 down

    outcomes = run_parallel(40, lambda i: services.process_vote(voters[i], event, votes[i]))

    assert unexpected(outcomes, services.VotingClosed) == []
    results = [o for o in outcomes if isinstance(o, services.VoteResult)]
    assert sum(r.published for r in results) == 1
    assert len(results) == Vote.objects.filter(event=event).count()
    assert len(outcomes) - len(results) == sum(isinstance(o, services.VotingClosed) for o in outcomes)
    event.refresh_from_db()
    assert event.status == Event.Status.PUBLISHED
    up_voters = set(Vote.objects.filter(event=event, vote="up").values_list("customer_id", flat=True))
    assert len(up_voters) == 10
    published = [user_id for user_id, kind in told if kind == "event_published"]
    assert sorted(published) == sorted(up_voters)  # each up-voter once, nobody else
    assert services.vote_counts(event.pk) == database_counts(event)


@pytest.mark.redis
def test_an_emptied_cache_during_a_vote_does_not_leave_the_counters_short(make_event, redis_cache, monkeypatch):
    """Redis is emptied (evicted, flushed, restarted) after a vote moved the counters but before
    it committed, and a reader asks for the counts at that moment. The counters must still end
    equal to the database: the module promises the database is the truth and the counters a
    cache of it. A reader that rebuilds them from the committed votes without waiting for the
    vote in flight (the event row's lock) caches a count one short, for good."""
    from events.services import votes

    event = make_event(propose=True, vote_threshold=1000, voting_deadline=timezone.now() + timedelta(days=1))
    voters = people(4)
    for voter in voters[:3]:
        services.process_vote(voter, event, "up")
    original, seen, done = votes._move_counters, [], threading.Event()

    def reader():
        try:
            cache.clear()
            seen.append(services.vote_counts(event.pk))
        finally:
            done.set()
            connection.close()

    thread = threading.Thread(target=reader)

    def in_flight(event_id, deltas):
        counts = original(event_id, deltas)
        thread.start()
        # Go on (and commit) once the reader has finished, or is waiting for this vote's lock.
        wait_for_a_lock_or(done)
        return counts

    monkeypatch.setattr(votes, "_move_counters", in_flight)
    services.process_vote(voters[3], event, "up")
    monkeypatch.setattr(votes, "_move_counters", original)
    thread.join(timeout=30)

    assert len(seen) == 1
    assert database_counts(event) == {"up": 4, "down": 0}
    assert services.vote_counts(event.pk) == database_counts(event)


# --- 4. One customer, two taps ------------------------------------------------------------------


@pytest.mark.parametrize("taps", [2, 10])
def test_the_same_customer_registering_at_once_gets_one_seat_paid_once(make_event, told, taps):
    """The event row's lock makes the second request see the first one's registration and
    return it (`created` False). Without it both would insert, and the unique constraint
    would fail one with an IntegrityError — or, were the constraint missing too, the
    customer would hold two seats and pay twice. (Ten taps lose that race reliably without
    the lock; two may happen not to overlap.)"""
    event = make_event(price=D(30))
    (customer,) = people(1, balance=100)

    outcomes = run_parallel(taps, lambda _: services.register_for_event(customer, event))

    assert all(isinstance(o, Registration) for o in outcomes), outcomes
    assert len({o.pk for o in outcomes}) == 1
    assert sorted(o.created for o in outcomes) == [False] * (taps - 1) + [True]
    assert Registration.objects.filter(event=event, customer=customer).count() == 1
    event.refresh_from_db()
    assert event.registered_count == 1
    assert balance_of(customer) == D(70)
    assert LedgerEntry.objects.filter(account__user=customer, kind=LedgerEntry.Kind.REDEMPTION).count() == 1
    assert told == [(customer.pk, "event_registered")]
    assert ledger_mismatches() == []


# --- 5. Races between different paths -----------------------------------------------------------


@pytest.fixture
def door_open_with_refunds(settings):
    """The door opens three days ahead, so a check-in can race a cancellation that is refunded."""
    settings.EVENTS_CHECKIN_OPENS_MINUTES = 5 * 24 * 60
    return settings


def test_the_door_waits_for_a_cancellation_holding_the_ticket_then_refuses_it(
    make_event, cashier, door_open_with_refunds, monkeypatch
):
    """A cancellation holds the registration (and the event) while it refunds; the door scans
    the ticket at that moment. The check-in's lock on the registration row makes it wait and
    then see "cancelled". Without that lock the door would read "registered", wait only at its
    UPDATE, and then overwrite the cancellation: checked in, refunded and paid a bonus."""
    from events.services import registrations as module

    event = make_event(price=D(30), attendance_bonus=D(10))
    (customer,) = people(1, balance=100)
    registration = services.register_for_event(customer, event)
    release = module.release

    def cancel(holding):
        def slow_release(*args, **kwargs):
            holding.set()
            wait_until_another_session_waits_for_a_lock()
            return release(*args, **kwargs)

        monkeypatch.setattr(module, "release", slow_release)
        return services.cancel_registration(customer, event)

    cancelled, scanned = hold_then_race(
        cancel, lambda: services.check_in_participant(registration.pk, event=event, by=cashier)
    )

    assert isinstance(cancelled, services.CancelResult) and cancelled.refunded == D(30), cancelled
    assert isinstance(scanned, services.CheckInRefused), scanned
    registration.refresh_from_db()
    assert registration.status == RegStatus.CANCELLED
    assert balance_of(customer) == D(100)
    assert not LedgerEntry.objects.filter(kind=LedgerEntry.Kind.ADJUSTMENT, business__isnull=False).exists()
    assert Event.objects.get(pk=event.pk).registered_count == 0
    assert ledger_mismatches() == []


def test_a_cancellation_waits_for_the_door_holding_the_ticket_then_is_refused(
    make_event, cashier, door_open_with_refunds, monkeypatch
):
    """The door holds the registration while it pays the attendance bonus; the customer cancels
    at that moment. The cancellation's lock on the registration row (after the event's) makes
    it wait and then see "came". Without it the cancellation would read "registered", refund
    the ticket and release the seat of a customer who is inside (or deadlock with the door on
    the bonus account)."""
    event = make_event(price=D(30), attendance_bonus=D(10))
    (customer,) = people(1, balance=100)
    registration = services.register_for_event(customer, event)
    adjust = loyalty.adjust_balance

    def check_in(holding):
        def slow_bonus(**kwargs):
            holding.set()
            wait_until_another_session_waits_for_a_lock()
            return adjust(**kwargs)

        monkeypatch.setattr(loyalty, "adjust_balance", slow_bonus)
        return services.check_in_participant(registration.pk, event=event, by=cashier)

    scanned, cancelled = hold_then_race(check_in, lambda: services.cancel_registration(customer, event))

    assert scanned is True, scanned
    assert isinstance(cancelled, services.CancellationRefused), cancelled
    registration.refresh_from_db()
    assert registration.status == RegStatus.CHECKED_IN
    assert balance_of(customer) == D(80)  # paid 30, got 10 for coming
    assert not LedgerEntry.objects.filter(kind=LedgerEntry.Kind.REFUND_RETURN).exists()
    assert Event.objects.get(pk=event.pk).registered_count == 1
    assert ledger_mismatches() == []


def test_cancellations_racing_check_ins_of_the_same_registrations(make_event, cashier, door_open_with_refunds):
    """A crowd version of the two tests above: for each of twenty paid tickets the customer
    cancels while the door scans it. Exactly one of each pair wins, each with its own money:
    the seat given back with its refund and the door refusing, or the customer in with the
    attendance bonus and the cancellation refused. Lock order event → registration → account
    on both paths, so no deadlock (which would surface here as an OperationalError). Which
    side wins is up to the scheduler; the two tests above pin each order down."""
    event = make_event(capacity=20, price=D(30), attendance_bonus=D(10))
    crowd = people(20, balance=100)
    registrations = [services.register_for_event(customer, event) for customer in crowd]

    def act(index):
        if index % 2:
            return services.check_in_participant(registrations[index // 2].pk, event=event, by=cashier)
        return services.cancel_registration(crowd[index // 2], event)

    outcomes = run_parallel(40, act)

    assert unexpected(outcomes, services.CheckInRefused, services.CancellationRefused) == []
    came = 0
    for index, customer in enumerate(crowd):
        cancel, check_in = outcomes[2 * index], outcomes[2 * index + 1]
        registration = Registration.objects.get(pk=registrations[index].pk)
        if check_in is True:
            came += 1
            assert isinstance(cancel, services.CancellationRefused), cancel
            assert registration.status == RegStatus.CHECKED_IN
            assert balance_of(customer) == D(80)  # paid 30, got 10 for coming
        else:
            assert isinstance(check_in, services.CheckInRefused), check_in
            assert isinstance(cancel, services.CancelResult) and cancel.refunded == D(30), cancel
            assert registration.status == RegStatus.CANCELLED
            assert balance_of(customer) == D(100)
    event.refresh_from_db()
    assert event.registered_count == came == services.arrivals(event)
    attended = LedgerEntry.objects.filter(kind=LedgerEntry.Kind.ADJUSTMENT, business__isnull=False).count()
    returned = LedgerEntry.objects.filter(kind=LedgerEntry.Kind.REFUND_RETURN).count()
    assert (attended, returned) == (came, 20 - came)
    assert ledger_mismatches() == []


def test_a_partner_cancelling_the_event_while_customers_register(make_event, manager, told):
    """cancel_event and register_for_event both take the event row's lock first, so each
    registration lands wholly before the cancellation (and is refunded by it) or wholly after
    (and is refused). Without the lock a registration could commit after the cancellation
    listed the seats: a customer charged for a seat at a cancelled event, never refunded."""
    event = make_event(capacity=10, price=D(20))
    crowd = people(30, balance=50)

    def act(index):
        if index == 30:
            return services.cancel_event(event, by=manager)
        return services.register_for_event(crowd[index], event)

    outcomes = run_parallel(31, act)

    assert unexpected(outcomes, services.RegistrationClosed) == []
    assert isinstance(outcomes[30], Event)
    made = [o for o in outcomes[:30] if isinstance(o, Registration)]
    event.refresh_from_db()
    assert (event.status, event.registered_count) == (Event.Status.CANCELLED, 0)
    rows = Registration.objects.filter(event=event)
    assert rows.count() == len(made)
    assert {(r.status, r.cancelled_by) for r in rows} <= {(RegStatus.CANCELLED, "partner")}
    assert [balance_of(customer) for customer in crowd] == [D(50)] * 30
    assert sorted(user_id for user_id, kind in told if kind == "event_cancelled") == sorted(r.customer_id for r in made)
    assert ledger_mismatches() == []


def test_closing_an_account_waits_for_a_cancellation_that_seats_the_customer_elsewhere(make_event, told, monkeypatch):
    """The leaving customer holds a paid seat at one event and a waitlist place at a later
    one; there a seated customer cancels at the same moment, which promotes the leaving one
    and so needs their bonus account. The closure locks every event before any registration
    or account, so it waits for that cancellation holding no account, then gives up both
    seats with both refunds. Locking event by event instead, it would hold the account (the
    first ticket's refund) while waiting for the second event: a deadlock."""
    from accounts.services import close_account
    from events.services import registrations as module

    first = make_event(capacity=1, price=D(30))
    later = make_event(capacity=1, price=D(40), title="Master class")
    assert first.pk < later.pk
    leaving, seated, waiting = people(3, balance=100)
    services.register_for_event(leaving, first)
    services.register_for_event(seated, later)
    services.register_for_event(leaving, later)  # waitlisted, first in the queue
    services.register_for_event(waiting, later)
    told.clear()
    release, holder_thread = module.release, []

    def cancel(holding):
        holder_thread.append(threading.get_ident())

        def slow_release(*args, **kwargs):
            if threading.get_ident() == holder_thread[0]:
                holding.set()
                wait_until_another_session_waits_for_a_lock()
            return release(*args, **kwargs)

        monkeypatch.setattr(module, "release", slow_release)
        return services.cancel_registration(seated, later)

    cancelled, closed = hold_then_race(cancel, lambda: close_account(user=leaving))

    assert isinstance(cancelled, services.CancelResult) and cancelled.refunded == D(40), cancelled
    assert isinstance(closed, type(leaving)) and closed.is_active is False, closed
    mine = Registration.objects.filter(customer=leaving).order_by("event_id")
    assert [(r.status, r.paid_amount, r.refunded_amount) for r in mine] == [
        (RegStatus.CANCELLED, D(30), D(30)),
        (RegStatus.CANCELLED, D(40), D(40)),  # promoted by the cancellation, then given up
    ]
    assert Registration.objects.get(customer=waiting).status == RegStatus.REGISTERED
    assert [balance_of(user) for user in (leaving, seated, waiting)] == [D(100), D(100), D(60)]
    counts = Event.objects.filter(pk__in=[first.pk, later.pk]).order_by("pk").values_list("registered_count", flat=True)
    assert list(counts) == [0, 1]
    assert [kind for user_id, kind in told if user_id == waiting.pk] == ["event_promoted"]
    assert ledger_mismatches() == []


def race_the_closure(monkeypatch, leaving, challenger):
    """Close `leaving`'s account, holding the customer's row (before the events are left)
    until `challenger`, run in a second thread, waits for a lock; returns (the closure's
    outcome, the challenger's)."""
    import events.services as events_services
    from accounts.services import close_account

    leave = events_services.leave_events

    def close(holding):
        def slow_leave(**kwargs):
            holding.set()
            wait_until_another_session_waits_for_a_lock()
            return leave(**kwargs)

        monkeypatch.setattr(events_services, "leave_events", slow_leave)
        return close_account(user=leaving)

    return hold_then_race(close, challenger)


def test_a_registration_racing_the_closure_of_the_account_waits_for_it_and_is_refused(make_event, monkeypatch):
    """The closure holds the customer's row while it gives up their seats; a registration the
    app sent at the same moment takes that row first, so it waits, then finds the account
    closed. Without that lock it would seat a closed account after the closure had looked."""
    event = make_event(capacity=5, price=D(30))
    [leaving] = people(1, balance=100)

    closed, registered = race_the_closure(monkeypatch, leaving, lambda: services.register_for_event(leaving, event))

    assert isinstance(closed, type(leaving)) and closed.is_active is False, closed
    assert isinstance(registered, services.RegistrationClosed), registered
    assert not Registration.objects.filter(customer=leaving).exists()
    event.refresh_from_db()
    assert event.registered_count == 0
    assert balance_of(leaving) == D(100)


def test_a_vote_racing_the_closure_of_the_account_waits_for_it_and_is_refused(make_event, monkeypatch):
    """As for a registration: the vote takes the customer's row first, so one sent while the
    account closes waits for the closure and is refused, instead of counting a closed account's
    vote after the closure withdrew the others."""
    proposal = make_event(propose=True, vote_threshold=3, voting_deadline=timezone.now() + timedelta(days=1))
    [leaving] = people(1)

    closed, voted = race_the_closure(monkeypatch, leaving, lambda: services.process_vote(leaving, proposal, "up"))

    assert isinstance(closed, type(leaving)) and closed.is_active is False, closed
    assert isinstance(voted, services.VotingClosed), voted
    assert not Vote.objects.filter(event=proposal).exists()
    assert services.vote_counts(proposal.pk) == {"up": 0, "down": 0}


def test_a_purchase_and_a_registration_of_the_same_customer_at_once_both_go_through(make_event, monkeypatch):
    """A registration holds the customer's row, then takes their bonus account to pay; a
    purchase holds the account, then writes rows that reference the customer (PostgreSQL
    checks those keys under a KEY SHARE lock on the customer's row). Behind FOR UPDATE that
    check waited for the registration while the registration waited for the account: a
    deadlock, and one of the two failed. The customer's row is taken FOR NO KEY UPDATE."""
    from events.services import registrations
    from tests.factories import LoyaltyProgramFactory

    event = make_event(capacity=5, price=D(30))
    [customer] = people(1, balance=100)
    shop = LoyaltyProgramFactory().business
    purchase_done = threading.Event()
    check_open = registrations._open_for_registration

    def register(holding):
        def held_open(*args, **kwargs):
            holding.set()
            # The purchase either finishes or waits for this transaction's lock on the customer.
            wait_for_a_lock_or(purchase_done)
            return check_open(*args, **kwargs)

        monkeypatch.setattr(registrations, "_open_for_registration", held_open)
        return services.register_for_event(customer, event)

    def buy():
        try:
            return loyalty.record_transaction(business=shop, customer=customer, external_id="p1", amount=D(1000))
        finally:
            purchase_done.set()

    registered, bought = hold_then_race(register, buy)

    assert isinstance(registered, Registration) and registered.status == RegStatus.REGISTERED, registered
    assert isinstance(bought, loyalty.PurchaseResult) and bought.created, bought
    assert ledger_mismatches() == []
