"""Partners' events in the warehouse, on both backends: each registration exported with its
event's host and terms, again (a new version, read once) when it or its event changes, and
the dashboard's events block computed from it for the host alone.

Every step goes through events.services and loyalty.services at its own moment
(time_machine); the warehouse gets the rows by the ordinary export."""

from datetime import datetime, time, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.utils import timezone

from accounts.models import Membership, User
from analytics import export
from analytics.dashboard import generate_business_dashboard
from analytics.models import ExportState
from events import services as events
from events.models import Event, Registration
from loyalty import services as loyalty
from tests.factories import BusinessFactory, LoyaltyProgramFactory, MembershipFactory

pytestmark = pytest.mark.django_db

D = Decimal
MOSCOW = ZoneInfo("Europe/Moscow")
AS_OF = timezone.localdate() - timedelta(days=2)
PHONES = {
    "anna": "+79160000101",
    "boris": "+79160000102",
    "gleb": "+79160000103",
    "vera": "+79160000104",
    "dina": "+79160000105",
}


def at(k: int, hour: int, minute: int = 0) -> datetime:
    """`hour:minute` in Moscow k days before AS_OF."""
    return datetime.combine(AS_OF - timedelta(days=k), time(hour, minute), tzinfo=MOSCOW)


def travel(moment):
    return time_machine.travel(moment, tick=False)


def buy(business, external_id, amount, who, moment):
    with travel(moment):
        loyalty.record_transaction(business=business, external_id=external_id, amount=D(amount), phone=PHONES[who])


def person(who) -> User:
    return User.objects.get(phone=PHONES[who])


def manager_of(business) -> User:
    return MembershipFactory(business=business, role=Membership.Role.MANAGER).user


def make_event(business, title, starts_at, *, made_at, price="0", capacity=10, hours=2, co_hosts=()):
    with travel(made_at):
        return events.create_event(
            events.EventCreate(
                business=business,
                title=title,
                starts_at=starts_at,
                ends_at=starts_at + timedelta(hours=hours),
                capacity=capacity,
                price=D(price),
                co_hosts=list(co_hosts),
            ),
            manager_of(business),
        )


def register(event, moment, *people):
    with travel(moment):
        return [events.register_for_event(person(who), event) for who in people]


def check_in(event, moment, *people):
    with travel(moment):
        for who in people:
            registration = Registration.objects.get(event=event, customer=person(who))
            assert events.check_in_participant(registration.pk, event=event)


def cancel(event, moment, who):
    with travel(moment):
        return events.cancel_registration(person(who), event)


def registration_rows(warehouse, business):
    """{customer phone: (status, event status, start, paid, refunded, checked in?)} as the dashboard reads them."""
    rows = warehouse.execute(
        "SELECT customer_id, status, event_status, event_starts_at, paid_amount, refunded_amount, "
        "checked_in_at IS NOT NULL FROM event_registrations FINAL WHERE business_id = %(business)s",
        {"business": business.pk},
    )
    phones = dict(User.objects.values_list("pk", "phone"))
    by_phone = {phone: who for who, phone in PHONES.items()}
    return {by_phone[phones[row[0]]]: tuple(row[1:]) for row in rows}


def stored_versions(warehouse, business) -> tuple[int, int]:
    """(rows stored, distinct registrations) of the business, before any merge."""
    ((rows, distinct),) = warehouse.execute(
        "SELECT count(), uniqExact(id) FROM event_registrations WHERE business_id = %(business)s",
        {"business": business.pk},
    )
    return rows, distinct


# --- The export -----------------------------------------------------------------------------


@pytest.fixture
def cafe(warehouse):
    """The café hosts; Anna, Boris and Gleb hold 100 bonuses or more each (Boris and Gleb the salon's)."""
    cafe = LoyaltyProgramFactory(accrual_rate=D(10)).business
    salon = LoyaltyProgramFactory(business=BusinessFactory(), accrual_rate=D(10)).business
    buy(cafe, "A-1", "2000", "anna", at(20, 12))
    buy(salon, "B-1", "1000", "boris", at(20, 13))
    buy(salon, "G-1", "1000", "gleb", at(20, 14))
    return cafe, salon


