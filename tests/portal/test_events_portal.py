"""The portal's Events section: the list of hosted and co-hosted events with their counts, a
new event and its changes (errors at their fields), publication, cancellation with every
ticket refunded, the lists as CSV, and the door: check-in by a typed or scanned ticket code,
for every role of the host and the co-hosts. Another business's event is 404 everywhere
(tests/portal/test_isolation.py)."""

import csv
import io
import zoneinfo
from datetime import datetime, timedelta
from decimal import Decimal

import pytest
import time_machine
from django.contrib.messages import get_messages
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.models import Membership
from accounts.phones import mask_phone
from events import services
from events.models import Event, Registration
from loyalty.models import BonusAccount
from loyalty.services import adjust_balance
from tests.factories import BusinessFactory, MembershipFactory, UserFactory

pytestmark = pytest.mark.django_db

D = Decimal
MSK = zoneinfo.ZoneInfo("Europe/Moscow")
# The door's tests run at a fixed moment, so that the times they show can be read exactly.
EVENING = datetime(2030, 5, 15, 18, 0, tzinfo=MSK)
Status = Event.Status
RegStatus = Registration.Status


def flashed(response) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


def make_event(business, by, *, starts_in=timedelta(days=3), hours=2, **fields) -> Event:
    starts = timezone.now() + starts_in
    fields.setdefault("title", "Дегустация кофе")
    fields.setdefault("capacity", 10)
    return services.create_event(
        services.EventCreate(business=business, starts_at=starts, ends_at=starts + timedelta(hours=hours), **fields),
        by,
    )


def customer(phone, first_name="Ирина", last_name="Смирнова"):
    return UserFactory(phone=phone, first_name=first_name, last_name=last_name)


def move_to_the_past(event, *, finish=False) -> Event:
    """An event that was: its times moved back (the services never make one)."""
    starts = timezone.now() - timedelta(hours=5)
    Event.objects.filter(pk=event.pk).update(
        starts_at=starts, registration_deadline=starts, ends_at=starts + timedelta(hours=2)
    )
    if finish:
        services.finish_events()
    event.refresh_from_db()
    return event


def local(moment: datetime) -> str:
    """A time as the `datetime-local` input holds it, on Moscow's clock."""
    return moment.astimezone(MSK).strftime("%Y-%m-%dT%H:%M")


@pytest.fixture
def cashier_b(business_b):
    user = UserFactory(phone="+79990000203", first_name="Денис", last_name="Орлов")
    MembershipFactory(user=user, business=business_b, role=Membership.Role.CASHIER)
    return user


@pytest.fixture
def evening():
    with time_machine.travel(EVENING, tick=False):
        yield EVENING


@pytest.fixture
def tonight(evening, business_a, owner):
    """A's event starting at 18:30 (the door opens at 17:30), 50 bonuses for coming."""
    return make_event(business_a, owner, starts_in=timedelta(minutes=30), hours=3, capacity=3, attendance_bonus=D("50"))


@pytest.fixture
def irina():
    return customer("+79161110001")


# --- The list ------------------------------------------------------------------------------------


