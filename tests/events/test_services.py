"""Every rule of the Event service, one by one, on the default test database: making an event,
seats and the waitlist, cancellations and refunds, changes, the community's votes, the door."""

from datetime import timedelta
from decimal import Decimal

import pytest
import time_machine
from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.utils import timezone, translation

from accounts.models import Membership
from events import services
from events.models import Event, Registration, Vote, normalize_ticket
from loyalty import services as loyalty
from loyalty.models import BonusAccount, LedgerEntry
from loyalty.selectors import ledger_mismatches
from tests.factories import BusinessFactory, LoyaltyProgramFactory, MembershipFactory, UserFactory

pytestmark = pytest.mark.django_db

RegStatus = Registration.Status


def D(value) -> Decimal:
    return Decimal(str(value))


# --- Fixtures and helpers ----------------------------------------------------------------------


def person(balance=None, **fields):
    user = UserFactory(**fields)
    if balance is not None:
        loyalty.adjust_balance(user=user, amount=D(balance), reason="test", created_by=None)
    return user


def balance_of(user) -> Decimal:
    return BonusAccount.objects.get(user=user).balance


def fresh(instance):
    instance.refresh_from_db()
    return instance


def books_balance():
    assert ledger_mismatches() == []


@pytest.fixture
def told(monkeypatch):
    """What customers are told: (user_id, kind, event key) of each message queued by the Event
    service, recorded when its transaction commits (run the callbacks with
    django_capture_on_commit_callbacks(execute=True))."""
    calls = []

    def record(*, user_id, messages, event_key):
        for kind, context in messages:
            transaction.on_commit(lambda kind=kind, context=context: calls.append((user_id, kind, event_key, context)))

    monkeypatch.setattr("notifications.services.notify_after_commit", record)
    return calls


def kinds_for(calls, user) -> list[str]:
    return [kind for user_id, kind, _key, _context in calls if user_id == user.pk]


# --- create_event ------------------------------------------------------------------------------


def test_a_manager_creates_a_published_event_open_until_the_start(host, manager):
    other = BusinessFactory()
    starts = timezone.now() + timedelta(days=2)
    data = services.EventCreate(
        business=host,
        title="  Cupping  ",
        starts_at=starts,
        ends_at=starts + timedelta(hours=3),
        capacity=25,
        price=D("150.50"),
        attendance_bonus=D(20),
        co_hosts=[other, host],
    )

    event = services.create_event(data, manager)

    event = Event.objects.get(pk=event.pk)
    assert event.status == Event.Status.PUBLISHED
    assert event.published_at is not None
    assert event.title == "Cupping"
    assert event.registration_deadline == starts
    assert event.price == D("150.50")
    assert event.attendance_bonus == D("20.00")
    assert event.registered_count == 0
    assert event.created_by == manager
    assert event.vote_threshold is None and event.voting_deadline is None
    assert list(event.co_hosts.all()) == [other]  # the host is not its own co-host


def test_an_owner_and_the_platforms_staff_may_create_events(host):
    owner = MembershipFactory(business=host, role=Membership.Role.OWNER).user
    staff = UserFactory(is_staff=True)
    starts = timezone.now() + timedelta(days=1)

    for creator in (owner, staff):
        data = services.EventCreate(
            business=host, title="Talk", starts_at=starts, ends_at=starts + timedelta(hours=1), capacity=5
        )
        assert services.create_event(data, creator).created_by == creator
    assert Event.objects.count() == 2


@pytest.mark.parametrize("who", ["cashier", "stranger", "manager elsewhere", "nobody"])
def test_a_cashier_a_stranger_or_a_manager_of_another_partner_is_not_allowed(host, cashier, who):
    creator = {
        "cashier": cashier,
        "stranger": UserFactory(),
        "manager elsewhere": MembershipFactory(role=Membership.Role.MANAGER).user,
        "nobody": None,
    }[who]
    starts = timezone.now() + timedelta(days=1)
    data = services.EventCreate(
        business=host, title="Talk", starts_at=starts, ends_at=starts + timedelta(hours=1), capacity=5
    )

    with pytest.raises(services.NotAllowed):
        services.create_event(data, creator)
    assert not Event.objects.exists()


def test_an_inactive_partner_makes_no_events(host, manager):
    host.is_active = False
    host.save()
    staff = UserFactory(is_staff=True)
    starts = timezone.now() + timedelta(days=1)
    data = services.EventCreate(
        business=host, title="Talk", starts_at=starts, ends_at=starts + timedelta(hours=1), capacity=5
    )

    with pytest.raises(services.NotAllowed):
        services.create_event(data, manager)  # a membership of an inactive partner manages nothing
    with pytest.raises(services.InvalidEvent):
        services.create_event(data, staff)
    assert not Event.objects.exists()


def _terms(now):
    starts = now + timedelta(days=3)
    return {
        "past start": ({"starts_at": now - timedelta(minutes=1)}, "starts_at"),
        "start now": ({"starts_at": now, "ends_at": now + timedelta(hours=1)}, "starts_at"),
        "end before start": ({"ends_at": starts - timedelta(minutes=1)}, "ends_at"),
        "end at start": ({"ends_at": starts}, "ends_at"),
        "too long": (
            {"ends_at": starts + timedelta(days=settings.EVENTS_MAX_DURATION_DAYS, seconds=1)},
            "ends_at",
        ),
        "no seats": ({"capacity": 0}, "capacity"),
        "too many seats": ({"capacity": settings.EVENTS_MAX_CAPACITY + 1}, "capacity"),
        "registration after start": ({"registration_deadline": starts + timedelta(minutes=1)}, "registration_deadline"),
        "registration closed already": ({"registration_deadline": now - timedelta(hours=1)}, "registration_deadline"),
        "negative price": ({"price": D("-1")}, "price"),
        "three decimals": ({"price": D("10.005")}, "price"),
        "negative bonus": ({"attendance_bonus": D("-5")}, "attendance_bonus"),
        "latitude only": ({"latitude": D("55.7")}, "latitude"),
        "longitude only": ({"longitude": D("37.6")}, "latitude"),
        "off the Earth": ({"latitude": D("91"), "longitude": D("37.6")}, "latitude"),
        "no title": ({"title": "   "}, "title"),
        "proposed without threshold": (
            {"propose": True, "voting_deadline": now + timedelta(days=1)},
            "vote_threshold",
        ),
        "proposed with threshold 0": (
            {"propose": True, "vote_threshold": 0, "voting_deadline": now + timedelta(days=1)},
            "vote_threshold",
        ),
        "proposed without deadline": ({"propose": True, "vote_threshold": 5}, "voting_deadline"),
        "voting after registration closes": (
            {
                "propose": True,
                "vote_threshold": 5,
                "registration_deadline": now + timedelta(days=1),
                "voting_deadline": now + timedelta(days=1, minutes=1),
            },
            "voting_deadline",
        ),
        "voting closed already": (
            {"propose": True, "vote_threshold": 5, "voting_deadline": now - timedelta(minutes=1)},
            "voting_deadline",
        ),
    }


