"""YCLIENTS (salons, barbershops, clinics): a visit ("record") is a purchase once it is paid
in full and the client came; a record deleted, or no longer paid or attended, is refunded.

Calls carry two tokens: Svoy Krug's partner token (one for the platform, from settings,
unless the partner brings their own) and the token of a YCLIENTS user of the company.
A sync reads the company's records changed in the window, deleted ones included. Webhooks
carry the same records, and finance operations for sales without a visit (goods sold over
the counter). YCLIENTS signs nothing and sends no credential: the secret in our webhook
URL is the only check.

external_id: "record:<record id>" for a visit, "finance:<operation id>" for a sale without
a visit; refunds are "record:<id>:deleted", "record:<id>:unpaid", "finance:<id>:deleted"."""

from datetime import datetime
from decimal import Decimal

from django.conf import settings
from django.utils.translation import gettext_lazy as _

from integrations.providers.base import (
    CrmEvent,
    FormField,
    Provider,
    ProviderAuthError,
    ProviderConfigError,
    ProviderError,
    WebhookRejected,
    aware,
    ignored,
    json_body,
    money,
    parse_json,
    purchase,
    refund,
)

NAME = "YCLIENTS"
# The apib's default page size is stated twice, differently (300 and 50): always pass it.
PAGE_SIZE = 50
ACCEPT = "application/vnd.api.v2+json"
WEBHOOK_KEYS = frozenset({"company_id", "resource", "resource_id", "status", "data"})


