"""The cashier's page, the settlement report and the partner API keys."""

from datetime import datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.contrib.messages import get_messages

from accounts.models import ApiKey, User
from accounts.services import authenticate_api_key
from loyalty import services
from loyalty.models import BonusAccount, Transaction
from tests.factories import ApiKeyFactory

MSK = ZoneInfo("Europe/Moscow")
EXTERNAL_ID = "cashier-" + "c" * 32


def flashed(response) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


def balance(phone) -> Decimal:
    return BonusAccount.objects.get(user__phone=phone).balance


def cashier_post(client, action="record", **fields):
    data = {"phone": "+79991110001", "amount": "1000.00", "redeem": "", "external_id": EXTERNAL_ID, "action": action}
    data.update(fields)
    return client.post("/portal/cashier/", data)


@pytest.fixture
def anna(business_a, buy):
    """A customer with 50.00 bonuses, all spendable."""
    return buy(business_a, "+79991110001", "1000.00").customer


# --- Cashier --------------------------------------------------------------------------------


@pytest.mark.django_db
def test_cashier_page_offers_a_fresh_purchase_id(client, login, cashier):
    login(cashier)

    first = client.get("/portal/cashier/")
    second = client.get("/portal/cashier/")

    assert first.status_code == 200
    first_id = first.context["form"]["external_id"].value()
    assert first_id.startswith("cashier-")
    assert len(first_id) == len("cashier-") + 32
    assert first_id != second.context["form"]["external_id"].value()


@pytest.mark.django_db
def test_check_bonuses_shows_the_balance_and_the_most_the_check_can_take(client, login, cashier, anna):
    login(cashier)

    response = cashier_post(client, action="quote", amount="100.00")

    assert response.status_code == 200
    quote = response.context["quote"]
    assert quote["customer"] == anna
    assert quote["summary"].spendable == Decimal("50.00")
    assert quote["max_redeemable"] == Decimal("30.00")  # 30% of 100, under the 50 spendable
    html = response.content.decode()
    assert "Bonuses can pay up to 30.00\u00a0₽ of this check." in html
    assert "50.00\u00a0₽" in html
    assert Transaction.objects.count() == 1  # only the fixture's: a check records nothing


@pytest.mark.django_db
def test_check_bonuses_is_capped_by_the_spendable_balance(client, login, cashier, anna):
    login(cashier)

    response = cashier_post(client, action="quote", amount="1000.00")

    assert response.context["quote"]["max_redeemable"] == Decimal("50.00")


@pytest.mark.django_db
def test_check_bonuses_for_a_phone_new_to_the_circle(client, login, cashier):
    login(cashier)

    response = cashier_post(client, action="quote", phone="+79995550000", amount="100.00")

    assert response.context["quote"]["customer"] is None
    assert "This phone is new to the circle" in response.content.decode()
    assert not User.objects.filter(phone="+79995550000").exists()


@pytest.mark.django_db
def test_cashier_records_a_purchase_with_redemption(client, login, cashier, business_a, anna):
    login(cashier)

    response = cashier_post(client, amount="100.00", redeem="30.00")

    purchase = Transaction.objects.get(business=business_a, external_id=EXTERNAL_ID)
    assert response.status_code == 302
    assert response["Location"] == f"/portal/cashier/?receipt={purchase.pk}"
    assert flashed(response) == ["The purchase is recorded."]
    assert purchase.source == Transaction.Source.CASHIER
    assert purchase.recorded_by == cashier
    assert purchase.customer == anna
    assert purchase.gross_amount == Decimal("100.00")
    assert purchase.bonuses_redeemed == Decimal("30.00")
    assert purchase.paid_amount == Decimal("70.00")
    assert purchase.bonuses_accrued == Decimal("3.50")
    assert balance(anna.phone) == Decimal("23.50")

    receipt = client.get(response["Location"])

    assert receipt.status_code == 200
    html = receipt.content.decode()
    assert "70.00\u00a0₽" in html  # to pay in money
    assert "3.50\u00a0₽" in html
    assert "23.50\u00a0₽" in html  # the balance now
    assert f'href="/portal/transactions/{purchase.pk}/"' in html


@pytest.mark.django_db
def test_cashier_records_a_purchase_for_a_new_phone(client, login, cashier, business_a):
    login(cashier)

    cashier_post(client, phone="8 999 555-00-00", amount="200.00")

    purchase = Transaction.objects.get(business=business_a, external_id=EXTERNAL_ID)
    assert purchase.customer.phone == "+79995550000"
    assert purchase.bonuses_accrued == Decimal("10.00")
    assert balance("+79995550000") == Decimal("10.00")


@pytest.mark.django_db
def test_the_same_cashier_form_sent_twice_records_once(client, login, cashier, anna):
    login(cashier)
    first = cashier_post(client, amount="100.00")
    client.get(first["Location"])

    again = cashier_post(client, amount="100.00")

    assert flashed(again) == ["This purchase was already recorded."]
    assert again["Location"] == first["Location"]
    assert Transaction.objects.filter(external_id=EXTERNAL_ID).count() == 1
    assert balance(anna.phone) == Decimal("55.00")


