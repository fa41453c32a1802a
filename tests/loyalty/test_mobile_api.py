"""The mobile app's loyalty API: the customer's card, histories, and the circle's partners."""

from datetime import datetime, timedelta

import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework_simplejwt.tokens import RefreshToken

from accounts.models import Business
from loyalty import services
from loyalty.models import BonusAccount, LedgerEntry, Transaction
from tests.factories import BusinessFactory, LoyaltyProgramFactory, UserFactory
from tests.loyalty.conftest import D

pytestmark = pytest.mark.django_db


def buy(business, customer, external_id, amount, **kwargs):
    return services.record_transaction(
        business=business, customer=customer, external_id=external_id, amount=D(amount), **kwargs
    )


@pytest.fixture
def as_customer(api_client, customer):
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {RefreshToken.for_user(customer).access_token}")
    return api_client


def client_for(api_client, user):
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {RefreshToken.for_user(user).access_token}")
    return api_client


def walk(client, url):
    """Every item of a cursor-paginated list, following `next` to the end; and the pages."""
    items, pages = [], 0
    while url:
        response = client.get(url)
        assert response.status_code == 200, response.content
        body = response.json()
        items.extend(body["results"])
        pages += 1
        url = body["next"]
    return items, pages


# --- /me/loyalty/ ---------------------------------------------------------------------------


def test_card_after_a_purchase_of_1000_at_5_percent(as_customer, cafe, customer):
    buy(cafe, customer, "p1", "1000.00")

    response = as_customer.get("/api/v1/me/loyalty/")

    assert response.status_code == 200
    body = response.json()
    assert body["balance"] == "50.00"
    assert body["spendable"] == "50.00"
    assert body["pending"] == "0.00"
    assert body["lifetime_earned"] == "50.00"
    assert body["clawback_due"] == "0.00"
    assert body["tier"] == {"name": "Bronze", "accrual_uplift": "0.00", "extra_redeem_share": "0.00"}
    assert body["next_tier"] == {"name": "Silver", "threshold": "15000.00"}
    assert body["spend_365"] == "1000.00"
    assert body["spend_to_next_tier"] == "14000.00"
    assert len(body["expiries"]) == 1
    assert body["expiries"][0]["amount"] == "50.00"
    assert body["expiries"][0]["business"] == "Кофейня"


def test_bonuses_on_hold_are_pending_not_spendable(as_customer, tiers, customer):
    bakery = LoyaltyProgramFactory(business=BusinessFactory(name="Пекарня"), accrual_rate=D(10), hold_days=14).business
    buy(bakery, customer, "p1", "500.00")

    body = as_customer.get("/api/v1/me/loyalty/").json()

    assert body["balance"] == "50.00"
    assert body["spendable"] == "0.00"
    assert body["pending"] == "50.00"


def test_every_coming_expiry_is_listed_soonest_first(as_customer, tiers, customer):
    # The second lot lives past a year: the card still lists it.
    short = LoyaltyProgramFactory(business=BusinessFactory(name="Цветы"), bonus_lifetime_days=30).business
    long = LoyaltyProgramFactory(business=BusinessFactory(name="Книги"), bonus_lifetime_days=400).business
    buy(long, customer, "p1", "200.00")
    buy(short, customer, "p2", "100.00")

    expiries = as_customer.get("/api/v1/me/loyalty/").json()["expiries"]

    assert [(e["amount"], e["business"]) for e in expiries] == [("5.00", "Цветы"), ("10.00", "Книги")]
    lots = {lot.business.name: lot.expires_at for lot in BonusAccount.objects.get(user=customer).lots.all()}
    assert [datetime.fromisoformat(e["expires_at"]) for e in expiries] == [lots["Цветы"], lots["Книги"]]
    assert lots["Книги"] - lots["Цветы"] > timedelta(days=365)


def test_customer_without_an_account_gets_zeros_and_the_lowest_tier(as_customer, tiers, customer):
    response = as_customer.get("/api/v1/me/loyalty/")

    assert response.status_code == 200
    body = response.json()
    assert body["balance"] == body["spendable"] == body["pending"] == body["lifetime_earned"] == "0.00"
    assert body["tier"]["name"] == "Bronze"
    assert body["next_tier"] == {"name": "Silver", "threshold": "15000.00"}
    assert body["spend_to_next_tier"] == "15000.00"
    assert body["expiries"] == []
    assert not BonusAccount.objects.filter(user=customer).exists()


def test_the_card_needs_a_login(api_client, tiers):
    response = api_client.get("/api/v1/me/loyalty/")

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"


def test_the_card_shows_only_the_customers_own_bonuses(as_customer, cafe, customer):
    buy(cafe, UserFactory(phone="+79990001122"), "other", "4000.00")
    buy(cafe, customer, "mine", "100.00")

    assert as_customer.get("/api/v1/me/loyalty/").json()["balance"] == "5.00"


