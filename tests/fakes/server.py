"""The common part of the local fake providers: a threading HTTP server on 127.0.0.1 and
a free port, started and stopped with the test."""

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class QuietServer(ThreadingHTTPServer):
    """A threading server whose handler threads die with the test, and which keeps quiet
    about clients that hung up (the tests assert on what the fake recorded)."""

    daemon_threads = True

    def handle_error(self, request, client_address):
        pass


class FakeHandler(BaseHTTPRequestHandler):
    """A request handler that logs nothing and answers with `_send`."""

    def log_message(self, format, *args):
        pass  # keep test output quiet

    def _send(self, status: int, body: bytes, content_type: str = "", headers: dict | None = None):
        self.send_response(status)
        if content_type:
            self.send_header("Content-Type", content_type)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body:
            self.wfile.write(body)


class FakeServer:
    """Subclasses set `server_class` (a ThreadingHTTPServer with a `fake` attribute for the
    handler to reach back), `handler_class` and `name`, and call super().__init__()."""

    server_class: type
    handler_class: type
    name = "fake"

    def __init__(self):
        self.lock = threading.Lock()
        self.release = threading.Event()  # set on stop so a slow answer does not outlive the test
        self._server = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._server is not None, f"the {self.name} server is not started"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self):
        self._server = self.server_class(("127.0.0.1", 0), self.handler_class)
        self._server.fake = self
        # A short poll interval keeps stop() (server.shutdown) from costing half a second per test.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.01}, name=self.name, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self.release.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()
