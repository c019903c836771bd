"""The local demo's HTTP services: what the blue-green and failover runbooks probe on the local stack.

Part of the local stack, not of any runbook: ``runbook dev`` calls ``run_services(stop_event, state_dir, port)`` in
a thread (port ``RUNBOOK_DEV_DEMO_PORT``, default 8090; ``dev.env`` exports ``RUNBOOK_DEMO_URL``). Routes:

- ``/checkout/<colour>/healthz`` (blue, green): 200 ``ok``; 500 while ``<state>/demo/<colour>-bad`` exists.
- ``/checkout/<colour>/``: a page naming the service, colour and version (``RUNBOOK_DEMO_BLUE_VERSION``, default
  ``v1``; ``RUNBOOK_DEMO_GREEN_VERSION``, default ``v2``), which the blue-green smoke checks look for.
- ``/regions/<region>/healthz``: the region's health endpoint for the failover drill: 200 ``ok``; 503 while
  ``<state>/demo/<region>-down`` exists; ``<state>/demo/primary-down`` takes the primary (us-east-1) down.
- ``POST /slack/api/<method>``: where the local gateway's Slack Web API calls go (``SLACK_API_URL``; there is no
  Slack here): ``auth.test`` names a demo bot, every other method answers ``ok`` (a message gets a ``ts``), and each
  call is appended to ``<state>/demo/slack-api.jsonl`` so you can see what would have reached Slack.
- ``/checkout/api-key``: ``{"api_key": "sha256:..."}``, the fingerprint of the API key the rotate-secret demo's
  consumer uses now (``starters.demo_rotation``; 404 when the stack runs no such consumer).

The switch files are read on every request, so they work on a running stack (``touch`` to break, ``rm`` to heal).

Run alone: ``python -m starters.demo_services [--state .state] [--port 8090]``.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable

SERVICE = "checkout"
COLOURS = ("blue", "green")
PRIMARY_REGION = "us-east-1"
DEFAULT_PORT = 8090


def versions() -> dict[str, str]:
    return {
        "blue": os.environ.get("RUNBOOK_DEMO_BLUE_VERSION", "v1"),
        "green": os.environ.get("RUNBOOK_DEMO_GREEN_VERSION", "v2"),
    }


def respond(state_dir: Path, path: str) -> tuple[int, str]:
    """(status, body) for ``path``; pure apart from reading the switch files."""
    demo = Path(state_dir) / "demo"
    parts = [p for p in path.split("?", 1)[0].split("/") if p]
    if len(parts) >= 2 and parts[0] == SERVICE and parts[1] in COLOURS:
        colour = parts[1]
        rest = parts[2:]
        if rest == ["healthz"]:
            if (demo / f"{colour}-bad").exists():
                return 500, f"{SERVICE}-{colour} unhealthy (demo switch {demo / (colour + '-bad')})\n"
            return 200, "ok\n"
        if not rest:
            return 200, f"<html><body><h1>{SERVICE}</h1><p>colour {colour}, version {versions()[colour]}</p></body></html>\n"
    if len(parts) == 3 and parts[0] == "regions" and parts[2] == "healthz":
        region = parts[1]
        down = (demo / f"{region}-down").exists() or (region == PRIMARY_REGION and (demo / "primary-down").exists())
        return (503, f"{region} down (demo switch)\n") if down else (200, f"ok {region}\n")
    return 404, "not found\n"


DEMO_BOT = {"url": "https://demo.slack.invalid/", "team": "demo", "user": "runbook", "team_id": "T0DEMO",
            "user_id": "U0RUNBOOK", "bot_id": "B0RUNBOOK"}


def respond_slack(state_dir: Path, path: str, body: bytes) -> tuple[int, dict] | None:
    """The Slack Web API sink: (status, JSON answer) for ``POST /slack/api/<method>``, None for other paths."""
    parts = [p for p in path.split("?", 1)[0].split("/") if p]
    if len(parts) != 3 or parts[:2] != ["slack", "api"]:
        return None
    method = parts[2]
    demo = Path(state_dir) / "demo"
    demo.mkdir(parents=True, exist_ok=True)
    with (demo / "slack-api.jsonl").open("a") as out:
        out.write(json.dumps({"method": method, "body": body.decode(errors="replace")}) + "\n")
    if method == "auth.test":
        return 200, {"ok": True, **DEMO_BOT}
    answer: dict = {"ok": True}
    if method.startswith("chat."):
        answer.update(channel="C0OPS", ts=f"{time.time():.6f}")
    return 200, answer


def make_server(state_dir: Path | str, port: int, host: str = "127.0.0.1",
                api_key: Callable[[], str] | None = None) -> ThreadingHTTPServer:
    """``api_key``: the fingerprint the API key consumer uses now (``/checkout/api-key``)."""
    state = Path(state_dir)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            if self.path.split("?", 1)[0].rstrip("/") == f"/{SERVICE}/api-key" and api_key is not None:
                status, body = 200, json.dumps({"api_key": api_key()}) + "\n"
            else:
                status, body = respond(state, self.path)
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/html" if body.startswith("<html>") else "text/plain")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            found = respond_slack(state, self.path, body)
            status, data = (404, b"not found\n") if found is None else (found[0], json.dumps(found[1]).encode())
            self.send_response(status)
            self.send_header("Content-Type", "text/plain" if found is None else "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args) -> None:  # noqa: A002 - quiet: probes run every few seconds
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server


def run_services(stop_event: threading.Event, state_dir: Path | str, port: int = DEFAULT_PORT,
                 api_key: Callable[[], str] | None = None) -> None:
    """Serve until ``stop_event`` is set."""
    (Path(state_dir) / "demo").mkdir(parents=True, exist_ok=True)
    server = make_server(state_dir, port, api_key=api_key)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
    thread.start()
    try:
        stop_event.wait()
    finally:
        server.shutdown()
        server.server_close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--state", default=".state")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    args = parser.parse_args()
    stop = threading.Event()
    try:
        run_services(stop, args.state, args.port)
    except KeyboardInterrupt:
        stop.set()


if __name__ == "__main__":
    main()
