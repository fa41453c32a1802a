"""Events: the owner creates an event through the portal, a customer registers (as the app
does, through the service), the event's start comes near so the door is open, and the owner
checks the ticket in at the door by typing its code and pressing Enter; the same ticket again
is "already"."""

import re
from datetime import timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from django.conf import settings
from django.utils import timezone

from events import services as events
from events.models import Event, Registration
from loyalty.models import BonusAccount
from tests.e2e.conftest import expect
from tests.factories import UserFactory

pytestmark = pytest.mark.e2e


def test_owner_creates_an_event_and_checks_a_ticket_in_at_the_door(page, shot, log_in, owner, business_a):
    log_in(owner, next="/portal/events/")
    expect(page.get_by_role("heading", name="Events", level=1)).to_be_visible()
    shot("events")

    page.get_by_role("link", name="New event").click()
    expect(page.get_by_role("heading", name="New event", level=1)).to_be_visible()
    starts = timezone.localtime(timezone.now(), ZoneInfo(business_a.time_zone)) + timedelta(days=3)
    form = page.locator("#event-form")
    form.get_by_label("Title").fill("Дегустация зерна")
    form.get_by_label("Description").fill("Пробуем три обжарки.")
    form.get_by_label("Starts at").fill(starts.strftime("%Y-%m-%dT19:00"))
    form.get_by_label("Ends at").fill(starts.strftime("%Y-%m-%dT21:00"))
    form.get_by_label("Seats").fill("20")
    form.get_by_label("Bonus for coming").fill("50")
    shot("event-new")
    form.get_by_role("button", name="Create the event").click()

    expect(page).to_have_url(re.compile(r"/portal/events/\d+/$"))
    expect(page.locator(".messages")).to_contain_text("The event is published")
    expect(page.get_by_role("heading", level=1)).to_contain_text("Дегустация зерна")
    expect(page.locator("#terms")).to_contain_text(starts.strftime("%d.%m.%Y 19:00"))
    shot("event")
    event = Event.objects.get()
    assert (event.business, event.status, event.capacity) == (business_a, Event.Status.PUBLISHED, 20)
    assert event.attendance_bonus == Decimal("50.00")

    # A customer registers in the app; the start comes near, within the door's opening.
    customer = UserFactory(phone="+79161112233", first_name="Вера", last_name="Соколова")
    ticket = events.register_for_event(customer, event)
    assert ticket.status == Registration.Status.REGISTERED
    soon = timezone.now() + timedelta(minutes=settings.EVENTS_CHECKIN_OPENS_MINUTES // 2)
    Event.objects.filter(pk=event.pk).update(
        starts_at=soon, registration_deadline=soon, ends_at=soon + timedelta(hours=2)
    )

    page.reload()
    page.get_by_role("link", name="Check-in at the door").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Check-in: Дегустация зерна")
    arrivals = page.locator("#arrivals")
    expect(arrivals).to_have_text("0 of 1 arrived")
    code = page.get_by_label("Ticket code")
    expect(code).to_be_focused()
    shot("checkin")

    # Typed as a person would read it off the phone: lower case, in two halves with a dash.
    code.fill(f"{ticket.ticket_code[:5].lower()}-{ticket.ticket_code[5:].lower()}")
    code.press("Enter")

    answer = page.locator("#answer")
    expect(answer).to_have_class(re.compile(r"\bdoor-ok\b"))
    expect(answer.locator(".verdict")).to_have_text("✓ Checked in")
    expect(answer).to_contain_text("Вера Соколова")
    expect(answer).to_contain_text("Bonus for coming given: 50.00\u00a0₽")
    expect(answer).to_have_css("border-top-color", "rgb(42, 111, 78)")  # green: --brand, #2a6f4e
    expect(arrivals).to_have_text("1 of 1 arrived")
    expect(page.get_by_label("Ticket code")).to_have_value("")
    expect(page.get_by_label("Ticket code")).to_be_focused()
    shot("checkin-ok")
    ticket.refresh_from_db()
    assert ticket.status == Registration.Status.CHECKED_IN
    assert ticket.checked_in_by == owner
    assert BonusAccount.objects.get(user=customer).balance == Decimal("50.00")

    page.get_by_label("Ticket code").fill(ticket.ticket_code)
    page.get_by_label("Ticket code").press("Enter")

    expect(answer).to_have_class(re.compile(r"\bdoor-already\b"))
    expect(answer).to_have_css("border-top-color", "rgb(224, 168, 0)")  # amber: #e0a800
    expect(answer.locator(".verdict")).to_contain_text("Already checked in at")
    expect(answer.locator(".verdict")).to_contain_text("by Ольга Петрова")
    expect(arrivals).to_have_text("1 of 1 arrived")
    shot("checkin-already")
    assert BonusAccount.objects.get(user=customer).balance == Decimal("50.00")  # the bonus once
