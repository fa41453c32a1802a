"""Customers (list, search, card, adjustments) and purchases (list, filters, detail, refunds)."""

from datetime import datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.contrib.messages import get_messages
from django.db import connection
from django.test.utils import CaptureQueriesContext

from loyalty.models import BonusAccount, LedgerEntry, Refund, Transaction

MSK = ZoneInfo("Europe/Moscow")


def at(moment):
    return time_machine.travel(moment, tick=False)


def flashed(response) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


def balance(user) -> Decimal:
    return BonusAccount.objects.get(user=user).balance


@pytest.fixture
def customers(business_a, business_b, buy):
    """Anna bought at A twice and at B once; Boris at A once; Vera only at B."""
    with at(datetime(2026, 3, 10, 10, 0, tzinfo=MSK)):
        anna_1 = buy(business_a, "+79991110001", "1000.00", external_id="a-1")  # +50
    with at(datetime(2026, 3, 10, 10, 5, tzinfo=MSK)):
        boris = buy(business_a, "+79991110002", "400.00", external_id="a-2")  # +20
    with at(datetime(2026, 3, 11, 10, 0, tzinfo=MSK)):
        buy(business_b, "+79991110001", "200.00", redeem="50.00", external_id="b-1")  # -50, pays 150: +15
        vera = buy(business_b, "+79991110003", "300.00", external_id="b-2")  # +30
    with at(datetime(2026, 3, 12, 10, 0, tzinfo=MSK)):
        # Spends B's 15; pays 185: +9.25. Anna's balance: 50 - 50 + 15 - 15 + 9.25 = 9.25.
        anna_2 = buy(business_a, "+79991110001", "200.00", redeem="15.00", external_id="a-3")
    return {
        "anna": anna_1.customer,
        "boris": boris.customer,
        "boris_purchase": boris,
        "vera": vera.customer,
        "anna_first": anna_1,
        "anna_last": anna_2,
    }


# --- Customers ------------------------------------------------------------------------------


@pytest.mark.django_db
def test_customer_list_shows_balance_tier_visits_and_spend_here(client, login, owner, customers):
    login(owner)

    response = client.get("/portal/customers/")

    assert response.status_code == 200
    rows = [
        (c.phone, c.bonus_account.balance, c.bonus_account.tier.name, c.visits, c.spend_here)
        for c in response.context["page"]
    ]
    assert rows == [
        ("+79991110001", Decimal("9.25"), "Bronze", 2, Decimal("1185.00")),
        ("+79991110002", Decimal("20.00"), "Bronze", 1, Decimal("400.00")),
    ]
    html = response.content.decode()
    assert "+7\u00a0999\u00a0111-00-01" in html
    assert "9.25\u00a0₽" in html
    assert "1,185.00\u00a0₽" in html
    assert "12.03.2026 10:00" in html
    assert "+7\u00a0999\u00a0111-00-03" not in html  # Vera never bought here
    assert "2 customers" in html


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("search", "phones"),
    [
        ("8 999 111-00-02", ["+79991110002"]),
        ("+79991110001", ["+79991110001"]),
        ("111-00", ["+79991110001", "+79991110002"]),
        ("+79991110003", []),  # a customer of another business only
    ],
)
def test_customer_search_by_phone(client, login, owner, customers, search, phones):
    login(owner)

    response = client.get("/portal/customers/", {"phone": search})

    assert [c.phone for c in response.context["page"]] == phones
    if not phones:
        assert "No customer of yours has such a phone." in response.content.decode()


@pytest.mark.django_db
def test_customer_list_takes_the_same_queries_for_few_and_many_customers(client, login, owner, business_a, buy):
    login(owner)
    buy(business_a, "+79991110001", "100.00")
    client.get("/portal/customers/")  # the first warehouse read of a minute exports inline first
    with CaptureQueriesContext(connection) as few:
        client.get("/portal/customers/")
    for n in range(2, 8):
        buy(business_a, f"+7999111000{n}", "100.00")
    with CaptureQueriesContext(connection) as many:
        client.get("/portal/customers/")

    assert len(many) == len(few)


