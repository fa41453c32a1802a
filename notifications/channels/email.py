"""The email channel: Django's mail API through the configured EMAIL_BACKEND.

With EMAIL_ESP_API_KEY set that is anymail's backend for EMAIL_ESP (SendGrid by default),
otherwise Django's console backend, which prints the message to stdout.

SendGrid answers `POST /v3/mail/send` with 202 and an empty body; anymail then reports the
status "queued" and the uuid it put into `custom_args.anymail_id` as the message id, which
SendGrid's event webhook sends back (see notifications/delivery.py). A non-2xx answer, a
timeout or a refused connection is an anymail exception, mapped to the errors below like the
SMS channel's.
"""

import logging
import re
from dataclasses import dataclass

import requests
from anymail.exceptions import AnymailAPIError, AnymailError, AnymailRecipientsRefused
from django.core.exceptions import ValidationError
from django.core.mail import EmailMultiAlternatives, get_connection
from django.core.mail.backends.console import EmailBackend as ConsoleEmailBackend
from django.core.validators import validate_email

logger = logging.getLogger(__name__)


class EmailError(Exception):
    """An email was not accepted. `status_code` is the ESP's HTTP status when it answered."""

    retryable = False

    def __init__(self, message: str, *, status_code: int | None = None):
        super().__init__(message)
        self.status_code = status_code


class EmailRecipientError(EmailError):
    """This address cannot get email: malformed, or the ESP refused it."""


class EmailTemporaryError(EmailError):
    """The ESP is unreachable, slow, overloaded or throttling; the same email may go through later."""

    retryable = True


@dataclass(frozen=True)
class EmailReceipt:
    """What the backend said about one accepted email: `status` is anymail's ("queued" for
    SendGrid), "sent" for Django's own backends."""

    provider: str
    message_id: str
    status: str


def send_email_message(
    *,
    to: str,
    subject: str,
    text_body: str,
    html_body: str | None = None,
    metadata: dict[str, str] | None = None,
    tags: list[str] | None = None,
) -> EmailReceipt:
    """Send one email to one bare address (`client@example.com`) from DEFAULT_FROM_EMAIL.

    `metadata` travels with the message and comes back in the ESP's events (SendGrid:
    `custom_args`); `tags` are SendGrid's `categories`. Both are ignored by the console backend.
    Raises EmailRecipientError, EmailTemporaryError or EmailError.
    """
    try:
        validate_email(to)
    except ValidationError as exc:
        raise EmailRecipientError("Not a valid email address.") from exc

    connection = get_connection()  # settings.EMAIL_BACKEND
    message = EmailMultiAlternatives(subject=subject, body=text_body, to=[to], connection=connection)
    if html_body:
        message.attach_alternative(html_body, "text/html")
    # Anymail reads these attributes from any EmailMessage; other backends ignore them.
    if metadata:
        message.metadata = dict(metadata)
    if tags:
        message.tags = list(tags)

    provider = _provider_name(connection)
    try:
        sent = message.send()
    except AnymailError as exc:
        error = _error_for(exc, provider)
        logger.warning("Email to %s via %s failed: %s", mask_email(to), provider, error)
        raise error from exc
    except requests.RequestException as exc:  # anymail wraps these; kept in case a backend does not
        raise _transport_error(exc, provider) from exc
    if not sent:
        raise EmailError(f"The {provider} backend did not send the email.")

    receipt = _receipt(message, provider)
    logger.info("Email to %s accepted by %s as %s (%s)", mask_email(to), provider, receipt.message_id, receipt.status)
    return receipt


def _provider_name(connection) -> str:
    esp_name = getattr(connection, "esp_name", None)  # anymail backends: "SendGrid", "Mailgun", ...
    if esp_name:
        return str(esp_name).lower().replace(" ", "_")
    if isinstance(connection, ConsoleEmailBackend):
        return "console"
    # Django's smtp/locmem/filebased backends: the module name.
    return type(connection).__module__.rpartition(".")[2]


