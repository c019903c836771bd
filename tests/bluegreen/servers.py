"""Small local HTTP servers (threads) standing in for a service's colours in the blue-green tests.

Each ``ColourServer`` answers ``/healthz`` and ``/smoke`` (and any path set in ``routes``) with a status and body
that the test can change while the server runs, and counts the requests it got per path.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        """A client that gave up (the probe timeout tests) is expected; anything else is still reported."""
        import sys

        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class ColourServer:
    def __init__(self, colour: str, version: str = "v1") -> None:
        self.colour = colour
        self.version = version
        self.routes: dict[str, tuple[int, str]] = {}
        self.delay_seconds = 0.0
        self.fail_first: dict[str, int] = {}  # path -> number of 503 answers before the route's normal answer
        self.hits: Counter[str] = Counter()
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                path = self.path.split("?", 1)[0]
                with server._lock:
                    server.hits[path] += 1
                    failing = server.fail_first.get(path, 0)
                    if failing:
                        server.fail_first[path] = failing - 1
                if server.delay_seconds:
                    time.sleep(server.delay_seconds)
                if failing:
                    status, body = 503, "warming up"
                else:
                    status, body = server.answer(path)
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_HEAD = do_GET

            def log_message(self, *args) -> None:  # quiet
                pass

        self._httpd = _Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def answer(self, path: str) -> tuple[int, str]:
        if path in self.routes:
            return self.routes[path]
        if path == "/healthz":
            return 200, "ok"
        if path == "/smoke":
            return 200, f"hello from {self.colour} {self.version}"
        return 404, "not found"

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> "ColourServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def closed_port_url() -> str:
    """A URL on which nothing listens (a port just released)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"
