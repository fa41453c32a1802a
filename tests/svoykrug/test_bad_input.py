"""Bad input at every main write door gets a clear 4xx and changes nothing.

Wrong types, huge numbers (1e30, 10^100 as a number and as a string), negative amounts, NaN
and Infinity, malformed phones, unknown ids, another partner's ids, invalid UTF-8 and bodies
nested too deeply: the API answers in the one error shape
`{"error": {"code", "message", "fields"?}}` with a message that says what is wrong, the
webhooks in the same shape, the portal's CSV import with the reason per row; and no row of
the ledger, the purchases, the profile, the devices, the registrations or the votes moves.
"""

import base64
import hashlib
import json
from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import RefreshToken

from accounts.models import Membership, User
from crosspromo import services as crosspromo
from crosspromo.models import Coupon
from crosspromo.services import ChainConfig
from events import services as events
from events.models import Event, Registration, Vote
from events.services import EventCreate
from integrations.models import ImportJob, WebhookDelivery
from loyalty import services as loyalty
from loyalty.models import BonusAccount, BonusLot, LedgerEntry, Refund, Transaction
from notifications.models import Device, NotificationLog, NotificationPreferences
from tests.factories import (
    ApiKeyFactory,
    BusinessFactory,
    CRMIntegrationFactory,
    LoyaltyProgramFactory,
    MembershipFactory,
)
from tests.integrations.support import (
    as_body,
    fixture_bytes,
    fixture_json,
    onec_sale,
    yclients_record,
    yclients_webhook,
)

pytestmark = pytest.mark.django_db

ANNA = "+79160000001"
JSON = "application/json"
HUGE = 10**100
# Every number a money field must refuse, as JSON numbers and as strings.
BAD_AMOUNTS = [
    1e30,
    "1e30",
    HUGE,
    str(HUGE),
    -5,
    "-5.00",
    0,
    "NaN",
    "nan",
    "Infinity",
    "-Infinity",
    "12.345",
    "",
    "двенадцать",
    True,
    [],
    {},
    None,
]
BAD_PHONES = ["abc", "+7", "+7999123456789012345", "", "8 (999) 123-45-6", "1e30", str(HUGE), ["+79160000001"], None]
# Raw bodies no JSON door reads: invalid UTF-8, NaN literals, JSON of the wrong shape, nesting.
BAD_BODIES = [
    b'{"phone": "\xff\xfe\xfa"}',
    b"\xc3\x28\xa0\xa1",
    b'{"amount": NaN}',
    b'{"amount": Infinity}',
    b"[]",
    b'"text"',
    b"null",
    b"42",
    b"{",
    b"[" * 5000 + b"]" * 5000,
    b'{"a":' * 3000 + b"1" + b"}" * 3000,
]


# --- The world the bad input is thrown at --------------------------------------------------------


@pytest.fixture
def cafe(tiers):
    return LoyaltyProgramFactory(business=BusinessFactory(name="Кофейня", slug="cafe")).business


@pytest.fixture
def salon(tiers):
    return LoyaltyProgramFactory(business=BusinessFactory(name="Салон", slug="salon")).business


@pytest.fixture
def anna(cafe, salon):
    """A customer with a purchase at each partner (cafe's CHK-1, salon's SALON-1) and a coupon for the cafe."""
    chain = crosspromo.create_chain(
        ChainConfig(
            source=salon,
            target=cafe,
            reward_kind="fixed",
            reward_value=Decimal(100),
            min_purchase_amount=Decimal(100),
            min_target_purchase=Decimal(300),
        )
    )
    crosspromo.accept_chain(chain, business=cafe)
    loyalty.record_transaction(business=salon, external_id="SALON-1", amount=Decimal(500), phone=ANNA)
    loyalty.record_transaction(business=cafe, external_id="CHK-1", amount=Decimal(1000), phone=ANNA)
    return User.objects.get(phone=ANNA)


@pytest.fixture
def coupon(anna):
    return Coupon.objects.get(customer=anna)


def api(**headers) -> APIClient:
    client = APIClient()
    client.raise_request_exception = False  # a 500 is an answer to look at, not an exception in the test
    client.credentials(HTTP_ACCEPT_LANGUAGE="en", **headers)
    return client


@pytest.fixture
def as_cafe(cafe):
    return api(HTTP_AUTHORIZATION=f"Api-Key {ApiKeyFactory(business=cafe)[1]}")


@pytest.fixture
def as_anna(anna):
    return api(HTTP_AUTHORIZATION=f"Bearer {RefreshToken.for_user(anna).access_token}")


@pytest.fixture
def nobody():
    return api()


