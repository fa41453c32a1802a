"""The portal's Cross-promo section: a proposal, the target's decision, the list both ways,
a chain's detail (only its two partners), recommendations with their reasons; owners and
managers only. And the cashier taking a partner's coupon at the counter."""

from decimal import Decimal

import pytest
from django.contrib.messages import get_messages
from django.urls import resolve

from accounts.models import Membership
from crosspromo import services
from crosspromo.models import Coupon, CrossPromoChain
from crosspromo.services import ChainConfig
from loyalty.models import Transaction
from svoykrug import portal_urls
from tests.factories import BusinessFactory, LoyaltyProgramFactory, MembershipFactory, UserFactory

pytestmark = pytest.mark.django_db

D = Decimal
ANNA = "+79160000001"
Status = CrossPromoChain.Status


def flashed(response) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


@pytest.fixture
def business_c(tiers):
    business = BusinessFactory(name="Студия «Пульс»", slug="puls", category="fitness")
    LoyaltyProgramFactory(business=business, accrual_rate=D("5.00"))
    return business


@pytest.fixture
def owner_c(business_c):
    user = UserFactory(phone="+79990000301")
    MembershipFactory(user=user, business=business_c, role=Membership.Role.OWNER)
    return user


@pytest.fixture
def cashier_b(business_b):
    user = UserFactory(phone="+79990000203")
    MembershipFactory(user=user, business=business_b, role=Membership.Role.CASHIER)
    return user


def propose(source, target, **overrides) -> CrossPromoChain:
    fields = {"reward_kind": "fixed", "reward_value": D("200")} | overrides
    return services.create_chain(ChainConfig(source=source, target=target, **fields))


@pytest.fixture
def running_chain(business_a, business_b):
    """A's customers get 200 ₽ off at B for any purchase at A; accepted by B."""
    return services.accept_chain(propose(business_a, business_b), business=business_b)


def form_data(target, **overrides) -> dict:
    data = {
        "target": str(target.pk),
        "min_purchase_amount": "500",
        "reward_kind": "percent",
        "reward_value": "15",
        "max_discount": "300",
        "min_target_purchase": "1000",
        "coupon_lifetime_days": "30",
        "per_customer_limit": "1",
        "total_limit": "100",
        "budget": "20000",
        "target_share_percent": "50",
        "new_to_target_only": "on",
    }
    return data | overrides


# --- Proposal and decision ----------------------------------------------------------------------


def test_a_proposal_reaches_the_target_who_accepts_it(client, login, owner, owner_b, business_a, business_b):
    login(owner)
    assert client.get("/portal/crosspromo/new/").status_code == 200

    response = client.post("/portal/crosspromo/new/", form_data(business_b))

    chain = CrossPromoChain.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"/portal/crosspromo/{chain.pk}/"
    assert (chain.source, chain.target, chain.status) == (business_a, business_b, Status.PROPOSED)
    assert (chain.reward_kind, chain.reward_value, chain.max_discount) == ("percent", D("15.00"), D("300.00"))
    assert (chain.min_purchase_amount, chain.min_target_purchase) == (D("500.00"), D("1000.00"))
    assert (chain.total_limit, chain.budget, chain.target_share_percent) == (100, D("20000.00"), 50)
    assert chain.new_to_target_only and not chain.first_purchase_only
    assert chain.proposed_by == owner
    # The source sees its proposal going out, and cannot accept it itself.
    listing = client.get("/portal/crosspromo/").content.decode()
    assert "Салон «Лён»" in listing
    assert "Your customers go to the partner" in listing
    assert 'value="accept"' not in listing
    refused = client.post(f"/portal/crosspromo/{chain.pk}/change/", {"action": "accept"})
    assert flashed(refused) == ["Only the partner the chain was proposed to can decide on it."]
    chain.refresh_from_db()
    assert chain.status == Status.PROPOSED

    login(owner_b)
    listing = client.get("/portal/crosspromo/")
    page = listing.content.decode()
    assert "Кофейня «Зерно»" in page
    assert "The partner's customers come to you" in page
    assert "15% off at Салон «Лён» (up to 300.00 ₽)" in page
    assert 'value="accept"' in page and 'value="decline"' in page

    accepted = client.post(f"/portal/crosspromo/{chain.pk}/change/", {"action": "accept", "back": "list"})

    assert accepted.status_code == 302 and accepted["Location"] == "/portal/crosspromo/"
    assert flashed(accepted) == ["The chain is accepted."]
    chain.refresh_from_db()
    assert chain.status == Status.ACTIVE
    assert chain.decided_by == owner_b
    page = client.get("/portal/crosspromo/").content.decode()
    assert 'value="pause"' in page and 'value="end"' in page and 'value="accept"' not in page