def test_the_list_groups_the_events_with_their_counts(client, login, owner, owner_b, business_a, business_b):
    voters = [customer(f"+7916222000{n}", first_name=f"Голос{n}") for n in range(3)]
    soon = timezone.now() + timedelta(days=2)
    proposal = make_event(business_a, owner, title="Кофе и книги", propose=True, vote_threshold=5, voting_deadline=soon)
    for voter, vote in zip(voters, ["up", "up", "down"], strict=True):
        services.process_vote(voter, proposal, vote)
    tonight = make_event(  # two co-hosts: a join on them would count each registration twice
        business_a,
        owner,
        title="Латте-арт",
        starts_in=timedelta(minutes=30),
        capacity=2,
        co_hosts=[business_b, BusinessFactory(name="Пекарня «Колос»")],
    )
    guests = [customer(f"+7916333000{n}") for n in range(3)]
    tickets = [services.register_for_event(guest, tonight) for guest in guests]  # the third waits
    services.check_in_by_code(tickets[0].ticket_code, event=tonight, by=owner)
    over = move_to_the_past(make_event(business_a, owner, title="Вчерашний бранч"), finish=True)
    ended = move_to_the_past(make_event(business_a, owner, title="Утренний джаз"))  # not yet marked finished
    called_off = services.cancel_event(make_event(business_a, owner, title="Отменённый ужин"), by=owner)
    co_hosted = make_event(business_b, owner_b, title="Йога и кофе", co_hosts=[business_a])
    make_event(business_b, owner_b, title="Чужой мастер-класс")  # B's alone: not here
    login(owner)

    response = client.get("/portal/events/")

    assert response.status_code == 200
    groups = {group["key"]: group["events"] for group in response.context["groups"]}
    assert [e.pk for e in groups["proposed"]] == [proposal.pk]
    assert [e.pk for e in groups["upcoming"]] == [tonight.pk, co_hosted.pk]
    assert {e.pk for e in groups["past"]} == {over.pk, ended.pk}
    assert [e.pk for e in groups["cancelled"]] == [called_off.pk]
    assert groups["proposed"][0].votes_up_down == {"up": 2, "down": 1}
    running = groups["upcoming"][0]
    assert (running.registered_count, running.capacity, running.waitlist_count, running.arrived_count) == (2, 2, 1, 1)
    page = response.content.decode()
    assert "Чужой мастер-класс" not in page
    assert "co-hosted; the host is Салон «Лён»" in page
    assert '<td class="num votes-up">2 / 5</td>' in page
    assert '<td class="num seats">2 / 2</td>' in page
    assert 'href="/portal/events/new/"' in page
    assert f'href="/portal/events/{tonight.pk}/check-in/"' in page


def test_the_list_reads_a_fixed_number_of_queries(client, login, owner, business_a):
    def one_of_each(n):
        voting = timezone.now() + timedelta(days=1)
        make_event(business_a, owner, title=f"Голосование {n}", propose=True, vote_threshold=3, voting_deadline=voting)
        event = make_event(business_a, owner, title=f"Вечер {n}", capacity=1)
        services.register_for_event(customer(f"+791644400{n}1"), event)
        services.register_for_event(customer(f"+791644400{n}2"), event)  # waits
        move_to_the_past(make_event(business_a, owner, title=f"Было {n}"), finish=True)
        services.cancel_event(make_event(business_a, owner, title=f"Отмена {n}"), by=owner)

    def queries() -> int:
        client.get("/portal/events/")  # the vote counters are cached from here on
        with CaptureQueriesContext(connection) as captured:
            response = client.get("/portal/events/")
        assert response.status_code == 200
        return len(captured)

    login(owner)
    one_of_each(1)
    few = queries()
    one_of_each(2)
    one_of_each(3)

    assert queries() == few
    assert sum(len(group["events"]) for group in client.get("/portal/events/").context["groups"]) == 12


def test_a_cashier_sees_the_events_but_no_new_event_button(client, login, cashier, owner, business_a):
    make_event(business_a, owner)
    login(cashier)

    response = client.get("/portal/events/")

    page = response.content.decode()
    assert response.status_code == 200
    assert "Дегустация кофе" in page
    assert 'href="/portal/events/new/"' not in page
    assert 'href="/portal/events/"' in client.get("/portal/").content.decode()  # the navigation


# --- A new event ---------------------------------------------------------------------------------


def form_data(**overrides) -> dict:
    starts = timezone.now() + timedelta(days=5)
    data = {
        "title": "Мастер-класс по латте-арту",
        "description": "Учимся рисовать на молочной пенке.",
        "category": "masterclass",
        "starts_at": local(starts),
        "ends_at": local(starts + timedelta(hours=2)),
        "place": "",
        "capacity": "12",
        "registration_deadline": "",
        "price": "150",
        "attendance_bonus": "30",
    }
    return data | overrides