@pytest.fixture
def published(cafe):
    owner = MembershipFactory(business=cafe, role=Membership.Role.OWNER).user
    starts = timezone.now() + timedelta(days=3)
    return events.create_event(
        EventCreate(
            business=cafe,
            title="Дегустация",
            starts_at=starts,
            ends_at=starts + timedelta(hours=2),
            capacity=5,
            price=Decimal(1_000_000),
        ),
        owner,
    )


@pytest.fixture
def proposal(cafe):
    owner = MembershipFactory(business=cafe, role=Membership.Role.OWNER).user
    starts = timezone.now() + timedelta(days=3)
    return events.create_event(
        EventCreate(
            business=cafe,
            title="Мастер-класс",
            starts_at=starts,
            ends_at=starts + timedelta(hours=2),
            capacity=5,
            propose=True,
            vote_threshold=3,
            voting_deadline=timezone.now() + timedelta(hours=24),
        ),
        owner,
    )


# --- What must not change ------------------------------------------------------------------------

COUNTED = [
    User,
    Transaction,
    Refund,
    LedgerEntry,
    BonusLot,
    Registration,
    Vote,
    Device,
    NotificationLog,
    ImportJob,
    WebhookDelivery,
]


def state() -> dict:
    """Row counts, balances, coupons', events' and profiles' fields: what a refused request leaves alone."""
    snapshot = {model.__name__: model.objects.count() for model in COUNTED}
    snapshot["balances"] = sorted(BonusAccount.objects.values_list("user_id", "balance"))
    snapshot["transactions"] = sorted(
        Transaction.objects.values_list("pk", "status", "gross_amount", "refunded_amount", "bonuses_accrued")
    )
    snapshot["coupons"] = sorted(Coupon.objects.values_list("pk", "status", "redeeming_transaction_id"))
    snapshot["events"] = sorted(Event.objects.values_list("pk", "status", "registered_count"))
    snapshot["profiles"] = sorted(
        User.objects.values_list("pk", "first_name", "last_name", "email", "birth_date", "marketing_consent")
    )
    snapshot["preferences"] = sorted(
        NotificationPreferences.objects.values_list("user_id", "quiet_hours_start", "quiet_hours_end", "time_zone")
    )
    return snapshot


@pytest.fixture
def unchanged():
    """`unchanged.check()` after the bad request: every counted row is as it was before."""

    class Watch:
        def __init__(self):
            self.before = None

        def start(self):
            self.before = state()

        def check(self):
            assert state() == self.before

    watch = Watch()
    yield watch


def refused(response, status=None, *, code=None, field=None) -> dict:
    """A 4xx in the one error shape with a message; `field` must be named in `fields`."""
    assert 400 <= response.status_code < 500, (response.status_code, response.content[:500])
    if status is not None:
        assert response.status_code == status, (response.status_code, response.content[:500])
    assert response["Content-Type"].startswith(JSON), response["Content-Type"]
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert isinstance(error.get("code"), str) and error["code"], error
    assert isinstance(error.get("message"), str) and len(error["message"]) > 3, error
    if code is not None:
        assert error["code"] == code, error
    if field is not None:
        assert field in error.get("fields", {}), error
        assert all(message for message in error["fields"][field]), error
    return error


def post_json(client, url, payload, method="post"):
    return getattr(client, method)(url, data=json.dumps(payload), content_type=JSON)


# --- OTP ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("phone", BAD_PHONES + [1e30, HUGE, "+7" + "9" * 40])
def test_otp_request_refuses_a_phone_it_cannot_read(nobody, sms, unchanged, phone):
    unchanged.start()

    error = refused(post_json(nobody, "/api/v1/auth/otp/", {"phone": phone}), 400)

    assert error["code"] in ("invalid", "invalid_phone"), error
    assert sms.sent == []
    unchanged.check()


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"code_id": "no-such-code", "code": "1234"}, None),
        ({"code_id": HUGE, "code": "1234"}, None),
        ({"code_id": "x", "code": "abcd"}, "code"),
        ({"code_id": "x", "code": 1e30}, "code"),
        ({"code_id": "x", "code": str(HUGE)}, "code"),
        ({"code_id": "x", "code": -1234}, "code"),
        ({"code_id": "x", "code": "NaN"}, "code"),
        ({"code_id": [], "code": "1234"}, "code_id"),
        ({"code_id": "x" * 65, "code": "1234"}, "code_id"),
        ({"code_id": None, "code": None}, "code_id"),
        ({"code_id": "x", "code": "1234", "referral_code": "NO-SUCH-FRIEND"}, None),
        ({"code_id": "x", "code": "1234", "referral_code": 1e30}, None),
    ],
)
def test_otp_verify_refuses_bad_codes_and_logs_nobody_in(nobody, unchanged, payload, field):
    unchanged.start()

    error = refused(post_json(nobody, "/api/v1/auth/otp/verify/", payload), 400, field=field)

    assert "access" not in error
    unchanged.check()


