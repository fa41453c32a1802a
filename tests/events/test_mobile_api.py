"""The mobile app's events: what a customer sees and can open, the filters (a radius around
a point among them), registration with the waitlist and paid seats, cancellation with its
refund cut-off, the community's votes, and the customer's tickets; all through HTTP."""

import math
import uuid
import zoneinfo
from datetime import datetime, time, timedelta
from decimal import Decimal

import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import RefreshToken

from accounts.models import Business
from events import services
from events.models import Event, Registration, Vote
from events.services import EventCreate
from loyalty import services as loyalty
from tests.factories import BusinessFactory, LoyaltyProgramFactory, MembershipFactory, UserFactory

pytestmark = pytest.mark.django_db

D = Decimal
EVENTS = "/api/v1/events/"
TICKETS = "/api/v1/me/tickets/"
MOSCOW = zoneinfo.ZoneInfo("Europe/Moscow")
# The Kremlin, and the points the radius tests measure from it.
CENTRE = (55.7520, 37.6175)
NOT_FOUND = {"error": {"code": "not_found", "message": "No event with this id."}}


@pytest.fixture(autouse=True)
def _tiers(tiers):
    """Paid seats and refunds go through loyalty's accounts, which need the tiers."""
    return tiers


@pytest.fixture
def host():
    business = BusinessFactory(name="Кофейня Зерно", address="ул. Мира, 1")
    return LoyaltyProgramFactory(business=business).business


@pytest.fixture
def owner(host):
    return MembershipFactory(business=host).user


@pytest.fixture
def anna():
    return UserFactory(phone="+79160000001")


@pytest.fixture
def boris():
    return UserFactory(phone="+79160000002")


@pytest.fixture
def carl():
    return UserFactory(phone="+79160000003")


def login(user) -> APIClient:
    """A client holding the customer's access token, asking for English messages. Call it
    inside a time_machine block that moves far: access tokens live 15 minutes."""
    client = APIClient()
    client.credentials(
        HTTP_AUTHORIZATION=f"Bearer {RefreshToken.for_user(user).access_token}", HTTP_ACCEPT_LANGUAGE="en"
    )
    return client


@pytest.fixture
def as_anna(anna):
    return login(anna)


def in_hours(hours: float) -> datetime:
    return timezone.now() + timedelta(hours=hours)


def make_event(business, owner, *, title="Дегустация", starts_at=None, hours=2, capacity=10, **fields) -> Event:
    """An event made through the service, as a partner makes it: published, starting in
    three days unless told otherwise."""
    starts_at = starts_at or in_hours(72)
    data = EventCreate(
        business=business,
        title=title,
        starts_at=starts_at,
        ends_at=starts_at + timedelta(hours=hours),
        capacity=capacity,
        **fields,
    )
    return services.create_event(data, owner)


def proposal(business, owner, *, title="Мастер-класс", threshold=3, **fields) -> Event:
    return make_event(
        business, owner, title=title, propose=True, vote_threshold=threshold, voting_deadline=in_hours(24), **fields
    )


def orm_event(business, *, title, starts_in_hours, hours=2, status=Event.Status.PUBLISHED, **fields) -> Event:
    """An event with times the service would refuse (already started or over), made directly."""
    starts_at = in_hours(starts_in_hours)
    return Event.objects.create(
        business=business,
        title=title,
        starts_at=starts_at,
        ends_at=starts_at + timedelta(hours=hours),
        registration_deadline=starts_at,
        capacity=fields.pop("capacity", 10),
        status=status,
        **fields,
    )


def seat(event, customer, status=Registration.Status.REGISTERED) -> Registration:
    """A registration made directly, for events the service no longer registers for."""
    extra = {"checked_in_at": event.starts_at} if status == Registration.Status.CHECKED_IN else {}
    if status in Registration.SEATED:
        Event.objects.filter(pk=event.pk).update(registered_count=event.registered_count + 1)
        event.refresh_from_db()
    return Registration.objects.create(
        event=event, customer=customer, status=status, registered_at=event.starts_at - timedelta(days=1), **extra
    )


def fund(customer, amount) -> None:
    loyalty.adjust_balance(user=customer, amount=D(amount), reason="test", created_by=None)


def spendable(customer) -> Decimal:
    return loyalty.spendable_balance(loyalty.get_account(customer))


def titles(response) -> list[str]:
    assert response.status_code == 200, response.content
    return [item["title"] for item in response.json()["results"]]


def detail(event) -> str:
    return f"{EVENTS}{event.pk}/"


def action(event, name: str) -> str:
    return f"{EVENTS}{event.pk}/{name}/"


def great_circle_km(a, b) -> float:
    lat1, lng1, lat2, lng2 = map(math.radians, (*a, *b))
    h = math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin((lng2 - lng1) / 2) ** 2
    return 2 * 6371.0088 * math.asin(math.sqrt(h))


