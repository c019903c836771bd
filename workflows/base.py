"""The building block every runbook workflow stands on.

``RunbookWorkflow`` gives a runbook, by inheritance:
- approval gates (workflows/gate.py): ``open_gate``/``request_approval`` open a gate object that owns its deadline,
  reminders and escalation and closes itself; a run may hold several at once. ``approve``/``reject`` Updates whose
  validators enforce the policy, and ``approve_signal``/``reject_signal`` for the web UI (checked in the handler,
  refusals recorded), address a gate by its id;
- steering: ``abort`` (Update and Signal) and ``incident_resolved`` (Signal, from the PagerDuty gateway);
- one way to end (``conduct`` + ``conclude``): the procedure either returns its summary (Succeeded) or raises
  ``Stop``; a failed activity, an abort or a cancellation becomes a ``Stop`` too; the runbook's one compensation
  block runs once, shielded from cancellation; the run then COMPLETES with a result whose ``status`` is one of
  ``core.runbook.TERMINAL``, except ``Failed`` (the run could not make the infrastructure safe), which fails the
  workflow with ``ApplicationError(type=RunFailed)`` carrying the same result. Cancelling a run is an abort;
- abort at every step: ``check_abort`` between steps, ``interruptible`` for waits that an abort cuts short,
  ``change`` for a change that is finished before the abort is honoured;
- bounded history: ``continue_as_new_due`` and ``carry`` hand the audit trail and steering to a continuation;
- the ``status`` query, the UI's current details and the Runbook* search attributes kept up to date;
- notifications that never fail the run.

A subclass defines ``@workflow.init __init__(self, input)`` calling ``super().__init__(input.meta, input.carry)``,
its ``@workflow.run``, and may override ``status_details()`` to add its own state to the status query.
"""

from __future__ import annotations

import asyncio
import inspect
import shlex
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Awaitable, Callable, Literal, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError, ChildWorkflowError, FailureError

with workflow.unsafe.imports_passed_through():
    from activities.calendar import CalendarActivities
    from activities.notify import NotificationActivities
    from core import errors
    from core.approval import (
        AbortInput,
        Approval,
        ApprovalAction,
        ApprovalPolicy,
        ApprovalVia,
        ApproveInput,
        GateOutcome,
        GateView,
        RefusedAttempt,
        RejectInput,
        audit_line,
    )
    from core.calendar import Freeze, FreezeQuery, FreezeState
    from core.events import MAX_NOTIFIED_ACTIONS, EventKind, RunbookEvent
    from core.identity import (
        DEFAULT_GROUPS_CLAIM,
        DEFAULT_USERNAME_CLAIM,
        People,
        VerifiedIdentity,
        VerifyTokenInput,
        Via,
        approver_of,
        token_id,
        unverified_claims,
        unverified_identity,
    )
    from core.routing import route
    from core.runbook import (
        TERMINAL,
        ActionRecord,
        RunbookCarry,
        RunbookMeta,
        RunbookResult,
        RunbookStatus,
        RunStatus,
        StepRecord,
        StepStatus,
    )
    from workflows import search_attributes as sa
    from workflows.contract import IncidentResolvedInput, Runbook
    from workflows.gate import ApprovalGate, GateRegistry
    from workflows.metrics import RunbookMetrics

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

# Verifying an approver's ID token (a local activity: the JWKS is cached by the worker). A refusal is final; an
# unreachable identity provider is retried a little, then refused ("cannot read the identity provider's keys").
VERIFY_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_attempts=3,
                           non_retryable_error_types=["TokenRefused"])
MAX_LEEWAY_SECONDS = 300  # the validator's expiry pre-check allows the most clock skew a verifier may allow
# Change freeze windows (core.calendar): checked before each change. The patch that introduced the check
# (change-freeze-windows) is gone: every recorded history was re-recorded without its marker on 2026-12-02, and the
# product has had no release, so no run of the code before it can be open. A run waiting out a window reads the
# calendar again at least this often, so an edited calendar (a window shortened, extended or removed) reaches it.
CALENDAR_RECHECK = timedelta(minutes=15)
CALENDAR_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30),
                             maximum_attempts=5, non_retryable_error_types=errors.NON_RETRYABLE)

Severity = Literal["info", "warning", "error", "critical"]
R = TypeVar("R", bound=RunbookResult)

# The severity a run's final notification carries, by status: a page only when a person must act.
END_SEVERITY: dict[str, Severity] = {
    "Succeeded": "info",
    "RolledBack": "error",
    "Aborted": "warning",
    "Rejected": "warning",
    "Refused": "warning",
    "Held": "critical",
    "Failed": "critical",
}


