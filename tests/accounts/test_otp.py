"""Login codes: sending, verifying, dying, and the limits around them."""

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import time_machine
from django.core.cache import cache
from django.db import connection
from django.utils import timezone

from accounts import services
from accounts.models import User
from notifications.channels.sms import SmsRecipientError, SmsTemporaryError

OTP_URL = "/api/v1/auth/otp/"
VERIFY_URL = "/api/v1/auth/otp/verify/"
PHONE = "+79991234567"


def request_code(client, phone=PHONE, ip="10.0.0.1"):
    return client.post(OTP_URL, {"phone": phone}, format="json", REMOTE_ADDR=ip)


def verify(client, code_id, code):
    return client.post(VERIFY_URL, {"code_id": code_id, "code": code}, format="json")


def wrong(code: str) -> str:
    return f"{(int(code) + 1) % 1_000_000:06d}"


# --- Sending ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_code_is_sent_by_sms_and_challenge_describes_it(api_client, sms):
    response = request_code(api_client, phone="8 (999) 123-45-67")

    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"code_id", "expires_in", "resend_in"}
    assert body["expires_in"] == 300
    assert body["resend_in"] == 60
    assert len(sms.sent) == 1
    phone, text = sms.sent[0]
    assert phone == PHONE
    code = sms.last_code()
    assert len(code) == 6 and code.isdigit()
    assert code in text


@pytest.mark.django_db
def test_code_is_stored_only_as_a_keyed_hash(api_client, sms):
    code_id = request_code(api_client).json()["code_id"]
    code = sms.last_code()

    record = cache.get(f"otp:code:{code_id}")
    assert record is not None
    assert code not in repr(record)
    assert record["hash"] == services._code_hash(code_id, code)


@pytest.mark.django_db
def test_answer_is_the_same_for_known_and_unknown_phones(api_client, sms):
    User.objects.create_user(phone="+79990001111")

    known = request_code(api_client, phone="+79990001111", ip="10.0.0.2")
    unknown = request_code(api_client, phone="+79990002222", ip="10.0.0.3")

    assert known.status_code == unknown.status_code == 201
    assert set(known.json()) == set(unknown.json())
    assert {k: v for k, v in known.json().items() if k != "code_id"} == {
        k: v for k, v in unknown.json().items() if k != "code_id"
    }


@pytest.mark.django_db
@pytest.mark.parametrize("phone", ["", "abc", "12", "+7999", "+7 999 123 45 67 89 00", "x" * 500])
def test_invalid_phone_is_refused_before_any_sms(api_client, sms, phone):
    response = request_code(api_client, phone=phone)

    assert response.status_code == 400
    assert response.json()["error"]["code"] in {"invalid_phone", "invalid"}
    assert sms.sent == []


@pytest.mark.django_db
@pytest.mark.parametrize("phone", ["+12025550143", "+77011234567", "+375291234567"])
def test_phone_of_a_country_not_allowed_is_refused_before_any_sms(api_client, sms, phone):
    response = request_code(api_client, phone=phone)

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "phone_country_not_supported"
    assert sms.sent == []


@pytest.mark.django_db
def test_allowed_countries_is_a_setting(api_client, sms, settings):
    settings.OTP_ALLOWED_COUNTRIES = ["RU", "KZ"]

    response = request_code(api_client, phone="+77011234567")

    assert response.status_code == 201
    assert sms.sent[0][0] == "+77011234567"


# --- Limits -----------------------------------------------------------------------------


@pytest.mark.django_db
def test_new_code_no_sooner_than_cooldown(api_client, sms, locmem_cache):
    with time_machine.travel("2026-11-26 10:00:00 +0000", tick=False) as traveller:
        assert request_code(api_client).status_code == 201
        traveller.shift(20)

        too_soon = request_code(api_client)

        assert too_soon.status_code == 429
        assert too_soon.json()["error"]["code"] == "otp_resend_too_soon"
        assert too_soon["Retry-After"] == "40"
        assert too_soon.json()["error"]["retry_after"] == 40
        assert len(sms.sent) == 1

        traveller.shift(41)
        assert request_code(api_client).status_code == 201
        assert len(sms.sent) == 2


@pytest.mark.django_db
def test_at_most_five_codes_per_phone_per_day(api_client, sms, settings, locmem_cache):
    settings.OTP_MAX_PER_IP_PER_HOUR = 100
    with time_machine.travel("2026-11-26 10:00:00 +0000", tick=False) as traveller:
        for _ in range(5):
            assert request_code(api_client).status_code == 201
            traveller.shift(61)

        refused = request_code(api_client)

        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "otp_phone_limit"
        assert int(refused["Retry-After"]) == 86400 - 5 * 61
        assert len(sms.sent) == 5

        traveller.shift(86400)
        assert request_code(api_client).status_code == 201


