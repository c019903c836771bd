"""What a runbook tells people: one event type for every channel (recording, Slack, PagerDuty)."""

from __future__ import annotations

from pydantic import BaseModel, Field, model_validator

from core.approval import GateView
from core.routing import DEFAULT_ROUTES, Channel, EventKind, Severity, route
from core.runbook import ActionRecord

MAX_NOTIFIED_ACTIONS = 5  # a notification carries the run's latest steering actions (the Slack message shows them)


class RunbookEvent(BaseModel):
    kind: EventKind
    workflow_id: str
    run_id: str
    runbook: str
    target: str
    title: str
    text: str = ""
    fields: dict[str, str] = Field(default_factory=dict)
    severity: Severity = "info"
    gate: GateView | None = None
    status: str | None = Field(
        None, description="on the run's last event (finished/failed): how it ended, one of core.runbook.TERMINAL"
    )
    incident_id: str | None = Field(None, description="PagerDuty incident that started the run, if any")
    slack_channel: str | None = None
    ui_url: str | None = None
    refs: dict[str, str] = Field(
        default_factory=dict, description="references returned by earlier notifications (Slack ts, PD dedup key)"
    )
    actions: list[ActionRecord] = Field(
        default_factory=list, description="the run's latest steering actions (pause, extend ...), shown with its message"
    )
    channels: list[Channel] | None = Field(
        None, description="where it goes (core.routing, the run's table); unset: the stock table decides"
    )

    @model_validator(mode="after")
    def _routed(self) -> "RunbookEvent":
        if self.channels is None:
            self.channels = route(DEFAULT_ROUTES, self.kind, self.severity)
        return self


class NotifyResult(BaseModel):
    refs: dict[str, str] = Field(default_factory=dict)
    failures: list[str] = Field(default_factory=list, description="channels that could not be reached, and why")
