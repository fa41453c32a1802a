"""The SMS channel: SMS.ru's HTTP API, or a console backend that logs when no API id is set.

SMS.ru answers HTTP 200 with a JSON status in both success and failure; a request-level
failure (wrong api_id, no money) is `{"status": "ERROR", "status_code": 2xx}` at the top,
a failure for one recipient sits under `sms[<phone>]`. Both are mapped to the errors below.
"""

import logging
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

import requests
from django.conf import settings

from accounts.phones import mask_phone

logger = logging.getLogger(__name__)


class SmsError(Exception):
    """An SMS was not accepted. `status_code` is SMS.ru's code when it gave one."""

    retryable = False

    def __init__(self, message: str, *, status_code: int | None = None):
        super().__init__(message)
        self.status_code = status_code


class SmsRecipientError(SmsError):
    """This number cannot get SMS (invalid, no route, in the stop-list)."""


class SmsTemporaryError(SmsError):
    """The provider is unreachable, overloaded or throttling; the same SMS may go through later."""

    retryable = True


class SmsConfigurationError(SmsError):
    """Our account with the provider is wrong (api id, balance, sender name): an operator must act."""


# SMS.ru status codes (fixtures/smsru/status_codes.json) grouped by what the caller can do.
RECIPIENT_CODES = {202, 207, 209}
TEMPORARY_CODES = {206, 220, 230, 231, 232, 233, 500}
CONFIGURATION_CODES = {200, 201, 204, 210, 211, 212, 300, 301, 302}


def _error_for(status_code: int | None, text: str) -> SmsError:
    if status_code in RECIPIENT_CODES:
        return SmsRecipientError(text, status_code=status_code)
    if status_code in TEMPORARY_CODES:
        return SmsTemporaryError(text, status_code=status_code)
    if status_code in CONFIGURATION_CODES:
        return SmsConfigurationError(text, status_code=status_code)
    return SmsError(text, status_code=status_code)


@dataclass(frozen=True)
class SmsReceipt:
    """What the provider said about one accepted SMS."""

    provider: str
    message_id: str
    balance: Decimal | None = None


class ConsoleSmsBackend:
    """Logs the SMS instead of sending it: the embedded default for development and demos."""

    name = "console"

    def send(self, phone: str, text: str) -> SmsReceipt:
        if settings.DEBUG:
            # Development: the developer reads the login code here.
            logger.warning("SMS (console backend, not sent) to %s: %s", phone, text)
        else:
            # A production without SMSRU_API_ID must not leak login codes into its logs.
            logger.warning("SMS (console backend, not sent) to %s; text withheld outside DEBUG", mask_phone(phone))
        return SmsReceipt(provider=self.name, message_id="console")


class SmsRuBackend:
    """SMS.ru over HTTP: POST /sms/send with api_id, to, msg, json=1."""

    name = "smsru"

    def __init__(
        self,
        *,
        api_id: str,
        base_url: str,
        sender: str = "",
        test_mode: bool = False,
        timeout: tuple[float, float] = (3.0, 10.0),
        session: requests.Session | None = None,
    ):
        self.api_id = api_id
        self.base_url = base_url.rstrip("/")
        self.sender = sender
        self.test_mode = test_mode
        self.timeout = timeout
        self.session = session or requests.Session()

    def send(self, phone: str, text: str) -> SmsReceipt:
        recipient = phone.lstrip("+")
        form = {"api_id": self.api_id, "to": recipient, "msg": text, "json": "1"}
        if self.sender:
            form["from"] = self.sender
        if self.test_mode:
            form["test"] = "1"
        payload = self._post("/sms/send", form)

        recipients = payload.get("sms")
        per_number = recipients.get(recipient) if isinstance(recipients, dict) else None
        if not isinstance(per_number, dict):
            raise SmsTemporaryError("SMS.ru did not report on the recipient.")
        if per_number.get("status") != "OK":
            code = _as_int(per_number.get("status_code"))
            raise _error_for(code, str(per_number.get("status_text") or f"SMS.ru refused the number ({code})."))
        logger.info("SMS to %s accepted by SMS.ru as %s", mask_phone(phone), per_number.get("sms_id"))
        return SmsReceipt(
            provider=self.name,
            message_id=str(per_number.get("sms_id") or ""),
            balance=_as_decimal(payload.get("balance")),
        )

    def balance(self) -> Decimal:
        """The account's balance in roubles (/my/balance); also a cheap connection check."""
        payload = self._post("/my/balance", {"api_id": self.api_id, "json": "1"})
        balance = _as_decimal(payload.get("balance"))
        if balance is None:
            raise SmsTemporaryError("SMS.ru did not report the balance.")
        return balance

    def _post(self, path: str, form: dict) -> dict:
        try:
            response = self.session.post(f"{self.base_url}{path}", data=form, timeout=self.timeout)
        except requests.Timeout as exc:
            raise SmsTemporaryError("SMS.ru did not answer in time.") from exc
        except requests.RequestException as exc:
            raise SmsTemporaryError(f"SMS.ru is unreachable: {exc.__class__.__name__}.") from exc
        if response.status_code >= 500 or response.status_code == 429:
            raise SmsTemporaryError(f"SMS.ru answered HTTP {response.status_code}.")
        if response.status_code != 200:
            raise SmsError(f"SMS.ru answered HTTP {response.status_code}.")
        try:
            payload = response.json()
        except ValueError as exc:
            raise SmsTemporaryError("SMS.ru answered with something that is not JSON.") from exc
        if not isinstance(payload, dict):
            raise SmsTemporaryError("SMS.ru answered with an unexpected JSON shape.")
        if payload.get("status") != "OK":
            code = _as_int(payload.get("status_code"))
            raise _error_for(code, str(payload.get("status_text") or f"SMS.ru refused the request ({code})."))
        return payload


def _as_int(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _as_decimal(value) -> Decimal | None:
    """SMS.ru's balance (a JSON number) as Decimal; None when absent or not a number, as a
    strange balance must not turn an accepted SMS into a failure."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return None


def get_sms_backend() -> ConsoleSmsBackend | SmsRuBackend:
    """SMS.ru when SMSRU_API_ID is set, the console backend otherwise."""
    if not settings.SMSRU_API_ID:
        return ConsoleSmsBackend()
    return SmsRuBackend(
        api_id=settings.SMSRU_API_ID,
        base_url=settings.SMSRU_BASE_URL,
        sender=settings.SMSRU_SENDER,
        test_mode=settings.SMSRU_TEST_MODE,
        timeout=(settings.SMSRU_CONNECT_TIMEOUT_SECONDS, settings.SMSRU_READ_TIMEOUT_SECONDS),
    )
