"""Wire-format fakes of PagerDuty's REST API (incident notes) and Events API v2, plus webhook v3 signing.

The ``pagerduty`` 7.x clients refuse ``http://`` base URLs, so tests keep the real https base URLs and hand the
client an httpx transport (``transport()``) that carries each request over plain HTTP to this fake instead.
Test-only: never product code.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import threading
import uuid
from typing import Any

import httpx2 as httpx  # the HTTP client the pagerduty package is built on

from tests.fakes._server import FakeServer, Request, Response

SEVERITIES = {"critical", "error", "warning", "info"}


class _ToFake(httpx.HTTPTransport):
    def __init__(self, port: int) -> None:
        super().__init__()
        self._port = port

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.url = request.url.copy_with(scheme="http", host="127.0.0.1", port=self._port)
        return super().handle_request(request)


class FakePagerDuty:
    def __init__(self, api_token: str = "pd-test-token", routing_key: str = "R0UTINGKEY0000000000000000000000") -> None:
        self.api_token = api_token
        self.routing_key = routing_key
        self.notes: dict[str, list[dict]] = {}
        self.note_requests: list[dict] = []  # headers + body of every note request
        self.events: list[dict] = []
        self.alerts: dict[str, dict] = {}  # dedup_key -> {"status": triggered|resolved, "payload": ...}
        self.fail_next: list[int] = []  # statuses to answer with, next requests first
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self.server = FakeServer(self._handle)
        self.url = self.server.url

    def start(self) -> "FakePagerDuty":
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()

    def transport(self) -> httpx.BaseTransport:
        return _ToFake(self.server.port)

    def _handle(self, req: Request) -> Response:
        with self._lock:
            if self.fail_next:
                return Response(self.fail_next.pop(0), {"error": {"message": "injected failure"}})
            if req.path == "/v2/enqueue":
                return self._enqueue(req)
            parts = req.path.strip("/").split("/")
            if len(parts) == 3 and parts[0] == "incidents" and parts[2] == "notes":
                return self._notes(req, parts[1])
            return Response(404, {"error": {"message": "Not Found", "code": 2100}})

    # ------------------------------------------------------------------ REST API v2
    def _notes(self, req: Request, incident_id: str) -> Response:
        if req.headers.get("authorization") != f"Token token={self.api_token}":
            return Response(401, {"error": {"message": "Unauthorized", "code": 2006}})
        if req.method == "GET":
            return Response(200, {"notes": self.notes.get(incident_id, [])})
        if not req.headers.get("from"):
            return Response(400, {"error": {"message": "Invalid Input Provided", "code": 2001,
                                            "errors": ["A valid From header is required"]}})
        note = (req.json or {}).get("note") or {}
        if not note.get("content"):
            return Response(400, {"error": {"message": "Invalid Input Provided", "code": 2001,
                                            "errors": ["Note content can't be blank"]}})
        record = {"id": f"PN{next(self._ids):05d}", "content": note["content"],
                  "user": {"summary": req.headers["from"]}, "created_at": "2026-11-01T00:00:00Z"}
        self.notes.setdefault(incident_id, []).append(record)
        self.note_requests.append({"headers": req.headers, "body": req.json})
        return Response(201, {"note": record})

    # ------------------------------------------------------------------ Events API v2
    def _enqueue(self, req: Request) -> Response:
        event = req.json if isinstance(req.json, dict) else {}
        errors = []
        if event.get("routing_key") != self.routing_key:
            return Response(400, {"status": "invalid event", "message": "Event object is invalid",
                                  "errors": ["Invalid routing key"]})
        action = event.get("event_action")
        if action not in ("trigger", "acknowledge", "resolve"):
            errors.append("'event_action' is invalid")
        dedup_key = event.get("dedup_key") or uuid.uuid4().hex
        if action == "trigger":
            payload = event.get("payload") or {}
            for key in ("summary", "source", "severity"):
                if not payload.get(key):
                    errors.append(f"'payload.{key}' is missing or blank")
            if payload.get("severity") and payload["severity"] not in SEVERITIES:
                errors.append("'payload.severity' is invalid")
        elif not event.get("dedup_key"):
            errors.append("'dedup_key' is missing")
        if errors:
            return Response(400, {"status": "invalid event", "message": "Event object is invalid", "errors": errors})
        self.events.append(event)
        if action == "trigger":
            self.alerts[dedup_key] = {"status": "triggered", "payload": event["payload"]}
        elif dedup_key in self.alerts:
            self.alerts[dedup_key]["status"] = "resolved" if action == "resolve" else "acknowledged"
        return Response(202, {"status": "success", "message": "Event processed", "dedup_key": dedup_key})


# ---------------------------------------------------------------------- webhooks v3, as PagerDuty sends them
def sign(body: bytes, *secrets: str) -> str:
    """The X-PagerDuty-Signature header: one v1= entry per active secret."""
    return ",".join("v1=" + hmac.new(s.encode(), body, hashlib.sha256).hexdigest() for s in secrets)


def incident_event(
    event_type: str = "incident.triggered",
    *,
    incident_id: str = "PINC001",
    service_id: str = "PSVC001",
    priority: str | None = "P1",
    title: str = "orders-db is down",
    event_id: str | None = None,
) -> dict[str, Any]:
    return {
        "event": {
            "id": event_id or uuid.uuid4().hex[:26].upper(),
            "event_type": event_type,
            "resource_type": "incident",
            "occurred_at": "2026-11-01T10:00:00.000Z",
            "agent": {"id": "PUSER01", "type": "user_reference", "summary": "Ops Person"},
            "client": None,
            "data": {
                "id": incident_id,
                "type": "incident",
                "self": f"https://api.pagerduty.com/incidents/{incident_id}",
                "html_url": f"https://acme.pagerduty.com/incidents/{incident_id}",
                "number": 42,
                "status": "resolved" if event_type == "incident.resolved" else "triggered",
                "incident_key": f"key-{incident_id}",
                "created_at": "2026-11-01T10:00:00Z",
                "title": title,
                "service": {"id": service_id, "type": "service_reference", "summary": "Orders DB",
                            "html_url": f"https://acme.pagerduty.com/services/{service_id}",
                            "self": f"https://api.pagerduty.com/services/{service_id}"},
                "assignees": [],
                "escalation_policy": {"id": "PEP0001", "type": "escalation_policy_reference", "summary": "Ops"},
                "teams": [],
                "priority": None if priority is None else {"id": "PPRI001", "type": "priority_reference",
                                                           "summary": priority},
                "urgency": "high",
                "conference_bridge": None,
                "resolve_reason": None,
            },
        }
    }


def webhook(event: dict, *secrets: str) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(event).encode()
    return body, {"Content-Type": "application/json", "X-PagerDuty-Signature": sign(body, *secrets),
                  "User-Agent": "PagerDuty-Webhook/V3.0"}