@pytest.mark.parametrize("case", list(_terms(timezone.now())))
def test_invalid_terms_are_refused_naming_the_field(make_event, case):
    with time_machine.travel(timezone.now(), tick=False):
        changes, field = _terms(timezone.now())[case]
        with pytest.raises(services.InvalidEvent) as refused:
            make_event(**changes)

    assert field in refused.value.fields, refused.value.fields
    assert not Event.objects.exists()


def test_the_refusal_says_why_in_words(make_event):
    now = timezone.now()
    with translation.override("en"), pytest.raises(services.InvalidEvent) as refused:
        make_event(starts_at=now - timedelta(hours=1), capacity=0, price=D("1.234"))

    assert refused.value.fields == {
        "starts_at": ["The event must start in the future."],
        "capacity": [f"From 1 to {settings.EVENTS_MAX_CAPACITY} seats."],
        "registration_deadline": ["Registration must close in the future."],  # it defaults to the start
        "price": ["At most two decimal places."],
    }


def test_the_longest_event_allowed_lasts_exactly_the_maximum(make_event):
    starts = timezone.now() + timedelta(days=1)
    event = make_event(starts_at=starts, ends_at=starts + timedelta(days=settings.EVENTS_MAX_DURATION_DAYS))
    assert event.ends_at - event.starts_at == timedelta(days=settings.EVENTS_MAX_DURATION_DAYS)


def test_coordinates_default_to_the_hosts_unless_a_place_or_coordinates_are_given(host, make_event):
    at_host = make_event()
    elsewhere = make_event(place="Парк Горького")
    pinned = make_event(latitude=D("59.9"), longitude=D("30.3"))

    assert (at_host.latitude, at_host.longitude) == (host.latitude, host.longitude)
    assert at_host.place_text() == "ул. Ленина, 1"
    assert (elsewhere.latitude, elsewhere.longitude) == (None, None)
    assert elsewhere.place_text() == "Парк Горького"
    assert (fresh(pinned).latitude, fresh(pinned).longitude) == (D("59.9"), D("30.3"))


def test_a_proposed_event_waits_for_the_communitys_votes(make_event):
    now = timezone.now()
    event = make_event(propose=True, vote_threshold=3, voting_deadline=now + timedelta(days=1))

    assert event.status == Event.Status.PROPOSED
    assert event.published_at is None
    assert (event.vote_threshold, event.voting_deadline) == (3, now + timedelta(days=1))


def test_a_published_event_forgets_vote_terms(make_event):
    event = make_event(vote_threshold=3, voting_deadline=timezone.now() + timedelta(days=1))
    assert (event.status, event.vote_threshold, event.voting_deadline) == (Event.Status.PUBLISHED, None, None)


# --- Registration ------------------------------------------------------------------------------


def test_a_free_seat_is_taken_and_the_customer_told(make_event, told, django_capture_on_commit_callbacks):
    event = make_event(capacity=2)
    customer = person()

    with django_capture_on_commit_callbacks(execute=True):
        registration = services.register_for_event(customer, event)

    assert registration.created is True
    assert fresh(registration).status == RegStatus.REGISTERED
    assert registration.waitlisted_at is None
    assert registration.paid_amount == D(0) and registration.payment_key == ""
    assert len(normalize_ticket(registration.ticket_code)) == 10
    assert fresh(event).registered_count == 1
    assert kinds_for(told, customer) == ["event_registered"]
    assert told[0][2] == f"event:{event.pk}:event_registered:1:{registration.pk}"


def test_a_full_event_puts_customers_on_the_waitlist_in_order(make_event, told, django_capture_on_commit_callbacks):
    event = make_event(capacity=2)
    people = [person() for _ in range(5)]
    start = timezone.now()

    with django_capture_on_commit_callbacks(execute=True):
        for minute, customer in enumerate(people):
            with time_machine.travel(start + timedelta(minutes=minute), tick=False):
                services.register_for_event(customer, event)

    rows = {r.customer_id: r for r in Registration.objects.filter(event=event)}
    assert [rows[c.pk].status for c in people] == [RegStatus.REGISTERED] * 2 + [RegStatus.WAITLISTED] * 3
    queue = list(
        Registration.objects.filter(event=event, status=RegStatus.WAITLISTED)
        .order_by("waitlisted_at", "id")
        .values_list("customer_id", flat=True)
    )
    assert queue == [c.pk for c in people[2:]]
    assert [rows[c.pk].waitlisted_at for c in people[2:]] == [start + timedelta(minutes=m) for m in (2, 3, 4)]
    assert fresh(event).registered_count == 2
    assert kinds_for(told, people[1]) == ["event_registered"]
    assert kinds_for(told, people[4]) == ["event_waitlisted"]


