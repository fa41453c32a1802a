"""A fake 1C standard OData interface for tests: a stdlib ThreadingHTTPServer on 127.0.0.1 that
serves the cheques of tests/fixtures/onec/odata_cheki_kkm_response.json and records every
request (EXTERNAL_APIS.md, section 5, way 1).

`GET <any prefix>/odata/standard.odata/<entity>?$format=json&…` with HTTP Basic auth:

- wrong or no credentials → 401 with `WWW-Authenticate: Basic` and no body
- an entity not in `.documents` → 404 with an OData error body
- `$filter=Date ge datetime'…' and Date lt datetime'…'` → the rows dated in that range
- `$orderby=Date`, `$top`, `$skip` → sorted and cut as asked
- `$select=a,b` → only those fields; a field the rows do not have → 400 with an OData error

Switches: `.fail_status = 500` (every request answers it), `.slow = True` (every request waits
`slow_delay` seconds first).

The error bodies use the standard OData v3 JSON shape (`{"odata.error": {"code", "message":
{"lang", "value"}}}`); their texts are not 1C's verbatim.
"""

import base64
import contextlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from tests.fakes.server import FakeHandler, FakeServer, QuietServer

FIXTURES_DIR = Path(__file__).resolve().parent.parent / "fixtures" / "onec"
USERNAME = "svoykrug"
PASSWORD = "Пароль-1c"
ENTITY = "Document_ЧекККМ"
_WINDOW = re.compile(r"^Date ge datetime'([^']+)' and Date lt datetime'([^']+)'$")


def load_fixture(name: str):
    return json.loads((FIXTURES_DIR / name).read_text(encoding="utf-8"))


def make_cheque(**changes) -> dict:
    """The cheque of odata_cheki_kkm_response.json with some fields changed."""
    cheque = load_fixture("odata_cheki_kkm_response.json")["value"][0]
    cheque.update(changes)
    return cheque


@dataclass
class RecordedRequest:
    """One request as the fake saw it: the entity (decoded) and the query (last value wins)."""

    path: str
    entity: str
    query: dict[str, str]
    authorization: str = ""


class _Handler(FakeHandler):
    server: "_Server"

    def do_GET(self):
        url = urlsplit(self.path)
        path = unquote(url.path)
        entity = path.split("/odata/standard.odata/", 1)[-1] if "/odata/standard.odata/" in path else ""
        query = {key: values[-1] for key, values in parse_qs(url.query, keep_blank_values=True).items()}
        fake = self.server.fake
        with fake.lock:
            fake.requests.append(RecordedRequest(path, entity, query, self.headers.get("Authorization", "")))
        # The client may give up (read timeout) before a slow answer comes.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self._respond(entity, query)

    def _respond(self, entity: str, query: dict):
        fake = self.server.fake
        if fake.fail_status:
            return self._send(fake.fail_status, b"<html><body>Server error</body></html>", "text/html")
        if fake.slow:
            fake.release.wait(fake.slow_delay)
        expected = base64.b64encode(f"{fake.username}:{fake.password}".encode()).decode()
        if self.headers.get("Authorization") != f"Basic {expected}":
            return self._send(401, b"", "", {"WWW-Authenticate": 'Basic realm="1C"'})
        if entity not in fake.documents:
            return self._error(404, "Entity not found")
        rows = list(fake.documents[entity])
        if "$filter" in query:
            window = _WINDOW.match(query["$filter"])
            if not window:
                return self._error(400, "Unsupported filter")
            rows = [row for row in rows if window.group(1) <= row["Date"] < window.group(2)]
        if query.get("$orderby") == "Date":
            rows.sort(key=lambda row: row["Date"])
        skip, top = int(query.get("$skip", 0)), int(query.get("$top", len(rows) or 1))
        rows = rows[skip : skip + top]
        if "$select" in query:
            names = query["$select"].split(",")
            known = {name for row in fake.documents[entity] for name in row}
            if unknown := [name for name in names if name not in known]:
                return self._error(400, f"Unknown field: {unknown[0]}")
            rows = [{name: row[name] for name in names if name in row} for row in rows]
        metadata = f"{fake.url}/odata/standard.odata/$metadata#{entity}"
        return self._send_json({"odata.metadata": metadata, "value": rows})

    def _error(self, status: int, text: str):
        body = {"odata.error": {"code": "", "message": {"lang": "en", "value": text}}}
        self._send_json(body, status)

    def _send_json(self, payload, status: int = 200):
        self._send(status, json.dumps(payload, ensure_ascii=False).encode("utf-8"), "application/json;charset=utf-8")


class _Server(QuietServer):
    fake: "FakeOneC"


class FakeOneC(FakeServer):
    """Start with `.start()`, stop with `.stop()`; `.url` + "/retail" is a database's address."""

    server_class = _Server
    handler_class = _Handler
    name = "fake-1c"

    def __init__(self, *, slow_delay: float = 1.0):
        super().__init__()
        self.slow_delay = slow_delay
        self.requests: list[RecordedRequest] = []
        self.username, self.password = USERNAME, PASSWORD
        self.documents: dict[str, list[dict]] = {ENTITY: load_fixture("odata_cheki_kkm_response.json")["value"]}
        self.fail_status: int | None = None
        self.slow = False

    @property
    def cheques(self) -> list[dict]:
        return self.documents[ENTITY]

    @cheques.setter
    def cheques(self, rows: list[dict]) -> None:
        self.documents[ENTITY] = rows
