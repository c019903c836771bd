"""Blue-green cutover: bring the new colour up beside the live one, check it, ask a person, switch in one step,
bake, and retire the old colour after a delay, with a way back at every moment.

Steps (the ``stage`` of the status query):
1. ``discover``: read the router to learn the live colour; the new colour is the other one.
2. ``bring-up``: Kubernetes: a Deployment ``<service>-<colour>`` from the live colour's pod template with the new
   image and the live replicas, then wait for its rollout (progress deadline); ALB: register the new targets in
   the new colour's target group.
3. ``preview``: HTTP health checks, then smoke requests, against the new colour only; then the pre-promotion
   analysis (optional).
4. ``approval``: the gate shows what will switch and the preview results; the binding names the switch.
5. ``switch``: one call (Service selector / listener default action), verified by reading it back.
6. ``bake``: the post-promotion analysis (metrics + HTTP health of the new colour) until the bake ends, a person
   promotes now (through the gate) or extends it; a breach or an abort switches straight back.
7. ``scale-down``: after the scale-down delay, the old colour is scaled to zero / its targets deregistered.

Compensation lives in one place (``_compensate``): before the switch it removes the new colour and leaves the live
one untouched; after the switch it switches back first, then removes the new colour. Cancelling the workflow is an
abort. The end of an unsuccessful run is an ``ApplicationError`` whose type says why (core.errors) and whose
details carry the ``BlueGreenResult``.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any, Literal

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError

with workflow.unsafe.imports_passed_through():
    from pydantic import BaseModel, ConfigDict, Field, model_validator

    from activities.http_checks import HttpCheckActivities
    from activities.metrics import MetricsActivities
    from core import errors
    from core.analysis import AnalysisTemplate, AnalysisVerdict, CloudWatchQuery, Condition, Measurement, MeasureInput, MetricSpec, assess
    from core.approval import AbortInput
    from core.duration import Duration, format_duration
    from core.http_checks import HttpCheck, HttpSuiteInput, HttpSuiteResult
    from core.runbook import RunbookInput, RunbookResult, RunStatus
    from workflows.base import ACTIVITY_RETRY, RunbookWorkflow
    from workflows.bluegreen_routers import AlbRouterConfig, KubernetesRouterConfig, Router, make_router

COLOURS = ("blue", "green")
HEALTH_FAILURE_LIMIT_PERCENT = 5.0



# --------------------------------------------------------------------------------------------------- types
class PreviewCheck(BaseModel):
    """An HTTP check against one colour: ``path`` is appended to the colour's base URL."""

    model_config = ConfigDict(extra="forbid")

    name: str
    path: str = "/"
    expect_status: int = 200
    expect_body: str | None = Field(None, description="text the body must contain; {version} and {colour} expand")
    timeout_seconds: float = 5


def bake_template() -> AnalysisTemplate:
    """The policy's post-promotion rollback triggers read from CloudWatch (Service/Version dimensions): error rate
    > 1 %, latency p99 > 2 s; the first breaching measurement switches back (failure_limit 0)."""

    def cw(metric: str) -> CloudWatchQuery:
        return CloudWatchQuery(
            namespace="Demo/Service", metric_name=metric, dimensions={"Service": "{{service}}", "Version": "{{version}}"}
        )

    return AnalysisTemplate(
        name="bluegreen-bake",
        metrics=[
            MetricSpec(name="error-rate", query=cw("ErrorRate"), success=Condition(op="<=", threshold=1), unit="%", failure_limit=0),
            MetricSpec(name="latency-p99", query=cw("LatencyP99"), success=Condition(op="<=", threshold=2), unit="s", failure_limit=0),
        ],
    )


