"""At the cash desk: the owner checks a customer's bonuses and records a purchase paid partly
with them; the receipt is on the page, the purchase and its redemption in the ledger."""

from decimal import Decimal

import pytest

from loyalty import services
from loyalty.models import BonusAccount, LedgerEntry, Transaction
from tests.e2e.conftest import expect
from tests.factories import UserFactory

pytestmark = pytest.mark.e2e

CUSTOMER = "+79161234567"


@pytest.fixture
def customer(tiers):
    """A customer of the circle holding 400 bonuses."""
    person = UserFactory(phone=CUSTOMER, first_name="Вера", last_name="Соколова")
    services.adjust_balance(user=person, amount=Decimal("400"), reason="test", created_by=None)
    return person


def test_cashier_page_records_a_purchase_paid_partly_with_bonuses(page, shot, log_in, owner, business_a, customer):
    log_in(owner, next="/portal/cashier/")
    expect(page.get_by_role("heading", name="Record a purchase", level=1)).to_be_visible()
    shot("cashier")

    page.get_by_label("Phone").fill("8 916 123-45-67")
    page.get_by_label("Check amount").fill("1000")
    page.get_by_role("button", name="Check bonuses").click()
    quote = page.locator("#quote")
    expect(quote.get_by_role("heading")).to_have_text("+7\u00a0916\u00a0123-45-67")
    expect(quote).to_contain_text("400.00\u00a0₽")  # the balance
    expect(quote).to_contain_text("Bonuses can pay up to 300.00\u00a0₽ of this check.")  # 30 % of the check
    shot("cashier-quote")

    page.get_by_label("Pay with bonuses").fill("250")
    page.get_by_role("button", name="Record the purchase").click()

    receipt = page.locator("#receipt")
    expect(receipt.get_by_role("heading", name="Recorded")).to_be_visible()
    expect(page.locator(".messages")).to_contain_text("The purchase is recorded.")
    expect(receipt.locator("dt:has-text('Check') + dd")).to_have_text("1,000.00\u00a0₽")
    expect(receipt.locator("dt:has-text('Paid with bonuses') + dd")).to_have_text("250.00\u00a0₽")
    expect(receipt.locator("dt:has-text('To pay in money') + dd")).to_have_text("750.00\u00a0₽")
    shot("cashier-receipt")

    purchase = Transaction.objects.get(business=business_a)
    assert purchase.customer == customer
    assert purchase.source == Transaction.Source.CASHIER
    assert purchase.recorded_by == owner
    assert (purchase.gross_amount, purchase.bonuses_redeemed, purchase.paid_amount) == (
        Decimal("1000.00"),
        Decimal("250.00"),
        Decimal("750.00"),
    )
    assert page.url.endswith(f"/portal/cashier/?receipt={purchase.pk}")
    redemptions = LedgerEntry.objects.filter(transaction=purchase, kind=LedgerEntry.Kind.REDEMPTION)
    assert redemptions.exists()
    assert sum(entry.amount for entry in redemptions) == Decimal("-250.00")
    assert all(entry.business == business_a for entry in redemptions)
    account = BonusAccount.objects.get(user=customer)
    expect(receipt.locator("dt:has-text('Balance now') + dd")).to_have_text(
        f"{account.balance:,.2f}\u00a0₽"  # 150 left, plus what the purchase accrued
    )
    assert account.balance == Decimal("150.00") + purchase.bonuses_accrued

    page.get_by_role("link", name="Open the purchase").click()
    expect(page.locator("main")).to_contain_text("250.00\u00a0₽")
    shot("purchase")