# --- /me/ledger/ ---------------------------------------------------------------------------


def test_ledger_shows_the_customers_entries_newest_first(as_customer, cafe, salon, customer):
    first = buy(cafe, customer, "p1", "1000.00").transaction
    second = buy(salon, customer, "p2", "300.00", redeem=D("20.00")).transaction

    response = as_customer.get("/api/v1/me/ledger/")

    assert response.status_code == 200
    results = response.json()["results"]
    assert [(e["kind"], e["amount"], e["business"], e["transaction_id"]) for e in results] == [
        ("accrual", "28.00", "Салон", str(second.pk)),
        ("redemption", "-20.00", "Салон", str(second.pk)),
        ("accrual", "50.00", "Кофейня", str(first.pk)),
    ]
    assert results[0]["kind_display"]
    assert results[0]["reason"] == ""
    assert results[0]["created_at"]


def test_ledger_shows_the_reason_of_an_adjustment_and_null_business_for_the_circle(as_customer, tiers, customer):
    services.adjust_balance(user=customer, amount=D("15.00"), reason="Извинения за сбой", created_by=None)

    [entry] = as_customer.get("/api/v1/me/ledger/").json()["results"]

    assert entry["kind"] == "adjustment"
    assert entry["amount"] == "15.00"
    assert entry["reason"] == "Извинения за сбой"
    assert entry["business"] is None
    assert entry["transaction_id"] is None


def test_a_customer_never_sees_another_customers_entries(api_client, cafe, customer):
    other = UserFactory(phone="+79990001122")
    buy(cafe, customer, "mine", "100.00")
    buy(cafe, other, "theirs", "2000.00")
    mine = set(LedgerEntry.objects.filter(account__user=customer).values_list("pk", flat=True))
    theirs = set(LedgerEntry.objects.filter(account__user=other).values_list("pk", flat=True))

    items, _pages = walk(client_for(api_client, customer), "/api/v1/me/ledger/")

    assert {item["id"] for item in items} == mine
    assert not {item["id"] for item in items} & theirs


def test_ledger_pages_return_every_entry_exactly_once_even_with_equal_times(as_customer, settings, tiers, customer):
    settings.API_PAGE_SIZE = 3
    cafe = LoyaltyProgramFactory(business=BusinessFactory(name="Кафе"), welcome_bonus=D("100.00")).business
    # Frozen clock: every entry has the same created_at, so only the id tiebreak orders them.
    with time_machine.travel(timezone.now(), tick=False):
        buy(cafe, customer, "p1", "1000.00")
        for number in range(2, 6):
            buy(cafe, customer, f"p{number}", "200.00", redeem=D("30.00"))
    expected = list(
        LedgerEntry.objects.filter(account__user=customer).order_by("-created_at", "-id").values_list("pk", flat=True)
    )
    assert len(expected) == 11  # one redemption spans two lots
    assert len(set(LedgerEntry.objects.filter(account__user=customer).values_list("created_at", flat=True))) == 1

    items, pages = walk(as_customer, "/api/v1/me/ledger/")

    assert [item["id"] for item in items] == expected
    assert pages == 4


def test_ledger_query_count_does_not_grow_with_the_page(as_customer, settings, tiers, customer, cafe, salon):
    for number in range(12):
        buy(cafe if number % 2 else salon, customer, f"p{number}", "100.00")
    services.adjust_balance(user=customer, amount=D("5.00"), reason="test", created_by=None, business=cafe)

    settings.API_PAGE_SIZE = 2
    with CaptureQueriesContext(connection) as small_page:
        assert len(as_customer.get("/api/v1/me/ledger/").json()["results"]) == 2
    settings.API_PAGE_SIZE = 50
    with CaptureQueriesContext(connection) as whole:
        assert len(as_customer.get("/api/v1/me/ledger/").json()["results"]) == 13

    assert len(whole) == len(small_page)


def test_ledger_list_runs_a_fixed_number_of_queries(
    as_customer, settings, tiers, customer, cafe, salon, django_assert_max_num_queries
):
    for number in range(20):
        buy(cafe if number % 2 else salon, customer, f"p{number}", "100.00")

    # The user (authentication) and the page: nothing per row.
    with django_assert_max_num_queries(2):
        response = as_customer.get("/api/v1/me/ledger/")

    assert len(response.json()["results"]) == 20


def test_ledger_needs_a_login(api_client):
    assert api_client.get("/api/v1/me/ledger/").status_code == 401


# --- /me/transactions/ ---------------------------------------------------------------------


