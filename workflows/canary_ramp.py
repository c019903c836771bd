"""The canary ramp: shift traffic to a new version step by step, analyse it, roll back by itself when it misbehaves.

The plan is data (``PlanStep``: ``set_weight``, ``pause`` for a duration or until approved, ``analysis`` of a named
template for a duration). The workflow walks it with an explicit cursor (``canary`` query: step index, weight,
plan hash, recent measurements and verdicts).

- Analysis (workflows/analysis.py, core/analysis.py): Failed -> roll back at once. Inconclusive or Error past their
  limits -> pause and ask a person through the approval gate (approve = continue, reject = roll back) with its own
  deadline (``decision_timeout``); no decision by then -> roll back.
- Steering (Updates, each recorded with who and why): ``pause`` / ``resume`` (the step's clock stops while paused;
  analysis keeps measuring and can still fail the canary), ``promote`` (skip the remaining steps, through the
  approval gate), ``extend`` (push the current timed step's end), and the base's ``abort`` (roll back now).
  Cancelling the workflow is handled like an abort.
- Rollback (one block, ``_rollback``): canary weight 0 first, then the canary scaled down (router), then a
  ``rolled_back`` notification (severity error). The run then COMPLETES with result status ``RolledBack`` (or
  ``Aborted`` when a person aborted), naming the failed criterion, its values and the step; the RunbookStatus search
  attribute says the same. A rollback that itself fails fails the workflow (ApplicationError ROLLED_BACK is NOT
  used: the result carries the story; the CLI exits non-zero on RolledBack/Aborted).
- Promotion: the router puts the new version at 100 % and scales the old one down.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from core import errors
    from core.analysis import AnalysisVerdict, Measurement
    from core.approval import ApprovalPolicy, GateOutcome
    from core.canary import (  # re-exported: the workflow's own types
        RECENT_MEASUREMENTS,
        AnalysisStepSpec,
        CanaryRampInput,
        CanaryRampResult,
        CanaryView,
        ExtendInput,
        PauseSpec,
        PlanStep,
        SteerInput,
        WeightChange,
        default_plan,
        plan_hash,
    )
    from core.duration import format_duration
    from core.runbook import RunStatus
    from workflows.analysis import AnalysisRun
    from workflows.base import RunbookWorkflow
    from workflows.routers import TrafficRouter, make_router

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


@dataclass
class _Ending:
    kind: Literal["promoted", "rolled_back", "aborted"]
    summary: str
    verdict: AnalysisVerdict | None = None
    step: int | None = None


# --------------------------------------------------------------------------------------------------- workflow
@workflow.defn
class CanaryRamp(RunbookWorkflow):
    @workflow.init
    def __init__(self, input: CanaryRampInput) -> None:
        super().__init__(input.meta)
        self.input = input
        self.plan = input.plan
        self.plan_hash = plan_hash(input.plan, input.templates)
        self.templates = {t.name: t for t in input.templates}
        self.router: TrafficRouter = make_router(input.router)
        self.cursor = 0
        self.weight = 0
        self.weights: list[WeightChange] = []
        self.step_end: datetime | None = None
        self.paused = False
        self._paused_at: datetime | None = None
        self.promote_requested: SteerInput | None = None
        self.phase = "Starting"
        self.last_verdict: AnalysisVerdict | None = None
        self.recent: list[Measurement] = []
        self.measurements_total = 0
        self.finished = False

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
        )

    def status_details(self) -> dict[str, Any]:
        view = self.canary()
        data = view.model_dump(mode="json", exclude={"recent_measurements", "weights"})
        data["recent_measurements"] = [m.model_dump(mode="json") for m in self.recent[-8:]]
        return data

    # ------------------------------------------------------------------ steering
    def _refuse_if_finished(self) -> None:
        if self.finished or self.aborting or self.phase == "RollingBack":
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
        if self._gate is not None:
            raise ValueError(f"a decision is pending (gate {self._gate.gate_id}); approve or reject it first")

    @workflow.update
    def extend(self, req: ExtendInput) -> CanaryView:
        assert self.step_end is not None
        self.step_end += req.duration
        self.record_action("extend", req.by, req.reason, note=f"+{format_duration(req.duration)} to step {self.cursor}")
        return self.canary()

    @extend.validator
    def _validate_extend(self, req: ExtendInput) -> None:
        self._refuse_if_finished()
        if req.duration <= timedelta(0):
            raise ValueError("extend needs a positive duration")
        if self.step_end is None:
            raise ValueError("the current step has no duration to extend (only timed pauses and analyses do)")

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
        await self.notify(
            "started",
            f"Canary {input.service} {input.version}: starting",
            f"{len(self.plan)} steps via {self.router.describe()}, plan {self.plan_hash}",
        )
        try:
            try:
                ending = await self._walk()
            except (ActivityError, ApplicationError) as err:  # the router could not do a step: put traffic back
                cause = err.cause or err
                ending = _Ending("rolled_back", f"step {self.cursor} failed: {cause}", step=self.cursor)
            if ending.kind != "promoted":
                await self._rollback(ending)
        except asyncio.CancelledError:
            # cancelling the workflow is an abort: roll back in a block the cancellation cannot interrupt
            ending = _Ending("aborted", "workflow cancelled: rolled back", step=self.cursor)
            await asyncio.shield(asyncio.ensure_future(self._rollback(ending)))
            raise
        return await self._finish(ending)

    async def _walk(self) -> _Ending:
        while self.cursor < len(self.plan):
            ending = await self._wait_while_paused()
            if ending is not None:
                return ending
            index, step = self.cursor, self.plan[self.cursor]
            record = self.step_started(f"step {index + 1}/{len(self.plan)}: {step.describe()}")
            self.phase = "Progressing"
            if step.set_weight is not None:
                await self._set_weight(step.set_weight, index, "plan")
                ending = None
            elif step.pause is not None:
                ending = await self._pause_step(step.pause, index)
            else:
                assert step.analysis is not None
                ending = await self._analysis_step(step.analysis, index)
            self.step_end = None
            if ending is not None:
                self.step_failed(record, ending.summary)
                return ending
            await self.step_done(record, notify=False)
            self.cursor += 1
        # the plan is done: the new version takes all traffic
        record = self.step_started("promote")
        await self.router.promote()
        self._weight_changed(100, -1, "promoted")
        await self.step_done(record, "new version at 100 %, old version scaled down", notify=False)
        return _Ending("promoted", f"{self.input.service} {self.input.version} promoted to 100 %")

    async def _wait_while_paused(self) -> _Ending | None:
        while True:
            await workflow.wait_condition(lambda: not self.paused or self._stopping())
            ending = await self._handle_stop()
            if ending is not None or not self._stopping():
                return ending

    async def _handle_stop(self) -> _Ending | None:
        """Act on abort or promote; None means carry on with the current step."""
        if self.aborting:
            assert self.abort_request is not None
            req = self.abort_request
            return _Ending("aborted", f"aborted by {req.requested_by}: {req.reason}", step=self.cursor)
        if self.promote_requested is not None:
            req = self.promote_requested
            outcome = await self._held(
                self.request_approval(
                    "promote",
                    f"Promote {self.input.service} {self.input.version} to 100 % now",
                    f"requested by {req.by}: {req.reason or 'no reason given'}; skips steps {self.cursor + 1}..{len(self.plan)}",
                    fields={"weight": f"{self.weight}%", "plan": self.plan_hash},
                )
            )
            self.promote_requested = None
            if self.aborting:
                return await self._handle_stop()
            if outcome.approved:
                record = self.step_started("promote early")
                await self.router.promote()
                self._weight_changed(100, -1, f"promoted early, requested by {req.by}")
                await self.step_done(record, f"approved by {outcome.decided_by or 'policy'}", notify=False)
                return _Ending("promoted", f"{self.input.service} {self.input.version} promoted early to 100 %")
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
        self.weights.append(WeightChange(at=workflow.now(), weight=weight, step=step, why=why))
        self._publish_details()

    async def _set_weight(self, weight: int, step: int, why: str) -> None:
        got = await self.router.set_weight(weight)
        self._weight_changed(got, step, why)

    async def _pause_step(self, pause: Any, index: int) -> _Ending | None:
        if pause.duration is None:
            outcome = await self.request_approval(
                "continue",
                f"Continue canary {self.input.service} {self.input.version} past {self.weight} %",
                f"step {index + 1}/{len(self.plan)} waits for a person",
                fields={"weight": f"{self.weight}%", "plan": self.plan_hash},
            )
            if outcome.approved:
                return None
            if self.aborting:
                return await self._handle_stop()
            return _Ending("rolled_back", f"not approved to continue ({outcome.decision}): {outcome.reason}", step=index)
        self.step_end = workflow.now() + pause.duration
        while True:
            end = self.step_end
            now = workflow.now()
            if now >= end and not self.paused:
                return None
            try:
                await workflow.wait_condition(
                    lambda: self._stopping() or self.step_end != end or self.paused,
                    timeout=None if self.paused else end - now,
                )
            except asyncio.TimeoutError:
                pass
            if self.paused:
                await workflow.wait_condition(lambda: not self.paused or self._stopping())
            if self._stopping():
                ending = await self._handle_stop()
                if ending is not None:
                    return ending

    async def _analysis_step(self, spec: AnalysisStepSpec, index: int) -> _Ending | None:
        self.step_end = workflow.now() + spec.duration
        run = AnalysisRun(
            self.templates[spec.template],
            args={
                "service": self.input.service,
                "version": self.input.version,
                "stable_version": self.input.stable_version,
                "environment": self.meta.environment,
                **self.input.args,
            },
            deadline=lambda: self.step_end,  # type: ignore[arg-type,return-value]
            hold=lambda: self.paused,
            stop=self._stopping,
            on_measurement=self._remember,
        )
        while True:
            verdict = await run.run()
            self.last_verdict = verdict
            if self._stopping():
                ending = await self._handle_stop()
                if ending is not None:
                    return ending
                continue
            if verdict.phase == "Failed":
                return _Ending("rolled_back", f"analysis failed at {self.weight} %: {verdict.reason}", verdict, index)
            if verdict.phase in ("Inconclusive", "Error"):
                outcome = await self._held(self._ask_person(verdict, index))
                if self.aborting:
                    return await self._handle_stop()
                if not outcome.approved:
                    why = "no decision before the deadline" if outcome.decision == "timed_out" else f"{outcome.decision} by {outcome.decided_by}"
                    return _Ending("rolled_back", f"analysis {verdict.phase.lower()} at {self.weight} % and {why}: {verdict.reason}", verdict, index)
                self.record_action("continue", outcome.decided_by or "policy", outcome.reason, note=f"after {verdict.phase.lower()} analysis")
                if workflow.now() >= self.step_end:  # type: ignore[operator]
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
    async def _rollback(self, ending: _Ending) -> None:
        self.phase = "RollingBack"
        self.paused = False
        self.set_status("RollingBack", f"rolling back: {ending.summary}")
        record = self.step_started("rollback", ending.summary)
        try:
            await self.router.rollback()  # weight 0 first, then the canary scaled down
        except ActivityError as err:
            cause = err.cause or err
            self.step_failed(record, f"rollback failed: {cause}")
            await self.finish("Failed", f"ROLLBACK FAILED, traffic may still reach the canary: {cause}", severity="critical")
            raise ApplicationError(
                f"rollback of {self.input.service} {self.input.version} failed: {cause}; check {self.router.describe()} by hand",
                type=errors.ROLLED_BACK,
                non_retryable=True,
            ) from err
        self._weight_changed(0, -1, "rolled back")
        await self.step_done(record, f"canary at 0 % on {self.router.describe()} and scaled down", notify=False)
        fields = {"step": str((ending.step or 0) + 1), "reason": ending.summary}
        if ending.verdict is not None and ending.verdict.metric:
            fields["criterion"] = f"{ending.verdict.metric} {ending.verdict.condition}"
            fields["values"] = ", ".join("no data" if v is None else f"{v:g}" for v in ending.verdict.values[-6:])
        await self.notify(
            "rolled_back",
            f"Canary {self.input.service} {self.input.version} rolled back",
            ending.summary,
            fields=fields,
            severity="error",
        )

    async def _finish(self, ending: _Ending) -> CanaryRampResult:
        self.finished = True
        status: RunStatus = {"promoted": "Succeeded", "rolled_back": "RolledBack", "aborted": "Aborted"}[ending.kind]  # type: ignore[assignment]
        self.phase = status
        verdict = ending.verdict
        step_name = self.plan[ending.step].describe() if ending.step is not None and ending.step < len(self.plan) else None
        await self.finish(status, ending.summary, severity="info" if status == "Succeeded" else "error")
        return CanaryRampResult(
            status=status,
            summary=ending.summary,
            steps=list(self._steps),
            gates=list(self._closed_gates),
            service=self.input.service,
            version=self.input.version,
            plan_hash=self.plan_hash,
            final_weight=self.weight,
            weights=list(self.weights),
            failed_step=ending.step,
            failed_step_name=step_name,
            failed_criterion=f"{verdict.metric} {verdict.condition}" if verdict and verdict.metric else None,
            measured_values=list(verdict.values) if verdict else [],
            verdict=verdict,
            measurements_total=self.measurements_total,
        )