@pytest.mark.django_db
def test_customer_card_shows_the_account_and_only_this_business_purchases(client, login, owner, customers):
    login(owner)
    anna = customers["anna"]

    response = client.get(f"/portal/customers/{anna.pk}/")

    assert response.status_code == 200
    summary = response.context["summary"]
    assert summary.balance == Decimal("9.25")
    assert summary.spendable == Decimal("9.25")
    assert summary.tier.name == "Bronze"
    assert summary.spend_365 == Decimal("1335.00")  # 1000 + 150 + 185 across the circle
    assert [p.external_id for p in response.context["purchases"]] == ["a-3", "a-1"]
    html = response.content.decode()
    assert "9.25\u00a0₽" in html
    assert "13,665.00\u00a0₽ more to Silver" in html
    assert ">b-1<" not in html  # the id as shown, not a piece of some UUID in a link
    assert f'href="/portal/customers/{anna.pk}/adjust/"' in html


@pytest.mark.django_db
def test_customer_card_of_someone_who_never_bought_here_is_404(client, login, owner, customers):
    login(owner)

    assert client.get(f"/portal/customers/{customers['vera'].pk}/").status_code == 404
    assert client.get(f"/portal/customers/{owner.pk}/").status_code == 404


# --- Adjustments ----------------------------------------------------------------------------


def adjust(client, customer, amount, reason="Компенсация за ожидание", key="a" * 32):
    return client.post(f"/portal/customers/{customer.pk}/adjust/", {"amount": amount, "reason": reason, "key": key})


@pytest.mark.django_db
@pytest.mark.parametrize("editor", ["owner", "manager"])
def test_adjustment_adds_bonuses_with_the_reason_and_who(client, login, customers, business_a, editor, request):
    person = request.getfixturevalue(editor)
    login(person)
    boris = customers["boris"]
    page = client.get(f"/portal/customers/{boris.pk}/adjust/")
    assert page.status_code == 200
    key = page.context["form"]["key"].value()

    response = adjust(client, boris, "100.00", key=key)

    assert response.status_code == 302
    assert response["Location"] == f"/portal/customers/{boris.pk}/"
    assert flashed(response) == ["The balance is adjusted by 100.00\u00a0₽."]
    assert balance(boris) == Decimal("120.00")
    (entry,) = LedgerEntry.objects.filter(kind=LedgerEntry.Kind.ADJUSTMENT)
    assert entry.amount == Decimal("100.00")
    assert entry.reason == "Компенсация за ожидание"
    assert entry.created_by == person
    assert entry.business == business_a
    assert entry.lot.business == business_a
    card = client.get(f"/portal/customers/{boris.pk}/").content.decode()
    assert "Компенсация за ожидание" in card
    assert "100.00\u00a0₽" in card


@pytest.mark.django_db
def test_negative_adjustment_takes_bonuses_away(client, login, owner, customers):
    login(owner)

    response = adjust(client, customers["boris"], "-15.50")

    assert flashed(response) == ["The balance is adjusted by -15.50\u00a0₽."]
    assert balance(customers["boris"]) == Decimal("4.50")


@pytest.mark.django_db
def test_adjustment_sent_twice_is_recorded_once(client, login, owner, customers):
    login(owner)
    first = adjust(client, customers["boris"], "10.00", key="b" * 32)
    client.get(first["Location"])  # shows (and so uses up) the first message

    response = adjust(client, customers["boris"], "10.00", key="b" * 32)

    assert flashed(response) == ["This adjustment was already recorded; nothing new was added."]
    assert balance(customers["boris"]) == Decimal("30.00")
    assert LedgerEntry.objects.filter(kind=LedgerEntry.Kind.ADJUSTMENT).count() == 1


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("amount", "reason", "errors"),
    [
        ("-50.00", "Ошибка", {"amount": ["Not enough bonuses to spend. Available: 20.00\u00a0₽."]}),
        ("0", "Ошибка", {"amount": ["Enter an amount other than zero."]}),
        ("10.555", "Ошибка", {"amount": ["Ensure that there are no more than 2 decimal places."]}),
        ("abc", "Ошибка", {"amount": ["Enter a number."]}),
        ("10.00", "   ", {"reason": ["This field is required."]}),
        (
            "2000000",
            "Ошибка",
            {"amount": ["The adjustment must be a non-zero amount in roubles and kopecks."]},
        ),
    ],
)
def test_refused_adjustments_change_nothing(client, login, owner, customers, amount, reason, errors):
    login(owner)

    response = adjust(client, customers["boris"], amount, reason=reason)

    assert response.status_code == 400
    assert response.context["form"].errors == errors
    assert balance(customers["boris"]) == Decimal("20.00")
    assert not LedgerEntry.objects.filter(kind=LedgerEntry.Kind.ADJUSTMENT).exists()


# --- Purchases ------------------------------------------------------------------------------