def test_purchases_show_the_business_and_every_amount(as_customer, cafe, customer):
    purchase = buy(cafe, customer, "p1", "1000.00").transaction
    services.adjust_balance(user=customer, amount=D("100.00"), reason="test", created_by=None)
    second = buy(cafe, customer, "p2", "400.00", redeem=D("100.00"), coupon_discount=D("50.00")).transaction
    services.refund_transaction(business=cafe, external_id="p1", amount=D("200.00"), refund_id="r1")

    results = as_customer.get("/api/v1/me/transactions/").json()["results"]

    assert [r["id"] for r in results] == [str(second.pk), str(purchase.pk)]
    assert results[0] == {
        "id": str(second.pk),
        "business": {"id": str(cafe.pk), "name": "Кофейня"},
        "gross_amount": "400.00",
        "bonuses_redeemed": "100.00",
        "coupon_discount": "50.00",
        "paid_amount": "250.00",
        "bonuses_accrued": "12.50",
        "refunded_amount": "0.00",
        "status": "completed",
        "status_display": results[0]["status_display"],
        "occurred_at": results[0]["occurred_at"],
    }
    assert results[1]["status"] == Transaction.Status.PARTIALLY_REFUNDED
    assert results[1]["refunded_amount"] == "200.00"
    assert results[1]["bonuses_accrued"] == "50.00"


def test_purchase_pages_return_every_purchase_exactly_once(as_customer, settings, cafe, salon, customer):
    settings.API_PAGE_SIZE = 2
    same_time = timezone.now() - timedelta(days=1)
    for number in range(3):  # the same moment at two partners, three times over
        buy(cafe, customer, f"c{number}", "100.00", occurred_at=same_time - timedelta(hours=number))
        buy(salon, customer, f"s{number}", "100.00", occurred_at=same_time - timedelta(hours=number))
    buy(cafe, customer, "late", "100.00")
    expected = list(
        Transaction.objects.filter(customer=customer).order_by("-occurred_at", "-id").values_list("pk", flat=True)
    )

    items, pages = walk(as_customer, "/api/v1/me/transactions/")

    assert [item["id"] for item in items] == [str(pk) for pk in expected]
    assert len(items) == 7
    assert pages == 4


def test_purchases_are_only_the_customers_own(api_client, cafe, customer):
    buy(cafe, UserFactory(phone="+79990001122"), "theirs", "100.00")
    mine = buy(cafe, customer, "mine", "100.00").transaction

    items, _pages = walk(client_for(api_client, customer), "/api/v1/me/transactions/")

    assert [item["id"] for item in items] == [str(mine.pk)]


def test_purchase_list_runs_a_fixed_number_of_queries(as_customer, tiers, customer, django_assert_max_num_queries):
    for number in range(15):
        partner = LoyaltyProgramFactory(business=BusinessFactory(name=f"Партнёр {number}")).business
        buy(partner, customer, f"p{number}", "100.00")

    with django_assert_max_num_queries(2):
        response = as_customer.get("/api/v1/me/transactions/")

    assert len(response.json()["results"]) == 15


# --- /businesses/ --------------------------------------------------------------------------


def test_partners_are_public_with_their_terms(api_client, tiers):
    LoyaltyProgramFactory(
        business=BusinessFactory(
            name="Кофейня на Ленина",
            slug="coffee-lenina",
            category=Business.Category.CAFE,
            address="ул. Ленина, 1",
            latitude=D("56.838011"),
            longitude=D("60.597474"),
            time_zone="Asia/Yekaterinburg",
        ),
        accrual_rate=D("7.50"),
        max_redeem_share=D("40.00"),
        bonus_lifetime_days=180,
        hold_days=3,
        welcome_bonus=D("200.00"),
        birthday_bonus=D("300.00"),
    )

    response = api_client.get("/api/v1/businesses/")

    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 1
    [partner] = body["results"]
    assert partner == {
        "id": partner["id"],
        "name": "Кофейня на Ленина",
        "slug": "coffee-lenina",
        "category": "cafe",
        "category_display": partner["category_display"],
        "address": "ул. Ленина, 1",
        "latitude": "56.838011",
        "longitude": "60.597474",
        "time_zone": "Asia/Yekaterinburg",
        "program": {
            "accrual_rate": "7.50",
            "max_redeem_share": "40.00",
            "bonus_lifetime_days": 180,
            "hold_days": 3,
            "welcome_bonus": "200.00",
            "birthday_bonus": "300.00",
        },
    }
    assert partner["category_display"] in {"Café", "Кафе"}


def test_a_stale_token_does_not_lock_the_public_list(api_client):
    BusinessFactory(name="Кофейня")
    api_client.credentials(HTTP_AUTHORIZATION="Bearer not-a-token")

    assert api_client.get("/api/v1/businesses/").status_code == 200


