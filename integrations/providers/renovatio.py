"""Renovatio (МИС Renovatio, app.rnova.org): a clinic's paid visits are purchases.

Every call is `POST {base}/api/public/<method>`, form-encoded with the clinic's `api_key`,
answered with HTTP 200 and an envelope: `{"error": 0, "data": …}` or `{"error": 1, "data":
{"code", "desc"}}`. Renovatio answers code 401 "Auth error" now and then to a good key, so a
401 is retried once before it counts as a refused key. Renovatio sends no webhooks: it is
polled.

Where the money comes from, so that nothing counts twice. A visit (appointment) can show up
twice: as the visit, with its services and prices, and as the paid invoice (`status` 2) for
it, which says what was actually paid. Both are read for the same dates, and:

- a visit with paid invoices is one purchase "appointment:<id>" of the sum of those invoices
  (the money paid, after discounts), at the latest invoice's time;
- a completed visit with no paid invoice among those read is the purchase
  "appointment:<id>" of Σ price × count of its services, at its start;
- a paid invoice without a visit is the purchase "invoice:<id>";
- a refused (cancelled) visit is a refund of "appointment:<id>"
  (refund id "appointment:<id>:refused"); upcoming visits are left alone.

The purchase is named after the visit in both cases, not after the invoice: a visit synced as
completed before its invoice was paid, and the invoice synced later (or in another page),
meet on one id instead of making two purchases; the first version stands and a different
amount is noted on the record. The price of that: a visit paid by two invoices synced at
different times counts the first one only (the second shows as "changed").

The customer's phone and name come from the visit (`patient_phone`, `patient_name`): from the
visits read in the same page, else asked for with getAppointment. An invoice without a visit
has no phone and stays unmatched.
"""

import logging
from datetime import date, datetime, timedelta
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
    ProviderUnavailable,
    WebhookRejected,
    aware,
    ignored,
    json_body,
    money,
    purchase,
    refund,
)

logger = logging.getLogger(__name__)

NAME = "Renovatio"
PAID = "2"
AUTH_ERROR = 401