def east_of(point, km: float) -> tuple[float, float]:
    """The point `km` due east along the parallel (close enough to a great circle at city scale)."""
    lat, lng = point
    return lat, round(lng + km / (111.195 * math.cos(math.radians(lat))), 6)


def north_of(point, km: float) -> tuple[float, float]:
    lat, lng = point
    return round(lat + km / 111.195, 6), lng


def at(point) -> dict:
    return {"latitude": D(str(point[0])), "longitude": D(str(point[1]))}


# --- Login --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", EVENTS),
        ("get", f"{EVENTS}1/"),
        ("post", f"{EVENTS}1/register/"),
        ("post", f"{EVENTS}1/cancel/"),
        ("post", f"{EVENTS}1/vote/"),
        ("get", TICKETS),
    ],
)
def test_every_endpoint_needs_a_login(api_client, method, path):
    response = getattr(api_client, method)(path)

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"


# --- The list -----------------------------------------------------------------------------------


def test_the_list_shows_events_not_over_and_proposals_open_for_votes_by_start(as_anna, host, owner):
    make_event(host, owner, title="Upcoming", starts_at=in_hours(48))
    proposal(host, owner, title="Proposal", starts_at=in_hours(72))
    orm_event(host, title="Running", starts_in_hours=-1)  # started an hour ago, ends in an hour
    orm_event(host, title="Over, not yet finished", starts_in_hours=-5)
    orm_event(host, title="Finished", starts_in_hours=-50, status=Event.Status.FINISHED)
    services.cancel_event(make_event(host, owner, title="Called off"), by=owner)
    orm_event(
        host,
        title="Voting closed",
        starts_in_hours=48,
        status=Event.Status.PROPOSED,
        vote_threshold=3,
        voting_deadline=in_hours(-1),
    )

    assert titles(as_anna.get(EVENTS)) == ["Running", "Upcoming", "Proposal"]


def test_a_listed_event_shows_its_terms_host_and_co_hosts(as_anna, host, owner):
    bakery = BusinessFactory(name="Пекарня", address="ул. Ленина, 3")
    event = make_event(
        host,
        owner,
        title="Сырная дегустация",
        description="Пять сыров",
        category=Event.Category.TASTING,
        capacity=12,
        price=D("150"),
        attendance_bonus=D("50"),
        co_hosts=[bakery],
        registration_deadline=in_hours(60),
    )

    [item] = as_anna.get(EVENTS).json()["results"]

    assert item == {
        "id": event.pk,
        "title": "Сырная дегустация",
        "description": "Пять сыров",
        "category": "tasting",
        "status": "published",
        "starts_at": item["starts_at"],
        "ends_at": item["ends_at"],
        "place": "ул. Мира, 1",  # no place given: the host's address
        "latitude": None,
        "longitude": None,
        "capacity": 12,
        "seats_left": 12,
        "registration_deadline": item["registration_deadline"],
        "registration_open": True,
        "price": "150.00",
        "attendance_bonus": "50.00",
        "host": {"id": str(host.pk), "name": "Кофейня Зерно", "category": "cafe", "address": "ул. Мира, 1"},
        "co_hosts": [{"id": str(bakery.pk), "name": "Пекарня"}],
        "votes": None,
        "my_registration": None,
        "my_vote": None,
        "refund_deadline": item["refund_deadline"],
        "distance_km": None,
    }
    assert datetime.fromisoformat(item["starts_at"]) == event.starts_at
    assert datetime.fromisoformat(item["ends_at"]) == event.ends_at
    assert datetime.fromisoformat(item["registration_deadline"]) == event.registration_deadline
    assert datetime.fromisoformat(item["refund_deadline"]) == event.starts_at - timedelta(hours=24)


def test_a_listed_proposal_shows_its_votes_and_the_customers_own(as_anna, anna, boris, host, owner):
    event = proposal(host, owner, threshold=5)
    services.process_vote(anna, event, "up")
    services.process_vote(boris, event, "down")

    [item] = as_anna.get(EVENTS).json()["results"]

    assert item["status"] == "proposed"
    assert item["registration_open"] is False
    assert item["my_vote"] == "up"
    assert item["votes"] == {
        "up": 1,
        "down": 1,
        "threshold": 5,
        "voting_deadline": item["votes"]["voting_deadline"],
    }
    assert datetime.fromisoformat(item["votes"]["voting_deadline"]) == event.voting_deadline