def test_new_and_changed_registrations_are_exported_with_their_event_and_read_once(cafe, warehouse):
    cafe, _salon = cafe
    tasting = make_event(cafe, "Tasting", at(3, 18), made_at=at(15, 9), price="100")
    register(tasting, at(14, 10), "anna", "boris", "gleb")
    with travel(at(14, 11)):
        export.aggregate_transactions_to_clickhouse()
    start = at(3, 18)
    assert registration_rows(warehouse, cafe) == {
        who: ("registered", "published", start, D("100.00"), D("0.00"), 0) for who in ("anna", "boris", "gleb")
    }
    ((event_id, business_id, registered_at),) = warehouse.execute(
        "SELECT event_id, business_id, registered_at FROM event_registrations FINAL WHERE customer_id = %(anna)s",
        {"anna": person("anna").pk},
    )
    assert (event_id, business_id, registered_at) == (tasting.pk, cafe.pk, at(14, 10))

    # Nothing changed: the next run sends no registration (the overlap reaches back 10 minutes).
    with travel(at(14, 12)):
        export.aggregate_transactions_to_clickhouse()
    assert ExportState.objects.get(name="event_registrations").last_rows == 0

    # Boris gives up his seat in time (refunded), Gleb too late (the price stays spent), Anna comes.
    cancel(tasting, at(10, 9), "boris")
    cancel(tasting, at(3, 12), "gleb")
    check_in(tasting, at(3, 18, 5), "anna")
    with travel(at(3, 19)):
        export.aggregate_transactions_to_clickhouse()
        assert ExportState.objects.get(name="event_registrations").last_rows == 3
    assert registration_rows(warehouse, cafe) == {
        "anna": ("checked_in", "published", start, D("100.00"), D("0.00"), 1),
        "boris": ("cancelled", "published", start, D("100.00"), D("100.00"), 0),
        "gleb": ("cancelled", "published", start, D("100.00"), D("0.00"), 0),
    }

    # The event finishes: its status is on each registration, again a new version.
    with travel(at(3, 20, 30)):
        events.finish_events()
    with travel(at(3, 21)):
        export.aggregate_transactions_to_clickhouse()
    assert {row[1] for row in registration_rows(warehouse, cafe).values()} == {"finished"}

    # Everything again, from the beginning: still one row per registration, read in its latest state.
    export.aggregate_transactions_to_clickhouse(since=at(60, 0))
    export.aggregate_transactions_to_clickhouse(since=at(60, 0))
    rows, distinct = stored_versions(warehouse, cafe)
    assert distinct == 3 and rows >= 3
    ((read, ids),) = warehouse.execute(
        "SELECT count(), uniqExact(id) FROM event_registrations FINAL WHERE business_id = %(b)s", {"b": cafe.pk}
    )
    assert read == ids == 3
    warehouse.execute("OPTIMIZE TABLE event_registrations FINAL")
    assert stored_versions(warehouse, cafe) == (3, 3)
    assert registration_rows(warehouse, cafe)["anna"][0] == "checked_in"


def test_a_moved_or_cancelled_event_sends_its_registrations_again(cafe, warehouse):
    cafe, _salon = cafe
    owner = manager_of(cafe)
    talk = make_event(cafe, "Talk", at(5, 19), made_at=at(15, 9), price="50")
    register(talk, at(14, 10), "anna", "boris")
    with travel(at(14, 11)):
        export.aggregate_transactions_to_clickhouse()

    later = at(4, 19)
    with travel(at(12, 9)):
        events.update_event(talk, {"starts_at": later, "ends_at": later + timedelta(hours=2)}, by=owner)
    with travel(at(12, 10)):
        export.aggregate_transactions_to_clickhouse()
    # The new start on both rows, one row each: the start is in neither the key nor a partition.
    warehouse.execute("OPTIMIZE TABLE event_registrations FINAL")
    assert stored_versions(warehouse, cafe) == (2, 2)
    assert {row[2] for row in registration_rows(warehouse, cafe).values()} == {later}

    with travel(at(11, 9)):
        events.cancel_event(talk, by=owner)
    with travel(at(11, 10)):
        export.aggregate_transactions_to_clickhouse()
    assert registration_rows(warehouse, cafe) == {
        who: ("cancelled", "cancelled", later, D("50.00"), D("50.00"), 0) for who in ("anna", "boris")
    }