def test_registering_twice_returns_the_existing_registration(make_event):
    event = make_event(capacity=1)
    seated, waiting = person(), person()
    first = services.register_for_event(seated, event)
    queued = services.register_for_event(waiting, event)

    again = services.register_for_event(seated, event)
    queued_again = services.register_for_event(waiting, event)

    assert (again.pk, again.created, again.status) == (first.pk, False, RegStatus.REGISTERED)
    assert (queued_again.pk, queued_again.created, queued_again.waitlisted_at) == (
        queued.pk,
        False,
        queued.waitlisted_at,
    )
    assert Registration.objects.filter(event=event).count() == 2
    assert fresh(event).registered_count == 1


def test_registration_closes_at_its_deadline(make_event):
    starts = timezone.now() + timedelta(days=2)
    event = make_event(starts_at=starts, registration_deadline=starts - timedelta(days=1))
    customer = person()

    with time_machine.travel(starts - timedelta(days=1, seconds=1), tick=False):
        services.register_for_event(person(), event)
    with (
        time_machine.travel(starts - timedelta(days=1), tick=False),
        translation.override("en"),
        pytest.raises(services.RegistrationClosed) as refused,
    ):
        services.register_for_event(customer, event)

    assert str(refused.value) == "Registration for this event is closed."
    assert not Registration.objects.filter(customer=customer).exists()
    assert fresh(event).registered_count == 1


def test_a_proposed_or_cancelled_event_takes_no_registrations(make_event, manager):
    proposed = make_event(propose=True, vote_threshold=3, voting_deadline=timezone.now() + timedelta(days=1))
    cancelled = services.cancel_event(make_event(), by=manager)
    customer = person()

    with translation.override("en"):
        with pytest.raises(services.RegistrationClosed) as not_yet:
            services.register_for_event(customer, proposed)
        with pytest.raises(services.RegistrationClosed) as called_off:
            services.register_for_event(customer, cancelled)

    assert "still a proposal" in str(not_yet.value)
    assert str(called_off.value) == "The event is cancelled."
    assert not Registration.objects.exists()


def test_a_paid_ticket_is_a_redemption_at_the_host_with_the_reason(host, make_event):
    event = make_event(title="Cupping", price=D("120.50"))
    customer = person(balance=200)

    with translation.override("en"):
        registration = services.register_for_event(customer, event)

    registration = fresh(registration)
    assert registration.status == RegStatus.REGISTERED
    assert registration.paid_amount == D("120.50")
    assert registration.payment_key == f"event:{event.pk}:ticket:{registration.pk}:1"
    assert balance_of(customer) == D("79.50")
    (entry,) = LedgerEntry.objects.filter(account__user=customer, kind=LedgerEntry.Kind.REDEMPTION)
    assert entry.amount == D("-120.50")
    assert entry.business == host
    assert entry.reason == "Ticket: Cupping"
    assert entry.idempotency_key.startswith(f"redeem:{registration.payment_key}:lot:")
    books_balance()


def test_a_paid_ticket_spends_lots_soonest_expiring_first_across_issuers(make_event):
    event = make_event(price=D(100))
    customer = person()
    early, late = BusinessFactory(), BusinessFactory()
    LoyaltyProgramFactory(business=early, bonus_lifetime_days=30)
    LoyaltyProgramFactory(business=late, bonus_lifetime_days=300)
    loyalty.adjust_balance(user=customer, amount=D(80), reason="test", created_by=None, business=late)
    loyalty.adjust_balance(user=customer, amount=D(60), reason="test", created_by=None, business=early)

    services.register_for_event(customer, event)

    spent = LedgerEntry.objects.filter(account__user=customer, kind=LedgerEntry.Kind.REDEMPTION).order_by("id")
    assert [(e.lot.business, e.amount) for e in spent] == [(early, D(-60)), (late, D(-40))]
    assert balance_of(customer) == D(40)


def test_too_few_bonuses_for_a_ticket_changes_nothing(make_event, told, django_capture_on_commit_callbacks):
    event = make_event(price=D(100))
    customer = person(balance="99.99")

    with django_capture_on_commit_callbacks(execute=True), pytest.raises(loyalty.InsufficientBonuses):
        services.register_for_event(customer, event)

    assert not Registration.objects.exists()
    assert fresh(event).registered_count == 0
    assert balance_of(customer) == D("99.99")
    assert not LedgerEntry.objects.filter(kind=LedgerEntry.Kind.REDEMPTION).exists()
    assert told == []
    books_balance()


def test_the_waitlist_of_a_paid_event_is_for_those_who_can_pay(make_event):
    event = make_event(capacity=1, price=D(50))
    services.register_for_event(person(balance=50), event)
    poor, able = person(balance="49.99"), person(balance=50)

    with translation.override("en"), pytest.raises(loyalty.InsufficientBonuses) as refused:
        services.register_for_event(poor, event)
    waiting = services.register_for_event(able, event)

    assert "not enough bonuses" in str(refused.value)
    assert refused.value.extra == {"available": "49.99"}
    assert not Registration.objects.filter(customer=poor).exists()
    assert (waiting.status, waiting.paid_amount) == (RegStatus.WAITLISTED, D(0))
    assert balance_of(able) == D(50)  # not charged until a seat comes free


# --- Cancellation ------------------------------------------------------------------------------


def test_cancelling_before_the_cutoff_returns_the_bonuses(make_event):
    event = make_event(price=D(70))
    customer = person(balance=100)
    registration = services.register_for_event(customer, event)
    cutoff = event.starts_at - timedelta(hours=settings.EVENTS_REFUND_CUTOFF_HOURS)
    assert services.refund_deadline(event) == cutoff

    with time_machine.travel(cutoff, tick=False):  # "at least the cut-off before": the boundary counts
        result = services.cancel_registration(customer, event)

    registration = fresh(registration)
    assert (result.was_cancelled, result.refunded) == (True, D(70))
    assert registration.status == RegStatus.CANCELLED
    assert registration.cancelled_by == Registration.CancelledBy.CUSTOMER
    assert registration.cancelled_at == cutoff
    assert registration.refunded_amount == registration.paid_amount == D(70)
    assert balance_of(customer) == D(100)
    assert fresh(event).registered_count == 0
    returned = LedgerEntry.objects.get(account__user=customer, kind=LedgerEntry.Kind.REFUND_RETURN)
    assert returned.amount == D(70)
    books_balance()