def test_the_list_pages_by_number(as_anna, host, owner, settings):
    settings.API_PAGE_SIZE = 2
    for day in (5, 1, 4, 2, 3):
        make_event(host, owner, title=f"Day {day}", starts_at=in_hours(24 * day))

    first = as_anna.get(EVENTS).json()
    second = as_anna.get(first["next"]).json()
    third = as_anna.get(second["next"]).json()

    assert first["count"] == 5
    assert [item["title"] for item in first["results"]] == ["Day 1", "Day 2"]
    assert [item["title"] for item in second["results"]] == ["Day 3", "Day 4"]
    assert [item["title"] for item in third["results"]] == ["Day 5"]
    assert third["next"] is None
    missing = as_anna.get(EVENTS, {"page": 9})
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"


def test_the_list_runs_the_same_queries_whatever_the_page_size(anna, boris, host, owner, settings):
    bakery = BusinessFactory(name="Пекарня")
    for number in range(4):
        event = make_event(host, owner, title=f"Event {number}", co_hosts=[bakery], starts_at=in_hours(30 + number))
        services.register_for_event(anna if number % 2 else boris, event)
        vote_on = proposal(host, owner, title=f"Proposal {number}", starts_at=in_hours(40 + number))
        services.process_vote(anna, vote_on, "up")
    as_anna = login(anna)
    # The vote counters live in the cache; a request that finds them missing rebuilds them
    # from the database once. Warm them, as any earlier reader would have.
    as_anna.get(EVENTS)
    settings.ANSWER_CACHE_SECONDS = 0  # what is counted is computing the list, not a cached answer

    settings.API_PAGE_SIZE = 1
    with CaptureQueriesContext(connection) as one_per_page:
        assert len(as_anna.get(EVENTS).json()["results"]) == 1
    settings.API_PAGE_SIZE = 50
    with CaptureQueriesContext(connection) as whole:
        results = as_anna.get(EVENTS).json()["results"]

    assert len(results) == 8
    assert {item["my_vote"] for item in results if item["status"] == "proposed"} == {"up"}
    assert sum(item["my_registration"] is not None for item in results) == 2
    assert len(whole) == len(one_per_page)
    # The user, the count, the page, the co-hosts, the customer's registrations and votes.
    assert len(whole) <= 6


def test_a_radius_search_runs_the_same_queries_whatever_the_page_size(anna, host, owner, settings):
    for number in range(3):
        make_event(host, owner, title=f"Near {number}", starts_at=in_hours(30 + number), **at(east_of(CENTRE, 1)))
    as_anna = login(anna)
    query = {"near": f"{CENTRE[0]},{CENTRE[1]}"}

    settings.API_PAGE_SIZE = 1
    with CaptureQueriesContext(connection) as one_per_page:
        as_anna.get(EVENTS, query)
    settings.API_PAGE_SIZE = 50
    with CaptureQueriesContext(connection) as whole:
        assert len(as_anna.get(EVENTS, query).json()["results"]) == 3

    assert len(whole) == len(one_per_page)


# --- Filters ------------------------------------------------------------------------------------


def test_the_business_filter_finds_events_the_partner_hosts_or_co_hosts(as_anna, host, owner):
    gym = BusinessFactory(name="Спортзал", category=Business.Category.FITNESS)
    gym_owner = MembershipFactory(business=gym).user
    make_event(host, owner, title="Hosted by the café", starts_at=in_hours(30))
    make_event(gym, gym_owner, title="Hosted by the gym", starts_at=in_hours(31))
    make_event(gym, gym_owner, title="Gym with the café", co_hosts=[host], starts_at=in_hours(32))

    assert titles(as_anna.get(EVENTS, {"business": host.pk})) == ["Hosted by the café", "Gym with the café"]
    assert titles(as_anna.get(EVENTS, {"business": gym.pk})) == ["Hosted by the gym", "Gym with the café"]
    assert titles(as_anna.get(EVENTS, {"business": uuid.uuid4()})) == []


def test_the_category_filter(as_anna, host, owner):
    make_event(host, owner, title="Wine", category=Event.Category.TASTING, starts_at=in_hours(30))
    make_event(host, owner, title="Run", category=Event.Category.SPORT, starts_at=in_hours(31))
    make_event(host, owner, title="Cheese", category=Event.Category.TASTING, starts_at=in_hours(32))

    assert titles(as_anna.get(EVENTS, {"category": "tasting"})) == ["Wine", "Cheese"]
    assert titles(as_anna.get(EVENTS, {"category": "sport"})) == ["Run"]
    assert titles(as_anna.get(EVENTS, {"category": "kids"})) == []


def test_the_status_filter(as_anna, host, owner):
    make_event(host, owner, title="On", starts_at=in_hours(30))
    proposal(host, owner, title="Maybe", starts_at=in_hours(31))

    assert titles(as_anna.get(EVENTS, {"status": "published"})) == ["On"]
    assert titles(as_anna.get(EVENTS, {"status": "proposed"})) == ["Maybe"]