@dataclass
class Ending:
    """How a run ends: a terminal status, a one-line summary, and what compensation did."""

    status: RunStatus
    summary: str
    severity: Severity | None = None
    compensated: list[str] = field(default_factory=list)
    not_undone: list[str] = field(default_factory=list)

    @property
    def final_status(self) -> RunStatus:
        return "Failed" if self.not_undone else self.status


class Stop(Exception):
    """Raised anywhere in a runbook's procedure to end the run; the runbook's compensation follows."""

    def __init__(self, status: RunStatus, summary: str, *, severity: Severity | None = None) -> None:
        super().__init__(summary)
        self.ending = Ending(status, summary, severity)


def cause_of(err: BaseException) -> str:
    """The message of an activity / child failure for people: our activity's own typed error where there is one
    (it names the object and what to do), else the innermost cause."""
    cause: BaseException | None = err
    while isinstance(cause, FailureError) and cause.cause is not None and not isinstance(cause, ApplicationError):
        cause = cause.cause
    return getattr(cause, "message", None) or str(cause)


def _root(err: BaseException) -> BaseException:
    cause = err
    while isinstance(cause, FailureError) and cause.cause is not None:
        cause = cause.cause
    return cause


async def until_done(task: "asyncio.Future[Any]", on_cancel: Callable[[], None] | None = None) -> bool:
    """Wait until ``task`` has finished, even if the workflow is cancelled meanwhile; True if it was. For a step
    that must run to its end whatever happens (a change under way, compensation, a drill's report).
    ``on_cancel`` is called when the cancellation arrives (e.g. to ask the task to stop at its next quiet point)."""
    cancelled = False
    while not task.done():
        try:
            await workflow.wait_condition(task.done)
        except asyncio.CancelledError:
            cancelled = True
            if on_cancel is not None:
                on_cancel()
    return cancelled


def error_type(err: BaseException) -> str | None:
    """The type of the first ``ApplicationError`` under the activity/child wrappers (one of core.errors, as our
    activities raise them); not the root, which is often the client library's own error (botocore's ClientError)
    chained under ours."""
    cause: BaseException | None = err
    while cause is not None:
        if isinstance(cause, ApplicationError):
            return cause.type
        cause = cause.cause if isinstance(cause, FailureError) else None
    return None


def gate_stop(outcome: GateOutcome, what: str) -> Stop:
    """The one mapping from a gate that did not approve to how the run ends."""
    if outcome.decision == "aborted":
        return Stop("Aborted", f"{what}: aborted by {outcome.decided_by or 'a person'}: {outcome.reason}")
    word = outcome.decision.replace("_", " ")
    by = f" by {outcome.decided_by}" if outcome.decided_by else ""
    return Stop("Rejected", f"{what}: {word}{by}: {outcome.reason}".rstrip(": "))


