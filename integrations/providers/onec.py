"""1C: sales pushed by the shop's 1C, or read from its OData interface. One provider, two ways.

PUSH. A 1C HTTP service (or a routine job) posts each closed sale and return to the
integration's webhook URL, whose secret is the check, as JSON in Svoy Krug's own contract:
docs/integrations/1c.md, written for the 1C developer. A sale "sale.closed" is the purchase
"sale:<document_id>"; a return "return.closed" refunds "sale:<sale_document_id>" by its
`total`, named "return:<document_id>". A body that breaks the contract is rejected whole
(400, kept for our staff), with the field and the event's index, so the 1C side learns of
its mistake at once instead of sales being dropped one by one.

Circle bonuses are spent at the till through the partner API, which records that purchase
itself; a sale reporting `bonus_redeemed` would be a redemption the circle never approved, or
the same purchase twice. So `bonus_redeemed` must be 0 or absent, and such sales are not
pushed at all.

POLL. With the `base_url` of a published 1C database, cheques are read through 1C's standard
OData interface (`/odata/standard.odata/Document_ЧекККМ`) with HTTP Basic auth, by document
date, `page_size` at a time with $top/$skip. A posted cheque not marked for deletion is the
purchase "sale:<Ref_Key>", the same id as a pushed sale's `document_id` (the cheque's
Ссылка.УникальныйИдентификатор()), so a cheque both pushed and polled is one purchase. A
cheque marked for deletion is refunded ("sale:<Ref_Key>:deleted"); unposted cheques are
drafts and left alone. The amount's field depends on the configuration (Розница, УТ, УНФ):
`amount_field`, СуммаДокумента by default; the customer's phone only if the cheque has a
field with it (`phone_field`), else the purchases stay unmatched until a phone is known.
OData filters by the cheque's date, not by when it changed: a cheque of an earlier day marked
for deletion today is not seen by a sync of today (push its return instead)."""

from datetime import datetime
from urllib.parse import quote, urlsplit

import requests
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

NAME = "1C"
SALE = "sale.closed"
RETURN = "return.closed"
DEFAULT_DOCUMENT = "Document_ЧекККМ"
DEFAULT_AMOUNT_FIELD = "СуммаДокумента"
# A document id of at most this many characters keeps "return:<id>" within a record's 100.
MAX_ID_LENGTH = 64
MAX_BATCH = 1000
ODATA_SAFE = ",'()"