class RenovatioProvider(Provider):
    code = "renovatio"
    title = "Renovatio"
    accepts_webhooks = False
    fields = (
        FormField(
            "api_key",
            _("API key"),
            secret=True,
            help_text=_("The API key Renovatio issued to your clinic (Renovatio's support gives one)."),
        ),
        FormField(
            "clinic_id",
            _("Clinic id"),
            required=False,
            help_text=_("Only this clinic's visits count; leave empty for all the clinics of the account."),
        ),
    )
    # Days of visits read per page: a first sync of a month is four or five pages.
    days_per_page = 7

    # --- The interface ---------------------------------------------------------------------

    def test_connection(self) -> str:
        clinics = self._call("getClinics")
        clinics = list(clinics.values()) if isinstance(clinics, dict) else list(clinics or [])
        clinic_id = self._clinic_id()
        ids = {str(c.get("id")) for c in clinics if isinstance(c, dict) and c.get("id") is not None}
        if clinic_id and ids and clinic_id not in ids:
            raise ProviderConfigError(f"{NAME}: the account has no clinic with id {clinic_id}.")
        names = [str(c.get("title") or c.get("name")) for c in clinics if isinstance(c, dict)]
        names = [name for name in names if name and name != "None"]
        return f"{NAME}: {', '.join(names[:3])}" if names else f"{NAME}: {len(clinics)} clinic(s)"

    def fetch_changes(self, since: datetime, until: datetime):
        """Visits and paid invoices dated from since's day to until's day, both included, in the
        business's time zone, `days_per_page` days per page.

        Renovatio filters by the visit's (the invoice's) date, not by when the record changed:
        a visit of an earlier day that is paid or cancelled today is seen only while its day is
        within the window. The window is the sync's (the watermark less the overlap), so each
        sync reads today's visits again; seeing a record twice changes nothing."""
        first = since.astimezone(self.tz).date()
        last = until.astimezone(self.tz).date()
        looked_up: dict[str, dict | None] = {}  # getAppointment answers, once per sync
        day = first
        while day <= last:
            end = min(day + timedelta(days=self.days_per_page - 1), last)
            events = self._page(day, end, looked_up)
            if events:
                yield events
            day = end + timedelta(days=1)

    def parse_webhook(self, body: bytes, content_type: str) -> list[CrmEvent]:
        raise WebhookRejected("Renovatio sends no webhooks")

    # --- Visits and invoices -------------------------------------------------------------------

    def _page(self, first: date, last: date, looked_up: dict) -> list[CrmEvent]:
        dates = {"date_from": f"{first:%d.%m.%Y}", "date_to": f"{last:%d.%m.%Y}"}
        clinic_id = self._clinic_id()
        visits_params = {**dates, "show_patient_data": 1, **({"clinic_id": clinic_id} if clinic_id else {})}
        visits = {str(v.get("id")): v for v in _records(self._call("getAppointments", **visits_params))}
        invoices = [i for i in _records(self._call("getInvoices", **dates, status=2)) if _is_paid(i)]

        by_visit: dict[str, list[dict]] = {}
        events = []
        for invoice in invoices:
            visit_id = str(invoice.get("appointment_id") or "")
            if visit_id and visit_id != "0":
                by_visit.setdefault(visit_id, []).append(invoice)
            else:
                events.append(self._guarded(f"invoice:{invoice.get('id')}", self._invoice_purchase, invoice))
        for visit_id in [*visits, *(v for v in by_visit if v not in visits)]:
            visit = visits.get(visit_id) or self._visit(visit_id, looked_up)
            if visit is not None and not self._in_clinic(visit):
                continue
            event = self._guarded(f"appointment:{visit_id}", self._visit_event, visit_id, visit, by_visit.get(visit_id))
            if event is not None:
                events.append(event)
        return events

    def _visit_event(self, visit_id: str, visit: dict | None, invoices: list[dict] | None) -> CrmEvent | None:
        external_id = f"appointment:{visit_id}"
        visit = visit or {}
        status = str(visit.get("status") or "")
        if status == "refused":
            return refund(
                external_id,
                refund_id=f"{external_id}:refused",
                occurred_at=self._time(visit.get("time_start")),
                reason="the visit was cancelled in Renovatio",
                raw=visit,
            )
        customer = {"phone": visit.get("patient_phone"), "customer_name": visit.get("patient_name")}
        if invoices:
            amount = sum((money(i.get("value"), what="the invoice's value") for i in invoices), Decimal("0.00"))
            paid_at = max(self._time(i.get("date")) for i in invoices)
            return purchase(external_id, amount, paid_at, **customer, raw={"appointment": visit, "invoices": invoices})
        if status == "completed":
            amount = sum((_service_sum(service) for service in visit.get("services") or []), Decimal("0.00"))
            return purchase(external_id, amount, self._time(visit.get("time_start")), **customer, raw=visit)
        return None

    def _invoice_purchase(self, invoice: dict) -> CrmEvent:
        return purchase(
            f"invoice:{invoice.get('id')}",
            money(invoice.get("value"), what="the invoice's value"),
            self._time(invoice.get("date")),
            raw=invoice,
        )

    def _visit(self, visit_id: str, looked_up: dict) -> dict | None:
        """A visit outside the page (an invoice paid days after it), or None when Renovatio
        does not give it."""
        if visit_id not in looked_up:
            try:
                data = self._call("getAppointment", appointment_id=visit_id)
            except (ProviderAuthError, ProviderUnavailable):
                raise
            except ProviderError as exc:
                logger.info("Renovatio visit %s not found: %s", visit_id, exc.message)
                data = None
            if isinstance(data, list):
                data = data[0] if data else None
            looked_up[visit_id] = data if isinstance(data, dict) else None
        return looked_up[visit_id]

    def _guarded(self, external_id: str, build, *args) -> CrmEvent | None:
        """One record that cannot be read (an amount or a date) is ignored with the reason;
        the others go on."""
        try:
            return build(*args)
        except ValueError as exc:
            return ignored(external_id, f"unreadable in Renovatio: {exc}")

    def _time(self, value) -> datetime:
        text = str(value or "").strip()
        for layout in ("%d.%m.%Y %H:%M", "%d.%m.%Y %H:%M:%S", "%d.%m.%Y"):
            try:
                return aware(datetime.strptime(text, layout), self.tz)
            except ValueError:
                continue
        raise ValueError(f"not a date: {value!r}")

    def _clinic_id(self) -> str:
        return str(self.config.get("clinic_id") or "").strip()

    def _in_clinic(self, visit: dict) -> bool:
        clinic_id = self._clinic_id()
        return not clinic_id or visit.get("clinic_id") in (None, "") or str(visit["clinic_id"]) == clinic_id

    # --- HTTP --------------------------------------------------------------------------------

    def base_url(self) -> str:
        return str(self.config.get("base_url") or settings.RENOVATIO_BASE_URL).strip().rstrip("/")

    def _call(self, method: str, **params):
        """One API method's `data`. Code 401 is retried once (Renovatio's intermittent "Auth
        error"), then it is a refused key; other codes are errors with Renovatio's text."""
        code, result = self._post(method, params)
        if code == AUTH_ERROR:
            logger.info("Renovatio answered %r to %s; trying once more", result, method)
            code, result = self._post(method, params)
        if code is None:
            return result
        if code == AUTH_ERROR:
            raise ProviderAuthError(f"{NAME}: the API key was refused ({result}).")
        raise ProviderError(f"{NAME}: {method} failed: {result} (code {code}).")

    def _post(self, method: str, params: dict) -> tuple[int | None, object]:
        """(None, data) for a success, (code, description) for an error in the envelope."""
        (api_key,) = self.require("api_key")
        response = self.http.request(
            "POST", f"{self.base_url()}/api/public/{method}", data={"api_key": api_key, **params}
        )
        if response.status_code in (401, 403):
            raise ProviderAuthError(f"{NAME}: the API key was refused (HTTP {response.status_code}).")
        if response.status_code == 404:
            raise ProviderConfigError(f"{NAME}: no API at {self.base_url()} ({method} not found).")
        if response.status_code != 200:
            raise ProviderError(f"{NAME}: unexpected answer to {method} (HTTP {response.status_code}).")
        envelope = json_body(response, NAME)
        if not isinstance(envelope, dict) or "error" not in envelope:
            raise ProviderError(f"{NAME}: unexpected answer to {method} (no error/data envelope).")
        if str(envelope["error"]) in ("0", "False"):
            return None, envelope.get("data")
        error = envelope.get("data") if isinstance(envelope.get("data"), dict) else {}
        return _int(error.get("code")) or 0, str(error.get("desc") or "no description")[:300]


def _records(data) -> list[dict]:
    if isinstance(data, dict):
        data = list(data.values())
    return [record for record in data or [] if isinstance(record, dict)]


def _is_paid(invoice: dict) -> bool:
    return str(invoice.get("status", PAID)) == PAID


def _service_sum(service: dict) -> Decimal:
    count = money(service.get("count") or 1, what="a service's count")
    return (money(service.get("price") or 0, what="a service's price") * count).quantize(Decimal("0.01"))


def _int(value) -> int | None:
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return None