def test_the_date_filters_read_the_start_as_a_date_in_moscow(as_anna, host, owner):
    day = timezone.localtime(timezone.now(), MOSCOW).date() + timedelta(days=3)
    late = datetime.combine(day, time(23, 30), tzinfo=MOSCOW)  # 20:30 UTC: the same UTC date as the next
    make_event(host, owner, title="Late evening", starts_at=late)
    make_event(host, owner, title="Just after midnight", starts_at=late + timedelta(hours=1))
    make_event(host, owner, title="Two days later", starts_at=late + timedelta(days=2))
    following = day + timedelta(days=1)

    assert titles(as_anna.get(EVENTS, {"date_to": day.isoformat()})) == ["Late evening"]
    assert titles(as_anna.get(EVENTS, {"date_from": following.isoformat()})) == [
        "Just after midnight",
        "Two days later",
    ]
    assert titles(as_anna.get(EVENTS, {"date_from": following.isoformat(), "date_to": following.isoformat()})) == [
        "Just after midnight"
    ]
    assert titles(as_anna.get(EVENTS, {"date_from": day.isoformat(), "date_to": day.isoformat()})) == ["Late evening"]


def test_near_lists_only_events_within_the_radius_with_their_distance(as_anna, host, owner, settings):
    assert settings.EVENTS_NEAR_DEFAULT_RADIUS_KM == 5
    inside_east, inside_north = east_of(CENTRE, 4.5), north_of(CENTRE, 1)
    outside_east, outside_north = east_of(CENTRE, 5.5), north_of(CENTRE, 12)
    make_event(host, owner, title="4.5 km east", starts_at=in_hours(30), **at(inside_east))
    make_event(host, owner, title="5.5 km east", starts_at=in_hours(31), **at(outside_east))
    make_event(host, owner, title="1 km north", starts_at=in_hours(32), **at(inside_north))
    make_event(host, owner, title="12 km north", starts_at=in_hours(33), **at(outside_north))
    make_event(host, owner, title="Nowhere", place="Где-то в городе", starts_at=in_hours(34))

    response = as_anna.get(EVENTS, {"near": f"{CENTRE[0]},{CENTRE[1]}"})

    assert titles(response) == ["4.5 km east", "1 km north"]
    distances = {item["title"]: item["distance_km"] for item in response.json()["results"]}
    assert distances["4.5 km east"] == pytest.approx(great_circle_km(CENTRE, inside_east), abs=0.01)
    assert distances["4.5 km east"] == pytest.approx(4.5, abs=0.02)
    assert distances["1 km north"] == pytest.approx(great_circle_km(CENTRE, inside_north), abs=0.01)
    assert titles(as_anna.get(EVENTS, {"near": f"{CENTRE[0]},{CENTRE[1]}", "radius_km": "6"})) == [
        "4.5 km east",
        "5.5 km east",
        "1 km north",
    ]
    assert titles(as_anna.get(EVENTS, {"near": f"{CENTRE[0]},{CENTRE[1]}", "radius_km": "0.5"})) == []
    # Without `near` every event is listed, and none has a distance.
    everything = as_anna.get(EVENTS).json()["results"]
    assert len(everything) == 5
    assert {item["distance_km"] for item in everything} == {None}


def test_near_combines_with_the_other_filters(as_anna, host, owner):
    make_event(host, owner, title="Near run", category="sport", starts_at=in_hours(30), **at(east_of(CENTRE, 1)))
    make_event(host, owner, title="Near wine", category="tasting", starts_at=in_hours(31), **at(east_of(CENTRE, 2)))
    make_event(host, owner, title="Far run", category="sport", starts_at=in_hours(32), **at(east_of(CENTRE, 30)))

    found = titles(as_anna.get(EVENTS, {"near": f"{CENTRE[0]},{CENTRE[1]}", "category": "sport"}))

    assert found == ["Near run"]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"business": "not-a-uuid"}, "business"),
        ({"category": "opera"}, "category"),
        ({"status": "cancelled"}, "status"),
        ({"date_from": "2025-13-01"}, "date_from"),
        ({"date_from": "2030-05-02", "date_to": "2030-05-01"}, "date_to"),
        ({"near": "55.75"}, "near"),
        ({"near": "north,east"}, "near"),
        ({"near": "91,37.6"}, "near"),
        ({"near": "55.75,181"}, "near"),
        ({"near": "nan,37.6"}, "near"),
        ({"near": "55.75,37.6", "radius_km": "0"}, "radius_km"),
        ({"near": "55.75,37.6", "radius_km": "51"}, "radius_km"),
        ({"near": "55.75,37.6", "radius_km": "inf"}, "radius_km"),
        ({"near": "55.75,37.6", "radius_km": "far"}, "radius_km"),
        ({"radius_km": "3"}, "radius_km"),
    ],
)
def test_a_bad_filter_is_refused_in_the_error_shape(as_anna, query, field):
    response = as_anna.get(EVENTS, query)

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid"
    assert list(error["fields"]) == [field]


