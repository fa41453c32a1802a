"""The mobile app's coupons: the customer's own only, usable ones first, filtered by the
status the customer sees, paginated, in a fixed number of queries."""

from datetime import datetime, timedelta
from decimal import Decimal

import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone, translation
from rest_framework_simplejwt.tokens import RefreshToken

from accounts.models import Business, User
from crosspromo import services
from crosspromo.models import Coupon, CrossPromoChain
from crosspromo.services import ChainConfig
from loyalty import services as loyalty
from tests.factories import BusinessFactory, LoyaltyProgramFactory

pytestmark = pytest.mark.django_db

D = Decimal
ANNA, BORIS = "+79160000001", "+79160000002"
COUPONS = "/api/v1/me/coupons/"


@pytest.fixture
def cafe():
    return LoyaltyProgramFactory(business=BusinessFactory(name="Кофейня Зерно")).business


@pytest.fixture
def bakery():
    return LoyaltyProgramFactory(business=BusinessFactory(name="Пекарня")).business


@pytest.fixture
def salon():
    business = BusinessFactory(name="Салон Лотос", category=Business.Category.BEAUTY, address="ул. Мира, 5")
    return LoyaltyProgramFactory(business=business).business


@pytest.fixture
def spa():
    business = BusinessFactory(name="СПА Волна", category=Business.Category.BEAUTY, address="пр. Ленина, 12")
    return LoyaltyProgramFactory(business=business).business


def chain(source, target, **overrides) -> CrossPromoChain:
    fields = {"reward_kind": "fixed", "reward_value": D(200), "per_customer_limit": 10} | overrides
    return services.accept_chain(
        services.create_chain(ChainConfig(source=source, target=target, **fields)), business=target
    )


def buy(business, external_id, amount, phone=ANNA, **kwargs):
    return loyalty.record_transaction(
        business=business, external_id=external_id, amount=D(amount), phone=phone, **kwargs
    ).transaction


def client_for(api_client, phone):
    user = User.objects.get(phone=phone)
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {RefreshToken.for_user(user).access_token}")
    return api_client


def days_from_now(days: float) -> datetime:
    return timezone.now() + timedelta(days=days)


def walk(client, url, params=None):
    """Every item of a page-numbered list, following `next` to the end; and the pages."""
    items, pages = [], 0
    response = client.get(url, params)
    while True:
        assert response.status_code == 200, response.content
        body = response.json()
        items.extend(body["results"])
        pages += 1
        if not body["next"]:
            return items, pages
        response = client.get(body["next"])


@pytest.fixture
def history(cafe, bakery, salon, spa):
    """Anna's coupons in every state, issued over forty days:

    - "lapsed": from the café to the salon, issued 40 days ago for 30 days; still marked
      active (the expiry task has not run), so it reads expired;
    - "spa": from the bakery to the spa, 20 days ago for 60 days: usable, expires last;
    - "soon": café → salon, 5 days ago: usable, expires first;
    - "redeemed": café → salon, 3 days ago, used at the salon 2 days ago;
    - "void": café → salon, 1 day ago, its purchase refunded.
    Boris has one coupon of his own."""
    with time_machine.travel(days_from_now(-41), tick=False):
        to_salon = chain(cafe, salon, min_target_purchase=D(1000))
        chain(bakery, spa, reward_kind="percent", reward_value=D(15), max_discount=D(500), coupon_lifetime_days=60)
    coupons = {}
    for name, business, days_ago in [
        ("lapsed", cafe, 40),
        ("spa", bakery, 20),
        ("soon", cafe, 5),
        ("redeemed", cafe, 3),
        ("void", cafe, 1),
    ]:
        with time_machine.travel(days_from_now(-days_ago), tick=False):
            coupons[name] = buy(business, name, "600").coupons_issued.get()
    with time_machine.travel(days_from_now(-2), tick=False):
        buy(salon, "use", "1500", coupon=coupons["redeemed"].code)
    loyalty.refund_transaction(business=cafe, external_id="void")
    coupons["boris"] = buy(cafe, "boris", "600", phone=BORIS).coupons_issued.get()
    for coupon in coupons.values():
        coupon.refresh_from_db()
    assert coupons["lapsed"].status == Coupon.Status.ACTIVE
    assert coupons["lapsed"].expires_at < timezone.now()
    assert coupons["redeemed"].status == Coupon.Status.REDEEMED
    assert coupons["void"].status == Coupon.Status.VOID
    assert to_salon.pk == coupons["soon"].chain_id
    return coupons