class YclientsProvider(Provider):
    code = "yclients"
    title = "YCLIENTS"
    fields = (
        FormField(
            "company_id",
            _("Company ID"),
            help_text=_("The number of your branch in YCLIENTS (it is in the address of the branch's pages)."),
        ),
        FormField(
            "user_token",
            _("User token"),
            secret=True,
            help_text=_("The API token of a YCLIENTS user of this branch who can see records and finances."),
        ),
        FormField(
            "partner_token",
            _("Partner token"),
            secret=True,
            required=False,
            help_text=_("Only if you have your own YCLIENTS developer account; leave empty otherwise."),
        ),
    )

    # --- Calls ------------------------------------------------------------------------------

    def test_connection(self) -> str:
        company_id = self._company_id()
        payload = self._request("GET", f"/records/{company_id}", params={"page": 1, "count": 1})
        total = _int(_meta(payload).get("total_count"), default=None)
        records = f", {total} records" if total is not None else ""
        return f"{NAME} company {company_id}{records}"

    def fetch_changes(self, since: datetime, until: datetime):
        """Records changed in the window, page by page, until a short page or the total."""
        company_id = self._company_id()
        params = {
            "changed_after": self._local(since),
            "changed_before": self._local(until),
            "with_deleted": 1,
            "count": PAGE_SIZE,
        }
        page = 1
        while True:
            payload = self._request("GET", f"/records/{company_id}", params={**params, "page": page})
            records = payload.get("data")
            if not isinstance(records, list):
                raise ProviderError(f"{NAME}: unexpected answer to the records request (no list of records).")
            events = [self._synced_record(record) for record in records]
            if events:
                yield events
            total = _int(_meta(payload).get("total_count"), default=None)
            if len(records) < PAGE_SIZE or (total is not None and page * PAGE_SIZE >= total):
                return
            page += 1

    def register_webhook(self, url: str) -> bool:
        """Add our URL to the company's hooks settings, with record and finance operation
        events on. YCLIENTS keeps one settings object per company for every application, so
        the other URLs and switches are kept; only an older URL of this integration (an
        earlier secret) is replaced."""
        company_id = self._company_id()
        path = f"/hooks_settings/{company_id}"
        current = self._request("GET", path).get("data")
        hooks = dict(current) if isinstance(current, dict) else {}
        ours = f"/integrations/{self.integration.pk}/webhook/"
        urls = [other for other in hooks.get("urls") or [] if ours not in str(other)]
        hooks.update(urls=[*urls, url], active=1, record=1, finances_operation=1)
        self._request("POST", path, json=hooks)
        return True

    # --- Webhooks -----------------------------------------------------------------------------

    def parse_webhook(self, body: bytes, content_type: str) -> list[CrmEvent]:
        payload = parse_json(body)
        if not isinstance(payload, dict) or not payload.keys() >= WEBHOOK_KEYS:
            raise WebhookRejected(f"{NAME} webhook: expected an object with {', '.join(sorted(WEBHOOK_KEYS))}.")
        resource, status, data = payload["resource"], payload["status"], payload["data"]
        label = f"{resource}:{payload['resource_id']}"
        configured = str(self.config.get("company_id") or "").strip()
        if configured and str(payload["company_id"]) != configured:
            return [ignored(label, f"for company {payload['company_id']}, not the connected company {configured}")]
        if resource not in ("record", "finances_operation"):
            return [ignored(label, f"{resource} events are not sales")]
        if not isinstance(data, dict):
            raise WebhookRejected(f"{NAME} webhook {label}: data is not an object.")
        try:
            if resource == "record":
                record = {"id": payload["resource_id"], **data}
                if status == "delete":
                    return [_deleted_record(record)]
                return [self._record_event(record)]
            return [self._finance_event({"id": payload["resource_id"], **data}, status, label)]
        except ValueError as exc:
            raise WebhookRejected(f"{NAME} webhook {label}: {exc}") from exc

    # --- Mapping ------------------------------------------------------------------------------

    def _synced_record(self, record) -> CrmEvent:
        """A record from a sync; one unreadable record is left aside, not the whole sync."""
        try:
            if not isinstance(record, dict):
                raise ValueError("a record is not an object")
            return self._record_event(record)
        except ValueError as exc:
            record_id = record.get("id") if isinstance(record, dict) else None
            return ignored(f"record:{record_id}", f"unreadable record: {exc}")

    def _record_event(self, record: dict) -> CrmEvent:
        if not record.get("id"):
            raise ValueError("a record without an id")
        external_id = f"record:{record['id']}"
        if _truthy(record.get("deleted")):
            return _deleted_record(record)
        if _int(record.get("paid_full")) != 1 or _int(record.get("attendance")) != 1:
            return refund(external_id, refund_id=f"{external_id}:unpaid", reason="not paid or not attended", raw=record)
        client = _client(record)
        return purchase(
            external_id,
            _record_amount(record),
            self._record_time(record),
            phone=client.get("phone"),
            customer_name=_client_name(client),
            raw=record,
        )

    def _finance_event(self, operation: dict, status: str, label: str) -> CrmEvent:
        """A payment that belongs to a visit is counted with that visit's record; one without
        a visit (goods sold on their own) is a purchase of its own."""
        if _int(operation.get("record_id")):
            return ignored(label, "counted with its visit record")
        external_id = f"finance:{operation['id']}"
        if status == "delete":
            return refund(external_id, refund_id=f"{external_id}:deleted", reason="deleted in YCLIENTS", raw=operation)
        amount = money(operation.get("amount"), what="amount")
        if amount <= 0:
            return ignored(label, "not an income")
        client = _client(operation)
        return purchase(
            external_id,
            amount,
            self._time(operation.get("date")),
            phone=client.get("phone"),
            customer_name=_client_name(client),
            raw=operation,
        )

    def _record_time(self, record: dict) -> datetime:
        if record.get("datetime"):
            return self._time(record["datetime"])
        return self._time(record.get("date"))

    def _time(self, value) -> datetime:
        """An ISO time with an offset ("+03:00" or "+0300"); a naive one is the company's local time."""
        try:
            return aware(datetime.fromisoformat(str(value or "")), self.tz)
        except ValueError as exc:
            raise ValueError(f"the time {value!r} is not readable") from exc

    def _local(self, moment: datetime) -> str:
        """YCLIENTS' filter times are the company's local time without an offset."""
        return moment.astimezone(self.tz).strftime("%Y-%m-%dT%H:%M:%S")

    # --- HTTP ---------------------------------------------------------------------------------

    def _company_id(self) -> str:
        company_id = str(self.config.get("company_id") or "").strip()
        if not company_id:
            raise ProviderConfigError(f"{NAME}: the company ID is missing in the integration's settings.")
        if not company_id.isdigit():
            raise ProviderConfigError(f"{NAME}: the company ID must be a number, not {company_id!r}.")
        return company_id

    def _headers(self) -> dict:
        user_token = str(self.credentials.get("user_token") or "").strip()
        if not user_token:
            raise ProviderConfigError(f"{NAME}: the user token is missing in the integration's settings.")
        partner_token = str(self.credentials.get("partner_token") or settings.YCLIENTS_PARTNER_TOKEN or "").strip()
        if not partner_token:
            raise ProviderConfigError(f"{NAME}: no partner token is configured; please contact Svoy Krug support.")
        return {"Authorization": f"Bearer {partner_token}, User {user_token}", "Accept": ACCEPT}

    def _request(self, method: str, path: str, **kwargs) -> dict:
        response = self.http.request(method, settings.YCLIENTS_BASE_URL + path, headers=self._headers(), **kwargs)
        if response.status_code in (200, 201):
            payload = json_body(response, NAME)
            if isinstance(payload, dict) and payload.get("success") is not False:
                return payload
        message = self._error_message(response)
        if response.status_code == 401:
            raise ProviderAuthError(f"{NAME} did not accept the tokens: {message}")
        if response.status_code == 403:
            raise ProviderAuthError(f"{NAME} denied access: {message}")
        if response.status_code == 404:
            raise ProviderConfigError(f"{NAME}: {message} (company {self.config.get('company_id')})")
        raise ProviderError(f"{NAME}: {message} (HTTP {response.status_code})")

    def _error_message(self, response) -> str:
        """The message of YCLIENTS' error envelope, without anything of our credentials."""
        try:
            payload = response.json()
        except ValueError:
            payload = None
        meta = _meta(payload) if isinstance(payload, dict) else {}
        message = str(meta.get("message") or f"unexpected answer (HTTP {response.status_code})").strip()
        return self.scrub(message)


