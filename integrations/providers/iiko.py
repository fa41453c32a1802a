"""iiko Cloud (restaurants, cafés, delivery): a closed order is a purchase; a deleted or
cancelled one is refunded.

Every call is a JSON POST with a bearer token from /api/1/access_token, swapped for the
partner's API login. Tokens live an hour; one is kept in the cache for 50 minutes and, when
iiko answers 401 before that, renewed once and the call repeated once.

Table orders (the dining room) arrive by webhook only: iiko Cloud cannot list them by date
(/api/1/order/by_table needs the ids of the tables, /api/1/order/by_id those of the
orders), so a sync reads closed and cancelled deliveries alone, by delivery date, which
iiko keeps for 7 days. register_webhook asks for Closed table and delivery orders.

Order times (whenClosed, delivery dates) are the terminal's local time in iiko's own format,
"yyyy-MM-dd HH:mm:ss.fff"; they are read and written in the business's time zone.

external_id: "order:<iiko order id>" (the same id in a webhook and in a sync); a refund is
"order:<id>:cancelled"."""

import hashlib
import logging
import re
import secrets
from datetime import datetime, timedelta

from django.conf import settings
from django.core.cache import cache
from django.utils.translation import gettext_lazy as _

from integrations.providers.base import (
    CrmEvent,
    FormField,
    Provider,
    ProviderAuthError,
    ProviderConfigError,
    ProviderError,
    ProviderUnavailable,
    WebhookRejected,
    WebhookUnauthorized,
    aware,
    ignored,
    json_body,
    money,
    parse_json,
    purchase,
    refund,
)

logger = logging.getLogger(__name__)

NAME = "iiko"
TOKEN_TTL_SECONDS = 50 * 60  # below the token's 1 hour lifetime
ORDER_EVENTS = ("TableOrderUpdate", "DeliveryOrderUpdate")
DELIVERY_STATUSES = ["Closed", "Cancelled"]
# A delivery is found by its delivery date, and is closed a while after it (the courier
# comes back): a sync looks back this far before its window.
CLOSING_LAG = timedelta(hours=12)
# One request per day of the window keeps each answer (iiko does not paginate) bounded.
DAY = timedelta(days=1)
WEBHOOK_FILTER = {
    "deliveryOrderFilter": {
        "orderStatuses": ["Closed"],
        "itemStatuses": None,
        "errors": False,
        "returnedExternalDataKeys": None,
    },
    "tableOrderFilter": {"orderStatuses": ["Closed"], "itemStatuses": None, "errors": False},
}