def test_pause_resume_and_end_from_either_side(client, login, owner, owner_b, running_chain):
    url = f"/portal/crosspromo/{running_chain.pk}/change/"
    login(owner)
    client.post(url, {"action": "pause"})
    running_chain.refresh_from_db()
    assert running_chain.status == Status.PAUSED

    login(owner_b)
    client.post(url, {"action": "resume"})
    running_chain.refresh_from_db()
    assert running_chain.status == Status.ACTIVE
    client.post(url, {"action": "end"})
    running_chain.refresh_from_db()
    assert running_chain.status == Status.ENDED

    again = client.post(url, {"action": "resume"})
    assert flashed(again)[-1] == "A chain that is ended cannot be changed so."
    running_chain.refresh_from_db()
    assert running_chain.status == Status.ENDED


def test_actions_are_post_only(client, login, owner_b, business_a, business_b):
    chain = propose(business_a, business_b)
    login(owner_b)

    response = client.get(f"/portal/crosspromo/{chain.pk}/change/", {"action": "accept"})

    assert response.status_code == 405
    chain.refresh_from_db()
    assert chain.status == Status.PROPOSED


def test_validation_errors_are_shown_at_their_fields(client, login, owner, business_a, business_b):
    login(owner)

    too_much = client.post("/portal/crosspromo/new/", form_data(business_b, reward_value="120"))
    past = client.post("/portal/crosspromo/new/", form_data(business_b, ends_on="2020-01-01"))
    itself = client.post("/portal/crosspromo/new/", form_data(business_a))
    unbounded = client.post("/portal/crosspromo/new/", form_data(business_b, max_discount=""))

    assert too_much.status_code == 400
    assert too_much.context["form"].errors["reward_value"] == ["A discount cannot be more than 100%."]
    assert "A discount cannot be more than 100%." in too_much.content.decode()
    assert past.context["form"].errors["ends_on"] == ["A chain ends after it starts."]
    assert "target" in itself.context["form"].errors  # not among the partners to choose
    assert unbounded.context["form"].errors["max_discount"] == [
        "A percentage discount with a budget needs a largest discount."
    ]
    assert not CrossPromoChain.objects.exists()


def test_a_second_open_chain_of_the_pair_is_refused_at_the_partner(client, login, owner, business_a, business_b):
    propose(business_b, business_a)
    login(owner)

    response = client.post("/portal/crosspromo/new/", form_data(business_b))

    assert response.status_code == 400
    assert response.context["form"].errors["target"] == ["These partners already have a chain: change or end it first."]
    assert CrossPromoChain.objects.count() == 1


# --- Who may see what ---------------------------------------------------------------------------


def _role_table(chain) -> list[tuple[str, str, dict | None]]:
    return [
        ("get", "/portal/crosspromo/", None),
        ("get", "/portal/crosspromo/new/", None),
        ("post", "/portal/crosspromo/new/", {}),
        ("get", "/portal/crosspromo/recommendations/", None),
        ("get", f"/portal/crosspromo/{chain.pk}/", None),
        ("post", f"/portal/crosspromo/{chain.pk}/change/", {"action": "pause"}),
    ]


def test_the_role_table_covers_every_crosspromo_page(running_chain):
    ours = {p.name for p in portal_urls.urlpatterns if p.callback.__module__ == "crosspromo.portal"}

    assert {resolve(url).url_name for _method, url, _data in _role_table(running_chain)} == ours


def test_a_cashier_gets_the_forbidden_page_everywhere(client, login, cashier, running_chain):
    login(cashier)

    for method, url, data in _role_table(running_chain):
        response = getattr(client, method)(url, data or {})
        assert response.status_code == 403, url
        assert "Not allowed" in response.content.decode()
    running_chain.refresh_from_db()
    assert running_chain.status == Status.ACTIVE
    assert 'href="/portal/crosspromo/"' not in client.get("/portal/cashier/").content.decode()