class OneCProvider(Provider):
    code = "onec"
    title = "1C"
    fields = (
        FormField(
            "base_url",
            _("Address of the 1C database"),
            required=False,
            help_text=_(
                "Only for reading cheques over OData, e.g. https://1c.example.ru/retail. "
                "Leave empty when your 1C sends sales to Svoy Krug itself."
            ),
        ),
        FormField("username", _("1C user"), secret=True, required=False),
        FormField("password", _("1C user's password"), secret=True, required=False),
        FormField("document", _("Document"), required=False, help_text=_("Document_ЧекККМ unless agreed otherwise.")),
        FormField(
            "amount_field", _("Amount field"), required=False, help_text=_("СуммаДокумента unless agreed otherwise.")
        ),
        FormField(
            "phone_field",
            _("Customer phone field"),
            required=False,
            help_text=_("The cheque's field with the customer's phone, if it has one."),
        ),
    )
    # Cheques per OData page.
    page_size = 500

    # --- The interface ---------------------------------------------------------------------

    def test_connection(self) -> str:
        if not self._base_url():
            return f"{NAME}: no OData address set; sales come from 1C to the webhook URL."
        self._odata({"$format": "json", "$top": 1, "$select": "Ref_Key"})
        return f"{NAME}: {self._document()} at {_host(self._base_url())}"

    def fetch_changes(self, since: datetime, until: datetime):
        """Cheques dated in [since, until) in the business's time zone (1C keeps local times),
        oldest first, `page_size` a page. Nothing to read when 1C pushes its sales (no
        `base_url`): the sync then only moves the watermark."""
        if not self._base_url():
            return
        window = f"Date ge datetime'{self._local(since)}' and Date lt datetime'{self._local(until)}'"
        skip = 0
        while True:
            rows = self._odata(
                {
                    "$format": "json",
                    "$filter": window,
                    "$orderby": "Date",
                    "$top": self.page_size,
                    "$skip": skip,
                    "$select": ",".join(self._selected()),
                }
            )
            events = [event for row in rows if (event := self._cheque_event(row)) is not None]
            if events:
                yield events
            if len(rows) < self.page_size:
                return
            skip += len(rows)

    def parse_webhook(self, body: bytes, content_type: str) -> list[CrmEvent]:
        """A pushed event or a batch (a JSON array) of them, checked whole: one event that
        breaks the contract rejects the body, naming the event's index and the field."""
        try:
            payload = parse_json(body)
        except WebhookRejected as exc:
            raise WebhookRejected(f"{NAME}: {exc}") from exc
        if isinstance(payload, dict):
            items = [payload]
        elif isinstance(payload, list):
            items = payload
        else:
            raise WebhookRejected(f"{NAME}: the body must be a JSON object or an array of objects.")
        if len(items) > MAX_BATCH:
            raise WebhookRejected(f"{NAME}: at most {MAX_BATCH} events in one body, not {len(items)}.")
        return [self._pushed_event(index, item) for index, item in enumerate(items)]

    # --- Push ----------------------------------------------------------------------------------

    def _pushed_event(self, index: int, item) -> CrmEvent:
        where = f"{NAME}: event [{index}]"
        if not isinstance(item, dict):
            raise WebhookRejected(f"{where} is not a JSON object.")
        event = item.get("event")
        if not isinstance(event, str) or not event.strip():
            raise WebhookRejected(f"{where}: `event` is missing.")
        if event == SALE:
            document_id = _document_id(item, "document_id", where)
            redeemed = item.get("bonus_redeemed")
            if redeemed not in (None, "") and _amount(item, "bonus_redeemed", where) != 0:
                raise WebhookRejected(
                    f"{where}: `bonus_redeemed` must be 0: circle bonuses are spent through the partner API "
                    "at the till, which records that sale itself; do not send it here."
                )
            customer = item.get("customer") if item.get("customer") is not None else {}
            if not isinstance(customer, dict):
                raise WebhookRejected(f"{where}: `customer` must be an object.")
            phone = customer.get("phone")
            if phone is not None and not isinstance(phone, str | int):
                raise WebhookRejected(f"{where}: `customer.phone` must be a string.")
            return purchase(
                f"sale:{document_id}",
                _amount(item, "total", where),
                self._pushed_time(item, "date", where, required=True),
                phone=phone or "",
                customer_name=customer.get("name") if isinstance(customer.get("name"), str) else "",
                raw=item,
            )
        if event == RETURN:
            document_id = _document_id(item, "document_id", where)
            sale_id = _document_id(item, "sale_document_id", where)
            amount = _amount(item, "total", where)
            if amount == 0:
                raise WebhookRejected(f"{where}: `total` of a return must be more than 0.")
            return refund(
                f"sale:{sale_id}",
                refund_id=f"return:{document_id}",
                amount=amount,
                occurred_at=self._pushed_time(item, "date", where, required=False),
                reason="return in 1C",
                raw=item,
            )
        label = str(item.get("document_id") or f"event-{index}")[:MAX_ID_LENGTH]
        return ignored(label, f"unknown 1C event {event[:50]!r}", raw=item)

    def _pushed_time(self, item: dict, name: str, where: str, *, required: bool) -> datetime | None:
        value = item.get(name)
        if value in (None, "") and not required:
            return None
        try:
            return aware(datetime.fromisoformat(str(value)), self.tz)
        except (TypeError, ValueError) as exc:
            raise WebhookRejected(f"{where}: `{name}` must be a date and time like 2026-02-14T12:35:00+03:00.") from exc

    # --- Poll ----------------------------------------------------------------------------------

    def _cheque_event(self, row: dict) -> CrmEvent | None:
        ref = str(row.get("Ref_Key") or "").strip()
        if not ref:
            return None
        external_id = f"sale:{ref}"
        try:
            occurred_at = aware(datetime.fromisoformat(str(row.get("Date"))), self.tz) if row.get("Date") else None
            if _true(row.get("DeletionMark")):
                return refund(
                    external_id,
                    refund_id=f"{external_id}:deleted",
                    occurred_at=occurred_at,
                    reason="marked for deletion in 1C",
                    raw=row,
                )
            if not _true(row.get("Posted")):
                return None
            amount_field = self._amount_field()
            if amount_field not in row:
                raise ProviderConfigError(
                    f"{NAME}: the cheques have no field {amount_field!r}; check the amount field in the settings."
                )
            phone_field = self._phone_field()
            phone = str(row.get(phone_field) or "") if phone_field else ""
            return purchase(external_id, money(row[amount_field], what=amount_field), occurred_at, phone=phone, raw=row)
        except ValueError as exc:
            return ignored(external_id, f"unreadable in 1C: {exc}", raw=row)

    def _odata(self, params: dict) -> list[dict]:
        """The rows of one OData query; 1C's refusals as the partner can act on them."""
        base = self._base_url()
        username, password = self.require("username", "password")
        # Keys keep their `$`; values are percent-encoded, quotes and commas kept for 1C's parser.
        query = "&".join(f"{key}={quote(str(value), safe=ODATA_SAFE)}" for key, value in params.items())
        url = f"{base}/odata/standard.odata/{quote(self._document())}?{query}"
        # 1C reads Basic credentials as UTF-8 (its user names are often Cyrillic); requests would use Latin-1.
        auth = (username.encode("utf-8"), password.encode("utf-8"))
        response = self.http.request("GET", url, auth=auth, headers={"Accept": "application/json"})
        if response.status_code == 401:
            raise ProviderAuthError(f"{NAME}: the user name or password was refused (HTTP 401).")
        if response.status_code == 403:
            raise ProviderAuthError(f"{NAME}: the user may not read {self._document()} (HTTP 403).")
        if response.status_code == 404:
            raise ProviderConfigError(
                f"{NAME}: {self._document()} not found at {_host(base)}; check the address and that the "
                "document is published in the OData interface."
            )
        if response.status_code == 400:
            raise ProviderConfigError(
                f"{NAME}: the query was refused: {_odata_error(response)}; check the field names."
            )
        if response.status_code != 200:
            raise ProviderError(f"{NAME}: unexpected answer (HTTP {response.status_code}): {_odata_error(response)}.")
        payload = json_body(response, NAME)
        rows = payload.get("value") if isinstance(payload, dict) else None
        if not isinstance(rows, list):
            raise ProviderError(f"{NAME}: unexpected answer (no OData `value` list).")
        return [row for row in rows if isinstance(row, dict)]

    def _selected(self) -> list[str]:
        names = ["Ref_Key", "Date", "Posted", "DeletionMark", "Number", self._amount_field()]
        return [*names, self._phone_field()] if self._phone_field() else names

    def _local(self, moment: datetime) -> str:
        return moment.astimezone(self.tz).strftime("%Y-%m-%dT%H:%M:%S")

    def _base_url(self) -> str:
        return str(self.config.get("base_url") or "").strip().rstrip("/")

    def _document(self) -> str:
        return str(self.config.get("document") or DEFAULT_DOCUMENT).strip()

    def _amount_field(self) -> str:
        return str(self.config.get("amount_field") or DEFAULT_AMOUNT_FIELD).strip()

    def _phone_field(self) -> str:
        return str(self.config.get("phone_field") or "").strip()