class BlueGreenInput(RunbookInput):
    service: str = Field(min_length=1, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    image: str = Field(min_length=1, description="the new version (container image, or a version label for ALB)")
    environment: str = Field("production", description="chooses the approval policy in the catalog")
    router: Literal["kubernetes", "alb"] = "kubernetes"
    kubernetes: KubernetesRouterConfig | None = None
    alb: AlbRouterConfig | None = None
    preview_urls: dict[str, str] = Field(description="base URL of each colour, reaching that colour only")
    health_checks: list[PreviewCheck] = Field(default_factory=lambda: [PreviewCheck(name="health", path="/healthz")])
    smoke_checks: list[PreviewCheck] = Field(default_factory=list)
    check_attempts: int = Field(3, ge=1, le=50)
    check_interval: Duration = timedelta(seconds=2)
    pre_analysis: AnalysisTemplate | None = Field(None, description="pre-promotion analysis; None = skip")
    pre_analysis_duration: Duration = timedelta(minutes=2)
    bake: Duration = timedelta(minutes=10)
    bake_interval: Duration = timedelta(minutes=1)
    bake_analysis: AnalysisTemplate | None = Field(default_factory=bake_template)
    bake_probes: int = Field(4, ge=1, le=100, description="HTTP health probes of the new colour per bake tick")
    health_min_samples: int = Field(10, ge=1, description="probes needed before the failure ratio is judged")
    scale_down_delay: Duration = timedelta(seconds=30)
    progress_deadline: Duration = timedelta(minutes=10)
    max_bake_extension: Duration = timedelta(hours=24)

    @model_validator(mode="after")
    def _consistent(self) -> "BlueGreenInput":
        if self.router == "kubernetes" and self.kubernetes is None:
            self.kubernetes = KubernetesRouterConfig()
        if self.router == "alb":
            if self.alb is None:
                raise ValueError("router alb needs the alb section (listener and the target group of each colour)")
            groups = {c: f"{self.service}-{c}" for c in COLOURS} if not self.alb.target_groups else self.alb.target_groups
            self.alb = self.alb.model_copy(update={"target_groups": groups})
            absent = [c for c in COLOURS if c not in self.alb.target_groups]
            if absent:
                raise ValueError(f"alb.target_groups needs a target group per colour (missing: {', '.join(absent)})")
        missing = [c for c in COLOURS if c not in self.preview_urls]
        if missing:
            raise ValueError(f"preview_urls needs a URL for each colour (missing: {', '.join(missing)})")
        if self.bake_interval <= timedelta(0):
            raise ValueError("bake_interval must be positive")
        return self


class PromoteNowInput(BaseModel):
    requested_by: str = Field(min_length=1)
    reason: str = ""


class ExtendBakeInput(BaseModel):
    requested_by: str = Field(min_length=1)
    by: Duration
    reason: str = ""


class BlueGreenResult(RunbookResult):
    service: str
    router: str
    live_colour: str | None = Field(None, description="the colour serving traffic at the end")
    previous_colour: str | None = None
    new_colour: str | None = None
    image: str
    switched: bool = False
    switched_back: bool = False
    preview: list[dict[str, Any]] = Field(default_factory=list)
    bake_verdict: AnalysisVerdict | None = None
    health_probes: int = 0
    health_failures: int = 0
    reason: str = ""
    errors_during_cleanup: list[str] = Field(default_factory=list)


class _Stop(Exception):
    """Internal: the cutover stops here; compensation follows."""

    def __init__(self, status: RunStatus, error_type: str, reason: str) -> None:
        super().__init__(reason)
        self.status, self.error_type, self.reason = status, error_type, reason


# --------------------------------------------------------------------------------------------------- workflow
@workflow.defn
class BlueGreenCutover(RunbookWorkflow):
    @workflow.init
    def __init__(self, input: BlueGreenInput) -> None:
        super().__init__(input.meta)
        self._input = input
        self._phase = "discover"
        self._live: str | None = None
        self._new: str | None = None
        self._brought_up = False  # the new colour may exist (bring-up was at least attempted)
        self._switch_attempted = False  # traffic may be on the new colour
        self._switched_back = False
        self._retired = False
        self._preview: list[dict[str, Any]] = []
        self._bake_started: datetime | None = None
        self._bake_end: datetime | None = None
        self._baking = False
        self._promote_request: PromoteNowInput | None = None
        self._promote_gate: asyncio.Task | None = None
        self._extended = timedelta(0)
        self._measurements: list[Measurement] = []
        self._verdict: AnalysisVerdict | None = None
        self._probes = 0
        self._probe_failures = 0
        self._cleanup_errors: list[str] = []

    # ------------------------------------------------------------------ steering
    @workflow.update
    def promote_now(self, req: PromoteNowInput) -> str:
        self._promote_request = req
        self.record_action("promote_now", req.requested_by, req.reason, note="ends the bake once approved")
        return "promote-now requested: the bake ends early once the gate approves it"

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
        return f"bake extended by {format_duration(req.by)}, now ends {self._bake_end.isoformat()}"

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
            "promote_requested_by": self._promote_request.requested_by if self._promote_request else None,
            "health_probes": self._probes,
            "health_failures": self._probe_failures,
            "bake_verdict": self._verdict.model_dump(mode="json") if self._verdict else None,
            "recent_measurements": [m.model_dump(mode="json") for m in self._measurements[-8:]],
        }

    # ------------------------------------------------------------------ run
    @workflow.run
    async def run(self, input: BlueGreenInput) -> BlueGreenResult:
        self.begin()
        router = make_router(input, self._call)
        try:
            try:
                return await self._cutover(input, router)
            except asyncio.CancelledError:
                if not self.aborting:
                    self._request_abort(AbortInput(requested_by="temporal", reason="workflow cancelled"))
                raise _Stop("Aborted", errors.ABORTED, f"cancelled: {self.abort_request.reason}")  # type: ignore[union-attr]
        except _Stop as stop:
            return await self._fail(router, stop.status, stop.error_type, stop.reason)
        except (ActivityError, ApplicationError) as err:
            cause = err.cause if isinstance(err, ActivityError) and err.cause else err
            return await self._fail(router, "Failed", getattr(cause, "type", None) or "Failed", f"{self._phase}: {cause}")

    async def _cutover(self, input: BlueGreenInput, router: Router) -> BlueGreenResult:
        # 1. discover
        rec = self.step_started("discover")
        found = await router.discover()
        self._live, self._new = found.live, found.new
        if found.already_live:
            await self.step_done(rec, f"{input.image} is already live on {found.live}: nothing to do")
            return await self._succeed(f"{input.image} already live on {found.live}; nothing changed")
        await self.step_done(rec, f"live colour {found.live}; new colour {found.new}")

        # 2. bring up the new colour and wait for it
        self._phase = "bring-up"
        rec = self.step_started("bring-up", f"{found.new} with {input.image}")
        self._brought_up = True
        await self._abortable(router.bring_up())
        await self._abortable(router.wait_ready(input.progress_deadline))
        await self.step_done(rec, f"{found.new} is ready")

        # 3. preview checks against the new colour only
        self._phase = "preview"
        for kind, checks in (("health", input.health_checks), ("smoke", input.smoke_checks)):
            if not checks:
                continue
            rec = self.step_started(f"preview-{kind}")
            suite = await self._abortable(self._run_checks(checks, found.new, input.check_attempts, input.check_interval))
            self._preview += [
                {"kind": kind, "name": r.name, "passed": r.passed, "attempts": r.attempts, "status": r.last.status,
                 "latency_ms": r.last.latency_ms, "error": r.last.error}
                for r in suite.results
            ]
            if not suite.passed:
                self.step_failed(rec, suite.summary())
                raise _Stop("Failed", errors.CHECKS_FAILED, f"preview {kind} checks failed on {found.new}: {suite.summary()}")
            await self.step_done(rec, suite.summary())
        if input.pre_analysis is not None:
            rec = self.step_started("pre-promotion-analysis", input.pre_analysis.name)
            verdict = await self._abortable(self._pre_analysis(input.pre_analysis, input.pre_analysis_duration))
            if verdict.phase != "Successful":
                self.step_failed(rec, verdict.reason)
                raise _Stop("Failed", errors.CHECKS_FAILED, f"pre-promotion analysis {verdict.phase.lower()}: {verdict.reason}")
            await self.step_done(rec, verdict.reason)

        # 4. approval
        self._phase = "approval"
        rec = self.step_started("approval")
        switch = f"{input.service}: {found.live} -> {found.new} ({input.image}) via {input.router}"
        preview = "; ".join(f"{p['kind']} {p['name']}: {'ok' if p['passed'] else 'FAILED'}" for p in self._preview)
        outcome = await self.request_approval(
            "cutover",
            f"Switch {input.service} to {found.new}",
            f"Switch {switch}. Preview: {preview or 'no checks'}.",
            binding=switch,
            fields={"from": found.live, "to": found.new, "image": input.image, "router": input.router},
        )
        if not outcome.approved:
            self.step_failed(rec, f"{outcome.decision}: {outcome.reason}")
            kinds = {"rejected": errors.APPROVAL_REJECTED, "timed_out": errors.APPROVAL_TIMED_OUT, "aborted": errors.ABORTED}
            status: RunStatus = "Aborted" if outcome.decision == "aborted" else "Failed"
            raise _Stop(status, kinds[outcome.decision], f"cutover {outcome.decision.replace('_', ' ')}: {outcome.reason}")
        await self.step_done(rec, f"approved by {', '.join(a.approver for a in outcome.approvals)}")
        self._check_abort()

        # 5. switch, verified by reading it back
        self._phase = "switch"
        rec = self.step_started("switch", f"{found.live} -> {found.new}")
        self._switch_attempted = True
        changed = await router.switch(found.new)
        await self.step_done(rec, f"traffic on {found.new}" + ("" if changed else " (already there)"))

        # 6. bake
        self._phase = "bake"
        rec = self.step_started("bake", format_duration(input.bake))
        ended = await self._bake(input)
        await self.step_done(rec, ended)

        # 7. scale down the old colour after the delay (still a way back until then)
        self._phase = "scale-down"
        rec = self.step_started("scale-down", f"{found.live} in {format_duration(input.scale_down_delay)}")
        try:
            await workflow.wait_condition(lambda: self.aborting, timeout=input.scale_down_delay)
        except asyncio.TimeoutError:
            pass
        self._check_abort()
        self._retired = True
        await router.retire(found.live)
        await self.step_done(rec, f"{found.live} retired; {found.new} is live")
        self._live, self._phase = found.new, "done"
        return await self._succeed(f"{input.service} now on {found.new} ({input.image}); {ended}")

    # ------------------------------------------------------------------ activities
    async def _call(self, method: Any, arg: Any, *, timeout: timedelta = timedelta(seconds=60),
                    heartbeat: timedelta | None = None) -> Any:
        """Every router activity goes through here: one retry policy, typed failures non-retryable."""
        return await workflow.execute_activity_method(
            method,
            arg,
            start_to_close_timeout=timeout,
            heartbeat_timeout=heartbeat,
            retry_policy=ACTIVITY_RETRY,
        )

    def _check_abort(self) -> None:
        if self.aborting:
            req = self.abort_request
            assert req is not None
            raise _Stop("Aborted", errors.ABORTED, f"aborted by {req.requested_by}: {req.reason}")

    async def _abortable(self, awaitable: Any) -> Any:
        """Run a step, but stop it (cancelling its activity) as soon as someone aborts."""
        self._check_abort()
        task = asyncio.ensure_future(awaitable)
        try:
            await workflow.wait_condition(lambda: task.done() or self.aborting)
        except asyncio.CancelledError:  # the workflow was cancelled: stop the step too, then let it propagate
            task.cancel()
            raise
        if task.done():
            return task.result()
        task.cancel()
        try:
            await task
        except (asyncio.CancelledError, ActivityError, CancelledError):
            pass
        self._check_abort()

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

    async def _measure(self, template: AnalysisTemplate) -> list[Measurement]:
        args = {"service": self._input.service, "version": self._input.image, "colour": self._new or ""}
        return list(
            await asyncio.gather(
                *[
                    workflow.execute_activity_method(
                        MetricsActivities.measure_metric,
                        MeasureInput(metric=spec, args=args),
                        start_to_close_timeout=timedelta(seconds=60),
                        retry_policy=ACTIVITY_RETRY,
                    )
                    for spec in template.metrics
                ]
            )
        )

    async def _pre_analysis(self, template: AnalysisTemplate, duration: timedelta) -> AnalysisVerdict:
        """Measure every metric at the template's shortest interval for ``duration`` (at least once)."""
        interval = min(m.interval for m in template.metrics)
        measurements: list[Measurement] = []
        end = workflow.now() + duration
        while True:
            measurements += await self._measure(template)
            verdict = assess(template, measurements)
            if verdict.phase in ("Failed", "Error", "Inconclusive") or workflow.now() + interval > end:
                return assess(template, measurements, complete=True) if verdict.phase == "Running" else verdict
            await workflow.sleep(interval)

    # ------------------------------------------------------------------ bake
    async def _bake(self, input: BlueGreenInput) -> str:
        now = workflow.now()
        self._bake_started, self._bake_end, self._baking = now, now + input.bake, True
        next_tick = now + min(input.bake_interval, input.bake)
        try:
            while True:
                self._check_abort()
                gate = self._promote_gate
                if gate is not None and gate.done():
                    outcome = gate.result()
                    self._promote_gate = None
                    if outcome.approved:
                        return f"promoted early by {outcome.decided_by or 'the gate'}: {self._promote_request.reason if self._promote_request else ''}".rstrip(": ")
                    self.record_action("promote_now", outcome.decided_by or "policy", outcome.reason, accepted=False,
                                       note=f"gate {outcome.decision}; bake continues")
                    self._promote_request = None
                if self._promote_request is not None and self._promote_gate is None:
                    req = self._promote_request
                    self._promote_gate = asyncio.ensure_future(
                        self.request_approval(
                            "promote-now",
                            f"End the bake of {input.service} on {self._new} now",
                            f"{req.requested_by} asks to end the bake early: {req.reason or 'no reason given'}",
                            binding=f"{input.service}: promote {self._new} ({input.image})",
                        )
                    )
                    continue
                now = workflow.now()
                if now >= next_tick:  # a tick due at the end of the bake still runs: the bake ends measured
                    await self._bake_tick(input)
                    next_tick = max(next_tick + input.bake_interval, workflow.now())  # on schedule, no drift
                    continue
                if now >= self._bake_end:
                    return f"baked {format_duration(now - self._bake_started)} without breach"
                wake = min(next_tick, self._bake_end)
                bake_end = self._bake_end
                promote = self._promote_request
                try:
                    await workflow.wait_condition(
                        lambda: self.aborting
                        or self._bake_end != bake_end
                        or self._promote_request is not promote
                        or (self._promote_gate is not None and self._promote_gate.done()),
                        timeout=wake - now,
                    )
                except asyncio.TimeoutError:
                    pass
        finally:
            self._baking = False
            await self._close_promote_gate()

    async def _close_promote_gate(self) -> None:
        """A promote-now gate still open when the bake ends (breach, abort, bake over) is closed as aborted."""
        gate_task = self._promote_gate
        if gate_task is None:
            return
        self._promote_gate = None
        if not gate_task.done() and self._gate is not None and self._gate.open:
            self._close_gate("aborted", "runbook", "the bake ended before the gate was decided")
        try:
            await gate_task
        except BaseException:  # noqa: BLE001 - the gate's own failure must not mask the bake's outcome
            pass

    async def _bake_tick(self, input: BlueGreenInput) -> None:
        assert self._new is not None
        probes = [self._http_check(c, self._new).probe() for c in input.health_checks] * input.bake_probes
        work: list[Any] = [
            workflow.execute_activity_method(
                HttpCheckActivities.http_probe, p, start_to_close_timeout=timedelta(seconds=p.timeout_seconds + 30),
                retry_policy=ACTIVITY_RETRY,
            )
            for p in probes
        ]
        template = input.bake_analysis
        if template is not None:
            work.append(self._measure(template))
        results = await asyncio.gather(*work)
        probe_results = results[: len(probes)]
        failed = sum(1 for r in probe_results if not r.ok)
        self._probes += len(probe_results)
        self._probe_failures += failed
        if template is not None:
            self._measurements += results[-1]
            self._verdict = assess(template, self._measurements)
        self._publish_details()
        if probe_results and failed == len(probe_results):
            errors_seen = sorted({r.error or "" for r in probe_results})
            raise _Stop("RolledBack", errors.ROLLED_BACK, f"health checks of {self._new} all failed: {'; '.join(errors_seen)}")
        ratio = 100.0 * self._probe_failures / self._probes if self._probes else 0.0
        if self._probes >= input.health_min_samples and ratio > HEALTH_FAILURE_LIMIT_PERCENT:
            raise _Stop(
                "RolledBack",
                errors.ROLLED_BACK,
                f"health-check failures {ratio:.1f}% > {HEALTH_FAILURE_LIMIT_PERCENT:g}% ({self._probe_failures}/{self._probes})",
            )
        verdict = self._verdict
        if verdict is None:
            return
        if verdict.phase == "Failed":
            raise _Stop("RolledBack", errors.ROLLED_BACK, f"bake analysis failed: {verdict.reason}")
        if verdict.phase in ("Inconclusive", "Error"):
            outcome = await self.request_approval(
                "bake-inconclusive",
                f"Bake of {input.service} on {self._new} is {verdict.phase.lower()}: keep it?",
                f"{verdict.reason}. Approve to keep {self._new} and continue the bake; otherwise traffic goes back "
                f"to {self._live}.",
                binding=f"{input.service}: keep {self._new} ({input.image})",
            )
            if not outcome.approved:
                raise _Stop("RolledBack", errors.ROLLED_BACK, f"bake analysis {verdict.phase.lower()} and not confirmed: {verdict.reason}")
            self._measurements = []  # a person vouched for what was measured so far; judge afresh
            self._verdict = None

    # ------------------------------------------------------------------ endings and compensation
    def _result(self, status: RunStatus, summary: str, reason: str = "") -> BlueGreenResult:
        switched = self._switch_attempted and not self._switched_back
        return BlueGreenResult(
            status=status,
            summary=summary,
            steps=list(self._steps),
            gates=list(self._closed_gates),
            service=self._input.service,
            router=self._input.router,
            live_colour=self._new if switched else self._live,
            previous_colour=self._live if switched else None,
            new_colour=self._new,
            image=self._input.image,
            switched=switched,
            switched_back=self._switched_back,
            preview=list(self._preview),
            bake_verdict=self._verdict,
            health_probes=self._probes,
            health_failures=self._probe_failures,
            reason=reason,
            errors_during_cleanup=list(self._cleanup_errors),
        )

    async def _succeed(self, summary: str) -> BlueGreenResult:
        await self.finish("Succeeded", summary)
        return self._result("Succeeded", summary)

    async def _fail(self, router: Router, status: RunStatus, error_type: str, reason: str) -> BlueGreenResult:
        """Compensation: switch back first if traffic may be on the new colour, then remove the new colour."""
        workflow.logger.warning("blue-green %s stops: %s", self._input.service, reason)
        self.set_status("RollingBack", f"compensating: {reason}")
        await asyncio.shield(asyncio.ensure_future(self._compensate(router)))
        if self._switched_back and status == "Failed":
            status = "RolledBack"
        summary = reason + (" Traffic is back on " + (self._live or "?") + "." if self._switched_back else "")
        if self._cleanup_errors:
            summary += " Clean-up incomplete: " + "; ".join(self._cleanup_errors)
        if self._switched_back:
            await self.notify("rolled_back", f"{self._input.service} switched back to {self._live}", reason, severity="error")
        await self.finish(status, summary, severity="error" if status in ("Failed", "RolledBack") else "warning")
        result = self._result(status, summary, reason)
        raise ApplicationError(summary, result.model_dump(mode="json"), type=error_type, non_retryable=True)

    async def _compensate(self, router: Router) -> None:
        if self._retired:
            # the old colour is already (being) scaled down: the new colour stays live; nothing safe to undo
            return
        if self._switch_attempted and self._live is not None:
            rec = self.step_started("switch-back", f"-> {self._live}")
            try:
                await router.switch(self._live)
                self._switched_back = True
                await self.step_done(rec, f"traffic back on {self._live}")
            except (ActivityError, ApplicationError) as err:
                self.step_failed(rec, f"could not switch back: {err.cause or err if isinstance(err, ActivityError) else err}")
                self._cleanup_errors.append(f"switch back to {self._live} failed; the new colour is kept running")
                return  # never remove the colour that may be serving traffic
        if self._brought_up and self._new is not None:
            rec = self.step_started("remove-new-colour", self._new)
            try:
                await router.remove(self._new)
                await self.step_done(rec, f"{self._new} removed; {self._live} untouched", notify=False)
            except (ActivityError, ApplicationError) as err:
                self.step_failed(rec, f"could not remove {self._new}: {err.cause or err if isinstance(err, ActivityError) else err}")
                self._cleanup_errors.append(f"{self._new} could not be removed")


WORKFLOWS = [BlueGreenCutover]