@pytest.mark.django_db
def test_at_most_ten_codes_per_client_ip_per_hour(api_client, sms):
    for index in range(10):
        assert request_code(api_client, phone=f"+7999000{index:04d}", ip="10.1.1.1").status_code == 201

    refused = request_code(api_client, phone="+79990009999", ip="10.1.1.1")
    other_network = request_code(api_client, phone="+79990009999", ip="10.2.2.2")

    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "otp_client_limit"
    assert 3590 <= int(refused["Retry-After"]) <= 3600
    assert other_network.status_code == 201
    assert len(sms.sent) == 11


@pytest.mark.django_db
def test_client_ip_honours_trusted_proxies_only(api_client, sms, settings):
    settings.OTP_MAX_PER_IP_PER_HOUR = 1
    spoofed = {"HTTP_X_FORWARDED_FOR": "1.2.3.4"}
    assert api_client.post(OTP_URL, {"phone": "+79990000011"}, format="json", **spoofed).status_code == 201
    # Without trusted proxies, a forged X-Forwarded-For does not make a new client.
    spoofed = {"HTTP_X_FORWARDED_FOR": "5.6.7.8"}
    assert api_client.post(OTP_URL, {"phone": "+79990000012"}, format="json", **spoofed).status_code == 429

    settings.TRUSTED_PROXY_COUNT = 1
    proxied = {"HTTP_X_FORWARDED_FOR": "9.9.9.9, 10.0.0.9"}
    assert api_client.post(OTP_URL, {"phone": "+79990000013"}, format="json", **proxied).status_code == 201


@pytest.mark.django_db
def test_limits_are_settings(api_client, sms, settings):
    settings.OTP_RESEND_COOLDOWN_SECONDS = 5
    settings.OTP_CODE_TTL_SECONDS = 120
    settings.OTP_CODE_DIGITS = 4

    body = request_code(api_client).json()

    assert body["resend_in"] == 5
    assert body["expires_in"] == 120
    assert len(sms.last_code()) == 4


# --- Verifying --------------------------------------------------------------------------


@pytest.mark.django_db
def test_right_code_logs_in_and_creates_the_account(api_client, sms):
    code_id = request_code(api_client).json()["code_id"]

    response = verify(api_client, code_id, sms.last_code())

    assert response.status_code == 200
    body = response.json()
    user = User.objects.get(phone=PHONE)
    assert body["user"] == {"id": str(user.pk), "phone": PHONE, "is_new": True}
    assert body["access"] and body["refresh"]
    me = api_client.get("/api/v1/me/", HTTP_AUTHORIZATION=f"Bearer {body['access']}")
    assert me.status_code == 200
    assert me.json()["phone"] == PHONE


@pytest.mark.django_db
def test_returning_customer_is_not_new(api_client, sms):
    existing = User.objects.create_user(phone=PHONE, first_app_login_at=timezone.now())
    code_id = request_code(api_client).json()["code_id"]

    body = verify(api_client, code_id, sms.last_code()).json()

    assert body["user"] == {"id": str(existing.pk), "phone": PHONE, "is_new": False}
    assert User.objects.filter(phone=PHONE).count() == 1


@pytest.mark.django_db
def test_wrong_code_counts_down_and_the_fifth_kills_the_code(api_client, sms):
    code_id = request_code(api_client).json()["code_id"]
    code = sms.last_code()

    lefts = []
    for _ in range(4):
        response = verify(api_client, code_id, wrong(code))
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "otp_invalid"
        lefts.append(response.json()["error"]["attempts_left"])
    fifth = verify(api_client, code_id, wrong(code))
    after = verify(api_client, code_id, code)

    assert lefts == [4, 3, 2, 1]
    assert fifth.json()["error"]["code"] == "otp_attempts_exhausted"
    assert after.status_code == 400
    assert after.json()["error"]["code"] == "otp_attempts_exhausted"
    assert not User.objects.filter(phone=PHONE).exists()


@pytest.mark.django_db
def test_code_works_once(api_client, sms):
    code_id = request_code(api_client).json()["code_id"]
    code = sms.last_code()

    assert verify(api_client, code_id, code).status_code == 200
    again = verify(api_client, code_id, code)

    assert again.status_code == 400
    assert again.json()["error"]["code"] == "otp_used"


@pytest.mark.django_db
def test_code_dies_after_five_minutes(api_client, sms):
    with time_machine.travel("2026-11-26 10:00:00 +0000", tick=False) as traveller:
        code_id = request_code(api_client).json()["code_id"]
        code = sms.last_code()
        traveller.shift(300)

        response = verify(api_client, code_id, code)

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "otp_expired"