# --- Helpers -------------------------------------------------------------------------------------


def _document_id(item: dict, name: str, where: str) -> str:
    value = item.get(name)
    if isinstance(value, bool) or not isinstance(value, str | int) or not str(value).strip():
        raise WebhookRejected(f"{where}: `{name}` is missing.")
    text = str(value).strip()
    if len(text) > MAX_ID_LENGTH:
        raise WebhookRejected(f"{where}: `{name}` is longer than {MAX_ID_LENGTH} characters.")
    return text


def _amount(item: dict, name: str, where: str):
    value = item.get(name)
    if value is None or isinstance(value, bool) or not isinstance(value, int | float | str):
        raise WebhookRejected(f"{where}: `{name}` is missing or not a number.")
    try:
        amount = money(value, what=name)
    except ValueError as exc:
        raise WebhookRejected(f"{where}: `{name}` is not a number: {str(value)[:30]!r}.") from exc
    if amount < 0:
        raise WebhookRejected(f"{where}: `{name}` must not be negative.")
    return amount


def _true(value) -> bool:
    return value is True or str(value).strip().lower() == "true"


def _odata_error(response: requests.Response) -> str:
    """The text of 1C's OData error (`{"odata.error": {"message": {"value": …}}}`), if any."""
    try:
        body = response.json()
        message = body["odata.error"]["message"]
        text = message.get("value") if isinstance(message, dict) else message
    except (ValueError, KeyError, TypeError, AttributeError):
        return f"HTTP {response.status_code}"
    return str(text or f"HTTP {response.status_code}")[:300]


def _host(url: str) -> str:
    return urlsplit(url).netloc or url