def test_a_partner_without_a_program_row_shows_the_default_terms_and_a_switched_off_one_none(api_client, tiers):
    BusinessFactory(name="А без программы")
    LoyaltyProgramFactory(business=BusinessFactory(name="Б выключена"), is_active=False)

    results = api_client.get("/api/v1/businesses/").json()["results"]

    assert [r["name"] for r in results] == ["А без программы", "Б выключена"]
    assert results[0]["program"] == {
        "accrual_rate": "5.00",
        "max_redeem_share": "30.00",
        "bonus_lifetime_days": 365,
        "hold_days": 0,
        "welcome_bonus": "0.00",
        "birthday_bonus": "0.00",
    }
    assert results[1]["program"] is None


def test_partners_are_active_only_ordered_by_name(api_client):
    BusinessFactory(name="Ясли")
    BusinessFactory(name="Аптека")
    BusinessFactory(name="Закрытый", is_active=False)

    names = [r["name"] for r in api_client.get("/api/v1/businesses/").json()["results"]]

    assert names == ["Аптека", "Ясли"]


def test_partners_filter_by_category(api_client):
    BusinessFactory(name="Кофейня", category=Business.Category.CAFE)
    BusinessFactory(name="Клиника", category=Business.Category.CLINIC)

    names = [r["name"] for r in api_client.get("/api/v1/businesses/", {"category": "clinic"}).json()["results"]]

    assert names == ["Клиника"]


def test_an_unknown_category_is_a_400_in_the_one_error_shape(api_client):
    response = api_client.get("/api/v1/businesses/", {"category": "casino"})

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid"
    assert "category" in response.json()["error"]["fields"]


def test_partners_search_by_part_of_the_name(api_client):
    # SQLite folds case for ASCII only: Cyrillic is searched in the case it is written.
    BusinessFactory(name="Кофейня Зерно")
    BusinessFactory(name="Coffee Point")
    BusinessFactory(name="Салон Лотос")

    cyrillic = [r["name"] for r in api_client.get("/api/v1/businesses/", {"search": "офейн"}).json()["results"]]
    latin = [r["name"] for r in api_client.get("/api/v1/businesses/", {"search": "coffee"}).json()["results"]]

    assert cyrillic == ["Кофейня Зерно"]
    assert latin == ["Coffee Point"]


def test_an_empty_search_lists_every_partner(api_client):
    BusinessFactory(name="Кофейня", category=Business.Category.CAFE)
    BusinessFactory(name="Салон", category=Business.Category.BEAUTY)

    response = api_client.get("/api/v1/businesses/", {"search": "", "category": "cafe"})

    assert response.status_code == 200
    assert [r["name"] for r in response.json()["results"]] == ["Кофейня"]


def test_partners_are_paginated_by_page_number(api_client, settings):
    settings.API_PAGE_SIZE = 2
    for name in ["В", "А", "Д", "Б", "Г"]:
        BusinessFactory(name=name)

    first = api_client.get("/api/v1/businesses/").json()
    third = api_client.get("/api/v1/businesses/", {"page": 3}).json()

    assert first["count"] == 5
    assert [r["name"] for r in first["results"]] == ["А", "Б"]
    assert [r["name"] for r in third["results"]] == ["Д"]
    assert third["next"] is None
    beyond = api_client.get("/api/v1/businesses/", {"page": 4})
    assert beyond.status_code == 404
    assert beyond.json()["error"]["code"] == "not_found"


def test_partner_list_runs_a_fixed_number_of_queries(api_client, django_assert_max_num_queries):
    for number in range(10):
        LoyaltyProgramFactory(business=BusinessFactory(name=f"Партнёр {number:02d}"))

    with django_assert_max_num_queries(2):  # the count and the page
        response = api_client.get("/api/v1/businesses/")

    assert len(response.json()["results"]) == 10


def test_one_partner_by_id(api_client):
    program = LoyaltyProgramFactory(business=BusinessFactory(name="Кофейня"), accrual_rate=D("6.00"))

    response = api_client.get(f"/api/v1/businesses/{program.business.pk}/")

    assert response.status_code == 200
    assert response.json()["name"] == "Кофейня"
    assert response.json()["program"]["accrual_rate"] == "6.00"


@pytest.mark.parametrize("state", ["inactive", "unknown", "not-a-uuid"])
def test_an_inactive_or_unknown_partner_is_a_404_in_the_one_error_shape(api_client, state):
    closed = BusinessFactory(name="Закрытый", is_active=False)
    partner_id = {"inactive": str(closed.pk), "unknown": "00000000-0000-0000-0000-000000000000"}.get(state, state)

    response = api_client.get(f"/api/v1/businesses/{partner_id}/")

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