@pytest.mark.django_db
def test_code_just_before_expiry_still_works(api_client, sms):
    with time_machine.travel("2026-11-26 10:00:00 +0000", tick=False) as traveller:
        code_id = request_code(api_client).json()["code_id"]
        traveller.shift(299)

        assert verify(api_client, code_id, sms.last_code()).status_code == 200


@pytest.mark.django_db
@pytest.mark.parametrize("code_id", ["0" * 32, "does-not-exist", "../../etc", "a" * 65])
def test_unknown_code_id_has_its_own_error(api_client, sms, code_id):
    response = verify(api_client, code_id, "123456")

    assert response.status_code == 400
    assert response.json()["error"]["code"] in {"otp_not_found", "invalid"}


@pytest.mark.django_db
def test_unknown_code_id_error_code(api_client, sms):
    response = verify(api_client, "f" * 32, "123456")

    assert response.json()["error"]["code"] == "otp_not_found"


@pytest.mark.django_db
@pytest.mark.parametrize(
    "payload", [{}, {"code_id": "x"}, {"code_id": "x", "code": "12ab56"}, {"code_id": "x", "code": ""}]
)
def test_malformed_verify_names_the_fields(api_client, payload):
    response = api_client.post(VERIFY_URL, payload, format="json")

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid"
    assert response.json()["error"]["fields"]


@pytest.mark.django_db
def test_disabled_account_cannot_log_in(api_client, sms):
    User.objects.create_user(phone=PHONE, is_active=False)
    code_id = request_code(api_client).json()["code_id"]

    response = verify(api_client, code_id, sms.last_code())

    assert response.status_code == 403
    assert response.json()["error"]["code"] == "account_disabled"


# --- Review phones and SMS failures -------------------------------------------------------


@pytest.mark.django_db
def test_review_phone_logs_in_with_its_fixed_code_and_gets_no_sms(api_client, sms, settings):
    settings.OTP_REVIEW_PHONES = {"8 900 000-00-00": "424242"}

    first = request_code(api_client, phone="+79000000000")
    second = request_code(api_client, phone="+79000000000")  # no cooldown for reviewers
    response = verify(api_client, second.json()["code_id"], "424242")

    assert first.status_code == second.status_code == 201
    assert sms.sent == []
    assert response.status_code == 200
    assert response.json()["user"]["phone"] == "+79000000000"


@pytest.mark.django_db
def test_provider_outage_answers_503_and_lets_the_person_retry_at_once(api_client, sms):
    sms.fail_with = SmsTemporaryError("SMS.ru did not answer in time.")

    failed = request_code(api_client)
    sms.fail_with = None
    retried = request_code(api_client)

    assert failed.status_code == 503
    assert failed.json()["error"]["code"] == "sms_unavailable"
    assert retried.status_code == 201
    assert len(sms.sent) == 1


@pytest.mark.django_db
def test_number_the_provider_cannot_reach_is_a_400(api_client, sms):
    sms.fail_with = SmsRecipientError("no route", status_code=207)

    response = request_code(api_client)

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "phone_unreachable"


# --- Races --------------------------------------------------------------------------------


def _race(count, action):
    barrier = threading.Barrier(count)

    def run(_):
        barrier.wait()
        try:
            return action()
        except Exception as exc:  # the outcome of each racer is what the test counts
            return exc
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(run, range(count)))


def test_parallel_guesses_never_exceed_the_attempt_limit(settings):
    """Twenty wrong guesses at once: exactly five are compared, the rest find the code dead."""
    challenge_code = "111111"
    cache.set(
        "otp:code:race", {"phone": PHONE, "hash": services._code_hash("race", challenge_code), "expires_at": 1e12}
    )
    cache.set("otp:attempts:race", 0)

    outcomes = _race(20, lambda: services._check_code("race", "222222"))

    compared = [o for o in outcomes if isinstance(o, services.CodeInvalid)]
    exhausted = [o for o in outcomes if isinstance(o, services.CodeAttemptsExhausted)]
    assert len(compared) == settings.OTP_MAX_ATTEMPTS - 1
    assert sorted(o.attempts_left for o in compared) == [1, 2, 3, 4]
    assert len(exhausted) == 20 - len(compared)
    with pytest.raises(services.CodeAttemptsExhausted):
        services._check_code("race", challenge_code)


