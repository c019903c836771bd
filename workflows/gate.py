"""An approval gate as an object: it owns its view, its policy, its deadline and its reminders, and closes itself.

A run may hold several open gates at once (a promote-now request during a bake and an inconclusive bake tick, say).
Each gate has its own id; approve/reject requests address a gate by that id, and a gate's waiter only ever closes
its own gate. ``GateRegistry`` is the run's book of gates: the open ones by id, the closed ones in order.

The rules of who may approve are the pure function ``core.approval.check_approval``; this module adds time (the
deadline, reminders, escalation) and the life cycle (open -> decided -> retired).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import TYPE_CHECKING, Callable

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from core.approval import (
        AbortInput,
        Approval,
        ApprovalAction,
        ApprovalPolicy,
        ApprovalVia,
        GateDecision,
        GateOutcome,
        GateView,
        approvals_satisfied,
        check_approval,
    )
    from core.duration import format_duration

if TYPE_CHECKING:
    from workflows.base import RunbookWorkflow


class GateRegistry:
    """The open gates of a run by id, and the closed ones oldest first."""

    def __init__(self, on_change: Callable[[], None]) -> None:
        self.open: dict[str, ApprovalGate] = {}
        self.closed: list[GateView] = []
        self._seq = 0
        self._on_change = on_change

    def next_id(self, name: str) -> str:
        self._seq += 1
        return f"{name}-{self._seq}"

    def add(self, gate: "ApprovalGate") -> None:
        self.open[gate.id] = gate
        self._on_change()

    def retire(self, gate: "ApprovalGate") -> None:
        if self.open.pop(gate.id, None) is not None:
            self.closed.append(gate.view)
            self._on_change()

    def views(self) -> list[GateView]:
        return [g.view for g in self.open.values()]

    def refusal(self, gate_id: str) -> str | None:
        """Why ``gate_id`` cannot be decided now (unknown, closed), or None when it is open."""
        if gate_id in self.open:
            return None
        closed = next((g for g in reversed(self.closed) if g.gate_id == gate_id), None)
        if closed is not None:
            return f"gate {gate_id} is already {closed.decision.replace('_', ' ')}"
        if not self.open:
            return "no approval is pending"
        return f"stale gate: {gate_id!r} is not an open gate (open: {', '.join(self.open)})"

    def restore(self, closed: list[GateView], seq: int) -> None:
        """After continue-as-new: the closed gates and the id sequence carry over."""
        self.closed = list(closed)
        self._seq = seq

    @property
    def seq(self) -> int:
        return self._seq


class ApprovalGate:
    """One decision a person must take. Open it with ``RunbookWorkflow.open_gate`` and ``await gate.wait()``."""

    def __init__(self, run: "RunbookWorkflow", registry: GateRegistry, view: GateView, policy: ApprovalPolicy,
                 fields: dict[str, str] | None = None) -> None:
        self.view = view
        self.policy = policy
        self.fields = fields
        self._run = run
        self._registry = registry

    @property
    def id(self) -> str:
        return self.view.gate_id

    @property
    def open(self) -> bool:
        return self.view.open

    # ----------------------------------------------------------------- decisions (called by the run's handlers)
    def refusal(self, who: str, action: ApprovalAction, via: ApprovalVia, binding: str | None = None,
                groups: list[str] | tuple[str, ...] = (), reason: str | None = None) -> str | None:
        """Why the person ``who`` (with the identity provider's ``groups``) may not decide this gate now."""
        return check_approval(
            self.policy,
            self.view,
            gate_id=self.id,
            who=who,
            requested_by=self._run.meta.requested_by,
            action=action,
            via=via,
            binding=binding,
            groups=groups,
            reason=reason,
        )

    def approve(self, approval: Approval) -> GateView:
        self.view.approvals.append(approval)
        if approvals_satisfied(self.policy, self.view):
            self.close("approved", approval.approver, approval.reason)
        return self.view

    def reject(self, who: str, reason: str) -> GateView:
        self.close("rejected", who, reason)
        return self.view

    def close(self, decision: GateDecision, by: str | None, reason: str) -> bool:
        """Decide the gate; a gate already decided stays as it was (returns False)."""
        if not self.open:
            return False
        self.view.decision = decision
        self.view.decided_by = by
        self.view.decided_at = workflow.now()
        self.view.reason = reason
        if by is not None or decision != "approved":  # a policy needing no approval is no wait
            self._run.metrics.gate_closed(decision, self.view.decided_at - self.view.opened_at)
        return True

    def outcome(self) -> GateOutcome:
        assert not self.open
        return GateOutcome(
            gate_id=self.id,
            decision=self.view.decision,
            approvals=list(self.view.approvals),
            decided_by=self.view.decided_by,
            reason=self.view.reason,
        )

    # ----------------------------------------------------------------- waiting
    async def wait(self) -> GateOutcome:
        """Wait until this gate is decided, times out (per policy) or the run is aborted; retire it; say so."""
        run, gate, policy = self._run, self.view, self.policy
        try:
            await run.notify("approval_needed", gate.title, gate.summary, gate=gate, fields=self.fields, severity="warning")
            reminders_sent = 0
            while self.open and not run.aborting:
                wake = gate.deadline
                if policy.reminder_interval:  # reminders at fixed offsets from the opening, not drifting
                    wake = min(wake, gate.opened_at + policy.reminder_interval * (reminders_sent + 1))
                try:
                    what = "deadline" if wake == gate.deadline else f"reminder {reminders_sent + 1}"
                    await workflow.wait_condition(lambda: not self.open or run.aborting,
                                                  timeout=max(wake - workflow.now(), timedelta(0)),
                                                  timeout_summary=f"approval {gate.gate_id}: {what} at {wake:%H:%M:%S} UTC")
                except asyncio.TimeoutError:
                    if not self.open:
                        break
                    if workflow.now() < gate.deadline:
                        reminders_sent += 1
                        await run.notify("approval_reminder", f"Still waiting: {gate.title}", gate.summary, gate=gate)
                    elif policy.on_timeout == "escalate" and not gate.escalated:
                        run.metrics.gate_timed_out("escalate")
                        await self._escalate()
                    elif policy.on_timeout == "abort":  # the run stops and compensates, as `runbook abort` does
                        run.metrics.gate_timed_out("abort")
                        why = f"no decision on gate {self.id} within {format_duration(policy.timeout)} (on_timeout: abort)"
                        self.close("aborted", "policy", why)
                        run.request_abort(AbortInput(requested_by="policy", reason=why))
                    else:
                        run.metrics.gate_timed_out("reject")
                        self.close("timed_out", None, f"no decision within {format_duration(policy.timeout)}")
            if self.open:  # the run is aborting
                req = run.abort_request
                self.close("aborted", req.requested_by if req else "runbook", req.reason if req else "run aborted")
        except asyncio.CancelledError:  # the workflow was cancelled while waiting: the gate is closed with it
            self.close("aborted", "temporal", "the workflow was cancelled")
            self._registry.retire(self)
            raise
        self._registry.retire(self)
        await run.notify(
            "approval_decided",
            f"{gate.title}: {gate.decision.replace('_', ' ')}",
            gate.reason,
            gate=gate,
            fields={"decided by": gate.decided_by or "policy"},
        )
        return self.outcome()

    async def _escalate(self) -> None:
        gate, policy = self.view, self.policy
        gate.escalated = True
        self._run.metrics.gate_escalated()
        gate.eligible = sorted(policy.eligible(policy.escalate_to, requested_by=self._run.meta.requested_by))
        gate.deadline = workflow.now() + policy.timeout
        self.policy = policy.model_copy(update={"approvers": sorted(set(policy.approvers) | set(policy.escalate_to))})
        # pages (the stock routing table sends an escalation to PagerDuty, one alert per gate, resolved when the
        # gate closes) and refreshes the Slack request with the widened approvers and the new deadline
        waited = format_duration(policy.timeout)
        await self._run.notify(
            "approval_escalated", f"Escalated: {gate.title}",
            f"no decision within {waited}; now also for {', '.join(policy.escalate_to)}, until {gate.deadline:%Y-%m-%d %H:%M} UTC",
            gate=gate, severity="critical", fields={"escalated to": ", ".join(policy.escalate_to), "gate": gate.gate_id},
        )