def test_otp_verify_with_a_real_challenge_and_a_wrong_code_is_refused(nobody, sms, unchanged):
    challenge = post_json(nobody, "/api/v1/auth/otp/", {"phone": ANNA}).json()
    unchanged.start()

    for code in ["0000000", "1e30", str(HUGE)[:12], "-1", "١٢٣٤"]:
        response = post_json(nobody, "/api/v1/auth/otp/verify/", {"code_id": challenge["code_id"], "code": code})
        refused(response, 400)

    unchanged.check()


# --- Partner: purchase --------------------------------------------------------------------------

PURCHASE = "/api/v1/partner/transactions/"


def purchase(**changes):
    return {"external_id": "CHK-NEW", "phone": ANNA, "amount": "1250.00"} | changes


@pytest.mark.parametrize("amount", BAD_AMOUNTS)
def test_a_purchase_with_an_amount_that_is_not_money_records_nothing(as_cafe, anna, unchanged, amount):
    unchanged.start()

    refused(post_json(as_cafe, PURCHASE, purchase(amount=amount)), 400, code="invalid", field="amount")

    unchanged.check()


@pytest.mark.parametrize("redeem", [1e30, "1e30", HUGE, str(HUGE), -1, "-0.01", "NaN", "Infinity", "0.001", []])
def test_a_purchase_redeeming_an_impossible_sum_records_nothing(as_cafe, anna, unchanged, redeem):
    unchanged.start()

    refused(post_json(as_cafe, PURCHASE, purchase(redeem=redeem)), 400, code="invalid", field="redeem")

    unchanged.check()


def test_a_purchase_redeeming_more_than_the_balance_records_nothing(as_cafe, anna, unchanged):
    unchanged.start()

    error = refused(post_json(as_cafe, PURCHASE, purchase(redeem="300.00")), 409)

    assert error["code"] == "insufficient_bonuses"

    unchanged.check()


@pytest.mark.parametrize("phone", BAD_PHONES)
def test_a_purchase_for_a_phone_that_is_not_one_records_nothing(as_cafe, anna, unchanged, phone):
    unchanged.start()

    error = refused(post_json(as_cafe, PURCHASE, purchase(phone=phone)), 400)

    assert error["code"] == "invalid_phone" or "phone" in error.get("fields", {}), error
    unchanged.check()


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"external_id": ""}, "external_id"),
        ({"external_id": "x" * 101}, "external_id"),
        ({"external_id": []}, "external_id"),
        ({"external_id": {"id": 1}}, "external_id"),
        ({"external_id": None}, "external_id"),
        ({"occurred_at": "yesterday"}, "occurred_at"),
        ({"occurred_at": 1e30}, "occurred_at"),
        ({"occurred_at": "2026-13-45T00:00:00Z"}, "occurred_at"),
        ({"occurred_at": "0001-01-01T00:00:00+05:00"}, "occurred_at"),
        ({"occurred_at": "9999-12-31T23:59:59-05:00"}, "occurred_at"),
        ({"coupon": "x" * 65}, "coupon"),
        ({"coupon": ["SK-1"]}, "coupon"),
    ],
)
def test_a_purchase_with_a_field_of_the_wrong_kind_records_nothing(as_cafe, anna, unchanged, changes, field):
    unchanged.start()

    refused(post_json(as_cafe, PURCHASE, purchase(**changes)), 400, field=field)

    unchanged.check()


@pytest.mark.parametrize("phone", [ANNA, "+79160000099"], ids=["member", "new phone"])
@pytest.mark.parametrize(
    "changes",
    [
        {"occurred_at": "9999-12-31T23:59:59Z"},  # in the future
        {"occurred_at": "2001-01-01T00:00:00Z"},  # older than the backdating allows
        {"coupon": "NO-SUCH-COUPON"},
        {"amount": "1000001.00"},  # over LOYALTY_MAX_CHECK_AMOUNT
        {"redeem": "2000.00"},  # more than the check
    ],
)
def test_a_purchase_the_rules_refuse_records_nothing_not_even_a_new_customer(as_cafe, anna, unchanged, changes, phone):
    unchanged.start()

    refused(post_json(as_cafe, PURCHASE, purchase(phone=phone, **changes)), 400)

    unchanged.check()


@pytest.mark.parametrize("body", BAD_BODIES)
def test_a_purchase_body_that_is_not_a_json_object_records_nothing(as_cafe, anna, unchanged, body):
    unchanged.start()

    refused(as_cafe.post(PURCHASE, data=body, content_type=JSON), 400)

    unchanged.check()


def test_the_same_external_id_with_other_data_is_a_conflict_and_changes_nothing(as_cafe, anna, unchanged):
    unchanged.start()

    refused(post_json(as_cafe, PURCHASE, purchase(external_id="CHK-1", amount="1.00")), 409)

    unchanged.check()


