"""What every runbook workflow takes and reports, whatever it does."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from core.approval import ApprovalPolicy, GateView, RefusedAttempt

RunStatus = Literal[
    "Running",
    "WaitingForApproval",
    "Paused",
    "RollingBack",
    "Succeeded",
    "RolledBack",
    "Failed",
    "Aborted",
    "Held",
]


class RunbookMeta(BaseModel):
    """Who started which runbook against what, and the policy it runs under. Built by the starters."""

    model_config = ConfigDict(extra="forbid")

    runbook: str
    target: str
    environment: str = ""
    requested_by: str
    approval: ApprovalPolicy = Field(default_factory=ApprovalPolicy)
    incident_id: str | None = None
    slack_channel: str | None = None
    ui_url: str | None = Field(None, description="link to this workflow in the web UI, for notifications")
    source: Literal["cli", "slack", "pagerduty", "schedule", "api"] = "cli"


class RunbookInput(BaseModel):
    """Base of every runbook workflow's input: the runbook's own parameters are fields of the subclass."""

    model_config = ConfigDict(extra="forbid")

    meta: RunbookMeta


class StepRecord(BaseModel):
    name: str
    status: Literal["running", "done", "failed", "skipped", "compensated"] = "running"
    started_at: datetime
    finished_at: datetime | None = None
    detail: str = ""


class ActionRecord(BaseModel):
    """A steering action a person took (pause, resume, abort, extend, promote, ...), who and why."""

    at: datetime
    action: str
    by: str
    reason: str = ""
    accepted: bool = True
    note: str = ""


class RunbookStatus(BaseModel):
    """The answer of every runbook's ``status`` query."""

    workflow_id: str
    runbook: str
    target: str
    environment: str = ""
    requested_by: str
    status: RunStatus
    stage: str
    steps: list[StepRecord] = Field(default_factory=list)
    gate: GateView | None = None
    gates: list[GateView] = Field(default_factory=list, description="closed gates, oldest first")
    refused: list[RefusedAttempt] = Field(default_factory=list)
    actions: list[ActionRecord] = Field(default_factory=list)
    notification_failures: list[str] = Field(default_factory=list)
    details: dict[str, Any] = Field(default_factory=dict, description="runbook-specific state")


class RunbookResult(BaseModel):
    """Base of every runbook's result."""

    status: RunStatus
    summary: str
    steps: list[StepRecord] = Field(default_factory=list)
    gates: list[GateView] = Field(default_factory=list)
