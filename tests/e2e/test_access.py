"""Who may go where: a cashier cannot change the program (the "not allowed" page, 403) nor
open the managers' sections, but works the cash desk; one business reaches none of another's
purchases, customers, chains or events (the "page not found" page, 404), and another
business's ticket is refused at its own door."""

import re
import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from crosspromo import services as crosspromo
from events import services as events
from events.models import Registration
from loyalty import services as loyalty
from loyalty.models import LoyaltyProgram, ProgramChange, Transaction
from tests.e2e.conftest import expect
from tests.factories import BusinessFactory, LoyaltyProgramFactory

pytestmark = pytest.mark.e2e


def test_cashier_cannot_change_the_program_but_records_purchases(page, shot, log_in, cashier, business_a):
    log_in(cashier)
    # The cashier's home is the live overview; the managers' sections are not in the menu.
    expect(page.locator("#stat-today")).to_be_visible()
    expect(page.locator(".topbar .role")).to_have_text("Cashier")
    nav = page.locator(".topbar nav")
    expect(nav.get_by_role("link", name="Program")).to_be_visible()
    for section in ("Cross-promo", "Settlement", "API keys", "Campaigns"):
        expect(nav.get_by_role("link", name=section)).to_have_count(0)
    shot("overview")

    nav.get_by_role("link", name="Program").click()
    expect(page.get_by_role("heading", name="Loyalty program", level=1)).to_be_visible()
    expect(page.locator("main")).to_contain_text("Only the owner or a manager can change the terms.")
    expect(page.get_by_role("button", name="Save")).to_have_count(0)
    expect(page.get_by_label("Accrual rate, %")).to_be_disabled()
    shot("program-read-only")

    # The settings form sent anyway (as from a page kept open since an owner's visit, with
    # the cashier's own CSRF token): the "not allowed" page.
    with page.expect_response(re.compile(r"/portal/program/edit/$")) as sent:
        page.evaluate(
            """() => {
                const form = document.createElement("form");
                form.method = "post";
                form.action = "/portal/program/edit/";
                const fields = {
                    csrfmiddlewaretoken: document.querySelector("input[name=csrfmiddlewaretoken]").value,
                    accrual_rate: "50", max_redeem_share: "90", bonus_lifetime_days: "30", hold_days: "0",
                };
                for (const [name, value] of Object.entries(fields)) {
                    const input = document.createElement("input");
                    input.type = "hidden"; input.name = name; input.value = value;
                    form.appendChild(input);
                }
                document.body.appendChild(form);
                form.submit();
            }"""
        )
    assert sent.value.status == 403
    expect(page.get_by_role("heading", name="Not allowed")).to_be_visible()
    expect(page.locator("main")).to_contain_text("Your role at this business (Cashier) does not allow this.")
    shot("program-edit-forbidden")
    program = LoyaltyProgram.objects.get(business=business_a)
    assert (program.accrual_rate, program.max_redeem_share) == (Decimal("5.00"), Decimal("30.00"))
    assert not ProgramChange.objects.exists()

    # A managers' page opened by its address: the same.
    response = page.goto("/portal/crosspromo/")
    assert response.status == 403
    expect(page.get_by_role("heading", name="Not allowed")).to_be_visible()
    shot("crosspromo-forbidden")

    page.get_by_role("link", name="Back to the overview").click()
    expect(page.locator("#stat-today")).to_be_visible()
    page.locator(".topbar nav").get_by_role("link", name="Cashier", exact=True).click()
    expect(page.get_by_role("heading", name="Record a purchase", level=1)).to_be_visible()
    shot("cashier")
    page.get_by_label("Phone").fill("+79165550011")
    page.get_by_label("Check amount").fill("480")
    page.get_by_role("button", name="Record the purchase").click()
    expect(page.locator("#receipt").get_by_role("heading", name="Recorded")).to_be_visible()
    expect(page.locator("#receipt dt:has-text('To pay in money') + dd")).to_have_text("480.00\u00a0₽")
    shot("cashier-receipt")
    purchase = Transaction.objects.get(business=business_a)
    assert (purchase.customer.phone, purchase.gross_amount) == ("+79165550011", Decimal("480.00"))
    assert (purchase.source, purchase.recorded_by) == (Transaction.Source.CASHIER, cashier)