def test_a_purchase_without_a_key_or_with_a_wrong_one_records_nothing(nobody, anna, unchanged):
    unchanged.start()

    refused(post_json(nobody, PURCHASE, purchase()), 401)
    nobody.credentials(HTTP_AUTHORIZATION="Api-Key " + "x" * 10_000)
    refused(post_json(nobody, PURCHASE, purchase()), 401)
    nobody.credentials(HTTP_AUTHORIZATION="Api-Key \x00")
    refused(post_json(nobody, PURCHASE, purchase()), 401)

    unchanged.check()


# --- Partner: refund ----------------------------------------------------------------------------


def refund_url(external_id):
    return f"/api/v1/partner/transactions/{external_id}/refund/"


@pytest.mark.parametrize("amount", [a for a in BAD_AMOUNTS if a is not None])
def test_a_refund_of_an_amount_that_is_not_money_changes_nothing(as_cafe, anna, unchanged, amount):
    unchanged.start()

    refused(post_json(as_cafe, refund_url("CHK-1"), {"amount": amount, "refund_id": "R-1"}), 400, field="amount")

    unchanged.check()


@pytest.mark.parametrize(
    ("payload", "status"),
    [
        ({"amount": "1000.01", "refund_id": "R-1"}, 409),  # more than the check
        ({"amount": "10.00"}, 400),  # a partial refund needs its refund_id
        ({"amount": "10.00", "refund_id": "x" * 101}, 400),
        ({"amount": "10.00", "refund_id": []}, 400),
    ],
)
def test_a_refund_the_rules_refuse_changes_nothing(as_cafe, anna, unchanged, payload, status):
    unchanged.start()

    refused(post_json(as_cafe, refund_url("CHK-1"), payload), status)

    unchanged.check()


@pytest.mark.parametrize("external_id", ["NO-SUCH-CHECK", "SALON-1", "x" * 300, "%00", "%E2%80%AE", str(HUGE)])
def test_a_refund_of_an_unknown_or_another_partners_purchase_is_not_found(as_cafe, anna, unchanged, external_id):
    """SALON-1 is the salon's purchase: the cafe's key does not see it."""
    unchanged.start()

    refused(post_json(as_cafe, refund_url(external_id), {}), 404, code="transaction_not_found")

    unchanged.check()


@pytest.mark.parametrize("body", BAD_BODIES)
def test_a_refund_body_that_is_not_a_json_object_changes_nothing(as_cafe, anna, unchanged, body):
    unchanged.start()

    refused(as_cafe.post(refund_url("CHK-1"), data=body, content_type=JSON), 400)

    unchanged.check()


# --- Partner: coupon redeem, customer lookup, quote -----------------------------------------------


def redeem_url(code):
    return f"/api/v1/partner/coupons/{code}/redeem/"


@pytest.mark.parametrize("code", ["NO-SUCH-COUPON", "x" * 300, "%00", str(HUGE)])
def test_redeeming_an_unknown_coupon_records_nothing(as_cafe, coupon, unchanged, code):
    unchanged.start()

    refused(post_json(as_cafe, redeem_url(code), purchase(amount="1500.00")), 400, field="coupon")

    unchanged.check()


def test_another_partners_coupon_cannot_be_redeemed_or_seen(salon, coupon, unchanged):
    """The coupon is for the cafe; a third partner's key neither redeems nor sees it."""
    stranger = LoyaltyProgramFactory(business=BusinessFactory(name="Цветы", slug="flowers")).business
    as_stranger = api(HTTP_AUTHORIZATION=f"Api-Key {ApiKeyFactory(business=stranger)[1]}")
    unchanged.start()

    refused(post_json(as_stranger, redeem_url(coupon.code), purchase(amount="1500.00")), 400, field="coupon")
    refused(as_stranger.get(f"/api/v1/partner/coupons/{coupon.code}/"), 404)

    unchanged.check()


@pytest.mark.parametrize("amount", BAD_AMOUNTS)
def test_redeeming_a_coupon_on_an_amount_that_is_not_money_records_nothing(as_cafe, coupon, unchanged, amount):
    unchanged.start()

    refused(post_json(as_cafe, redeem_url(coupon.code), purchase(amount=amount)), 400, field="amount")

    unchanged.check()


def test_redeeming_a_coupon_for_another_customer_records_nothing(as_cafe, coupon, unchanged):
    unchanged.start()

    refused(
        post_json(as_cafe, redeem_url(coupon.code), purchase(phone="+79160000002", amount="1500.00")),
        400,
        field="coupon",
    )

    unchanged.check()


