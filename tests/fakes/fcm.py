"""A fake Google for firebase-admin: a stdlib ThreadingHTTPServer on 127.0.0.1 that serves both the
OAuth2 token endpoint a service account signs in at and FCM v1 `messages:send`, answers with the
payloads in tests/fixtures/fcm/ and records every request.

Point a service-account JSON's `token_uri` at `.token_uri` and `messaging._MessagingService.FCM_URL`
at `.fcm_url_template` (EXTERNAL_APIS.md section 7), and the real firebase-admin and google-auth
talk to it.

Token endpoint (`POST /token`): checks the JWT-bearer grant (RS256 signature with `public_key` when
given, issuer, Google's audience, scope) and issues `fake-access-token-<n>`; a bad assertion gets Google's
`400 invalid_grant`, as does every request while `token_error` is set.

`messages:send` (`POST /v1/projects/<id>/messages:send`): a bearer token the fake did not issue
gets 401 UNAUTHENTICATED. Otherwise the outcome is chosen by the message's `token` (or `fid`):

- `stale…`       → 404 error_unregistered_404.json (UNREGISTERED)
- `bad…`         → 400 error_invalid_argument_400.json (a malformed registration token)
- `toobig…`      → 400 the same envelope with FCM's "Android message is too big" (derived)
- `quota…`       → 429 error_quota_429.json (QUOTA_EXCEEDED)
- `mismatch…`    → 403 error_sender_id_mismatch_403.json (SENDER_ID_MISMATCH)
- `unavailable…` → 503 UNAVAILABLE, `internal…` → 500 INTERNAL (Google's envelope, no FcmError)
- `slow…`        → waits `slow_delay` seconds, then 200
- otherwise      → 200 send_response.json with a name unique to this fake
"""

import base64
import copy
import itertools
import json
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from tests.fakes.server import FakeServer

FIXTURES_DIR = Path(__file__).resolve().parent.parent / "fixtures" / "fcm"
JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
# google-auth signs this audience whatever the JSON's token_uri says, and Google checks it.
GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"
MESSAGES_SEND_SUFFIX = "/messages:send"


def load_fixture(name: str) -> dict:
    return json.loads((FIXTURES_DIR / name).read_text(encoding="utf-8"))


def google_error(code: int, status: str, message: str) -> dict:
    return {"error": {"code": code, "message": message, "status": status}}


@dataclass
class RecordedRequest:
    """One request as the fake saw it: header names lower-cased, `json` the parsed body or None,
    `form` the urlencoded fields (last value wins)."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    json: dict | None = None
    form: dict[str, str] = field(default_factory=dict)
    at: float = 0.0

    @property
    def target(self) -> str:
        """The FCM message's `token` or `fid`."""
        message = (self.json or {}).get("message") or {}
        return message.get("token") or message.get("fid") or ""


def _b64url_decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


