"""A fake SMS.ru HTTP API for tests: a stdlib ThreadingHTTPServer on 127.0.0.1 that answers with the
documented payloads in tests/fixtures/smsru/ and records every request it gets.

The outcome is chosen from the request (see EXTERNAL_APIS.md, section 1):

- `api_id=bad`     → error_wrong_api_id.json (HTTP 200, top-level status ERROR, code 200)
- `api_id=nomoney` → error_no_money.json on /sms/send (HTTP 200, code 201)
- `api_id=broken`  → HTTP 500 with a non-JSON body
- `api_id=notjson` → HTTP 200 with the body `hello`
- a recipient ending in `0000` → per-recipient error 207 (send_partial_error.json's error entry)
- a recipient ending in `9999` → the server waits `slow_delay` seconds before answering
- otherwise /sms/send → send_ok.json with `sms` keyed by the actual recipient(s);
  /my/balance → my_balance_ok.json.

Both GET query strings and POST form bodies are accepted (SMS.ru takes either).
"""

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from tests.fakes.server import FakeHandler, FakeServer, QuietServer

FIXTURES_DIR = Path(__file__).resolve().parent.parent / "fixtures" / "smsru"


def load_fixture(name: str) -> dict:
    return json.loads((FIXTURES_DIR / name).read_text(encoding="utf-8"))


@dataclass
class RecordedRequest:
    """One request as the fake saw it. `fields` merges query string and form body (last value wins)."""

    method: str
    path: str
    fields: dict[str, str]
    content_type: str = ""
    raw_fields: dict[str, list[str]] = field(default_factory=dict)


class _Handler(FakeHandler):
    server: "_Server"

    def do_GET(self):
        self._handle(body=b"")

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        self._handle(body=self.rfile.read(length) if length else b"")

    def _handle(self, *, body: bytes):
        url = urlsplit(self.path)
        raw: dict[str, list[str]] = {}
        # SMS.ru requires UTF-8 (its error 212); decode strictly so another encoding is answered with 212.
        try:
            for source in (url.query, body.decode("ascii")):
                for key, values in parse_qs(source, keep_blank_values=True, encoding="utf-8", errors="strict").items():
                    raw.setdefault(key, []).extend(values)
        except UnicodeDecodeError:
            raw = {}
            encoding_error = True
        else:
            encoding_error = False
        fields = {key: values[-1] for key, values in raw.items()}
        fake = self.server.fake
        with fake.lock:
            fake.requests.append(
                RecordedRequest(
                    method=self.command,
                    path=url.path,
                    fields=fields,
                    content_type=self.headers.get("Content-Type", ""),
                    raw_fields=raw,
                )
            )
        try:
            if encoding_error:
                self._send_json({"status": "ERROR", "status_code": 212, "status_text": "Текст не в UTF-8"})
            else:
                self._respond(url.path, fields)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (read timeout) before the slow answer came

    def _respond(self, path: str, fields: dict[str, str]):
        api_id = fields.get("api_id", "")
        if api_id == "broken":
            return self._send(500, b"<html><body>Internal Server Error</body></html>", "text/html")
        if api_id == "notjson":
            return self._send(200, b"hello", "text/plain")
        if api_id == "bad":
            return self._send_json(load_fixture("error_wrong_api_id.json"))
        if path == "/my/balance":
            return self._send_json(load_fixture("my_balance_ok.json"))
        if path == "/sms/send":
            if api_id == "nomoney":
                return self._send_json(load_fixture("error_no_money.json"))
            return self._send_json(self._send_reply(fields.get("to", "")))
        return self._send_json({"status": "ERROR", "status_code": 211, "status_text": "Метод не найден"})

    def _send_reply(self, to: str) -> dict:
        ok_payload = load_fixture("send_ok.json")
        ok_entry = next(iter(ok_payload["sms"].values()))
        error_entry = next(e for e in load_fixture("send_partial_error.json")["sms"].values() if e["status"] != "OK")
        reply = copy.deepcopy(ok_payload)
        reply["sms"] = {}
        for recipient in filter(None, (part.strip() for part in to.split(","))):
            if recipient.endswith("9999"):
                self.server.fake.release.wait(self.server.fake.slow_delay)
            reply["sms"][recipient] = copy.deepcopy(error_entry if recipient.endswith("0000") else ok_entry)
        return reply

    def _send_json(self, payload: dict):
        self._send(200, json.dumps(payload, ensure_ascii=False).encode("utf-8"), "application/json; charset=utf-8")


class _Server(QuietServer):
    fake: "FakeSmsRu"


class FakeSmsRu(FakeServer):
    """Start with `.start()`, stop with `.stop()`; `.url` is the base URL, `.requests` what was received."""

    server_class = _Server
    handler_class = _Handler
    name = "fake-smsru"

    def __init__(self, *, slow_delay: float = 1.0):
        super().__init__()
        self.slow_delay = slow_delay
        self.requests: list[RecordedRequest] = []
