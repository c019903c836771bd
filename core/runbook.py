"""What every runbook workflow takes and reports, whatever it does."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from core.approval import AbortInput, ApprovalPolicy, GateView, RefusedAttempt
from core.calendar import Freeze, FreezePolicy
from core.routing import DEFAULT_ROUTES, Route

RunStatus = Literal[
    "Running",
    "WaitingForApproval",
    "WaitingForWindow",  # inside a change freeze (core.calendar): waits for the window to end, or a break-glass approval
    "Paused",
    "RollingBack",
    # the endings: one convention for every runbook (README, "How a run ends")
    "Succeeded",  # did what it was asked (or found nothing to do)
    "RolledBack",  # stopped by a failed check or step, and undid its changes
    "Aborted",  # a person aborted or cancelled it, and its changes were undone per the runbook's abort rules
    "Rejected",  # an approval was rejected or timed out; what it had changed was undone
    "Refused",  # the input or a target was invalid or missing: nothing was changed
    "Held",  # stopped in a state a person must look at (e.g. a failover that shifted DNS but failed verification)
    "Failed",  # the run could not make the infrastructure safe (or a drill proved it unsafe): see not_undone
]
TERMINAL: tuple[str, ...] = ("Succeeded", "RolledBack", "Aborted", "Rejected", "Refused", "Held", "Failed")


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
    approval_by_environment: dict[str, ApprovalPolicy] = Field(
        default_factory=dict,
        description="the catalog's policy per environment, for a run whose stages cross environments (release)",
    )
    ui_url: str | None = Field(None, description="link to this workflow in the web UI, for notifications")
    source: Literal["cli", "slack", "pagerduty", "schedule", "api"] = "cli"
    routing: list[Route] = Field(
        default_factory=lambda: list(DEFAULT_ROUTES),
        description="where the run's events go (core.routing): the runbook's routes, then the catalog's table",
    )
    freeze: FreezePolicy = Field(
        "wait", description="inside a change freeze: wait until the window ends (or a break-glass approval), or refuse"
    )
    history_limit: int = Field(
        10_000, ge=100, description="events after which a long run continues as new (Temporal's own suggestion too)"
    )


class RunbookCarry(BaseModel):
    """What a run hands to its continuation (continue-as-new): the audit trail and the steering so far."""

    steps: list["StepRecord"] = Field(default_factory=list)
    gates: list[GateView] = Field(default_factory=list, description="closed gates")
    gate_seq: int = 0
    refused: list[RefusedAttempt] = Field(default_factory=list)
    used_tokens: list[str] = Field(default_factory=list, description="ids of the ID tokens already counted (never tokens)")
    actions: list["ActionRecord"] = Field(default_factory=list)
    notify_refs: dict[str, str] = Field(default_factory=dict)
    notification_failures: list[str] = Field(default_factory=list)
    abort_request: AbortInput | None = None
    status: RunStatus = "Running"
    stage: str = "starting"
    continued: int = Field(0, description="how many times this run has continued as new")
    state: dict[str, Any] = Field(default_factory=dict, description="the runbook's own cursor and state")
    break_glass: list[str] = Field(
        default_factory=list, description="freeze occurrences a break-glass approval opened for this run (window@start)"
    )


class RunbookInput(BaseModel):
    """Base of every runbook workflow's input: the runbook's own parameters are fields of the subclass."""

    model_config = ConfigDict(extra="forbid")

    meta: RunbookMeta
    carry: RunbookCarry | None = Field(None, description="set by the run itself when it continues as new")

    def problems(self) -> list[str]:
        """Why this input must be refused before anything starts (empty: usable). Checked by the starters (exit 2)
        and again by the run itself before its first change (Refused), so a start from elsewhere is refused too."""
        return []


StepStatus = Literal["running", "done", "failed", "skipped", "compensated"]


class StepRecord(BaseModel):
    name: str
    status: StepStatus = "running"
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
    gate: GateView | None = Field(None, description="the oldest open gate (see open_gates for all)")
    open_gates: list[GateView] = Field(default_factory=list, description="every open gate, oldest first")
    gates: list[GateView] = Field(default_factory=list, description="closed gates, oldest first")
    refused: list[RefusedAttempt] = Field(default_factory=list)
    actions: list[ActionRecord] = Field(default_factory=list)
    notification_failures: list[str] = Field(default_factory=list)
    details: dict[str, Any] = Field(default_factory=dict, description="runbook-specific state")
    freeze: Freeze | None = Field(None, description="the change freeze the run waits out (status WaitingForWindow)")
    continued: int = Field(0, description="how many times the run has continued as new")
    notify_refs: dict[str, str] = Field(
        default_factory=dict, description="where its notifications are (the Slack message's channel and ts, ...)"
    )


class RunbookResult(BaseModel):
    """Base of every runbook's result: how it ended (``status``, one of TERMINAL), why, and what was undone."""

    status: RunStatus
    summary: str
    reason: str = Field("", description="one line: why the run ended this way")
    steps: list[StepRecord] = Field(default_factory=list)
    gates: list[GateView] = Field(default_factory=list)
    actions: list[ActionRecord] = Field(default_factory=list)
    compensated: list[str] = Field(default_factory=list, description="what the run undid")
    not_undone: list[str] = Field(default_factory=list, description="what it could not undo (a person must)")


RunbookCarry.model_rebuild()