# --- One event ----------------------------------------------------------------------------------


def test_one_event_shows_the_customers_registration_and_ticket(as_anna, anna, host, owner):
    event = make_event(host, owner, capacity=5)
    registration = services.register_for_event(anna, event)

    response = as_anna.get(detail(event))

    assert response.status_code == 200
    body = response.json()
    assert body["seats_left"] == 4
    assert body["my_vote"] is None
    assert body["my_registration"] == {
        "id": registration.pk,
        "status": "registered",
        "ticket_code": registration.ticket_code,
        "qr_payload": f"SVOYKRUG:TICKET:{registration.ticket_code}",
        "registered_at": body["my_registration"]["registered_at"],
        "checked_in_at": None,
        "paid_amount": "0.00",
        "refunded_amount": "0.00",
        "waitlist_position": None,
    }
    assert datetime.fromisoformat(body["my_registration"]["registered_at"]) == registration.registered_at
    assert "distance_km" not in body


def test_one_event_reads_as_in_the_list(as_anna, anna, host, owner):
    event = make_event(host, owner, co_hosts=[BusinessFactory(name="Пекарня")])
    services.register_for_event(anna, event)

    [listed] = as_anna.get(EVENTS).json()["results"]
    one = as_anna.get(detail(event)).json()

    assert listed.pop("distance_km") is None
    assert one == listed


def test_another_customers_registration_is_not_shown(as_anna, boris, host, owner):
    event = make_event(host, owner, capacity=5)
    services.register_for_event(boris, event)

    body = as_anna.get(detail(event)).json()

    assert body["my_registration"] is None
    assert body["seats_left"] == 4
    assert as_anna.get(TICKETS).json()["results"] == []


def test_events_the_customer_cannot_see_are_not_found_like_missing_ones(as_anna, anna, boris, host, owner):
    finished = orm_event(host, title="Finished", starts_in_hours=-50, status=Event.Status.FINISHED)
    seat(finished, boris, Registration.Status.CHECKED_IN)
    called_off = services.cancel_event(make_event(host, owner, title="Called off"), by=owner)
    voting_closed = orm_event(
        host,
        title="Voting closed",
        starts_in_hours=48,
        status=Event.Status.PROPOSED,
        vote_threshold=3,
        voting_deadline=in_hours(-1),
    )
    missing = Event(pk=Event.objects.order_by("-pk").first().pk + 100)

    for event in (finished, called_off, voting_closed, missing):
        for response in (
            as_anna.get(detail(event)),
            as_anna.post(action(event, "register")),
            as_anna.post(action(event, "cancel")),
            as_anna.post(action(event, "vote"), {"vote": "up"}, format="json"),
        ):
            assert response.status_code == 404, (event.title, response.content)
            assert response.json() == NOT_FOUND
    assert not Registration.objects.filter(customer=anna).exists()
    assert not Vote.objects.exists()


def test_an_event_the_customer_was_registered_for_still_opens_after_it(as_anna, anna, host, owner):
    finished = orm_event(host, title="Finished", starts_in_hours=-50, status=Event.Status.FINISHED)
    registration = seat(finished, anna, Registration.Status.CHECKED_IN)
    called_off = make_event(host, owner, title="Called off")
    services.register_for_event(anna, called_off)
    services.cancel_event(called_off, by=owner)

    came = as_anna.get(detail(finished))
    cancelled = as_anna.get(detail(called_off))

    assert came.status_code == 200
    assert came.json()["status"] == "finished"
    assert came.json()["registration_open"] is False
    assert came.json()["my_registration"]["status"] == "checked_in"
    assert came.json()["my_registration"]["ticket_code"] == registration.ticket_code
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"
    assert cancelled.json()["my_registration"]["status"] == "cancelled"
    assert cancelled.json()["my_registration"]["ticket_code"] is None
    assert titles(as_anna.get(EVENTS)) == []


# --- Registration -------------------------------------------------------------------------------


def test_registering_gives_a_seat_then_returns_the_same_one(as_anna, anna, host, owner):
    event = make_event(host, owner, title="Дегустация", place="Парк Горького", capacity=3)

    first = as_anna.post(action(event, "register"))
    again = as_anna.post(action(event, "register"))

    assert first.status_code == 201
    registration = Registration.objects.get(customer=anna)
    body = first.json()
    assert body == {
        "id": registration.pk,
        "status": "registered",
        "ticket_code": registration.ticket_code,
        "qr_payload": f"SVOYKRUG:TICKET:{registration.ticket_code}",
        "registered_at": body["registered_at"],
        "checked_in_at": None,
        "paid_amount": "0.00",
        "refunded_amount": "0.00",
        "waitlist_position": None,
        "event": {
            "id": event.pk,
            "title": "Дегустация",
            "status": "published",
            "starts_at": body["event"]["starts_at"],
            "ends_at": body["event"]["ends_at"],
            "place": "Парк Горького",
            "host": "Кофейня Зерно",
        },
    }
    assert again.status_code == 200
    assert again.json() == body
    assert as_anna.get(detail(event)).json()["seats_left"] == 2
    event.refresh_from_db()
    assert event.registered_count == 1