@pytest.mark.parametrize("phone", ["abc", "+7", "%2B7999123456789012345", "1e30", str(HUGE), "%00", "%FF%FE"])
def test_looking_up_a_phone_that_is_not_one_is_refused(as_cafe, anna, unchanged, phone):
    unchanged.start()

    refused(as_cafe.get(f"/api/v1/partner/customers/{phone}/"), 400, code="invalid_phone")

    unchanged.check()


@pytest.mark.parametrize(
    "payload",
    [
        {"phone": ANNA, "amount": 1e30},
        {"phone": ANNA, "amount": str(HUGE)},
        {"phone": ANNA, "amount": "-1"},
        {"phone": ANNA, "amount": "NaN"},
        {"phone": "abc", "amount": "100"},
        {"phone": [], "amount": "100"},
    ],
)
def test_a_quote_for_bad_input_is_refused(as_cafe, anna, unchanged, payload):
    unchanged.start()

    refused(post_json(as_cafe, "/api/v1/partner/redemptions/quote/", payload), 400)

    unchanged.check()


# --- The mobile app: profile, devices, events ------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"first_name": []}, "first_name"),
        ({"first_name": "x" * 1000}, "first_name"),
        ({"first_name": "\x00"}, "first_name"),
        ({"email": "not an email"}, "email"),
        ({"email": "a@" + "b" * 300 + ".com"}, "email"),
        ({"birth_date": "0000-00-00"}, "birth_date"),
        ({"birth_date": "0001-01-01"}, "birth_date"),
        ({"birth_date": "9999-12-31"}, "birth_date"),
        ({"birth_date": "99999-01-01"}, "birth_date"),
        ({"birth_date": 1e30}, "birth_date"),
        ({"marketing_consent": "maybe"}, "marketing_consent"),
        ({"marketing_consent": HUGE}, "marketing_consent"),
        ({"marketing_consent": []}, "marketing_consent"),
    ],
)
def test_a_profile_change_with_a_bad_field_changes_nothing(as_anna, unchanged, payload, field):
    unchanged.start()

    refused(post_json(as_anna, "/api/v1/me/", payload, method="patch"), 400, code="invalid", field=field)

    unchanged.check()


@pytest.mark.parametrize("body", BAD_BODIES)
def test_a_profile_body_that_is_not_a_json_object_changes_nothing(as_anna, unchanged, body):
    unchanged.start()

    refused(as_anna.patch("/api/v1/me/", data=body, content_type=JSON), 400)

    unchanged.check()


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"token": "fcm-1", "platform": "symbian"}, "platform"),
        ({"token": "fcm-1", "platform": 1e30}, "platform"),
        ({"token": "", "platform": "android"}, "token"),
        ({"token": "x" * 600, "platform": "android"}, "token"),
        ({"token": ["fcm-1"], "platform": "android"}, "token"),
        ({"token": "\x00", "platform": "android"}, "token"),
        ({"token": "fcm-1", "platform": "android", "app_version": "x" * 51}, "app_version"),
        ({"platform": "android"}, "token"),
    ],
)
def test_registering_a_device_with_a_bad_field_registers_nothing(as_anna, unchanged, payload, field):
    unchanged.start()

    refused(post_json(as_anna, "/api/v1/me/devices/", payload), 400, code="invalid", field=field)

    unchanged.check()


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"quiet_hours_start": "25:00"}, "quiet_hours_start"),
        ({"quiet_hours_start": 1e30}, "quiet_hours_start"),
        ({"time_zone": "Mars/Olympus"}, "time_zone"),
        ({"time_zone": "../../etc/passwd"}, "time_zone"),
        ({"time_zone": "\x00"}, "time_zone"),
        ({"push_enabled": "maybe"}, "push_enabled"),
    ],
)
def test_notification_preferences_with_a_bad_field_change_nothing(as_anna, unchanged, payload, field):
    unchanged.start()

    refused(post_json(as_anna, "/api/v1/me/notification-preferences/", payload, method="patch"), 400, field=field)

    unchanged.check()


@pytest.mark.parametrize("event_id", ["999999", str(HUGE), str(2**63), "0"])
@pytest.mark.parametrize("action", ["register", "cancel", "vote"])
def test_events_that_do_not_exist_are_not_found(as_anna, published, unchanged, event_id, action):
    unchanged.start()

    refused(post_json(as_anna, f"/api/v1/events/{event_id}/{action}/", {"vote": "up"}), 404, code="not_found")

    unchanged.check()


@pytest.mark.parametrize("event_id", ["-1", "abc", "1e30", "%00"])
def test_an_event_id_that_is_not_a_number_is_not_found(as_anna, published, unchanged, event_id):
    unchanged.start()

    refused(post_json(as_anna, f"/api/v1/events/{event_id}/register/", {}), 404)

    unchanged.check()