@pytest.fixture
def as_anna(api_client, history):
    return client_for(api_client, ANNA)


def ids(results):
    return [item["id"] for item in results]


# --- The list ---------------------------------------------------------------------------------


def test_a_coupon_shows_its_code_reward_and_both_partners(api_client, cafe, salon):
    promo = chain(cafe, salon, min_target_purchase=D(1000))
    coupon = buy(cafe, "p1", "600").coupons_issued.get()

    response = client_for(api_client, ANNA).get(COUPONS)

    assert response.status_code == 200
    body = response.json()
    assert (body["count"], body["next"], body["previous"]) == (1, None, None)
    [item] = body["results"]
    with translation.override("ru"):
        description = services.describe_reward(promo)
    assert item == {
        "id": coupon.pk,
        "code": coupon.code,
        "qr_payload": f"SVOYKRUG:COUPON:{coupon.code}",
        "status": "active",
        "issued_at": item["issued_at"],
        "expires_at": item["expires_at"],
        "redeemed_at": None,
        "reward": {
            "kind": "fixed",
            "value": "200.00",
            "max_discount": None,
            "min_target_purchase": "1000.00",
            "description": description,
        },
        "target": {"id": str(salon.pk), "name": "Салон Лотос", "category": "beauty", "address": "ул. Мира, 5"},
        "source": {"id": str(cafe.pk), "name": "Кофейня Зерно"},
    }
    assert datetime.fromisoformat(item["issued_at"]) == coupon.issued_at
    assert datetime.fromisoformat(item["expires_at"]) == coupon.expires_at
    assert "Салон Лотос" in description


def test_a_percentage_reward_shows_its_largest_discount(as_anna, history):
    [spa] = [item for item in as_anna.get(COUPONS).json()["results"] if item["id"] == history["spa"].pk]

    assert spa["reward"]["kind"] == "percent"
    assert spa["reward"]["value"] == "15.00"
    assert spa["reward"]["max_discount"] == "500.00"
    assert spa["reward"]["min_target_purchase"] == "0.00"
    assert spa["target"]["name"] == "СПА Волна"
    assert spa["source"]["name"] == "Пекарня"


def test_usable_coupons_come_first_soonest_expiry_first_then_the_rest_newest_first(as_anna, history):
    results = as_anna.get(COUPONS).json()["results"]

    expected = ["soon", "spa", "void", "redeemed", "lapsed"]
    assert ids(results) == [history[name].pk for name in expected]
    assert [item["status"] for item in results] == ["active", "active", "void", "redeemed", "expired"]


def test_a_redeemed_coupon_shows_when_it_was_used(as_anna, history):
    [redeemed] = [item for item in as_anna.get(COUPONS).json()["results"] if item["status"] == "redeemed"]

    assert datetime.fromisoformat(redeemed["redeemed_at"]) == history["redeemed"].redeemed_at
    assert history["redeemed"].redeemed_at is not None


def test_a_coupon_the_expiry_task_marked_reads_expired_too(as_anna, history):
    assert services.expire_coupons() == 1

    results = as_anna.get(COUPONS).json()["results"]

    assert [item["status"] for item in results] == ["active", "active", "void", "redeemed", "expired"]
    assert Coupon.objects.get(pk=history["lapsed"].pk).status == Coupon.Status.EXPIRED


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("active", ["soon", "spa"]),
        ("expired", ["lapsed"]),
        ("redeemed", ["redeemed"]),
        ("void", ["void"]),
    ],
)
def test_coupons_filter_by_the_status_the_customer_sees(as_anna, history, status, expected):
    body = as_anna.get(COUPONS, {"status": status}).json()

    assert ids(body["results"]) == [history[name].pk for name in expected]
    assert body["count"] == len(expected)
    assert {item["status"] for item in body["results"]} == {status}


