"""A fake Renovatio public API for tests: a stdlib ThreadingHTTPServer on 127.0.0.1 with one
view, `POST /api/public/<method>`, that checks the form's `api_key`, answers in Renovatio's
`{error, data}` envelope from tests/fixtures/renovatio/ and records every request
(EXTERNAL_APIS.md, section 6).

- a wrong `api_key` → error_auth.json (HTTP 200, code 401 "Auth error"), every time
- `.auth_errors = N` → the next N calls answer error_auth.json whatever the key
  (Renovatio's intermittent 401)
- `getAppointments` → `.appointments` whose `time_start` day is within date_from..date_to
  (and whose `clinic_id` matches when one is sent)
- `getInvoices` → `.invoices` whose `date` day is within the range, with the `status` asked
- `getAppointment` → the visit with `appointment_id`, or an error envelope (code 404)
- `getClinics` → `.clinics`
- any other method → an error envelope (code 404)
- `.errors = {"getClinics": "error_500_intersection.json"}` → that method answers that fixture

Switches: `.fail_status = 500` (every call answers it, non-JSON), `.slow = True` (every call
waits `slow_delay` seconds first).

No public example of getClinics, getAppointment or of the "not found" error was found: their
shapes here (a list of {id, title}; the visit object; code 404) are assumptions.
"""

import contextlib
import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from tests.fakes.server import FakeHandler, FakeServer, QuietServer

FIXTURES_DIR = Path(__file__).resolve().parent.parent / "fixtures" / "renovatio"
API_KEY = "test-renovatio-key"


def load_fixture(name: str):
    return json.loads((FIXTURES_DIR / name).read_text(encoding="utf-8"))


def make_appointment(**changes) -> dict:
    """The visit of get_appointments_ok.json with some fields changed."""
    visit = load_fixture("get_appointments_ok.json")["data"][0]
    visit.update(changes)
    return visit


def make_invoice(**changes) -> dict:
    """The invoice of get_invoices_ok.json with some fields changed."""
    invoice = load_fixture("get_invoices_ok.json")["data"][0]
    invoice.update(changes)
    return invoice


@dataclass
class RecordedRequest:
    """One request as the fake saw it: the method name and the form's fields (last value wins)."""

    method: str
    fields: dict[str, str]
    content_type: str = ""


def _day(text: str):
    return datetime.strptime(str(text).split(" ")[0], "%d.%m.%Y").date()


class _Handler(FakeHandler):
    server: "_Server"

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode("utf-8") if length else ""
        url = urlsplit(self.path)
        fields = {key: values[-1] for key, values in parse_qs(body, keep_blank_values=True).items()}
        fields.update({key: values[-1] for key, values in parse_qs(url.query).items()})
        method = url.path.removeprefix("/api/public/")
        fake = self.server.fake
        with fake.lock:
            fake.requests.append(RecordedRequest(method, fields, self.headers.get("Content-Type", "")))
        # The client may give up (read timeout) before a slow answer comes.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self._respond(method, fields)

    def _respond(self, method: str, fields: dict):
        fake = self.server.fake
        if fake.fail_status:
            return self._send(fake.fail_status, b"<html><body>Server error</body></html>", "text/html")
        if fake.slow:
            fake.release.wait(fake.slow_delay)
        with fake.lock:
            intermittent = fake.auth_errors > 0
            fake.auth_errors -= int(intermittent)
        if intermittent or fields.get("api_key") != fake.api_key:
            return self._send_json(load_fixture("error_auth.json"))
        if method in fake.errors:
            return self._send_json(load_fixture(fake.errors[method]))
        if method == "getClinics":
            return self._ok(fake.clinics)
        if method == "getAppointments":
            first, last = _day(fields["date_from"]), _day(fields["date_to"])
            visits = [v for v in fake.appointments if first <= _day(v["time_start"]) <= last]
            if fields.get("clinic_id"):
                visits = [v for v in visits if str(v.get("clinic_id")) == fields["clinic_id"]]
            return self._ok(visits)
        if method == "getInvoices":
            first, last = _day(fields["date_from"]), _day(fields["date_to"])
            invoices = [i for i in fake.invoices if first <= _day(i["date"]) <= last]
            if fields.get("status"):
                invoices = [i for i in invoices if str(i.get("status")) == fields["status"]]
            return self._ok(invoices)
        if method == "getAppointment":
            visit = next((v for v in fake.appointments if str(v["id"]) == fields.get("appointment_id")), None)
            return self._ok(visit) if visit else self._error(404, "Визит не найден")
        return self._error(404, "Метод не найден")

    def _ok(self, data):
        self._send_json({"error": 0, "data": data})

    def _error(self, code: int, desc: str):
        self._send_json({"error": 1, "data": {"code": code, "desc": desc}})

    def _send_json(self, payload):
        self._send(200, json.dumps(payload, ensure_ascii=False).encode("utf-8"), "application/json; charset=utf-8")


class _Server(QuietServer):
    fake: "FakeRenovatio"


class FakeRenovatio(FakeServer):
    """Start with `.start()`, stop with `.stop()`; `.url` is the base URL (RENOVATIO_BASE_URL)."""

    server_class = _Server
    handler_class = _Handler
    name = "fake-renovatio"

    def __init__(self, *, slow_delay: float = 1.0):
        super().__init__()
        self.slow_delay = slow_delay
        self.requests: list[RecordedRequest] = []
        self.api_key = API_KEY
        self.appointments: list[dict] = load_fixture("get_appointments_ok.json")["data"]
        self.invoices: list[dict] = load_fixture("get_invoices_ok.json")["data"]
        self.clinics: list[dict] = [{"id": 1, "title": "Клиника на Ленина"}]
        self.auth_errors = 0
        self.errors: dict[str, str] = {}
        self.fail_status: int | None = None
        self.slow = False

    def calls(self, method: str) -> list[RecordedRequest]:
        return [request for request in self.requests if request.method == method]