def test_a_new_event_is_created_in_the_business_time_zone(client, login, owner, business_a, business_b):
    business_a.time_zone = "Asia/Yekaterinburg"  # UTC+5, two hours ahead of Moscow
    business_a.save()
    login(owner)
    assert client.get("/portal/events/new/").status_code == 200

    response = client.post(
        "/portal/events/new/",
        form_data(starts_at="2031-06-01T19:00", ends_at="2031-06-01T21:30", co_hosts=[str(business_b.pk)]),
    )

    event = Event.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"/portal/events/{event.pk}/"
    assert flashed(response) == ["The event is published: customers can register in the app."]
    yekaterinburg = zoneinfo.ZoneInfo("Asia/Yekaterinburg")
    assert event.starts_at == datetime(2031, 6, 1, 19, 0, tzinfo=yekaterinburg)
    assert event.ends_at == datetime(2031, 6, 1, 21, 30, tzinfo=yekaterinburg)
    assert event.registration_deadline == event.starts_at  # empty: registration runs to the start
    assert (event.business, event.status, event.category, event.capacity) == (
        business_a,
        Status.PUBLISHED,
        "masterclass",
        12,
    )
    assert (event.price, event.attendance_bonus) == (D("150.00"), D("30.00"))
    assert list(event.co_hosts.all()) == [business_b]
    assert event.created_by == owner
    detail = client.get(response["Location"]).content.decode()
    assert "01.06.2031 19:00 — 01.06.2031 21:30" in detail


def test_a_proposal_goes_to_the_vote(client, login, manager):
    login(manager)
    starts = timezone.now() + timedelta(days=10)

    response = client.post(
        "/portal/events/new/",
        form_data(
            starts_at=local(starts),
            ends_at=local(starts + timedelta(hours=2)),
            propose="on",
            vote_threshold="20",
            voting_deadline=local(starts - timedelta(days=3)),
        ),
    )

    event = Event.objects.get()
    assert response.status_code == 302
    assert (event.status, event.vote_threshold, event.published_at) == (Status.PROPOSED, 20, None)
    assert flashed(response) == ["The event is proposed: customers vote for it in the app."]


def test_invalid_terms_are_refused_at_their_fields(client, login, owner):
    login(owner)
    starts = timezone.now() + timedelta(days=5)

    backwards = client.post("/portal/events/new/", form_data(ends_at=local(starts - timedelta(hours=1))))
    past = client.post(
        "/portal/events/new/",
        form_data(starts_at=local(timezone.now() - timedelta(days=1)), ends_at=local(starts)),
    )
    late = client.post(
        "/portal/events/new/",
        form_data(
            starts_at=local(starts),
            ends_at=local(starts + timedelta(hours=1)),
            registration_deadline=local(starts + timedelta(minutes=30)),
        ),
    )
    no_threshold = client.post("/portal/events/new/", form_data(propose="on", voting_deadline=local(starts)))

    assert backwards.status_code == 400
    assert backwards.context["form"].errors == {"ends_at": ["The event must end after it starts."]}
    assert "The event must end after it starts." in backwards.content.decode()
    assert past.status_code == 400
    assert past.context["form"].errors["starts_at"] == ["The event must start in the future."]
    assert late.context["form"].errors == {"registration_deadline": ["Registration must close by the start."]}
    assert no_threshold.context["form"].errors["vote_threshold"] == ["How many votes for it should publish the event?"]
    assert not Event.objects.exists()


def test_an_inactive_co_host_cannot_be_chosen(client, login, owner):
    sleeping = BusinessFactory(name="Закрытая пекарня", is_active=False)
    login(owner)

    response = client.post("/portal/events/new/", form_data(co_hosts=[str(sleeping.pk)]))

    assert response.status_code == 400
    assert "co_hosts" in response.context["form"].errors
    assert not Event.objects.exists()


