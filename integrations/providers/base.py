"""The one small interface every CRM provider implements, what it hands back, and the HTTP
session they share (timeouts, retries with backoff, a per-account rate limit).

A provider turns its CRM's records into `CrmEvent`s and knows nothing of the ledger;
`integrations.services` decides what each event does to the circle."""

import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

import requests
from django.conf import settings
from django.core.cache import cache
from django.utils import timezone
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from loyalty.money import parse_amount

logger = logging.getLogger(__name__)


# --- What a provider hands back ----------------------------------------------------------


@dataclass(frozen=True)
class CrmEvent:
    """One thing the CRM says happened.

    - kind "purchase": money was paid for `external_id` (a visit, order, sale). The same
      `external_id` from a webhook and from a sync is the same purchase.
    - kind "refund": the purchase `external_id` was (partly) undone; `refund_id` names this
      refund so that hearing of it again changes nothing; `amount` None means "all of it".
    - kind "ignored": a record seen on purpose and left alone (an error event, an unpaid
      visit never recorded), with the `reason`.
    `needs_details` asks the provider's `complete()` to fetch what a webhook left out."""

    kind: str
    external_id: str
    amount: Decimal | None = None
    occurred_at: datetime | None = None
    phone: str = ""
    customer_name: str = ""
    refund_id: str = ""
    reason: str = ""
    needs_details: bool = False
    raw: dict = field(default_factory=dict, compare=False, repr=False)

    PURCHASE = "purchase"
    REFUND = "refund"
    IGNORED = "ignored"


def purchase(external_id, amount, occurred_at, *, phone="", customer_name="", raw=None) -> CrmEvent:
    return CrmEvent(
        kind=CrmEvent.PURCHASE,
        external_id=str(external_id),
        amount=amount,
        occurred_at=occurred_at,
        phone=str(phone or "").strip(),
        customer_name=str(customer_name or "").strip()[:200],
        raw=raw or {},
    )


def refund(external_id, *, refund_id, amount=None, occurred_at=None, reason="", raw=None) -> CrmEvent:
    return CrmEvent(
        kind=CrmEvent.REFUND,
        external_id=str(external_id),
        refund_id=str(refund_id),
        amount=amount,
        occurred_at=occurred_at,
        reason=reason,
        raw=raw or {},
    )


def ignored(external_id, reason, *, raw=None) -> CrmEvent:
    return CrmEvent(kind=CrmEvent.IGNORED, external_id=str(external_id), reason=str(reason)[:500], raw=raw or {})


# --- Errors -------------------------------------------------------------------------------


class ProviderError(Exception):
    """The CRM could not be reached or refused us; `message` is fit to show the partner."""

    retryable = False

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class ProviderUnavailable(ProviderError):
    """A timeout, a connection error or a 5xx that outlived the retries: try again later."""

    retryable = True


class ProviderAuthError(ProviderError):
    """The credentials are wrong or expired and could not be refreshed: the partner must act."""


class ProviderConfigError(ProviderError):
    """Something the integration needs is missing from its settings or credentials."""


class WebhookRejected(Exception):
    """A webhook body that cannot be read (answered 400, kept for staff to see)."""


class WebhookUnauthorized(Exception):
    """A webhook without the credentials the provider sends (answered 404, not stored)."""


# --- Parsing helpers shared by the providers ---------------------------------------------


def money(value, *, what: str = "amount") -> Decimal:
    """A CRM's amount (number or string, "1 000,50" too) as Decimal with two places."""
    try:
        return parse_amount(value).quantize(Decimal("0.01"))
    except ValueError as exc:
        raise ValueError(f"{what} is not a number: {value!r}") from exc


def aware(value: datetime, tz) -> datetime:
    """A naive local time of the business made aware; aware times are kept."""
    return value if timezone.is_aware(value) else timezone.make_aware(value, tz)


