"""A fake amoCRM API v4 for tests: a stdlib ThreadingHTTPServer on 127.0.0.1 that serves the
leads in tests/fixtures/amocrm/ and records every request (EXTERNAL_APIS.md, section 4).

- `POST /oauth2/access_token` (JSON body): grant `authorization_code` with a code in
  `.auth_codes`, or `refresh_token` with a token in `.refresh_tokens`, and the client in
  `.client` → a new pair shaped like oauth_token_response.json (`access-N`/`refresh-N`).
  Refresh tokens are single-use, as amoCRM's are. Anything else → 400 problem+json.
- `GET /api/v4/leads`: `Authorization: Bearer <a token in .access_tokens>`, else 401 with
  error_401.json. Leads from `.leads`, filtered by `filter[updated_at][from|to]`, oldest
  first, `limit`/`page`; a full page has a `next` link; a page with no leads → 204, no body.
  `with=contacts` adds `_embedded.contacts` from `.lead_contacts`.
- `GET /api/v4/leads/<id>` → the lead, or 204 when there is none.
- `GET /api/v4/contacts/<id>` → a contact from `.contacts`, or 204.

Switches: `.fail_status = 500` (every API call and token request answers it), `.slow = True`
(API calls wait `slow_delay` seconds first), `.expire_access_tokens()` (the next API call
gets 401), `.refuse_refresh = True` (refresh grants answer 400), `.empty = True` (the
leads list answers 204).

The error bodies of /oauth2/access_token follow the fixture's problem+json shape
(`title/type/status/detail`); their texts are not amoCRM's verbatim.
"""

import contextlib
import copy
import json
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from tests.fakes.server import FakeHandler, FakeServer, QuietServer

FIXTURES_DIR = Path(__file__).resolve().parent.parent / "fixtures" / "amocrm"

CLIENT = {
    "client_id": "svoykrug-client",
    "client_secret": "svoykrug-secret",
    "redirect_uri": "https://svoykrug.test/amo",
}
CONTACT_ID = 3141592
PHONE = "+7 916 123-45-67"

# No contact fixture exists: a contact in the documented amoCRM v4 shape (GET /api/v4/contacts/{id}),
# its PHONE field written like the lead's custom_fields_values.
CONTACT = {
    "id": CONTACT_ID,
    "name": "Иван Петров",
    "first_name": "Иван",
    "last_name": "Петров",
    "responsible_user_id": 321123,
    "group_id": 0,
    "created_by": 12332,
    "updated_by": 12332,
    "created_at": 1587741000,
    "updated_at": 1587741000,
    "closest_task_at": None,
    "is_deleted": False,
    "custom_fields_values": [
        {
            "field_id": 3,
            "field_name": "Телефон",
            "field_code": "PHONE",
            "field_type": "multitext",
            "values": [{"value": PHONE, "enum_id": 1, "enum_code": "WORK"}],
        }
    ],
    "account_id": 115135,
    "_links": {"self": {"href": f"https://example.amocrm.ru/api/v4/contacts/{CONTACT_ID}"}},
    "_embedded": {"tags": [], "companies": []},
}


def load_fixture(name: str):
    return json.loads((FIXTURES_DIR / name).read_text(encoding="utf-8"))


def load_text(name: str) -> str:
    return (FIXTURES_DIR / name).read_text(encoding="utf-8").strip()


def make_lead(**changes) -> dict:
    """lead_single.json with some fields changed (`id=…, status_id=…, price=…`)."""
    lead = load_fixture("lead_single.json")
    lead.update(changes)
    lead["_links"]["self"]["href"] = f"https://example.amocrm.ru/api/v4/leads/{lead['id']}"
    return lead


