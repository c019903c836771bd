"""The approval gate's data: the policy a runbook carries, the requests people send, and what the gate decides.

The rules themselves (``check_approval``) are pure functions, so the workflow's update validators, its signal
handlers and the unit tests all use the same code.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from core.duration import Duration


class ApprovalPolicy(BaseModel):
    """Who may approve a runbook's gates, how many of them, and what happens when nobody answers."""

    model_config = ConfigDict(extra="forbid")

    approvers: list[str] = Field(default_factory=list, description="users allowed to approve")
    groups: dict[str, list[str]] = Field(
        default_factory=dict, description="named groups of approvers (resolved from the catalog's groups file)"
    )
    required_approvals: int = Field(1, ge=0, description="distinct approvals needed; 0 means no gate")
    required_groups: list[str] = Field(
        default_factory=list, description="each of these groups must contribute at least one approval"
    )
    allow_self_approval: bool = False
    allow_ui_approval: bool = True
    timeout: Duration = timedelta(hours=24)
    on_timeout: Literal["reject", "abort", "escalate"] = "reject"
    escalate_to: list[str] = Field(default_factory=list, description="approvers added when a gate escalates")
    reminder_interval: Duration | None = timedelta(hours=1)

    @model_validator(mode="after")
    def _consistent(self) -> "ApprovalPolicy":
        unknown = [g for g in self.required_groups if g not in self.groups]
        if unknown:
            raise ValueError(f"required_groups names undefined groups: {', '.join(unknown)}")
        if self.required_approvals < len(self.required_groups):
            raise ValueError("required_approvals must be at least the number of required_groups")
        if self.on_timeout == "escalate" and not self.escalate_to:
            raise ValueError("on_timeout: escalate needs escalate_to")
        return self

    def eligible(self, extra: list[str] | None = None, *, requested_by: str | None = None) -> set[str]:
        """Who may approve; without the requester when self-approval is off."""
        users = set(self.approvers) | set(extra or [])
        for members in self.groups.values():
            users |= set(members)
        if requested_by and not self.allow_self_approval:
            users.discard(requested_by)
        return users

    def groups_of(self, user: str) -> list[str]:
        return sorted(name for name, members in self.groups.items() if user in members)


GateDecision = Literal["pending", "approved", "rejected", "timed_out", "aborted"]


class Approval(BaseModel):
    approver: str
    at: datetime
    reason: str = ""
    via: Literal["update", "signal"] = "update"


class ApproveInput(BaseModel):
    gate_id: str = Field(description="the gate being approved; one of the run's open gates")
    approver: str
    reason: str = ""
    binding: str | None = Field(None, description="what the approver saw, e.g. a plan hash; must match the gate's")


class RejectInput(BaseModel):
    gate_id: str
    approver: str
    reason: str = Field(min_length=1)


class AbortInput(BaseModel):
    requested_by: str
    reason: str = Field(min_length=1)


class RefusedAttempt(BaseModel):
    at: datetime
    gate_id: str
    who: str
    action: Literal["approve", "reject"]
    via: Literal["update", "signal"]
    reason: str


class GateView(BaseModel):
    """An open or closed gate as people see it (query, UI details, notifications)."""

    gate_id: str
    title: str
    summary: str = ""
    binding: str | None = None
    opened_at: datetime
    deadline: datetime
    eligible: list[str] = Field(default_factory=list)
    required_approvals: int = 1
    required_groups: list[str] = Field(default_factory=list)
    approvals: list[Approval] = Field(default_factory=list)
    decision: GateDecision = "pending"
    decided_by: str | None = None
    decided_at: datetime | None = None
    reason: str = ""
    escalated: bool = False

    @property
    def open(self) -> bool:
        return self.decision == "pending"


class GateOutcome(BaseModel):
    gate_id: str
    decision: Literal["approved", "rejected", "timed_out", "aborted"]
    approvals: list[Approval] = Field(default_factory=list)
    decided_by: str | None = None
    reason: str = ""

    @property
    def approved(self) -> bool:
        return self.decision == "approved"


def check_approval(
    policy: ApprovalPolicy,
    gate: GateView | None,
    *,
    gate_id: str,
    who: str,
    requested_by: str,
    action: Literal["approve", "reject"],
    via: Literal["update", "signal"],
    binding: str | None = None,
) -> str | None:
    """Return why ``who`` may not approve/reject ``gate_id`` now, or None when they may."""
    if gate is None or not gate.open:
        return "no approval is pending" if gate is None else f"gate {gate.gate_id} is already {gate.decision}"
    if gate_id != gate.gate_id:
        return f"stale gate: {gate_id!r} is not the open gate ({gate.gate_id!r})"
    if not who:
        return "the approver's identity is missing"
    if via == "signal" and not policy.allow_ui_approval:
        return "this runbook does not accept approvals from the web UI"
    if who == requested_by and not policy.allow_self_approval:
        return f"{who} requested this run and cannot approve it (self-approval is off)"
    if who not in gate.eligible:
        return f"{who} is not an approver for this runbook"
    if action == "approve":
        if any(a.approver == who for a in gate.approvals):
            return f"{who} has already approved this gate"
        if gate.binding is not None and binding != gate.binding:
            if not binding:
                return (f"this gate approves {gate.binding}: say so with --expect {gate.binding} "
                        f'(in a UI signal, "binding": "{gate.binding}")')
            return f"this gate approves {gate.binding}, not {binding}"
    return None


def approvals_satisfied(policy: ApprovalPolicy, gate: GateView) -> bool:
    approvers = {a.approver for a in gate.approvals}
    if len(approvers) < gate.required_approvals:
        return False
    for group in gate.required_groups:
        if not approvers & set(policy.groups.get(group, [])):
            return False
    return True
