"""The building block every runbook workflow stands on.

``RunbookWorkflow`` gives a runbook, by inheritance:
- the approval gate: ``approve``/``reject`` Updates whose validators enforce the policy, the same as
  ``approve_signal``/``reject_signal`` for the web UI (checked in the handler, refusals recorded), timeouts per
  policy (reject, abort, or escalate once), and reminders;
- steering: ``abort`` (Update and Signal) and ``incident_resolved`` (Signal, from the PagerDuty gateway);
- the ``status`` query, the UI's current details and the Runbook* search attributes kept up to date;
- notifications that never fail the run.

A subclass defines ``@workflow.init __init__(self, input)`` calling ``super().__init__(input.meta)``, its
``@workflow.run``, and may override ``status_details()`` to add its own state to the status query.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.notify import NotificationActivities
    from core import errors
    from core.approval import (
        AbortInput,
        Approval,
        ApprovalPolicy,
        ApproveInput,
        GateOutcome,
        GateView,
        RefusedAttempt,
        RejectInput,
        approvals_satisfied,
        check_approval,
    )
    from core.duration import format_duration
    from core.events import EventKind, RunbookEvent
    from core.runbook import ActionRecord, RunbookMeta, RunbookStatus, RunStatus, StepRecord
    from pydantic import BaseModel
    from workflows import search_attributes as sa

NOTIFY_RETRY = RetryPolicy(initial_interval=timedelta(seconds=2), backoff_coefficient=2, maximum_attempts=3)
# The default for activities that change infrastructure: a few quick retries of transient failures, none of the
# failures a person must fix (core.errors.NON_RETRYABLE).
ACTIVITY_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    backoff_coefficient=2,
    maximum_interval=timedelta(minutes=1),
    maximum_attempts=5,
    non_retryable_error_types=errors.NON_RETRYABLE,
)


class IncidentResolvedInput(BaseModel):
    incident_id: str
    resolved_by: str = "pagerduty"


class RunbookWorkflow:
    def __init__(self, meta: RunbookMeta) -> None:
        self.meta = meta
        self._status: RunStatus = "Running"
        self._stage = "starting"
        self._steps: list[StepRecord] = []
        self._gate: GateView | None = None
        self._gate_policy: ApprovalPolicy = meta.approval
        self._closed_gates: list[GateView] = []
        self._gate_seq = 0
        self._refused: list[RefusedAttempt] = []
        self._actions: list[ActionRecord] = []
        self._notify_refs: dict[str, str] = {}
        self._notification_failures: list[str] = []
        self.abort_request: AbortInput | None = None
        self.incident_resolved_at: str | None = None

    # ----------------------------------------------------------------- queries
    @workflow.query
    def status(self) -> RunbookStatus:
        return RunbookStatus(
            workflow_id=workflow.info().workflow_id,
            runbook=self.meta.runbook,
            target=self.meta.target,
            environment=self.meta.environment,
            requested_by=self.meta.requested_by,
            status=self._status,
            stage=self._stage,
            steps=list(self._steps),
            gate=self._gate,
            gates=list(self._closed_gates),
            refused=list(self._refused),
            actions=list(self._actions),
            notification_failures=list(self._notification_failures),
            details=self.status_details(),
        )

    def status_details(self) -> dict[str, Any]:
        """Runbook-specific state for the status query; override in a subclass."""
        return {}

    # ----------------------------------------------------------------- approval gate handlers
    def _refusal(self, who: str, gate_id: str, action: str, via: str, binding: str | None = None) -> str | None:
        return check_approval(
            self._gate_policy,
            self._gate,
            gate_id=gate_id,
            who=who,
            requested_by=self.meta.requested_by,
            action=action,  # type: ignore[arg-type]
            via=via,  # type: ignore[arg-type]
            binding=binding,
        )

    @workflow.update
    def approve(self, req: ApproveInput) -> GateView:
        refusal = self._refusal(req.approver, req.gate_id, "approve", "update", req.binding)
        if refusal:  # the state moved between the validator and the handler
            raise ApplicationError(refusal, type="ApprovalRefused", non_retryable=True)
        return self._apply_approval(req, "update")

    @approve.validator
    def _validate_approve(self, req: ApproveInput) -> None:
        refusal = self._refusal(req.approver, req.gate_id, "approve", "update", req.binding)
        if refusal:
            raise ValueError(refusal)

    @workflow.update
    def reject(self, req: RejectInput) -> GateView:
        refusal = self._refusal(req.approver, req.gate_id, "reject", "update")
        if refusal:
            raise ApplicationError(refusal, type="ApprovalRefused", non_retryable=True)
        return self._apply_rejection(req, "update")

    @reject.validator
    def _validate_reject(self, req: RejectInput) -> None:
        refusal = self._refusal(req.approver, req.gate_id, "reject", "update")
        if refusal:
            raise ValueError(refusal)

    @workflow.signal
    def approve_signal(self, req: ApproveInput) -> None:
        """Approval from the web UI ("Send a Signal"): signals have no validator, so the check is here."""
        refusal = self._refusal(req.approver, req.gate_id, "approve", "signal", req.binding)
        if refusal:
            self._record_refusal(req.gate_id, req.approver, "approve", refusal)
            return
        self._apply_approval(req, "signal")

    @workflow.signal
    def reject_signal(self, req: RejectInput) -> None:
        refusal = self._refusal(req.approver, req.gate_id, "reject", "signal")
        if refusal:
            self._record_refusal(req.gate_id, req.approver, "reject", refusal)
            return
        self._apply_rejection(req, "signal")

    def _record_refusal(self, gate_id: str, who: str, action: str, reason: str) -> None:
        self._refused.append(
            RefusedAttempt(at=workflow.now(), gate_id=gate_id, who=who, action=action, via="signal", reason=reason)  # type: ignore[arg-type]
        )
        workflow.logger.warning("refused %s of %s by %s: %s", action, gate_id, who or "?", reason)
        self._publish_details()

    def _apply_approval(self, req: ApproveInput, via: str) -> GateView:
        gate = self._gate
        assert gate is not None
        gate.approvals.append(Approval(approver=req.approver, at=workflow.now(), reason=req.reason, via=via))  # type: ignore[arg-type]
        if approvals_satisfied(self._gate_policy, gate):
            self._close_gate("approved", req.approver, req.reason)
        self._publish_details()
        return gate

    def _apply_rejection(self, req: RejectInput, via: str) -> GateView:
        gate = self._gate
        assert gate is not None
        self._close_gate("rejected", req.approver, req.reason)
        return gate

    def _close_gate(self, decision: str, by: str | None, reason: str) -> None:
        gate = self._gate
        assert gate is not None
        gate.decision = decision  # type: ignore[assignment]
        gate.decided_by = by
        gate.decided_at = workflow.now()
        gate.reason = reason

    # ----------------------------------------------------------------- steering
    @workflow.update
    def abort(self, req: AbortInput) -> str:
        self._request_abort(req)
        return f"abort requested by {req.requested_by}: {req.reason}"

    @abort.validator
    def _validate_abort(self, req: AbortInput) -> None:
        if self.abort_request is not None:
            raise ValueError(f"already aborting (requested by {self.abort_request.requested_by})")

    @workflow.signal
    def abort_signal(self, req: AbortInput) -> None:
        if self.abort_request is None:
            self._request_abort(req)

    def _request_abort(self, req: AbortInput) -> None:
        self.abort_request = req
        self.record_action("abort", req.requested_by, req.reason)

    @workflow.signal
    def incident_resolved(self, req: IncidentResolvedInput) -> None:
        """The PagerDuty incident that started this run was resolved; the runbook decides what that means."""
        self.incident_resolved_at = workflow.now().isoformat()
        self.record_action("incident_resolved", req.resolved_by, f"incident {req.incident_id} resolved")

    def record_action(self, action: str, by: str, reason: str = "", *, accepted: bool = True, note: str = "") -> None:
        self._actions.append(
            ActionRecord(at=workflow.now(), action=action, by=by, reason=reason, accepted=accepted, note=note)
        )
        self._publish_details()

    @property
    def aborting(self) -> bool:
        return self.abort_request is not None

    # ----------------------------------------------------------------- the gate itself
    async def request_approval(
        self,
        name: str,
        title: str,
        summary: str = "",
        *,
        binding: str | None = None,
        policy: ApprovalPolicy | None = None,
        fields: dict[str, str] | None = None,
    ) -> GateOutcome:
        """Open a gate and wait until it is decided, times out (per policy) or the run is aborted."""
        policy = policy or self.meta.approval
        self._gate_seq += 1
        gate_id = f"{name}-{self._gate_seq}"
        if policy.required_approvals == 0:
            return GateOutcome(gate_id=gate_id, decision="approved", reason="no approval required by policy")
        now = workflow.now()
        gate = GateView(
            gate_id=gate_id,
            title=title,
            summary=summary,
            binding=binding,
            opened_at=now,
            deadline=now + policy.timeout,
            eligible=sorted(policy.eligible(requested_by=self.meta.requested_by)),
            required_approvals=policy.required_approvals,
            required_groups=list(policy.required_groups),
        )
        self._gate, self._gate_policy = gate, policy
        previous_status = self._status
        self.set_status("WaitingForApproval", f"waiting for approval: {title}")
        await self.notify("approval_needed", title, summary, gate=gate, fields=fields, severity="warning")
        reminders_sent = 0
        while gate.open and not self.aborting:
            wake = gate.deadline
            if policy.reminder_interval:  # reminders at fixed offsets from the opening, not drifting
                next_reminder = gate.opened_at + policy.reminder_interval * (reminders_sent + 1)
                wake = min(wake, next_reminder)
            wait = max(wake - workflow.now(), timedelta(0))
            try:
                await workflow.wait_condition(lambda: not gate.open or self.aborting, timeout=wait)
            except asyncio.TimeoutError:
                if workflow.now() < gate.deadline:
                    reminders_sent += 1
                    await self.notify("approval_reminder", f"Still waiting: {title}", summary, gate=gate)
                elif policy.on_timeout == "escalate" and not gate.escalated:
                    gate.escalated = True
                    gate.eligible = sorted(policy.eligible(policy.escalate_to, requested_by=self.meta.requested_by))
                    gate.deadline = workflow.now() + policy.timeout
                    self._gate_policy = policy.model_copy(
                        update={"approvers": sorted(set(policy.approvers) | set(policy.escalate_to))}
                    )
                    await self.notify(
                        "approval_needed", f"Escalated: {title}", summary, gate=gate, severity="error"
                    )
                else:
                    self._close_gate("timed_out", None, f"no decision within {format_duration(policy.timeout)}")
        if gate.open:  # aborted while waiting
            assert self.abort_request is not None
            self._close_gate("aborted", self.abort_request.requested_by, self.abort_request.reason)
        self._gate = None
        self._closed_gates.append(gate)
        self.set_status(previous_status, self._stage)  # no longer waiting, whatever the decision
        await self.notify(
            "approval_decided",
            f"{title}: {gate.decision.replace('_', ' ')}",
            gate.reason,
            gate=gate,
            fields={"decided by": gate.decided_by or "policy"},
        )
        return GateOutcome(
            gate_id=gate.gate_id,
            decision=gate.decision,  # type: ignore[arg-type]
            approvals=list(gate.approvals),
            decided_by=gate.decided_by,
            reason=gate.reason,
        )

    # ----------------------------------------------------------------- status, steps, search attributes
    def set_status(self, status: RunStatus, stage: str | None = None) -> None:
        changed = status != self._status
        self._status = status
        if stage is not None:
            self._stage = stage
        if changed or not workflow.info().search_attributes:
            workflow.upsert_search_attributes([sa.RUNBOOK_STATUS.value_set(status)])
        self._publish_details()

    def begin(self) -> None:
        """Mark the run as started; ensures the search attributes exist even if the starter set none."""
        meta = self.meta
        workflow.upsert_search_attributes(
            [
                sa.RUNBOOK_NAME.value_set(meta.runbook),
                sa.RUNBOOK_TARGET.value_set(meta.target),
                sa.RUNBOOK_ENVIRONMENT.value_set(meta.environment or "-"),
                sa.RUNBOOK_REQUESTED_BY.value_set(meta.requested_by),
                sa.RUNBOOK_STATUS.value_set(self._status),
            ]
        )
        self._publish_details()

    def step_started(self, name: str, detail: str = "") -> StepRecord:
        record = StepRecord(name=name, started_at=workflow.now(), detail=detail)
        self._steps.append(record)
        self._stage = name
        self._publish_details()
        return record

    async def step_done(self, record: StepRecord, detail: str = "", *, notify: bool = True) -> None:
        record.status = "done"
        record.finished_at = workflow.now()
        if detail:
            record.detail = detail
        self._publish_details()
        if notify:
            await self.notify("step_done", f"{record.name}: done", record.detail)

    def step_failed(self, record: StepRecord, detail: str, status: str = "failed") -> None:
        record.status = status  # type: ignore[assignment]
        record.finished_at = workflow.now()
        record.detail = detail
        self._publish_details()

    def _publish_details(self) -> None:
        lines = [f"**{self.meta.runbook}** on `{self.meta.target}`: **{self._status}**, {self._stage}"]
        gate = self._gate
        if gate is not None:
            who = ", ".join(gate.eligible) or "nobody"
            lines.append(
                f"Waiting for approval of *{gate.title}* (gate `{gate.gate_id}`) by {who} "
                f"since {gate.opened_at:%Y-%m-%d %H:%M:%S} UTC, deadline {gate.deadline:%Y-%m-%d %H:%M:%S} UTC; "
                f"{len(gate.approvals)}/{gate.required_approvals} approvals"
            )
            if gate.binding:
                lines.append(f"Approves: `{gate.binding}`")
        for refused in self._refused[-3:]:
            lines.append(f"Refused {refused.action} by {refused.who or '?'} ({refused.via}): {refused.reason}")
        for step in self._steps[-8:]:
            lines.append(f"- {step.status}: {step.name} {step.detail}".rstrip())
        workflow.set_current_details("\n\n".join(lines))

    # ----------------------------------------------------------------- notifications
    async def notify(
        self,
        kind: EventKind,
        title: str,
        text: str = "",
        *,
        fields: dict[str, str] | None = None,
        severity: str = "info",
        gate: GateView | None = None,
    ) -> None:
        info = workflow.info()
        event = RunbookEvent(
            kind=kind,
            workflow_id=info.workflow_id,
            run_id=info.run_id,
            runbook=self.meta.runbook,
            target=self.meta.target,
            title=title,
            text=text,
            fields=fields or {},
            severity=severity,  # type: ignore[arg-type]
            gate=gate,
            incident_id=self.meta.incident_id,
            slack_channel=self.meta.slack_channel,
            ui_url=self.meta.ui_url,
            refs=dict(self._notify_refs),
        )
        try:
            result = await workflow.execute_activity_method(
                NotificationActivities.notify,
                event,
                start_to_close_timeout=timedelta(seconds=60),
                retry_policy=NOTIFY_RETRY,
            )
        except ActivityError as err:
            cause = err.cause or err
            self._notification_failures.append(f"{kind}: {cause}")
            return
        self._notify_refs.update(result.refs)
        self._notification_failures.extend(f"{kind}: {f}" for f in result.failures)

    async def finish(self, status: RunStatus, summary: str, *, severity: str = "info") -> None:
        """Record the final status, send the final notification and let running handlers complete."""
        self.set_status(status, summary)
        kind: EventKind = "finished" if status in ("Succeeded", "RolledBack", "Aborted") else "failed"
        await self.notify(kind, f"{self.meta.runbook} {status.lower()}", summary, severity=severity)
        await workflow.wait_condition(workflow.all_handlers_finished)