def test_a_full_event_puts_customers_on_the_waitlist_in_order(anna, boris, carl, host, owner):
    event = make_event(host, owner, capacity=1)
    assert login(boris).post(action(event, "register")).json()["status"] == "registered"

    annas = login(anna).post(action(event, "register"))
    carls = login(carl).post(action(event, "register"))

    assert annas.status_code == 201
    assert annas.json()["status"] == "waitlisted"
    assert annas.json()["waitlist_position"] == 1
    assert annas.json()["ticket_code"] is None
    assert annas.json()["qr_payload"] is None
    assert carls.json()["waitlist_position"] == 2
    shown = login(carl).get(detail(event)).json()
    assert shown["seats_left"] == 0
    assert shown["registration_open"] is True
    assert shown["my_registration"]["waitlist_position"] == 2


def test_a_paid_event_takes_its_price_in_bonuses(as_anna, anna, host, owner):
    fund(anna, "500")
    event = make_event(host, owner, price=D("200"))

    response = as_anna.post(action(event, "register"))

    assert response.status_code == 201
    assert response.json()["status"] == "registered"
    assert response.json()["paid_amount"] == "200.00"
    assert spendable(anna) == D("300.00")


def test_too_few_bonuses_are_refused_and_nothing_changes(as_anna, anna, host, owner):
    fund(anna, "100")
    event = make_event(host, owner, price=D("200"))

    response = as_anna.post(action(event, "register"))

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "insufficient_bonuses"
    assert not Registration.objects.filter(customer=anna).exists()
    event.refresh_from_db()
    assert event.registered_count == 0
    assert spendable(anna) == D("100.00")
    assert as_anna.get(TICKETS).json()["results"] == []


def test_the_waitlist_of_a_paid_event_is_for_those_who_can_pay(anna, boris, host, owner):
    fund(boris, "200")
    fund(anna, "100")
    event = make_event(host, owner, price=D("200"), capacity=1)
    assert login(boris).post(action(event, "register")).status_code == 201

    response = login(anna).post(action(event, "register"))

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "insufficient_bonuses"
    assert response.json()["error"]["available"] == "100.00"
    assert not Registration.objects.filter(customer=anna).exists()
    assert spendable(anna) == D("100.00")


def test_a_proposal_is_not_open_for_registration(as_anna, anna, host, owner):
    event = proposal(host, owner)

    response = as_anna.post(action(event, "register"))

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "registration_closed"
    assert not Registration.objects.filter(customer=anna).exists()


def test_registration_closes_at_its_deadline(anna, host, owner):
    event = make_event(host, owner, registration_deadline=in_hours(48))

    with time_machine.travel(in_hours(49), tick=False):
        client = login(anna)
        assert client.get(detail(event)).json()["registration_open"] is False
        response = client.post(action(event, "register"))

    assert response.status_code == 409
    assert response.json()["error"] == {
        "code": "registration_closed",
        "message": "Registration for this event is closed.",
    }
    assert not Registration.objects.filter(customer=anna).exists()


# --- Cancellation -------------------------------------------------------------------------------


def test_cancelling_before_the_cut_off_gives_the_bonuses_back(as_anna, anna, host, owner, settings):
    assert settings.EVENTS_REFUND_CUTOFF_HOURS == 24
    fund(anna, "500")
    event = make_event(host, owner, price=D("200"), starts_at=in_hours(72))
    as_anna.post(action(event, "register"))
    assert spendable(anna) == D("300.00")

    response = as_anna.post(action(event, "cancel"))

    assert response.status_code == 200
    body = response.json()
    assert body["refunded"] == "200.00"
    assert body["registration"]["status"] == "cancelled"
    assert body["registration"]["ticket_code"] is None
    assert body["registration"]["paid_amount"] == "200.00"
    assert body["registration"]["refunded_amount"] == "200.00"
    assert body["registration"]["event"]["id"] == event.pk
    assert spendable(anna) == D("500.00")
    assert as_anna.get(detail(event)).json()["seats_left"] == 10


def test_cancelling_at_the_refund_deadline_still_refunds(anna, host, owner):
    fund(anna, "500")
    event = make_event(host, owner, price=D("200"), starts_at=in_hours(72))
    services.register_for_event(anna, event)

    with time_machine.travel(services.refund_deadline(event), tick=False):
        response = login(anna).post(action(event, "cancel"))
        balance = spendable(anna)  # the returned lot is spendable from the moment of the refund

    assert response.json()["refunded"] == "200.00"
    assert balance == D("500.00")


