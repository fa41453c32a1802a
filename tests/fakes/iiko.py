"""A fake iiko Cloud API (iikoTransport) for tests: a stdlib ThreadingHTTPServer on 127.0.0.1
that answers with the payloads in tests/fixtures/iiko/ and records every request it gets.

Every call is a JSON POST (see EXTERNAL_APIS.md, section 3):

- `/api/1/access_token {"apiLogin"}`: a login in `api_logins` gets a new token (remembered in
  `tokens`), another gets 401 with error_401.json naming that login, as iiko does;
- any other path needs `Authorization: Bearer <a token in tokens>`, else 401 (error_401.json);
  `expire_tokens()` forgets them all, as an hour passing would;
- `/api/1/organizations` → organizations_response.json (only the asked ids when given);
- `/api/1/deliveries/by_delivery_date_and_status` → `deliveries` (OrderInfo objects; by default
  the delivery of webhook_delivery_order_closed.json) of the asked organisations and
  statuses whose `completeBefore` is within [deliveryDateFrom, deliveryDateTo];
- `/api/1/webhooks/update_settings` → update_webhook_settings_response.json, the request kept
  in `webhook_settings`.

Switches: `fail_with = 500` answers every request with that status (iiko's error body);
`slow = True` waits `slow_delay` seconds before answering; `reject_tokens = True` answers
401 to every call but access_token, even with a fresh token.
"""

import copy
import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from tests.fakes.server import FakeHandler, FakeServer, QuietServer

FIXTURES_DIR = Path(__file__).resolve().parent.parent / "fixtures" / "iiko"
FIXTURE_LOGIN = "b1a2c3d4"  # the login quoted in error_401.json


def load_fixture(name: str):
    return json.loads((FIXTURES_DIR / name).read_text(encoding="utf-8"))


def closed_delivery(**changes) -> dict:
    """The delivery (OrderInfo) of webhook_delivery_order_closed.json, with `changes` made
    to its `order`."""
    info = copy.deepcopy(load_fixture("webhook_delivery_order_closed.json")[0]["eventInfo"])
    info["order"].update(changes)
    return info


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    json: object = None


class _Handler(FakeHandler):
    server: "_Server"

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        try:
            payload = json.loads(body) if body else None
        except ValueError:
            payload = body.decode("utf-8", errors="replace")
        fake = self.server.fake
        request = RecordedRequest(
            method=self.command, path=urlsplit(self.path).path, headers=dict(self.headers.items()), json=payload
        )
        with fake.lock:
            fake.requests.append(request)
        try:
            if fake.slow:
                fake.release.wait(fake.slow_delay)
            self._respond(request)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (read timeout) before the slow answer came

    def _respond(self, request: RecordedRequest):
        fake = self.server.fake
        body = request.json if isinstance(request.json, dict) else {}
        if fake.fail_with:
            return self._send_json(_error("Internal server error", "INTERNAL_SERVER_ERROR"), status=fake.fail_with)
        if request.path == "/api/1/access_token":
            return self._access_token(str(body.get("apiLogin") or ""))
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        with fake.lock:
            known = token in fake.tokens and not fake.reject_tokens
        if not known:
            return self._send_json(load_fixture("error_401.json"), status=401)
        if request.path == "/api/1/organizations":
            reply = load_fixture("organizations_response.json")
            wanted = body.get("organizationIds")
            if wanted:
                reply["organizations"] = [org for org in reply["organizations"] if org["id"] in wanted]
            return self._send_json(reply)
        if request.path == "/api/1/deliveries/by_delivery_date_and_status":
            return self._send_json(self._deliveries(body))
        if request.path == "/api/1/webhooks/update_settings":
            fake.webhook_settings.append(body)
            return self._send_json(load_fixture("update_webhook_settings_response.json"))
        return self._send_json(_error(f"Unknown method {request.path}", "NOT_FOUND"), status=404)

    def _access_token(self, api_login: str):
        fake = self.server.fake
        if api_login not in fake.api_logins:
            reply = load_fixture("error_401.json")
            reply["errorDescription"] = reply["errorDescription"].replace(FIXTURE_LOGIN, api_login)
            return self._send_json(reply, status=401)
        reply = load_fixture("access_token_response.json")
        reply["token"] = f"token-{uuid.uuid4().hex}"
        with fake.lock:
            fake.tokens.add(reply["token"])
        return self._send_json(reply)

    def _deliveries(self, body: dict) -> dict:
        organization_ids = body.get("organizationIds") or []
        statuses = body.get("statuses") or []
        start, end = body.get("deliveryDateFrom") or "", body.get("deliveryDateTo") or "9999"
        groups = []
        for organization_id in organization_ids:
            orders = [
                info
                for info in self.server.fake.deliveries
                if info["organizationId"] == organization_id
                and (not statuses or info["order"]["status"] in statuses)
                and start <= info["order"]["completeBefore"] <= end
            ]
            groups.append({"organizationId": organization_id, "orders": orders})
        return {"correlationId": str(uuid.uuid4()), "maxRevision": 1, "ordersByOrganizations": groups}

    def _send_json(self, payload, status: int = 200):
        self._send(status, json.dumps(payload, ensure_ascii=False).encode("utf-8"), "application/json; charset=utf-8")


def _error(description: str, code: str) -> dict:
    return {"correlationId": str(uuid.uuid4()), "errorDescription": description, "error": code}


class _Server(QuietServer):
    fake: "FakeIiko"


class FakeIiko(FakeServer):
    """Start with `.start()` (or as a context manager); `.url` is the base URL (IIKO_BASE_URL),
    `.requests` what was received, `.paths()` their paths in order."""

    server_class = _Server
    handler_class = _Handler
    name = "fake-iiko"

    def __init__(self, *, api_logins=("api-login-123",), slow_delay: float = 1.0):
        super().__init__()
        self.api_logins = set(api_logins)
        self.slow_delay = slow_delay
        self.tokens: set[str] = set()
        self.deliveries: list[dict] = [closed_delivery()]
        self.webhook_settings: list[dict] = []
        self.requests: list[RecordedRequest] = []
        self.fail_with: int | None = None
        self.slow = False
        self.reject_tokens = False

    def expire_tokens(self) -> None:
        with self.lock:
            self.tokens.clear()

    def paths(self) -> list[str]:
        return [request.path for request in self.requests]
