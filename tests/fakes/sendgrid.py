"""A fake SendGrid v3 Mail Send API for tests: a stdlib ThreadingHTTPServer on 127.0.0.1 that answers
`POST /v3/mail/send` the way SendGrid does (EXTERNAL_APIS.md, section 8) and records every request.

The outcome is chosen from the request, like the fake SMS.ru's:

- `Authorization: Bearer test-key` (any key not below) → 202 Accepted with an empty body
- `Bearer error-400`           → 400 with mail_send_error_400.json (errors on `subject` and no field)
- `Bearer error-400-from-and-to` → 400 with mail_send_error_400_invalid_from_and_to.json
- `Bearer error-401`           → 401 (SendGrid's answer to a revoked key)
- `Bearer error-429`           → 429 Too Many Requests
- `Bearer error-500`           → 500 with a non-JSON body
- no `Authorization` header    → 401
- a `to` address `invalid@…`   → 400 with mail_send_error_400_invalid_to.json
- a `to` address `slow@…`      → the server waits `slow_delay` seconds, then 202

Any other path or method → 404.
"""

import contextlib
import json
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tests.fakes.server import FakeServer

FIXTURES_DIR = Path(__file__).resolve().parent.parent / "fixtures" / "sendgrid"
MAIL_SEND_PATH = "/v3/mail/send"


def load_fixture(name: str):
    return json.loads((FIXTURES_DIR / name).read_text(encoding="utf-8"))


@dataclass
class RecordedRequest:
    """One request as the fake saw it. `json` is the parsed body, None when it was not JSON."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    json: object = None
    recipients: list[str] = field(default_factory=list)


class _Handler(BaseHTTPRequestHandler):
    server: "_Server"

    def log_message(self, format, *args):
        pass  # keep test output quiet

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        try:
            payload = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            payload = None
        recipients = [
            to["email"]
            for personalization in (payload or {}).get("personalizations", [])
            for to in personalization.get("to", [])
        ]
        fake = self.server.fake
        with fake.lock:
            fake.requests.append(
                RecordedRequest(
                    method=self.command,
                    path=self.path,
                    headers=dict(self.headers.items()),
                    body=body,
                    json=payload,
                    recipients=recipients,
                )
            )
        # The client may give up (read timeout) before the slow answer comes.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self._respond(payload, recipients)

    def do_GET(self):
        self._send(404, b'{"errors":[{"field":null,"message":"not found"}]}')

    def _respond(self, payload, recipients: list[str]):
        if self.path != MAIL_SEND_PATH:
            return self._send(404, b'{"errors":[{"field":null,"message":"not found"}]}')
        authorization = self.headers.get("Authorization", "")
        key = authorization.removeprefix("Bearer ") if authorization.startswith("Bearer ") else None
        if key is None:
            return self._send_json(401, _UNAUTHORIZED)
        if key == "error-401":
            return self._send_json(401, _UNAUTHORIZED)
        if key == "error-400":
            return self._send_json(400, load_fixture("mail_send_error_400.json"))
        if key == "error-400-from-and-to":
            return self._send_json(400, load_fixture("mail_send_error_400_invalid_from_and_to.json"))
        if key == "error-429":
            return self._send_json(429, {"errors": [{"field": None, "message": "too many requests"}]})
        if key == "error-500":
            return self._send(500, b"<html><body>Internal Server Error</body></html>", "text/html")
        if payload is None:
            return self._send_json(400, {"errors": [{"field": None, "message": "Bad Request", "help": None}]})
        if any(address.startswith("invalid@") for address in recipients):
            return self._send_json(400, load_fixture("mail_send_error_400_invalid_to.json"))
        if any(address.startswith("slow@") for address in recipients):
            self.server.fake.release.wait(self.server.fake.slow_delay)
        return self._send(202, b"")

    def _send_json(self, status: int, payload):
        self._send(status, json.dumps(payload).encode("utf-8"))

    def _send(self, status: int, body: bytes, content_type: str = "application/json"):
        self.send_response(status)
        if body:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body:
            self.wfile.write(body)


_UNAUTHORIZED = {
    "errors": [
        {"field": None, "message": "The provided authorization grant is invalid, expired, or revoked", "help": None}
    ]
}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: "FakeSendGrid"

    def handle_error(self, request, client_address):
        pass  # a client that hung up is not a test failure; assertions are on .requests


class FakeSendGrid(FakeServer):
    """Start with `.start()`, stop with `.stop()`; `.api_url` is the SENDGRID_API_URL to configure
    (`http://127.0.0.1:<port>/v3/`), `.requests` what was received."""

    server_class = _Server
    handler_class = _Handler
    name = "fake-sendgrid"

    def __init__(self, *, slow_delay: float = 1.0):
        super().__init__()
        self.slow_delay = slow_delay
        self.requests: list[RecordedRequest] = []

    @property
    def api_url(self) -> str:
        return f"{self.url}/v3/"