def test_cancelling_after_the_cutoff_returns_nothing_but_frees_the_seat(make_event):
    event = make_event(price=D(70))
    customer = person(balance=100)
    services.register_for_event(customer, event)

    with time_machine.travel(services.refund_deadline(event) + timedelta(seconds=1), tick=False):
        result = services.cancel_registration(customer, event)

    assert (result.was_cancelled, result.refunded) == (True, D(0))
    assert fresh(result.registration).refunded_amount == D(0)
    assert balance_of(customer) == D(30)
    assert fresh(event).registered_count == 0
    assert not LedgerEntry.objects.filter(kind=LedgerEntry.Kind.REFUND_RETURN).exists()
    books_balance()


def test_a_freed_seat_goes_to_the_first_on_the_waitlist_who_pays(make_event, told, django_capture_on_commit_callbacks):
    event = make_event(capacity=1, price=D(40))
    seated, first, second = person(balance=40), person(balance=40), person(balance=40)
    start = timezone.now()
    for minute, customer in enumerate([seated, second, first]):
        with time_machine.travel(start + timedelta(minutes=minute), tick=False):
            services.register_for_event(customer, event)
    # `first` joined the waitlist later but is moved to the front: the queue is by waitlisted_at
    Registration.objects.filter(customer=first).update(waitlisted_at=start)

    with django_capture_on_commit_callbacks(execute=True):
        services.cancel_registration(seated, event)

    promoted = Registration.objects.get(customer=first)
    assert promoted.status == RegStatus.REGISTERED
    assert promoted.waitlisted_at is None
    assert promoted.paid_amount == D(40)
    assert promoted.payment_key == f"event:{event.pk}:ticket:{promoted.pk}:1"
    assert balance_of(first) == D(0)
    assert Registration.objects.get(customer=second).status == RegStatus.WAITLISTED
    assert balance_of(second) == D(40)
    assert fresh(event).registered_count == 1
    assert kinds_for(told, first) == ["event_promoted"]
    assert kinds_for(told, second) == []
    books_balance()


def test_a_waitlisted_customer_who_cannot_pay_any_more_loses_the_place(
    make_event, told, django_capture_on_commit_callbacks
):
    event = make_event(capacity=1, price=D(40))
    seated, broke, next_one = person(balance=40), person(balance=40), person(balance=40)
    for customer in (seated, broke, next_one):
        services.register_for_event(customer, event)
    loyalty.adjust_balance(user=broke, amount=D(-10), reason="test", created_by=None)

    with django_capture_on_commit_callbacks(execute=True):
        services.cancel_registration(seated, event)

    lost = Registration.objects.get(customer=broke)
    assert (lost.status, lost.cancelled_by, lost.paid_amount) == (RegStatus.CANCELLED, "unpaid", D(0))
    assert balance_of(broke) == D(30)
    assert Registration.objects.get(customer=next_one).status == RegStatus.REGISTERED
    assert balance_of(next_one) == D(0)
    assert fresh(event).registered_count == 1
    assert kinds_for(told, broke) == ["event_waitlist_missed"]
    assert kinds_for(told, next_one) == ["event_promoted"]
    books_balance()


def test_cancelling_twice_changes_nothing(make_event):
    event = make_event(capacity=1, price=D(30))
    customer, waiting = person(balance=30), person(balance=30)
    services.register_for_event(customer, event)
    services.register_for_event(waiting, event)
    services.cancel_registration(customer, event)
    state = (balance_of(customer), balance_of(waiting), fresh(event).registered_count)

    again = services.cancel_registration(customer, event)

    assert (again.was_cancelled, again.refunded) == (False, D(0))
    assert (balance_of(customer), balance_of(waiting), fresh(event).registered_count) == state
    assert LedgerEntry.objects.filter(kind=LedgerEntry.Kind.REFUND_RETURN).count() == 1


def test_cancelling_a_waitlist_place_frees_no_seat_and_costs_nothing(make_event):
    event = make_event(capacity=1, price=D(30))
    services.register_for_event(person(balance=30), event)
    waiting = person(balance=30)
    services.register_for_event(waiting, event)

    result = services.cancel_registration(waiting, event)

    assert (result.was_cancelled, result.refunded) == (True, D(0))
    assert fresh(result.registration).status == RegStatus.CANCELLED
    assert fresh(event).registered_count == 1
    assert balance_of(waiting) == D(30)


def test_no_cancelling_once_the_event_has_started_nor_without_a_registration(make_event):
    event = make_event(price=D(30))
    customer = person(balance=30)
    services.register_for_event(customer, event)

    with (
        time_machine.travel(event.starts_at, tick=False),
        translation.override("en"),
        pytest.raises(services.CancellationRefused) as refused,
    ):
        services.cancel_registration(customer, event)
    with pytest.raises(services.NotRegistered):
        services.cancel_registration(person(), event)

    assert "has started" in str(refused.value)
    assert Registration.objects.get(customer=customer).status == RegStatus.REGISTERED
    assert fresh(event).registered_count == 1
    assert balance_of(customer) == D(0)


def test_a_checked_in_registration_cannot_be_cancelled(make_event):
    event = make_event(price=D(30))
    customer = person(balance=30)
    registration = services.register_for_event(customer, event)
    with time_machine.travel(services.door_opens_at(event), tick=False):
        services.check_in_participant(registration.pk, event=event)

        with translation.override("en"), pytest.raises(services.CancellationRefused) as refused:
            services.cancel_registration(customer, event)

    assert "“came”" in str(refused.value)
    assert fresh(registration).status == RegStatus.CHECKED_IN
    assert balance_of(customer) == D(0)


