"""OpenBao's part of the change ledger: a per-case HTTP proxy in front of the session's OpenBao.

The case's worker reaches OpenBao through the proxy (its ``VAULT_ADDR``); the consumers and the test read OpenBao
directly. Around every request that may write (any method but GET and LIST, and a GET of a dynamic secret engine's
``creds/<role>``, which creates a user), the proxy takes the case's OpenBao
state (``state``: a function of the scenario, reading OpenBao directly) before and after, and appends one entry
``{"op", "key", "value", "t"}`` per key whose value the request changed, as the moto ledger and the Kubernetes fake
do: a retried write that changes nothing records nothing. Requests are serialised, so each entry belongs to one.
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

import httpx

READS = {"GET", "LIST", "HEAD"}
HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


class VaultLedger:
    def __init__(self, upstream: str, state: Callable[[], dict[str, Any]]) -> None:
        self.upstream, self.state = upstream.rstrip("/"), state
        self.ledger: list[dict] = []
        self._lock = threading.Lock()
        self._http = httpx.Client(timeout=60)
        ledger = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _any(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
                status, out_headers, content = ledger.forward(self.command, self.path, headers, body)
                self.send_response(status)
                for key, value in out_headers:
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_LIST = do_HEAD = _any  # noqa: N815

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> "VaultLedger":
        self._thread.start()
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._http.close()

    def forward(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, list, bytes]:
        def send() -> httpx.Response:
            return self._http.request(method, self.upstream + path, headers=headers, content=body)

        if method in READS and "/creds/" not in path:  # reading <engine>/creds/<role> creates a user
            resp = send()
        else:
            with self._lock:
                before = self.state()
                resp = send()
                after = self.state()
                now = time.time()
                for key in sorted(set(before) | set(after)):
                    if before.get(key) != after.get(key):
                        self.ledger.append({"op": f"{method} {path}", "key": key, "value": after.get(key), "t": now})
        out = [(k, v) for k, v in resp.headers.items() if k.lower() not in HOP | {"content-encoding"}]
        return resp.status_code, out, resp.content