def test_a_cashier_cannot_make_an_event(client, login, cashier):
    login(cashier)

    assert client.get("/portal/events/new/").status_code == 403
    response = client.post("/portal/events/new/", form_data())

    assert response.status_code == 403
    assert "Not allowed" in response.content.decode()
    assert not Event.objects.exists()


# --- Changes -------------------------------------------------------------------------------------


def edit_data(event, **overrides) -> dict:
    data = {
        "title": event.title,
        "description": event.description,
        "category": event.category,
        "starts_at": local(event.starts_at),
        "ends_at": local(event.ends_at),
        "place": event.place,
        "latitude": "" if event.latitude is None else str(event.latitude),
        "longitude": "" if event.longitude is None else str(event.longitude),
        "capacity": str(event.capacity),
        "registration_deadline": "",
        "price": str(event.price),
        "attendance_bonus": str(event.attendance_bonus),
    }
    return data | overrides


def test_the_edit_form_is_prefilled_on_the_business_clock(client, login, owner, business_a):
    event = make_event(business_a, owner, capacity=7)
    login(owner)

    response = client.get(f"/portal/events/{event.pk}/edit/")

    assert response.status_code == 200
    page = response.content.decode()
    assert f'value="{local(event.starts_at)}"' in page
    assert 'name="capacity" value="7"' in page
    assert "co_hosts" not in response.context["form"].fields  # fixed when the event is made


def test_only_the_changed_fields_go_to_the_service(client, login, owner, business_a, monkeypatch):
    event = make_event(business_a, owner)
    seen = []
    real = services.update_event

    def spy(event, changes, *, by):
        seen.append(changes)
        return real(event, changes, by=by)

    monkeypatch.setattr(services, "update_event", spy)
    login(owner)

    unchanged = client.post(f"/portal/events/{event.pk}/edit/", edit_data(event))
    changed = client.post(f"/portal/events/{event.pk}/edit/", edit_data(event, title="Дегустация чая"))

    assert flashed(unchanged) == ["Nothing was changed."]
    assert seen == [{"title": "Дегустация чая"}]
    assert changed.status_code == 302 and changed["Location"] == f"/portal/events/{event.pk}/"
    event.refresh_from_db()
    assert event.title == "Дегустация чая"


def test_a_running_event_changes_only_its_end_and_description(client, login, owner, business_a):
    event = make_event(business_a, owner, starts_in=timedelta(hours=1), hours=2)
    with time_machine.travel(event.starts_at + timedelta(minutes=10), tick=False):
        login(owner)
        form = client.get(f"/portal/events/{event.pk}/edit/").context["form"]
        new_end = event.ends_at + timedelta(hours=1)

        response = client.post(
            f"/portal/events/{event.pk}/edit/", edit_data(event, title="Другое", ends_at=local(new_end))
        )

    assert [name for name, field in form.fields.items() if not field.disabled] == ["description", "ends_at"]
    assert response.status_code == 302
    event.refresh_from_db()
    assert event.title == "Дегустация кофе"  # a disabled field keeps its value
    assert event.ends_at == new_end.replace(second=0, microsecond=0)


def test_seats_cannot_drop_below_those_taken(client, login, owner, business_a):
    event = make_event(business_a, owner, capacity=3)
    for n in range(2):
        services.register_for_event(customer(f"+791655500{n}1"), event)
    login(owner)

    response = client.post(f"/portal/events/{event.pk}/edit/", edit_data(event, capacity="1"))

    assert response.status_code == 400
    assert response.context["form"].errors == {
        "capacity": ["2 customers already hold seats: the event needs at least as many."]
    }
    event.refresh_from_db()
    assert event.capacity == 3


def test_more_seats_go_to_the_waitlist_in_its_order(client, login, manager, owner, business_a):
    event = make_event(business_a, owner, capacity=1)
    first, second, third = (customer(f"+791666600{n}1") for n in range(3))
    for person in (first, second, third):
        services.register_for_event(person, event)
    login(manager)

    response = client.post(f"/portal/events/{event.pk}/edit/", edit_data(event, capacity="2"))

    assert response.status_code == 302
    assert flashed(response) == ["The event is changed.", "1 customer from the waitlist got a seat."]
    statuses = dict(Registration.objects.filter(event=event).values_list("customer__phone", "status"))
    assert statuses == {first.phone: "registered", second.phone: "registered", third.phone: "waitlisted"}
    event.refresh_from_db()
    assert (event.capacity, event.registered_count) == (2, 2)