def test_registering_again_after_cancelling_pays_again_under_a_new_key(make_event):
    event = make_event(price=D(25))
    customer = person(balance=100)
    first = services.register_for_event(customer, event)
    first_key = fresh(first).payment_key
    services.cancel_registration(customer, event)

    again = services.register_for_event(customer, event)

    assert again.created is True
    again = fresh(again)
    assert again.pk == first.pk
    assert again.status == RegStatus.REGISTERED
    assert again.attempt == 2
    assert again.cancelled_at is None and again.cancelled_by == ""
    assert again.payment_key == f"event:{event.pk}:ticket:{first.pk}:2" != first_key
    assert (again.paid_amount, again.refunded_amount) == (D(25), D(0))
    assert balance_of(customer) == D(75)
    assert LedgerEntry.objects.filter(kind=LedgerEntry.Kind.REDEMPTION, account__user=customer).count() == 2
    assert fresh(event).registered_count == 1
    books_balance()


def test_registering_again_on_a_full_event_joins_the_end_of_the_waitlist(make_event):
    event = make_event(capacity=1)
    customer, seated, waiting = person(), person(), person()
    start = timezone.now()
    services.register_for_event(customer, event)
    with time_machine.travel(start + timedelta(minutes=1), tick=False):
        services.cancel_registration(customer, event)
        services.register_for_event(seated, event)
    with time_machine.travel(start + timedelta(minutes=2), tick=False):
        services.register_for_event(waiting, event)
    with time_machine.travel(start + timedelta(minutes=3), tick=False):
        back = services.register_for_event(customer, event)

    assert (back.status, back.waitlisted_at) == (RegStatus.WAITLISTED, start + timedelta(minutes=3))
    queue = Registration.objects.filter(event=event, status=RegStatus.WAITLISTED).order_by("waitlisted_at", "id")
    assert [r.customer for r in queue] == [waiting, customer]


# --- update_event ------------------------------------------------------------------------------


def test_seats_cannot_drop_below_those_taken(make_event, manager):
    event = make_event(capacity=3)
    for _ in range(2):
        services.register_for_event(person(), event)

    with translation.override("en"), pytest.raises(services.InvalidEvent) as refused:
        services.update_event(event, {"capacity": 1}, by=manager)
    services.update_event(event, {"capacity": 2}, by=manager)

    assert refused.value.fields == {"capacity": ["2 customers already hold seats: the event needs at least as many."]}
    assert fresh(event).capacity == 2


def test_more_seats_go_to_the_waitlist_in_order(make_event, manager, told, django_capture_on_commit_callbacks):
    event = make_event(capacity=1, price=D(10))
    people = [person(balance=10) for _ in range(4)]
    start = timezone.now()
    for minute, customer in enumerate(people):
        with time_machine.travel(start + timedelta(minutes=minute), tick=False):
            services.register_for_event(customer, event)

    with django_capture_on_commit_callbacks(execute=True):
        services.update_event(event, {"capacity": 3}, by=manager)

    statuses = [Registration.objects.get(customer=c).status for c in people]
    assert statuses == [RegStatus.REGISTERED] * 3 + [RegStatus.WAITLISTED]
    assert [balance_of(c) for c in people] == [D(0), D(0), D(0), D(10)]
    assert fresh(event).registered_count == 3
    assert [kinds_for(told, c) for c in people] == [[], ["event_promoted"], ["event_promoted"], []]
    books_balance()


def test_the_price_is_fixed_once_someone_has_paid(make_event, manager):
    free = make_event()
    services.register_for_event(person(), free)
    services.update_event(free, {"price": D(15)}, by=manager)  # nobody paid: the price may change
    assert fresh(free).price == D(15)

    paid = make_event(price=D(10))
    services.register_for_event(person(balance=10), paid)
    with translation.override("en"), pytest.raises(services.InvalidEvent) as refused:
        services.update_event(paid, {"price": D(12)}, by=manager)
    services.update_event(paid, {"price": "10.00", "title": "Renamed"}, by=manager)  # the same price is no change

    assert refused.value.fields == {"price": ["Customers have paid the current price: it cannot change now."]}
    assert (fresh(paid).price, fresh(paid).title) == (D(10), "Renamed")


def test_registered_customers_hear_of_a_new_time(make_event, manager, told, django_capture_on_commit_callbacks):
    event = make_event(capacity=1)
    seated, waiting, gone = person(), person(), person()
    for customer in (gone, seated, waiting):
        services.register_for_event(customer, event)
    services.cancel_registration(gone, event)
    told.clear()
    later = event.starts_at + timedelta(days=1)

    with django_capture_on_commit_callbacks(execute=True):
        services.update_event(event, {"starts_at": later, "ends_at": later + timedelta(hours=2)}, by=manager)
        services.update_event(event, {"description": "Bring a friend"}, by=manager)

    assert kinds_for(told, seated) == ["event_changed"]
    assert kinds_for(told, waiting) == ["event_changed"]
    assert kinds_for(told, gone) == []
    context = next(c for user_id, _k, _key, c in told if user_id == seated.pk)
    local = timezone.localtime(later)
    assert (context["starts_on"], context["starts_time"]) == (local.date().isoformat(), local.strftime("%H:%M"))
    assert fresh(event).starts_at == later


def test_only_the_terms_can_change_and_only_by_the_hosts_managers(make_event, manager, cashier):
    event = make_event()

    with pytest.raises(services.InvalidEvent):
        services.update_event(event, {"status": Event.Status.FINISHED}, by=manager)
    with pytest.raises(services.NotAllowed):
        services.update_event(event, {"title": "Mine"}, by=cashier)
    with pytest.raises(services.InvalidEvent) as refused:
        services.update_event(event, {"ends_at": event.starts_at}, by=manager)

    assert "ends_at" in refused.value.fields
    assert (fresh(event).status, fresh(event).title) == (Event.Status.PUBLISHED, "Tasting")