@pytest.mark.django_db
def test_purchase_list_shows_this_business_purchases_with_totals(client, login, owner, customers):
    login(owner)

    response = client.get("/portal/transactions/")

    assert response.status_code == 200
    assert [p.external_id for p in response.context["page"]] == ["a-3", "a-2", "a-1"]
    assert response.context["totals"] == {
        "count": 3,
        "gross": Decimal("1600.00"),
        "redeemed": Decimal("15.00"),
        "accrued": Decimal("79.25"),
    }
    html = response.content.decode()
    assert "3 purchases for 1,600.00\u00a0₽; paid with bonuses 15.00\u00a0₽, accrued 79.25\u00a0₽." in html
    assert "12.03.2026 10:00" in html
    assert ">b-1<" not in html  # the id as shown, not a piece of some UUID in a link


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("filters", "external_ids"),
    [
        ({"date_from": "2026-03-11"}, ["a-3"]),
        ({"date_to": "2026-03-11"}, ["a-2", "a-1"]),
        ({"date_from": "2026-03-10", "date_to": "2026-03-10"}, ["a-2", "a-1"]),
        ({"status": "refunded"}, ["a-2"]),
        ({"status": "completed"}, ["a-3", "a-1"]),
        ({"phone": "+79991110001"}, ["a-3", "a-1"]),
        ({"phone": "00-02", "status": "refunded"}, ["a-2"]),
    ],
)
def test_purchase_filters(client, login, owner, business_a, customers, filters, external_ids):
    from loyalty import services

    services.refund_transaction(business=business_a, external_id="a-2")
    login(owner)

    response = client.get("/portal/transactions/", filters)

    assert [p.external_id for p in response.context["page"]] == external_ids


@pytest.mark.django_db
def test_purchase_dates_are_days_of_the_business_time_zone(client, login, owner, business_a, buy):
    with at(datetime(2026, 3, 10, 0, 30, tzinfo=MSK)):  # 9 March, 21:30 UTC
        buy(business_a, "+79991110001", "100.00", external_id="early")
    login(owner)

    response = client.get("/portal/transactions/", {"date_from": "2026-03-10", "date_to": "2026-03-10"})

    assert [p.external_id for p in response.context["page"]] == ["early"]
    assert list(client.get("/portal/transactions/", {"date_to": "2026-03-09"}).context["page"]) == []


@pytest.mark.django_db
def test_purchase_filter_with_the_dates_reversed_is_a_form_error(client, login, owner, customers):
    login(owner)

    response = client.get("/portal/transactions/", {"date_from": "2026-03-12", "date_to": "2026-03-10"})

    assert response.status_code == 200
    assert response.context["form"].errors == {"__all__": ["The start date is after the end date."]}


@pytest.mark.django_db
def test_purchase_list_is_paginated(client, login, owner, business_a, buy):
    for n in range(51):
        buy(business_a, "+79991110001", "10.00", external_id=f"n-{n:02d}")
    login(owner)

    first = client.get("/portal/transactions/")
    second = client.get("/portal/transactions/", {"page": "2", "status": "completed"})

    assert len(first.context["page"]) == 50
    assert "Page 1 of 2" in first.content.decode()
    assert 'href="?page=2"' in first.content.decode()
    assert [p.external_id for p in second.context["page"]] == ["n-00"]
    assert 'href="?page=1&amp;status=completed"' in second.content.decode()
    assert client.get("/portal/transactions/", {"page": "99"}).context["page"].number == 2


@pytest.mark.django_db
def test_purchase_list_takes_the_same_queries_for_few_and_many_purchases(client, login, owner, business_a, buy):
    login(owner)
    buy(business_a, "+79991110001", "100.00")
    client.get("/portal/customers/")  # the first warehouse read of a minute exports inline first
    with CaptureQueriesContext(connection) as few:
        client.get("/portal/transactions/")
    for n in range(2, 8):
        buy(business_a, f"+7999111000{n}", "100.00")
    with CaptureQueriesContext(connection) as many:
        client.get("/portal/transactions/")

    assert len(many) == len(few)


@pytest.mark.django_db
def test_purchase_page_shows_its_figures(client, login, owner, customers):
    login(owner)
    purchase = customers["anna_last"]

    response = client.get(f"/portal/transactions/{purchase.pk}/")

    assert response.status_code == 200
    html = response.content.decode()
    assert ">a-3<" in html
    assert "12.03.2026 10:00" in html
    assert "+7\u00a0999\u00a0111-00-01" in html
    assert "200.00\u00a0₽" in html  # the check
    assert "15.00\u00a0₽" in html  # paid with bonuses
    assert "185.00\u00a0₽" in html  # paid in money
    assert "9.25\u00a0₽" in html  # accrued
    assert "Left to refund: 200.00\u00a0₽." in html
    assert response.context["refund_form"]["refund_id"].value().startswith("portal-")