def test_an_unknown_status_is_a_400_in_the_one_error_shape(as_anna):
    response = as_anna.get(COUPONS, {"status": "used"})

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid"
    assert list(error["fields"]) == ["status"]


def test_a_customer_sees_only_their_own_coupons(api_client, history):
    items, _pages = walk(client_for(api_client, BORIS), COUPONS)

    assert ids(items) == [history["boris"].pk]


def test_coupons_are_paginated_by_page_number_in_the_same_order(as_anna, history, settings):
    settings.API_PAGE_SIZE = 2

    first = as_anna.get(COUPONS).json()
    items, pages = walk(as_anna, COUPONS)

    assert first["count"] == 5
    assert pages == 3
    assert ids(items) == [history[name].pk for name in ["soon", "spa", "void", "redeemed", "lapsed"]]
    beyond = as_anna.get(COUPONS, {"page": 4})
    assert beyond.status_code == 404
    assert beyond.json()["error"]["code"] == "not_found"


def test_a_filtered_list_pages_too(as_anna, history, settings):
    settings.API_PAGE_SIZE = 1

    items, pages = walk(as_anna, COUPONS, {"status": "active"})

    assert ids(items) == [history["soon"].pk, history["spa"].pk]
    assert pages == 2


def test_the_list_runs_the_same_queries_whatever_the_page_size(
    as_anna, history, settings, django_assert_max_num_queries
):
    settings.API_PAGE_SIZE = 1
    with CaptureQueriesContext(connection) as one_per_page:
        assert len(as_anna.get(COUPONS).json()["results"]) == 1
    settings.API_PAGE_SIZE = 50
    with CaptureQueriesContext(connection) as whole:
        assert len(as_anna.get(COUPONS).json()["results"]) == 5

    assert len(whole) == len(one_per_page)
    # The user (authentication), the count and the page: nothing per coupon.
    with django_assert_max_num_queries(3):
        as_anna.get(COUPONS)


def test_the_list_needs_a_login(api_client, history):
    response = api_client.get(COUPONS)

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"


# --- One coupon -------------------------------------------------------------------------------


def test_one_coupon_reads_as_in_the_list(as_anna, history):
    listed = {item["id"]: item for item in as_anna.get(COUPONS).json()["results"]}

    for coupon in (history["soon"], history["lapsed"], history["redeemed"]):
        response = as_anna.get(f"{COUPONS}{coupon.pk}/")
        assert response.status_code == 200
        assert response.json() == listed[coupon.pk]
    assert as_anna.get(f"{COUPONS}{history['lapsed'].pk}/").json()["status"] == "expired"


def test_another_customers_coupon_is_not_found(as_anna, history):
    theirs = as_anna.get(f"{COUPONS}{history['boris'].pk}/")
    unknown = as_anna.get(f"{COUPONS}{Coupon.objects.order_by('-pk').first().pk + 1}/")

    assert theirs.status_code == unknown.status_code == 404
    assert theirs.json()["error"]["code"] == unknown.json()["error"]["code"] == "not_found"
    assert theirs.json() == unknown.json()
    assert history["boris"].code not in theirs.text


def test_one_coupon_needs_a_login(api_client, history):
    response = api_client.get(f"{COUPONS}{history['soon'].pk}/")

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"


def test_the_schema_documents_the_coupons(client):
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/json").json()

    listing = schema["paths"]["/api/v1/me/coupons/"]["get"]
    detail = schema["paths"]["/api/v1/me/coupons/{id}/"]["get"]
    assert set(listing["responses"]) == {"200", "400", "401", "404"}
    assert set(detail["responses"]) == {"200", "401", "404"}
    assert [parameter["name"] for parameter in listing["parameters"]] == ["page", "status"]
    status = next(parameter for parameter in listing["parameters"] if parameter["name"] == "status")
    assert status["schema"]["enum"] == ["active", "redeemed", "expired", "void"]