def test_parallel_checks_of_one_right_code_consume_it_once():
    cache.set("otp:code:once", {"phone": PHONE, "hash": services._code_hash("once", "123456"), "expires_at": 1e12})
    cache.set("otp:attempts:once", 0)

    outcomes = _race(2, lambda: services._check_code("once", "123456"))

    assert outcomes.count(PHONE) == 1
    assert sum(isinstance(o, services.CodeAlreadyUsed) for o in outcomes) == 1


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_two_parallel_verifies_of_one_right_code_give_one_login(settings, sms):
    assert settings.CACHES["default"]["BACKEND"].endswith("RedisCache")
    challenge = services.send_otp_code(PHONE, client="10.9.9.9")
    code = sms.last_code()

    outcomes = _race(2, lambda: services.verify_otp_code(challenge.code_id, code))

    logins = [o for o in outcomes if isinstance(o, services.Tokens)]
    refused = [o for o in outcomes if isinstance(o, services.CodeAlreadyUsed)]
    assert len(logins) == 1, outcomes
    assert len(refused) == 1, outcomes
    assert User.objects.filter(phone=PHONE).count() == 1


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_parallel_first_logins_of_one_phone_create_one_account(sms):
    """The same person confirming two codes on two devices at once gets one account."""
    challenges = []
    for index in range(2):
        cache.delete(f"otp:cooldown:{PHONE}")
        challenges.append((services.send_otp_code(PHONE, client=f"10.8.8.{index}"), sms.last_code()))
    attempts = iter(challenges)
    lock = threading.Lock()

    def login():
        with lock:
            challenge, code = next(attempts)
        return services.verify_otp_code(challenge.code_id, code)

    outcomes = _race(2, login)

    assert all(isinstance(o, services.Tokens) for o in outcomes), outcomes
    assert len({o.user.pk for o in outcomes}) == 1
    assert sorted(o.is_new for o in outcomes) == [False, True]
    assert User.objects.filter(phone=PHONE).count() == 1


@pytest.mark.django_db
def test_sms_and_errors_speak_russian_by_default_and_english_on_request(api_client, sms):
    code_id = request_code(api_client).json()["code_id"]
    russian = verify(api_client, code_id, wrong(sms.last_code())).json()["error"]["message"]
    english = api_client.post(
        VERIFY_URL, {"code_id": code_id, "code": wrong(sms.last_code())}, format="json", HTTP_ACCEPT_LANGUAGE="en"
    ).json()["error"]["message"]

    assert sms.sent[0][1].startswith("Код для входа в Свой Круг: ")
    assert russian == "Неверный код."
    assert english == "The code is wrong."


@pytest.mark.django_db
def test_refused_requests_do_not_use_up_the_allowance(api_client, sms, settings):
    settings.OTP_MAX_PER_IP_PER_HOUR = 2
    assert request_code(api_client, phone="+79990000021").status_code == 201
    for _ in range(5):
        assert request_code(api_client, phone="+79990000021").status_code == 429  # too soon

    second = request_code(api_client, phone="+79990000022")
    third = request_code(api_client, phone="+79990000023")

    assert second.status_code == 201
    assert third.json()["error"]["code"] == "otp_client_limit"
    assert len(sms.sent) == 2


@pytest.mark.django_db
def test_a_code_that_was_not_delivered_does_not_count(api_client, sms, settings):
    settings.OTP_MAX_PER_PHONE_PER_DAY = 1
    settings.OTP_MAX_PER_IP_PER_HOUR = 1
    sms.fail_with = SmsTemporaryError("down")
    assert request_code(api_client).status_code == 503
    sms.fail_with = None

    assert request_code(api_client).status_code == 201
    assert len(sms.sent) == 1


def test_parallel_requests_from_one_client_never_exceed_the_hourly_limit(sms, settings, monkeypatch):
    settings.OTP_MAX_PER_IP_PER_HOUR = 10
    # The limit lives in the cache; keep the database (and SQLite's single writer) out of it.
    monkeypatch.setattr("notifications.services.deliver_sms", lambda phone, text, purpose: sms.send(phone, text))
    phones = iter(f"+7999333{index:04d}" for index in range(20))
    lock = threading.Lock()

    def ask():
        with lock:
            phone = next(phones)
        return services.send_otp_code(phone, client="10.5.5.5")

    outcomes = _race(20, ask)

    assert sum(isinstance(o, services.OtpChallenge) for o in outcomes) == 10
    assert sum(isinstance(o, services.ClientHourlyLimit) for o in outcomes) == 10
    assert len(sms.sent) == 10


@pytest.mark.django_db
def test_a_portal_login_does_not_make_the_first_app_login_old(api_client, sms):
    """Staff who used the partner portal (a session login) still get the app's profile form."""
    User.objects.create_user(phone=PHONE, last_login=timezone.now())
    code_id = request_code(api_client).json()["code_id"]

    body = verify(api_client, code_id, sms.last_code()).json()

    assert body["user"]["is_new"] is True