def test_registering_for_a_seat_the_customer_cannot_pay_changes_nothing(as_anna, published, unchanged):
    unchanged.start()

    refused(as_anna.post(f"/api/v1/events/{published.pk}/register/"), 409)

    unchanged.check()


def test_voting_on_a_published_event_is_refused(as_anna, published, unchanged):
    unchanged.start()

    refused(post_json(as_anna, f"/api/v1/events/{published.pk}/vote/", {"vote": "up"}), 409)

    unchanged.check()


@pytest.mark.parametrize("vote", ["sideways", "UP", 1, 1e30, HUGE, True, None, [], {"vote": "up"}, ""])
def test_a_vote_that_is_neither_up_nor_down_is_refused(as_anna, proposal, unchanged, vote):
    unchanged.start()

    refused(post_json(as_anna, f"/api/v1/events/{proposal.pk}/vote/", {"vote": vote}), 400, field="vote")

    unchanged.check()


@pytest.mark.parametrize("body", BAD_BODIES)
def test_a_vote_body_that_is_not_a_json_object_changes_nothing(as_anna, proposal, unchanged, body):
    unchanged.start()

    refused(as_anna.post(f"/api/v1/events/{proposal.pk}/vote/", data=body, content_type=JSON), 400)

    unchanged.check()


@pytest.mark.parametrize(
    "query",
    [
        {"date_from": "0001-01-01"},
        {"date_to": "9999-12-31"},
        {"date_from": "99999-01-01"},
        {"near": "1e308,1e308"},
        {"near": "NaN,NaN"},
        {"near": "55.75,37.61", "radius_km": "1e30"},
        {"near": "55.75,37.61", "radius_km": "Infinity"},
        {"business": "not-a-uuid"},
        {"page": str(HUGE)},
    ],
)
def test_an_event_filter_out_of_range_is_refused(as_anna, published, query):
    refused(as_anna.get("/api/v1/events/", query))


# --- Webhooks of each provider -------------------------------------------------------------------

INVALID_UTF8 = b"\xff\xfe\xfa\xc3\x28 \x80\x98 not text"


@pytest.fixture
def integrations(cafe):
    return {
        "yclients": CRMIntegrationFactory(
            business=cafe, provider="yclients", config={"company_id": "4564"}, credentials={"user_token": "t"}
        ),
        "iiko": CRMIntegrationFactory(business=cafe, provider="iiko", credentials={"api_login": "api-login-123"}),
        "amocrm": CRMIntegrationFactory(
            business=cafe,
            provider="amocrm",
            config={"subdomain": "example", "base_url": "http://127.0.0.1:9"},
            credentials={"access_token": "a", "refresh_token": "r", "expires_at": "2100-01-01T00:00:00+00:00"},
        ),
        "onec": CRMIntegrationFactory(business=cafe, provider="onec"),
    }


def send_webhook(integration, body: bytes, content_type=JSON):
    client = Client(headers={"Accept-Language": "en"}, raise_request_exception=False)
    headers = {"Authorization": integration.webhook_secret} if integration.provider == "iiko" else {}
    path = f"/api/v1/integrations/{integration.pk}/webhook/{integration.webhook_secret}/"
    return client.post(path, data=body, content_type=content_type, headers=headers)


def _iiko_order(total):
    events = fixture_json("iiko", "webhook_table_order_closed.json")
    events[0]["eventInfo"]["order"]["sum"] = total
    return as_body(events)


def _amo_lead(price) -> bytes:
    form = fixture_bytes("amocrm", "webhook_lead_status.form.txt").decode()
    return form.replace("%5Bprice%5D=22500", f"%5Bprice%5D={price}").encode()


WEBHOOK_BODIES = {
    "yclients": {
        "invalid utf-8": (INVALID_UTF8, JSON),
        "huge cost": (lambda: yclients_webhook(yclients_record(cost=1e30)), JSON),
        "huge cost as text": (lambda: yclients_webhook(yclients_record(cost=str(HUGE))), JSON),
        "nan cost": (lambda: yclients_webhook(yclients_record(cost="NaN")), JSON),
        "nested": (b"[" * 5000, JSON),
    },
    "iiko": {
        "invalid utf-8": (INVALID_UTF8, JSON),
        "huge sum": (lambda: _iiko_order(1e30), JSON),
        "huge sum as text": (lambda: _iiko_order(str(HUGE)), JSON),
        "infinite sum": (lambda: _iiko_order("Infinity"), JSON),
        "nested": (b"[" * 5000, JSON),
    },
    "amocrm": {
        "invalid utf-8": (INVALID_UTF8, "application/x-www-form-urlencoded"),
        "huge price": (lambda: _amo_lead("1e30"), "application/x-www-form-urlencoded"),
        "long price": (lambda: _amo_lead(str(HUGE)), "application/x-www-form-urlencoded"),
        "nan price": (lambda: _amo_lead("NaN"), "application/x-www-form-urlencoded"),
    },
    "onec": {
        "invalid utf-8": (INVALID_UTF8, JSON),
        "huge total": (lambda: as_body(onec_sale(total=1e30)), JSON),
        "huge total as text": (lambda: as_body(onec_sale(total=str(HUGE))), JSON),
        "negative total": (lambda: as_body(onec_sale(total=-1450.0)), JSON),
        "nan total": (lambda: as_body(onec_sale(total="NaN")), JSON),
        "nested": (b"[" * 5000, JSON),
    },
}