# --- Helpers ----------------------------------------------------------------------------------


def _deleted_record(record: dict) -> CrmEvent:
    external_id = f"record:{record['id']}"
    return refund(external_id, refund_id=f"{external_id}:deleted", reason="deleted in YCLIENTS", raw=record)


def _record_amount(record: dict) -> Decimal:
    """What the client paid: each service's `cost_to_pay` (`cost` where the API has no
    `cost_to_pay`), plus the `cost` (sale price after discount) of goods sold in the visit."""
    total = Decimal("0.00")
    for service in record.get("services") or []:
        if not isinstance(service, dict):
            raise ValueError("a service of the record is not an object")
        cost = service.get("cost_to_pay")
        total += money(cost if cost is not None else service.get("cost"), what="service cost")
    for goods in record.get("goods_transactions") or []:
        if isinstance(goods, dict) and goods.get("cost") not in (None, ""):
            total += money(goods["cost"], what="goods cost")
    return total


def _client(entity: dict) -> dict:
    """The client, or {} where YCLIENTS has none (null, or PHP's empty list)."""
    client = entity.get("client")
    return client if isinstance(client, dict) else {}


def _client_name(client: dict) -> str:
    name = " ".join(str(client.get(part) or "").strip() for part in ("name", "surname"))
    return " ".join(name.split()) or str(client.get("display_name") or "")


def _meta(payload) -> dict:
    meta = payload.get("meta") if isinstance(payload, dict) else None
    return meta if isinstance(meta, dict) else {}  # YCLIENTS sends [] when there is none


def _int(value, default=0):
    """YCLIENTS' flags and ids come as numbers or strings ("1", 1, true)."""
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return default


def _truthy(value) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes")
    return bool(value)
