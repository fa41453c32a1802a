"""Staff see chains, coupons and referrals in Django admin; they end chains only through the
service, and change no chain, coupon or referral row themselves."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib.auth.models import Permission
from django.contrib.messages import get_messages
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone, translation
from django.utils.translation import ngettext

from accounts.models import User
from crosspromo import services
from crosspromo.models import Coupon, CrossPromoChain, Referral, ReferralCode
from crosspromo.services import ChainConfig
from loyalty import services as loyalty
from tests.factories import BusinessFactory, LoyaltyProgramFactory, UserFactory

pytestmark = pytest.mark.django_db

D = Decimal
ANNA, BORIS = "+79160000001", "+79160000002"
CHAINS = "/admin/crosspromo/crosspromochain/"
COUPONS = "/admin/crosspromo/coupon/"

Status = CrossPromoChain.Status


@pytest.fixture
def admin_user(db):
    return User.objects.create_superuser(phone="+79990000001", password="correct horse battery")


@pytest.fixture
def staff_client(client, admin_user):
    client.force_login(admin_user)
    return client


@pytest.fixture
def cafe():
    return LoyaltyProgramFactory(business=BusinessFactory(name="Кофейня Зерно")).business


@pytest.fixture
def salon():
    return LoyaltyProgramFactory(business=BusinessFactory(name="Салон Лотос")).business


@pytest.fixture
def gym():
    return LoyaltyProgramFactory(business=BusinessFactory(name="Фитнес Атлет")).business


def chain(source, target, title, **overrides) -> CrossPromoChain:
    fields = {"reward_kind": "fixed", "reward_value": D(200), "per_customer_limit": 5, "title": title} | overrides
    return services.accept_chain(
        services.create_chain(ChainConfig(source=source, target=target, **fields)), business=target
    )


def buy(business, external_id, amount, phone=ANNA, **kwargs):
    return loyalty.record_transaction(
        business=business, external_id=external_id, amount=D(amount), phone=phone, **kwargs
    ).transaction


def levels(response):
    """(level, text) of each message shown after the action."""
    return [(message.level_tag, str(message)) for message in get_messages(response.wsgi_request)]


def in_russian(text_or_lazy) -> str:
    """What the Russian-speaking admin shows for a string (the English text until translated)."""
    with translation.override("ru"):
        return str(text_or_lazy)


@pytest.fixture
def chains(cafe, salon, gym):
    """Three chains: café → salon (fixed, active), salon → gym (percent, active), gym → café
    (bonus, declined: it cannot be ended)."""
    declined = services.create_chain(
        ChainConfig(source=gym, target=cafe, reward_kind="bonus", reward_value=D(150), title="Цепочка-Бонус")
    )
    return {
        "fixed": chain(cafe, salon, "Цепочка-Скидка"),
        "percent": chain(salon, gym, "Цепочка-Процент", reward_kind="percent", reward_value=D(15), max_discount=D(500)),
        "declined": services.decline_chain(declined, business=cafe),
    }


def titles_in(response, chains):
    assert response.status_code == 200
    return {name for name, promo in chains.items() if promo.title in response.text}


# --- Chains -----------------------------------------------------------------------------------


def test_the_chain_list_shows_counters_and_budget(staff_client, chains, cafe):
    promo = chain(cafe, LoyaltyProgramFactory().business, "Цепочка-Бюджет", budget=D(1000))
    buy(cafe, "p1", "600")
    buy(cafe, "p2", "600", phone=BORIS)

    response = staff_client.get(CHAINS)

    assert titles_in(response, chains) == {"fixed", "percent", "declined"}
    assert "Цепочка-Бюджет" in response.text
    row = next(line for line in response.text.splitlines() if "Цепочка-Бюджет" in line)
    assert "1000" in row and "400" in row  # the budget, and two coupons of 200 reserved
    promo.refresh_from_db()
    assert (promo.issued_count, promo.budget_reserved) == (2, D(400))


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"status__exact": "active"}, {"fixed", "percent"}),
        ({"status__exact": "declined"}, {"declined"}),
        ({"reward_kind__exact": "percent"}, {"percent"}),
        ({"reward_kind__exact": "bonus"}, {"declined"}),
        ({"source": "cafe"}, {"fixed"}),
        ({"target": "cafe"}, {"declined"}),
        ({"q": "Лотос"}, {"fixed", "percent"}),
        ({"q": "Атлет"}, {"percent", "declined"}),
    ],
)
def test_chains_filter_by_status_reward_and_partner_and_search_by_partner_name(
    staff_client, chains, cafe, params, expected
):
    partner_filters = {"source": "source__id__exact", "target": "target__id__exact"}
    query = {
        partner_filters.get(key, key): (str(cafe.pk) if key in partner_filters else value)
        for key, value in params.items()
    }

    response = staff_client.get(CHAINS, query)

    assert titles_in(response, chains) == expected


def test_the_chain_list_runs_the_same_queries_however_many_chains(staff_client, cafe):
    partners = [LoyaltyProgramFactory().business for _ in range(6)]
    chain(cafe, partners[0], "Первая")
    with CaptureQueriesContext(connection) as one:
        assert staff_client.get(CHAINS).status_code == 200
    for number, partner in enumerate(partners[1:]):
        chain(partner, cafe if number % 2 else partners[0], f"Ещё {number}")
    with CaptureQueriesContext(connection) as several:
        assert staff_client.get(CHAINS).status_code == 200

    assert len(several) == len(one)


def test_a_chain_is_shown_but_cannot_be_added_changed_or_deleted(staff_client, chains):
    promo = chains["fixed"]
    url = f"{CHAINS}{promo.pk}/"

    page = staff_client.get(url + "change/")

    assert page.status_code == 200
    assert "Цепочка-Скидка" in page.text
    assert staff_client.post(url + "change/", {"status": "paused", "issued_count": "99"}).status_code == 403
    assert staff_client.post(url + "delete/", {"post": "yes"}).status_code == 403
    assert staff_client.get(f"{CHAINS}add/").status_code == 403
    promo.refresh_from_db()
    assert (promo.status, promo.issued_count) == (Status.ACTIVE, 0)


def end(client, *chains_to_end):
    return client.post(
        CHAINS, {"action": "end_chains", "_selected_action": [str(promo.pk) for promo in chains_to_end], "index": "0"}
    )


def test_the_end_action_ends_an_active_chain_and_reports_one_that_cannot_be_ended(staff_client, chains):
    response = end(staff_client, chains["fixed"], chains["declined"])

    assert response.status_code == 302
    for promo in chains.values():
        promo.refresh_from_db()
    assert chains["fixed"].status == Status.ENDED
    assert chains["declined"].status == Status.DECLINED
    assert chains["percent"].status == Status.ACTIVE  # not selected
    [(error, refusal), (success, done)] = levels(response)
    assert error == "error" and refusal.startswith("Цепочка-Бонус:")
    assert "Цепочка-Скидка" not in refusal
    assert success == "success"
    assert done == in_russian(ngettext("Ended %(count)d chain.", "Ended %(count)d chains.", 1) % {"count": 1})


def test_an_ended_chain_issues_no_more_coupons(staff_client, chains, cafe):
    end(staff_client, chains["fixed"])

    assert buy(cafe, "after", "600").coupons_issued.count() == 0


def test_ending_only_chains_that_cannot_be_ended_reports_each_and_ends_none(staff_client, chains, gym, salon):
    finished = services.end_chain(chains["percent"], business=gym)

    response = end(staff_client, chains["declined"], finished)

    assert [level for level, _text in levels(response)] == ["error", "error"]
    chains["declined"].refresh_from_db()
    assert chains["declined"].status == Status.DECLINED
    assert CrossPromoChain.objects.filter(status=Status.ENDED).count() == 1


def test_staff_who_may_only_view_chains_get_no_end_action(client, chains):
    viewer = User.objects.create_user(phone="+79990000002", password="x", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_crosspromochain"))
    client.force_login(viewer)

    page = client.get(CHAINS)
    end(client, chains["fixed"])

    assert page.status_code == 200
    action_form = page.context["action_form"]
    assert action_form is None or "end_chains" not in dict(action_form.fields["action"].choices)
    chains["fixed"].refresh_from_db()
    assert chains["fixed"].status == Status.ACTIVE


# --- Coupons ----------------------------------------------------------------------------------


@pytest.fixture
def coupons(chains, cafe, salon):
    """Anna's coupon from the café (to the salon), redeemed at the salon; Boris's from the
    salon (to the gym), still active."""
    annas = buy(cafe, "a-1", "600").coupons_issued.get()
    boris = buy(salon, "b-1", "600", phone=BORIS).coupons_issued.get()
    buy(salon, "a-2", "1000", coupon=annas.code)
    annas.refresh_from_db()
    assert annas.status == Coupon.Status.REDEEMED
    return {"anna": annas, "boris": boris}


def codes_in(response, coupons):
    assert response.status_code == 200
    return {name for name, coupon in coupons.items() if coupon.code in response.text}


def test_the_coupon_list_shows_the_customer_chain_and_value_given(staff_client, coupons):
    response = staff_client.get(COUPONS)

    assert codes_in(response, coupons) == {"anna", "boris"}
    row = next(line for line in response.text.splitlines() if coupons["anna"].code in line)
    assert ANNA in row and "Цепочка-Скидка" in row and "200" in row


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"status__exact": "redeemed"}, {"anna"}),
        ({"status__exact": "active"}, {"boris"}),
        ({"chain__target__id__exact": "salon"}, {"anna"}),
        ({"chain__target__id__exact": "gym"}, {"boris"}),
        ({"issued_at__gte": "today", "issued_at__lt": "tomorrow"}, {"anna", "boris"}),
        ({"issued_at__gte": "tomorrow"}, set()),
        ({"q": "8 (916) 000-00-02"}, {"boris"}),
        ({"q": "0000001"}, {"anna"}),
    ],
)
def test_coupons_filter_by_status_target_and_date_and_search_by_phone(
    staff_client, coupons, salon, gym, params, expected
):
    # As the date filter's own links put it: local midnight, with its offset.
    today = timezone.localtime().replace(hour=0, minute=0, second=0, microsecond=0)
    values = {
        "salon": str(salon.pk),
        "gym": str(gym.pk),
        "today": str(today),
        "tomorrow": str(today + timedelta(days=1)),
    }

    response = staff_client.get(COUPONS, {key: values.get(value, value) for key, value in params.items()})

    assert codes_in(response, coupons) == expected


def test_coupons_search_by_code_as_typed_or_scanned(staff_client, coupons):
    code = coupons["boris"].code

    for typed in (code, code.lower(), f"{code[:4]}-{code[4:]}", f"SVOYKRUG:COUPON:{code}"):
        assert codes_in(staff_client.get(COUPONS, {"q": typed}), coupons) == {"boris"}, typed


def test_coupons_cannot_be_added_changed_or_deleted(staff_client, coupons):
    coupon = coupons["boris"]
    url = f"{COUPONS}{coupon.pk}/"

    assert staff_client.get(url + "change/").status_code == 200
    assert staff_client.post(url + "change/", {"status": "void"}).status_code == 403
    assert staff_client.post(url + "delete/", {"post": "yes"}).status_code == 403
    assert staff_client.get(f"{COUPONS}add/").status_code == 403
    coupon.refresh_from_db()
    assert coupon.status == Coupon.Status.ACTIVE


def test_the_coupon_list_runs_the_same_queries_however_many_coupons(staff_client, chains, cafe):
    buy(cafe, "c-0", "600")
    with CaptureQueriesContext(connection) as one:
        assert staff_client.get(COUPONS).status_code == 200
    for number in range(1, 6):
        buy(cafe, f"c-{number}", "600", phone=f"+7916100000{number}")
    with CaptureQueriesContext(connection) as several:
        assert staff_client.get(COUPONS).status_code == 200

    assert Coupon.objects.count() == 6
    assert len(several) == len(one)


# --- Referrals --------------------------------------------------------------------------------


def test_referrals_and_codes_are_listed_searchable_and_read_only(staff_client):
    anna, boris = UserFactory(phone=ANNA), UserFactory(phone=BORIS)
    ReferralCode.objects.create(user=anna, code="ANNA2026")
    referral = Referral.objects.create(inviter=anna, friend=boris)

    codes = staff_client.get("/admin/crosspromo/referralcode/", {"q": "anna"})
    by_friend = staff_client.get("/admin/crosspromo/referral/", {"q": "8 916 000-00-02"})
    by_status = staff_client.get("/admin/crosspromo/referral/", {"status__exact": "rewarded"})

    assert codes.status_code == by_friend.status_code == by_status.status_code == 200
    assert "ANNA2026" in codes.text
    assert f"/admin/crosspromo/referral/{referral.pk}/change/" in by_friend.text
    assert f"/admin/crosspromo/referral/{referral.pk}/change/" not in by_status.text
    assert staff_client.get("/admin/crosspromo/referral/add/").status_code == 403
    assert staff_client.get("/admin/crosspromo/referralcode/add/").status_code == 403
    assert (
        staff_client.post(f"/admin/crosspromo/referral/{referral.pk}/change/", {"status": "rewarded"}).status_code
        == 403
    )
    referral.refresh_from_db()
    assert referral.status == Referral.Status.PENDING


def test_every_crosspromo_admin_page_renders(staff_client, coupons):
    for url in (
        CHAINS,
        COUPONS,
        "/admin/crosspromo/referral/",
        "/admin/crosspromo/referralcode/",
        "/admin/crosspromo/",
    ):
        assert staff_client.get(url).status_code == 200, url