def test_an_event_no_longer_changeable_goes_back_to_its_page(client, login, owner, business_a, monkeypatch):
    cancelled = services.cancel_event(make_event(business_a, owner), by=owner)
    racing = make_event(business_a, owner, title="Гонка")
    login(owner)

    closed = client.get(f"/portal/events/{cancelled.pk}/edit/")
    assert flashed(closed) == ["Only an upcoming event can be changed."]
    assert "Only an upcoming event can be changed." in client.get(closed["Location"]).content.decode()

    def refuse(event, changes, *, by):  # started (or cancelled) between the page and the POST
        raise services.EventNotChangeable("The event has started: only its end and description can change.")

    monkeypatch.setattr(services, "update_event", refuse)
    raced = client.post(f"/portal/events/{racing.pk}/edit/", edit_data(racing, title="Новое"))

    assert closed.status_code == 302 and closed["Location"] == f"/portal/events/{cancelled.pk}/"
    assert raced.status_code == 302 and raced["Location"] == f"/portal/events/{racing.pk}/"
    assert flashed(raced) == ["The event has started: only its end and description can change."]
    racing.refresh_from_db()
    assert racing.title == "Гонка"


# --- Publish and cancel --------------------------------------------------------------------------


def test_a_proposal_is_published_by_the_host(client, login, owner, business_a):
    proposal = make_event(
        business_a, owner, propose=True, vote_threshold=10, voting_deadline=timezone.now() + timedelta(days=1)
    )
    login(owner)
    detail = client.get(f"/portal/events/{proposal.pk}/").content.decode()
    assert f'action="/portal/events/{proposal.pk}/publish/"' in detail

    response = client.post(f"/portal/events/{proposal.pk}/publish/")

    assert response.status_code == 302 and response["Location"] == f"/portal/events/{proposal.pk}/"
    assert flashed(response) == ["The event is published: customers can register; those who voted are told."]
    proposal.refresh_from_db()
    assert proposal.status == Status.PUBLISHED
    client.get(response["Location"])  # the message is shown
    again = client.post(f"/portal/events/{proposal.pk}/publish/")
    assert flashed(again) == ["Only a proposed event can be published."]


def test_publish_and_cancel_are_post_only(client, login, owner, business_a):
    event = make_event(business_a, owner)
    login(owner)

    assert client.get(f"/portal/events/{event.pk}/cancel/").status_code == 405
    assert client.get(f"/portal/events/{event.pk}/publish/").status_code == 405
    event.refresh_from_db()
    assert event.status == Status.PUBLISHED


def test_cancelling_returns_every_ticket_bonuses(client, login, owner, business_a):
    payer, waiting = customer("+79167770001"), customer("+79167770002", first_name="Олег")
    for person in (payer, waiting):
        adjust_balance(user=person, amount=D("500.00"), reason="test", created_by=None)
    event = make_event(business_a, owner, capacity=1, price=D("200"))
    services.register_for_event(payer, event)
    services.register_for_event(waiting, event)
    assert BonusAccount.objects.get(user=payer).balance == D("300.00")
    login(owner)
    detail = client.get(f"/portal/events/{event.pk}/").content.decode()
    assert "every ticket's bonuses are returned in full" in detail
    assert "2 customers with a seat or on the waitlist are told" in detail

    response = client.post(f"/portal/events/{event.pk}/cancel/")

    assert response.status_code == 302 and response["Location"] == f"/portal/events/{event.pk}/"
    assert flashed(response) == [
        "The event is cancelled: every registered customer gets the ticket's bonuses back and is told."
    ]
    event.refresh_from_db()
    assert (event.status, event.registered_count, event.close_reason) == (Status.CANCELLED, 0, "by_partner")
    assert BonusAccount.objects.get(user=payer).balance == D("500.00")
    assert BonusAccount.objects.get(user=waiting).balance == D("500.00")
    tickets = Registration.objects.filter(event=event).order_by("registered_at")
    assert [(t.status, t.refunded_amount) for t in tickets] == [("cancelled", D("200.00")), ("cancelled", D("0.00"))]
    page = client.get(response["Location"]).content.decode()  # the message is shown
    assert f'action="/portal/events/{event.pk}/cancel/"' not in page
    again = client.post(f"/portal/events/{event.pk}/cancel/")
    [refusal] = flashed(again)
    assert refusal.startswith("The event is already ")