@pytest.mark.parametrize(
    ("provider", "case"), [(provider, case) for provider, bodies in WEBHOOK_BODIES.items() for case in bodies]
)
def test_a_webhook_body_that_cannot_be_a_purchase_records_none(
    integrations, anna, unchanged, django_capture_on_commit_callbacks, provider, case
):
    body, content_type = WEBHOOK_BODIES[provider][case]
    body = body() if callable(body) else body
    integration = integrations[provider]
    purchases = Transaction.objects.count()
    entries = LedgerEntry.objects.count()

    with django_capture_on_commit_callbacks(execute=True):
        response = send_webhook(integration, body, content_type)

    assert response.status_code < 500, (response.status_code, response.content[:300])
    if response.status_code >= 400:
        # Refused at the door: kept as rejected for staff to see, the reason in the answer.
        error = refused(response, 400, code="bad_webhook")
        delivery = WebhookDelivery.objects.get(pk=error["delivery_id"])
        assert delivery.status == WebhookDelivery.Status.REJECTED
    else:
        # Taken (a CRM must not retry forever); processing refuses the event instead.
        delivery = WebhookDelivery.objects.get(pk=response.json()["delivery_id"])
        assert delivery.status != WebhookDelivery.Status.PROCESSED or not delivery.result.get("counts", {}).get(
            "recorded"
        )
    assert (Transaction.objects.count(), LedgerEntry.objects.count()) == (purchases, entries)


def test_a_webhook_to_an_unknown_integration_or_with_a_wrong_secret_stores_nothing(integrations, unchanged):
    client = Client(raise_request_exception=False)
    yclients = integrations["yclients"]
    unchanged.start()

    for path in [
        f"/api/v1/integrations/{yclients.pk}/webhook/wrong-secret/",
        f"/api/v1/integrations/00000000-0000-0000-0000-000000000000/webhook/{yclients.webhook_secret}/",
        f"/api/v1/integrations/{yclients.pk}/webhook/%FF%FE/",
    ]:
        refused(client.post(path, data=INVALID_UTF8, content_type=JSON), 404)
    # iiko without its token in Authorization
    iiko = integrations["iiko"]
    path = f"/api/v1/integrations/{iiko.pk}/webhook/{iiko.webhook_secret}/"
    refused(client.post(path, data=INVALID_UTF8, content_type=JSON), 404)
    # Renovatio sends no webhooks: its URL takes none
    renovatio = CRMIntegrationFactory(business=yclients.business, provider="renovatio", credentials={"api_key": "k"})
    unchanged.start()
    path = f"/api/v1/integrations/{renovatio.pk}/webhook/{renovatio.webhook_secret}/"
    refused(client.post(path, data=INVALID_UTF8, content_type=JSON), 404)

    unchanged.check()


def test_the_sms_callback_with_invalid_utf8_or_a_bad_hash_changes_nothing(settings, unchanged):
    settings.SMSRU_API_ID = "test-api-id"
    client = Client(raise_request_exception=False)
    unchanged.start()

    bad_hash = client.post(
        "/api/v1/notifications/smsru/callback/",
        data=b"data%5B0%5D=sms_status%0A1%0A103%0A1&hash=" + b"0" * 64,
        content_type="application/x-www-form-urlencoded",
    )
    garbage = client.post(
        "/api/v1/notifications/smsru/callback/", data=INVALID_UTF8, content_type="application/x-www-form-urlencoded"
    )
    entry = "sms_status\n\xff\n" + str(HUGE) + "\n1"
    signed = client.post(
        "/api/v1/notifications/smsru/callback/",
        data={"data[0]": entry, "hash": hashlib.sha256(("test-api-id" + entry).encode()).hexdigest()},
    )

    assert (bad_hash.status_code, garbage.status_code) == (403, 403)
    assert signed.status_code == 200  # a status nobody has is ignored
    unchanged.check()


