"""Rate limits and body size limits on the public doors: past a (small, configured) rate the
answer is 429 in the error shape with a numeric Retry-After, a refused request changes
nothing, and another client, key or integration is not affected; a body over
DATA_UPLOAD_MAX_MEMORY_SIZE answers 413."""

import json
import re

import pytest
from django.core.cache import cache
from django.core.exceptions import ImproperlyConfigured

from integrations.models import WebhookDelivery
from loyalty.models import Transaction
from svoykrug.throttling import WindowRateThrottle
from tests.factories import ApiKeyFactory, BusinessFactory, CRMIntegrationFactory, LoyaltyProgramFactory
from tests.integrations.support import fixture_bytes

pytestmark = pytest.mark.django_db

# A fixed clock 30 seconds into a minute: every request of a test falls in one window, and a
# refusal says to retry in the 30 seconds left.
NOW = 1_700_000_010.0
WAIT_LEFT_IN_MINUTE = 30

OTP = "/api/v1/auth/otp/"
VERIFY = "/api/v1/auth/otp/verify/"
PURCHASES = "/api/v1/partner/transactions/"


@pytest.fixture
def rates(settings, monkeypatch):
    """Set some scopes' rates (the others stay off) on a clock that stands still."""
    monkeypatch.setattr(WindowRateThrottle, "timer", staticmethod(lambda: NOW))

    def set_rates(**scoped):
        all_off = dict.fromkeys(settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"])
        settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {**all_off, **scoped}}

    return set_rates


def assert_rate_limited(response, *, code="rate_limited", retry_after=WAIT_LEFT_IN_MINUTE):
    assert response.status_code == 429, response.content
    assert response["Retry-After"].isdigit()
    assert int(response["Retry-After"]) == retry_after
    error = response.json()["error"]
    assert error["code"] == code
    assert error["message"]
    assert error["retry_after"] == retry_after


# --- Login ------------------------------------------------------------------------------------


def test_otp_requests_past_the_rate_from_one_address_are_refused_and_send_nothing(api_client, sms, rates):
    rates(otp="2/min")

    for phone in ("+79990000101", "+79990000102"):
        assert api_client.post(OTP, {"phone": phone}, format="json", REMOTE_ADDR="10.1.1.1").status_code == 201
    refused = api_client.post(OTP, {"phone": "+79990000103"}, format="json", REMOTE_ADDR="10.1.1.1")

    assert_rate_limited(refused)
    assert len(sms.sent) == 2
    assert cache.get("otp:cooldown:+79990000103") is None  # the service never saw it
    other = api_client.post(OTP, {"phone": "+79990000103"}, format="json", REMOTE_ADDR="10.2.2.2")
    assert other.status_code == 201
    assert len(sms.sent) == 3


def test_the_client_address_is_read_through_the_trusted_proxies(api_client, sms, rates, settings):
    rates(otp="1/min")
    settings.TRUSTED_PROXY_COUNT = 1

    first = api_client.post(
        OTP, {"phone": "+79990000111"}, format="json", REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR="198.51.100.7"
    )
    second = api_client.post(
        OTP, {"phone": "+79990000112"}, format="json", REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR="198.51.100.8"
    )
    third = api_client.post(
        OTP, {"phone": "+79990000113"}, format="json", REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR="198.51.100.7"
    )

    assert (first.status_code, second.status_code) == (201, 201)  # two clients behind one proxy
    assert_rate_limited(third)


def test_verifies_past_the_rate_are_refused_before_the_code_is_checked(api_client, sms, rates):
    rates(otp_verify="2/min")
    challenge = api_client.post(OTP, {"phone": "+79990000121"}, format="json", REMOTE_ADDR="10.3.3.3").json()
    right = {"code_id": challenge["code_id"], "code": sms.last_code()}

    for _ in range(2):
        wrong = api_client.post(VERIFY, {"code_id": "f" * 32, "code": "000000"}, format="json", REMOTE_ADDR="10.4.4.4")
        assert wrong.status_code == 400
    refused = api_client.post(VERIFY, right, format="json", REMOTE_ADDR="10.4.4.4")

    assert_rate_limited(refused)
    # The refused verify neither logged in nor used the code up: from elsewhere it still works.
    elsewhere = api_client.post(VERIFY, right, format="json", REMOTE_ADDR="10.5.5.5")
    assert elsewhere.status_code == 200
    assert elsewhere.json()["user"]["is_new"] is True


