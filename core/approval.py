"""The approval gate's data: the policy a runbook carries, the requests people send, and what the gate decides.

The rules themselves (``check_approval``) are pure functions, so the workflow's update validators, its signal
handlers and the unit tests all use the same code.
"""

from __future__ import annotations

import shlex
from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from core.duration import Duration
from core.identity import People

# How an approval reached the run: cli / slack / api by Update, ui by Signal ("update" and "signal" are the names
# recorded before approvals were tied to identities; they still load).
ApprovalVia = Literal["cli", "slack", "ui", "api", "update", "signal"]
ApprovalAction = Literal["approve", "reject"]


class ApprovalPolicy(BaseModel):
    """Who may approve a runbook's gates, how many of them, and what happens when nobody answers."""

    model_config = ConfigDict(extra="forbid")

    approvers: list[str] = Field(default_factory=list, description="users allowed to approve")
    groups: dict[str, list[str]] = Field(
        default_factory=dict, description="approver groups: their named people (resolved from the catalog's groups file)"
    )
    idp_groups: dict[str, list[str]] = Field(
        default_factory=dict, description="approver group -> identity-provider groups whose members belong to it"
    )
    people: People = Field(default_factory=People, description="aliases of people, and who may vouch for them")
    required_approvals: int = Field(1, ge=0, description="distinct approvals needed; 0 means no gate")
    required_groups: list[str] = Field(
        default_factory=list, description="each of these groups must contribute at least one approval"
    )
    allow_self_approval: bool = False
    allow_ui_approval: bool = True
    allow_unauthenticated_ui_approval: bool = Field(
        False, description="accept a web UI approval that carries no ID token (recorded as unverified)"
    )
    timeout: Duration = timedelta(hours=24)
    on_timeout: Literal["reject", "abort", "escalate"] = "reject"
    escalate_to: list[str] = Field(default_factory=list, description="approvers added when a gate escalates")
    reminder_interval: Duration | None = timedelta(hours=1)
    require_reason: bool = Field(False, description="an approval must say why (a break-glass approval does)")

    @model_validator(mode="after")
    def _consistent(self) -> "ApprovalPolicy":
        unknown = [g for g in self.required_groups if g not in self.groups and g not in self.idp_groups]
        if unknown:
            raise ValueError(f"required_groups names undefined groups: {', '.join(unknown)}")
        if self.required_approvals < len(self.required_groups):
            raise ValueError("required_approvals must be at least the number of required_groups")
        if self.on_timeout == "escalate" and not self.escalate_to:
            raise ValueError("on_timeout: escalate needs escalate_to")
        return self

    def eligible(self, extra: list[str] | None = None, *, requested_by: str | None = None) -> set[str]:
        """The named people who may approve; without the requester when self-approval is off. (Members of the
        identity-provider groups in ``eligible_idp_groups`` may approve too.)"""
        users = {self.people.person(u) for u in [*self.approvers, *(extra or [])]}
        for members in self.groups.values():
            users |= {self.people.person(m) for m in members}
        if requested_by and not self.allow_self_approval:
            users.discard(self.people.person(requested_by))
        return users

    def eligible_idp_groups(self) -> list[str]:
        return sorted({g for groups in self.idp_groups.values() for g in groups})

    def in_group(self, group: str, person: str, idp_groups: list[str] | tuple[str, ...] = ()) -> bool:
        """Whether ``person`` (with the identity provider's ``idp_groups``) belongs to approver group ``group``."""
        named = {self.people.person(m) for m in self.groups.get(group, [])}
        return person in named or bool(set(idp_groups) & set(self.idp_groups.get(group, [])))

    def admits(self, person: str, idp_groups: list[str] | tuple[str, ...] = ()) -> bool:
        """Whether ``person`` may approve at all (self-approval aside)."""
        if person in {self.people.person(u) for u in self.approvers}:
            return True
        return any(self.in_group(g, person, idp_groups) for g in {*self.groups, *self.idp_groups})

    def groups_of(self, user: str, idp_groups: list[str] | tuple[str, ...] = ()) -> list[str]:
        return sorted(name for name in {*self.groups, *self.idp_groups} if self.in_group(name, user, idp_groups))


GateDecision = Literal["pending", "approved", "rejected", "timed_out", "aborted"]


class Approval(BaseModel):
    """One approval as the audit trail keeps it: the person, and what vouched for them (never the raw token)."""

    approver: str = Field(description="the person (every alias of one person is one approver)")
    at: datetime
    reason: str = ""
    via: ApprovalVia = "cli"
    subject: str = Field("", description="the token's sub")
    name: str = Field("", description="the token's user name (for a service identity: the service)")
    groups: list[str] = Field(default_factory=list, description="the identity provider's groups, from the token")
    issuer: str = ""
    token_id: str = Field("", description="the token's jti or digest; a token counts once per run")
    on_behalf_of: str | None = Field(None, description="the alias a service identity vouched for (slack:U...)")
    verified: bool = Field(False, description="False: a typed name nobody vouched for (a worker without OIDC)")