@pytest.fixture
def b_objects(business_a, business_b, owner_b):
    """B's purchase (its customer bought only at B), B's chain to a third partner, and B's
    event with that customer's ticket, its door open."""
    business_c = BusinessFactory(name="Студия «Пульс»", slug="puls")
    LoyaltyProgramFactory(business=business_c)
    purchase = loyalty.record_transaction(
        business=business_b, external_id=f"pos-{uuid.uuid4().hex[:8]}", phone="+79991110003", amount=Decimal("300")
    ).transaction
    chain = crosspromo.create_chain(
        crosspromo.ChainConfig(source=business_b, target=business_c, reward_kind="fixed", reward_value=Decimal("200"))
    )
    starts = timezone.now() + timedelta(minutes=30)
    event = events.create_event(
        events.EventCreate(
            business=business_b, title="Вечер у Льна", starts_at=starts, ends_at=starts + timedelta(hours=2), capacity=5
        ),
        owner_b,
    )
    ticket = events.register_for_event(purchase.customer, event)
    return {"purchase": purchase, "customer": purchase.customer, "chain": chain, "event": event, "ticket": ticket}


def test_one_business_cannot_reach_another_business_pages(page, shot, log_in, owner, business_a, b_objects):
    own = loyalty.record_transaction(
        business=business_a, external_id="pos-own", phone="+79991110001", amount=Decimal("1000")
    ).transaction
    starts = timezone.now() + timedelta(minutes=30)
    own_event = events.create_event(
        events.EventCreate(
            business=business_a, title="Утро в Зерне", starts_at=starts, ends_at=starts + timedelta(hours=1), capacity=5
        ),
        owner,
    )
    log_in(owner, next="/portal/transactions/")
    expect(page.locator("main")).to_contain_text("+7\u00a0999\u00a0111-00-01")
    expect(page.locator("main")).not_to_contain_text("+7\u00a0999\u00a0111-00-03")
    shot("transactions")
    # The same kind of address, A's own object: it opens.
    assert page.goto(f"/portal/transactions/{own.pk}/").status == 200
    shot("own-transaction")

    b = b_objects
    others = {
        "transaction": f"/portal/transactions/{b['purchase'].pk}/",
        "customer": f"/portal/customers/{b['customer'].pk}/",
        "chain": f"/portal/crosspromo/{b['chain'].pk}/",
        "event": f"/portal/events/{b['event'].pk}/",
        "event-checkin": f"/portal/events/{b['event'].pk}/check-in/",
    }
    for name, url in others.items():
        response = page.goto(url)
        assert response.status == 404, (name, url, response.status)
        expect(page.get_by_role("heading", name="Page not found")).to_be_visible()
        expect(page.locator("body")).not_to_contain_text("Вечер у Льна")
        shot(f"other-{name}")

    # B's ticket at A's own door: refused, and it stays unchecked.
    page.goto(f"/portal/events/{own_event.pk}/check-in/")
    page.get_by_label("Ticket code").fill(b["ticket"].ticket_code)
    page.get_by_label("Ticket code").press("Enter")
    answer = page.locator("#answer")
    expect(answer).to_have_class(re.compile(r"\bdoor-refused\b"))
    expect(answer).to_contain_text("This ticket is for another event.")
    expect(page.locator("#arrivals")).to_have_text("0 of 0 arrived")
    shot("own-door-other-ticket")
    assert Registration.objects.get(pk=b["ticket"].pk).status == Registration.Status.REGISTERED