def test_a_rebuild_sends_only_the_partners_own_events(cafe, warehouse):
    cafe, salon = cafe
    tasting = make_event(cafe, "Tasting", at(3, 18), made_at=at(15, 9))
    run = make_event(salon, "Run", at(4, 9), made_at=at(15, 9), co_hosts=[cafe])
    register(tasting, at(14, 10), "anna")
    register(run, at(14, 10), "boris", "gleb")
    until = timezone.now()
    assert export._rows(export.REGISTRATIONS, None, until, cafe.pk) == 1  # a co-host's event is its host's
    assert export._rows(export.REGISTRATIONS, None, until, salon.pk) == 2
    assert stored_versions(warehouse, cafe) == (1, 1)
    assert stored_versions(warehouse, salon) == (2, 2)


# --- The dashboard's events block -------------------------------------------------------------


@pytest.fixture
def season(cafe, warehouse):
    """The café's events around AS_OF (k days before it), the salon's beside them:

    - the tasting (k=3, 100 bonuses, 4 seats): Anna and Boris come, Gleb does not (no-show the
      day after), Vera gives up her seat 6 hours before (too late: the 100 stay spent). Boris
      never bought at the café before it (his first purchase there is after it): new;
    - the talk (k=2, 50 bonuses) is cancelled by the café at k=5: Anna's 50 come back;
    - the evening (k=0 at 18:00, free): Anna registers and does not come (not marked yet);
    - last week's master class (k=10, free): Dina and Vera come; Vera bought at the café the
      day before, Dina never: one new;
    - the salon's run (k=4, co-hosted by the café): Anna and Dina come. Never the café's figures.
    """
    cafe, salon = cafe
    owner = manager_of(cafe)
    buy(salon, "V-1", "1000", "vera", at(20, 15))
    buy(salon, "D-1", "1000", "dina", at(20, 16))
    buy(cafe, "V-2", "300", "vera", at(11, 12))

    master_class = make_event(cafe, "Master class", at(10, 12), made_at=at(16, 9))
    register(master_class, at(15, 10), "dina", "vera")
    check_in(master_class, at(10, 12, 5), "dina", "vera")

    tasting = make_event(cafe, "Tasting", at(3, 18), made_at=at(15, 9), price="100", capacity=4)
    register(tasting, at(14, 10), "anna", "boris", "gleb", "vera")
    talk = make_event(cafe, "Talk", at(2, 19), made_at=at(15, 9), price="50")
    register(talk, at(14, 11), "anna")
    with travel(at(5, 9)):
        events.cancel_event(talk, by=owner)
    cancel(tasting, at(3, 12), "vera")
    check_in(tasting, at(3, 18, 5), "anna", "boris")
    with travel(at(2, 20, 30)):
        events.finish_events()  # the tasting's no-shows: Gleb
    buy(cafe, "B-2", "500", "boris", at(1, 12))

    evening = make_event(cafe, "Evening", at(0, 18), made_at=at(6, 9))
    register(evening, at(5, 10), "anna")

    run = make_event(salon, "Run", at(4, 9), made_at=at(15, 9), co_hosts=[cafe])
    register(run, at(14, 12), "anna", "dina")
    check_in(run, at(4, 9, 5), "anna", "dina")

    export.aggregate_transactions_to_clickhouse()
    export.aggregate_transactions_to_clickhouse(since=at(60, 0))  # everything twice
    assert Registration.objects.get(event=tasting, customer=person("gleb")).status == "no_show"
    return cafe, salon


def event_figures(figures) -> tuple:
    return (
        figures.events_held,
        figures.event_registrations,
        figures.event_attendance,
        figures.event_ticket_bonuses,
        figures.event_new_attendees,
    )


