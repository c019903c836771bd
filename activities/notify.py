"""The notification activity: one event, fanned out to every configured channel.

A channel is anything with ``name`` and ``send(event) -> refs``. The activity never raises: a channel that
cannot be reached is reported in ``NotifyResult.failures`` so a notification can never fail a runbook. Channels
retry on their own (bounded, honouring rate limits) before they give up.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Protocol

from temporalio import activity

from core.events import NotifyResult, RunbookEvent

log = logging.getLogger(__name__)


class NotificationChannel(Protocol):
    name: str

    def send(self, event: RunbookEvent) -> dict[str, str]:
        """Deliver the event; return references to keep (e.g. a Slack message ts). Raise on failure."""
        ...


class RecordingChannel:
    """Keeps every event in memory (tests) and, when given a path, appends it as a JSON line (local stack)."""

    name = "recording"

    def __init__(self, path: Path | None = None) -> None:
        self.events: list[RunbookEvent] = []
        self._path = path
        self._lock = threading.Lock()

    def send(self, event: RunbookEvent) -> dict[str, str]:
        with self._lock:
            self.events.append(event)
            if self._path is not None:
                self._path.parent.mkdir(parents=True, exist_ok=True)
                with self._path.open("a", encoding="utf-8") as fh:
                    fh.write(event.model_dump_json() + "\n")
        log.info("[%s] %s %s: %s", event.workflow_id, event.kind, event.target, event.title)
        return {}

    def kinds(self, workflow_id: str | None = None) -> list[str]:
        return [e.kind for e in self.events if workflow_id is None or e.workflow_id == workflow_id]


class NotificationActivities:
    def __init__(self, channels: list[NotificationChannel]) -> None:
        self._channels = list(channels)

    @activity.defn(name="notify")
    def notify(self, event: RunbookEvent) -> NotifyResult:
        result = NotifyResult()
        for channel in self._channels:
            try:
                result.refs.update(channel.send(event))
            except Exception as err:  # a channel's failure is reported, never raised
                message = f"{channel.name}: {type(err).__name__}: {err}"
                log.warning("notification to %s failed for %s: %s", channel.name, event.workflow_id, message)
                result.failures.append(message)
        return result
