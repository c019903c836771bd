"""The worker's health endpoint, served next to its Prometheus metrics (``RUNBOOK_HEALTH_PORT``, default 9465).

- ``GET /livez``: 200 while the process runs (a liveness probe: restart only a wedged process).
- ``GET /readyz`` (and ``/healthz``): 200 once the worker is polling its task queue, 503 before that and from the
  moment it starts shutting down (a readiness probe, the image's HEALTHCHECK).

The SDK serves the metrics from its Rust core, which cannot host other paths, hence a second small port. Plain
asyncio, no framework: the worker already runs an event loop and this must answer even when the thread pool is busy.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field

log = logging.getLogger("runbook.worker.health")


@dataclass
class HealthState:
    """What the health endpoint reports; the worker flips ``polling`` when it starts and stops polling."""

    polling: bool = False
    task_queue: str = ""
    identity: str = ""
    detail: dict = field(default_factory=dict)

    def answer(self, path: str) -> tuple[int, dict]:
        if path == "/livez":
            return 200, {"live": True}
        if path in ("/readyz", "/healthz"):
            body = {"ready": self.polling, "task_queue": self.task_queue, "identity": self.identity}
            return (200 if self.polling else 503), body
        return 404, {"error": "not found"}


_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}


async def _handle(state: HealthState, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        request_line = await asyncio.wait_for(reader.readline(), timeout=5)
        while (await asyncio.wait_for(reader.readline(), timeout=5)) not in (b"\r\n", b"\n", b""):
            pass  # headers are not needed
        parts = request_line.decode("latin-1").split()
        if len(parts) < 2:
            return
        method, path = parts[0], parts[1].split("?", 1)[0]
        status, body = (405, {"error": "method not allowed"}) if method not in ("GET", "HEAD") else state.answer(path)
        payload = json.dumps(body).encode()
        head = (f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n").encode()
        writer.write(head + (payload if method != "HEAD" else b""))
        await writer.drain()
    except (asyncio.TimeoutError, ConnectionError):
        pass
    finally:
        writer.close()


async def serve_health(state: HealthState, port: int, host: str = "0.0.0.0") -> asyncio.Server:
    """Start serving; close the returned server to stop."""
    server = await asyncio.start_server(lambda r, w: _handle(state, r, w), host, port)
    log.info("health endpoint on %s:%d (/livez, /readyz)", host, port)
    return server