def audit_line(a: Approval) -> str:
    """One approval for people: who (person, token name, subject, groups, issuer, token id), how, when, why."""
    if not a.verified:
        who = f"{a.approver} (UNVERIFIED: typed name, no token checked)"
    else:
        vouched = f" for {a.on_behalf_of}" if a.on_behalf_of else ""
        groups = ", ".join(a.groups) or "none"
        who = (f"{a.approver} (token of {a.name}{vouched}; sub {a.subject}; groups {groups}; issuer {a.issuer}; "
               f"token {a.token_id})")
    reason = f": {a.reason}" if a.reason else ""
    return f"approved by {who} via {a.via} at {a.at:%Y-%m-%d %H:%M:%S} UTC{reason}"


class ApproveInput(BaseModel):
    gate_id: str = Field(description="the gate being approved; one of the run's open gates")
    approver: str = Field("", description="a typed name: counts only on a worker without OIDC (unverified)")
    reason: str = ""
    binding: str | None = Field(None, description="what the approver saw, e.g. a plan hash; must match the gate's")
    token: str | None = Field(None, repr=False, description="an OpenID Connect ID token of the approver")
    on_behalf_of: str | None = Field(None, description="from a service identity: the alias it vouches for (slack:U...)")


class RejectInput(BaseModel):
    gate_id: str
    approver: str = ""
    reason: str = Field(min_length=1)
    token: str | None = Field(None, repr=False)
    on_behalf_of: str | None = None


class AbortInput(BaseModel):
    requested_by: str
    reason: str = Field(min_length=1)


class RefusedAttempt(BaseModel):
    at: datetime
    gate_id: str
    who: str
    action: ApprovalAction
    via: ApprovalVia
    reason: str
    subject: str = ""
    token_id: str = ""


class GateView(BaseModel):
    """An open or closed gate as people see it (query, UI details, notifications)."""

    gate_id: str
    title: str
    summary: str = ""
    binding: str | None = None
    opened_at: datetime
    deadline: datetime
    eligible: list[str] = Field(default_factory=list)
    eligible_groups: list[str] = Field(default_factory=list, description="identity-provider groups that may approve")
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

    def approve_hint(self, workflow_id: str, several: bool = False) -> str:
        """The approve command for this gate, shell-quoted so that it can be pasted into a shell as it is (the
        approver is whoever is logged in: `runbook login`); ``--gate`` when the run has several open gates."""
        words = ["runbook", "approve", workflow_id]
        if several:
            words += ["--gate", self.gate_id]
        if self.binding:
            words += ["--expect", self.binding]
        return shlex.join(words)


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
    action: ApprovalAction,
    via: ApprovalVia,
    binding: str | None = None,
    groups: list[str] | tuple[str, ...] = (),
    reason: str | None = None,
) -> str | None:
    """Return why the person ``who`` (with the identity provider's ``groups``) may not approve/reject ``gate_id``
    now, or None when they may. The requester is compared as a person too (every alias of one person). ``reason``
    is the approval's reason when it is known (None: not judged here)."""
    if gate is None or not gate.open:
        return "no approval is pending" if gate is None else f"gate {gate.gate_id} is already {gate.decision}"
    if gate_id != gate.gate_id:
        return f"stale gate: {gate_id!r} is not the open gate ({gate.gate_id!r})"
    if not who:
        return "the approver's identity is missing"
    if via in ("signal", "ui") and not policy.allow_ui_approval:
        return "this runbook does not accept approvals from the web UI"
    if who == policy.people.person(requested_by) and not policy.allow_self_approval:
        return f"{who} requested this run and cannot approve it (self-approval is off)"
    if not policy.admits(who, groups) and who not in gate.eligible:
        return f"{who} is not an approver for this runbook"
    if action == "approve":
        if policy.require_reason and reason is not None and not reason.strip():
            return "this gate needs a reason: say why (--reason)"
        if any(a.approver == who for a in gate.approvals):
            return f"{who} has already approved this gate"
        if gate.binding is not None and binding != gate.binding:
            if not binding:
                return (f"this gate approves {gate.binding}: say so with --expect {shlex.quote(gate.binding)} "
                        f'(in a UI signal, "binding": "{gate.binding}")')
            return f"this gate approves {gate.binding}, not {binding}"
    return None


def approvals_satisfied(policy: ApprovalPolicy, gate: GateView) -> bool:
    """Enough distinct people, and each required group represented (by a named member or by the token's groups)."""
    approvers = {a.approver for a in gate.approvals}
    if len(approvers) < gate.required_approvals:
        return False
    for group in gate.required_groups:
        if not any(policy.in_group(group, a.approver, a.groups) for a in gate.approvals):
            return False
    return True