# --- The detail and its CSV ------------------------------------------------------------------------


@pytest.fixture
def full_house(tonight, owner, cashier, irina):
    """Tonight's three seats taken (Irina checked in by the cashier), one customer waiting."""
    oleg = customer("+79161110002", first_name="Олег", last_name="Иванов")
    nina = customer("+79161110003", first_name="=Нина", last_name="")  # a name a spreadsheet would run
    pavel = customer("+79161110004", first_name="Павел", last_name="Ким")
    tickets = [services.register_for_event(person, tonight) for person in (irina, oleg, nina, pavel)]
    services.check_in_by_code(tickets[0].ticket_code, event=tonight, by=cashier)
    return {"event": tonight, "tickets": tickets, "waiting": pavel}


def test_the_detail_shows_terms_registrations_and_the_waitlist(client, login, owner, full_house, irina):
    event = full_house["event"]
    login(owner)

    response = client.get(f"/portal/events/{event.pk}/")

    assert response.status_code == 200
    page = response.content.decode()
    assert irina.phone not in page
    assert mask_phone(irina.phone) in page
    assert "Ирина Смирнова" in page
    assert "Анна Петрова" in page  # who checked her in
    assert [r.customer.first_name for r in response.context["page"]] == ["Ирина", "Олег", "=Нина"]
    assert [r.customer.first_name for r in response.context["waitlist"]] == ["Павел"]
    assert response.context["arrived"] == 1
    assert f'href="/portal/events/{event.pk}/edit/"' in page
    assert f'action="/portal/events/{event.pk}/cancel/"' in page
    assert f'href="/portal/events/{event.pk}/registrations.csv"' in page
    assert "50.00\u00a0₽" in page  # the bonus for coming


def test_a_cashier_sees_the_detail_without_the_managers_buttons(client, login, cashier, full_house):
    event = full_house["event"]
    login(cashier)

    response = client.get(f"/portal/events/{event.pk}/")

    page = response.content.decode()
    assert response.status_code == 200
    assert f'href="/portal/events/{event.pk}/check-in/"' in page
    assert "/edit/" not in page and "/cancel/" not in page and "registrations.csv" not in page
    assert client.get(f"/portal/events/{event.pk}/registrations.csv").status_code == 403


def test_the_csv_has_the_registrations_then_the_waitlist(client, login, manager, full_house, irina):
    event = full_house["event"]
    login(manager)

    response = client.get(f"/portal/events/{event.pk}/registrations.csv")

    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"] == f'attachment; filename="event-{event.pk}-registrations.csv"'
    text = response.content.decode("utf-8")
    assert text.startswith("\ufeff")
    assert irina.phone not in text
    rows = list(csv.reader(io.StringIO(text.lstrip("\ufeff"))))
    assert rows[0] == [
        "list",
        "position",
        "phone",
        "name",
        "status",
        "status_name",
        "registered_at",
        "waitlisted_at",
        "paid",
        "refunded",
        "checked_in_at",
        "checked_in_by",
    ]
    registered = EVENING.strftime("%Y-%m-%d %H:%M")
    assert rows[1] == [
        "registration",
        "",
        "'" + mask_phone(irina.phone),  # "+…" is not run as a formula
        "Ирина Смирнова",
        "checked_in",
        "Came",
        registered,
        "",
        "0.00",
        "0.00",
        registered,
        "Анна Петрова",
    ]
    assert [row[3] for row in rows[1:]] == ["Ирина Смирнова", "Олег Иванов", "'=Нина", "Павел Ким"]
    assert rows[4][:2] == ["waitlist", "1"]
    assert (rows[4][4], rows[4][7]) == ("waitlisted", registered)
    assert len(rows) == 5