def test_a_manager_may_do_what_an_owner_does(client, login, manager, running_chain):
    login(manager)

    for method, url, data in _role_table(running_chain):
        assert getattr(client, method)(url, data or {}).status_code in (200, 302, 400), url
    assert 'href="/portal/crosspromo/"' in client.get("/portal/crosspromo/").content.decode()
    running_chain.refresh_from_db()
    assert running_chain.status == Status.PAUSED


ISOLATION_CASES = [
    ("crosspromo-chain", "get", "/portal/crosspromo/{chain}/", None),
    ("crosspromo-chain-change", "post", "/portal/crosspromo/{chain}/change/", {"action": "accept"}),
    ("crosspromo-chain-change", "post", "/portal/crosspromo/{chain}/change/", {"action": "end"}),
]


def test_the_isolation_cases_cover_every_crosspromo_url_that_names_an_object():
    named = {
        p.name for p in portal_urls.urlpatterns if p.pattern.converters and p.callback.__module__ == "crosspromo.portal"
    }

    assert {name for name, *_rest in ISOLATION_CASES} == named


@pytest.mark.parametrize(
    ("name", "method", "url", "data"), ISOLATION_CASES, ids=[f"{c[1]} {c[2]} {c[3]}" for c in ISOLATION_CASES]
)
def test_another_business_gets_404_and_changes_nothing(
    client, login, owner_c, business_a, business_b, name, method, url, data
):
    chain = propose(business_a, business_b)
    login(owner_c)
    url = url.format(chain=chain.pk)
    assert resolve(url).url_name == name

    response = getattr(client, method)(url, data or {})

    assert response.status_code == 404
    chain.refresh_from_db()
    assert chain.status == Status.PROPOSED
    assert chain.decided_by is None
    assert "Кофейня «Зерно»" not in client.get("/portal/crosspromo/").content.decode()


def test_both_partners_open_the_chain(client, login, owner, owner_b, running_chain):
    for person in (owner, owner_b):
        login(person)
        assert client.get(f"/portal/crosspromo/{running_chain.pk}/").status_code == 200


# --- The detail ---------------------------------------------------------------------------------


def test_the_detail_shows_terms_masked_coupons_and_the_winwin_index(
    client, login, owner_b, business_a, business_b, running_chain, buy
):
    buy(business_a, ANNA, "1000.00")
    coupon = Coupon.objects.get()
    buy(business_b, ANNA, "1500.00", coupon=coupon.code)
    login(owner_b)

    response = client.get(f"/portal/crosspromo/{running_chain.pk}/")

    page = response.content.decode()
    assert coupon.code not in page
    assert "•••••" + coupon.code[-3:] in page
    assert [c.status for c in response.context["coupons"]] == [Coupon.Status.REDEEMED]
    assert "200.00 ₽ off at Салон «Лён»" in page
    index = response.context["index"]
    assert index.a_to_b.customers_sent == 1
    assert index.a_to_b.revenue_brought == D("1300.00")  # paid after the coupon's 200 off
    assert index.a_to_b.coupons_redeemed == 1
    assert index.value == 0  # nothing came the other way yet
    assert response.context["index_percent"] == 0
    assert "1 customer of Кофейня «Зерно» bought at Салон «Лён» for the first time" in page
    running_chain.refresh_from_db()
    assert (running_chain.issued_count, running_chain.redeemed_count) == (1, 1)


# --- Recommendations ------------------------------------------------------------------------------


def test_recommendations_list_a_partner_with_its_reasons_and_link_the_form(
    client, login, owner, business_a, business_c, buy
):
    buy(business_a, ANNA, "800.00")
    buy(business_a, "+79160000002", "800.00")
    buy(business_c, ANNA, "1200.00")
    login(owner)

    response = client.get("/portal/crosspromo/recommendations/")

    assert response.status_code == 200
    page = response.content.decode()
    suggestion = next(item["suggestion"] for item in response.context["suggestions"])
    assert suggestion.partner == business_c
    assert (suggestion.shared_customers, suggestion.reachable_customers) == (1, 1)
    assert "Студия «Пульс»" in page
    assert "1 of your customers already buys there" in page
    assert "1 of your customers has never been there" in page
    assert f'href="/portal/crosspromo/new/?target={business_c.pk}"' in page

    form = client.get(f"/portal/crosspromo/new/?target={business_c.pk}").context["form"]
    assert form.initial["target"] == business_c
    assert client.get("/portal/crosspromo/new/?target=nonsense").status_code == 200