@pytest.mark.parametrize(
    "body",
    [
        INVALID_UTF8,
        b"[" * 5000,
        b"not json",
        b'[{"event": "delivered", "sg_message_id": "m-1", "timestamp": 1e30}]',
        b'[{"event": "delivered", "sg_message_id": "m-1", "timestamp": "yesterday"}]',
        b"[1, 2, 3]",
    ],
)
def test_the_email_tracking_webhook_refuses_a_body_it_cannot_read(settings, unchanged, body):
    settings.ANYMAIL = {**settings.ANYMAIL, "WEBHOOK_SECRET": "sendgrid:secret"}
    client = Client(raise_request_exception=False)
    auth = "Basic " + base64.b64encode(b"sendgrid:secret").decode()
    unchanged.start()

    response = client.post("/anymail/sendgrid/tracking/", data=body, content_type=JSON, headers={"Authorization": auth})

    refused(response, 400, code="bad_webhook")
    unchanged.check()


def test_the_email_tracking_webhook_without_its_secret_changes_nothing(settings, unchanged):
    settings.ANYMAIL = {**settings.ANYMAIL, "WEBHOOK_SECRET": "sendgrid:secret"}
    client = Client(raise_request_exception=False)
    unchanged.start()

    response = client.post("/anymail/sendgrid/tracking/", data=INVALID_UTF8, content_type=JSON)

    assert 400 <= response.status_code < 500
    unchanged.check()


# --- The portal's CSV import ---------------------------------------------------------------------


@pytest.fixture
def portal(cafe, settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path / "media")
    owner = MembershipFactory(business=cafe, role=Membership.Role.OWNER).user
    client = Client(headers={"Accept-Language": "en"}, raise_request_exception=False)
    client.force_login(owner)
    from accounts.portal import SESSION_BUSINESS

    session = client.session
    session[SESSION_BUSINESS] = str(cafe.pk)
    session.save()
    return client


def upload_and_import(portal, content: bytes):
    uploaded = portal.post("/portal/imports/", {"file": SimpleUploadedFile("h.csv", content, content_type="text/csv")})
    assert uploaded.status_code == 302, uploaded.status_code
    preview = portal.get(uploaded["Location"])
    confirmed = portal.post(uploaded["Location"], {"action": "import"})
    return preview, confirmed, ImportJob.objects.latest("created_at")


def test_a_csv_of_bad_rows_imports_none_and_names_each_line(portal, cafe, anna):
    day = (timezone.localtime() - timedelta(days=3)).strftime("%d.%m.%Y %H:%M")
    rows = [
        "external_id;phone;amount;occurred_at",
        f"r-1;{ANNA};1e30;{day}",
        f"r-2;{ANNA};{HUGE};{day}",
        f"r-3;{ANNA};-5;{day}",
        f"r-4;{ANNA};NaN;{day}",
        f"r-5;{ANNA};Infinity;{day}",
        f"r-6;{ANNA};12.345;{day}",
        f"r-7;not-a-phone;100;{day}",
        f"r-8;{ANNA};100;0001-01-01",
        f"r-9;{ANNA};100;9999-12-31",
        f"r-10;{ANNA};100;yesterday",
        f";{ANNA};100;{day}",
    ]
    purchases, entries = Transaction.objects.count(), LedgerEntry.objects.count()

    preview, _confirmed, job = upload_and_import(portal, ("\n".join(rows) + "\n").encode())

    assert preview.status_code == 200
    assert all(row["error"] for row in preview.context["preview"]["rows"])
    assert (job.status, job.imported, job.rejected) == (ImportJob.Status.DONE, 0, len(rows) - 1), job.message
    reasons = {error["line"]: error["reason"] for error in job.errors}
    assert "is over" in reasons[2] and "is over" in reasons[3]
    assert "not above zero" in reasons[4] and "not a number" in reasons[5] and "not a number" in reasons[6]
    assert "phone" in reasons[8]
    assert (Transaction.objects.count(), LedgerEntry.objects.count()) == (purchases, entries)


def test_a_csv_of_invalid_utf8_is_refused_or_read_as_windows_1251_and_imports_nothing_wrong(portal, anna):
    purchases, entries = Transaction.objects.count(), LedgerEntry.objects.count()
    # 0x98 is a byte Windows-1251 leaves undefined: the file reads as neither encoding.
    content = b"external_id;phone;amount;occurred_at\n\xff\xfe\x98;\x98\x98;\xc3\x28;\x80\n"

    preview, confirmed, job = upload_and_import(portal, content)

    assert preview.status_code == 400
    assert preview.context["file_error"]
    assert job.status in (ImportJob.Status.PENDING, ImportJob.Status.FAILED, ImportJob.Status.DONE)
    assert job.imported == 0
    assert (Transaction.objects.count(), LedgerEntry.objects.count()) == (purchases, entries)


def test_forgetting_a_device_token_with_a_nul_byte_is_not_found(as_anna):
    """A NUL byte in the path reaches the database as text; PostgreSQL would refuse it (500)."""
    response = as_anna.delete("/api/v1/me/devices/%00/")

    assert response.status_code == 404, response.content
    assert "error" in response.json()