def test_the_otp_services_own_limits_answer_429_with_retry_after(api_client, sms, settings):
    settings.OTP_RESEND_COOLDOWN_SECONDS = 60

    assert api_client.post(OTP, {"phone": "+79990000131"}, format="json").status_code == 201
    again = api_client.post(OTP, {"phone": "+79990000131"}, format="json")

    assert again.status_code == 429
    assert again["Retry-After"].isdigit() and 1 <= int(again["Retry-After"]) <= 60
    assert again.json()["error"]["code"] == "otp_resend_too_soon"
    assert again.json()["error"]["retry_after"] == int(again["Retry-After"])
    assert len(sms.sent) == 1


# --- Partner API ------------------------------------------------------------------------------


@pytest.fixture
def pos_keys(tiers):
    """Raw API keys of two partners."""
    cafe = LoyaltyProgramFactory(business=BusinessFactory(name="Кофейня", slug="cafe")).business
    salon = LoyaltyProgramFactory(business=BusinessFactory(name="Салон", slug="salon")).business
    return ApiKeyFactory(business=cafe)[1], ApiKeyFactory(business=salon)[1]


def purchase(client, raw_key, external_id):
    body = {"external_id": external_id, "phone": "+79991112233", "amount": "100"}
    return client.post(PURCHASES, body, format="json", HTTP_AUTHORIZATION=f"Api-Key {raw_key}")


def test_partner_calls_past_the_rate_of_a_key_are_refused_and_record_nothing(api_client, pos_keys, rates):
    rates(partner="2/min")
    cafe_key, salon_key = pos_keys

    assert [purchase(api_client, cafe_key, str(n)).status_code for n in (1, 2)] == [201, 201]
    refused = purchase(api_client, cafe_key, "3")

    assert_rate_limited(refused)
    assert Transaction.objects.filter(external_id="3").count() == 0
    assert Transaction.objects.count() == 2
    assert purchase(api_client, salon_key, "3").status_code == 201  # another key has its own allowance
    # Reads count too: the key is out until the window ends.
    assert_rate_limited(
        api_client.get("/api/v1/partner/customers/+79991112233/", HTTP_AUTHORIZATION=f"Api-Key {cafe_key}")
    )


def test_a_new_window_lets_the_key_in_again(api_client, pos_keys, rates, monkeypatch):
    rates(partner="1/min")
    cafe_key, _ = pos_keys
    assert purchase(api_client, cafe_key, "1").status_code == 201
    assert purchase(api_client, cafe_key, "2").status_code == 429

    monkeypatch.setattr(WindowRateThrottle, "timer", staticmethod(lambda: NOW + WAIT_LEFT_IN_MINUTE))

    assert purchase(api_client, cafe_key, "2").status_code == 201


def test_invalid_keys_are_refused_by_authentication_not_counted(api_client, pos_keys, rates):
    rates(partner="1/min")

    for _ in range(3):
        assert purchase(api_client, "sk_nonsense_x", "1").status_code == 401
    assert purchase(api_client, pos_keys[0], "1").status_code == 201


def test_a_cache_that_does_not_answer_lets_requests_through(api_client, pos_keys, rates, monkeypatch):
    rates(partner="1/min")

    class DownCache:
        def add(self, *args, **kwargs):
            raise ConnectionError("cache down")

        incr = add

    monkeypatch.setattr(WindowRateThrottle, "cache", DownCache())

    assert [purchase(api_client, pos_keys[0], str(n)).status_code for n in (1, 2)] == [201, 201]


# --- Webhooks ---------------------------------------------------------------------------------


def post_webhook(client, integration, *, secret=None):
    path = f"/api/v1/integrations/{integration.pk}/webhook/{secret or integration.webhook_secret}/"
    body = fixture_bytes("iiko", "webhook_delivery_order_error.json")
    return client.post(path, data=body, content_type="application/json", HTTP_AUTHORIZATION=integration.webhook_secret)


def test_webhooks_past_the_rate_of_an_integration_are_refused_and_store_nothing(client, rates):
    rates(webhook="2/min")
    iiko = CRMIntegrationFactory(provider="iiko", credentials={"api_login": "login-1"})
    other = CRMIntegrationFactory(provider="iiko", credentials={"api_login": "login-2"})

    assert post_webhook(client, iiko).status_code == 200
    assert post_webhook(client, iiko, secret="wrong-secret").status_code == 404  # counted too
    refused = post_webhook(client, iiko)

    assert_rate_limited(refused)
    assert WebhookDelivery.objects.filter(integration=iiko).count() == 1
    assert post_webhook(client, other).status_code == 200


