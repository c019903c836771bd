"""``RunbookClient``: the one typed client of runbook runs, used by the CLI, the Slack/PagerDuty gateway and schedules.

It starts planned runs (``core.catalog.Catalog.plan_start`` decides what to start; this module only starts it, with
its search attributes, and reports a run already going for the same concurrency key instead of starting a second),
reads a run's status and result, decides its approval gates, aborts it, and steers it: ``pause``, ``resume``,
``promote``, ``extend``, ``destroy-now``, ``reverify``, each where the run's runbook supports it.

Every query, update and signal is sent by method reference to the declarations in ``workflows.contract``, never by
a handler name, and without importing a workflow module. The run's own validator decides whether a request is
accepted now; its refusal comes back as ``Refused`` with the run's one-line reason.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable

from pydantic import BaseModel, ValidationError
from temporalio.client import (
    Client,
    WorkflowExecutionDescription,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.common import (
    SearchAttributePair,
    SearchAttributes,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import TimeoutError as TemporalTimeout
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from core.approval import AbortInput, ApproveInput, GateView, RejectInput
from core.duration import format_duration, parse_duration
from core.runbook import RunbookStatus
from starters.verbs import VERBS, Steer, describe_verb
from workflows import search_attributes as sa
from workflows.contract import IncidentResolvedInput, Runbook

# Each runbook's steering (workflows.steering: the canary's and the provisioning's models) and YAML are imported
# where they are used: reading a run's status needs neither (bench/cli_speed.py measures `runbook status`).
if TYPE_CHECKING:
    from core.canary import CanaryView
    from core.catalog import StartPlan
    from core.config import Settings


# ------------------------------------------------------------------------------------------- errors
class RunbookClientError(Exception):
    """A request about a run that a person can act on; the message is one line."""


class RunNotFound(RunbookClientError):
    def __init__(self, workflow_id: str, *, running: bool = False) -> None:
        super().__init__(f"no {'running ' if running else ''}runbook run with id {workflow_id!r}")
        self.workflow_id = workflow_id


class Refused(RunbookClientError):
    """The run's validator (or handler) refused the request; ``reason`` is its own words."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"refused: {reason}")
        self.reason = reason


class NotSupported(RunbookClientError):
    """The run's runbook has no such steering action."""


# ------------------------------------------------------------------------------------------- starting
@dataclass
class StartOutcome:
    workflow_id: str
    run_id: str | None
    started: bool  # False: a run for the same key was already running; nothing new was started
    handle: WorkflowHandle
    # not started because another runbook's run holds the same thing (the plan's ``excludes``): the planned run's id;
    # workflow_id/run_id/handle are then that other run's
    excluded: str | None = None


def search_attributes(plan: StartPlan) -> TypedSearchAttributes:
    meta = plan.meta
    return TypedSearchAttributes(
        [
            SearchAttributePair(sa.RUNBOOK_NAME, meta.runbook),
            SearchAttributePair(sa.RUNBOOK_TARGET, meta.target),
            SearchAttributePair(sa.RUNBOOK_ENVIRONMENT, meta.environment or "-"),
            SearchAttributePair(sa.RUNBOOK_REQUESTED_BY, meta.requested_by),
            SearchAttributePair(sa.RUNBOOK_STATUS, "Running"),
        ]
    )


def summary(plan: StartPlan) -> str:
    meta = plan.meta
    env = f" in {meta.environment}" if meta.environment else ""
    return f"{meta.runbook} on {meta.target}{env}, requested by {meta.requested_by} via {meta.source}"


def details(plan: StartPlan) -> str:
    """The web UI's static details: the parameters as YAML, as a person writes them in the catalog or --set."""
    if not plan.params:
        return "No parameters."
    return f"**Parameters**\n\n```yaml\n{parameters_yaml(plan.params)}\n```\n"