class _Handler(BaseHTTPRequestHandler):
    server: "_Server"

    def log_message(self, format, *args):
        pass  # keep test output quiet

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        url = urlsplit(self.path)
        content_type = self.headers.get("Content-Type", "")
        parsed_json = None
        form = {}
        if content_type.startswith("application/json"):
            try:
                parsed_json = json.loads(body)
            except ValueError:
                parsed_json = None
        elif content_type.startswith("application/x-www-form-urlencoded"):
            form = {key: values[-1] for key, values in parse_qs(body.decode("ascii")).items()}
        request = RecordedRequest(
            method="POST",
            path=url.path,
            headers={key.lower(): value for key, value in self.headers.items()},
            body=body,
            json=parsed_json,
            form=form,
            at=time.monotonic(),
        )
        fake = self.server.fake
        with fake.lock:
            fake.requests.append(request)
        try:
            if url.path == "/token":
                self._token(request)
            elif url.path.startswith("/v1/projects/") and url.path.endswith(MESSAGES_SEND_SUFFIX):
                self._messages_send(request)
            else:
                self._send_json(404, google_error(404, "NOT_FOUND", f"No route for {url.path}"))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout) before the slow answer came

    # --- OAuth2 token endpoint -------------------------------------------------------------------

    def _token(self, request: RecordedRequest):
        fake = self.server.fake
        problem = fake.token_error or self._assertion_problem(request.form)
        if problem:
            return self._send_json(400, {"error": "invalid_grant", "error_description": problem})
        with fake.lock:
            access_token = f"fake-access-token-{len(fake.issued_tokens) + 1}"
            fake.issued_tokens.append(access_token)
        self._send_json(200, {"access_token": access_token, "expires_in": 3599, "token_type": "Bearer"})

    def _assertion_problem(self, form: dict[str, str]) -> str:
        fake = self.server.fake
        if form.get("grant_type") != JWT_BEARER_GRANT:
            return "Invalid grant_type."
        try:
            header_b64, claims_b64, signature_b64 = form.get("assertion", "").split(".")
            header = json.loads(_b64url_decode(header_b64))
            claims = json.loads(_b64url_decode(claims_b64))
            signature = _b64url_decode(signature_b64)
        except ValueError:
            return "Invalid JWT."
        if header.get("alg") != "RS256":
            return "Invalid JWT algorithm."
        if fake.public_key is not None:
            try:
                signing_input = f"{header_b64}.{claims_b64}".encode("ascii")
                fake.public_key.verify(signature, signing_input, padding.PKCS1v15(), hashes.SHA256())
            except InvalidSignature:
                return "Invalid JWT Signature."
        if claims.get("aud") != GOOGLE_TOKEN_AUDIENCE:
            return "Invalid JWT: wrong audience."
        if fake.client_email and claims.get("iss") != fake.client_email:
            return "Invalid JWT: unknown issuer."
        if "https://www.googleapis.com/auth/cloud-platform" not in str(claims.get("scope", "")).split():
            return "Invalid JWT: no cloud-platform scope."
        with fake.lock:
            fake.assertion_claims.append(claims)
        return ""

    # --- FCM v1 messages:send --------------------------------------------------------------------

    def _messages_send(self, request: RecordedRequest):
        fake = self.server.fake
        authorization = request.headers.get("authorization", "")
        with fake.lock:
            known = authorization.removeprefix("Bearer ") in fake.issued_tokens
        if not authorization.startswith("Bearer ") or not known:
            return self._send_json(
                401,
                google_error(401, "UNAUTHENTICATED", "Request had invalid authentication credentials."),
            )
        target = request.target
        project = request.path.removeprefix("/v1/projects/").removesuffix(MESSAGES_SEND_SUFFIX)
        if target.startswith("stale"):
            return self._send_json(404, load_fixture("error_unregistered_404.json"))
        if target.startswith("bad"):
            return self._send_json(400, load_fixture("error_invalid_argument_400.json"))
        if target.startswith("toobig"):
            payload = copy.deepcopy(load_fixture("error_invalid_argument_400.json"))
            payload["error"]["message"] = "Android message is too big"
            return self._send_json(400, payload)
        if target.startswith("quota"):
            return self._send_json(429, load_fixture("error_quota_429.json"))
        if target.startswith("mismatch"):
            return self._send_json(403, load_fixture("error_sender_id_mismatch_403.json"))
        if target.startswith("unavailable"):
            return self._send_json(503, google_error(503, "UNAVAILABLE", "The service is currently unavailable."))
        if target.startswith("internal"):
            return self._send_json(500, google_error(500, "INTERNAL", "Internal error encountered."))
        if target.startswith("slow"):
            fake.release.wait(fake.slow_delay)
        self._send_json(200, {"name": fake.next_message_name(project)})

    def _send_json(self, status: int, payload: dict):
        body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # firebase-admin opens up to 500 connections at once; the default backlog of 5 would make
    # the kernel drop SYNs and the client wait a second to try again.
    request_queue_size = 1024
    fake: "FakeFcm"

    def handle_error(self, request, client_address):
        pass  # a client that hung up is not a test failure; assertions are on .requests


class FakeFcm(FakeServer):
    """Start with `.start()`, stop with `.stop()`. `.requests` is everything received, in order of
    arrival; `.token_requests` and `.message_requests` split it by endpoint."""

    server_class = _Server
    handler_class = _Handler
    name = "fake-fcm"

    def __init__(self, *, public_key=None, client_email: str = "", slow_delay: float = 1.0):
        super().__init__()
        self.public_key = public_key
        self.client_email = client_email
        self.slow_delay = slow_delay
        self.token_error = ""  # set to an error_description to refuse every token request
        self.requests: list[RecordedRequest] = []
        self.issued_tokens: list[str] = []
        self.assertion_claims: list[dict] = []
        self._names = itertools.count()

    @property
    def token_uri(self) -> str:
        return f"{self.url}/token"

    @property
    def fcm_url_template(self) -> str:
        """A stand-in for `_MessagingService.FCM_URL`: `{0}` is the project id."""
        return f"{self.url}/v1/projects/{{0}}{MESSAGES_SEND_SUFFIX}"

    @property
    def token_requests(self) -> list[RecordedRequest]:
        with self.lock:
            return [r for r in self.requests if r.path == "/token"]

    @property
    def message_requests(self) -> list[RecordedRequest]:
        with self.lock:
            return [r for r in self.requests if r.path.endswith(MESSAGES_SEND_SUFFIX)]

    def next_message_name(self, project: str) -> str:
        """send_response.json's name, with the message id made unique (the first is the fixture's)."""
        template = load_fixture("send_response.json")["name"]  # projects/<id>/messages/0:<n>%<suffix>
        _, _, message_id = template.partition("/messages/")
        prefix, number_and_suffix = message_id.split(":", 1)
        number, _, suffix = number_and_suffix.partition("%")
        with self.lock:
            n = next(self._names)
        return f"projects/{project}/messages/{prefix}:{int(number) + n}%{suffix}"