def parse_json(body: bytes):
    try:
        return json.loads(body.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise WebhookRejected(f"The body is not JSON: {exc}") from exc


# --- The interface -------------------------------------------------------------------------


@dataclass(frozen=True)
class FormField:
    """A field of the portal's connect form: a secret goes to the encrypted credentials,
    anything else to the integration's settings."""

    name: str
    label: str
    secret: bool = False
    required: bool = True
    help_text: str = ""


class Provider:
    """Base of a CRM provider. Subclasses set the class attributes and implement the methods."""

    code: str = ""
    title: str = ""
    fields: tuple[FormField, ...] = ()
    accepts_webhooks = True
    # Polling supported (1C's pushed sales also have an OData reader).
    can_sync = True

    def __init__(self, integration):
        self.integration = integration
        self.config = dict(integration.config or {})
        self.credentials = integration.credentials
        self.tz = _business_tz(integration)
        self.http = ProviderSession(integration)

    # Each method raises ProviderError (or a subclass) when the CRM does not play along.

    def test_connection(self) -> str:
        """Make one cheap authenticated call; return a short description of what was reached
        (the company's or organisation's name)."""
        raise NotImplementedError

    def fetch_changes(self, since: datetime, until: datetime) -> Iterator[list[CrmEvent]]:
        """Records changed in [since, until), one page at a time."""
        raise NotImplementedError

    def check_webhook(self, headers) -> None:
        """Raise WebhookUnauthorized unless the request carries the provider's own
        credentials (where the provider sends any; the URL's secret is checked before)."""

    def parse_webhook(self, body: bytes, content_type: str) -> list[CrmEvent]:
        """Events in a webhook body, without network calls; WebhookRejected when unreadable."""
        raise NotImplementedError

    def complete(self, event: CrmEvent) -> CrmEvent:
        """Fetch what a webhook left out of an event marked `needs_details`."""
        return event

    def register_webhook(self, url: str) -> bool:
        """Tell the CRM to send its webhooks to `url`, where its API allows it; False where
        the partner pastes the URL into the CRM by hand."""
        return False

    def on_connect(self, form_data: dict) -> None:
        """Called once when the partner saves the connect form, with every field the form
        took (secrets included): a provider that swaps a one-time code for tokens does it here."""

    def save_credentials(self, **changes) -> None:
        """Store changed credentials (a rotated OAuth token) encrypted, under a row lock so
        that two workers refreshing at once do not lose one another's token."""
        from django.db import transaction

        from integrations.models import CRMIntegration

        with transaction.atomic():
            locked = CRMIntegration.objects.select_for_update().get(pk=self.integration.pk)
            current = locked.credentials
            current.update(changes)
            locked.credentials = current
            locked.save(update_fields=["credentials_encrypted", "updated_at"])
        self.integration.credentials_encrypted = locked.credentials_encrypted
        self.credentials = current

    def reload_credentials(self) -> dict:
        from integrations.models import CRMIntegration

        fresh = CRMIntegration.objects.get(pk=self.integration.pk)
        self.integration.credentials_encrypted = fresh.credentials_encrypted
        self.credentials = fresh.credentials
        return self.credentials

    def scrub(self, message: str) -> str:
        """A CRM's error text with our credentials masked (iiko quotes the API login back)."""
        for secret in self.credentials.values():
            if isinstance(secret, str) and len(secret) >= 4:
                message = message.replace(secret, "***")
        return message

    def require(self, *names: str, secret: bool = True) -> list[str]:
        source = self.credentials if secret else self.config
        missing = [name for name in names if not str(source.get(name) or "").strip()]
        if missing:
            raise ProviderConfigError(f"Missing in the integration's settings: {', '.join(missing)}.")
        return [str(source[name]).strip() for name in names]


def _business_tz(integration):
    import zoneinfo

    try:
        return zoneinfo.ZoneInfo(integration.business.time_zone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return timezone.get_default_timezone()


# --- HTTP ------------------------------------------------------------------------------------


class ProviderSession:
    """requests with the integration's timeouts, urllib3 retries with exponential backoff on
    connection errors, timeouts and 5xx (for every method: the providers' reads are POSTs
    too, and their writes are not used), and a requests-per-second limit per integration
    shared by all workers through the cache."""

    def __init__(self, integration):
        self.integration = integration
        self.provider = integration.get_provider_display()  # "YCLIENTS", for messages
        self.session = requests.Session()
        retry = Retry(
            total=settings.INTEGRATIONS_HTTP_RETRIES,
            connect=settings.INTEGRATIONS_HTTP_RETRIES,
            read=settings.INTEGRATIONS_HTTP_RETRIES,
            status=settings.INTEGRATIONS_HTTP_RETRIES,
            status_forcelist=(500, 502, 503, 504),
            allowed_methods=None,
            backoff_factor=settings.INTEGRATIONS_HTTP_BACKOFF_SECONDS,
            raise_on_status=False,
            respect_retry_after_header=True,
        )
        adapter = HTTPAdapter(max_retries=retry)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.headers["User-Agent"] = "SvoyKrug/1.0 (+loyalty network)"

    def request(self, method: str, url: str, **kwargs) -> requests.Response:
        """One call; ProviderUnavailable when the CRM cannot be reached or keeps failing.
        Other statuses are returned for the provider to read its own error format."""
        self._throttle()
        kwargs.setdefault(
            "timeout", (settings.INTEGRATIONS_CONNECT_TIMEOUT_SECONDS, settings.INTEGRATIONS_READ_TIMEOUT_SECONDS)
        )
        try:
            response = self.session.request(method, url, **kwargs)
        except requests.Timeout as exc:
            raise ProviderUnavailable(f"{self.provider}: no answer in time ({_host(url)}).") from exc
        except requests.ConnectionError as exc:
            raise ProviderUnavailable(f"{self.provider}: cannot connect to {_host(url)}.") from exc
        except requests.RequestException as exc:
            raise ProviderUnavailable(f"{self.provider}: request failed: {type(exc).__name__}.") from exc
        if response.status_code >= 500:
            raise ProviderUnavailable(f"{self.provider}: server error {response.status_code} from {_host(url)}.")
        if response.status_code == 429:
            raise ProviderUnavailable(f"{self.provider}: rate limited by {_host(url)}.")
        return response

    def _throttle(self) -> None:
        """At most N calls per second per integration (N from INTEGRATIONS_RATE_LIMITS):
        a counter per second in the cache; a call over the limit waits for the next second."""
        limit = settings.INTEGRATIONS_RATE_LIMITS.get(self.integration.provider)
        if not limit:
            return
        while True:
            second = int(time.time())
            key = f"crm-rate:{self.integration.pk}:{second}"
            cache.add(key, 0, timeout=5)
            try:
                used = cache.incr(key)
            except ValueError:  # expired between add and incr
                continue
            if used <= limit:
                return
            time.sleep(max(0.0, second + 1 - time.time()))


def _host(url: str) -> str:
    from urllib.parse import urlsplit

    return urlsplit(url).netloc or url


def json_body(response: requests.Response, provider: str):
    """The response's JSON, or ProviderError naming the provider when it is not JSON."""
    try:
        return response.json()
    except ValueError as exc:
        raise ProviderError(f"{provider}: unexpected answer (HTTP {response.status_code}, not JSON).") from exc