def test_the_events_block_counts_the_hosts_events_of_the_period(season):
    cafe, _salon = season
    data = generate_business_dashboard(cafe.pk, "week", as_of=AS_OF)
    # The tasting and the evening (the talk was cancelled): 3 + 1 seats; of the ended ones'
    # 4 seats, 2 came; 100 × 4 for tickets (Vera's too: she gave it up late); Boris is new.
    assert event_figures(data.current) == (2, 4, D("50.0"), D("400.00"), 1)
    # The master class: 2 seats, both came, free, Dina new.
    assert event_figures(data.previous) == (1, 2, D("100.0"), D("0.00"), 1)
    assert data.delta("event_attendance") == D("-50.0")  # points, not percent
    assert data.delta("events_held") == D("100.0")

    # Before the evening starts it is not held: only the tasting.
    with travel(at(0, 12)):
        earlier = generate_business_dashboard(cafe.pk, "week", as_of=AS_OF)
    assert event_figures(earlier.current) == (1, 3, D("66.7"), D("400.00"), 1)

    # A month holds both weeks; a day with no event of the café holds nothing.
    month = generate_business_dashboard(cafe.pk, "month", as_of=AS_OF)
    assert event_figures(month.current) == (3, 6, D("66.7"), D("400.00"), 2)
    quiet = generate_business_dashboard(cafe.pk, "day", as_of=AS_OF - timedelta(days=1))
    assert event_figures(quiet.current) == (0, 0, None, D("0.00"), 0)
    assert quiet.delta("event_attendance") is None


def test_another_partners_events_are_never_on_the_dashboard(season, warehouse):
    cafe, salon = season
    before = generate_business_dashboard(cafe.pk, "week", as_of=AS_OF)
    # The salon sees its run: Anna and Dina came; Dina had bought at the salon before, Anna never.
    salon_data = generate_business_dashboard(salon.pk, "week", as_of=AS_OF)
    assert event_figures(salon_data.current) == (1, 2, D("100.0"), D("0.00"), 1)  # Anna is new at the salon
    assert event_figures(salon_data.previous) == (0, 0, None, D("0.00"), 0)

    # More at the salon's events changes nothing for the café.
    more = make_event(salon, "Second run", at(1, 9), made_at=at(9, 9))
    register(more, at(8, 10), "boris", "gleb")
    check_in(more, at(1, 9, 5), "boris")
    export.aggregate_transactions_to_clickhouse(since=at(60, 0))
    assert generate_business_dashboard(cafe.pk, "week", as_of=AS_OF) == before
    # Boris came, Gleb did not (not marked yet: still registered); Boris had bought at the salon.
    salon_now = generate_business_dashboard(salon.pk, "week", as_of=AS_OF).current
    assert event_figures(salon_now) == (2, 4, D("75.0"), D("0.00"), 1)


EVENT_CARDS = ("events_held", "event_registrations", "event_attendance", "event_ticket_bonuses", "event_new_attendees")


def card(html: str, name: str) -> str:
    """The HTML of one figure's card."""
    start = html.index(f'id="figure-{name}"')
    end = html.find('id="figure-', start + 1)
    return html[start : end if end != -1 else len(html)]


def test_the_dashboard_page_shows_the_events_block(season, client):
    cafe, _salon = season
    owner = MembershipFactory(business=cafe, role=Membership.Role.OWNER).user
    client.force_login(owner)
    response = client.get("/portal/", {"period": "week", "as_of": AS_OF.isoformat()}, HTTP_ACCEPT_LANGUAGE="en")
    assert response.status_code == 200
    html = response.content.decode()
    block = html[html.index('id="events"') :]
    assert [card(block, name).split('class="value">')[1].split("<")[0] for name in EVENT_CARDS] == [
        "2",
        "4",
        "50.0&nbsp;%",
        "400.00\u00a0₽",
        "1",
    ]
    attendance = card(block, "event_attendance")
    assert "before: 100.0&nbsp;%" in attendance and "▼&nbsp;-50.0&nbsp;pp" in attendance