def test_a_cancelled_or_past_event_cannot_change(make_event, manager):
    cancelled = services.cancel_event(make_event(), by=manager)
    over = make_event()

    with pytest.raises(services.EventNotChangeable):
        services.update_event(cancelled, {"title": "Again"}, by=manager)
    with time_machine.travel(over.ends_at, tick=False), pytest.raises(services.EventNotChangeable):
        services.update_event(over, {"title": "Again"}, by=manager)
    with time_machine.travel(over.starts_at, tick=False):
        with pytest.raises(services.EventNotChangeable):
            services.update_event(over, {"capacity": 20}, by=manager)
        services.update_event(over, {"ends_at": over.ends_at + timedelta(hours=1)}, by=manager)

    assert fresh(over).ends_at == over.starts_at + timedelta(hours=3)
    assert fresh(cancelled).title == "Tasting"


# --- publish_event -----------------------------------------------------------------------------


def test_the_host_publishes_a_proposal_without_waiting_for_votes(make_event, manager, cashier):
    event = make_event(propose=True, vote_threshold=50, voting_deadline=timezone.now() + timedelta(days=1))

    with pytest.raises(services.NotAllowed):
        services.publish_event(event, by=cashier)
    published = services.publish_event(event, by=manager)
    with pytest.raises(services.EventNotChangeable):
        services.publish_event(event, by=manager)

    assert fresh(published).status == Event.Status.PUBLISHED
    assert published.published_at is not None
    assert services.register_for_event(person(), event).status == RegStatus.REGISTERED


def test_a_proposal_whose_registration_has_closed_is_not_published(make_event, manager):
    starts = timezone.now() + timedelta(days=3)
    event = make_event(
        starts_at=starts,
        registration_deadline=starts - timedelta(days=1),
        propose=True,
        vote_threshold=5,
        voting_deadline=starts - timedelta(days=2),
    )

    with time_machine.travel(starts - timedelta(days=1), tick=False), pytest.raises(services.EventNotChangeable):
        services.publish_event(event, by=manager)
    assert fresh(event).status == Event.Status.PROPOSED


# --- cancel_event ------------------------------------------------------------------------------


def test_cancelling_an_event_refunds_every_ticket_in_full(
    make_event, manager, told, django_capture_on_commit_callbacks
):
    event = make_event(capacity=2, price=D(60))
    seated = [person(balance=100), person(balance=100)]
    waiting = person(balance=100)
    left = person(balance=100)
    for customer in [left, *seated, waiting]:
        services.register_for_event(customer, event)
    services.cancel_registration(left, event)  # refunded; its seat went to seated[1]
    late = person(balance=100)
    services.register_for_event(late, event)  # waitlisted behind `waiting`
    assert [balance_of(c) for c in seated] == [D(40), D(40)]
    told.clear()

    # Within the refund cut-off a customer gets nothing back; the partner calling it off refunds all.
    with (
        time_machine.travel(event.starts_at - timedelta(hours=1), tick=False),
        django_capture_on_commit_callbacks(execute=True),
    ):
        cancelled = services.cancel_event(event, by=manager)

    cancelled = fresh(cancelled)
    assert cancelled.status == Event.Status.CANCELLED
    assert cancelled.close_reason == Event.CloseReason.BY_PARTNER
    assert cancelled.cancelled_at == event.starts_at - timedelta(hours=1)
    assert cancelled.registered_count == 0
    for customer in [*seated, waiting, late, left]:
        assert balance_of(customer) == D(100), customer
    rows = Registration.objects.filter(event=event).exclude(customer=left)
    assert {(r.status, r.cancelled_by) for r in rows} == {(RegStatus.CANCELLED, "partner")}
    assert all(r.refunded_amount == r.paid_amount for r in rows)
    assert sorted(user_id for user_id, kind, _key, _c in told if kind == "event_cancelled") == sorted(
        c.pk for c in [*seated, waiting, late]
    )
    assert [c["refunded"] for _u, kind, _k, c in told if kind == "event_cancelled" and _u == late.pk] == ["0.00"]
    books_balance()


def test_an_event_is_cancelled_once_and_only_by_its_managers(make_event, manager, cashier):
    event = make_event()

    with pytest.raises(services.NotAllowed):
        services.cancel_event(event, by=cashier)
    services.cancel_event(event, by=manager)
    with pytest.raises(services.EventNotChangeable):
        services.cancel_event(event, by=manager)

    assert fresh(event).status == Event.Status.CANCELLED


# --- Votes -------------------------------------------------------------------------------------


@pytest.fixture
def proposal(make_event):
    return make_event(propose=True, vote_threshold=3, voting_deadline=timezone.now() + timedelta(days=1))


def test_votes_are_counted_and_may_change(proposal):
    alice, bob = person(), person()

    first = services.process_vote(alice, proposal, "up")
    second = services.process_vote(bob, proposal, "down")
    same = services.process_vote(bob, proposal, "down")
    changed = services.process_vote(bob, proposal, "up")

    assert (first.up, first.down, first.my_vote, first.threshold, first.published) == (1, 0, "up", 3, False)
    assert (second.up, second.down, second.my_vote) == (1, 1, "down")
    assert (same.up, same.down) == (1, 1)
    assert (changed.up, changed.down, changed.my_vote) == (2, 0, "up")
    assert services.vote_counts(proposal.pk) == {"up": 2, "down": 0}
    assert Vote.objects.filter(event=proposal).count() == 2
    assert fresh(proposal).status == Event.Status.PROPOSED


def test_reaching_the_threshold_publishes_and_tells_those_who_voted_for_it(
    proposal, told, django_capture_on_commit_callbacks
):
    up = [person(), person(), person()]
    against = person()

    with django_capture_on_commit_callbacks(execute=True):
        services.process_vote(up[0], proposal, "up")
        services.process_vote(against, proposal, "down")
        services.process_vote(up[1], proposal, "up")
        result = services.process_vote(up[2], proposal, "up")

    assert (result.up, result.published) == (3, True)
    proposal = fresh(proposal)
    assert proposal.status == Event.Status.PUBLISHED
    assert proposal.published_at is not None
    assert sorted(user_id for user_id, kind, _k, _c in told if kind == "event_published") == sorted(u.pk for u in up)
    assert kinds_for(told, against) == []
    with pytest.raises(services.VotingClosed):
        services.process_vote(person(), proposal, "up")
    assert services.register_for_event(against, proposal).status == RegStatus.REGISTERED


