"""PagerDuty as a notification channel: notes on the incident that started a run, Events API v2 alerts.

- Notes (REST API v2, ``RestApiV2Client`` with a ``From`` header): every progress and result event of a run
  started from an incident becomes a note on that incident, so responders read the runbook's progress where they
  already are.
- Alerts (Events API v2, ``EventsApiV2Client``): ``rolled_back``, ``alert`` and ``failed`` events trigger an alert
  whose dedup key is derived from the workflow id alone (``runbook:<workflow id>``), so a retried activity or a
  second alert for the same run updates one alert instead of opening several. ``recovered``, and a ``finished``
  run that succeeded, resolve it. Severity comes from the event (``failed`` is at least ``error``).

Both clients are built by the worker (``workers.activities``, through ``clients``); tests hand in clients whose httpx transport
carries the requests to a fake. Failures raise and are reported by the notification activity, never raised
into the runbook.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import httpx2 as httpx  # the HTTP client the pagerduty package is built on
from pagerduty import EventsApiV2Client, RestApiV2Client

from core.events import RunbookEvent

log = logging.getLogger(__name__)

NOTE_KINDS = {"started", "step_done", "approval_needed", "approval_decided", "rolled_back", "alert", "recovered",
              "finished", "failed"}
ALERT_KINDS = {"rolled_back", "alert", "failed"}
SEVERITY_ORDER = ["info", "warning", "error", "critical"]
DEDUP_REF = "pagerduty_dedup_key"
MAX_NOTE_CHARS = 2000


def dedup_key(workflow_id: str) -> str:
    """Deterministic per run (and under PagerDuty's 255-character limit)."""
    key = f"runbook:{workflow_id}"
    if len(key) > 255:
        key = "runbook:" + hashlib.sha256(workflow_id.encode()).hexdigest()
    return key


def bounded(client: RestApiV2Client | EventsApiV2Client, attempts: int = 3) -> None:
    """Bounded retries: a notification must give up in seconds, not retry a rate limit forever."""
    client.max_http_attempts = attempts
    client.max_network_attempts = attempts - 1
    client.retry[429] = attempts - 1
    client.sleep_timer_base = 1


class PagerDutyChannel:
    """Notification channel for ``activities.notify.NotificationActivities``."""

    name = "pagerduty"

    def __init__(self, rest: RestApiV2Client | None = None, events: EventsApiV2Client | None = None) -> None:
        self._rest = rest
        self._events = events

    def send(self, event: RunbookEvent) -> dict[str, str]:
        refs: dict[str, str] = {}
        errors: list[str] = []
        if self._rest is not None and event.incident_id and event.kind in NOTE_KINDS:
            try:
                self._note(event)
            except Exception as err:  # still try the alert below; report both
                errors.append(f"note on incident {event.incident_id}: {type(err).__name__}: {err}")
        if self._events is not None:
            try:
                refs.update(self._alert(event))
            except Exception as err:
                errors.append(f"alert for {event.workflow_id}: {type(err).__name__}: {err}")
        if errors:
            raise RuntimeError("; ".join(errors))
        return refs

    def _alert(self, event: RunbookEvent) -> dict[str, str]:
        assert self._events is not None
        key = dedup_key(event.workflow_id)
        if event.kind in ALERT_KINDS:
            self._events.trigger(
                summary=f"{event.runbook} on {event.target}: {event.title}"[:1024],
                source=event.target or event.runbook,
                dedup_key=key,
                severity=self._severity(event),
                custom_details={"workflow_id": event.workflow_id, "runbook": event.runbook,
                                "text": event.text, **event.fields},
                links=[{"href": event.ui_url, "text": "Runbook in the Temporal UI"}] if event.ui_url else None,
            )
            return {DEDUP_REF: key}
        if event.refs.get(DEDUP_REF) and (
            event.kind == "recovered" or (event.kind == "finished" and event.status == "Succeeded")
        ):
            self._events.resolve(event.refs[DEDUP_REF])
            return {DEDUP_REF: ""}  # resolved: a later success does not resolve again
        return {}

    @staticmethod
    def _severity(event: RunbookEvent) -> str:
        severity = event.severity
        if event.kind == "failed" and SEVERITY_ORDER.index(severity) < SEVERITY_ORDER.index("error"):
            severity = "error"
        if event.kind == "rolled_back" and severity == "info":
            severity = "warning"
        return severity

    def _note(self, event: RunbookEvent) -> None:
        assert self._rest is not None
        text = f"[{event.runbook} on {event.target}] {event.title}"
        if event.text:
            text += f"\n{event.text}"
        for name, value in event.fields.items():
            text += f"\n{name}: {value}"
        if event.ui_url and event.kind in ("started", "finished", "failed"):
            text += f"\n{event.ui_url}"
        self._rest.rpost(f"/incidents/{event.incident_id}/notes", json={"note": {"content": text[:MAX_NOTE_CHARS]}})


def clients(
    api_token: str | None,
    routing_key: str | None,
    *,
    from_email: str,
    api_url: str = "https://api.pagerduty.com",
    events_url: str = "https://events.pagerduty.com",
    transport: httpx.BaseTransport | None = None,
) -> tuple[RestApiV2Client | None, EventsApiV2Client | None]:
    """The two clients, bounded retries; ``transport`` lets tests route https to a local fake."""
    extra: dict[str, Any] = {"transport": transport} if transport is not None else {}
    rest = RestApiV2Client(api_token, default_from=from_email, base_url=api_url, **extra) if api_token else None
    events = EventsApiV2Client(routing_key, base_url=events_url, **extra) if routing_key else None
    for client in (rest, events):
        if client is not None:
            bounded(client)
    return rest, events