def test_with_the_warehouse_down_the_block_is_not_shown(cafe, client, monkeypatch):
    from analytics.warehouse import WarehouseError

    cafe, _salon = cafe
    owner = MembershipFactory(business=cafe, role=Membership.Role.OWNER).user

    def down(*args, **kwargs):
        raise WarehouseError("Connection refused")

    monkeypatch.setattr("analytics.portal.generate_business_dashboard", down)
    client.force_login(owner)
    html = client.get("/portal/", HTTP_ACCEPT_LANGUAGE="en").content.decode()
    assert 'id="warehouse-down"' in html and 'id="events"' not in html


def test_seat_statuses_are_the_models():
    # The block's SQL names the statuses that hold a seat: they are the model's.
    assert set(Registration.SEATED) | {"no_show"} == {"registered", "checked_in", "no_show"}
    assert {"published", "finished"} < set(Event.Status.values)


# --- The demo -----------------------------------------------------------------------------------


def test_the_demo_exports_its_events_and_the_block_shows_them(settings, tiers):
    """`seed_demo` makes events in every state at their own times; its export carries their
    registrations, and each host's month shows what PostgreSQL holds."""
    from django.core.management import call_command
    from django.db.models import F, Sum

    from tests.loyalty.test_demo import SMALL

    settings.DEBUG = True
    call_command("seed_demo", **SMALL)
    hosts = Event.objects.values_list("business_id", flat=True).distinct()
    shown = 0
    for business_id in hosts:
        data = generate_business_dashboard(business_id, "month")
        held = Event.objects.filter(
            business_id=business_id,
            status__in=["published", "finished"],
            starts_at__gte=data.start,
            starts_at__lt=min(data.end, timezone.now()),
            registrations__isnull=False,
        ).distinct()
        seats = Registration.objects.filter(event__in=held, status__in=["registered", "checked_in", "no_show"])
        kept = Registration.objects.filter(event__in=held).aggregate(kept=Sum(F("paid_amount") - F("refunded_amount")))
        assert (data.current.events_held, data.current.event_registrations) == (held.count(), seats.count())
        assert data.current.event_ticket_bonuses == (kept["kept"] or D("0.00"))
        shown += data.current.events_held
    assert shown >= 2  # the finished tasting and the master class going on now


def test_a_seat_given_up_too_late_and_taken_again_counts_both_prices(cafe, warehouse):
    """Anna gives up her paid seat after the refund deadline (the 100 stay spent), then
    registers again on the same row and pays 100 anew: the café got 200 for tickets."""
    cafe, _salon = cafe
    tasting = make_event(cafe, "Tasting", at(3, 18), made_at=at(15, 9), price="100", capacity=4)
    register(tasting, at(14, 10), "anna")
    assert cancel(tasting, at(3, 12), "anna").refunded == D(0)
    register(tasting, at(3, 13), "anna")
    check_in(tasting, at(3, 18, 5), "anna")

    export.aggregate_transactions_to_clickhouse()

    registration = Registration.objects.get(event=tasting, customer=person("anna"))
    assert (registration.attempt, registration.paid_amount, registration.kept_before) == (2, D(100), D(100))
    assert registration_rows(warehouse, cafe)["anna"][3:5] == (D(200), D(0))
    figures = generate_business_dashboard(cafe.pk, "week", as_of=AS_OF).current
    assert figures.event_ticket_bonuses == D("200.00")


def test_a_seat_given_up_in_time_and_taken_again_counts_one_price(cafe, warehouse):
    cafe, _salon = cafe
    tasting = make_event(cafe, "Tasting", at(3, 18), made_at=at(15, 9), price="100", capacity=4)
    register(tasting, at(14, 10), "anna")
    assert cancel(tasting, at(10, 12), "anna").refunded == D(100)
    register(tasting, at(9, 13), "anna")

    export.aggregate_transactions_to_clickhouse()

    assert registration_rows(warehouse, cafe)["anna"][3:5] == (D(100), D(0))
    assert generate_business_dashboard(cafe.pk, "week", as_of=AS_OF).current.event_ticket_bonuses == D("100.00")