def parameters_yaml(params: dict[str, Any]) -> str:
    def plain(value: Any) -> Any:  # what YAML can write: durations as 10m, models as their fields
        if isinstance(value, timedelta):
            return format_duration(value)
        if isinstance(value, BaseModel):
            return plain(value.model_dump(mode="json", exclude_none=True))
        if isinstance(value, dict):
            return {str(k): plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value if value is None or isinstance(value, (str, int, float, bool)) else str(value)

    import yaml

    return yaml.safe_dump(plain(dict(sorted(params.items()))), sort_keys=False, allow_unicode=True,
                          default_flow_style=False).strip()


DRY_RUN_TIMEOUT = timedelta(minutes=2)  # a dry run only reads: longer means no worker, or a system that hangs


class DryRunFailed(RunbookClientError):
    """The dry run could not compute a plan (a system it must read could not be read); nothing was started."""


@dataclass
class DryRunOutcome:
    workflow_id: str  # the id the real run would have
    status: str  # "DryRun", or "AlreadyRunning" (a run for the same key is going: nothing was computed)
    plan: Any = None  # core.dry_run.DryRunPlan when status is DryRun
    running_run_id: str | None = None
    excluded: str | None = None  # AlreadyRunning for another runbook's run (workflow_id is its id): the planned id

    def as_json(self) -> dict[str, Any]:
        return {"workflow_id": self.workflow_id, "status": self.status, "started": False,
                "running_run_id": self.running_run_id, "excluded": self.excluded,
                "plan": self.plan.model_dump(mode="json") if self.plan is not None else None}


# ------------------------------------------------------------------------------------------- steering
@dataclass
class Steered:
    workflow_id: str
    verb: str
    message: str  # one line for a person
    result: Any  # the update's typed answer (CanaryView, SandboxExpiry, str)


_Build = Callable[[Steer], tuple[Any, BaseModel]]


@functools.cache
def steering() -> dict[str, dict[type[Runbook], _Build]]:
    """verb -> {contract: (its update by method reference, its input)}: a runbook supports a verb when its contract
    is listed."""
    from core.canary import ExtendInput, SteerInput
    from core.provision import DestroyNowInput
    from core.provision import ExtendInput as ExtendTtlInput
    from workflows.contract import ExtendBakeInput, PromoteNowInput, ReverifyInput
    from workflows.steering import BlueGreenSteering, CanarySteering, ProvisionSteering, RegionMoveSteering

    return {
        "pause": {
            CanarySteering: lambda s: (CanarySteering.pause, SteerInput(by=s.by, reason=s.reason)),
        },
        "resume": {
            CanarySteering: lambda s: (CanarySteering.resume, SteerInput(by=s.by, reason=s.reason)),
        },
        "promote": {
            CanarySteering: lambda s: (CanarySteering.promote, SteerInput(by=s.by, reason=s.reason)),
            BlueGreenSteering: lambda s: (BlueGreenSteering.promote_now, PromoteNowInput(requested_by=s.by, reason=s.reason)),
        },
        "extend": {
            CanarySteering: lambda s: (CanarySteering.extend, ExtendInput(by=s.by, reason=s.reason, duration=s.duration)),
            BlueGreenSteering: lambda s: (
                BlueGreenSteering.extend_bake, ExtendBakeInput(requested_by=s.by, by=s.duration, reason=s.reason)),
            ProvisionSteering: lambda s: (
                ProvisionSteering.extend, ExtendTtlInput(requested_by=s.by, by=s.duration, reason=s.reason)),
        },
        "destroy-now": {
            ProvisionSteering: lambda s: (ProvisionSteering.destroy_now, DestroyNowInput(requested_by=s.by, reason=s.reason)),
        },
        "reverify": {
            RegionMoveSteering: lambda s: (RegionMoveSteering.reverify, ReverifyInput(requested_by=s.by, reason=s.reason)),
        },
    }


def verbs_for(workflow_type: str) -> list[str]:
    """The steering verbs a run of ``workflow_type`` supports."""
    from workflows.steering import contract_for

    contract = contract_for(workflow_type)
    return [verb for verb, table in steering().items() if any(issubclass(contract, c) for c in table)]


def steered_message(verb: str, result: Any) -> str:
    """One line for a person about an accepted steering request."""
    from core.canary import CanaryView
    from core.provision import SandboxExpiry

    if isinstance(result, CanaryView):
        where = f"step {result.step_index + 1}/{result.steps} ({result.step}), weight {result.current_weight}%"
        return f"{verb}: accepted; the canary is {result.phase.lower()} at {where}"
    if isinstance(result, SandboxExpiry):
        return f"{verb}: accepted; the sandbox now expires at {result.expires_at:%Y-%m-%d %H:%M:%S} UTC"
    return f"{verb}: accepted; {result}" if result else f"{verb}: accepted"


# ------------------------------------------------------------------------------------------- the client
class RunbookClient:
    """Runbook runs on one Temporal namespace: start, read, decide, abort, steer."""

    def __init__(self, client: Client, task_queue: str = "runbooks") -> None:
        self.temporal = client
        self.task_queue = task_queue

    @classmethod
    async def connect(cls, settings: Settings) -> RunbookClient:
        from workers.connection import connect

        return cls(await connect(settings), settings.task_queue)

    @property
    def namespace(self) -> str:
        return self.temporal.namespace

    def handle(self, workflow_id: str, run_id: str | None = None) -> WorkflowHandle:
        return self.temporal.get_workflow_handle(workflow_id, run_id=run_id)

    # ----------------------------------------------------------------- starting
    async def start(
        self, plan: StartPlan, *, reuse: WorkflowIDReusePolicy = WorkflowIDReusePolicy.ALLOW_DUPLICATE
    ) -> StartOutcome:
        """Start the planned run. A running run with the same id is reported (``started=False``), never doubled.

        The id conflict policy FAIL makes the server the judge: of two racing starts (two CLI users, or a PagerDuty
        redelivery reaching two gateway replicas) exactly one starts; the other is told which run is already there.
        ``reuse=REJECT_DUPLICATE`` also refuses a finished run's id (one run per PagerDuty incident, ever).

        Single flight across runbooks: a run of another runbook that holds the same thing (the plan's ``excludes``,
        from the catalog, e.g. ``release:{service}`` for a canary) is read by its id first (a strongly consistent
        describe, not the visibility list); one running is reported as already running (``excluded`` names the
        planned id) and nothing is started. Two starts of different runbooks in the same instant can both pass that
        read, so after starting the run reads them again: of two running, the one the server started later is
        cancelled at once (a runbook treats a cancel as an abort and undoes whatever it did) and reported as
        refused. The earlier one never sees the later one in its own second read, so exactly one goes on.
        """
        blocking = await self._running_excluded(plan)
        if blocking is not None:
            workflow_id, run_id = blocking
            return StartOutcome(workflow_id, run_id, False, self.handle(workflow_id, run_id), excluded=plan.workflow_id)
        try:
            handle = await self.temporal.start_workflow(
                plan.workflow_type,
                plan.input,
                id=plan.workflow_id,
                task_queue=self.task_queue,
                id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
                id_reuse_policy=reuse,
                search_attributes=search_attributes(plan),
                static_summary=summary(plan),
                static_details=details(plan),
            )
        except WorkflowAlreadyStartedError as err:
            existing = self.handle(plan.workflow_id, err.run_id)
            return StartOutcome(plan.workflow_id, err.run_id, False, existing)
        raced = await self._yield_if_raced(plan, handle)
        if raced is not None:
            return raced
        return StartOutcome(plan.workflow_id, handle.first_execution_run_id, True, handle)

    async def _yield_if_raced(self, plan: StartPlan, handle: WorkflowHandle) -> StartOutcome | None:
        """The second read of single flight: an excluded run started before this one (by the server's clock; the same
        instant: the smaller id first) means this start lost a race it could not see. It is cancelled and the
        other run reported, as the first read would have."""
        if not plan.excludes:
            return None
        mine = await handle.describe()
        async for workflow_id, other in self._excluded_running(plan):
            if (other.start_time, workflow_id) < (mine.start_time, plan.workflow_id):
                await handle.cancel()
                return StartOutcome(workflow_id, other.run_id, False, self.handle(workflow_id, other.run_id),
                                    excluded=plan.workflow_id)
        return None

    async def _running_excluded(self, plan: StartPlan) -> tuple[str, str] | None:
        """The first of the plan's ``excludes`` that is running now: (its workflow id, its run id)."""
        async for workflow_id, described in self._excluded_running(plan):
            return workflow_id, described.run_id
        return None

    async def _excluded_running(self, plan: StartPlan) -> AsyncIterator[tuple[str, WorkflowExecutionDescription]]:
        """The plan's ``excludes`` that are running now, in the catalog's order, each with its description."""
        for workflow_id in plan.excludes:
            try:
                described = await self.handle(workflow_id).describe()
            except RPCError as error:
                if error.status != RPCStatusCode.NOT_FOUND:
                    raise
                continue
            if described.status == WorkflowExecutionStatus.RUNNING:
                yield workflow_id, described

    async def dry_run(self, plan: StartPlan) -> DryRunOutcome:
        """What ``start(plan)`` would change, computed by the worker's read-only ``RunbookDryRun`` workflow (the
        worker's credentials; nothing changed, no runbook run started). A run already going for the same key is
        reported as ``AlreadyRunning`` (as ``start`` would), without computing a plan."""
        import uuid

        from core.dry_run import DRY_RUN_UNREADABLE, DryRunInput, DryRunPlan

        try:
            described = await self.handle(plan.workflow_id).describe()
        except RPCError as error:
            if error.status != RPCStatusCode.NOT_FOUND:
                raise
        else:
            if described.status == WorkflowExecutionStatus.RUNNING:
                return DryRunOutcome(plan.workflow_id, "AlreadyRunning", running_run_id=described.run_id)
        blocking = await self._running_excluded(plan)
        if blocking is not None:
            return DryRunOutcome(blocking[0], "AlreadyRunning", running_run_id=blocking[1], excluded=plan.workflow_id)
        try:
            result = await self.temporal.execute_workflow(
                "RunbookDryRun",
                DryRunInput(workflow_type=plan.workflow_type, workflow_id=plan.workflow_id,
                            input=plan.input.model_dump(mode="json")),
                id=f"dry-run:{plan.workflow_id}:{uuid.uuid4().hex[:12]}",
                task_queue=self.task_queue,
                result_type=DryRunPlan,
                execution_timeout=DRY_RUN_TIMEOUT,
                static_summary=f"dry run of {summary(plan)}",
            )
        except WorkflowFailureError as failure:
            cause = failure.cause
            if isinstance(cause, TemporalTimeout):
                raise DryRunFailed(f"no worker answered on task queue {self.task_queue!r} within "
                                   f"{format_duration(DRY_RUN_TIMEOUT)}; nothing was started") from None
            message = getattr(cause, "message", None) or str(cause)
            prefix = "" if getattr(cause, "type", None) == DRY_RUN_UNREADABLE else "dry run failed: "
            raise DryRunFailed(f"{prefix}{message}; nothing was started") from None
        return DryRunOutcome(plan.workflow_id, "DryRun", plan=result)

    # ----------------------------------------------------------------- reading
    async def status(self, workflow_id: str) -> RunbookStatus:
        return await self._call(workflow_id, lambda h: h.query(Runbook.status))

    async def canary(self, workflow_id: str) -> CanaryView:
        from workflows.steering import CanarySteering

        return await self._call(workflow_id, lambda h: h.query(CanarySteering.canary))

    async def workflow_type(self, workflow_id: str) -> str:
        described = await self._call(workflow_id, lambda h: h.describe())
        return described.workflow_type

    async def running(self, workflow_id: str) -> bool:
        described = await self._call(workflow_id, lambda h: h.describe())
        return described.status == WorkflowExecutionStatus.RUNNING

    async def result(self, workflow_id: str, run_id: str | None = None) -> tuple[str, Any]:
        """A finished run's status and result (waits for the end): every runbook completes with a result whose
        ``status`` says how it ended, except Failed, whose failure (type RunFailed) carries the same result as its
        details."""
        try:
            result = await self.handle(workflow_id, run_id).result(follow_runs=True)
        except WorkflowFailureError as failure:
            cause = failure.cause
            message = getattr(cause, "message", None) or str(cause)
            found = getattr(cause, "details", None) or ()
            if found and isinstance(found[0], dict) and found[0].get("status"):
                return found[0]["status"], found[0]
            return "Failed", {"status": "Failed", "summary": message, "error": message, "type": getattr(cause, "type", None)}
        status = result.get("status", "Succeeded") if isinstance(result, dict) else "Succeeded"
        return status, result

    async def runs(self, query: str, *, limit: int = 50) -> AsyncIterator[dict[str, Any]]:
        """Runs matching a visibility query, as rows of their Runbook* search attributes."""
        async for execution in self.temporal.list_workflows(query, limit=limit):
            attrs = execution.search_attributes
            yield {
                "workflow_id": execution.id,
                "run_id": execution.run_id,
                "runbook": _attr(attrs, "RunbookName"),
                "target": _attr(attrs, "RunbookTarget"),
                "environment": _attr(attrs, "RunbookEnvironment"),
                "requested_by": _attr(attrs, "RunbookRequestedBy"),
                "status": _attr(attrs, "RunbookStatus"),
                "execution": execution.status.name if execution.status else None,
                "started": execution.start_time.isoformat() if execution.start_time else None,
            }

    # ----------------------------------------------------------------- approvals and abort
    async def approve(self, workflow_id: str, req: ApproveInput) -> GateView:
        return await self._update(workflow_id, Runbook.approve, req)

    async def reject(self, workflow_id: str, req: RejectInput) -> GateView:
        return await self._update(workflow_id, Runbook.reject, req)

    async def abort(self, workflow_id: str, req: AbortInput) -> str:
        return await self._update(workflow_id, Runbook.abort, req)

    async def incident_resolved(self, workflow_id: str, req: IncidentResolvedInput) -> None:
        await self._call(workflow_id, lambda h: h.signal(Runbook.incident_resolved, req), running=True)

    # ----------------------------------------------------------------- steering
    async def steer(self, workflow_id: str, verb: str, request: Steer, *, workflow_type: str | None = None) -> Steered:
        """Send one steering verb (``VERBS``) to a run, as its runbook spells it (canary ``promote``, blue-green
        ``promote_now``); ``NotSupported`` when its runbook has no such verb, ``Refused`` when the run says no now."""
        table = steering().get(verb)
        if table is None:
            raise NotSupported(f"unknown steering verb {verb!r} (known: {', '.join(VERBS)})")
        if verb == "extend":
            if not request.duration:
                raise RunbookClientError("extend: say by how long, e.g. 10m")
            try:
                parse_duration(request.duration)
            except ValueError as err:
                raise RunbookClientError(f"extend: duration {request.duration!r}: {err}") from None
        from workflows.steering import contract_for

        kind = workflow_type or await self.workflow_type(workflow_id)
        contract = contract_for(kind)
        build = next((b for c, b in table.items() if issubclass(contract, c)), None)
        if build is None:
            supported = verbs_for(kind)
            offer = f"it supports {', '.join(supported)}" if supported else "it has no steering verbs (abort still works)"
            raise NotSupported(f"{verb}: a {kind} run cannot be steered this way ({verb} {describe_verb(verb)}); {offer}")
        try:
            update, arg = build(request)
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise RunbookClientError(f"{verb}: {where}: {first['msg']}") from None
        result = await self._update(workflow_id, update, arg)
        return Steered(workflow_id, verb, steered_message(verb, result), result)

    async def pause(self, workflow_id: str, by: str, reason: str = "") -> Steered:
        return await self.steer(workflow_id, "pause", Steer(by, reason))

    async def resume(self, workflow_id: str, by: str, reason: str = "") -> Steered:
        return await self.steer(workflow_id, "resume", Steer(by, reason))

    async def promote(self, workflow_id: str, by: str, reason: str = "") -> Steered:
        return await self.steer(workflow_id, "promote", Steer(by, reason))

    async def extend(self, workflow_id: str, duration: str, by: str, reason: str = "") -> Steered:
        return await self.steer(workflow_id, "extend", Steer(by, reason, duration))

    async def destroy_now(self, workflow_id: str, by: str, reason: str) -> Steered:
        return await self.steer(workflow_id, "destroy-now", Steer(by, reason))

    async def reverify(self, workflow_id: str, by: str, reason: str = "") -> Steered:
        return await self.steer(workflow_id, "reverify", Steer(by, reason))

    # ----------------------------------------------------------------- plumbing
    async def _update(self, workflow_id: str, update: Any, arg: BaseModel) -> Any:
        try:
            return await self._call(workflow_id, lambda h: h.execute_update(update, arg), running=True)
        except WorkflowUpdateFailedError as failure:
            cause = failure.cause
            raise Refused(str(getattr(cause, "message", None) or cause or failure)) from None

    async def _call(self, workflow_id: str, call: Callable[[WorkflowHandle], Any], *, running: bool = False) -> Any:
        try:
            return await call(self.handle(workflow_id))
        except RPCError as error:
            if error.status == RPCStatusCode.NOT_FOUND:
                raise RunNotFound(workflow_id, running=running) from None
            raise


def _attr(attrs: SearchAttributes, name: str) -> str:
    values = attrs.get(name) or []
    return str(values[0]) if values else ""


__all__ = [
    "VERBS",
    "NotSupported",
    "Refused",
    "RunNotFound",
    "RunbookClient",
    "RunbookClientError",
    "DryRunFailed",
    "DryRunOutcome",
    "StartOutcome",
    "Steer",
    "Steered",
    "describe_verb",
    "search_attributes",
    "verbs_for",
]