def test_smsru_callbacks_past_the_rate_of_an_address_are_refused(client, rates):
    rates(sms_callback="1/min")

    def callback(address):
        return client.post("/api/v1/notifications/smsru/callback/", {"hash": "x"}, REMOTE_ADDR=address)

    assert callback("10.7.7.7").status_code == 403  # a bad hash, but counted
    assert_rate_limited(callback("10.7.7.7"))
    assert callback("10.8.8.8").status_code == 403


# --- Settings ----------------------------------------------------------------------------------


def test_default_rates_are_set_for_every_scope(settings):
    rates = settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]

    assert rates == {
        "otp": "20/min",
        "otp_verify": "30/min",
        "partner": "6000/min",
        "webhook": "600/min",
        "sms_callback": "600/min",
    }


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("", "5/min"), ("100/s", "100/s"), (" 20 / hour ", "20/hour"), ("7/day", "7/day"), ("off", None), ("OFF", None)],
)
def test_rates_are_read_from_the_environment(monkeypatch, raw, expected):
    from svoykrug.settings import env_rate

    monkeypatch.setenv("THROTTLE_TEST_RATE", raw)

    assert env_rate("THROTTLE_TEST_RATE", "5/min") == expected


@pytest.mark.parametrize("raw", ["100", "0/min", "ten/min", "5/week", "5/min/x"])
def test_bad_rates_stop_start_up(monkeypatch, raw):
    from svoykrug.settings import env_rate

    monkeypatch.setenv("THROTTLE_TEST_RATE", raw)

    with pytest.raises(ImproperlyConfigured, match="THROTTLE_TEST_RATE"):
        env_rate("THROTTLE_TEST_RATE", "5/min")


def test_every_rate_variable_is_documented_in_env_example():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    read = set(re.findall(r'env_rate\(\s*"([A-Z_]+)"', (root / "svoykrug" / "settings.py").read_text()))
    listed = set(re.findall(r"^#?\s*([A-Z_]+)=", (root / ".env.example").read_text(), flags=re.M))

    assert len(read) == 5
    assert read <= listed


# --- Oversized bodies -------------------------------------------------------------------------


def assert_too_large(response):
    assert response.status_code == 413, response.content
    assert response.json()["error"]["code"] == "too_large"
    assert response.json()["error"]["message"]


def test_an_api_body_over_the_limit_answers_413_and_is_not_read(api_client, sms, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    body = json.dumps({"phone": "+79990000141", "padding": "x" * 2000})

    response = api_client.post(OTP, body, content_type="application/json")

    assert_too_large(response)
    assert response.json()["error"]["max_bytes"] == 1000
    assert sms.sent == []
    # Under the limit the same door works.
    assert api_client.post(OTP, {"phone": "+79990000141"}, format="json").status_code == 201


def test_a_partner_body_over_the_limit_answers_413_and_records_nothing(api_client, pos_keys, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    body = json.dumps({"external_id": "1", "phone": "+79991112233", "amount": "100", "note": "x" * 2000})

    response = api_client.post(
        PURCHASES, body, content_type="application/json", HTTP_AUTHORIZATION=f"Api-Key {pos_keys[0]}"
    )

    assert_too_large(response)
    assert Transaction.objects.count() == 0


def test_a_form_body_over_the_limit_answers_413(client, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000

    api = client.post("/api/v1/notifications/smsru/callback/", {"data[0]": "x" * 2000, "hash": "x"})
    portal = client.post("/portal/login/", {"phone": "+79990000151", "padding": "x" * 2000})

    assert_too_large(api)
    assert portal.status_code == 413  # Django's own limit, answered 413 instead of 400


def test_the_crm_webhook_keeps_its_own_limit(client, settings):
    body = fixture_bytes("iiko", "webhook_delivery_order_error.json")
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = len(body) // 2
    settings.INTEGRATIONS_WEBHOOK_MAX_BYTES = 1_000_000
    iiko = CRMIntegrationFactory(provider="iiko", credentials={"api_login": "login-1"})

    accepted = post_webhook(client, iiko)
    settings.INTEGRATIONS_WEBHOOK_MAX_BYTES = len(body) - 1
    refused = post_webhook(client, iiko)

    assert accepted.status_code == 200
    assert refused.status_code == 413
    assert WebhookDelivery.objects.count() == 1