@pytest.mark.django_db
def test_a_used_cashier_form_with_other_figures_gets_a_fresh_id_and_records_nothing(client, login, cashier, anna):
    login(cashier)
    client.get(cashier_post(client, amount="100.00")["Location"])

    response = cashier_post(client, amount="250.00")

    assert response.status_code == 400
    form = response.context["form"]
    assert form.non_field_errors() == [
        "This form already recorded another purchase. Check the figures and record again."
    ]
    assert form["external_id"].value() != EXTERNAL_ID
    assert form["amount"].value() == "250.00"
    assert Transaction.objects.filter(recorded_by=cashier).count() == 1


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("fields", "errors"),
    [
        (
            {"amount": "1000.00", "redeem": "100.00"},
            {"redeem": ["Not enough bonuses to spend. Available: 50.00\u00a0₽."]},
        ),
        (
            {"amount": "100.00", "redeem": "40.00"},
            {
                "redeem": [
                    "This check cannot be paid with that many bonuses. At most 30.00\u00a0₽ can be paid with bonuses."
                ]
            },
        ),
        ({"amount": "0"}, {"amount": ["Ensure this value is greater than or equal to 0.01."]}),
        ({"amount": "-5"}, {"amount": ["Ensure this value is greater than or equal to 0.01."]}),
        ({"amount": "abc"}, {"amount": ["Enter a number."]}),
        ({"amount": "10.999"}, {"amount": ["Ensure that there are no more than 2 decimal places."]}),
        ({"amount": ""}, {"amount": ["This field is required."]}),
        (
            {"amount": "2000000.00"},
            {"amount": ["The check amount must be above zero and at most 1000000."]},
        ),
        ({"amount": "10.00", "redeem": "20.00"}, {"redeem": ["Bonuses cannot pay more than the check."]}),
        ({"redeem": "-1"}, {"redeem": ["Ensure this value is greater than or equal to 0."]}),
        ({"phone": "12345"}, {"phone": ["This is not a valid phone number."]}),
        ({"external_id": "pos-1"}, {"external_id": ["Enter a valid value."]}),
    ],
)
def test_refused_purchases_record_nothing(client, login, cashier, anna, fields, errors):
    login(cashier)

    response = cashier_post(client, **fields)

    assert response.status_code == 400
    assert response.context["form"].errors == errors
    assert Transaction.objects.count() == 1
    assert balance(anna.phone) == Decimal("50.00")


@pytest.mark.django_db
def test_cashier_page_link_from_a_customer_card_fills_the_phone(client, login, cashier, anna):
    login(cashier)

    response = client.get("/portal/cashier/", {"phone": "+79991110001"})

    assert response.context["form"]["phone"].value() == "+79991110001"


# --- Settlement -----------------------------------------------------------------------------


@pytest.fixture
def circle(business_a, business_b, buy):
    """In March 2026: 40 of A's bonuses spent at B, 20 of B's spent at A, 10 of A's at A."""
    with time_machine.travel(datetime(2026, 3, 5, 12, 0, tzinfo=MSK), tick=False):
        buy(business_a, "+79991110001", "1000.00")  # Anna: +50 from A
        buy(business_b, "+79991110002", "500.00")  # Boris: +50 from B
    with time_machine.travel(datetime(2026, 3, 6, 12, 0, tzinfo=MSK), tick=False):
        buy(business_b, "+79991110001", "200.00", redeem="40.00")  # A's 40 spent at B
        buy(business_a, "+79991110002", "100.00", redeem="20.00")  # B's 20 spent at A
        buy(business_a, "+79991110001", "100.00", redeem="10.00")  # A's last 10 spent at A


@pytest.mark.django_db
def test_settlement_shows_who_owes_whom_for_the_month(client, login, owner, circle, business_a):
    login(owner)

    response = client.get("/portal/settlement/", {"month": "2026-03"})

    assert response.status_code == 200
    rows = [(row.issuer_name, row.spender_name, row.amount) for row in response.context["rows"]]
    assert rows == [
        ("Кофейня «Зерно»", "Кофейня «Зерно»", Decimal("10.00")),
        ("Кофейня «Зерно»", "Салон «Лён»", Decimal("40.00")),
        ("Салон «Лён»", "Кофейня «Зерно»", Decimal("20.00")),
    ]
    assert response.context["owed_to_us"] == Decimal("20.00")
    assert response.context["we_owe"] == Decimal("40.00")
    assert response.context["own"] == Decimal("10.00")
    assert response.context["net"] == Decimal("-20.00")
    html = response.content.decode()
    assert 'Settlement <span class="muted">· March 2026</span>' in html
    assert "-20.00\u00a0₽" in html
    assert "you owe the circle" in html
    assert 'href="?month=2026-02"' in html
    assert 'href="?month=2026-04"' in html


