"""The release: one version of a service through its environments, each stage a child runbook already in the product.

Steps (the ``stage`` of the status query; ``details.stages`` holds every stage and wave with its child's id):
1. ``validate``: every stage's and wave's child input is built and validated (an unknown strategy, a wave without a
   router, a child parameter the child refuses): a problem ends the run ``Refused``, naming the field.
2. the change calendar (runbooks/calendar.yaml): each child checks it before each of its changes, as its own
   runbook in the stage's environment; the release checks its own entry (``release`` in the catalog's environment,
   production) before each stage in that environment, and waits out a freeze there (or is refused, per the
   catalog's ``freeze``), before that stage's first wave (``_change_calendar``).
3. ``last-known-good``: the ledger (PostgreSQL, ``activities.release_ledger``) is read: per environment the last
   version that finished healthy, and the versions marked bad. A version marked bad is ``Refused`` unless the input
   asks for an override (``override_bad_version``), which a person approves (gate ``override-bad-version``).
4. per stage, in order: its approval (the catalog's policy for the stage's environment, ``promote-<stage>``; a
   policy of no approvals opens no gate); then per wave (a stage without waves is one run): the bake since the last
   wave, the error-budget gate (availability over the SLO window from the metrics provider; a spent budget blocks
   unless a person breaks the glass through a ``break-glass`` gate, recorded), the child run (canary-ramp or
   blue-green, id ``<release id>.<stage>.<wave>``), the wave's checks; then the stage's checks, and the stage's
   environment is recorded good in the ledger.
Stop the line: a child that does not succeed, or a failed check, ends the release ``RolledBack`` (the child rolled
its own wave back), marks the version bad in the ledger, and (``rollback_promoted``, the default) takes the stage's
promoted waves back, newest first, to the environment's last known good version through the same strategy (child
``<wave id>.restore``, no approval: it is compensation; a canary wave's restore swaps the ramp's sides, so traffic goes
back to the stable side that served before the wave, ``core.release.canary_restore``). An abort at any point aborts
the running child (it undoes its own wave) and compensates the same way. One compensation block: ``_compensate``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError, ChildWorkflowError

with workflow.unsafe.imports_passed_through():
    from pydantic import ValidationError

    from activities.http_checks import HttpCheckActivities
    from activities.kubernetes import KubernetesActivities
    from activities.metrics import MetricsActivities
    from activities.release_ledger import ReleaseLedgerActivities
    from core.analysis import Condition, MeasureInput, Measurement, MetricSpec
    from core.approval import AbortInput, ApprovalPolicy
    from core.duration import format_duration
    from core.http_checks import HttpCheck, HttpSuiteInput, HttpSuiteResult
    from core.kubernetes import JobOutcome, JobRunInput
    from core.release import (  # the runbook's contract (input, result) is re-exported: the workflow's own types
        ONE_RUN,
        STRATEGIES,
        BudgetCheck,
        CheckSpec,
        HttpCheckSpec,
        JobCheckSpec,
        LedgerEntry,
        LedgerQuery,
        LedgerView,
        ReleaseInput,
        ReleaseResult,
        StageSpec,
        StageView,
        Verdict,
        WaveSpec,
        WaveView,
        child_input,
        error_budget,
        expand,
        job_name,
        waves_of,
    )
    from core.runbook import RunbookInput, RunbookResult
    from workflows.base import ACTIVITY_RETRY, Ending, RunbookWorkflow, Stop, cause_of, gate_stop, until_done

NOTHING_CHANGED = "nothing was changed"


# --------------------------------------------------------------------------------------------------- workflow
@workflow.defn
class Release(RunbookWorkflow):
    @workflow.init
    def __init__(self, input: ReleaseInput) -> None:
        super().__init__(input.meta, input.carry)
        self.input = input
        self.views = [
            StageView(name=s.name, environment=s.environment, strategy=s.strategy,
                      waves=[WaveView(stage=s.name, wave=w.name if w else ONE_RUN) for w in waves_of(s)])
            for s in input.stages
        ]
        self.budget: list[BudgetCheck] = []
        self.ledger: LedgerView | None = None
        self.restore_to: dict[str, str] = {}  # environment -> the last known good version before this run
        self.current: int | None = None  # the stage under way
        self.running: tuple[Any, WaveView] | None = None  # the child run under way, and its wave
        self.line_stopped = False  # a wave or a check failed: the version is bad
        self.marked_bad = False
        self.override: str | None = None
        self.ledger_failures: list[str] = []

    def status_details(self) -> dict[str, Any]:
        return {
            "service": self.input.service,
            "version": self.input.version,
            "stage_index": self.current,
            "stages": [v.model_dump(mode="json") for v in self.views],
            "running_child": self.running[1].child_workflow_id if self.running else None,
            "budget": [b.model_dump(mode="json") for b in self.budget],
            "last_known_good": dict(self.ledger.last_good) if self.ledger else {},
            "restore_to": dict(self.restore_to),
            "bad_version_override": self.override,
            "ledger_failures": list(self.ledger_failures),
            "plan": self._plan_steps(),
        }

    def _plan_steps(self) -> list[str]:
        """The step names this release walks, in order (for `runbook watch`)."""
        steps = ["validate", "last-known-good"]
        for stage in self.input.stages:
            steps.append(f"{stage.name}: approval")
            for n, wave in enumerate(waves_of(stage)):
                where = f"{stage.name}/{wave.name if wave else ONE_RUN}"
                if n and stage.bake:
                    steps.append(f"{where}: bake")
                if stage.error_budget:
                    steps.append(f"{where}: error budget")
                steps.append(f"{where}: {stage.strategy}")
                if wave is not None and wave.checks:
                    steps.append(f"{where}: checks")
            if stage.checks:
                steps.append(f"{stage.name}: checks")
        return steps

    # ------------------------------------------------------------------ run
    @workflow.run
    async def run(self, input: ReleaseInput) -> ReleaseResult:
        self.begin()
        ending = await self.conduct(self._release, self._compensate)
        return await self.conclude(ending, self._result)

    async def _release(self) -> str:
        i = self.input
        rec = self.step_started("validate", f"{len(i.stages)} stage(s)")
        problems = i.problems()
        if problems:
            self.step_failed(rec, "; ".join(problems))
            raise Stop("Refused", f"release of {i.service} {i.version} refused: {'; '.join(problems)}; {NOTHING_CHANGED}",
                       severity="warning")
        await self.step_done(rec, " -> ".join(s.name for s in i.stages), notify=False)
        await self._last_known_good()
        for index, stage in enumerate(i.stages):
            self.current = index
            await self._run_stage(stage, self.views[index])
        self.current = None
        return f"{i.service} {i.version} released through {' -> '.join(s.name for s in i.stages)}"

    async def _change_calendar(self, stage: StageSpec) -> None:
        """The release's own freeze check (its children check theirs before each change): before a stage in the
        run's environment (``release`` in production), the base's ``respect_freeze`` waits out a freeze window (a
        break-glass approval may end the wait) or refuses per the catalog."""
        if stage.environment == self.meta.environment:
            await self.respect_freeze(f"{stage.name}: change calendar")

    async def _last_known_good(self) -> None:
        i = self.input
        rec = self.step_started("last-known-good", f"ledger of {i.service}")
        try:
            view: LedgerView = await self.interruptible(workflow.execute_activity_method(
                ReleaseLedgerActivities.ledger_read, LedgerQuery(service=i.service),
                start_to_close_timeout=timedelta(seconds=60), retry_policy=ACTIVITY_RETRY,
            ), "last-known-good")
        except (ActivityError, ApplicationError) as err:
            self.step_failed(rec, cause_of(err))
            raise Stop("Refused", f"the release ledger cannot be read: {cause_of(err)}; {NOTHING_CHANGED}",
                       severity="warning") from None
        self.ledger = view
        self.restore_to = {env: v for env, v in view.last_good.items() if v != i.version}
        known = ", ".join(f"{env} {v}" for env, v in sorted(view.last_good.items())) or "none yet"
        why = view.bad.get(i.version)
        if why is None:
            await self.step_done(rec, f"last known good: {known}", notify=False)
            return
        if not i.override_bad_version:
            self.step_failed(rec, f"version {i.version} is marked bad: {why}")
            raise Stop("Refused", f"version: {i.version} is marked bad ({why}); to release it anyway set "
                                  f"override_bad_version=true and have it approved; {NOTHING_CHANGED}", severity="warning")
        outcome = await self.request_approval(
            "override-bad-version",
            f"Release {i.service} {i.version}, a version marked bad",
            f"{i.version} was marked bad: {why}. Last known good: {known}.",
            binding=f"{i.service} {i.version}: override bad",
            policy=self._policy("production"),
        )
        if not outcome.approved:
            self.step_failed(rec, f"override {outcome.decision.replace('_', ' ')}")
            raise gate_stop(outcome, f"release of {i.service} {i.version} (marked bad)")
        self.override = ", ".join(a.approver for a in outcome.approvals)
        await self.step_done(rec, f"{i.version} is marked bad ({why}); released anyway, approved by {self.override}")

    def _policy(self, environment: str) -> ApprovalPolicy:
        return self.meta.approval_by_environment.get(environment, self.meta.approval)

    # ------------------------------------------------------------------ a stage
    async def _run_stage(self, stage: StageSpec, view: StageView) -> None:
        i = self.input
        policy = self._policy(stage.environment)
        self.check_abort(f"{stage.name}: approval")
        view.phase = "approval"
        rec = self.step_started(f"{stage.name}: approval")
        waves = ", ".join(w.wave for w in view.waves)
        gate = self.open_gate(
            f"promote-{stage.name}",
            f"Release {i.service} {i.version} to {stage.name}",
            f"{stage.strategy} in {stage.environment}, waves: {waves}"
            + (f", {format_duration(stage.bake)} bake between waves" if stage.bake and len(view.waves) > 1 else "")
            + (", error budget gated" if stage.error_budget else ""),
            binding=f"{i.service} {i.version} -> {stage.name}",
            policy=policy,
        )
        view.gate_id = gate.id
        outcome = gate.outcome() if not gate.open else await gate.wait()
        if not outcome.approved:
            self.step_failed(rec, f"{outcome.decision.replace('_', ' ')}: {outcome.reason}")
            view.phase = "failed"
            raise gate_stop(outcome, f"release of {i.service} {i.version} to {stage.name}")
        approvers = ", ".join(a.approver for a in outcome.approvals)
        await self.step_done(rec, f"approved by {approvers}" if approvers else "no approval required by policy",
                             notify=False)
        await self._change_calendar(stage)
        view.phase = "running"
        for n, (spec, wave) in enumerate(zip(waves_of(stage), view.waves, strict=True)):
            where = f"{stage.name}/{wave.wave}"
            if n and stage.bake:
                rec = self.step_started(f"{where}: bake", format_duration(stage.bake))
                await self.interruptible(workflow.sleep(stage.bake, summary=f"bake before {where}"), f"{where}: bake")
                await self.step_done(rec, f"{view.waves[n - 1].wave} baked {format_duration(stage.bake)}", notify=False)
            if stage.error_budget:
                wave.phase = "budget"
                await self._budget_gate(stage, spec, wave.wave, policy)
            await self._wave(stage, spec, wave, approvers or "policy")
            if spec is not None and spec.checks:
                await self._checks(stage, spec.checks, wave.wave)
        if stage.checks:
            view.phase = "checks"
            await self._checks(stage, stage.checks, None)
        view.phase = "done"
        await self._record(stage.environment, "good", f"{stage.name} finished healthy")

    async def _wave(self, stage: StageSpec, spec: WaveSpec | None, wave: WaveView, approvers: str) -> None:
        i = self.input
        where = f"{stage.name}/{wave.wave}"
        child_id = f"{workflow.info().workflow_id}.{stage.name}.{wave.wave}"
        arg = child_input(i, stage, spec, i.version, self.meta, self._policy(stage.environment),
                          preapproved=f"release {workflow.info().workflow_id}, gate promote-{stage.name} ({approvers})")
        self.check_abort(where)
        rec = self.step_started(f"{where}: {stage.strategy}", f"child {child_id}")
        wave.phase, wave.child_workflow_id, wave.started_at = "running", child_id, workflow.now()
        result = await self._child(stage, arg, child_id, wave)
        wave.child_status, wave.summary, wave.finished_at = result.status, result.summary, workflow.now()
        if result.status == "Succeeded":
            wave.phase = "promoted"
            await self.step_done(rec, f"{child_id}: {result.summary}")
            return
        wave.phase = "failed"
        self.step_failed(rec, f"{child_id} {result.status}: {result.reason or result.summary}")
        if self.aborting:
            raise self.abort_stop(where)
        if result.status == "Rejected":
            raise Stop("Rejected", f"{where}: {child_id} was rejected: {result.reason or result.summary}")
        if result.status == "Aborted":
            raise Stop("Aborted", f"{where}: {child_id} was aborted: {result.reason or result.summary}")
        if result.status == "Held":
            raise Stop("Held", f"stop the line: {where} is held ({result.reason or result.summary}): a person must "
                               "look before anything else changes", severity="critical")
        self.line_stopped = result.status in ("RolledBack", "Failed")
        raise Stop("RolledBack", f"stop the line: {where} ended {result.status} ({result.reason or result.summary})",
                   severity="error")

    async def _child(self, stage: StageSpec, arg: RunbookInput, child_id: str, wave: WaveView | None) -> RunbookResult:
        """Start a child runbook and wait for its end; an abort of the release aborts the child (which undoes its own
        wave) and waits for it. ``wave`` None: a compensation run (not aborted by the release's abort)."""
        _, workflow_type = STRATEGIES[stage.strategy]
        handle = await workflow.start_child_workflow(workflow_type, arg, id=child_id, result_type=dict)
        if wave is not None:
            self.running = (handle, wave)
            try:
                await workflow.wait_condition(lambda: handle.done() or self.aborting)
            finally:
                if not handle.done():
                    await self._abort_child()
            self.running = None
        else:
            await until_done(handle)
        return await _outcome(handle)

    async def _abort_child(self) -> None:
        """Abort the running child (it compensates its own wave) and wait until it has ended, even if the release is
        cancelled meanwhile."""
        assert self.running is not None
        handle, wave = self.running
        req = self.abort_request or AbortInput(requested_by="temporal", reason="the release was cancelled")
        await handle.signal("abort_signal", AbortInput(requested_by=req.requested_by,
                                                       reason=f"release {workflow.info().workflow_id} aborted: {req.reason}"))
        await until_done(handle)

    # ------------------------------------------------------------------ error budget
    async def _budget_gate(self, stage: StageSpec, spec: WaveSpec | None, wave: str, policy: ApprovalPolicy) -> None:
        i, slo = self.input, self.input.slo
        where = f"{stage.name}/{wave}"
        rec = self.step_started(f"{where}: error budget", f"objective {slo.objective} % over {format_duration(slo.window)}")
        args = {"service": i.service, "environment": stage.environment, "stage": stage.name, "wave": wave,
                **(spec.args if spec else {})}
        metric = MetricSpec(name="availability", query=slo.availability, unit="%",
                            success=Condition(op=">=", threshold=slo.objective))
        value: float | None
        try:
            measured: Measurement = await self.interruptible(workflow.execute_activity_method(
                MetricsActivities.measure_metric, MeasureInput(metric=metric, args=args),
                start_to_close_timeout=timedelta(minutes=2), retry_policy=ACTIVITY_RETRY,
            ), f"{where}: error budget")
            value = measured.value if measured.phase != "Error" else None
            note = measured.message
        except ActivityError as err:
            value, note = None, cause_of(err)
        remaining, blocked, why = error_budget(value, slo.objective)
        if value is None and note:
            why += f" ({note})"
        check = BudgetCheck(where=where, at=workflow.now(), objective=slo.objective,
                            window_seconds=slo.window.total_seconds(), availability=value,
                            remaining_percent=remaining, blocked=blocked, reason=why)
        self.budget.append(check)
        if not blocked:
            await self.step_done(rec, why, notify=False)
            return
        if policy.required_approvals == 0:
            self.step_failed(rec, why)
            raise Stop("Rejected", f"{where}: {why}; the {stage.environment} policy names nobody who may break the glass")
        outcome = await self.request_approval(
            f"break-glass-{stage.name}-{wave}",
            f"Break glass: release {i.service} {i.version} to {where} with the error budget blocked",
            why,
            binding=f"break-glass {i.service} {i.version} {where}",
            policy=policy,
        )
        check.gate_id = outcome.gate_id
        if not outcome.approved:
            self.step_failed(rec, f"{why}; break-glass {outcome.decision.replace('_', ' ')}")
            raise gate_stop(outcome, f"{where}: {why}; break-glass")
        check.break_glass = [a.approver for a in outcome.approvals]
        await self.step_done(rec, f"{why}; break-glass approved by {', '.join(check.break_glass)}")

    # ------------------------------------------------------------------ checks
    async def _checks(self, stage: StageSpec, checks: list[CheckSpec], wave: str | None) -> None:
        """The check step: each check in order (an HTTP smoke request, or a Kubernetes Job run to its end); its
        outcome goes into the stage's view (``checks``). A failed check stops the line as a rolled-back wave does;
        a job that could not even be run (no such namespace, no access) stops it without marking the version bad."""
        i = self.input
        where = stage.name + (f"/{wave}" if wave else "")
        rec = self.step_started(f"{where}: checks", ", ".join(c.name for c in checks))
        fields = {"version": i.version, "service": i.service, "stage": stage.name, "wave": wave or ""}
        view = self.views[self.current or 0]
        results: list[str] = []
        for check in checks:
            if isinstance(check, JobCheckSpec):
                passed, line, outcome = await self._job_check(check, where, fields, rec)
            else:
                passed, line, outcome = await self._http_check(check, where, fields)
            view.checks.append({"where": where, "name": check.name, "kind": check.kind, "passed": passed,
                                "summary": line, **outcome})
            results.append(line)
            if not passed:
                self.step_failed(rec, "; ".join(results))
                if view.phase == "checks":
                    view.phase = "failed"
                self.line_stopped = True
                raise Stop("RolledBack", f"stop the line: {where} check {check.name} failed: {line}", severity="error")
        await self.step_done(rec, "; ".join(results), notify=False)

    async def _http_check(self, check: HttpCheckSpec, where: str,
                          fields: dict[str, str]) -> tuple[bool, str, dict[str, Any]]:
        suite: HttpSuiteResult = await self.interruptible(workflow.execute_activity_method(
            HttpCheckActivities.http_check_suite,
            HttpSuiteInput(
                checks=[HttpCheck(name=check.name, url=expand(check.url, fields),
                                  expect_status=check.expect_status,
                                  expect_body=expand(check.expect_body, fields) if check.expect_body else None,
                                  timeout_seconds=check.timeout_seconds)],
                attempts=check.attempts, interval_seconds=check.interval.total_seconds(),
            ),
            start_to_close_timeout=timedelta(seconds=(check.timeout_seconds + check.interval.total_seconds())
                                             * check.attempts + 30),
            heartbeat_timeout=timedelta(seconds=max(30.0, check.timeout_seconds + check.interval.total_seconds() + 10)),
            retry_policy=ACTIVITY_RETRY,
        ), f"{where}: checks")
        return suite.passed, suite.summary(), {}

    async def _job_check(self, check: JobCheckSpec, where: str, fields: dict[str, str],
                         rec: Any) -> tuple[bool, str, dict[str, Any]]:
        """A Kubernetes Job run to its end (``k8s_run_job``, heartbeating): named from this run, the stage/wave and
        the check, so a retried activity finds the Job its earlier attempt created. An abort cancels the wait, and
        the activity deletes the Job."""
        info = workflow.info()
        req = JobRunInput(
            context=check.context, namespace=check.namespace,
            name=job_name(check.name, info.workflow_id, info.run_id, where),
            image=expand(check.image, fields), command=[expand(c, fields) for c in check.command],
            args=[expand(a, fields) for a in check.args], backoff_limit=check.backoff_limit,
            deadline_seconds=check.timeout.total_seconds(), poll_seconds=check.poll_interval.total_seconds(),
            labels={"runbook-automation/check": check.name},
            annotations={"runbook-automation/workflow-id": info.workflow_id, "runbook-automation/check": where},
        )
        try:
            outcome: JobOutcome = await self.interruptible(workflow.execute_activity_method(
                KubernetesActivities.run_job, req,
                start_to_close_timeout=check.timeout + timedelta(minutes=2),
                heartbeat_timeout=max(timedelta(seconds=30), check.poll_interval * 3),
                retry_policy=ACTIVITY_RETRY,
            ), f"{where}: checks")
        except ActivityError as err:
            why = f"job {req.namespace}/{req.name} could not run: {cause_of(err)}"
            self.step_failed(rec, why)
            if self.views[self.current or 0].phase == "checks":
                self.views[self.current or 0].phase = "failed"
            raise Stop("RolledBack", f"stop the line: {where} check {check.name}: {why} (the version is not marked "
                                     "bad: it was never tested)", severity="error") from None
        return outcome.succeeded, outcome.summary(), {"job": outcome.model_dump(mode="json")}

    # ------------------------------------------------------------------ the ledger
    async def _record(self, environment: str, verdict: Verdict, reason: str) -> None:
        """One verdict in the ledger; a failure to write it is reported, never a reason to undo a release."""
        i = self.input
        entry = LedgerEntry(service=i.service, environment=environment, version=i.version, verdict=verdict,
                            workflow_id=workflow.info().workflow_id, reason=reason)
        try:
            await workflow.execute_activity_method(
                ReleaseLedgerActivities.ledger_record, entry,
                start_to_close_timeout=timedelta(seconds=60), retry_policy=ACTIVITY_RETRY,
            )
        except ActivityError as err:
            self.ledger_failures.append(f"{environment} {verdict}: {cause_of(err)}")
            return
        if self.ledger is not None:
            if verdict == "good" and i.version not in self.ledger.bad:
                self.ledger.last_good[environment] = i.version
            elif verdict == "bad":
                self.ledger.bad[i.version] = reason
                self.ledger.last_good = {e: v for e, v in self.ledger.last_good.items() if v != i.version}

    # ------------------------------------------------------------------ compensation: the ONE block
    async def _compensate(self, ending: Ending) -> None:
        if self.running is not None:  # a cancellation reached the release while a child ran: abort it first
            handle, wave = self.running
            if not handle.done():
                await self._abort_child()
            result = await _outcome(handle)
            wave.phase, wave.child_status, wave.summary = "failed", result.status, result.summary
            self.running = None
        if self.current is None:
            return
        stage, view = self.input.stages[self.current], self.views[self.current]
        if view.phase not in ("done", "failed"):
            view.phase = "failed"
        if self.line_stopped and not self.marked_bad:
            self.marked_bad = True
            await self._record(stage.environment, "bad", ending.summary)
        promoted = [(spec, w) for spec, w in zip(waves_of(stage), view.waves, strict=True) if w.phase == "promoted"]
        if not promoted or ending.status == "Held":
            return
        if not stage.rollback_promoted:
            ending.summary += f"; promoted waves kept on {self.input.version} (rollback_promoted is off): " + \
                ", ".join(w.wave for _, w in promoted)
            return
        target = self.restore_to.get(stage.environment)
        for spec, wave in reversed(promoted):
            where = f"{stage.name}/{wave.wave}"
            if target is None:
                wave.phase = "not-restored"
                ending.not_undone.append(f"{where} still runs {self.input.version}: {self.input.service} has no last "
                                         f"known good version in {stage.environment} to return to")
                continue
            await self._restore(stage, spec, wave, target, ending)

    async def _restore(self, stage: StageSpec, spec: WaveSpec | None, wave: WaveView, target: str,
                       ending: Ending) -> None:
        where = f"{stage.name}/{wave.wave}"
        child_id = f"{wave.child_workflow_id}.restore"
        rec = self.step_started(f"{where}: restore", f"{target} via {child_id}")
        wave.phase, wave.restore_workflow_id = "restoring", child_id
        try:
            arg = child_input(self.input, stage, spec, target, self.meta, ApprovalPolicy(required_approvals=0),
                              preapproved=f"stop-the-line rollback of release {workflow.info().workflow_id}",
                              restore=True)
            result = await self._child(stage, arg, child_id, None)
        except (ChildWorkflowError, ValidationError) as err:
            result = RunbookResult(status="Failed", summary=cause_of(err))
        if result.status == "Succeeded":
            wave.phase = "restored"
            self.step_failed(rec, f"back on {target}: {result.summary}", status="compensated")
            how = (f": all traffic on the stable side, which served before this release; {self.input.version} left "
                   "at 0 % on the canary side" if stage.strategy == "canary" else "")
            ending.compensated.append(f"{where} back on {target} ({child_id}){how}")
        else:
            wave.phase = "not-restored"
            self.step_failed(rec, f"{child_id} {result.status}: {result.reason or result.summary}")
            ending.not_undone.append(f"{where} still runs {self.input.version}: its rollback to {target} ended "
                                     f"{result.status} ({child_id})")

    # ------------------------------------------------------------------ result
    def _result(self, common: dict[str, Any]) -> ReleaseResult:
        return ReleaseResult(
            **common,
            service=self.input.service,
            version=self.input.version,
            stages=list(self.views),
            budget=list(self.budget),
            last_known_good=dict(self.ledger.last_good) if self.ledger else {},
            marked_bad=self.marked_bad,
        )


async def _outcome(handle: Any) -> RunbookResult:
    """A child's result once it has ended (a Failed child's result is its failure's details)."""
    try:
        raw = await handle
    except ChildWorkflowError as err:
        cause = err.cause
        if isinstance(cause, ApplicationError) and cause.details:
            raw = cause.details[0]
        else:
            return RunbookResult(status="Failed", summary=cause_of(err), reason=cause_of(err))
    return RunbookResult.model_validate(raw)