def test_down_votes_never_publish(proposal):
    for _ in range(4):
        services.process_vote(person(), proposal, "down")

    assert services.vote_counts(proposal.pk) == {"up": 0, "down": 4}
    assert fresh(proposal).status == Event.Status.PROPOSED


def test_no_voting_after_the_deadline_or_on_a_published_event(proposal, make_event, locmem_cache):
    customer = person()
    services.process_vote(customer, proposal, "up")

    with (
        time_machine.travel(proposal.voting_deadline, tick=False),
        translation.override("en"),
        pytest.raises(services.VotingClosed) as refused,
    ):
        services.process_vote(customer, proposal, "down")
    with pytest.raises(services.VotingClosed):
        services.process_vote(customer, make_event(), "up")

    assert str(refused.value) == "Voting on this event is closed."
    assert Vote.objects.get(event=proposal).vote == "up"
    assert services.vote_counts(proposal.pk) == {"up": 1, "down": 0}


@pytest.mark.parametrize("vote", ["yes", "", "UP", None])
def test_a_vote_is_up_or_down(proposal, vote):
    with pytest.raises(services.InvalidEvent):
        services.process_vote(person(), proposal, vote)
    assert not Vote.objects.exists()


def test_vote_counts_are_rebuilt_from_the_database_when_the_cache_is_emptied(proposal):
    voters = [person() for _ in range(5)]
    for voter, vote in zip(voters, ["up", "down", "down", "down", "down"], strict=True):
        services.process_vote(voter, proposal, vote)
    services.process_vote(voters[1], proposal, "up")

    cache.clear()
    rebuilt = services.vote_counts(proposal.pk)
    cache.clear()
    after_write = services.process_vote(voters[2], proposal, "up")  # a writer rebuilds, seeing its own vote

    assert rebuilt == {"up": 2, "down": 3}
    assert (after_write.up, after_write.down) == (3, 2)
    assert services.vote_counts(proposal.pk) == {"up": 3, "down": 2}
    assert fresh(proposal).status == Event.Status.PUBLISHED


def test_a_vote_that_fails_leaves_no_false_count(proposal, monkeypatch):
    services.process_vote(person(), proposal, "up")

    def boom(*args, **kwargs):
        raise RuntimeError("the database went away")

    monkeypatch.setattr("events.services.votes._publish", boom)
    Event.objects.filter(pk=proposal.pk).update(vote_threshold=2)
    with pytest.raises(RuntimeError):
        services.process_vote(person(), proposal, "up")  # counted in Redis, then rolled back

    assert services.vote_counts(proposal.pk) == {"up": 1, "down": 0}


# --- Check-in ----------------------------------------------------------------------------------


@pytest.fixture
def at_the_door(make_event):
    """A published event with a registered customer, the clock at its door's opening."""
    event = make_event(price=D(20), attendance_bonus=D(15))
    customer = person(balance=20)
    registration = services.register_for_event(customer, event)
    with time_machine.travel(services.door_opens_at(event), tick=False):
        yield event, customer, registration


def test_a_ticket_is_checked_in_once(at_the_door, cashier):
    event, customer, registration = at_the_door

    first = services.check_in_participant(registration.pk, event=event, by=cashier)
    second = services.check_in_participant(registration.pk, event=event, by=cashier)

    registration = fresh(registration)
    assert (first, second) == (True, False)
    assert registration.status == RegStatus.CHECKED_IN
    assert registration.checked_in_at == services.door_opens_at(event)
    assert registration.checked_in_by == cashier
    assert services.arrivals(event) == 1
    assert fresh(event).registered_count == 1


def test_the_attendance_bonus_is_an_adjustment_issued_by_the_host_paid_once(at_the_door, cashier, host):
    event, customer, registration = at_the_door

    with translation.override("en"):
        services.check_in_participant(registration.pk, event=event, by=cashier)
        services.check_in_participant(registration.pk, event=event, by=cashier)
        services.check_in_by_code(registration.ticket_code, event=event, by=cashier)

    (entry,) = LedgerEntry.objects.filter(  # not the seeded balance: that one has no issuer
        account__user=customer, kind=LedgerEntry.Kind.ADJUSTMENT, business__isnull=False
    )
    assert entry.amount == D(15)
    assert entry.business == host
    assert entry.lot.business == host
    assert entry.created_by == cashier
    assert entry.reason == "For coming to Tasting"
    assert entry.idempotency_key == f"event:{event.pk}:attended:{registration.pk}"
    assert balance_of(customer) == D(15)
    books_balance()


def test_no_bonus_entry_for_an_event_without_one(make_event):
    event = make_event()
    registration = services.register_for_event(person(), event)

    with time_machine.travel(event.starts_at, tick=False):
        assert services.check_in_participant(registration.pk, event=event) is True

    assert not LedgerEntry.objects.filter(kind=LedgerEntry.Kind.ADJUSTMENT).exists()


