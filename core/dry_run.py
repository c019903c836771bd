"""What a runbook would do, computed without changing anything: the dry run's input, its answer, and pure helpers.

``workflows.dry_run.RunbookDryRun`` reads the systems a runbook would change (read-only activities, on the worker,
with the worker's credentials) and answers a ``DryRunPlan``: what it read (``reads``), the ordered changes it would
make with their before and after values (``changes``), the procedure (plan steps, analysis queries rendered, checks),
what a rollback would do, who must approve, and whether a change freeze applies. The CLI prints it as a table
(``runbook start ... --dry-run``), as JSON (``--json``), and the Slack gateway as text.

This module imports no client library: the CLI and the gateway read plans with it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from core.analysis import CloudWatchQuery, HttpHealthQuery, MetricQuery, render
from core.approval import ApprovalPolicy
from core.duration import format_duration

__all__ = [
    "DRY_RUN_UNREADABLE",
    "Change",
    "DryRunInput",
    "DryRunPlan",
    "FreezeCheck",
    "Reading",
    "approval_lines",
    "query_text",
]

# The dry run's failure type when a system it must read cannot be read (its message names the system and what).
DRY_RUN_UNREADABLE = "DryRunUnreadable"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DryRunInput(_Model):
    """The runbook's workflow type and its validated input (as JSON: no secrets, only references to them)."""

    workflow_type: str = Field(min_length=1)
    workflow_id: str = Field(min_length=1, description="the id the real run would have")
    input: dict[str, Any]


class Reading(_Model):
    """One value read from a system, as found now."""

    system: str = Field(description="ALB, Kubernetes, Route53, RDS, Terraform, S3, PostgreSQL ...")
    what: str
    value: str


class Change(_Model):
    """One change the run would make, in order, with the value it would replace."""

    step: str = Field(description="the run's step that makes it")
    system: str
    target: str
    before: str
    after: str


class FreezeCheck(_Model):
    """Whether a change freeze window applies now (the change calendar, read by the worker)."""

    checked: bool = Field(False, description="False: no change calendar was consulted")
    frozen: bool = False
    window: str | None = None
    ends_at: datetime | None = None
    detail: str = ""

    def text(self) -> str:
        if not self.checked:
            return self.detail or "not checked"
        if not self.frozen:
            return self.detail or "no freeze window applies now"
        until = f" until {self.ends_at:%Y-%m-%d %H:%M} UTC" if self.ends_at else ""
        return f"frozen by {self.window}{until}" + (f": {self.detail}" if self.detail else "")


class DryRunPlan(_Model):
    runbook: str
    workflow_type: str
    workflow_id: str = Field(description="the id the real run would have (its concurrency key)")
    target: str
    environment: str = ""
    outcome: Literal["WouldChange", "NothingToChange", "WouldRefuse", "NotPlanned"] = Field(
        "WouldChange", description="NotPlanned: the runbook's workflow has no dry run (a team's own runbook)")
    summary: str = ""
    refusal: str | None = Field(None, description="why the real run would end Refused, nothing changed")
    reads: list[Reading] = Field(default_factory=list)
    changes: list[Change] = Field(default_factory=list)
    procedure: list[str] = Field(default_factory=list, description="the steps in order, as the run walks them")
    rollback: list[str] = Field(default_factory=list, description="what a rollback or an abort would do")
    approval: list[str] = Field(default_factory=list, description="who must approve, and at which gates")
    freeze: FreezeCheck = Field(default_factory=FreezeCheck)


def approval_lines(policy: ApprovalPolicy, gates: list[str]) -> list[str]:
    """Who must approve under ``policy``, then each gate the run opens (``gates``: one line each)."""
    if policy.required_approvals == 0:
        return ["no approval required by the policy (required_approvals: 0)"]
    who = ", ".join([*(f"group {g}" for g in policy.groups), *policy.approvers]) or "nobody is named"
    line = f"{policy.required_approvals} approval(s) from {who}"
    if policy.required_groups:
        line += f", one from each of {', '.join(policy.required_groups)}"
    line += "; no self-approval" if not policy.allow_self_approval else ""
    line += f"; timeout {format_duration(policy.timeout)} -> {policy.on_timeout}"
    return [line, *(f"gate: {g}" for g in gates)]


def query_text(query: MetricQuery, args: dict[str, str]) -> str:
    """A metric query as the analysis would send it, its ``{{arguments}}`` filled in (a missing one is named)."""
    try:
        if isinstance(query, CloudWatchQuery):
            if query.expression is not None:
                return f"CloudWatch {render(query.expression, args)}"
            dims = ",".join(f"{k}={render(v, args)}" for k, v in sorted(query.dimensions.items()))
            return f"CloudWatch {query.namespace}/{query.metric_name}{{{dims}}} {query.statistic}"
        if isinstance(query, HttpHealthQuery):
            return f"HTTP {query.probes} x " + ", ".join(render(c.url, args) for c in query.checks)
        return f"PromQL {render(query.query, args)}"
    except KeyError as err:
        return f"cannot be rendered: {err.args[0]}"