def test_cancelling_after_the_cut_off_keeps_the_bonuses(anna, host, owner):
    fund(anna, "500")
    event = make_event(host, owner, price=D("200"), starts_at=in_hours(72))
    services.register_for_event(anna, event)

    with time_machine.travel(event.starts_at - timedelta(hours=12), tick=False):
        client = login(anna)
        assert datetime.fromisoformat(client.get(detail(event)).json()["refund_deadline"]) < timezone.now()
        response = client.post(action(event, "cancel"))

    assert response.status_code == 200
    assert response.json()["refunded"] == "0.00"
    assert response.json()["registration"]["status"] == "cancelled"
    assert response.json()["registration"]["refunded_amount"] == "0.00"
    assert spendable(anna) == D("300.00")
    event.refresh_from_db()
    assert event.registered_count == 0


def test_a_freed_seat_goes_to_the_first_on_the_waitlist(anna, boris, host, owner):
    event = make_event(host, owner, capacity=1)
    services.register_for_event(boris, event)
    services.register_for_event(anna, event)

    response = login(boris).post(action(event, "cancel"))

    assert response.status_code == 200
    [ticket] = login(anna).get(TICKETS).json()["results"]
    assert ticket["status"] == "registered"
    assert ticket["waitlist_position"] is None
    assert ticket["ticket_code"] == Registration.objects.get(customer=anna).ticket_code


def test_cancelling_without_a_registration_is_not_found(as_anna, host, owner):
    event = make_event(host, owner)

    response = as_anna.post(action(event, "cancel"))

    assert response.status_code == 404
    assert response.json()["error"] == {"code": "not_registered", "message": "You are not registered for this event."}


def test_a_registration_cannot_be_cancelled_once_the_event_has_started(anna, host, owner):
    event = make_event(host, owner, starts_at=in_hours(72), hours=3)
    services.register_for_event(anna, event)

    with time_machine.travel(event.starts_at + timedelta(minutes=30), tick=False):
        response = login(anna).post(action(event, "cancel"))

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "cancellation_refused"
    assert Registration.objects.get(customer=anna).status == Registration.Status.REGISTERED


# --- Votes --------------------------------------------------------------------------------------


def test_votes_up_and_down_are_counted_and_can_change(anna, boris, host, owner):
    event = proposal(host, owner, threshold=5)
    as_anna, as_boris = login(anna), login(boris)

    up = as_anna.post(action(event, "vote"), {"vote": "up"}, format="json")
    down = as_boris.post(action(event, "vote"), {"vote": "down"}, format="json")
    changed = as_anna.post(action(event, "vote"), {"vote": "down"}, format="json")

    assert up.status_code == 200
    assert up.json() == {"up": 1, "down": 0, "my_vote": "up", "threshold": 5, "published": False}
    assert down.json() == {"up": 1, "down": 1, "my_vote": "down", "threshold": 5, "published": False}
    assert changed.json() == {"up": 0, "down": 2, "my_vote": "down", "threshold": 5, "published": False}
    shown = as_anna.get(detail(event)).json()
    assert shown["my_vote"] == "down"
    assert (shown["votes"]["up"], shown["votes"]["down"], shown["votes"]["threshold"]) == (0, 2, 5)
    assert Vote.objects.filter(event=event).count() == 2


def test_enough_up_votes_publish_the_event(anna, boris, host, owner):
    event = proposal(host, owner, threshold=2)
    login(anna).post(action(event, "vote"), {"vote": "up"}, format="json")

    response = login(boris).post(action(event, "vote"), {"vote": "up"}, format="json")

    assert response.json() == {"up": 2, "down": 0, "my_vote": "up", "threshold": 2, "published": True}
    shown = login(boris).get(detail(event)).json()
    assert shown["status"] == "published"
    assert shown["votes"] is None
    assert shown["registration_open"] is True
    assert shown["my_vote"] == "up"
    assert login(boris).post(action(event, "register")).status_code == 201


def test_a_published_event_takes_no_votes(as_anna, host, owner):
    event = make_event(host, owner)

    response = as_anna.post(action(event, "vote"), {"vote": "up"}, format="json")

    assert response.status_code == 409
    assert response.json()["error"] == {"code": "voting_closed", "message": "Voting on this event is closed."}
    assert not Vote.objects.exists()


@pytest.mark.parametrize("body", [{"vote": "maybe"}, {"vote": ""}, {}, {"vote": None}])
def test_a_vote_is_up_or_down(as_anna, host, owner, body):
    event = proposal(host, owner)

    response = as_anna.post(action(event, "vote"), body, format="json")

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid"
    assert list(error["fields"]) == ["vote"]
    assert not Vote.objects.exists()


