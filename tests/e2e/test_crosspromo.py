"""Cross-promo: the owner proposes a chain to another partner through the portal's form; the
chain exists as a proposal, going out from A to B."""

import re
from decimal import Decimal

import pytest

from crosspromo.models import CrossPromoChain
from tests.e2e.conftest import expect

pytestmark = pytest.mark.e2e


def test_owner_proposes_a_cross_promo_chain_to_another_partner(page, shot, log_in, owner, business_a, business_b):
    log_in(owner, next="/portal/crosspromo/")
    expect(page.locator(".topbar nav a.active")).to_have_text("Cross-promo")
    expect(page.get_by_role("heading", name="Cross-promo", level=1)).to_be_visible()
    expect(page.locator("main")).to_contain_text("No chains yet.")
    shot("crosspromo")

    page.get_by_role("link", name="Propose a chain", exact=True).click()
    expect(page.get_by_role("heading", name="Propose a chain", level=1)).to_be_visible()
    form = page.locator("#chain-form")
    form.get_by_label("Partner", exact=True).select_option(label="Салон «Лён»")
    form.get_by_label("Title").fill("Кофе → стрижка")
    form.get_by_label("Purchase here from, ₽").fill("500")
    form.get_by_label("Reward at the partner").select_option(label="Percentage discount")
    form.get_by_label("Reward value").fill("15")
    form.get_by_label("Largest discount, ₽").fill("300")
    form.get_by_label("Coupons in all").fill("100")
    form.get_by_label("Budget, ₽").fill("20000")
    form.get_by_label("Only customers who never bought at the partner").check()
    shot("crosspromo-new")
    form.get_by_role("button", name="Propose").click()

    expect(page).to_have_url(re.compile(r"/portal/crosspromo/\d+/$"))
    expect(page.locator(".messages")).to_contain_text("The chain is proposed")
    expect(page.get_by_role("heading", level=1)).to_contain_text("Кофейня «Зерно» → Салон «Лён»")
    expect(page.get_by_role("heading", level=1).locator(".badge")).to_have_text("Proposed")
    expect(page.locator("#terms")).to_contain_text("15% off at Салон «Лён» (up to 300.00\u00a0₽)")
    shot("crosspromo-chain")

    chain = CrossPromoChain.objects.get()
    assert page.url.endswith(f"/portal/crosspromo/{chain.pk}/")
    assert (chain.source, chain.target, chain.status) == (business_a, business_b, CrossPromoChain.Status.PROPOSED)
    assert chain.proposed_by == owner
    assert chain.title == "Кофе → стрижка"
    assert (chain.reward_kind, chain.reward_value, chain.max_discount) == ("percent", Decimal("15.00"), Decimal("300"))
    assert (chain.min_purchase_amount, chain.total_limit, chain.budget) == (Decimal("500"), 100, Decimal("20000"))
    assert chain.new_to_target_only and not chain.first_purchase_only

    page.get_by_role("link", name="← Cross-promo").click()
    proposed = page.locator("#status-proposed")
    expect(proposed.locator(f"#chain-{chain.pk}")).to_contain_text("Салон «Лён»")
    expect(proposed.locator(f"#chain-{chain.pk}")).to_contain_text("Your customers go to the partner")
    expect(proposed.get_by_role("button", name="Withdraw the proposal")).to_be_visible()
    shot("crosspromo-list")