# --- The door ------------------------------------------------------------------------------------


def scan(client, event, code):
    return client.post(f"/portal/events/{event.pk}/check-in/", {"code": code})


def test_the_first_scan_checks_in_and_gives_the_bonus(client, login, owner, tonight, irina):
    ticket = services.register_for_event(irina, tonight)
    login(owner)
    door = client.get(f"/portal/events/{tonight.pk}/check-in/").content.decode()
    assert "autofocus" in door and 'autocomplete="off"' in door
    assert "0 of 1 arrived" in door

    response = scan(client, tonight, ticket.ticket_code)

    assert response.status_code == 200
    assert response.context["answer"]["kind"] == "ok"
    page = response.content.decode()
    assert "Checked in" in page
    assert "Ирина Смирнова" in page and mask_phone(irina.phone) in page
    assert "Bonus for coming given: 50.00\u00a0₽" in page
    assert "1 of 1 arrived" in page
    assert not response.context["form"].is_bound  # the input is empty for the next scan
    assert ticket.ticket_code not in page
    ticket.refresh_from_db()
    assert (ticket.status, ticket.checked_in_at, ticket.checked_in_by) == (RegStatus.CHECKED_IN, EVENING, owner)
    assert BonusAccount.objects.get(user=irina).balance == D("50.00")


def test_the_second_scan_says_already_and_gives_nothing_more(client, login, owner, cashier, tonight, irina):
    ticket = services.register_for_event(irina, tonight)
    login(cashier)
    scan(client, tonight, ticket.ticket_code)
    login(owner)

    response = scan(client, tonight, ticket.ticket_code)

    assert response.status_code == 200
    assert response.context["answer"]["kind"] == "already"
    page = response.content.decode()
    assert "Already checked in at 18:00 by Анна Петрова" in page
    assert "door-already" in page
    assert BonusAccount.objects.get(user=irina).balance == D("50.00")
    ticket.refresh_from_db()
    assert ticket.checked_in_by.first_name == "Анна"


def test_a_ticket_of_another_event_is_refused(client, login, owner, business_a, tonight, irina):
    other = make_event(business_a, owner, title="Другое", starts_in=timedelta(minutes=20))
    ticket = services.register_for_event(irina, other)
    login(owner)

    response = scan(client, tonight, ticket.ticket_code)
    unknown = scan(client, tonight, "NOSUCHCODE")

    assert response.status_code == 200
    assert response.context["answer"] == {"kind": "refused", "message": "This ticket is for another event."}
    assert "This ticket is for another event." in response.content.decode()
    assert "door-refused" in response.content.decode()
    assert unknown.context["answer"]["message"] == "No ticket with this code."
    ticket.refresh_from_db()
    assert ticket.status == RegStatus.REGISTERED


def test_a_scanned_qr_or_a_code_typed_in_lowercase_with_dashes_is_accepted(client, login, owner, tonight, irina):
    scanned = services.register_for_event(irina, tonight)
    typed = services.register_for_event(customer("+79161110009", first_name="Юлия"), tonight)
    login(owner)
    code = typed.ticket_code.lower()

    by_qr = scan(client, tonight, scanned.qr_payload)
    by_hand = scan(client, tonight, f" {code[:3]}-{code[3:6]} {code[6:]} ")

    assert by_qr.context["answer"]["kind"] == "ok"
    assert by_hand.context["answer"]["kind"] == "ok"
    assert Registration.objects.filter(event=tonight, status=RegStatus.CHECKED_IN).count() == 2
    assert "2 of 2 arrived" in by_hand.content.decode()