@pytest.mark.django_db
def test_full_refund(client, login, owner, customers):
    login(owner)
    purchase = customers["boris_purchase"]

    response = client.post(
        f"/portal/transactions/{purchase.pk}/refund/", {"amount": "", "refund_id": "portal-" + "1" * 32}
    )

    assert response.status_code == 302
    assert response["Location"] == f"/portal/transactions/{purchase.pk}/"
    assert flashed(response) == [
        "Refunded 400.00\u00a0₽ of the check: 400.00\u00a0₽ of money, 20.00\u00a0₽ bonuses taken back, "
        "0.00\u00a0₽ bonuses returned to the customer."
    ]
    purchase.refresh_from_db()
    assert purchase.status == Transaction.Status.REFUNDED
    assert purchase.money_refunded == Decimal("400.00")
    assert balance(customers["boris"]) == Decimal("0.00")
    page = client.get(f"/portal/transactions/{purchase.pk}/").content.decode()
    assert "The purchase is refunded in full." in page


@pytest.mark.django_db
def test_partial_refund_and_the_same_form_sent_again(client, login, manager, customers):
    login(manager)
    purchase = customers["anna_last"]
    form = {"amount": "100.00", "refund_id": "portal-" + "2" * 32}

    response = client.post(f"/portal/transactions/{purchase.pk}/refund/", form)
    client.get(response["Location"])

    assert flashed(response) == [
        "Refunded 100.00\u00a0₽ of the check: 92.50\u00a0₽ of money, 4.62\u00a0₽ bonuses taken back, "
        "7.50\u00a0₽ bonuses returned to the customer."
    ]
    purchase.refresh_from_db()
    assert purchase.status == Transaction.Status.PARTIALLY_REFUNDED
    assert purchase.refunded_amount == Decimal("100.00")
    (refund,) = Refund.objects.all()
    assert refund.refund_id == "portal-" + "2" * 32
    assert balance(customers["anna"]) == Decimal("12.13")  # 9.25 - 4.62 + 7.50

    again = client.post(f"/portal/transactions/{purchase.pk}/refund/", form)

    assert flashed(again) == ["This refund was already made; nothing new was refunded."]
    assert Refund.objects.count() == 1
    page = client.get(f"/portal/transactions/{purchase.pk}/").content.decode()
    assert "Left to refund: 100.00\u00a0₽." in page
    assert "4.62\u00a0₽" in page


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("amount", "errors"),
    [
        (
            "2000.00",
            {"amount": ["This refund is larger than what is left of the purchase. Left to refund: 200.00\u00a0₽."]},
        ),
        ("0", {"amount": ["Ensure this value is greater than or equal to 0.01."]}),
        ("1.001", {"amount": ["Ensure that there are no more than 2 decimal places."]}),
    ],
)
def test_refused_refunds_change_nothing(client, login, owner, customers, amount, errors):
    login(owner)
    purchase = customers["anna_last"]

    response = client.post(
        f"/portal/transactions/{purchase.pk}/refund/", {"amount": amount, "refund_id": "portal-" + "3" * 32}
    )

    assert response.status_code == 400
    assert response.context["refund_form"].errors == errors
    purchase.refresh_from_db()
    assert purchase.status == Transaction.Status.COMPLETED
    assert not Refund.objects.exists()
    assert balance(customers["anna"]) == Decimal("9.25")


@pytest.mark.django_db
def test_refund_that_finds_the_bonuses_spent_warns_what_was_not_taken_back(
    client, login, owner, business_a, business_b, buy
):
    purchase = buy(business_a, "+79991110009", "1000.00")  # +50
    buy(business_b, "+79991110009", "200.00", redeem="50.00")  # spends them; pays 150: +15 at B
    login(owner)

    response = client.post(
        f"/portal/transactions/{purchase.pk}/refund/", {"amount": "", "refund_id": "portal-" + "4" * 32}
    )

    assert flashed(response) == [
        "Refunded 1,000.00\u00a0₽ of the check: 1,000.00\u00a0₽ of money, 15.00\u00a0₽ bonuses taken back, "
        "0.00\u00a0₽ bonuses returned to the customer.",
        "35.00\u00a0₽ of bonuses could not be taken back: the customer has spent them. "
        "They will be taken from the customer's next bonuses.",
    ]