def test_a_ticket_for_another_event_is_refused(at_the_door, make_event):
    event, customer, registration = at_the_door
    other = make_event(starts_at=event.starts_at, title="Other")

    with translation.override("en"), pytest.raises(services.CheckInRefused) as refused:
        services.check_in_participant(registration.pk, event=other)
    with pytest.raises(services.CheckInRefused):
        services.check_in_participant(10**9, event=event)

    assert str(refused.value) == "This ticket is for another event."
    assert fresh(registration).status == RegStatus.REGISTERED
    assert balance_of(customer) == D(0)


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        (lambda e: services.door_opens_at(e) - timedelta(seconds=1), "Check-in opens at"),
        (lambda e: e.ends_at + timedelta(seconds=1), "The event is over."),
    ],
    ids=["before the door opens", "after the end"],
)
def test_the_door_is_open_only_from_its_opening_to_the_end(make_event, moment, expected):
    event = make_event(attendance_bonus=D(5))
    customer = person()
    registration = services.register_for_event(customer, event)
    assert services.door_opens_at(event) == event.starts_at - timedelta(minutes=settings.EVENTS_CHECKIN_OPENS_MINUTES)

    with (
        time_machine.travel(moment(event), tick=False),
        translation.override("en"),
        pytest.raises(services.CheckInRefused) as refused,
    ):
        services.check_in_participant(registration.pk, event=event)

    assert str(refused.value).startswith(expected)
    assert fresh(registration).status == RegStatus.REGISTERED
    assert not LedgerEntry.objects.filter(account__user=customer, kind=LedgerEntry.Kind.ADJUSTMENT).exists()

    with time_machine.travel(event.ends_at, tick=False):  # the last moment still counts
        assert services.check_in_participant(registration.pk, event=event) is True


def test_a_waitlisted_or_cancelled_ticket_is_refused_at_the_door(make_event):
    event = make_event(capacity=1, attendance_bonus=D(5))
    seated, waiting = person(), person()
    services.register_for_event(seated, event)
    queued = services.register_for_event(waiting, event)
    gone = services.register_for_event(person(), make_event())
    services.cancel_registration(gone.customer, gone.event)

    with time_machine.travel(event.starts_at, tick=False), translation.override("en"):
        with pytest.raises(services.CheckInRefused) as no_seat:
            services.check_in_participant(queued.pk, event=event)
        with pytest.raises(services.CheckInRefused) as cancelled:
            services.check_in_participant(gone.pk)

    assert str(no_seat.value) == "This customer is on the waitlist and has no seat."
    assert str(cancelled.value) == "This registration was cancelled."
    assert fresh(queued).status == RegStatus.WAITLISTED
    assert fresh(gone).status == RegStatus.CANCELLED
    assert not LedgerEntry.objects.filter(kind=LedgerEntry.Kind.ADJUSTMENT, amount__gt=0).exists()


def test_a_ticket_of_a_cancelled_event_is_refused(make_event, manager):
    event = make_event()
    registration = services.register_for_event(person(), event)
    services.cancel_event(event, by=manager)

    with time_machine.travel(event.starts_at, tick=False), pytest.raises(services.CheckInRefused):
        services.check_in_participant(registration.pk, event=event)
    assert fresh(registration).status == RegStatus.CANCELLED


@pytest.mark.parametrize(
    "typed",
    [
        lambda code: code.lower(),
        lambda code: f"{code[:3]}-{code[3:6]}-{code[6:]}",
        lambda code: f"  {code[:5]} {code[5:]}  ",
        lambda code: f"SVOYKRUG:TICKET:{code}",
        lambda code: f"svoykrug:ticket:{code[:5].lower()}-{code[5:]}",
    ],
    ids=["lower case", "dashes", "spaces", "QR payload", "all of it"],
)
def test_a_code_is_found_however_it_is_typed_or_scanned(at_the_door, cashier, typed):
    event, _customer, registration = at_the_door

    checked = services.check_in_by_code(typed(registration.ticket_code), event=event, by=cashier)

    assert (checked.registration.pk, checked.checked_in_now) == (registration.pk, True)
    assert fresh(registration).status == RegStatus.CHECKED_IN
    assert services.check_in_by_code(registration.qr_payload, event=event, by=cashier).checked_in_now is False


@pytest.mark.parametrize("code", ["", "   ", "SVOYKRUG:TICKET:", "NOSUCHCODE", "SVOYKRUG:TICKET:NOSUCHCODE"])
def test_an_unknown_code_is_refused(at_the_door, code):
    event, _customer, registration = at_the_door

    with translation.override("en"), pytest.raises(services.CheckInRefused) as refused:
        services.check_in_by_code(code, event=event, by=None)

    assert str(refused.value) == "No ticket with this code."
    assert fresh(registration).status == RegStatus.REGISTERED


# --- loyalty.return_bonus_redemption -----------------------------------------------------------


def test_a_returned_redemption_goes_back_to_its_issuers_once(host):
    customer = person()
    cafe, salon = BusinessFactory(), BusinessFactory()
    LoyaltyProgramFactory(business=cafe, bonus_lifetime_days=10)
    LoyaltyProgramFactory(business=salon, bonus_lifetime_days=400)
    now = timezone.now()
    with time_machine.travel(now, tick=False):
        loyalty.adjust_balance(user=customer, amount=D(50), reason="test", created_by=None, business=cafe)
        loyalty.adjust_balance(user=customer, amount=D(100), reason="test", created_by=None, business=salon)
        loyalty.apply_bonus_redemption(customer, D(80), business=host, idempotency_key="ticket-1", reason="Ticket")
        assert balance_of(customer) == D(70)

        given = loyalty.return_bonus_redemption(customer, idempotency_key="ticket-1", reason="Ticket returned")
        again = loyalty.return_bonus_redemption(customer, idempotency_key="ticket-1", reason="Ticket returned")
        nothing = loyalty.return_bonus_redemption(customer, idempotency_key="never-spent")

    assert (given, again, nothing) == (D(80), D(0), D(0))
    assert balance_of(customer) == D(150)
    returned = LedgerEntry.objects.filter(account__user=customer, kind=LedgerEntry.Kind.REFUND_RETURN).order_by("id")
    # Each part goes back to the partner that issued it, no sooner-expiring than before and not
    # within LOYALTY_REFUND_RETURN_MIN_DAYS (the café's 10-day lot would have expired too soon).
    assert [(e.lot.business, e.amount, e.business, e.reason, e.lot.expires_at) for e in returned] == [
        (cafe, D(50), host, "Ticket returned", now + timedelta(days=max(10, settings.LOYALTY_REFUND_RETURN_MIN_DAYS))),
        (salon, D(30), host, "Ticket returned", now + timedelta(days=400)),
    ]
    books_balance()
