"""PagerDuty as a notification channel: notes on the incident that started a run, Events API v2 alerts.

- Notes (REST API v2, ``RestApiV2Client`` with a ``From`` header): every progress and result event of a run
  started from an incident becomes a note on that incident, so responders read the runbook's progress where they
  already are.
- Alerts (Events API v2, ``EventsApiV2Client``): an event the run's routing table (core.routing) sends to
  ``pagerduty`` triggers an alert. Its dedup key is deterministic, so a retried activity or a second alert updates
  one alert instead of opening several: per gate (``runbook:<workflow id>:gate:<gate id>``) for an escalated
  approval, per run (``runbook:<workflow id>``) for anything else. Resolving follows the run, whatever the table
  says: a gate's alert when that gate closes (``approval_decided``), or at the run's end whatever closed it; the
  run's alert when the run reports ``recovered`` or ends cleanly (``CLEAN_ENDS``: Succeeded, Aborted, Rejected,
  Refused; a RolledBack, Held or Failed run keeps it open for a person). Severity comes from the event
  (``failed`` is at least ``error``).

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

NOTE_KINDS = {"started", "step_done", "approval_needed", "approval_escalated", "approval_decided", "rolled_back",
              "alert", "recovered", "finished", "failed"}
SEVERITY_ORDER = ["info", "warning", "error", "critical"]
DEDUP_REF = "pagerduty_dedup_key"
GATE_REF = "pagerduty_gate:"  # + gate id: that gate's open alert
# The endings that resolve a run's alert: it did what it was asked, or a person stopped it and it undid its changes,
# or it changed nothing. RolledBack, Held and Failed keep it open: something failed and a person should look.
CLEAN_ENDS = {"Succeeded", "Aborted", "Rejected", "Refused"}
MAX_NOTE_CHARS = 2000


def dedup_key(workflow_id: str, gate_id: str | None = None) -> str:
    """Deterministic per run, or per gate of a run (and under PagerDuty's 255-character limit)."""
    name = workflow_id if gate_id is None else f"{workflow_id}:gate:{gate_id}"
    key = f"runbook:{name}"
    if len(key) > 255:
        key = "runbook:" + hashlib.sha256(name.encode()).hexdigest()
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
        refs: dict[str, str] = {}
        per_gate = event.gate is not None and event.kind.startswith("approval_")
        if "pagerduty" in (event.channels or []) and event.kind not in ("approval_decided", "recovered"):
            key = dedup_key(event.workflow_id, event.gate.gate_id if per_gate and event.gate else None)
            details = {"workflow_id": event.workflow_id, "runbook": event.runbook, "text": event.text, **event.fields}
            if per_gate and event.gate is not None:
                details |= {"gate": event.gate.gate_id, "approvers": ", ".join(event.gate.eligible),
                            "deadline": f"{event.gate.deadline:%Y-%m-%d %H:%M} UTC"}
            self._events.trigger(
                summary=f"{event.runbook} on {event.target}: {event.title}"[:1024],
                source=event.target or event.runbook,
                dedup_key=key,
                severity=self._severity(event),
                custom_details=details,
                links=[{"href": event.ui_url, "text": "Runbook in the Temporal UI"}] if event.ui_url else None,
            )
            refs[GATE_REF + event.gate.gate_id if per_gate and event.gate else DEDUP_REF] = key
        ended = event.kind in ("finished", "failed")
        for ref, key in event.refs.items():  # what is open and now over: resolved (a retry resolves again: harmless)
            if not key or ref in refs:
                continue
            gate_over = ref.startswith(GATE_REF) and (ended or (
                event.kind == "approval_decided" and event.gate is not None and ref == GATE_REF + event.gate.gate_id))
            run_over = ref == DEDUP_REF and (event.kind == "recovered" or (ended and event.status in CLEAN_ENDS))
            if gate_over or run_over:
                self._events.resolve(key)
                refs[ref] = ""  # resolved: not resolved again by a later event
        return refs

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