# --- The cashier's coupon ----------------------------------------------------------------------


def cashier_post(client, coupon_code, external_id, amount="1000.00", action="record"):
    return client.post(
        "/portal/cashier/",
        {"phone": ANNA, "amount": amount, "coupon": coupon_code, "external_id": external_id, "action": action},
    )


def test_the_cashier_redeems_a_coupon_and_the_purchase_has_the_discount(
    client, login, cashier_b, business_a, business_b, running_chain, buy
):
    buy(business_a, ANNA, "1000.00")
    coupon = Coupon.objects.get()
    login(cashier_b)

    quoted = cashier_post(client, coupon.qr_payload, "cashier-" + "a" * 32, action="quote")
    assert quoted.status_code == 200
    assert quoted.context["quote"]["coupon"].discount == D("200.00")
    assert not Transaction.objects.filter(business=business_b).exists()

    response = cashier_post(client, coupon.qr_payload, "cashier-" + "a" * 32)

    assert response.status_code == 302
    purchase = Transaction.objects.get(business=business_b)
    assert (purchase.gross_amount, purchase.coupon_discount, purchase.paid_amount) == (
        D("1000.00"),
        D("200.00"),
        D("800.00"),
    )
    coupon.refresh_from_db()
    assert coupon.status == Coupon.Status.REDEEMED
    assert coupon.redeeming_transaction == purchase
    receipt = client.get(response["Location"])
    assert receipt.context["receipt"]["coupon"] == coupon
    assert 'id="receipt-coupon"' in receipt.content.decode()


def test_a_used_coupon_is_refused_and_nothing_is_recorded(
    client, login, cashier_b, business_a, business_b, running_chain, buy
):
    buy(business_a, ANNA, "1000.00")
    coupon = Coupon.objects.get()
    buy(business_b, ANNA, "500.00", coupon=coupon.code)
    login(cashier_b)

    response = cashier_post(client, coupon.code.lower(), "cashier-" + "b" * 32)

    assert response.status_code == 400
    [error] = response.context["form"].errors["coupon"]
    assert error.startswith("This coupon was already used on ")
    assert error in response.content.decode()
    assert Transaction.objects.filter(business=business_b).count() == 1
    assert not Transaction.objects.filter(external_id="cashier-" + "b" * 32).exists()


def test_a_coupon_for_another_partner_is_refused_at_the_quote(
    client, login, cashier, business_a, business_b, running_chain, buy
):
    buy(business_a, ANNA, "1000.00")
    coupon = Coupon.objects.get()
    login(cashier)  # at A, the coupon is for B

    quoted = cashier_post(client, coupon.code, "cashier-" + "c" * 32, action="quote")
    recorded = cashier_post(client, coupon.code, "cashier-" + "c" * 32)

    assert quoted.context["form"].errors["coupon"] == ["This coupon is for Салон «Лён»."]
    assert recorded.context["form"].errors["coupon"] == ["This coupon is for Салон «Лён»."]
    assert Transaction.objects.filter(business=business_a).count() == 1


@pytest.mark.django_db
def test_settlement_charges_the_source_its_agreed_share_of_the_rewards(
    client, login, owner, owner_b, business_a, business_b, buy
):
    from crosspromo import services as crosspromo_services

    chain = crosspromo_services.create_chain(
        crosspromo_services.ChainConfig(
            source=business_a,
            target=business_b,
            reward_kind="fixed",
            reward_value=Decimal("250.00"),
            target_share_percent=60,
        )
    )
    crosspromo_services.accept_chain(chain, business=business_b)
    coupon = buy(business_a, "+79165550001", "500").coupons_issued.get()
    buy(business_b, "+79165550001", "1000", coupon=coupon.code)

    login(owner_b)  # the salon gave 250 off; the café agreed to pay 40% of it
    salon = client.get("/portal/settlement/").context
    assert [(s.source_name, s.rewards_given, s.owed) for s in salon["shares"]] == [
        (business_a.name, Decimal("250.00"), Decimal("100.00"))
    ]
    assert salon["owed_to_us"] == Decimal("100.00")
    login(owner)
    cafe = client.get("/portal/settlement/")
    assert cafe.context["we_owe"] == Decimal("100.00")
    assert 'id="reward-shares"' in cafe.content.decode()