class RunbookWorkflow(Runbook):
    def __init__(self, meta: RunbookMeta, carry: RunbookCarry | None = None) -> None:
        self.meta = meta
        self.metrics = RunbookMetrics(meta.runbook, meta.target)
        self._status: RunStatus = "Running"
        self._status_before_gates: RunStatus | None = None
        self._stage = "starting"
        self._steps: list[StepRecord] = []
        self.gates = GateRegistry(self._gates_changed)
        self._refused: list[RefusedAttempt] = []
        self._used_tokens: list[str] = []
        self._actions: list[ActionRecord] = []
        self._notify_refs: dict[str, str] = {}
        self._notification_failures: list[str] = []
        self.abort_request: AbortInput | None = None
        self.incident_resolved_at: str | None = None
        self.continued = 0
        self.carried_state: dict[str, Any] = {}
        self.freeze: Freeze | None = None  # the change freeze the run waits out now
        self._glass: list[str] = []  # freeze occurrences a break-glass approval opened ("window@start")
        if carry is not None:
            self._steps = list(carry.steps)
            self.gates.restore(carry.gates, carry.gate_seq)
            self._refused = list(carry.refused)
            self._used_tokens = list(carry.used_tokens)
            self._actions = list(carry.actions)
            self._notify_refs = dict(carry.notify_refs)
            self._notification_failures = list(carry.notification_failures)
            self.abort_request = carry.abort_request
            self._status, self._stage = carry.status, carry.stage
            self.continued = carry.continued
            self.carried_state = dict(carry.state)
            self._glass = list(carry.break_glass)

    # ----------------------------------------------------------------- queries
    @workflow.query
    def status(self) -> RunbookStatus:
        open_gates = self.gates.views()
        return RunbookStatus(
            workflow_id=workflow.info().workflow_id,
            runbook=self.meta.runbook,
            target=self.meta.target,
            environment=self.meta.environment,
            requested_by=self.meta.requested_by,
            status=self._status,
            stage=self._stage,
            steps=list(self._steps),
            gate=open_gates[0] if open_gates else None,
            open_gates=open_gates,
            gates=list(self.gates.closed),
            refused=list(self._refused),
            actions=list(self._actions),
            notification_failures=list(self._notification_failures),
            details=self.status_details(),
            freeze=self.freeze,
            continued=self.continued,
            notify_refs=dict(self._notify_refs),
        )

    def status_details(self) -> dict[str, Any]:
        """Runbook-specific state for the status query; override in a subclass."""
        return {}

    # ----------------------------------------------------------------- approval handlers (address a gate by id)
    # The worker decides who approves, never the input: every approval carries an ID token (from a service identity
    # also ``on_behalf_of``, an alias it vouches for), which the worker's ``verify_id_token`` local activity checks at
    # the run's clock. A worker without OIDC registers a verifier that passes the typed name on, marked unverified.
    # The policy (core.approval.check_approval) then judges the verified PERSON and groups; a token counts once per
    # run. Validators pre-check with the token's unverified claims, so most refusals never reach the history;
    # refusals in the handlers (a bad token, a replay, a policy refusal) are recorded in ``refused``.
    def _refusal(self, gate_id: str, who: str, action: ApprovalAction, via: ApprovalVia, binding: str | None = None,
                 groups: list[str] | tuple[str, ...] = (), reason: str | None = None) -> str | None:
        refusal = self.gates.refusal(gate_id)
        if refusal is not None:
            return refusal
        return self.gates.open[gate_id].refusal(who, action, via, binding, groups, reason)

    @staticmethod
    def _via(req: ApproveInput | RejectInput, signal: bool) -> Via:
        if signal:
            return "ui"
        if req.on_behalf_of:
            return "slack" if req.on_behalf_of.startswith("slack:") else "api"
        return "cli"

    def _precheck(self, req: ApproveInput | RejectInput, action: ApprovalAction, via: Via) -> str | None:
        """The validator's cheap refusal, from what the request claims (nothing here is trusted: the handler
        verifies). With a token, its unverified claims: expiry at the run's clock, replay, and the policy for the
        standard user-name and groups claims when present."""
        binding = req.binding if isinstance(req, ApproveInput) else None
        refusal = self.gates.refusal(req.gate_id)
        if refusal is not None:
            return refusal
        gate = self.gates.open[req.gate_id]
        people = gate.policy.people
        if req.token:
            claims = unverified_claims(req.token)
            if token_id(req.token, claims) in self._used_tokens:
                return "token refused: replayed (this token was already used in this run)"
            exp = claims.get("exp")
            if isinstance(exp, (int, float)) and workflow.now().timestamp() > exp + MAX_LEEWAY_SECONDS:
                return "token refused: expired"
            name, groups = claims.get(DEFAULT_USERNAME_CLAIM), claims.get(DEFAULT_GROUPS_CLAIM)
            if isinstance(name, str) and people.is_service(name) and not req.on_behalf_of:
                return f"{name} is a service identity: it approves only on behalf of a person (on_behalf_of)"
            if req.on_behalf_of:
                if isinstance(name, str) and name and not people.may_vouch(name, req.on_behalf_of):
                    return f"{name} may not vouch for {req.on_behalf_of}"
                return gate.refusal(people.person(req.on_behalf_of), action, via, binding, reason=req.reason)
            if not isinstance(name, str) or not name or not isinstance(groups, (list, type(None))):
                return None  # a provider with other claim names: the handler judges after verifying
            return gate.refusal(people.person(name), action, via, binding, [str(g) for g in groups or []], req.reason)
        typed = people.person(req.on_behalf_of) if req.on_behalf_of else people.person(req.approver)
        return gate.refusal(typed, action, via, binding, reason=req.reason)

    async def _identify(self, req: ApproveInput | RejectInput, via: Via) -> VerifiedIdentity | str:
        """The verified identity behind a request, or why there is none (one line)."""
        gate = self.gates.open.get(req.gate_id)
        if via == "ui" and not req.token and gate is not None and gate.policy.allow_unauthenticated_ui_approval:
            return unverified_identity(req.approver, via, workflow.now())  # the policy lets tokenless UI approvals in
        try:
            return await workflow.execute_local_activity(
                "verify_id_token",
                VerifyTokenInput(token=req.token or "", now=workflow.now(), via=via, claimed=req.approver),
                result_type=VerifiedIdentity,
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=VERIFY_RETRY,
            )
        except FailureError as err:  # an ActivityError, or (a local activity's) ApplicationError itself
            reason = cause_of(err)
            if via == "ui" and not req.token and "no ID token" in reason:
                reason = ("a web UI approval needs an ID token: paste the JSON of `runbook approve --print-signal "
                          f"{workflow.info().workflow_id}`")
            return reason

    async def _decide(self, req: ApproveInput | RejectInput, action: ApprovalAction, signal: bool) -> GateView | None:
        """Verify, apply the policy to the verified person, and approve/reject; a refusal is recorded and raised
        (Update) or only recorded (Signal)."""
        via = self._via(req, signal)
        binding = req.binding if isinstance(req, ApproveInput) else None
        refusal = self.gates.refusal(req.gate_id)
        if refusal is None and via == "ui" and not self.gates.open[req.gate_id].policy.allow_ui_approval:
            refusal = "this runbook does not accept approvals from the web UI"
        identity: VerifiedIdentity | None = None
        person, groups = req.approver, list[str]()
        if refusal is None:
            found = await self._identify(req, via)
            if isinstance(found, str):
                refusal = found
            else:
                identity = found
                person, groups, refusal = approver_of(identity, req.on_behalf_of, self._people(req.gate_id))
                if refusal is None and identity.token_id and identity.token_id in self._used_tokens:
                    refusal = f"token refused: replayed (token {identity.token_id} was already used in this run)"
                if refusal is None:  # the state may have moved while the token was verified
                    refusal = self._refusal(req.gate_id, person, action, via, binding, groups, req.reason)
        if refusal is not None:
            self._record_refusal(req.gate_id, person or req.approver or (req.on_behalf_of or ""), action, via, refusal,
                                 identity)
            if signal:
                return None
            raise ApplicationError(refusal, type="ApprovalRefused", non_retryable=True)
        assert identity is not None
        if identity.token_id:
            self._used_tokens.append(identity.token_id)
        gate = self.gates.open[req.gate_id]
        if isinstance(req, ApproveInput):
            view = gate.approve(Approval(
                approver=person, at=workflow.now(), reason=req.reason, via=via, subject=identity.subject,
                name=identity.name, groups=list(identity.groups), issuer=identity.issuer, token_id=identity.token_id,
                on_behalf_of=req.on_behalf_of, verified=identity.verified,
            ))
        else:
            view = gate.reject(person, req.reason)
        self._publish_details()
        return view

    def _people(self, gate_id: str) -> People:
        gate = self.gates.open.get(gate_id)
        return gate.policy.people if gate is not None else self.meta.approval.people

    @workflow.update
    async def approve(self, req: ApproveInput) -> GateView:
        view = await self._decide(req, "approve", signal=False)
        assert view is not None
        return view

    @approve.validator
    def _validate_approve(self, req: ApproveInput) -> None:
        refusal = self._precheck(req, "approve", self._via(req, signal=False))
        if refusal:
            raise ValueError(refusal)

    @workflow.update
    async def reject(self, req: RejectInput) -> GateView:
        view = await self._decide(req, "reject", signal=False)
        assert view is not None
        return view

    @reject.validator
    def _validate_reject(self, req: RejectInput) -> None:
        refusal = self._precheck(req, "reject", self._via(req, signal=False))
        if refusal:
            raise ValueError(refusal)

    @workflow.signal
    async def approve_signal(self, req: ApproveInput) -> None:
        """Approval from the web UI ("Send a Signal"): signals have no validator, so the check is here; the payload
        must carry an ID token unless the policy accepts unauthenticated UI approvals."""
        await self._decide(req, "approve", signal=True)

    @workflow.signal
    async def reject_signal(self, req: RejectInput) -> None:
        await self._decide(req, "reject", signal=True)

    def _record_refusal(self, gate_id: str, who: str, action: str, via: str, reason: str,
                        identity: VerifiedIdentity | None = None) -> None:
        self._refused.append(RefusedAttempt(
            at=workflow.now(), gate_id=gate_id, who=who, action=action, via=via, reason=reason,
            subject=identity.subject if identity and identity.verified else "",
            token_id=identity.token_id if identity else "",
        ))
        workflow.logger.warning("refused %s of %s by %s via %s: %s", action, gate_id, who or "?", via, reason)
        self._publish_details()

    # ----------------------------------------------------------------- gates
    def open_gate(
        self,
        name: str,
        title: str,
        summary: str = "",
        *,
        binding: str | None = None,
        policy: ApprovalPolicy | None = None,
        fields: dict[str, str] | None = None,
    ) -> ApprovalGate:
        """Open a gate (status WaitingForApproval while any gate is open); ``await gate.wait()`` for its decision.
        A policy that needs no approval gives a gate already approved."""
        policy = policy or self.meta.approval
        now = workflow.now()
        view = GateView(
            gate_id=self.gates.next_id(name),
            title=title,
            summary=summary,
            binding=binding,
            opened_at=now,
            deadline=now + policy.timeout,
            eligible=sorted(policy.eligible(requested_by=self.meta.requested_by)),
            eligible_groups=policy.eligible_idp_groups(),
            required_approvals=policy.required_approvals,
            required_groups=list(policy.required_groups),
        )
        gate = ApprovalGate(self, self.gates, view, policy, fields)
        if policy.required_approvals == 0:
            gate.close("approved", None, "no approval required by policy")
            self.gates.closed.append(view)
            return gate
        self.gates.add(gate)
        return gate

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
        """Open a gate and wait for its decision (approved, rejected, timed out, or aborted with the run)."""
        gate = self.open_gate(name, title, summary, binding=binding, policy=policy, fields=fields)
        if not gate.open:
            return gate.outcome()
        return await gate.wait()

    def _gates_changed(self) -> None:
        if self.gates.open and self._status_before_gates is None:
            self._status_before_gates = self._status
            first = next(iter(self.gates.open.values()))
            self.set_status("WaitingForApproval", f"waiting for approval: {first.view.title}")
        elif not self.gates.open and self._status_before_gates is not None:
            previous, self._status_before_gates = self._status_before_gates, None
            if self._status == "WaitingForApproval":  # no longer waiting, whatever the decision
                self.set_status(previous, self._stage)
        self._publish_details()

    # ----------------------------------------------------------------- steering
    @workflow.update
    def abort(self, req: AbortInput) -> str:
        self.request_abort(req)
        return f"abort requested by {req.requested_by}: {req.reason}"

    @abort.validator
    def _validate_abort(self, req: AbortInput) -> None:
        if self.abort_request is not None:
            raise ValueError(f"already aborting (requested by {self.abort_request.requested_by})")
        if self._status in TERMINAL:
            raise ValueError(f"the run has ended ({self._status})")

    @workflow.signal
    def abort_signal(self, req: AbortInput) -> None:
        if self.abort_request is None:
            self.request_abort(req)

    def request_abort(self, req: AbortInput) -> None:
        """Ask the run to stop: every wait and step honours it (see ``check_abort``, ``interruptible``)."""
        if self.abort_request is not None:
            return
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

    def abort_stop(self, where: str = "") -> Stop:
        req = self.abort_request
        assert req is not None
        at = f" at {where}" if where else ""
        return Stop("Aborted", f"aborted{at} by {req.requested_by}: {req.reason}")

    def check_abort(self, where: str = "") -> None:
        """Between steps: an abort stops the run here (before the next change); compensation follows."""
        if self.aborting:
            raise self.abort_stop(where or self._stage)

    async def interruptible(self, awaitable: Awaitable[Any], where: str = "") -> Any:
        """A wait or read that an abort cuts short: its activity is cancelled and the run stops."""
        self.check_abort(where)
        task = asyncio.ensure_future(awaitable)
        try:
            await workflow.wait_condition(lambda: task.done() or self.aborting)
        except asyncio.CancelledError:  # the workflow was cancelled: stop the step too (and wait until it has
            task.cancel()                # stopped, as for an abort), then let the cancellation propagate
            await until_done(task)
            if not task.cancelled():
                task.exception()  # retrieved: how the interrupted step ended does not matter any more
            raise
        if task.done():
            return task.result()
        task.cancel()
        try:
            await task
        except (asyncio.CancelledError, ActivityError, ChildWorkflowError, ApplicationError):
            pass
        raise self.abort_stop(where or self._stage)

    async def change(self, awaitable: Awaitable[Any], where: str = "") -> Any:
        """A change to the infrastructure: not started inside a change freeze (``respect_freeze``) or after an
        abort, finished once started (so compensation knows what it did), and the abort honoured right after it."""
        try:
            self.check_abort(where)
            await self.respect_freeze(where)
        except BaseException:
            if inspect.iscoroutine(awaitable):
                awaitable.close()  # never started: nothing to finish
            raise
        task = asyncio.ensure_future(awaitable)
        if await until_done(task):  # the workflow was cancelled meanwhile: the change finished all the same
            raise asyncio.CancelledError(f"cancelled during {where or self._stage}")
        result = task.result()
        self.check_abort(where)
        return result

    # ----------------------------------------------------------------- change freeze windows
    def freeze_kind(self) -> str:
        """The kind of this run for the calendar's exemptions (``region-failover:real``); a subclass may say."""
        return ""

    async def _read_freeze(self, where: str) -> Freeze | None:
        query = FreezeQuery(runbook=self.meta.runbook, environment=self.meta.environment, kind=self.freeze_kind(),
                            at=workflow.now())
        state: FreezeState = await self.interruptible(workflow.execute_local_activity_method(
            CalendarActivities.check_freeze, query, start_to_close_timeout=timedelta(seconds=30),
            retry_policy=CALENDAR_RETRY, summary=f"change calendar before {where}"), where)
        freeze = state.freeze
        if freeze is not None and f"{freeze.window}@{freeze.starts_at.isoformat()}" in self._glass:
            return None  # a break-glass approval opened this occurrence of the window for this run
        return freeze

    async def respect_freeze(self, where: str = "") -> None:
        """Before a change: outside any change freeze (runbooks/calendar.yaml) go on. Inside one, refuse the run
        when its runbook says ``freeze: refuse``; otherwise wait (status WaitingForWindow) until the window ends
        (read again at least every CALENDAR_RECHECK, so an edited calendar reaches the run) or a break-glass
        approval through the window's gate lets this run change for the rest of it. An abort ends the wait."""
        where = where or self._stage
        freeze = await self._read_freeze(where)
        if freeze is None:
            return
        if self.meta.freeze == "refuse":
            raise Stop("Refused", f"{where}: {freeze.line()}: {self.meta.runbook} does not run inside a freeze")
        previous, stage = self._status, self._stage
        self.freeze = freeze
        waits = f"{where}: waiting for the end of the {freeze.line()}"
        self.set_status("WaitingForWindow", waits)
        gate: ApprovalGate | None = None
        gate_task: asyncio.Future[GateOutcome] | None = None
        if freeze.break_glass is not None:
            gate = self.open_gate(
                "break-glass", f"Break the glass: {self.meta.runbook} on {self.meta.target} inside {freeze.window!r}",
                f"the {freeze.line()}; approving (with a reason) lets this run change now", binding=f"break-glass {freeze.window}",
                policy=freeze.break_glass, fields={"window": freeze.window, "ends": f"{freeze.ends_at:%Y-%m-%d %H:%M} UTC"})
            self.set_status("WaitingForWindow", waits)  # not WaitingForApproval: the window is what it waits for
            gate_task = asyncio.ensure_future(gate.wait())
        else:
            await self.notify("alert", f"{self.meta.runbook} on {self.meta.target} waits: change freeze",
                              f"{where} waits for the end of the {freeze.line()}", severity="warning",
                              fields={"window": freeze.window, "ends": f"{freeze.ends_at:%Y-%m-%d %H:%M} UTC"})

        def woken() -> bool:
            return self.aborting or (gate_task is not None and gate_task.done())

        try:
            while True:
                wake = min(freeze.ends_at, workflow.now() + CALENDAR_RECHECK)
                try:
                    await workflow.wait_condition(
                        woken,
                        timeout=max(wake - workflow.now(), timedelta(0)),
                        timeout_summary=f"change freeze {freeze.window!r}: look again at {wake:%H:%M:%S} UTC")
                except asyncio.TimeoutError:
                    pass
                if self.aborting:
                    break
                if gate_task is not None and gate_task.done():
                    outcome = gate_task.result()
                    gate_task = None
                    if outcome.approved:
                        self._glass.append(f"{freeze.window}@{freeze.starts_at.isoformat()}")
                        reasons = "; ".join(f"{a.approver}: {a.reason}" for a in outcome.approvals)
                        self.record_action("break_glass", outcome.decided_by or "policy",
                                           f"inside {freeze.window!r} until {freeze.ends_at:%Y-%m-%d %H:%M} UTC: {reasons}")
                        break
                    self.record_action("break_glass", outcome.decided_by or "policy", outcome.reason, accepted=False,
                                       note=f"gate {outcome.decision}: the run waits for the window to end")
                    continue
                fresh = await self._read_freeze(where)
                if fresh is None:
                    break
                if fresh != freeze:
                    freeze = self.freeze = fresh
                    self.set_status("WaitingForWindow", f"{where}: waiting for the end of the {freeze.line()}")
        except asyncio.CancelledError:  # the workflow was cancelled: the gate closes with it
            if gate is not None and gate.open:
                gate.close("aborted", "temporal", "the workflow was cancelled")
            if gate_task is not None:
                await until_done(gate_task)
            raise
        finally:
            self.freeze = None
        if gate_task is not None:  # the window ended or the run is aborting: the break-glass question is moot
            if gate is not None and gate.open and not self.aborting:
                gate.close("timed_out", "calendar", f"the {freeze.window!r} window ended")
            await gate_task
        self.check_abort(where)
        self.set_status(previous, stage)
    async def conduct(
        self,
        procedure: Callable[[], Awaitable[str | Ending]],
        compensate: Callable[[Ending], Awaitable[None]] | None = None,
        *,
        failed_step: RunStatus = "RolledBack",
    ) -> Ending:
        """Run the procedure. A ``Stop``, a failed activity or child, an abort or a cancellation ends it; then the
        compensation runs once (shielded: a cancellation cannot interrupt it) and may record what it undid
        (``ending.compensated``) and what it could not (``ending.not_undone``, which makes the run Failed)."""
        try:
            done = await procedure()
            return done if isinstance(done, Ending) else Ending("Succeeded", done)
        except Stop as stop:
            ending = stop.ending
        except asyncio.CancelledError:
            ending = self._cancelled()
        except (ActivityError, ChildWorkflowError, ApplicationError) as err:
            if workflow.cancellation_reason() is not None and isinstance(_root(err), CancelledError):
                ending = self._cancelled()  # an activity or child awaited directly was cancelled with the run
            else:
                ending = Ending(failed_step, f"{self._stage} failed: {cause_of(err)}", severity="error")
        if compensate is not None:
            self.set_status("RollingBack", f"compensating: {ending.summary}")
            task = asyncio.ensure_future(compensate(ending))
            if await until_done(task):  # shielded: a cancellation arriving now cannot interrupt it
                self.request_abort(AbortInput(requested_by="temporal", reason="the workflow was cancelled"))
            task.result()
        return ending

    def _cancelled(self) -> Ending:
        self.request_abort(AbortInput(requested_by="temporal", reason="the workflow was cancelled"))
        return Ending("Aborted", f"cancelled at {self._stage}: treated as an abort")

    def result_fields(self, ending: Ending) -> dict[str, Any]:
        """The fields every result shares, for ``conclude``'s builder."""
        return {
            "status": ending.final_status,
            "summary": self._end_summary(ending),
            "reason": ending.summary,
            "steps": list(self._steps),
            "gates": list(self.gates.closed),
            "actions": list(self._actions),
            "compensated": list(ending.compensated),
            "not_undone": list(ending.not_undone),
        }

    @staticmethod
    def _end_summary(ending: Ending) -> str:
        summary = ending.summary
        if ending.compensated:
            summary += ". Undone: " + "; ".join(ending.compensated)
        if ending.not_undone:
            summary += ". NOT UNDONE, act by hand: " + "; ".join(ending.not_undone)
        return summary

    async def conclude(self, ending: Ending, build: Callable[[dict[str, Any]], R], *,
                       fields: dict[str, str] | None = None) -> R:
        """Record the final status, notify once, let handlers finish, and return the result (or, for a run that
        could not make things safe, fail the workflow with the same result as the failure's details)."""
        result = build(self.result_fields(ending))
        status = result.status
        severity = ending.severity if ending.severity and status != "Failed" else END_SEVERITY[status]
        if status == "Succeeded":
            severity = "info" if ending.severity in (None, "info") else ending.severity
        self.set_status(status, result.summary)
        self.metrics.run_ended(status, criterion=self.metrics.criterion_of(result))
        self.metrics.from_result(result)
        kind: EventKind = "failed" if status == "Failed" else "finished"
        await self.notify(kind, f"{self.meta.runbook}: {status}", result.summary, severity=severity, fields=fields,
                          status=status)
        await workflow.wait_condition(workflow.all_handlers_finished)
        if status == "Failed":
            raise ApplicationError(result.summary, result.model_dump(mode="json"), type=errors.RUN_FAILED, non_retryable=True)
        return result

    # ----------------------------------------------------------------- bounded history
    def continue_as_new_due(self) -> bool:
        """True when the history is large enough that the run should continue as new (at a quiet point: no gate
        open, no handler running)."""
        info = workflow.info()
        large = info.is_continue_as_new_suggested() or info.get_current_history_length() >= self.meta.history_limit
        return large and not self.gates.open and workflow.all_handlers_finished()

    def carry(self, state: dict[str, Any] | None = None) -> RunbookCarry:
        """The audit trail and steering for the continuation, plus the runbook's own cursor in ``state``."""
        return RunbookCarry(
            steps=list(self._steps),
            gates=list(self.gates.closed),
            gate_seq=self.gates.seq,
            refused=list(self._refused),
            used_tokens=list(self._used_tokens),
            actions=list(self._actions),
            notify_refs=dict(self._notify_refs),
            notification_failures=list(self._notification_failures),
            abort_request=self.abort_request,
            status=self._status,
            stage=self._stage,
            continued=self.continued + 1,
            state=state or {},
            break_glass=list(self._glass),
        )

    # ----------------------------------------------------------------- status, steps, search attributes
    @property
    def stage(self) -> str:
        return self._stage

    @property
    def steps(self) -> list[StepRecord]:
        return list(self._steps)

    def set_status(self, status: RunStatus, stage: str | None = None) -> None:
        if (self._status_before_gates is not None and self.gates.open
                and status not in TERMINAL + ("WaitingForApproval", "WaitingForWindow")):
            # a gate is open: the run still waits; remember what to return to
            self._status_before_gates = status
            status = "WaitingForApproval"
        changed = status != self._status
        self._status = status
        if stage is not None:
            self._stage = stage
        if changed:
            workflow.upsert_search_attributes([sa.RUNBOOK_STATUS.value_set(status)])
        self._publish_details()

    def begin(self) -> None:
        """Mark the run as started; sets only the search attributes the starter did not set."""
        meta = self.meta
        present = workflow.info().typed_search_attributes
        wanted = [
            (sa.RUNBOOK_NAME, meta.runbook),
            (sa.RUNBOOK_TARGET, meta.target),
            (sa.RUNBOOK_ENVIRONMENT, meta.environment or "-"),
            (sa.RUNBOOK_REQUESTED_BY, meta.requested_by),
            (sa.RUNBOOK_STATUS, self._status),
        ]
        updates = [key.value_set(value) for key, value in wanted if present.get(key) != value]
        if updates:
            workflow.upsert_search_attributes(updates)
        if not self.continued:
            self.metrics.run_started()
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
        self.metrics.step_finished(record.name, record.finished_at - record.started_at)
        if detail:
            record.detail = detail
        self._publish_details()
        if notify:
            await self.notify("step_done", f"{record.name}: done", record.detail)

    def step_failed(self, record: StepRecord, detail: str, status: StepStatus = "failed") -> None:
        record.status = status
        record.finished_at = workflow.now()
        record.detail = detail
        self._publish_details()

    def step_skipped(self, name: str, why: str) -> StepRecord:
        record = self.step_started(name)
        self.step_failed(record, f"skipped: {why}", status="skipped")
        return record

    def _publish_details(self) -> None:
        """The web UI's Current Details (Markdown): the state, each open gate with what it asks and how to approve
        it (the CLI command, and the signal for this UI), the latest approvals, refusals and steps."""
        lines = [f"**{self.meta.runbook}** on `{self.meta.target}`: **{self._status}**, {self._stage}"]
        if self.freeze is not None:
            glass = "" if self.freeze.break_glass else " (this window allows no break-glass approval)"
            lines.append(f"Waiting for the end of the {self.freeze.line()}, since "
                         f"{self.freeze.starts_at:%Y-%m-%d %H:%M} UTC{glass}")
        views = self.gates.views()
        workflow_id = workflow.info().workflow_id
        for gate in views:
            who = ", ".join(gate.eligible) or "nobody"
            lines.append(
                f"Waiting for approval of *{gate.title}* (gate `{gate.gate_id}`) by {who} "
                f"since {gate.opened_at:%Y-%m-%d %H:%M:%S} UTC, deadline {gate.deadline:%Y-%m-%d %H:%M:%S} UTC; "
                f"{len(gate.approvals)}/{gate.required_approvals} approvals"
            )
            if gate.summary:
                lines.append(gate.summary)
            if gate.binding:
                lines.append(f"Approves: `{gate.binding}`")
            lines.append(f"To approve: `{gate.approve_hint(workflow_id, several=len(views) > 1)}`")
            policy = self.gates.open[gate.gate_id].policy
            if policy.allow_ui_approval:
                lines.append(
                    "Or in this UI: More Actions -> Send a Signal, name `approve_signal`, data: the JSON that "
                    f"`{shlex.join(['runbook', 'approve', workflow_id, '--gate', gate.gate_id, '--print-signal'])}` prints"
                )
            else:
                lines.append("This runbook does not accept approvals from the web UI.")
            lines += [f"- {audit_line(a)}" for a in gate.approvals]
        for gate in self.gates.closed[-3:]:
            lines += [f"- gate `{gate.gate_id}` {gate.decision}: {audit_line(a)}" for a in gate.approvals]
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
        status: RunStatus | None = None,
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
            severity=severity,
            gate=gate,
            status=status,
            incident_id=self.meta.incident_id,
            slack_channel=self.meta.slack_channel,
            ui_url=self.meta.ui_url,
            refs=dict(self._notify_refs),
            actions=self._actions[-MAX_NOTIFIED_ACTIONS:],
            channels=route(self.meta.routing, kind, severity),
        )
        try:
            result = await workflow.execute_activity_method(
                NotificationActivities.notify,
                event,
                start_to_close_timeout=timedelta(seconds=60),
                retry_policy=NOTIFY_RETRY,
            )
        except ActivityError as err:
            self._notification_failures.append(f"{kind}: {cause_of(err)}")
            if workflow.cancellation_reason() is not None and isinstance(_root(err), CancelledError):
                # the run was cancelled while it was telling people: the cancel is an abort, never lost here
                self.request_abort(AbortInput(requested_by="temporal", reason="the workflow was cancelled"))
            return
        self._notify_refs.update(result.refs)
        self._notification_failures.extend(f"{kind}: {f}" for f in result.failures)