@dataclass
class RecordedRequest:
    """One request as the fake saw it: `query` keeps the last value of each parameter."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    json: object = None

    @property
    def bearer(self) -> str:
        return self.headers.get("Authorization", "").removeprefix("Bearer ")


class _Handler(FakeHandler):
    server: "_Server"

    def do_GET(self):
        self._handle(b"")

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        self._handle(self.rfile.read(length) if length else b"")

    def _handle(self, body: bytes):
        url = urlsplit(self.path)
        query = {key: values[-1] for key, values in parse_qs(url.query, keep_blank_values=True).items()}
        try:
            payload = json.loads(body.decode("utf-8")) if body else None
        except (UnicodeDecodeError, ValueError):
            payload = None
        fake = self.server.fake
        with fake.lock:
            fake.requests.append(RecordedRequest(self.command, url.path, query, dict(self.headers.items()), payload))
        # The client may give up (read timeout) before a slow answer comes.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self._respond(url.path, query, payload)

    def _respond(self, path: str, query: dict, payload):
        fake = self.server.fake
        if fake.fail_status:
            return self._send(fake.fail_status, b"<html><body>Server error</body></html>", "text/html")
        if path == "/oauth2/access_token" and self.command == "POST":
            return self._token(payload if isinstance(payload, dict) else {})
        if fake.slow:
            fake.release.wait(fake.slow_delay)
        if self.headers.get("Authorization", "").removeprefix("Bearer ") not in fake.access_tokens:
            return self._send_json(load_fixture("error_401.json"), status=401, problem=True)
        parts = path.strip("/").split("/")
        if parts[:3] == ["api", "v4", "leads"] and len(parts) == 3:
            return self._leads(query)
        if parts[:3] == ["api", "v4", "leads"] and len(parts) == 4:
            lead = next((lead for lead in fake.leads if str(lead["id"]) == parts[3]), None)
            return self._send_json(fake.with_contacts(lead, query)) if lead else self._send(204, b"", "")
        if parts[:3] == ["api", "v4", "contacts"] and len(parts) == 4:
            contact = fake.contacts.get(parts[3])
            return self._send_json(contact) if contact else self._send(204, b"", "")
        return self._send_json({"title": "Not Found", "type": "https://httpstatus.es/404", "status": 404}, 404, True)

    def _leads(self, query: dict):
        fake = self.server.fake
        leads = sorted(fake.leads, key=lambda lead: lead["updated_at"])
        if "filter[updated_at][from]" in query:
            leads = [lead for lead in leads if lead["updated_at"] >= int(query["filter[updated_at][from]"])]
        if "filter[updated_at][to]" in query:
            leads = [lead for lead in leads if lead["updated_at"] <= int(query["filter[updated_at][to]"])]
        limit, page = int(query.get("limit", 50)), int(query.get("page", 1))
        chunk = leads[(page - 1) * limit : page * limit]
        if fake.empty or not chunk:
            return self._send(204, b"", "")
        links = {"self": {"href": f"https://example.amocrm.ru/api/v4/leads?limit={limit}&page={page}"}}
        if len(chunk) == limit:
            links["next"] = {"href": f"https://example.amocrm.ru/api/v4/leads?limit={limit}&page={page + 1}"}
        body = {"_page": page, "_links": links, "_embedded": {"leads": [fake.with_contacts(x, query) for x in chunk]}}
        return self._send_json(body)

    def _token(self, payload: dict):
        fake = self.server.fake
        client_ok = all(payload.get(key) == value for key, value in fake.client.items())
        grant = payload.get("grant_type")
        if client_ok and grant == "authorization_code" and payload.get("code") in fake.auth_codes:
            fake.auth_codes.discard(payload["code"])
            return self._send_json(fake.issue_tokens())
        refreshable = grant == "refresh_token" and payload.get("refresh_token") in fake.refresh_tokens
        if client_ok and refreshable and not fake.refuse_refresh:
            fake.refresh_tokens.discard(payload["refresh_token"])  # single-use
            return self._send_json(fake.issue_tokens())
        problem = {
            "title": "Bad Request",
            "type": "https://httpstatus.es/400",
            "status": 400,
            "detail": "Authorization code or refresh token is invalid or revoked",
        }
        return self._send_json(problem, status=400, problem=True)

    def _send_json(self, payload, status: int = 200, problem: bool = False):
        content_type = "application/problem+json" if problem else "application/hal+json"
        self._send(status, json.dumps(payload, ensure_ascii=False).encode("utf-8"), f"{content_type}; charset=utf-8")


class _Server(QuietServer):
    fake: "FakeAmoCrm"


class FakeAmoCrm(FakeServer):
    """Start with `.start()`, stop with `.stop()`; `.url` is the account's base URL."""

    server_class = _Server
    handler_class = _Handler
    name = "fake-amocrm"

    def __init__(self, *, slow_delay: float = 1.0):
        super().__init__()
        self.slow_delay = slow_delay
        self.requests: list[RecordedRequest] = []
        self.client = dict(CLIENT)
        self.leads: list[dict] = load_fixture("leads_list_response.json")["_embedded"]["leads"]
        self.lead_contacts: dict[int, list[int]] = {lead["id"]: [CONTACT_ID] for lead in self.leads}
        self.contacts: dict[str, dict] = {str(CONTACT_ID): copy.deepcopy(CONTACT)}
        self.auth_codes = {"good-code"}
        self.access_tokens = {"access-0"}
        self.refresh_tokens = {"refresh-0"}
        self.fail_status: int | None = None
        self.slow = False
        self.empty = False
        self.refuse_refresh = False
        self.issued = 0

    def issue_tokens(self) -> dict:
        with self.lock:
            self.issued += 1
            tokens = load_fixture("oauth_token_response.json")
            tokens["access_token"], tokens["refresh_token"] = f"access-{self.issued}", f"refresh-{self.issued}"
            self.access_tokens.add(tokens["access_token"])
            self.refresh_tokens.add(tokens["refresh_token"])
            return tokens

    def expire_access_tokens(self) -> None:
        self.access_tokens.clear()

    def with_contacts(self, lead: dict, query: dict) -> dict:
        lead = copy.deepcopy(lead)
        if "contacts" in query.get("with", "").split(","):
            ids = self.lead_contacts.get(lead["id"], [])
            lead.setdefault("_embedded", {})["contacts"] = [
                {
                    "id": contact_id,
                    "is_main": n == 0,
                    "_links": {"self": {"href": f"https://example.amocrm.ru/api/v4/contacts/{contact_id}"}},
                }
                for n, contact_id in enumerate(ids)
            ]
        return lead

    def api_requests(self, path_prefix: str = "/api/") -> list[RecordedRequest]:
        return [r for r in self.requests if r.path.startswith(path_prefix)]

    def token_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path == "/oauth2/access_token"]
