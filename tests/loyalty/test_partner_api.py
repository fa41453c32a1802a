"""The partner API as a POS uses it: API keys, purchases, refunds, customers, quotes."""

import pytest
from django.core.management import call_command

from accounts.models import ApiKey
from accounts.services import revoke_api_key
from loyalty import services
from loyalty.models import LedgerEntry, Transaction
from tests.factories import ApiKeyFactory, BusinessFactory
from tests.loyalty.conftest import D

pytestmark = pytest.mark.django_db

PURCHASES = "/api/v1/partner/transactions/"


@pytest.fixture
def pos(api_client, cafe):
    _, raw_key = ApiKeyFactory(business=cafe)
    api_client.credentials(HTTP_AUTHORIZATION=f"Api-Key {raw_key}")
    return api_client


def post(client, path, body):
    return client.post(path, body, format="json")


# --- Keys ----------------------------------------------------------------------------------


@pytest.mark.parametrize("header", [None, "Api-Key nonsense", "Api-Key sk_deadbeef_x", "Bearer abc", "Api-Key "])
def test_calls_without_a_valid_key_are_refused(api_client, cafe, header):
    if header:
        api_client.credentials(HTTP_AUTHORIZATION=header)

    response = post(api_client, PURCHASES, {"external_id": "1", "phone": "+79991112233", "amount": "100"})

    assert response.status_code == 401
    assert response.json()["error"]["code"] in {"invalid_api_key", "not_authenticated", "token_not_valid"}
    assert Transaction.objects.count() == 0


def test_a_revoked_key_stops_working_at_once(api_client, cafe):
    api_key, raw_key = ApiKeyFactory(business=cafe)
    api_client.credentials(HTTP_AUTHORIZATION=f"Api-Key {raw_key}")
    assert api_client.get("/api/v1/partner/customers/+79991112233/").status_code == 200

    assert revoke_api_key(api_key=api_key) is True
    assert revoke_api_key(api_key=api_key) is False

    assert api_client.get("/api/v1/partner/customers/+79991112233/").status_code == 401


def test_keys_are_stored_hashed(cafe):
    api_key, raw_key = ApiKeyFactory(business=cafe)

    stored = ApiKey.objects.get(pk=api_key.pk)
    assert raw_key not in {stored.key_hash, stored.prefix, stored.name}
    assert raw_key.startswith(f"sk_{stored.prefix}_")


def test_create_api_key_command_prints_a_working_key(api_client, cafe, capsys):
    call_command("create_api_key", "cafe", "--name", "Касса 1")

    raw_key = capsys.readouterr().out.strip().splitlines()[-1]
    api_client.credentials(HTTP_AUTHORIZATION=f"Api-Key {raw_key}")
    assert api_client.get("/api/v1/partner/customers/+79991112233/").status_code == 200
    assert ApiKey.objects.get().name == "Касса 1"


# --- Purchases ------------------------------------------------------------------------------


def test_purchase_is_recorded_and_answered(pos, cafe):
    response = post(pos, PURCHASES, {"external_id": "A-1", "phone": "8 999 111-22-33", "amount": "1000.00"})

    assert response.status_code == 201
    body = response.json()
    purchase = Transaction.objects.get()
    assert body == {
        "transaction_id": str(purchase.pk),
        "external_id": "A-1",
        "amount": "1000.00",
        "bonuses_redeemed": "0.00",
        "coupon_discount": "0.00",
        "coupon": None,
        "paid_amount": "1000.00",
        "bonuses_accrued": "50.00",
        "status": "completed",
        "balance": "50.00",
        "tier": "Bronze",
    }
    assert purchase.business == cafe
    assert purchase.source == "api"


def test_same_purchase_again_is_200_with_the_same_answer(pos):
    body = {
        "external_id": "A-1",
        "phone": "+79991112233",
        "amount": "1000.00",
        "occurred_at": "2026-11-20T12:00:00+03:00",
    }
    first = post(pos, PURCHASES, body)
    second = post(pos, PURCHASES, body)

    assert (first.status_code, second.status_code) == (201, 200)
    assert first.json() == second.json()
    assert LedgerEntry.objects.filter(kind="accrual").count() == 1


def test_same_id_with_a_different_body_is_409(pos):
    post(pos, PURCHASES, {"external_id": "A-1", "phone": "+79991112233", "amount": "1000.00"})

    response = post(pos, PURCHASES, {"external_id": "A-1", "phone": "+79991112233", "amount": "999.00"})

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "idempotency_conflict"


def test_purchase_with_redemption(pos, cafe):
    post(pos, PURCHASES, {"external_id": "A-1", "phone": "+79991112233", "amount": "2000"})  # 100 bonuses

    response = post(pos, PURCHASES, {"external_id": "A-2", "phone": "+79991112233", "amount": "300", "redeem": "90"})

    assert response.status_code == 201
    body = response.json()
    assert (body["bonuses_redeemed"], body["paid_amount"], body["bonuses_accrued"], body["balance"]) == (
        "90.00",
        "210.00",
        "10.50",
        "20.50",
    )