class IikoProvider(Provider):
    code = "iiko"
    title = "iiko Cloud"
    fields = (
        FormField(
            "api_login",
            _("API login"),
            secret=True,
            help_text=_("The API key from iikoWeb: Settings → API settings."),
        ),
        FormField(
            "organization_ids",
            _("Organisation IDs"),
            required=False,
            help_text=_("Separated by commas; leave empty for every organisation the API login sees."),
        ),
    )

    # --- Calls ------------------------------------------------------------------------------

    def test_connection(self) -> str:
        organizations = self._organizations()
        return ", ".join(str(org.get("name") or org["id"]) for org in organizations)

    def fetch_changes(self, since: datetime, until: datetime):
        """Closed and cancelled deliveries, one day of delivery dates per request."""
        organization_ids = self._organization_ids()
        start = since - CLOSING_LAG
        while start < until:
            end = min(start + DAY, until)
            payload = self._call(
                "/api/1/deliveries/by_delivery_date_and_status",
                {
                    "organizationIds": organization_ids,
                    "deliveryDateFrom": self._iiko_time(start),
                    "deliveryDateTo": self._iiko_time(end),
                    "statuses": DELIVERY_STATUSES,
                },
            )
            events = [
                self._synced_order(info)
                for group in payload.get("ordersByOrganizations") or []
                for info in (group.get("orders") or [] if isinstance(group, dict) else [])
            ]
            if events:
                yield events
            start = end

    def register_webhook(self, url: str) -> bool:
        """iiko keeps one webhook address per API login and organisation: ours replaces
        whatever was there, with our webhook secret as the token iiko sends back."""
        for organization_id in self._organization_ids():
            self._call(
                "/api/1/webhooks/update_settings",
                {
                    "organizationId": organization_id,
                    "webHooksUri": url,
                    "authToken": self.integration.webhook_secret,
                    "webHooksFilter": WEBHOOK_FILTER,
                },
            )
        return True

    # --- Webhooks -----------------------------------------------------------------------------

    def check_webhook(self, headers) -> None:
        """iiko sends back the authToken we registered in `Authorization`, raw or as a Bearer token."""
        supplied = str(headers.get("Authorization") or headers.get("authorization") or "").strip()
        if supplied[:7].lower() == "bearer ":
            supplied = supplied[7:].strip()
        expected = self.integration.webhook_secret
        if not supplied or not secrets.compare_digest(supplied.encode(), expected.encode()):
            raise WebhookUnauthorized(f"{NAME} webhook without our authToken")

    def parse_webhook(self, body: bytes, content_type: str) -> list[CrmEvent]:
        payload = parse_json(body)
        if not isinstance(payload, list):
            raise WebhookRejected(f"{NAME} webhook: expected a JSON array of events.")
        events = []
        for item in payload:
            if not isinstance(item, dict) or not isinstance(item.get("eventType"), str):
                raise WebhookRejected(f"{NAME} webhook: an event is not an object with an eventType.")
            events.append(self._webhook_event(item))
        return events

    def _webhook_event(self, item: dict) -> CrmEvent:
        event_type, info = item["eventType"], item.get("eventInfo")
        correlation_id = str(item.get("correlationId") or "")
        order_id = info.get("id") if isinstance(info, dict) else None
        label = f"order:{order_id}" if order_id else f"{event_type}:{correlation_id}"
        if event_type.endswith("Error"):
            error = info.get("errorInfo") if isinstance(info, dict) else None
            code = error.get("code") if isinstance(error, dict) else None
            logger.warning("iiko sent %s (correlationId %s, code %s)", event_type, correlation_id, code)
            return ignored(label, f"iiko reported {event_type}: {_error_text(error) or 'no details'}")
        if event_type not in ORDER_EVENTS:
            return ignored(label, f"{event_type} is not an order event")
        if not isinstance(info, dict):
            raise WebhookRejected(f"{NAME} webhook {event_type}: eventInfo is not an object.")
        organization_id = str(info.get("organizationId") or item.get("organizationId") or "")
        configured = self._configured_ids()
        if configured and organization_id.lower() not in configured:
            return ignored(label, f"for organisation {organization_id}, not a connected one")
        try:
            return self._order_event(info, event_type=event_type, correlation_id=correlation_id)
        except ValueError as exc:
            raise WebhookRejected(f"{NAME} webhook {event_type}: {exc}") from exc

    # --- Mapping ------------------------------------------------------------------------------

    def _synced_order(self, info) -> CrmEvent:
        """A delivery from a sync; one unreadable order is left aside, not the whole sync."""
        try:
            if not isinstance(info, dict):
                raise ValueError("an order is not an object")
            return self._order_event(info, event_type="delivery")
        except ValueError as exc:
            order_id = info.get("id") if isinstance(info, dict) else None
            return ignored(f"order:{order_id}", f"unreadable order: {exc}")

    def _order_event(self, info: dict, *, event_type: str, correlation_id: str = "") -> CrmEvent:
        """A table order or a delivery (TableOrderInfo and OrderInfo share these fields)."""
        if not info.get("id"):
            raise ValueError("an order without an id")
        external_id = f"order:{info['id']}"
        order = info.get("order")
        if info.get("creationStatus") == "Error" or not isinstance(order, dict):
            logger.warning(
                "iiko %s without an order (creationStatus %s, correlationId %s)",
                event_type,
                info.get("creationStatus"),
                correlation_id,
            )
            return ignored(external_id, f"no order (creation status {info.get('creationStatus')})")
        status = order.get("status")
        if status == "Closed":
            customer = order.get("customer") if isinstance(order.get("customer"), dict) else {}
            return purchase(
                external_id,
                money(order.get("sum"), what="order sum"),
                self._local_time(order.get("whenClosed"), what="whenClosed"),
                phone=order.get("phone") or customer.get("phone") or "",
                customer_name=" ".join(str(customer.get(part) or "") for part in ("name", "surname")),
                raw=info,
            )
        if status in ("Deleted", "Cancelled"):
            cancel = order.get("cancelInfo") if isinstance(order.get("cancelInfo"), dict) else {}
            when = cancel.get("whenCancelled")
            return refund(
                external_id,
                refund_id=f"{external_id}:cancelled",
                occurred_at=self._local_time(when, what="whenCancelled") if when else None,
                reason=f"{status.lower()} in iiko",
                raw=info,
            )
        return ignored(external_id, f"not closed yet ({status})")

    def _local_time(self, value, *, what: str) -> datetime:
        """iiko's "yyyy-MM-dd HH:mm:ss.fff" (not ISO) in the terminal's local time."""
        text = str(value or "").strip()
        for pattern in ("%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%d %H:%M:%S"):
            try:
                return aware(datetime.strptime(text, pattern), self.tz)
            except ValueError:
                continue
        raise ValueError(f"{what} {value!r} is not an iiko time")

    def _iiko_time(self, moment: datetime) -> str:
        local = moment.astimezone(self.tz)
        return local.strftime("%Y-%m-%d %H:%M:%S.") + f"{local.microsecond // 1000:03d}"

    # --- Organisations -----------------------------------------------------------------------

    def _configured_ids(self) -> list[str]:
        """`organization_ids` as a list, or as the form's text (commas, spaces, new lines)."""
        value = self.config.get("organization_ids") or []
        if isinstance(value, str):
            value = re.split(r"[\s,;]+", value)
        return [str(item).strip().lower() for item in value if str(item).strip()]

    def _organization_ids(self) -> list[str]:
        return self._configured_ids() or [str(org["id"]) for org in self._organizations()]

    def _organizations(self) -> list[dict]:
        """The organisations to read: the configured ones, all the API login sees otherwise."""
        configured = self._configured_ids()
        payload = self._call(
            "/api/1/organizations",
            {"organizationIds": configured or None, "returnAdditionalInfo": False, "includeDisabled": False},
        )
        organizations = [org for org in payload.get("organizations") or [] if isinstance(org, dict) and org.get("id")]
        missing = sorted(set(configured) - {str(org["id"]).lower() for org in organizations})
        if missing:
            raise ProviderConfigError(f"{NAME}: the API login cannot see the organisation {', '.join(missing)}.")
        if not organizations:
            raise ProviderConfigError(f"{NAME}: the API login sees no organisations.")
        return organizations

    # --- HTTP ---------------------------------------------------------------------------------

    def _call(self, path: str, body: dict) -> dict:
        """One call with the cached token; a 401 renews the token and repeats the call once."""
        response = self._post(path, body, token=self._token())
        if response.status_code == 401:
            response = self._post(path, body, token=self._token(renew=True))
            if response.status_code == 401:
                raise ProviderAuthError(f"{NAME} refused a fresh access token: {self._error_message(response)}")
        return self._read(response)

    def _post(self, path: str, body: dict, *, token: str):
        return self.http.request(
            "POST", settings.IIKO_BASE_URL + path, json=body, headers={"Authorization": f"Bearer {token}"}
        )

    def _token(self, *, renew: bool = False) -> str:
        api_login = self._api_login()
        # The key names the login too: a login changed in the portal does not reuse the old one's token.
        key = f"iiko-token:{self.integration.pk}:{hashlib.sha256(api_login.encode()).hexdigest()[:16]}"
        if not renew:
            token = cache.get(key)
            if token:
                return token
        response = self.http.request(
            "POST", settings.IIKO_BASE_URL + "/api/1/access_token", json={"apiLogin": api_login}
        )
        if response.status_code in (401, 403):
            raise ProviderAuthError(f"{NAME} did not accept the API login: {self._error_message(response)}")
        token = str(self._read(response).get("token") or "")
        if not token:
            raise ProviderError(f"{NAME}: no token in the answer to access_token.")
        cache.set(key, token, TOKEN_TTL_SECONDS)
        return token

    def _api_login(self) -> str:
        api_login = str(self.credentials.get("api_login") or "").strip()
        if not api_login:
            raise ProviderConfigError(f"{NAME}: the API login is missing in the integration's settings.")
        return api_login

    def _read(self, response) -> dict:
        if response.status_code == 200:
            payload = json_body(response, NAME)
            if isinstance(payload, dict):
                return payload
            raise ProviderError(f"{NAME}: unexpected answer (not a JSON object).")
        message = self._error_message(response)
        if response.status_code in (401, 403):
            raise ProviderAuthError(f"{NAME} refused the request: {message}")
        if response.status_code == 400:
            # What iiko refuses is built from the settings (organisations): the partner can act.
            raise ProviderConfigError(f"{NAME}: {message}")
        if response.status_code == 408:
            raise ProviderUnavailable(f"{NAME}: no answer in time ({message}).")
        raise ProviderError(f"{NAME}: {message} (HTTP {response.status_code})")

    def _error_message(self, response) -> str:
        """iiko's errorDescription, with the API login (iiko quotes it) masked."""
        try:
            payload = response.json()
        except ValueError:
            payload = None
        message = _error_text(payload) if isinstance(payload, dict) else ""
        message = message or f"unexpected answer (HTTP {response.status_code})"
        return self.scrub(message)


def _error_text(error) -> str:
    """The text of an ErrorResponse (errorDescription) or an ErrorInfo (message, code)."""
    if not isinstance(error, dict):
        return ""
    text = error.get("errorDescription") or error.get("message") or error.get("description")
    return str(text or error.get("error") or error.get("code") or "").strip()
