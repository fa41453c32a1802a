"""The push channel against a local fake Google: the real firebase-admin and google-auth, a real
service-account credential signed with a throwaway RSA key, real HTTP on 127.0.0.1 for both the
OAuth2 token endpoint and FCM v1 messages:send."""

import json
import logging
import socket
import threading
import time

import firebase_admin
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from firebase_admin import messaging
from urllib3.util.retry import Retry

from notifications.channels import push
from notifications.channels.push import ConsolePushBackend, FcmPushBackend, PushOutcome, get_push_backend
from tests.fakes.fcm import FakeFcm, load_fixture

PROJECT = "svoykrug-test"
CLIENT_EMAIL = "firebase-adminsdk-test@svoykrug-test.iam.gserviceaccount.com"
REAL_FCM_URL = "https://fcm.googleapis.com/v1/projects/{0}/messages:send"
TITLE = "Бонусы начислены"
BODY = "Вам начислено 50 баллов"
DATA = {"kind": "bonus", "points": "50"}
FIRST_NAME = "projects/svoykrug-test/messages/0:1500415314455276%31bd1c9631bd1c96"


def _new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def rsa_key():
    return _new_key()


def _closed_port_url() -> tuple[socket.socket, str]:
    """A URL whose port refuses connections: bound, never listening, so nobody else can take it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    return sock, f"http://127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture
def closed_port_url():
    sock, url = _closed_port_url()
    try:
        yield url
    finally:
        sock.close()


@pytest.fixture
def fake_fcm(rsa_key):
    fake = FakeFcm(public_key=rsa_key.public_key(), client_email=CLIENT_EMAIL, slow_delay=3.0)
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()


def write_service_account(path, key, token_uri: str):
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode("ascii")
    path.write_text(
        json.dumps(
            {
                "type": "service_account",
                "project_id": PROJECT,
                "private_key_id": "0123456789abcdef0123456789abcdef01234567",
                "private_key": pem,
                "client_email": CLIENT_EMAIL,
                "client_id": "100000000000000000000",
                "auth_uri": "https://accounts.google.com/o/oauth2/auth",
                "token_uri": token_uri,
                "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
                "client_x509_cert_url": "https://www.googleapis.com/robot/v1/metadata/x509/test",
                "universe_domain": "googleapis.com",
            }
        ),
        encoding="utf-8",
    )
    return path


@pytest.fixture
def service_account_file(tmp_path, rsa_key, fake_fcm):
    return write_service_account(tmp_path / "service-account.json", rsa_key, fake_fcm.token_uri)


@pytest.fixture(autouse=True)
def created_apps(monkeypatch):
    """Every firebase_admin App made during the test, deleted afterwards."""
    created = []
    real_initialize_app = firebase_admin.initialize_app

    def initialize_app(*args, **kwargs):
        app = real_initialize_app(*args, **kwargs)
        created.append(app)
        return app

    monkeypatch.setattr(firebase_admin, "initialize_app", initialize_app)
    yield created
    for app in created:
        firebase_admin.delete_app(app)


@pytest.fixture
def fcm_settings(settings, monkeypatch, fake_fcm, service_account_file):
    """Settings that make get_push_backend() an FcmPushBackend talking to the fake."""
    monkeypatch.setattr(messaging._MessagingService, "FCM_URL", fake_fcm.fcm_url_template)
    settings.FCM_CREDENTIALS_FILE = str(service_account_file)
    settings.FCM_PROJECT_ID = ""
    settings.FCM_TIMEOUT_SECONDS = 0.3
    return settings


@pytest.fixture
def no_retry_backoff(monkeypatch):
    """firebase-admin retries 500/503 four times with 0 + 1 + 2 + 4 s of backoff; keep the retries, drop the waits."""
    monkeypatch.setattr(Retry, "get_backoff_time", lambda self: 0)


def expected_message(token: str, data: dict | None = None) -> dict:
    message = load_fixture("send_request.json")["message"]
    message["token"] = token
    message["data"] = DATA if data is None else data
    message["android"] = {"priority": "high"}
    message["apns"] = {"payload": {"aps": {"sound": "default"}}}
    return message


# --- the private hook the tests rely on ---------------------------------------------------------


def test_fcm_url_is_still_the_class_constant_the_tests_patch():
    """EXTERNAL_APIS.md: firebase-admin has no base-URL option; FCM_URL is private. If this fails after
    an upgrade, the fake needs another hook (e.g. session.mount on the service's client)."""
    assert messaging._MessagingService.FCM_URL == REAL_FCM_URL
    assert callable(messaging._get_messaging_service)


# --- success -----------------------------------------------------------------------------------


def test_send_posts_the_documented_json_with_the_bearer_from_the_token_endpoint(fcm_settings, fake_fcm):
    outcomes = get_push_backend().send(["fcm-registration-token"], TITLE, BODY, DATA)

    assert outcomes == [PushOutcome(token="fcm-registration-token", ok=True, message_id=FIRST_NAME)]
    token_request, message_request = fake_fcm.requests
    assert token_request.path == "/token"
    assert token_request.form["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer"
    (claims,) = fake_fcm.assertion_claims
    assert (claims["iss"], claims["aud"]) == (CLIENT_EMAIL, "https://oauth2.googleapis.com/token")
    assert fake_fcm.issued_tokens == ["fake-access-token-1"]

    assert message_request.path == f"/v1/projects/{PROJECT}/messages:send"
    assert message_request.headers["authorization"] == "Bearer fake-access-token-1"
    assert message_request.headers["x-goog-api-format-version"] == "2"
    assert message_request.headers["x-firebase-client"] == f"fire-admin-python/{firebase_admin.__version__}"
    assert message_request.json == {"message": expected_message("fcm-registration-token")}


def test_send_without_data_sends_no_data_key(fcm_settings, fake_fcm):
    (outcome,) = get_push_backend().send(["device-1"], TITLE, BODY)

    assert outcome.ok is True
    (request,) = fake_fcm.message_requests
    message = expected_message("device-1")
    del message["data"]
    assert request.json == {"message": message}


def test_a_multicast_of_three_maps_each_token_in_order(fcm_settings, fake_fcm):
    tokens = ["quota-device-c", "device-a", "stale-device-b"]

    outcomes = get_push_backend().send(tokens, TITLE, BODY, DATA)

    assert outcomes == [
        PushOutcome(token="quota-device-c", ok=False, error="QuotaExceededError: Quota exceeded.", retryable=True),
        PushOutcome(token="device-a", ok=True, message_id=FIRST_NAME),
        PushOutcome(
            token="stale-device-b",
            ok=False,
            error="UnregisteredError: Requested entity was not found.",
            unregistered=True,
        ),
    ]
    assert sorted(r.target for r in fake_fcm.message_requests) == sorted(tokens)
    assert len(fake_fcm.token_requests) == 1  # three threads, one access token


def test_more_than_500_tokens_go_in_batches_of_500(fcm_settings, fake_fcm, monkeypatch):
    batch_sizes = []
    real_send = messaging.send_each_for_multicast

    def spy(message, *args, **kwargs):
        batch_sizes.append(len(message.tokens))
        return real_send(message, *args, **kwargs)

    monkeypatch.setattr(messaging, "send_each_for_multicast", spy)
    # 500 threads at once against a one-process fake: 0.3 s is too short for the last answers.
    fcm_settings.FCM_TIMEOUT_SECONDS = 10.0
    tokens = [f"device-{n:04d}" for n in range(1001)]

    outcomes = get_push_backend().send(tokens, TITLE, BODY, DATA)

    assert batch_sizes == [500, 500, 1]
    assert [o.token for o in outcomes] == tokens
    assert all(o.ok for o in outcomes)
    assert len({o.message_id for o in outcomes}) == 1001
    assert sorted(r.target for r in fake_fcm.message_requests) == tokens
    assert len(fake_fcm.token_requests) == 1


def test_the_app_is_named_not_the_default_and_reused_across_sends_and_backends(fcm_settings, fake_fcm, created_apps):
    first = get_push_backend()
    first.send(["device-1"], TITLE, BODY)
    second = get_push_backend()
    second.send(["device-2"], TITLE, BODY)

    (app,) = created_apps
    assert app.name == first.app_name == second.app_name
    assert app.name.startswith("svoykrug-push-")
    assert app.options.get("httpTimeout") == 0.3
    assert app.project_id == PROJECT
    assert firebase_admin.get_app(app.name) is app
    with pytest.raises(ValueError):
        firebase_admin.get_app()  # the default App is left alone
    assert len(fake_fcm.token_requests) == 1
    assert [r.headers["authorization"] for r in fake_fcm.message_requests] == ["Bearer fake-access-token-1"] * 2


def test_concurrent_first_sends_create_one_app(fcm_settings, fake_fcm, created_apps):
    barrier = threading.Barrier(8)
    apps, errors = [], []

    def first_use():
        try:
            barrier.wait(timeout=5)
            apps.append(get_push_backend().get_app())
        except Exception as exc:  # collected for the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=first_use) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)

    assert errors == []
    assert len(created_apps) == 1
    assert len(apps) == 8
    assert all(app is created_apps[0] for app in apps)


def test_fcm_project_id_overrides_the_one_in_the_json(fcm_settings, fake_fcm):
    fcm_settings.FCM_PROJECT_ID = "other-project"

    (outcome,) = get_push_backend().send(["device-1"], TITLE, BODY)

    assert outcome.message_id == "projects/other-project/messages/0:1500415314455276%31bd1c9631bd1c96"
    (request,) = fake_fcm.message_requests
    assert request.path == "/v1/projects/other-project/messages:send"


# --- per-token failures ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("token", "error"),
    [
        ("stale-device", "UnregisteredError: Requested entity was not found."),
        ("bad-device", "InvalidArgumentError: The registration token is not a valid FCM registration token"),
    ],
)
def test_unregistered_and_malformed_tokens_are_unregistered(fcm_settings, fake_fcm, token, error):
    outcomes = get_push_backend().send([token], TITLE, BODY, DATA)

    assert outcomes == [PushOutcome(token=token, ok=False, error=error, unregistered=True)]
    assert len(fake_fcm.message_requests) == 1


def test_a_payload_400_is_permanent_and_does_not_unregister_the_token(fcm_settings, fake_fcm):
    outcomes = get_push_backend().send(["toobig-device"], TITLE, BODY, DATA)

    assert outcomes == [
        PushOutcome(token="toobig-device", ok=False, error="InvalidArgumentError: Android message is too big")
    ]


def test_sender_id_mismatch_is_a_permanent_failure(fcm_settings, fake_fcm):
    outcomes = get_push_backend().send(["mismatch-device"], TITLE, BODY, DATA)

    assert outcomes == [
        PushOutcome(token="mismatch-device", ok=False, error="SenderIdMismatchError: SenderId mismatch")
    ]
    assert len(fake_fcm.message_requests) == 1  # 403 is not retried


@pytest.mark.parametrize(
    ("token", "error", "attempts"),
    [
        ("quota-device", "QuotaExceededError: Quota exceeded.", 1),
        ("unavailable-device", "UnavailableError: The service is currently unavailable.", 5),
        ("internal-device", "InternalError: Internal error encountered.", 5),
    ],
)
def test_quota_and_server_errors_are_retryable(fcm_settings, fake_fcm, no_retry_backoff, token, error, attempts):
    outcomes = get_push_backend().send([token], TITLE, BODY, DATA)

    assert outcomes == [PushOutcome(token=token, ok=False, error=error, retryable=True)]
    # firebase-admin itself retries 500 and 503 four times before giving up; 429 not at all.
    assert len(fake_fcm.message_requests) == attempts


def test_a_timeout_is_retryable_and_costs_two_attempts(fcm_settings, fake_fcm):
    started = time.monotonic()

    outcomes = get_push_backend().send(["slow-device", "device-1"], TITLE, BODY, DATA)

    elapsed = time.monotonic() - started
    slow, fast = outcomes
    assert (slow.ok, slow.retryable, slow.unregistered) == (False, True, False)
    # Not DeadlineExceededError: after urllib3's retry, requests raises ConnectionError(MaxRetryError).
    assert slow.error.startswith("UnavailableError: Failed to establish a connection")
    assert "Read timed out. (read timeout=0.3)" in slow.error
    assert fast == PushOutcome(token="device-1", ok=True, message_id=FIRST_NAME)
    # The session retries a read timeout once (urllib3 read=1): 2 × FCM_TIMEOUT_SECONDS, not slow_delay.
    assert [r.target for r in fake_fcm.message_requests].count("slow-device") == 2
    assert 0.6 <= elapsed < 2.5


def test_fcm_unreachable_is_retryable(fcm_settings, fake_fcm, monkeypatch, closed_port_url):
    monkeypatch.setattr(messaging._MessagingService, "FCM_URL", f"{closed_port_url}/v1/projects/{{0}}/messages:send")

    outcomes = get_push_backend().send(["device-1", "device-2"], TITLE, BODY, DATA)

    for token, outcome in zip(["device-1", "device-2"], outcomes, strict=True):
        assert (outcome.token, outcome.ok, outcome.retryable, outcome.unregistered) == (token, False, True, False)
        assert outcome.error.startswith("UnavailableError: Failed to establish a connection")
    assert fake_fcm.message_requests == []


def test_an_empty_token_is_unregistered_without_failing_the_others(fcm_settings, fake_fcm):
    outcomes = get_push_backend().send(["", "device-1"], TITLE, BODY, DATA)

    assert outcomes == [
        PushOutcome(token="", ok=False, error="empty token", unregistered=True),
        PushOutcome(token="device-1", ok=True, message_id=FIRST_NAME),
    ]


# --- failures of the whole call ------------------------------------------------------------------


def test_token_endpoint_down_makes_every_token_retryable(fcm_settings, fake_fcm, tmp_path, rsa_key, closed_port_url):
    fcm_settings.FCM_CREDENTIALS_FILE = str(write_service_account(tmp_path / "down.json", rsa_key, closed_port_url))
    tokens = [f"device-{n}" for n in range(3)]

    outcomes = get_push_backend().send(tokens, TITLE, BODY, DATA)

    assert [o.token for o in outcomes] == tokens
    for outcome in outcomes:
        assert (outcome.ok, outcome.retryable, outcome.unregistered, outcome.message_id) == (False, True, False, "")
        assert outcome.error.startswith("TransportError: ")
    assert fake_fcm.requests == []


def test_more_than_one_batch_after_a_whole_call_failure_is_not_tried_again(fcm_settings, fake_fcm):
    fake_fcm.token_error = "Invalid JWT Signature."
    tokens = [f"device-{n:04d}" for n in range(501)]

    outcomes = get_push_backend().send(tokens, TITLE, BODY, DATA)

    assert len(outcomes) == 501
    assert {o.error for o in outcomes} == {
        "RefreshError: ('invalid_grant: Invalid JWT Signature.', "
        "{'error': 'invalid_grant', 'error_description': 'Invalid JWT Signature.'})"
    }
    assert all(o.retryable and not o.ok and not o.unregistered for o in outcomes)
    assert len(fake_fcm.token_requests) == 1
    assert fake_fcm.message_requests == []


def test_a_key_the_token_endpoint_rejects_is_retryable_and_recovers(fcm_settings, fake_fcm, tmp_path):
    """The fake checks the JWT's signature: a service-account file with another key is refused."""
    fcm_settings.FCM_CREDENTIALS_FILE = str(
        write_service_account(tmp_path / "other.json", _new_key(), fake_fcm.token_uri)
    )
    backend = get_push_backend()

    (outcome,) = backend.send(["device-1"], TITLE, BODY, DATA)

    assert (outcome.ok, outcome.retryable, outcome.unregistered) == (False, True, False)
    assert outcome.error.startswith("RefreshError: ('invalid_grant: Invalid JWT Signature.'")
    assert fake_fcm.message_requests == []
    assert fake_fcm.issued_tokens == []

    fake_fcm.public_key = None  # the token endpoint now accepts the key: the next send goes through
    (outcome,) = backend.send(["device-1"], TITLE, BODY, DATA)

    assert outcome == PushOutcome(token="device-1", ok=True, message_id=FIRST_NAME)


def test_a_missing_credentials_file_is_retryable_not_an_exception(fcm_settings, fake_fcm, tmp_path, created_apps):
    fcm_settings.FCM_CREDENTIALS_FILE = str(tmp_path / "missing.json")

    (outcome,) = get_push_backend().send(["device-1"], TITLE, BODY, DATA)

    assert (outcome.ok, outcome.retryable, outcome.unregistered) == (False, True, False)
    assert outcome.error.startswith("FileNotFoundError: ")
    assert created_apps == []
    assert fake_fcm.requests == []


@pytest.mark.parametrize(
    ("title", "data", "error"),
    [
        (TITLE, {"points": 50}, "invalid message: data must map strings to strings ('points': int)"),
        (TITLE, {"from": "shop"}, "invalid message: data key 'from' is reserved by FCM"),
        (TITLE, {"google.c.a": "1"}, "invalid message: data key 'google.c.a' is reserved by FCM"),
        (None, DATA, "invalid message: title and body must be strings"),
    ],
)
def test_a_message_fcm_would_refuse_fails_permanently_without_a_request(fcm_settings, fake_fcm, title, data, error):
    outcomes = get_push_backend().send(["device-1", "device-2"], title, BODY, data)

    assert outcomes == [
        PushOutcome(token="device-1", ok=False, error=error),
        PushOutcome(token="device-2", ok=False, error=error),
    ]
    assert fake_fcm.requests == []


def test_no_tokens_send_nothing(fcm_settings, fake_fcm, created_apps):
    assert get_push_backend().send([], TITLE, BODY, DATA) == []
    assert fake_fcm.requests == []
    assert created_apps == []


# --- console backend and backend choice ------------------------------------------------------------


def test_get_push_backend_is_fcm_when_a_credentials_file_is_set(fcm_settings):
    fcm_settings.FCM_PROJECT_ID = "other-project"
    fcm_settings.FCM_TIMEOUT_SECONDS = 7.5

    backend = get_push_backend()

    assert type(backend) is FcmPushBackend
    assert backend.credentials_file == fcm_settings.FCM_CREDENTIALS_FILE
    assert backend.project_id == "other-project"
    assert backend.timeout == 7.5


def test_get_push_backend_is_console_without_a_credentials_file(settings):
    settings.FCM_CREDENTIALS_FILE = ""

    assert type(get_push_backend()) is ConsolePushBackend


def test_the_timeout_setting_defaults_to_ten_seconds():
    from svoykrug import settings as project_settings

    assert project_settings.FCM_TIMEOUT_SECONDS == 10.0


@pytest.mark.parametrize(
    ("debug", "message"),
    [
        (True, "Push (console backend, not sent) to …token-01, …token-02: Заголовок | Текст | data={'kind': 'bonus'}"),
        (False, "Push (console backend, not sent) to …token-01, …token-02; text withheld outside DEBUG"),
    ],
)
def test_console_backend_logs_masked_tokens_and_sends_nothing(
    settings, fake_fcm, created_apps, caplog, monkeypatch, debug, message
):
    settings.FCM_CREDENTIALS_FILE = ""
    settings.DEBUG = debug
    monkeypatch.setattr(messaging._MessagingService, "FCM_URL", fake_fcm.fcm_url_template)
    tokens = ["a-long-secret-prefix-token-01", "another-long-secret-token-02"]

    with caplog.at_level(logging.INFO, logger="notifications.channels.push"):
        outcomes = get_push_backend().send(tokens, "Заголовок", "Текст", {"kind": "bonus"})

    assert outcomes == [PushOutcome(token=t, ok=True, message_id="console") for t in tokens]
    assert [r.getMessage() for r in caplog.records if r.name == push.logger.name] == [message]
    assert "secret" not in caplog.text
    assert fake_fcm.requests == []
    assert created_apps == []
