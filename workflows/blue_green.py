"""Blue-green cutover: bring the new colour up beside the live one, check it, ask a person, switch in one step,
bake, and retire the old colour after a delay, with a way back at every moment.

Steps (the ``stage`` of the status query):
1. ``discover``: read the router (read-only) to learn the live colour and validate every target; a blank or unknown
   Service, Deployment, listener or target group ends the run ``Refused``: nothing was changed.
2. ``bring-up``: Kubernetes: a Deployment ``<service>-<colour>`` from the live colour's pod template with the new
   image and the live replicas, then wait for its rollout (progress deadline); ALB: register the new targets in
   the new colour's target group.
3. ``preview``: HTTP health checks, then smoke requests, against the new colour only; then the pre-promotion
   analysis (optional).
4. ``approval``: the gate shows what will switch and the preview results; the binding names the switch.
5. ``switch``: one call (Service selector / listener default action), verified by reading it back.
6. ``bake``: the post-promotion analysis (metrics + HTTP health of the new colour) until the bake ends, a person
   promotes now (through its own gate, which may be open beside a ``bake-inconclusive`` gate) or extends it; a
   breach or an abort switches straight back. A long bake continues as new at a quiet point.
7. ``scale-down``: after the scale-down delay, the old colour is scaled to zero / its targets deregistered.

One way to end (``RunbookWorkflow.conduct``/``conclude``): the procedure returns its summary or raises ``Stop``;
a failed activity is ``RolledBack``, an abort or a cancellation ``Aborted``, a rejected or timed-out cutover gate
``Rejected``, an invalid or unknown target ``Refused``. Compensation lives in one place (``_compensate``): before
the switch it removes the new colour and leaves the live one untouched; after the switch it switches back first,
then removes the new colour; an abort while the old colour is being retired brings it back first. A failure while
retiring the old colour after a clean bake ends ``Held``: the release stays live, the old colour still runs, and the
summary says what to do by hand. What compensation could not undo makes the run ``Failed`` (the only ending that
fails the workflow). docs/bluegreen.md has the table of what an abort does at each step.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.http_checks import HttpCheckActivities
    from core import errors
    from core.analysis import (
        AnalysisTemplate,
        AnalysisVerdict,
        Condition,
        HttpHealthQuery,
        Measurement,
        MetricSpec,
    )
    from core.approval import GateOutcome
    from core.bluegreen import (  # the runbook's contract, re-exported
        HEALTH_METRIC,
        BlueGreenInput,
        BlueGreenResult,
        PreviewCheck,
    )
    from core.duration import format_duration, format_span
    from core.http_checks import HttpCheck, HttpSuiteInput, HttpSuiteResult
    from core.traffic import COLOURS, Discovery
    from workflows.analysis import AnalysisRun
    from workflows.base import (
        ACTIVITY_RETRY,
        Ending,
        RunbookWorkflow,
        Stop,
        cause_of,
        error_type,
        gate_stop,
        until_done,
    )
    from workflows.contract import ExtendBakeInput, PromoteNowInput
    from workflows.gate import ApprovalGate
    from workflows.steering import BlueGreenSteering
    from workflows.traffic import TrafficRouter, make_router

# failures of a read-only discovery that mean "the target is wrong or missing": the run is Refused
REFUSING_ERRORS = (errors.INVALID_INPUT, errors.NOT_FOUND, errors.ACCESS_DENIED)
NOTHING_CHANGED = "nothing was changed"


# --------------------------------------------------------------------------------------------------- workflow
@workflow.defn
class BlueGreenCutover(RunbookWorkflow, BlueGreenSteering):
    @workflow.init
    def __init__(self, input: BlueGreenInput) -> None:
        super().__init__(input.meta, input.carry)
        self._input = input
        config = input.kubernetes if input.router == "kubernetes" else input.alb
        assert config is not None  # BlueGreenInput fills the chosen router's section or refuses
        self._router: TrafficRouter = make_router(config)
        state = self.carried_state  # the cursor of a run that continued as new (during the bake), else {}
        self._phase: str = state.get("phase", "discover")
        self._live: str | None = state.get("live")
        self._new: str | None = state.get("new")
        self._brought_up: bool = state.get("brought_up", False)  # the new colour may exist (bring-up attempted)
        self._switch_attempted: bool = state.get("switch_attempted", False)  # traffic may be on the new colour
        self._switched_back = False
        self._retired = False
        self._preview: list[dict[str, Any]] = list(state.get("preview", []))
        self._bake_started: datetime | None = _when(state.get("bake_started"))
        self._bake_end: datetime | None = _when(state.get("bake_end"))
        self._baking = False
        promote = state.get("promote_request")
        self._promote_request: PromoteNowInput | None = PromoteNowInput.model_validate(promote) if promote else None
        self._promote_gate: ApprovalGate | None = None
        self._promote_wait: asyncio.Task[GateOutcome] | None = None
        self._extended = timedelta(seconds=state.get("extended_seconds", 0))
        self._recent = [Measurement.model_validate(m) for m in state.get("recent", [])]  # for the status query
        self._analysis_resume: dict[str, Any] | None = state.get("analysis")  # the bake analysis's checkpoint
        self._bake_run: AnalysisRun | None = None
        self._cancel_seen = False  # the workflow was cancelled while the bake's analysis ran
        verdict = state.get("verdict")
        self._verdict: AnalysisVerdict | None = AnalysisVerdict.model_validate(verdict) if verdict else None
        self._probes: int = state.get("probes", 0)
        self._probe_failures: int = state.get("probe_failures", 0)
        if state.get("router"):
            self._router.restore(state["router"])

    # ------------------------------------------------------------------ steering
    @workflow.update
    def promote_now(self, req: PromoteNowInput) -> str:
        self._promote_request = req
        self.record_action("promote_now", req.requested_by, req.reason, note="ends the bake once approved")
        gate = self._open_promote_gate()
        return f"promote-now requested: the bake ends early once gate {gate.id} approves it"

    @promote_now.validator
    def _validate_promote_now(self, req: PromoteNowInput) -> None:
        if not self._baking:
            raise ValueError(f"promote-now applies during the bake; the run is at {self._phase}")
        if self._promote_request is not None:
            raise ValueError(f"promote-now already requested by {self._promote_request.requested_by}")
        if self.aborting:
            raise ValueError("the run is aborting")

    @workflow.update
    def extend_bake(self, req: ExtendBakeInput) -> str:
        assert self._bake_end is not None
        self._bake_end = self._bake_end + req.by
        self._extended += req.by
        self.record_action("extend_bake", req.requested_by, req.reason, note=f"+{format_duration(req.by)}")
        return f"bake extended by {format_duration(req.by)}, now ends {self._bake_end:%Y-%m-%d %H:%M:%S} UTC"

    @extend_bake.validator
    def _validate_extend_bake(self, req: ExtendBakeInput) -> None:
        if not self._baking or self._bake_end is None:
            raise ValueError(f"extend-bake applies during the bake; the run is at {self._phase}")
        if req.by <= timedelta(0):
            raise ValueError("the extension must be positive")
        if self._extended + req.by > self._input.max_bake_extension:
            raise ValueError(f"extensions may total at most {format_duration(self._input.max_bake_extension)}")

    def status_details(self) -> dict[str, Any]:
        return {
            "phase": self._phase,
            "router": self._input.router,
            "image": self._input.image,
            "live_colour": self._live,
            "new_colour": self._new,
            "switched": self._switch_attempted and not self._switched_back,
            "preview": self._preview,
            "bake_ends_at": self._bake_end.isoformat() if self._bake_end else None,
            "bake_extended_seconds": self._extended.total_seconds(),
            "promote_requested_by": self._promote_request.requested_by if self._promote_request else None,
            "promote_gate": self._promote_gate.id if self._promote_gate else None,
            "health_probes": self._probes,
            "health_failures": self._probe_failures,
            "bake_verdict": verdict.model_dump(mode="json") if (verdict := self._bake_verdict()) else None,
            "recent_measurements": [m.model_dump(mode="json") for m in self._recent],
            "plan": self._plan_steps(),
        }

    def _plan_steps(self) -> list[str]:
        """The step names this cutover walks, in order (for `runbook watch`)."""
        i = self._input
        return ["discover", "bring-up", *(["preview-health"] if i.health_checks else []),
                *(["preview-smoke"] if i.smoke_checks else []),
                *(["pre-promotion-analysis"] if i.pre_analysis is not None else []),
                "approval", "switch", "bake", "scale-down"]

    # ------------------------------------------------------------------ run
    @workflow.run
    async def run(self, input: BlueGreenInput) -> BlueGreenResult:
        self.begin()
        ending = await self.conduct(lambda: self._cutover(input), self._compensate)
        return await self.conclude(ending, self._result)

    async def _cutover(self, input: BlueGreenInput) -> str:
        router = self._router
        if self._phase == "bake":  # a continued run resumes its bake; everything before it is done
            live, new = self._live, self._new
            assert live is not None and new is not None
        else:
            # 1. discover (read-only): every target resolved and validated before the first change
            rec = self.step_started("discover")
            found = await self._discover(input, rec)
            live, new = self._live, self._new = found.live, found.new
            if found.already_live:
                await self.step_done(rec, f"{input.image} is already live on {live}: nothing to do")
                return f"{input.image} already live on {live}; {NOTHING_CHANGED}"
            await self.step_done(rec, f"live colour {live}; new colour {new}")

            # 2. bring up the new colour (a change: finished once started), then wait for it (an abort cuts it short)
            self.check_abort("bring-up")
            self._phase = "bring-up"
            rec = self.step_started("bring-up", f"{new} with {input.image}")
            self._brought_up = True
            await self.change(router.bring_up(input.image), "bring-up")
            self._phase = "wait-ready"
            await self.interruptible(router.wait_ready(input.progress_deadline), "wait-ready")
            await self.step_done(rec, f"{new} is ready")

            # 3. preview checks against the new colour only (reads)
            self._phase = "preview"
            await self._preview_checks(input, new)
            if input.pre_analysis is not None:
                self._phase = "pre-analysis"
                rec = self.step_started("pre-promotion-analysis", input.pre_analysis.name)
                verdict = await self.interruptible(
                    self._pre_analysis(input.pre_analysis, input.pre_analysis_duration), "pre-analysis"
                )
                if verdict.phase != "Successful":
                    self.step_failed(rec, verdict.reason)
                    raise Stop("RolledBack", f"pre-promotion analysis {verdict.phase.lower()}: {verdict.reason}",
                               severity="warning")
                await self.step_done(rec, verdict.reason)

            # 4. approval (the gate itself honours an abort)
            self.check_abort("approval")
            self._phase = "approval"
            rec = self.step_started("approval")
            switch = f"{input.service}: {live} -> {new} ({input.image}) via {input.router}"
            preview = "; ".join(f"{p['kind']} {p['name']}: {'ok' if p['passed'] else 'FAILED'}" for p in self._preview)
            if input.preapproved:
                await self.step_done(rec, f"approved outside this run: {input.preapproved}")
            else:
                outcome = await self.request_approval(
                    "cutover",
                    f"Switch {input.service} to {new}",
                    f"Switch {switch}. Preview: {preview or 'no checks'}.",
                    binding=switch,
                    fields={"from": live, "to": new, "image": input.image, "router": input.router},
                )
                if not outcome.approved:
                    self.step_failed(rec, f"{outcome.decision.replace('_', ' ')}: {outcome.reason}")
                    raise gate_stop(outcome, f"cutover of {input.service} to {new}")
                await self.step_done(rec, f"approved by {', '.join(a.approver for a in outcome.approvals) or 'policy'}")

            # 5. switch, verified by reading it back: finished once started, then an abort switches back
            self.check_abort("switch")
            self._phase = "switch"
            rec = self.step_started("switch", f"{live} -> {new}")
            self._switch_attempted = True
            changed = await self.change(router.switch(new), "switch")
            await self.step_done(rec, f"traffic on {new}" + ("" if changed else " (already there)"))

            # 6. bake
            self._phase = "bake"
            self.step_started("bake", format_duration(input.bake))
        bake = next(s for s in reversed(self.steps) if s.name == "bake")
        ended = await self._bake(input)
        await self.step_done(bake, ended)

        # 7. scale down the old colour after the delay (still a way back until then)
        self._phase = "scale-down"
        rec = self.step_started("scale-down", f"{live} in {format_duration(input.scale_down_delay)}")
        try:
            await workflow.wait_condition(lambda: self.aborting, timeout=input.scale_down_delay,
                                          timeout_summary=f"scale down {live} after {format_duration(input.scale_down_delay)}")
        except asyncio.TimeoutError:
            pass
        self.check_abort("scale-down delay")
        self._phase = "retire"
        self._retired = True  # from here on the old colour is (being) removed: going back means restoring it first
        try:
            await self.change(router.retire(live), "retire")
        except (ActivityError, ApplicationError) as err:
            self.step_failed(rec, f"retiring {live} failed: {cause_of(err)}")
            self.check_abort("retire")  # asked to stop meanwhile: return to the state as found all the same
            # A healthy, baked release is not rolled back because the clean-up of the old colour failed.
            raise Stop("Held", f"{new} is live and baked, but retiring {live} failed: {cause_of(err)}; {live} is "
                               f"still running: {router.retire_by_hand(live)}", severity="warning") from None
        await self.step_done(rec, f"{live} retired; {new} is live")
        self._phase = "done"
        return f"{input.service} now on {new} ({input.image}); {ended}"

    async def _discover(self, input: BlueGreenInput, rec: Any) -> Discovery:
        """Read-only: the live colour and every target; a target that is blank, unknown or wrong is Refused."""
        blank = [f"preview_urls.{c}" for c in COLOURS if not input.preview_urls[c].strip()]
        if not input.image.strip() or input.image != input.image.strip():
            blank.insert(0, "image")
        try:
            if blank:
                raise ApplicationError(f"blank or padded: {', '.join(blank)}", type=errors.INVALID_INPUT)
            return await self.interruptible(self._router.discover(input.image), "discover")
        except (ActivityError, ApplicationError) as err:
            if not _refusing(err):
                raise
            self.step_failed(rec, cause_of(err))
            raise Stop("Refused", f"{input.service} via {input.router}: {cause_of(err)}; {NOTHING_CHANGED}",
                       severity="warning") from None

    async def _preview_checks(self, input: BlueGreenInput, new: str) -> None:
        for kind, checks in (("health", input.health_checks), ("smoke", input.smoke_checks)):
            if not checks:
                continue
            rec = self.step_started(f"preview-{kind}")
            suite = await self.interruptible(
                self._run_checks(checks, new, input.check_attempts, input.check_interval), f"preview-{kind}"
            )
            self._preview += [
                {"kind": kind, "name": r.name, "passed": r.passed, "attempts": r.attempts, "status": r.last.status,
                 "latency_ms": r.last.latency_ms, "error": r.last.error}
                for r in suite.results
            ]
            if not suite.passed:
                self.step_failed(rec, suite.summary())
                raise Stop("RolledBack", f"preview {kind} checks failed on {new}: {suite.summary()}", severity="warning")
            await self.step_done(rec, suite.summary())

    # ------------------------------------------------------------------ activities
    async def _run_checks(self, checks: list[PreviewCheck], colour: str, attempts: int, interval: timedelta) -> HttpSuiteResult:
        suite = HttpSuiteInput(
            checks=[self._http_check(c, colour) for c in checks],
            attempts=attempts,
            interval_seconds=interval.total_seconds(),
        )
        per_attempt = max(c.timeout_seconds for c in checks) * len(checks) + interval.total_seconds()
        return await workflow.execute_activity_method(
            HttpCheckActivities.http_check_suite,
            suite,
            start_to_close_timeout=timedelta(seconds=per_attempt * attempts + 30),
            heartbeat_timeout=timedelta(seconds=max(30, per_attempt + 10)),
            retry_policy=ACTIVITY_RETRY,
        )

    def _http_check(self, check: PreviewCheck, colour: str) -> HttpCheck:
        base = self._input.preview_urls[colour].rstrip("/")
        body = check.expect_body.format(version=self._input.image, colour=colour) if check.expect_body else None
        return HttpCheck(
            name=check.name,
            url=base + "/" + check.path.lstrip("/"),
            expect_status=check.expect_status,
            expect_body=body,
            timeout_seconds=check.timeout_seconds,
        )

    def _analysis_args(self) -> dict[str, str]:
        return {"service": self._input.service, "version": self._input.image, "colour": self._new or ""}

    async def _pre_analysis(self, template: AnalysisTemplate, duration: timedelta) -> AnalysisVerdict:
        """The pre-promotion analysis: an ``AnalysisRun`` (the canary's engine) of ``duration`` that measures at
        once (after any ``initial_delay``) and then every interval; a decisive verdict ends it early."""
        end = workflow.now() + max(duration, max(m.initial_delay for m in template.metrics))
        run = AnalysisRun(template, args=self._analysis_args(), deadline=lambda: end, stop=lambda: self.aborting,
                          measure_at_start=True, batch_activity=True)
        return await run.run()

    # ------------------------------------------------------------------ bake
    def _open_promote_gate(self) -> ApprovalGate:
        """The promote-now gate is the run's own object, waited on by its own task: it may be open beside a
        ``bake-inconclusive`` gate, each decided by its id, and only the bake (its holder) closes it early."""
        req = self._promote_request
        assert req is not None and self._promote_gate is None
        input = self._input
        gate = self.open_gate(
            "promote-now",
            f"End the bake of {input.service} on {self._new} now",
            f"{req.requested_by} asks to end the bake early: {req.reason or 'no reason given'}",
            binding=f"{input.service}: promote {self._new} ({input.image})",
        )
        self._promote_gate = gate
        self._promote_wait = asyncio.ensure_future(_decision(gate))
        return gate

    def _bake_template(self, input: BlueGreenInput) -> AnalysisTemplate:
        """The bake's analysis: the template's metrics (the catalog entry's policy) and the new colour's HTTP health
        (``health_checks``, each sent ``bake_probes`` times a tick; a tick in which more than
        ``health_failure_limit`` % of those requests failed is a failed measurement, and the first one switches
        back). Every metric is measured once a tick, every ``bake_interval``, whatever interval the template gives."""
        assert self._new is not None
        tick = min(input.bake_interval, input.bake)
        template = input.bake_analysis
        metrics = [m.model_copy(update={"interval": tick}) for m in template.metrics] if template else []
        if input.health_checks:
            metrics.append(MetricSpec(
                name=HEALTH_METRIC,
                query=HttpHealthQuery(checks=[self._http_check(c, self._new) for c in input.health_checks],
                                      probes=input.bake_probes),
                success=Condition(op="<=", threshold=input.health_failure_limit),
                unit="%",
                interval=tick,
                failure_limit=0,
            ))
        return AnalysisTemplate(name=template.name if template else "bake", metrics=metrics)

    def _bake_stopping(self) -> bool:
        """What ends the bake's analysis at once (a measurement under way finishes first)."""
        return self.aborting or self._cancel_seen or (self._promote_wait is not None and self._promote_wait.done())

    def _measured(self, measurement: Measurement) -> None:
        self._recent = [*self._recent[-7:], measurement]
        if measurement.metric == HEALTH_METRIC:
            self._probes += len(measurement.samples)
            self._probe_failures += round(sum(measurement.samples))

    def _cancelled_in_bake(self) -> None:
        self._cancel_seen = True

    async def _analyse(self, run: AnalysisRun) -> AnalysisVerdict:
        """The bake's analysis until it decides, ends or is stopped. A cancellation, like an abort, lets a
        measurement under way finish (seconds, bounded by its timeout) before it is honoured."""
        task = asyncio.ensure_future(run.run())
        if await until_done(task, on_cancel=self._cancelled_in_bake):
            raise asyncio.CancelledError("cancelled during the bake")
        return task.result()

    async def _bake(self, input: BlueGreenInput) -> str:
        if self._bake_end is None:  # a fresh bake (a continued run keeps its clock)
            now = workflow.now()
            self._bake_started, self._bake_end = now, now + input.bake
        started = self._bake_started
        assert started is not None
        self._baking = True
        if self._promote_request is not None and self._promote_gate is None:  # carried over a continue-as-new
            self._open_promote_gate()
        run = self._bake_run = AnalysisRun(
            self._bake_template(input), args=self._analysis_args(), deadline=self._bake_deadline,
            stop=self._bake_stopping, quiet_stop=self.continue_as_new_due, on_measurement=self._measured,
            resume=self._analysis_resume, batch_activity=True,
        )
        try:
            while True:
                verdict = await self._analyse(run)
                self.check_abort("bake")
                wait = self._promote_wait
                if wait is not None and wait.done():
                    outcome = wait.result()
                    self._promote_gate = self._promote_wait = None
                    if outcome.approved:
                        why = self._promote_request.reason if self._promote_request else ""
                        return f"promoted early by {outcome.decided_by or 'the gate'}: {why}".rstrip(": ")
                    self.record_action("promote_now", outcome.decided_by or "policy", outcome.reason, accepted=False,
                                       note=f"gate {outcome.gate_id} {outcome.decision.replace('_', ' ')}; bake continues")
                    self._promote_request = None
                    continue
                if verdict.phase == "Running":  # stopped at a quiet point because the history is long
                    if self.continue_as_new_due():
                        workflow.continue_as_new(input.model_copy(update={"carry": self.carry(state=self._cursor(run))}))
                    continue
                if verdict.phase == "Failed":
                    raise Stop("RolledBack", f"bake analysis failed: {self._told(run, verdict)}")
                if verdict.phase in ("Inconclusive", "Error"):
                    kept_by = await self._confirm(input, verdict)
                    if workflow.now() >= self._bake_end:  # the verdict came at the end of the bake: a person kept it
                        return f"baked {format_span(workflow.now() - started)}, {verdict.phase.lower()} analysis kept by {kept_by}"
                    run.acknowledge()  # a person vouched for what was measured so far: judge afresh
                    continue
                return f"baked {format_span(workflow.now() - started)} without breach"
        finally:
            self._baking = False
            await self._close_promote_gate()

    def _bake_verdict(self) -> AnalysisVerdict | None:
        """The bake analysis's verdict so far (its last, once the bake is over)."""
        return self._bake_run.verdict if self._bake_run is not None else self._verdict

    def _bake_deadline(self) -> datetime:
        assert self._bake_end is not None
        return self._bake_end

    @staticmethod
    def _told(run: AnalysisRun, verdict: AnalysisVerdict) -> str:
        """The verdict's reason and what the deciding metric's last measurement said (HTTP health: what failed)."""
        last = next((m for m in reversed(run.counted()) if m.metric == verdict.metric and m.message), None)
        return verdict.reason + (f"; last measurement: {last.message}" if last is not None else "")

    async def _confirm(self, input: BlueGreenInput, verdict: AnalysisVerdict) -> str:
        """An Inconclusive or Error bake asks a person (the ``bake-inconclusive`` gate) to keep the new colour;
        who kept it, or a ``Stop`` that switches back."""
        outcome = await self.request_approval(
            "bake-inconclusive",
            f"Bake of {input.service} on {self._new} is {verdict.phase.lower()}: keep it?",
            f"{verdict.reason}. Approve to keep {self._new} and continue the bake; otherwise traffic goes back "
            f"to {self._live}.",
            binding=f"{input.service}: keep {self._new} ({input.image})",
        )
        if outcome.decision == "aborted":
            raise gate_stop(outcome, f"bake of {self._new}")
        if not outcome.approved:
            word = outcome.decision.replace("_", " ")
            raise Stop("RolledBack", f"bake analysis {verdict.phase.lower()} and not confirmed ({word}): {verdict.reason}")
        return outcome.decided_by or "policy"

    def _cursor(self, run: AnalysisRun) -> dict[str, Any]:
        """What a continued run needs to resume the bake where this one stopped."""
        return {
            "phase": self._phase,
            "live": self._live,
            "new": self._new,
            "brought_up": self._brought_up,
            "switch_attempted": self._switch_attempted,
            "preview": list(self._preview),
            "bake_started": _iso(self._bake_started),
            "bake_end": _iso(self._bake_end),
            "extended_seconds": self._extended.total_seconds(),
            "promote_request": self._promote_request.model_dump(mode="json") if self._promote_request else None,
            "analysis": run.checkpoint(),
            "recent": [m.model_dump(mode="json") for m in self._recent],
            "verdict": run.verdict.model_dump(mode="json"),
            "probes": self._probes,
            "probe_failures": self._probe_failures,
            "router": self._router.snapshot(),
        }

    async def _close_promote_gate(self) -> None:
        """The bake holds the promote-now gate: when the bake ends (breach, abort, bake over) it closes its own
        gate, if still open, and lets the gate's waiter retire it."""
        gate, wait = self._promote_gate, self._promote_wait
        self._promote_gate = self._promote_wait = None
        if gate is None or wait is None:
            return
        gate.close("aborted", "runbook", "the bake ended before the gate was decided")
        try:
            await wait
        except BaseException:  # noqa: BLE001 - the gate's own end must not mask the bake's outcome
            pass

    # ------------------------------------------------------------------ the end and the one compensation block
    def _result(self, common: dict[str, Any]) -> BlueGreenResult:
        switched = self._switch_attempted and not self._switched_back
        return BlueGreenResult(
            **common,
            service=self._input.service,
            router=self._input.router,
            live_colour=self._new if switched else self._live,
            previous_colour=self._live if switched else None,
            new_colour=self._new,
            image=self._input.image,
            switched=switched,
            switched_back=self._switched_back,
            preview=list(self._preview),
            bake_verdict=self._bake_verdict(),
            health_probes=self._probes,
            health_failures=self._probe_failures,
        )

    async def _compensate(self, ending: Ending) -> None:
        """Before the switch: remove the new colour, never touch the live one. After it: switch back first
        (verified), then remove the new colour. While the old colour is being retired: a failure leaves the baked
        release live (Held, the old colour still up); an abort or a cancel brings the old colour back as it was
        found (and waits until it is ready), then switches back and removes the new colour."""
        router, live, new = self._router, self._live, self._new
        for step in self.steps:  # the step the run stopped in says so
            if step.status == "running":
                self.step_failed(step, f"stopped: {ending.summary}")
        if self._retired:
            if not self.aborting:  # an abort while the old colour was being retired brings it back
                return  # Held: the summary says what to do by hand
            assert live is not None
            rec = self.step_started("restore-old-colour", live)
            try:
                restored = await router.unretire(live, self._input.progress_deadline)
            except (ActivityError, ApplicationError) as err:
                self.step_failed(rec, f"could not bring {live} back: {cause_of(err)}")
                ending.not_undone.append(f"{live} could not be brought back ({cause_of(err)}): traffic stays on {new}, "
                                         f"which is kept running")
                return  # never switch to a colour that cannot serve
            ending.compensated.append(f"{live} brought back")
            await self.step_done(rec, restored, notify=False)
        if self._switch_attempted and live is not None:
            rec = self.step_started("switch-back", f"-> {live}")
            try:
                await router.switch(live)
            except (ActivityError, ApplicationError) as err:
                self.step_failed(rec, f"could not switch back: {cause_of(err)}")
                ending.not_undone.append(
                    f"traffic may still be on {new}: switching back to {live} failed ({cause_of(err)}); "
                    f"{new} is kept running"
                )
                return  # never remove the colour that may be serving traffic
            self._switched_back = True
            ending.compensated.append(f"traffic switched back to {live}")
            await self.step_done(rec, f"traffic back on {live}")
        if self._brought_up and new is not None:
            rec = self.step_started("remove-new-colour", new)
            try:
                await router.remove(new)
            except (ActivityError, ApplicationError) as err:
                self.step_failed(rec, f"could not remove {new}: {cause_of(err)}")
                ending.not_undone.append(f"{new} ({self._input.image}) could not be removed: {cause_of(err)}")
                return
            ending.compensated.append(f"{new} removed")
            await self.step_done(rec, f"{new} removed; {live} untouched", notify=False)


def _refusing(err: BaseException) -> bool:
    """Whether the typed failure says the target is wrong or missing."""
    return error_type(err) in REFUSING_ERRORS


async def _decision(gate: ApprovalGate) -> GateOutcome:
    return gate.outcome() if not gate.open else await gate.wait()


def _iso(when: datetime | None) -> str | None:
    return when.isoformat() if when else None


def _when(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


WORKFLOWS = [BlueGreenCutover]