def _receipt(message: EmailMultiAlternatives, provider: str) -> EmailReceipt:
    anymail_status = getattr(message, "anymail_status", None)
    if anymail_status is None:
        # Not an anymail backend: Django's backends report nothing but success.
        return EmailReceipt(provider=provider, message_id=provider, status="sent")
    return EmailReceipt(
        provider=provider,
        message_id=_one(anymail_status.message_id),
        status=_one(anymail_status.status) or "unknown",
    )


def _one(value) -> str:
    """Anymail gives a bare value for one recipient and a set for several; we send to one."""
    if value is None:
        return ""
    if isinstance(value, set | frozenset | list | tuple):
        return ",".join(sorted(str(item) for item in value if item))
    return str(value)


# SendGrid names the offending field of a 400, e.g. "personalizations.0.to.0.email".
_RECIPIENT_FIELD = re.compile(r"^personalizations\.\d+\.(to|cc|bcc)\b")


def _error_for(exc: AnymailError, provider: str) -> EmailError:
    if isinstance(exc, AnymailRecipientsRefused):
        return EmailRecipientError(f"{provider} refused the recipient.")
    cause = exc.__cause__
    if isinstance(exc, requests.RequestException) and isinstance(cause, requests.RequestException):
        # anymail's AnymailRequestsAPIError raised from a transport error (no HTTP answer).
        return _transport_error(cause, provider)
    status_code = exc.status_code
    if isinstance(exc, AnymailAPIError) and status_code is not None:
        if status_code == 429 or status_code >= 500:
            return EmailTemporaryError(f"{provider} answered HTTP {status_code}.", status_code=status_code)
        errors = _esp_errors(exc)
        if status_code == 400 and errors and all(_RECIPIENT_FIELD.match(field) for field, _ in errors):
            detail = "; ".join(text for _, text in errors if text)
            return EmailRecipientError(
                f"{provider} rejected the recipient: {detail or 'invalid address'}.", status_code=status_code
            )
        detail = "; ".join(f"{field}: {text}" if field else text for field, text in errors if text or field)
        return EmailError(
            f"{provider} answered HTTP {status_code}" + (f": {detail}." if detail else "."), status_code=status_code
        )
    # Invalid from address, unsupported feature, serialization, a 2xx that could not be read...:
    # retrying the same message will not help. The first line of anymail's text names the problem.
    summary = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return EmailError(f"{provider}: {summary}")


def _transport_error(exc: requests.RequestException, provider: str) -> EmailTemporaryError:
    if isinstance(exc, requests.Timeout):
        return EmailTemporaryError(f"{provider} did not answer in time.")
    # The cause's class only (ConnectionError, SSLError...): its text carries the API URL.
    return EmailTemporaryError(f"{provider} is unreachable: {_base_requests_class(exc)}.")


def _base_requests_class(exc: requests.RequestException) -> str:
    """`ConnectionError` for anymail's dynamic `AnymailRequestsAPIError(ConnectionError)` too."""
    for cls in type(exc).__mro__:
        if cls.__module__.startswith("requests"):
            return cls.__name__
    return type(exc).__name__


def _esp_errors(exc: AnymailAPIError) -> list[tuple[str, str]]:
    """SendGrid's `{"errors": [{"message", "field", "help"}]}` as (field, message) pairs; [] otherwise."""
    response = getattr(exc, "response", None)
    if response is None:
        return []
    try:
        payload = response.json()
    except ValueError:
        return []
    errors = payload.get("errors") if isinstance(payload, dict) else None
    if not isinstance(errors, list):
        return []
    return [
        (str(item.get("field") or ""), str(item.get("message") or "").strip().rstrip("."))
        for item in errors
        if isinstance(item, dict)
    ]


def mask_email(address: str) -> str:
    """`client@example.com` → `cl***@example.com`, for logs."""
    local, at, domain = address.rpartition("@")
    if not at:
        return "***"
    return f"{local[:2]}***@{domain}"
