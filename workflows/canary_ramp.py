"""The canary ramp: shift traffic to a new version step by step, analyse it, roll back by itself when it misbehaves.

The plan is data (``PlanStep``: ``set_weight``, ``pause`` for a duration or until approved, ``analysis`` of a named
template for a duration). The workflow walks it with an explicit cursor (``canary`` query: step index, weight,
plan hash, recent measurements and verdicts).

- Resolve first: the router's names are looked up and every object the ramp will touch is checked, READ-ONLY,
  before the first weight change. A missing or mis-wired target ends the run ``Refused`` ("nothing was changed",
  severity warning); nothing is rolled back because nothing was set.
- Analysis (workflows/analysis.py, core/analysis.py): Failed -> roll back at once (``RolledBack``). Inconclusive or
  Error past their limits -> ask a person through the ``analysis-decision`` gate (approve = continue, reject or no
  decision within ``decision_timeout`` = roll back, ``RolledBack``: the check stands).
- A ``pause: {}`` step is a ``continue`` gate: approved -> go on; rejected or timed out -> roll back, ``Rejected``.
- Steering (Updates, each recorded with who and why): ``pause`` / ``resume`` (the step's clock stops while paused;
  analysis keeps measuring and can still fail the canary), ``promote`` (skip the remaining steps, through the
  ``promote`` gate; not approved -> the ramp carries on), ``extend`` (push the current timed step's end, at most
  ``max_extension`` in total), and the base's ``abort``. Cancelling the workflow is an abort.
- One way to end (``conduct`` / ``conclude``): the procedure returns its summary or raises ``Stop``; a failed router
  step rolls back (``RolledBack``); the one compensation block (``_compensate``) puts the canary at 0 % and scales
  it down, only if a weight was ever set. A rollback that itself fails is ``Failed`` (critical): the workflow fails
  with ``RunFailed`` and the result names what is not undone.
- Promotion is final: once started it finishes even when an abort or a cancellation arrives meanwhile (the old
  version may already be scaled down, so "rolling back" then would send traffic to nothing).
- Bounded history: at quiet points (between steps, between analysis ticks, in timed pauses) the run continues as new
  when ``continue_as_new_due()``, carrying its cursor, weights, step end, pause, extension total, recent measurements
  and the analysis in progress; the base carries steps, gates, actions and the abort.
See docs/canary.md for what an abort does at each step.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from core.analysis import AnalysisVerdict, Measurement, alb_args
    from core.approval import ApprovalPolicy, GateOutcome
    from core.canary import (  # re-exported: the workflow's own types
        RECENT_MEASUREMENTS,
        AlbRouterSpec,
        AnalysisStepSpec,
        CanaryRampInput,
        CanaryRampResult,
        CanaryView,
        ExtendInput,
        HttpRouteRouterSpec,
        PauseSpec,
        PlanStep,
        SteerInput,
        WeightChange,
        default_plan,
        plan_hash,
    )
    from core.duration import format_duration
    from workflows.analysis import AnalysisRun
    from workflows.base import Ending, RunbookWorkflow, Stop, cause_of, gate_stop
    from workflows.steering import CanarySteering
    from workflows.traffic import TrafficRouter, make_router

__all__ = [
    "AnalysisStepSpec",
    "CanaryRamp",
    "CanaryRampInput",
    "CanaryRampResult",
    "CanaryView",
    "ExtendInput",
    "PauseSpec",
    "PlanStep",
    "SteerInput",
    "WeightChange",
    "default_plan",
]


def _router_from(data: dict) -> AlbRouterSpec | HttpRouteRouterSpec:
    return AlbRouterSpec.model_validate(data) if data.get("kind") == "alb" else HttpRouteRouterSpec.model_validate(data)


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


# --------------------------------------------------------------------------------------------------- workflow
@workflow.defn
class CanaryRamp(RunbookWorkflow, CanarySteering):
    @workflow.init
    def __init__(self, input: CanaryRampInput) -> None:
        super().__init__(input.meta, input.carry)
        self.input = input
        self.plan = input.plan
        self.plan_hash = plan_hash(input.plan, input.templates)
        self.templates = {t.name: t for t in input.templates}
        self.router: TrafficRouter = make_router(input.router)
        self.resolved = False  # the read-only resolve step passed
        self.touched = False  # a weight change was started: only then is there anything to roll back
        self.cursor = 0
        self.in_step = False  # the step at the cursor has begun (a continuation resumes it)
        self.weight = 0
        self.weights: list[WeightChange] = []
        self.step_end: datetime | None = None
        self.paused = False
        self._paused_at: datetime | None = None
        self.extended = timedelta(0)
        self.promote_requested: SteerInput | None = None
        self.phase = "Starting"
        self.last_verdict: AnalysisVerdict | None = None
        self.recent: list[Measurement] = []
        self.measurements_total = 0
        self.analysis_resume: dict | None = None
        self.finished = False
        # how the run stopped, for the result
        self.stop_step: int | None = None
        self.stop_verdict: AnalysisVerdict | None = None
        if self.carried_state:
            self._restore(self.carried_state)

    # ------------------------------------------------------------------ query
    @workflow.query
    def canary(self) -> CanaryView:
        step = self.plan[self.cursor].describe() if self.cursor < len(self.plan) else "done"
        return CanaryView(
            step_index=self.cursor,
            steps=len(self.plan),
            step=step,
            step_ends_at=self.step_end,
            current_weight=self.weight,
            plan_hash=self.plan_hash,
            paused=self.paused,
            promote_requested=self.promote_requested is not None,
            phase=self.phase,
            last_verdict=self.last_verdict,
            measurements_total=self.measurements_total,
            recent_measurements=list(self.recent[-20:]),
            weights=list(self.weights),
            extended=self.extended,
            max_extension=self.input.max_extension,
        )

    def status_details(self) -> dict[str, Any]:
        view = self.canary()
        data = view.model_dump(mode="json", exclude={"recent_measurements", "weights"})
        data["recent_measurements"] = [m.model_dump(mode="json") for m in self.recent[-8:]]
        # for `runbook watch`: the whole plan by its step names, and each metric's success condition
        data["plan"] = [f"step {i + 1}/{len(self.plan)}: {s.describe()}" for i, s in enumerate(self.plan)]
        data["thresholds"] = {m.name: m.criterion() for t in self.templates.values() for m in t.metrics}
        return data

    # ------------------------------------------------------------------ steering
    def _refuse_if_finished(self) -> None:
        if self.finished or self.aborting or self.phase in ("RollingBack", "Promoting"):
            raise ValueError("the canary is finishing; nothing to steer")

    @workflow.update
    def pause(self, req: SteerInput) -> CanaryView:
        self.paused, self._paused_at = True, workflow.now()
        self.phase = "Paused"
        self.set_status("Paused", f"paused by {req.by}")
        self.record_action("pause", req.by, req.reason)
        return self.canary()

    @pause.validator
    def _validate_pause(self, req: SteerInput) -> None:
        self._refuse_if_finished()
        if self.paused:
            raise ValueError("already paused")

    @workflow.update
    def resume(self, req: SteerInput) -> CanaryView:
        now = workflow.now()
        if self.step_end is not None and self._paused_at is not None:
            self.step_end += now - self._paused_at  # the step's clock stood still while paused
        self.paused, self._paused_at = False, None
        self.phase = "Progressing"
        self.set_status("Running", f"resumed by {req.by}")
        self.record_action("resume", req.by, req.reason)
        return self.canary()

    @resume.validator
    def _validate_resume(self, req: SteerInput) -> None:
        self._refuse_if_finished()
        if not self.paused:
            raise ValueError("not paused")

    @workflow.update
    def promote(self, req: SteerInput) -> CanaryView:
        self.promote_requested = req
        self.record_action("promote", req.by, req.reason, note="goes through the approval gate")
        return self.canary()

    @promote.validator
    def _validate_promote(self, req: SteerInput) -> None:
        self._refuse_if_finished()
        if self.promote_requested is not None:
            raise ValueError(f"promotion already requested by {self.promote_requested.by}")
        if self.gates.open:
            raise ValueError(f"a decision is pending (gate {next(iter(self.gates.open))}); approve or reject it first")

    @workflow.update
    def extend(self, req: ExtendInput) -> CanaryView:
        assert self.step_end is not None
        self.step_end += req.duration
        self.extended += req.duration
        self.record_action(
            "extend", req.by, req.reason,
            note=f"+{format_duration(req.duration)} to step {self.cursor} "
                 f"({format_duration(self.extended)} of {format_duration(self.input.max_extension)} used)",
        )
        return self.canary()

    @extend.validator
    def _validate_extend(self, req: ExtendInput) -> None:
        self._refuse_if_finished()
        if req.duration <= timedelta(0):
            raise ValueError("extend needs a positive duration")
        if self.step_end is None:
            raise ValueError("the current step has no duration to extend (only timed pauses and analyses do)")
        cap = self.input.max_extension
        if self.extended + req.duration > cap:
            left = max(cap - self.extended, timedelta(0))
            raise ValueError(
                f"extend refused: {format_duration(req.duration)} more would extend this run by "
                f"{format_duration(self.extended + req.duration)} in total, over its cap of {format_duration(cap)} "
                f"(max_extension); {format_duration(left) if left else 'nothing'} left"
            )

    def _stopping(self) -> bool:
        return self.aborting or self.promote_requested is not None

    def _remember(self, measurement: Measurement) -> None:
        self.measurements_total += 1
        self.recent.append(measurement)
        del self.recent[:-RECENT_MEASUREMENTS]

    # ------------------------------------------------------------------ run
    @workflow.run
    async def run(self, input: CanaryRampInput) -> CanaryRampResult:
        self.begin()
        if not self.continued:
            await self.notify(
                "started",
                f"Canary {input.service} {input.version}: starting",
                f"{len(self.plan)} steps via {self.router.describe()}, plan {self.plan_hash}",
            )
        ending = await self.conduct(self._procedure, self._compensate)
        self.finished = True
        self.phase = ending.final_status
        return await self.conclude(ending, lambda common: self._result(common), fields=self._end_fields(ending))

    async def _procedure(self) -> str:
        if not self.resolved:
            await self._resolve()
        while self.cursor < len(self.plan):
            index, step = self.cursor, self.plan[self.cursor]
            if self.in_step:  # a continuation resumes the step its predecessor was in
                record = self.steps[-1]
            else:
                promoted = await self._quiet_point()
                if promoted:
                    return promoted
                record = self.step_started(f"step {index + 1}/{len(self.plan)}: {step.describe()}")
                self.in_step = True
            self.phase = "Progressing"
            if step.set_weight is not None:
                await self._set_weight(step.set_weight, index, "plan")
                promoted = None
            elif step.pause is not None:
                promoted = await self._pause_step(step.pause, index)
            else:
                assert step.analysis is not None
                promoted = await self._analysis_step(step.analysis, index)
            self.step_end, self.analysis_resume, self.in_step = None, None, False
            if promoted:
                self.step_failed(record, "skipped: promoted early", status="skipped")
                return promoted
            await self.step_done(record, notify=False)
            self.cursor += 1
        # the plan is done: the new version takes all traffic (a pending promote request has nothing left to skip)
        if self.promote_requested is not None:
            req, self.promote_requested = self.promote_requested, None
            self.record_action("promote", req.by, req.reason, accepted=False, note="the plan finished first")
        promoted = await self._quiet_point()
        return promoted or await self._promote("promote", "promoted", "new version at 100 %, old version scaled down")

    # ------------------------------------------------------------------ steps
    async def _resolve(self) -> None:
        """READ-ONLY: names looked up, every object the ramp touches checked, before the first change."""
        self.phase = "Resolving"
        record = self.step_started("resolve", self.router.describe())
        try:
            current = await self.interruptible(self.router.resolve(), "resolve")
        except (ActivityError, ApplicationError) as err:
            self.step_failed(record, cause_of(err))
            raise Stop(
                "Refused",
                f"canary {self.input.service} {self.input.version} refused: {cause_of(err)}; nothing was changed",
            ) from None
        self.resolved = True
        self.weight = current
        await self.step_done(record, f"{self.router.describe()}: canary at {current} % now", notify=False)

    async def _quiet_point(self) -> str | None:
        """Between steps: honour an abort, a promote request, a pause; continue as new when the history is long."""
        while True:
            self.check_abort(self.stage)
            if self.promote_requested is not None:
                promoted = await self._consider_promotion()
                if promoted:
                    return promoted
                continue
            if self.continue_as_new_due():
                self._continue_as_new()
            if not self.paused:
                return None
            await workflow.wait_condition(lambda: not self.paused or self._stopping() or self.continue_as_new_due())

    async def _consider_promotion(self) -> str | None:
        """A promote request goes through the ``promote`` gate; approved -> promote now, otherwise carry on."""
        req = self.promote_requested
        assert req is not None
        outcome = await self._held(
            self.request_approval(
                "promote",
                f"Promote {self.input.service} {self.input.version} to 100 % now",
                f"requested by {req.by}: {req.reason or 'no reason given'}; skips steps {self.cursor + 1}..{len(self.plan)}",
                fields={"weight": f"{self.weight}%", "plan": self.plan_hash},
            )
        )
        self.promote_requested = None
        self.check_abort("promote gate")
        if outcome.approved:
            return await self._promote(
                "promote early", f"promoted early, requested by {req.by}", f"approved by {outcome.decided_by or 'policy'}"
            )
        if outcome.decision == "aborted":
            raise gate_stop(outcome, "promotion")
        self.record_action("promote", outcome.decided_by or "policy", outcome.reason, accepted=False, note=f"gate {outcome.decision}")
        return None

    async def _held(self, awaitable: Any) -> GateOutcome:
        """Wait for a gate with the step's clock stopped: the time a person takes is added to the step's end."""
        started = workflow.now()
        outcome = await awaitable
        if self.step_end is not None:
            self.step_end += workflow.now() - started
        return outcome

    def _weight_changed(self, weight: int, step: int, why: str) -> None:
        if self.weights and weight == self.weight:
            return  # e.g. promotion after the plan's own 100 %: nothing changed
        self.weight = weight
        self.metrics.canary_weight(self.input.service, weight)
        self.weights.append(WeightChange(at=workflow.now(), weight=weight, step=step, why=why))
        self._publish_details()

    async def _set_weight(self, weight: int, step: int, why: str) -> None:
        """A change: not started after an abort; once started it finishes, then the abort is honoured."""
        where = f"set weight {weight}%"
        self.check_abort(where)
        await self.change(self._apply_weight(weight, step, why), where)

    async def _apply_weight(self, weight: int, step: int, why: str) -> None:
        self.touched = True
        got = await self.router.set_weight(weight)
        self._weight_changed(got, step, why)

    async def _promote(self, name: str, why: str, detail: str) -> str:
        """The new version at 100 % (the router may scale the old one down). Final: once started it finishes even
        if an abort or a cancellation arrives meanwhile; those are recorded as not honoured. A change: it waits out a
        change freeze first, as every weight change does."""
        self.check_abort(name)
        await self.respect_freeze(name)
        self.phase = "Promoting"
        record = self.step_started(name)
        self.touched = True
        task = asyncio.ensure_future(self.router.promote())
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            await task  # the workflow was cancelled: promotion is final, finish it
            self.record_action("cancel", "temporal", "the workflow was cancelled during promotion", accepted=False,
                               note="promotion is final: finished, nothing rolled back")
        self._weight_changed(100, -1, why)
        await self.step_done(record, detail, notify=False)
        if self.aborting and self.abort_request is not None:
            req = self.abort_request
            self.record_action("abort", req.requested_by, req.reason, accepted=False,
                               note="arrived during promotion: promotion is final, nothing rolled back")
        return f"{self.input.service} {self.input.version} promoted to 100 %" + (" early" if name != "promote" else "")

    async def _pause_step(self, pause: PauseSpec, index: int) -> str | None:
        if pause.duration is None:
            outcome = await self.request_approval(
                "continue",
                f"Continue canary {self.input.service} {self.input.version} past {self.weight} %",
                f"step {index + 1}/{len(self.plan)} waits for a person; reject to roll back",
                fields={"weight": f"{self.weight}%", "plan": self.plan_hash},
            )
            self.check_abort("continue gate")
            if not outcome.approved:
                self.stop_step = index
                raise gate_stop(outcome, f"not approved to continue past {self.weight} %")
            return None
        if self.step_end is None:
            self.step_end = workflow.now() + pause.duration
        while True:
            end = self.step_end
            now = workflow.now()
            if now >= end and not self.paused:
                return None

            def woken(end: datetime = end) -> bool:
                return self._stopping() or self.step_end != end or self.paused

            try:
                await workflow.wait_condition(woken, timeout=None if self.paused else end - now,
                                              timeout_summary=f"step {index + 1}: pause at {self.weight} % until "
                                                              f"{end:%H:%M:%S} UTC")
            except asyncio.TimeoutError:
                pass
            if self.paused:
                await workflow.wait_condition(lambda: not self.paused or self._stopping() or self.continue_as_new_due())
            promoted = await self._on_stop()
            if promoted:
                return promoted
            if self.continue_as_new_due():
                self._continue_as_new()

    async def _on_stop(self) -> str | None:
        """Inside a step: an abort stops the run here; a promote request is considered."""
        self.check_abort(self.stage)
        if self.promote_requested is not None:
            return await self._consider_promotion()
        return None

    def _alb_args(self) -> dict[str, str]:
        """An ALB router's CloudWatch dimension values (``alb_template()``'s arguments), from its resolved ARNs."""
        spec = self.router.spec
        if not isinstance(spec, AlbRouterSpec) or spec.listener_arn is None:
            return {}
        return alb_args(spec.listener_arn, spec.stable_target_group, spec.canary_target_group)

    def _step_deadline(self) -> datetime:
        """The running step's end, which pause and extend move (set when the step begins, cleared after it)."""
        assert self.step_end is not None
        return self.step_end

    async def _analysis_step(self, spec: AnalysisStepSpec, index: int) -> str | None:
        if self.step_end is None:
            self.step_end = workflow.now() + spec.duration
        run = AnalysisRun(
            self.templates[spec.template],
            args={
                "service": self.input.service,
                "version": self.input.version,
                "stable_version": self.input.stable_version,
                "environment": self.meta.environment,
                **self._alb_args(),
                **self.input.args,
            },
            deadline=self._step_deadline,
            hold=lambda: self.paused,
            stop=self._stopping,
            quiet_stop=self.continue_as_new_due,
            on_measurement=self._remember,
            resume=self.analysis_resume,
        )
        while True:
            verdict = await run.run()
            self.last_verdict = verdict
            if self._stopping():
                promoted = await self._on_stop()
                if promoted:
                    return promoted
                continue
            if verdict.phase == "Running":  # stopped at a quiet point because the history is long
                if self.continue_as_new_due():
                    self._continue_as_new(analysis=run.checkpoint())
                continue
            if verdict.phase == "Failed":
                self.stop_step, self.stop_verdict = index, verdict
                raise Stop("RolledBack", f"analysis failed at {self.weight} %: {verdict.reason}")
            if verdict.phase in ("Inconclusive", "Error"):
                outcome = await self._held(self._ask_person(verdict, index))
                self.check_abort("analysis decision")
                if outcome.decision == "aborted":
                    raise gate_stop(outcome, "analysis decision")
                if not outcome.approved:
                    why = "no decision before the deadline" if outcome.decision == "timed_out" else f"{outcome.decision} by {outcome.decided_by}"
                    self.stop_step, self.stop_verdict = index, verdict
                    raise Stop("RolledBack", f"analysis {verdict.phase.lower()} at {self.weight} % and {why}: {verdict.reason}")
                self.record_action("continue", outcome.decided_by or "policy", outcome.reason, note=f"after {verdict.phase.lower()} analysis")
                if workflow.now() >= self.step_end:
                    return None  # the verdict came at the end of the step: the person accepted it
                run.acknowledge()
                self.phase = "Progressing"
                continue
            return None  # Successful

    async def _ask_person(self, verdict: AnalysisVerdict, index: int) -> GateOutcome:
        self.phase = "WaitingForDecision"
        # the decision gate always needs a person, with its own deadline; no answer means roll back
        policy: ApprovalPolicy = self.meta.approval.model_copy(
            update={
                "timeout": self.input.decision_timeout,
                "on_timeout": "reject",
                "required_approvals": max(1, self.meta.approval.required_approvals),
            }
        )
        return await self.request_approval(
            "analysis-decision",
            f"Canary {self.input.service} {self.input.version}: analysis {verdict.phase.lower()} at {self.weight} %",
            f"{verdict.reason}. Approve to continue the ramp, reject to roll back. "
            f"No decision within {format_duration(self.input.decision_timeout)} rolls back.",
            policy=policy,
            fields={"step": f"{index + 1}/{len(self.plan)}", "weight": f"{self.weight}%", "metric": verdict.metric or "-"},
        )

    # ------------------------------------------------------------------ compensation: the one rollback block
    async def _compensate(self, ending: Ending) -> None:
        """Canary weight 0 first, then the canary scaled down; only when a weight change was ever started."""
        self.phase = "RollingBack"
        self.paused = False
        if self.steps and self.steps[-1].status == "running":
            self.step_failed(self.steps[-1], ending.summary)
        if self.in_step and self.stop_step is None:
            self.stop_step = self.cursor
        if not self.touched:
            ending.summary += "; nothing was changed, nothing to roll back"
            return
        record = self.step_started("rollback", ending.summary)
        try:
            await self.router.rollback()
        except (ActivityError, ApplicationError) as err:
            self.step_failed(record, f"rollback failed: {cause_of(err)}")
            ending.not_undone.append(
                f"canary {self.input.version} not back to 0 % on {self.router.describe()} ({cause_of(err)}): "
                "traffic may still reach the canary; set the weights and scale by hand"
            )
            return
        self._weight_changed(0, -1, "rolled back")
        await self.step_done(record, f"canary at 0 % on {self.router.describe()} and scaled down", notify=False)
        ending.compensated.append(f"canary {self.input.version} at 0 % on {self.router.describe()} and scaled down")
        if ending.status == "RolledBack":  # the canary misbehaved: an alert (an abort or a rejection is a person's choice)
            await self.notify(
                "rolled_back",
                f"Canary {self.input.service} {self.input.version} rolled back",
                ending.summary,
                fields=self._end_fields(ending),
                severity="error",
            )

    def _end_fields(self, ending: Ending) -> dict[str, str]:
        if ending.status == "Succeeded":
            return {"weight": f"{self.weight}%", "plan": self.plan_hash}
        fields = {"reason": ending.summary, "weight": f"{self.weight}%"}
        if self.stop_step is not None:
            fields["step"] = str(self.stop_step + 1)
        verdict = self.stop_verdict
        if verdict is not None and verdict.metric:
            fields["criterion"] = f"{verdict.metric} {verdict.condition}"
            fields["values"] = ", ".join("no data" if v is None else f"{v:g}" for v in verdict.values[-6:])
        return fields

    def _result(self, common: dict[str, Any]) -> CanaryRampResult:
        verdict, step = self.stop_verdict, self.stop_step
        return CanaryRampResult(
            **common,
            service=self.input.service,
            version=self.input.version,
            plan_hash=self.plan_hash,
            final_weight=self.weight,
            weights=list(self.weights),
            failed_step=step,
            failed_step_name=self.plan[step].describe() if step is not None and step < len(self.plan) else None,
            failed_criterion=f"{verdict.metric} {verdict.condition}" if verdict and verdict.metric else None,
            measured_values=list(verdict.values) if verdict else [],
            verdict=verdict,
            measurements_total=self.measurements_total,
        )

    # ------------------------------------------------------------------ bounded history
    def _continue_as_new(self, analysis: dict | None = None) -> None:
        """Hand the ramp to a fresh run (same workflow id); the base carries steps, gates, actions and the abort."""
        state = {
            "resolved": self.resolved,
            "touched": self.touched,
            "router": self.router.spec.model_dump(mode="json"),
            "cursor": self.cursor,
            "in_step": self.in_step,
            "weight": self.weight,
            "weights": [w.model_dump(mode="json") for w in self.weights],
            "step_end": self.step_end.isoformat() if self.step_end else None,
            "paused": self.paused,
            "paused_at": self._paused_at.isoformat() if self._paused_at else None,
            "extended": self.extended.total_seconds(),
            "promote_requested": self.promote_requested.model_dump(mode="json") if self.promote_requested else None,
            "phase": self.phase,
            "last_verdict": self.last_verdict.model_dump(mode="json") if self.last_verdict else None,
            "recent": [m.model_dump(mode="json") for m in self.recent],
            "measurements_total": self.measurements_total,
            "analysis": analysis,
        }
        workflow.continue_as_new(self.input.model_copy(update={"carry": self.carry(state=state)}))

    def _restore(self, state: dict[str, Any]) -> None:
        self.resolved = bool(state.get("resolved"))
        self.touched = bool(state.get("touched"))
        if state.get("router"):
            self.router = make_router(_router_from(state["router"]))
        self.cursor = int(state.get("cursor", 0))
        self.in_step = bool(state.get("in_step"))
        self.weight = int(state.get("weight", 0))
        self.weights = [WeightChange.model_validate(w) for w in state.get("weights", [])]
        self.step_end = _time(state.get("step_end"))
        self.paused = bool(state.get("paused"))
        self._paused_at = _time(state.get("paused_at"))
        self.extended = timedelta(seconds=float(state.get("extended", 0)))
        promote = state.get("promote_requested")
        self.promote_requested = SteerInput.model_validate(promote) if promote else None
        self.phase = state.get("phase", self.phase)
        verdict = state.get("last_verdict")
        self.last_verdict = AnalysisVerdict.model_validate(verdict) if verdict else None
        self.recent = [Measurement.model_validate(m) for m in state.get("recent", [])]
        self.measurements_total = int(state.get("measurements_total", 0))
        self.analysis_resume = state.get("analysis")

