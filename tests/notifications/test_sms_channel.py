"""The SMS channel against a local fake SMS.ru: the real SmsRuBackend and requests, real HTTP on 127.0.0.1."""

import logging
import socket
from decimal import Decimal

import pytest

from notifications import services
from notifications.channels.sms import (
    ConsoleSmsBackend,
    SmsConfigurationError,
    SmsError,
    SmsReceipt,
    SmsRecipientError,
    SmsRuBackend,
    SmsTemporaryError,
    get_sms_backend,
)

PHONE = "+79991234567"
TEXT = "Ваш код входа: 1234. Никому его не сообщайте."

# The service functions log every SMS they send in the database.
pytestmark = pytest.mark.django_db


@pytest.fixture
def closed_port_url():
    """A URL whose port refuses connections: bound, never listening, so nobody else can take it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()


# --- a successful send ---------------------------------------------------------------------------


def test_send_posts_the_documented_form_and_returns_the_receipt(smsru_settings, fake_smsru):
    receipt = get_sms_backend().send(PHONE, TEXT)

    assert len(fake_smsru.requests) == 1
    request = fake_smsru.requests[0]
    assert request.method == "POST"
    assert request.path == "/sms/send"
    assert request.content_type == "application/x-www-form-urlencoded"
    assert request.fields == {"api_id": "test-api-id", "to": "79991234567", "msg": TEXT, "json": "1"}
    assert receipt == SmsReceipt(provider="smsru", message_id="000000-10000000", balance=Decimal("4122.56"))
    assert isinstance(receipt.balance, Decimal)


def test_send_sends_from_when_a_sender_is_set(smsru_settings, fake_smsru):
    smsru_settings.SMSRU_SENDER = "SvoyKrug"

    get_sms_backend().send(PHONE, TEXT)

    (request,) = fake_smsru.requests
    assert request.fields["from"] == "SvoyKrug"
    assert "test" not in request.fields


def test_send_sends_test_flag_in_test_mode(smsru_settings, fake_smsru):
    smsru_settings.SMSRU_TEST_MODE = True

    get_sms_backend().send(PHONE, TEXT)

    (request,) = fake_smsru.requests
    assert request.fields["test"] == "1"
    assert "from" not in request.fields


def test_send_sends_neither_from_nor_test_by_default(smsru_settings, fake_smsru):
    get_sms_backend().send(PHONE, TEXT)

    (request,) = fake_smsru.requests
    assert "from" not in request.fields
    assert "test" not in request.fields
    assert set(request.fields) == {"api_id", "to", "msg", "json"}


# --- errors ----------------------------------------------------------------------------------------


def test_wrong_api_id_is_a_configuration_error(smsru_settings, fake_smsru):
    smsru_settings.SMSRU_API_ID = "bad"

    with pytest.raises(SmsConfigurationError) as excinfo:
        get_sms_backend().send(PHONE, TEXT)

    assert excinfo.value.status_code == 200
    assert excinfo.value.retryable is False
    assert str(excinfo.value) == "Неправильный api_id"
    assert len(fake_smsru.requests) == 1


def test_no_money_is_a_configuration_error(smsru_settings, fake_smsru):
    smsru_settings.SMSRU_API_ID = "nomoney"

    with pytest.raises(SmsConfigurationError) as excinfo:
        get_sms_backend().send(PHONE, TEXT)

    assert excinfo.value.status_code == 201
    assert excinfo.value.retryable is False
    assert str(excinfo.value) == "Не хватает средств на лицевом счету"


def test_per_recipient_207_is_a_recipient_error(smsru_settings, fake_smsru):
    with pytest.raises(SmsRecipientError) as excinfo:
        get_sms_backend().send("+79991230000", TEXT)

    assert excinfo.value.status_code == 207
    assert excinfo.value.retryable is False
    assert str(excinfo.value).startswith("На этот номер (или один из номеров) нельзя отправлять сообщения")
    (request,) = fake_smsru.requests
    assert request.fields["to"] == "79991230000"


def test_http_500_is_a_temporary_error(smsru_settings, fake_smsru):
    smsru_settings.SMSRU_API_ID = "broken"

    with pytest.raises(SmsTemporaryError) as excinfo:
        get_sms_backend().send(PHONE, TEXT)

    assert excinfo.value.retryable is True
    assert excinfo.value.status_code is None
    assert str(excinfo.value) == "SMS.ru answered HTTP 500."


def test_a_body_that_is_not_json_is_a_temporary_error(smsru_settings, fake_smsru):
    smsru_settings.SMSRU_API_ID = "notjson"

    with pytest.raises(SmsTemporaryError) as excinfo:
        get_sms_backend().send(PHONE, TEXT)

    assert excinfo.value.retryable is True
    assert str(excinfo.value) == "SMS.ru answered with something that is not JSON."


def test_a_read_timeout_is_a_temporary_error(smsru_settings, fake_smsru):
    smsru_settings.SMSRU_READ_TIMEOUT_SECONDS = 0.3
    fake_smsru.slow_delay = 1.0

    with pytest.raises(SmsTemporaryError) as excinfo:
        get_sms_backend().send("+79991239999", TEXT)

    assert excinfo.value.retryable is True
    assert str(excinfo.value) == "SMS.ru did not answer in time."
    (request,) = fake_smsru.requests
    assert request.fields["to"] == "79991239999"


def test_connection_refused_is_a_temporary_error(smsru_settings, closed_port_url, fake_smsru):
    smsru_settings.SMSRU_BASE_URL = closed_port_url

    with pytest.raises(SmsTemporaryError) as excinfo:
        get_sms_backend().send(PHONE, TEXT)

    assert excinfo.value.retryable is True
    assert str(excinfo.value) == "SMS.ru is unreachable: ConnectionError."
    assert fake_smsru.requests == []


# --- balance ---------------------------------------------------------------------------------------


def test_balance_returns_the_account_balance(smsru_settings, fake_smsru):
    backend = get_sms_backend()

    assert backend.balance() == Decimal("4122.56")
    (request,) = fake_smsru.requests
    assert request.path == "/my/balance"
    assert request.fields == {"api_id": "test-api-id", "json": "1"}


def test_balance_with_a_wrong_api_id_is_a_configuration_error(smsru_settings, fake_smsru):
    smsru_settings.SMSRU_API_ID = "bad"

    with pytest.raises(SmsConfigurationError) as excinfo:
        get_sms_backend().balance()

    assert excinfo.value.status_code == 200


# --- backend choice --------------------------------------------------------------------------------


def test_get_sms_backend_is_smsru_when_an_api_id_is_set(smsru_settings, fake_smsru):
    smsru_settings.SMSRU_SENDER = "SvoyKrug"
    smsru_settings.SMSRU_TEST_MODE = True

    backend = get_sms_backend()

    assert type(backend) is SmsRuBackend
    assert backend.api_id == "test-api-id"
    assert backend.base_url == fake_smsru.url
    assert backend.sender == "SvoyKrug"
    assert backend.test_mode is True
    assert backend.timeout == (1.0, 2.0)


def test_get_sms_backend_is_console_without_an_api_id(smsru_settings, fake_smsru, caplog):
    smsru_settings.SMSRU_API_ID = ""
    smsru_settings.DEBUG = True

    backend = get_sms_backend()
    with caplog.at_level(logging.WARNING, logger="notifications.channels.sms"):
        receipt = backend.send(PHONE, TEXT)

    assert type(backend) is ConsoleSmsBackend
    assert receipt == SmsReceipt(provider="console", message_id="console", balance=None)
    assert fake_smsru.requests == []
    messages = [r.getMessage() for r in caplog.records if r.name == "notifications.channels.sms"]
    assert messages == [f"SMS (console backend, not sent) to {PHONE}: {TEXT}"]


def test_console_backend_withholds_the_text_outside_debug(smsru_settings, caplog):
    smsru_settings.SMSRU_API_ID = ""
    smsru_settings.DEBUG = False

    with caplog.at_level(logging.WARNING, logger="notifications.channels.sms"):
        get_sms_backend().send(PHONE, "Код: 123456")

    messages = [r.getMessage() for r in caplog.records if r.name == "notifications.channels.sms"]
    assert messages == ["SMS (console backend, not sent) to +7999***4567; text withheld outside DEBUG"]
    assert "123456" not in caplog.text


@pytest.mark.parametrize("balance", ["lots", None, [1], {"rub": 1}])
def test_a_strange_balance_does_not_fail_an_accepted_sms(balance):
    class Reply:
        status_code = 200

        def json(self):
            return {
                "status": "OK",
                "status_code": 100,
                "sms": {"79991234567": {"status": "OK", "sms_id": "1-1"}},
                "balance": balance,
            }

    class Session:
        def post(self, *args, **kwargs):
            return Reply()

    backend = SmsRuBackend(api_id="x", base_url="http://127.0.0.1:9", session=Session())

    receipt = backend.send(PHONE, TEXT)

    assert receipt == SmsReceipt(provider="smsru", message_id="1-1", balance=None)


# --- notifications.services ------------------------------------------------------------------------

FAILURES = [
    pytest.param({"SMSRU_API_ID": "bad"}, PHONE, SmsConfigurationError, id="wrong-api-id"),
    pytest.param({"SMSRU_API_ID": "nomoney"}, PHONE, SmsConfigurationError, id="no-money"),
    pytest.param({}, "+79991230000", SmsRecipientError, id="recipient-207"),
    pytest.param({"SMSRU_API_ID": "broken"}, PHONE, SmsTemporaryError, id="http-500"),
    pytest.param({"SMSRU_API_ID": "notjson"}, PHONE, SmsTemporaryError, id="not-json"),
    pytest.param({"SMSRU_READ_TIMEOUT_SECONDS": 0.3}, "+79991239999", SmsTemporaryError, id="read-timeout"),
    pytest.param({"SMSRU_BASE_URL": "closed-port"}, PHONE, SmsTemporaryError, id="connection-refused"),
]


def _apply(settings, overrides: dict, closed_port_url: str) -> None:
    for name, value in overrides.items():
        setattr(settings, name, closed_port_url if value == "closed-port" else value)


def test_send_sms_returns_true_on_success(smsru_settings, fake_smsru):
    assert services.send_sms(PHONE, TEXT) is True

    (request,) = fake_smsru.requests
    assert (request.path, request.fields["to"], request.fields["msg"]) == ("/sms/send", "79991234567", TEXT)


def test_send_sms_returns_true_with_the_console_backend(smsru_settings, fake_smsru):
    smsru_settings.SMSRU_API_ID = ""

    assert services.send_sms(PHONE, TEXT) is True
    assert fake_smsru.requests == []


@pytest.mark.parametrize(("overrides", "phone", "error"), FAILURES)
def test_send_sms_returns_false_and_never_raises(smsru_settings, fake_smsru, closed_port_url, overrides, phone, error):
    _apply(smsru_settings, overrides, closed_port_url)

    assert services.send_sms(phone, TEXT) is False


def test_deliver_sms_returns_the_receipt(smsru_settings, fake_smsru):
    receipt = services.deliver_sms(PHONE, TEXT, purpose="login")

    assert receipt == SmsReceipt(provider="smsru", message_id="000000-10000000", balance=Decimal("4122.56"))
    (request,) = fake_smsru.requests
    assert (request.path, request.fields["to"], request.fields["msg"]) == ("/sms/send", "79991234567", TEXT)


@pytest.mark.parametrize(("overrides", "phone", "error"), FAILURES)
def test_deliver_sms_raises(smsru_settings, fake_smsru, closed_port_url, overrides, phone, error):
    _apply(smsru_settings, overrides, closed_port_url)

    with pytest.raises(error) as excinfo:
        services.deliver_sms(phone, TEXT)

    assert type(excinfo.value) is error
    assert isinstance(excinfo.value, SmsError)


def test_deploy_check_warns_when_sms_would_only_be_logged(settings):
    from django.core import checks

    settings.DEBUG = False
    settings.SMSRU_API_ID = ""
    warned = [m.id for m in checks.run_checks(include_deployment_checks=True)]
    settings.SMSRU_API_ID = "configured"
    configured = [m.id for m in checks.run_checks(include_deployment_checks=True)]

    assert "notifications.W001" in warned
    assert "notifications.W001" not in configured