# --- The customer's tickets ---------------------------------------------------------------------


@pytest.fixture
def tickets(anna, boris, host, owner):
    """Anna's registrations in every state:

    - "running": an event under way (started an hour ago), registered;
    - "waitlisted": in two days, full (Boris holds the one seat), Anna on the waitlist;
    - "cancelled": in three days, Anna registered and cancelled;
    - "later": in five days, registered;
    - "came": three days ago, checked in;
    - "missed": ten days ago, did not come.
    Boris's seat is not Anna's ticket."""
    running = orm_event(host, title="Running", starts_in_hours=-1)
    full = make_event(host, owner, title="Waitlisted", capacity=1, starts_at=in_hours(48))
    services.register_for_event(boris, full)
    cancelled = make_event(host, owner, title="Cancelled", starts_at=in_hours(72))
    services.register_for_event(anna, cancelled)
    services.cancel_registration(anna, cancelled)
    came = orm_event(host, title="Came", starts_in_hours=-72, status=Event.Status.FINISHED)
    missed = orm_event(host, title="Missed", starts_in_hours=-240, status=Event.Status.FINISHED)
    return {
        "running": seat(running, anna),
        "waitlisted": services.register_for_event(anna, full),
        "cancelled": Registration.objects.get(event=cancelled, customer=anna),
        "later": services.register_for_event(anna, make_event(host, owner, title="Later", starts_at=in_hours(120))),
        "came": seat(came, anna, Registration.Status.CHECKED_IN),
        "missed": seat(missed, anna, Registration.Status.NO_SHOW),
    }


def test_the_tickets_are_the_seats_and_waitlist_places_on_events_not_over_soonest_first(as_anna, tickets):
    response = as_anna.get(TICKETS)

    assert response.status_code == 200
    results = response.json()["results"]
    assert [item["id"] for item in results] == [tickets[name].pk for name in ("running", "waitlisted", "later")]
    assert [item["status"] for item in results] == ["registered", "waitlisted", "registered"]
    assert [item["waitlist_position"] for item in results] == [None, 1, None]
    assert [item["ticket_code"] for item in results] == [
        tickets["running"].ticket_code,
        None,
        tickets["later"].ticket_code,
    ]
    later = results[2]
    assert later["qr_payload"] == f"SVOYKRUG:TICKET:{tickets['later'].ticket_code}"
    assert later["event"] == {
        "id": tickets["later"].event_id,
        "title": "Later",
        "status": "published",
        "starts_at": later["event"]["starts_at"],
        "ends_at": later["event"]["ends_at"],
        "place": "ул. Мира, 1",
        "host": "Кофейня Зерно",
    }
    assert datetime.fromisoformat(later["event"]["starts_at"]) == tickets["later"].event.starts_at


def test_with_past_the_tickets_add_the_rest_latest_past_first(as_anna, tickets):
    response = as_anna.get(TICKETS, {"include": "past"})

    results = response.json()["results"]
    order = ("running", "waitlisted", "cancelled", "later", "came", "missed")
    assert [item["id"] for item in results] == [tickets[name].pk for name in order]
    assert [item["status"] for item in results] == [
        "registered",
        "waitlisted",
        "cancelled",
        "registered",
        "checked_in",
        "no_show",
    ]
    came, missed = results[4], results[5]
    assert came["ticket_code"] == tickets["came"].ticket_code
    assert came["checked_in_at"] is not None
    assert missed["ticket_code"] is None
    assert results[2]["ticket_code"] is None


def test_the_tickets_page_by_number(as_anna, tickets, settings):
    settings.API_PAGE_SIZE = 4

    first = as_anna.get(TICKETS, {"include": "past"}).json()
    second = as_anna.get(first["next"]).json()

    assert first["count"] == 6
    assert [item["id"] for item in first["results"] + second["results"]] == [
        tickets[name].pk for name in ("running", "waitlisted", "cancelled", "later", "came", "missed")
    ]
    assert second["next"] is None


def test_the_tickets_run_the_same_queries_whatever_the_page_size(as_anna, tickets, settings):
    settings.API_PAGE_SIZE = 1
    with CaptureQueriesContext(connection) as one_per_page:
        assert len(as_anna.get(TICKETS, {"include": "past"}).json()["results"]) == 1
    settings.API_PAGE_SIZE = 50
    with CaptureQueriesContext(connection) as whole:
        assert len(as_anna.get(TICKETS, {"include": "past"}).json()["results"]) == 6

    assert len(whole) == len(one_per_page)
    assert len(whole) <= 3  # the user, the count, the page


def test_an_unknown_include_is_refused(as_anna):
    response = as_anna.get(TICKETS, {"include": "everything"})

    assert response.status_code == 400
    assert list(response.json()["error"]["fields"]) == ["include"]