def test_the_door_is_not_open_yet(client, login, owner, business_a, evening, irina):
    later = make_event(business_a, owner, starts_in=timedelta(days=1))  # 16.05 18:00; the door opens at 17:00
    ticket = services.register_for_event(irina, later)
    login(owner)

    response = scan(client, later, ticket.ticket_code)

    assert response.status_code == 200
    assert response.context["answer"] == {"kind": "refused", "message": "Check-in opens at 16.05 17:00."}
    ticket.refresh_from_db()
    assert ticket.status == RegStatus.REGISTERED


def test_an_empty_code_asks_for_one(client, login, owner, tonight):
    login(owner)

    response = scan(client, tonight, "  ")

    assert response.status_code == 400
    assert response.context["form"].errors == {"code": ["Scan the ticket's QR code or type its code."]}
    assert response.context["answer"] is None


def test_a_cashier_checks_in(client, login, cashier, tonight, irina):
    ticket = services.register_for_event(irina, tonight)
    login(cashier)

    response = scan(client, tonight, ticket.ticket_code)

    assert response.context["answer"]["kind"] == "ok"
    ticket.refresh_from_db()
    assert (ticket.status, ticket.checked_in_by) == (RegStatus.CHECKED_IN, cashier)


# --- Co-hosts ------------------------------------------------------------------------------------


@pytest.fixture
def co_hosted(evening, business_a, business_b, owner, irina):
    """A's event tonight, co-hosted by B, Irina registered."""
    event = make_event(
        business_a, owner, starts_in=timedelta(minutes=30), co_hosts=[business_b], attendance_bonus=D("20")
    )
    ticket = services.register_for_event(irina, event)
    return event, ticket


@pytest.mark.parametrize("who", ["owner_b", "cashier_b"])
def test_co_host_staff_see_the_event_and_check_in(client, login, request, co_hosted, who):
    event, ticket = co_hosted
    person = request.getfixturevalue(who)
    login(person)

    listing = client.get("/portal/events/")
    detail = client.get(f"/portal/events/{event.pk}/")
    response = scan(client, event, ticket.ticket_code)

    assert [e.pk for e in listing.context["groups"][1]["events"]] == [event.pk]
    assert detail.status_code == 200
    page = detail.content.decode()
    assert "You co-host this event; the host is Кофейня «Зерно»." in page
    assert "/edit/" not in page and "/cancel/" not in page and "/publish/" not in page
    assert response.context["answer"]["kind"] == "ok"
    ticket.refresh_from_db()
    assert ticket.checked_in_by == person


def test_co_host_managers_cannot_change_publish_or_cancel(
    client, login, owner_b, co_hosted, business_a, business_b, owner
):
    event, ticket = co_hosted
    proposal = make_event(
        business_a,
        owner,
        title="Предложение",
        co_hosts=[business_b],
        propose=True,
        vote_threshold=3,
        voting_deadline=timezone.now() + timedelta(minutes=20),
    )
    login(owner_b)

    responses = [
        client.get(f"/portal/events/{event.pk}/edit/"),
        client.post(f"/portal/events/{event.pk}/edit/", edit_data(event, title="Чужое")),
        client.post(f"/portal/events/{event.pk}/cancel/"),
        client.post(f"/portal/events/{proposal.pk}/publish/"),
    ]

    for response in responses:
        assert response.status_code == 403
        assert "Only the host's owners and managers can change, publish or cancel an event." in (
            response.content.decode()
        )
    event.refresh_from_db()
    proposal.refresh_from_db()
    ticket.refresh_from_db()
    assert (event.status, event.title, ticket.status) == (Status.PUBLISHED, "Дегустация кофе", RegStatus.REGISTERED)
    assert proposal.status == Status.PROPOSED
    # The co-host's managers do get the lists.
    assert client.get(f"/portal/events/{event.pk}/registrations.csv").status_code == 200
