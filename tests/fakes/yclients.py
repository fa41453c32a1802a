"""A fake YCLIENTS REST API for tests: a stdlib ThreadingHTTPServer on 127.0.0.1 that answers
with the payloads in tests/fixtures/yclients/ and records every request it gets.

What it checks and answers (see EXTERNAL_APIS.md, section 2):

- `Authorization` must be `Bearer <partner>, User <user>` with the fake's `partner_token`
  and `user_token`, else 401 with error_401.json;
- `Accept` must be one of the two v2 types YCLIENTS takes, else 415 in the error envelope;
- `GET /records/{company_id}`: `records` (records_list_page1.json's by default) sliced by
  `page` and `count`, with meta {page, total_count}; another company → 404 error_404_company.json;
- `GET /hooks_settings/{company_id}` → `hooks` (hooks_settings_response.json's data);
  `POST` stores the posted settings in `hooks` and answers 201 with them.

Switches: `fail_with = 500` answers every request with that status; `slow = True` waits
`slow_delay` seconds before answering; `forbidden_message` answers 403 (error_403.json)
with that message, as YCLIENTS does for a branch whose licence ran out.
"""

import copy
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from tests.fakes.server import FakeHandler, FakeServer, QuietServer

FIXTURES_DIR = Path(__file__).resolve().parent.parent / "fixtures" / "yclients"
ACCEPTED_TYPES = ("application/vnd.api.v2+json", "application/vnd.yclients.v2+json")
AUTHORIZATION = re.compile(r"^Bearer (?P<partner>[^\s,]+), User (?P<user>\S+)$")


def load_fixture(name: str):
    return json.loads((FIXTURES_DIR / name).read_text(encoding="utf-8"))


def make_records(count: int, *, first_id: int = 700000000) -> list[dict]:
    """`count` paid records: the fixture's first record with new ids."""
    template = load_fixture("records_list_page1.json")["data"][0]
    records = []
    for number in range(count):
        record = copy.deepcopy(template)
        record["id"] = first_id + number
        records.append(record)
    return records


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    json: object = None
    raw_query: dict[str, list[str]] = field(default_factory=dict)


class _Handler(FakeHandler):
    server: "_Server"

    def do_GET(self):
        self._handle()

    def do_POST(self):
        self._handle()

    def _handle(self):
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        raw_query = parse_qs(url.query, keep_blank_values=True)
        try:
            payload = json.loads(body) if body else None
        except ValueError:
            payload = body.decode("utf-8", errors="replace")
        fake = self.server.fake
        request = RecordedRequest(
            method=self.command,
            path=url.path,
            query={key: values[-1] for key, values in raw_query.items()},
            headers=dict(self.headers.items()),
            json=payload,
            raw_query=raw_query,
        )
        with fake.lock:
            fake.requests.append(request)
        try:
            if fake.slow:
                fake.release.wait(fake.slow_delay)
            self._respond(url.path, request)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (read timeout) before the slow answer came

    def _respond(self, path: str, request: RecordedRequest):
        fake = self.server.fake
        if fake.fail_with:
            return self._send(fake.fail_with, b"<html><body>Server error</body></html>", "text/html")
        auth = AUTHORIZATION.match(request.headers.get("Authorization", ""))
        if not auth or (auth["partner"], auth["user"]) != (fake.partner_token, fake.user_token):
            return self._send_json(load_fixture("error_401.json"), status=401)
        if request.headers.get("Accept") not in ACCEPTED_TYPES:
            return self._send_json(_error(f"Unsupported Accept: {request.headers.get('Accept')}"), status=415)
        if fake.forbidden_message:
            reply = load_fixture("error_403.json")
            reply["meta"]["message"] = fake.forbidden_message
            return self._send_json(reply, status=403)
        match = re.fullmatch(r"/(records|hooks_settings)/(\d+)", path)
        if match is None:
            return self._send_json(_error("Not found."), status=404)
        if match[2] != str(fake.company_id):
            return self._send_json(load_fixture("error_404_company.json"), status=404)
        if match[1] == "records":
            return self._send_json(self._records_page(request.query))
        if request.method == "POST":
            fake.hooks = request.json
            return self._send_json({"success": True, "data": fake.hooks, "meta": []}, status=201)
        return self._send_json({"success": True, "data": fake.hooks, "meta": []})

    def _records_page(self, query: dict[str, str]) -> dict:
        records = self.server.fake.records
        page, count = int(query.get("page") or 1), int(query.get("count") or 50)
        return {
            "success": True,
            "data": records[(page - 1) * count : page * count],
            "meta": {"page": page, "total_count": len(records)},
        }

    def _send_json(self, payload, status: int = 200):
        self._send(status, json.dumps(payload, ensure_ascii=False).encode("utf-8"), "application/json; charset=utf-8")


def _error(message: str) -> dict:
    return {"success": False, "data": None, "meta": {"message": message}}


class _Server(QuietServer):
    fake: "FakeYclients"


class FakeYclients(FakeServer):
    """Start with `.start()` (or as a context manager); `.url` is the base URL (as
    YCLIENTS_BASE_URL, without /api/v1), `.requests` what was received."""

    server_class = _Server
    handler_class = _Handler
    name = "fake-yclients"

    def __init__(
        self,
        *,
        company_id: int = 4564,
        partner_token: str = "partner-token",
        user_token: str = "user-token",
        slow_delay: float = 1.0,
    ):
        super().__init__()
        self.company_id = company_id
        self.partner_token = partner_token
        self.user_token = user_token
        self.slow_delay = slow_delay
        self.records: list[dict] = load_fixture("records_list_page1.json")["data"]
        self.hooks: dict = load_fixture("hooks_settings_response.json")["data"]
        self.requests: list[RecordedRequest] = []
        self.fail_with: int | None = None
        self.slow = False
        self.forbidden_message = ""