def test_redemption_over_the_balance_is_409_and_records_nothing(pos):
    post(pos, PURCHASES, {"external_id": "A-1", "phone": "+79991112233", "amount": "200"})  # 10 bonuses

    response = post(pos, PURCHASES, {"external_id": "A-2", "phone": "+79991112233", "amount": "300", "redeem": "11"})

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "insufficient_bonuses"
    assert not Transaction.objects.filter(external_id="A-2").exists()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"phone": "+79991112233", "amount": "100"}, "external_id"),
        ({"external_id": "1", "amount": "100"}, "phone"),
        ({"external_id": "1", "phone": "+79991112233"}, "amount"),
        ({"external_id": "1", "phone": "+79991112233", "amount": "0"}, "amount"),
        ({"external_id": "1", "phone": "+79991112233", "amount": "1.001"}, "amount"),
        ({"external_id": "1", "phone": "+79991112233", "amount": "abc"}, "amount"),
        ({"external_id": "1", "phone": "+79991112233", "amount": "100", "redeem": "-1"}, "redeem"),
        ({"external_id": "1", "phone": "+79991112233", "amount": "100", "occurred_at": "yesterday"}, "occurred_at"),
        ({"external_id": "x" * 101, "phone": "+79991112233", "amount": "100"}, "external_id"),
    ],
)
def test_bad_fields_are_named(pos, body, field):
    response = post(pos, PURCHASES, body)

    assert response.status_code == 400
    assert field in response.json()["error"]["fields"]
    assert Transaction.objects.count() == 0


def test_an_invalid_phone_is_a_400(pos):
    response = post(pos, PURCHASES, {"external_id": "1", "phone": "12", "amount": "100"})

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_phone"


# --- Refunds ------------------------------------------------------------------------------------


def test_refund_in_full_and_again(pos):
    post(pos, PURCHASES, {"external_id": "A-1", "phone": "+79991112233", "amount": "1000"})

    first = post(pos, f"{PURCHASES}A-1/refund/", {})
    again = post(pos, f"{PURCHASES}A-1/refund/", {})

    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json() == {
        "refund_id": "full",
        "amount": "1000.00",
        "money_refunded": "1000.00",
        "bonuses_taken_back": "50.00",
        "bonuses_returned": "0.00",
        "bonuses_unrecovered": "0.00",
        "transaction_status": "refunded",
        "balance": "0.00",
    }


def test_partial_refund_needs_its_own_id(pos):
    post(pos, PURCHASES, {"external_id": "A-1", "phone": "+79991112233", "amount": "1000"})

    without_id = post(pos, f"{PURCHASES}A-1/refund/", {"amount": "100"})
    with_id = post(pos, f"{PURCHASES}A-1/refund/", {"amount": "100", "refund_id": "R-1"})
    too_much = post(pos, f"{PURCHASES}A-1/refund/", {"amount": "901", "refund_id": "R-2"})

    assert without_id.status_code == 400
    assert without_id.json()["error"]["code"] == "refund_id_required"
    assert with_id.status_code == 201
    assert with_id.json()["bonuses_taken_back"] == "5.00"
    assert with_id.json()["transaction_status"] == "partially_refunded"
    assert too_much.status_code == 409
    assert too_much.json()["error"]["refundable"] == "900.00"


def test_refund_of_an_unknown_purchase_is_404(pos):
    response = post(pos, f"{PURCHASES}nope/refund/", {})

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "transaction_not_found"


def test_a_business_cannot_refund_another_business_purchase(api_client, pos, cafe):
    post(pos, PURCHASES, {"external_id": "A-1", "phone": "+79991112233", "amount": "1000"})
    _, other_key = ApiKeyFactory(business=BusinessFactory(slug="other"))
    api_client.credentials(HTTP_AUTHORIZATION=f"Api-Key {other_key}")

    response = post(api_client, f"{PURCHASES}A-1/refund/", {})

    assert response.status_code == 404
    assert Transaction.objects.get().status == "completed"


# --- Customers and quotes -------------------------------------------------------------------------


def test_customer_balance_by_phone(pos, cafe, customer):
    services.record_transaction(business=cafe, customer=customer, external_id="1", amount=D(1000))

    known = pos.get("/api/v1/partner/customers/8(999)111-22-33/")
    unknown = pos.get("/api/v1/partner/customers/+79990000000/")
    invalid = pos.get("/api/v1/partner/customers/abc/")

    assert known.json() == {
        "phone": "+79991112233",
        "is_member": True,
        "balance": "50.00",
        "spendable": "50.00",
        "tier": "Bronze",
    }
    assert unknown.json() == {
        "phone": "+79990000000",
        "is_member": False,
        "balance": "0.00",
        "spendable": "0.00",
        "tier": None,
    }
    assert invalid.status_code == 400


def test_quote_says_how_much_of_a_check_bonuses_can_pay(pos, cafe, customer):
    services.record_transaction(business=cafe, customer=customer, external_id="1", amount=D(2000))  # 100

    small = post(pos, "/api/v1/partner/redemptions/quote/", {"phone": customer.phone, "amount": "100"})
    large = post(pos, "/api/v1/partner/redemptions/quote/", {"phone": customer.phone, "amount": "1000"})

    assert small.json() == {"max_redeemable": "30.00"}
    assert large.json() == {"max_redeemable": "100.00"}
