"""Coupons through the partner API: checked at the till, redeemed by the redeem endpoint or by
`coupon` in a purchase body, refused with the reason in the one error shape."""

from decimal import Decimal

import pytest

from crosspromo import services
from crosspromo.models import Coupon
from crosspromo.services import ChainConfig
from loyalty import services as loyalty
from tests.factories import ApiKeyFactory, BusinessFactory, LoyaltyProgramFactory

pytestmark = pytest.mark.django_db

D = Decimal
ANNA, BORIS = "+79160000001", "+79160000002"


@pytest.fixture
def coupon():
    cafe = LoyaltyProgramFactory().business
    salon = LoyaltyProgramFactory(business=BusinessFactory(name="Салон"), accrual_rate=D(10)).business
    chain = services.create_chain(
        ChainConfig(
            source=cafe,
            target=salon,
            reward_kind="fixed",
            reward_value=D(250),
            min_purchase_amount=D(300),
            min_target_purchase=D(1000),
        )
    )
    services.accept_chain(chain, business=salon)
    purchase = loyalty.record_transaction(business=cafe, external_id="c-1", amount=D(500), phone=ANNA).transaction
    return purchase.coupons_issued.get()


def client_of(api_client, business):
    _, raw_key = ApiKeyFactory(business=business)
    api_client.credentials(HTTP_AUTHORIZATION=f"Api-Key {raw_key}", HTTP_ACCEPT_LANGUAGE="en")
    return api_client


def test_the_till_checks_a_coupon_and_sees_why_it_cannot_be_used(api_client, coupon):
    till = client_of(api_client, coupon.chain.target)
    body = till.get(f"/api/v1/partner/coupons/{coupon.qr_payload}/", {"amount": "1500", "phone": ANNA}).json()
    assert body["usable"] is True and body["code"] == coupon.code
    assert (body["discount"], body["bonus"], body["reason"]) == ("250.00", "0.00", None)
    small = till.get(f"/api/v1/partner/coupons/{coupon.code}/", {"amount": "900"}).json()
    assert small["usable"] is False and "1000" in small["reason"]
    other = till.get(f"/api/v1/partner/coupons/{coupon.code}/", {"amount": "1500", "phone": BORIS}).json()
    assert other["usable"] is False and "another customer" in other["reason"]
    assert till.get("/api/v1/partner/coupons/NOSUCH99/").status_code == 404
    # A partner outside the chain does not learn that the code exists.
    stranger = client_of(api_client, LoyaltyProgramFactory().business)
    assert stranger.get(f"/api/v1/partner/coupons/{coupon.code}/").status_code == 404


def test_the_redeem_endpoint_records_the_purchase_with_the_discount_once(api_client, coupon):
    till = client_of(api_client, coupon.chain.target)
    body = {"external_id": "s-1", "phone": ANNA, "amount": "1500.00"}
    first = till.post(f"/api/v1/partner/coupons/{coupon.code.lower()}/redeem/", body, format="json")
    assert first.status_code == 201, first.json()
    answer = first.json()
    assert (answer["coupon"], answer["coupon_discount"], answer["paid_amount"]) == (coupon.code, "250.00", "1250.00")
    assert answer["bonuses_accrued"] == "125.00"  # 10% of what was paid, not of the discount
    again = till.post(f"/api/v1/partner/coupons/{coupon.code}/redeem/", body, format="json")
    assert again.status_code == 200 and again.json() == answer  # a retry: the first answer
    used = till.post(
        f"/api/v1/partner/coupons/{coupon.code}/redeem/", body | {"external_id": "s-2"}, format="json"
    ).json()
    assert "coupon" in used["error"]["fields"]
    coupon.refresh_from_db()
    assert coupon.status == Coupon.Status.REDEEMED


def test_a_coupon_in_the_purchase_body_and_a_refusal_that_changes_nothing(api_client, coupon):
    till = client_of(api_client, coupon.chain.target)
    refused = till.post(
        "/api/v1/partner/transactions/",
        {"external_id": "s-1", "phone": BORIS, "amount": "1500.00", "coupon": coupon.code},
        format="json",
    )
    assert refused.status_code == 400
    assert refused.json()["error"]["fields"]["coupon"]
    assert not coupon.chain.target.transactions.exists()
    taken = till.post(
        "/api/v1/partner/transactions/",
        {"external_id": "s-1", "phone": ANNA, "amount": "1500.00", "coupon": coupon.code},
        format="json",
    )
    assert taken.status_code == 201 and taken.json()["coupon_discount"] == "250.00"