@pytest.mark.django_db
def test_settlement_from_the_other_side(client, login, owner_b, circle):
    login(owner_b)

    response = client.get("/portal/settlement/", {"month": "2026-03"})

    assert response.context["owed_to_us"] == Decimal("40.00")
    assert response.context["we_owe"] == Decimal("20.00")
    assert response.context["net"] == Decimal("20.00")
    assert [(row.issuer_name, row.spender_name) for row in response.context["rows"]] == [
        ("Кофейня «Зерно»", "Салон «Лён»"),
        ("Салон «Лён»", "Кофейня «Зерно»"),
    ]
    assert "the circle owes you" in response.content.decode()


@pytest.mark.django_db
def test_settlement_of_another_month_is_empty(client, login, owner, circle):
    login(owner)

    response = client.get("/portal/settlement/", {"month": "2026-02"})

    assert response.context["rows"] == []
    assert response.context["net"] == Decimal("0.00")
    assert "No bonuses moved between businesses this month." in response.content.decode()


@pytest.mark.django_db
def test_settlement_defaults_to_this_month_and_refuses_a_bad_month(client, login, owner, circle):
    login(owner)
    with time_machine.travel(datetime(2026, 3, 20, 12, 0, tzinfo=MSK), tick=False):
        current = client.get("/portal/settlement/")
        bad = client.get("/portal/settlement/", {"month": "2026-13"})

    assert current.context["month"].isoformat() == "2026-03-01"
    assert current.context["we_owe"] == Decimal("40.00")
    assert bad.context["form"].errors == {"month": ["Enter a month as YYYY-MM."]}
    assert bad.context["month"].isoformat() == "2026-03-01"


@pytest.mark.django_db
def test_settlement_month_is_the_business_local_month(client, login, owner, business_a, business_b, buy):
    with time_machine.travel(datetime(2026, 3, 20, 12, 0, tzinfo=MSK), tick=False):
        buy(business_a, "+79991110001", "1000.00")
    # 1 April 00:30 in Moscow is still 31 March in UTC.
    with time_machine.travel(datetime(2026, 4, 1, 0, 30, tzinfo=MSK), tick=False):
        buy(business_b, "+79991110001", "100.00", redeem="20.00")
    login(owner)

    march = client.get("/portal/settlement/", {"month": "2026-03"})
    april = client.get("/portal/settlement/", {"month": "2026-04"})

    assert march.context["we_owe"] == Decimal("0.00")
    assert april.context["we_owe"] == Decimal("20.00")


# --- API keys -------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("editor", ["owner", "manager"])
def test_a_new_api_key_is_shown_once_and_works(client, login, business_a, editor, request):
    person = request.getfixturevalue(editor)
    login(person)

    response = client.post("/portal/api-keys/", {"name": "Касса у входа"})

    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    raw_key = response.context["raw_key"]
    assert raw_key.startswith("sk_")
    html = response.content.decode()
    assert raw_key in html
    assert "Copy it now: it is shown only once and cannot be shown again." in html
    (api_key,) = ApiKey.objects.filter(business=business_a)
    assert api_key.name == "Касса у входа"
    assert api_key.created_by == person
    assert authenticate_api_key(raw_key) == api_key
    assert raw_key not in str(client.session.items())

    listing = client.get("/portal/api-keys/").content.decode()

    assert raw_key not in listing
    assert f"sk_{api_key.prefix}_…" in listing
    assert "Касса у входа" in listing


@pytest.mark.django_db
def test_api_key_needs_a_name(client, login, owner):
    login(owner)

    response = client.post("/portal/api-keys/", {"name": ""})

    assert response.context["form"].errors == {"name": ["This field is required."]}
    assert response.context["raw_key"] is None
    assert ApiKey.objects.count() == 0


@pytest.mark.django_db
def test_revoking_an_api_key(client, login, owner, business_a):
    api_key, raw_key = ApiKeyFactory(business=business_a, name="Старая касса")
    login(owner)

    response = client.post(f"/portal/api-keys/{api_key.pk}/revoke/")

    assert response.status_code == 302
    assert response["Location"] == "/portal/api-keys/"
    assert flashed(response) == ["The key “Старая касса” is revoked; it stops working at once."]
    api_key.refresh_from_db()
    assert api_key.revoked_at is not None
    assert authenticate_api_key(raw_key) is None
    client.get("/portal/api-keys/")
    again = client.post(f"/portal/api-keys/{api_key.pk}/revoke/")
    assert flashed(again) == ["The key “Старая касса” was already revoked."]
    assert "revoked" in client.get("/portal/api-keys/").content.decode()


@pytest.mark.django_db
def test_api_key_list_shows_only_this_business_keys(client, login, owner, business_a, business_b):
    ApiKeyFactory(business=business_a, name="Наша касса")
    ApiKeyFactory(business=business_b, name="Их касса")
    login(owner)

    response = client.get("/portal/api-keys/")

    assert [key.name for key in response.context["keys"]] == ["Наша касса"]


@pytest.mark.django_db
def test_services_quote_matches_the_cashier_page(client, login, cashier, business_a, anna):
    """The page shows what the partner API's quote would answer."""
    login(cashier)

    response = cashier_post(client, action="quote", amount="120.00")

    assert response.context["quote"]["max_redeemable"] == services.quote_redemption(
        business=business_a, phone="+79991110001", amount=Decimal("120.00")
    )
