"""Regional failover and failback: move a service to its disaster-recovery region and back.

``RegionFailover`` (runbook ``region-failover``), stages of the status query:
1. ``confirm``   (real mode) probe the primary's health endpoint every ``confirm_interval``; ``confirm_probes``
   consecutive failures confirm the outage; as many consecutive successes, an expired ``confirm_window`` or the
   ``incident_resolved`` signal end the run with "no failover needed" (a blip never moves a region).
2. ``approval``  the gate shows the evidence (probe results); a policy may pre-approve (required_approvals 0).
3. ``fence``     scale the primary's Deployment to 0 and block writes on the primary database (best effort: the
   primary region may be unreachable). A fence that cannot be applied is reported and needs an explicit approval.
4. ``promote``   promote the DR read replica and wait until it is available (a writable primary).
5. ``scale``     scale the DR Deployment to production size and wait for its rollout.
6. ``dns``       UPSERT the Route53 records (failover PRIMARY/SECONDARY or weighted) so DR takes the traffic;
   the activity reads them back.
7. ``verify``    probe the DR health endpoint from outside; a failure pages and holds (status ``Held``) for a
   person: the ``reverify`` update re-runs the checks, ``abort`` (or the hold timeout) ends the run held. Never
   an automatic shift back.
8. ``report``    step times, RTO achieved against the target (workflow clock: virtual in tests), what was fenced.
A ``drill`` skips 1 (the primary is healthy) and, once verified, runs ``RegionFailback`` as a child workflow.

``RegionFailback`` (runbook ``region-failback``): re-create a read replica in the original region from the
now-primary DR database, wait until it has caught up (ReplicaLag under a threshold), approval, then the same
fence / promote / scale / DNS / verify sequence in the other direction, and scale the DR region back to standby.

Compensation: a failed promotion or DR scale-up stops before any DNS change and pages (in a drill the fenced
primary compute is scaled back up, since a drill must leave production as it found it); after DNS has shifted
nothing is ever shifted back automatically. Every step is idempotent (UPSERTs, absolute replicas, promote of a
promoted instance is a no-op), so a retried or replayed step does no harm.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Literal

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, ChildWorkflowError

with workflow.unsafe.imports_passed_through():
    from pydantic import BaseModel, ConfigDict, Field

    from activities.aws import RdsActivities, Route53Activities
    from activities.http_checks import HttpCheckActivities
    from activities.kubernetes import KubernetesActivities
    from core import errors
    from core.approval import ApprovalPolicy
    from core.aws import (
        RdsCreateReplicaInput,
        RdsFenceInput,
        RdsInstanceRef,
        RdsWaitInput,
        RecordSet,
        Route53UpsertInput,
    )
    from core.duration import Duration, format_duration
    from core.http_checks import HttpProbeInput, HttpProbeResult
    from core.kubernetes import DeploymentRef, ScaleInput, WaitRolloutInput
    from core.runbook import RunbookInput, RunbookResult, RunStatus
    from workflows.base import ACTIVITY_RETRY, RunbookWorkflow

# The old primary's region may be down: a fence gets a few quick tries, then is reported as not applied.
FENCE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2), maximum_attempts=3, non_retryable_error_types=errors.NON_RETRYABLE
)
PROBE_RETRY = RetryPolicy(maximum_attempts=2)


# --------------------------------------------------------------------------------------------------- types
class RegionSide(BaseModel):
    """One region of the service: where its health endpoint, database, compute and DNS target are."""

    model_config = ConfigDict(extra="forbid")

    region: str
    health_url: str = Field(description="probed from outside, e.g. https://web.us-east-1.example.com/healthz")
    health_expect_body: str | None = None
    database: str = Field(description="RDS instance identifier in this region")
    read_only_parameter_group: str | None = Field(
        None, description="fence writes by applying this parameter group; None = stop the instance"
    )
    k8s_context: str | None = Field(None, description="kubeconfig context of this region's cluster")
    namespace: str = "default"
    deployment: str | None = Field(
        None,
        description="the region's compute (Kubernetes Deployment); None = no compute managed by this runbook: the "
        "fence-compute, scale and standby steps are skipped and recorded as skipped with the reason",
    )
    replicas: int = Field(1, ge=1, description="production size")
    standby_replicas: int = Field(0, ge=0, description="size while this region is the standby")
    dns_value: str = Field(description="record value that sends traffic here (CNAME target or IP)")


class DnsSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    zone_id: str
    record_name: str
    record_type: Literal["A", "AAAA", "CNAME"] = "CNAME"
    ttl: int = Field(60, ge=0)
    routing: Literal["failover", "weighted"] = "failover"
    primary_set_identifier: str = "primary"
    secondary_set_identifier: str = "secondary"


class Timeouts(BaseModel):
    model_config = ConfigDict(extra="forbid")

    promote: Duration = timedelta(minutes=30)
    rollout: Duration = timedelta(minutes=10)
    rollout_poll_seconds: float = 5
    hold: Duration = Field(timedelta(hours=24), description="how long a held run waits for a person")


class RegionFailoverInput(RunbookInput):
    service: str
    mode: Literal["drill", "real"] = "drill"
    primary: RegionSide
    dr: RegionSide
    dns: DnsSpec
    rto_target: Duration = timedelta(minutes=15)
    confirm_probes: int = Field(3, ge=1, description="consecutive failed probes that confirm the outage")
    confirm_interval: Duration = timedelta(seconds=30)
    confirm_window: Duration = Field(timedelta(minutes=10), description="give up confirming after this long")
    probe_timeout_seconds: float = 5
    verify_passes: int = Field(2, ge=1, description="consecutive passing probes of the DR region")
    verify_attempts: int = Field(10, ge=1)
    verify_interval: Duration = timedelta(seconds=30)
    timeouts: Timeouts = Field(default_factory=Timeouts)
    failback_replica: str | None = Field(
        None, description="drill: identifier of the replica the automatic failback creates (default <db>-failback)"
    )
    max_replica_lag_seconds: float = 30


class RegionFailbackInput(RunbookInput):
    service: str
    original: RegionSide = Field(description="the region to return to (its `database` is ignored: see replica)")
    current: RegionSide = Field(description="the region serving now (its database is the primary)")
    dns: DnsSpec
    replica: str = Field(description="identifier of the read replica created in the original region, then promoted")
    max_replica_lag_seconds: float = Field(30, gt=0)
    catch_up_timeout: Duration = timedelta(hours=1)
    catch_up_poll: Duration = timedelta(seconds=30)
    rto_target: Duration = timedelta(minutes=15)
    probe_timeout_seconds: float = 5
    verify_passes: int = Field(2, ge=1)
    verify_attempts: int = Field(10, ge=1)
    verify_interval: Duration = timedelta(seconds=30)
    timeouts: Timeouts = Field(default_factory=Timeouts)


Outcome = Literal[
    "failed_over", "failed_back", "no_failover_needed", "not_approved", "aborted", "fence_refused",
    "promotion_failed", "scale_failed", "dns_failed", "held", "catch_up_failed",
]


class RegionMoveResult(RunbookResult):
    outcome: Outcome
    from_region: str
    to_region: str
    fenced: list[str] = Field(default_factory=list)
    not_fenced: list[str] = Field(default_factory=list)
    dns_shifted: bool = False
    rto_seconds: float | None = Field(None, description="start of the run -> DR verified (workflow clock)")
    rto_target_seconds: float
    rto_met: bool | None = None
    evidence: list[str] = Field(default_factory=list, description="probe results that led to the decision")
    failback: "RegionMoveResult | None" = None


class ReverifyInput(BaseModel):
    requested_by: str
    reason: str = ""


def dns_records(dns: DnsSpec, active: RegionSide, standby: RegionSide) -> list[RecordSet]:
    """The records that send the traffic to ``active`` (pure: the same input always gives the same UPSERT)."""
    base = dict(name=dns.record_name, type=dns.record_type, ttl=dns.ttl)
    if dns.routing == "failover":
        return [
            RecordSet(**base, values=[active.dns_value], set_identifier=dns.primary_set_identifier, failover="PRIMARY"),
            RecordSet(**base, values=[standby.dns_value], set_identifier=dns.secondary_set_identifier, failover="SECONDARY"),
        ]
    return [
        RecordSet(**base, values=[active.dns_value], set_identifier=active.region, weight=100),
        RecordSet(**base, values=[standby.dns_value], set_identifier=standby.region, weight=0),
    ]


class _Stop(Exception):
    """Ends the run early with a result (raised inside the workflow, caught in run)."""

    def __init__(self, status: RunStatus, outcome: str, summary: str, error_type: str | None, severity: str = "error") -> None:
        super().__init__(summary)
        self.status, self.outcome, self.summary, self.error_type, self.severity = status, outcome, summary, error_type, severity


# --------------------------------------------------------------------------------------------------- shared steps
class _RegionMove(RunbookWorkflow):
    """The fence / promote / scale / DNS / verify sequence both directions share."""

    def _init_move(self, service: str, source: RegionSide, target: RegionSide, rto_target: timedelta) -> None:
        self.service = service
        self.source, self.target = source, target
        self.rto_target = rto_target
        self.started_at: datetime = workflow.now()
        self.fenced: list[str] = []
        self.not_fenced: list[str] = []
        self.dns_shifted = False
        self.verified_at: datetime | None = None
        self.evidence: list[str] = []
        self.held = False
        self.reverify_request: ReverifyInput | None = None

    def status_details(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "from": self.source.region,
            "to": self.target.region,
            "fenced": list(self.fenced),
            "not_fenced": list(self.not_fenced),
            "dns_shifted": self.dns_shifted,
            "held": self.held,
            "evidence": list(self.evidence[-10:]),
            "rto_target": format_duration(self.rto_target),
            "elapsed": format_duration(workflow.now() - self.started_at),
        }

    @workflow.update
    def reverify(self, req: ReverifyInput) -> str:
        self.reverify_request = req
        self.record_action("reverify", req.requested_by, req.reason)
        return "verification will run again"

    @reverify.validator
    def _validate_reverify(self, req: ReverifyInput) -> None:
        if not self.held:
            raise ValueError("the run is not held: nothing to re-verify")

    # -- probes
    async def probe(self, side: RegionSide, timeout: float) -> HttpProbeResult:
        try:
            return await workflow.execute_activity_method(
                HttpCheckActivities.http_probe,
                HttpProbeInput(url=side.health_url, expect_body=side.health_expect_body, timeout_seconds=timeout),
                start_to_close_timeout=timedelta(seconds=timeout + 10),
                retry_policy=PROBE_RETRY,
            )
        except ActivityError as err:
            return HttpProbeResult(url=side.health_url, ok=False, error=f"probe failed: {_cause(err)}")

    # -- fence
    async def fence(self, side: RegionSide, *, compute: bool) -> None:
        if compute and side.deployment is None:
            skip = self.step_started("fence-compute", f"{side.region}: scale compute to 0")
            self.step_failed(skip, f"skipped: no compute (deployment) configured for {side.region}", status="skipped")
            compute = False
        rec = self.step_started("fence", f"{side.region}: stop writes" + (" and compute" if compute else ""))
        if compute:
            ref = DeploymentRef(context=side.k8s_context, namespace=side.namespace, name=side.deployment)
            try:
                await workflow.execute_activity_method(
                    KubernetesActivities.scale_deployment,
                    ScaleInput(ref=ref, replicas=0, ignore_missing=True),
                    start_to_close_timeout=timedelta(minutes=2),
                    retry_policy=FENCE_RETRY,
                )
                self.fenced.append(f"compute {side.region}/{side.namespace}/{side.deployment} scaled to 0")
            except ActivityError as err:
                self.not_fenced.append(f"compute {side.region}/{side.deployment}: {_cause(err)}")
        try:
            result = await workflow.execute_activity_method(
                RdsActivities.rds_set_writes_blocked,
                RdsFenceInput(identifier=side.database, region=side.region, parameter_group=side.read_only_parameter_group),
                start_to_close_timeout=timedelta(minutes=5),
                retry_policy=FENCE_RETRY,
            )
            if result.fenced:
                self.fenced.append(f"database {side.region}/{side.database} ({result.how}: {result.reason})")
            else:
                self.not_fenced.append(f"database {side.region}/{side.database}: {result.reason}")
        except ActivityError as err:
            self.not_fenced.append(f"database {side.region}/{side.database}: {_cause(err)}")
        if not self.not_fenced:
            await self.step_done(rec, "; ".join(self.fenced))
            return
        self.step_failed(rec, "not fenced: " + "; ".join(self.not_fenced))
        await self.notify(
            "alert", f"{self.service}: fence incomplete in {side.region}", "; ".join(self.not_fenced), severity="error"
        )
        # explicit approval, whatever the run's policy pre-approves
        policy = self.meta.approval
        if policy.required_approvals == 0:
            policy = policy.model_copy(update={"required_approvals": 1})
        outcome = await self.request_approval(
            "continue-unfenced",
            f"Continue {self.service} to {self.target.region} without a complete fence?",
            "Two regions could take writes at once. Not fenced: " + "; ".join(self.not_fenced),
            binding=f"unfenced:{side.region}:{len(self.not_fenced)}",
            policy=policy,
        )
        if not outcome.approved:
            raise _Stop(
                "Failed" if outcome.decision != "aborted" else "Aborted",
                "fence_refused",
                f"stopped before promotion: fence incomplete and continuing was {outcome.decision.replace('_', ' ')}",
                errors.ABORTED if outcome.decision == "aborted" else errors.APPROVAL_REJECTED,
            )

    # -- promote / scale / DNS
    async def promote(self, database: str, region: str, timeouts: Timeouts) -> None:
        rec = self.step_started("promote", f"{region}/{database}")
        try:
            await workflow.execute_activity_method(
                RdsActivities.rds_promote_replica,
                RdsInstanceRef(identifier=database, region=region),
                start_to_close_timeout=timedelta(minutes=5),
                retry_policy=ACTIVITY_RETRY,
            )
            inst = await workflow.execute_activity_method(
                RdsActivities.rds_wait_available,
                RdsWaitInput(identifier=database, region=region, deadline_seconds=timeouts.promote.total_seconds()),
                start_to_close_timeout=timeouts.promote + timedelta(minutes=2),
                heartbeat_timeout=timedelta(minutes=2),
                retry_policy=ACTIVITY_RETRY,
            )
        except ActivityError as err:
            self.step_failed(rec, _cause(err))
            raise _Stop("Failed", "promotion_failed", f"promotion of {region}/{database} failed: {_cause(err)}; DNS unchanged",
                        errors.VERIFICATION_FAILED, severity="critical") from None
        await self.step_done(rec, f"{database} is a writable primary ({inst.status}, endpoint {inst.endpoint})")

    async def scale_up(self, side: RegionSide, timeouts: Timeouts) -> None:
        if side.deployment is None:
            skip = self.step_started("scale", f"{side.region}: compute to {side.replicas}")
            self.step_failed(skip, f"skipped: no compute (deployment) configured for {side.region}", status="skipped")
            return
        rec = self.step_started("scale", f"{side.region}/{side.namespace}/{side.deployment} to {side.replicas}")
        ref = DeploymentRef(context=side.k8s_context, namespace=side.namespace, name=side.deployment)
        try:
            await workflow.execute_activity_method(
                KubernetesActivities.scale_deployment,
                ScaleInput(ref=ref, replicas=side.replicas),
                start_to_close_timeout=timedelta(minutes=2),
                retry_policy=ACTIVITY_RETRY,
            )
            state = await workflow.execute_activity_method(
                KubernetesActivities.wait_rollout,
                WaitRolloutInput(
                    ref=ref, deadline_seconds=timeouts.rollout.total_seconds(), poll_seconds=timeouts.rollout_poll_seconds
                ),
                start_to_close_timeout=timeouts.rollout + timedelta(minutes=2),
                heartbeat_timeout=timedelta(seconds=max(60, 4 * timeouts.rollout_poll_seconds)),
                retry_policy=ACTIVITY_RETRY,
            )
        except ActivityError as err:
            self.step_failed(rec, _cause(err))
            raise _Stop("Failed", "scale_failed", f"{side.region} compute not ready: {_cause(err)}; DNS unchanged",
                        errors.VERIFICATION_FAILED, severity="critical") from None
        await self.step_done(rec, f"{state.ready_replicas}/{state.replicas} ready")

    async def shift_dns(self, dns: DnsSpec, active: RegionSide, standby: RegionSide) -> None:
        rec = self.step_started("dns", f"{dns.record_name} -> {active.region}")
        try:
            await workflow.execute_activity_method(
                Route53Activities.route53_upsert_records,
                Route53UpsertInput(zone_id=dns.zone_id, records=dns_records(dns, active, standby)),
                start_to_close_timeout=timedelta(minutes=10),
                heartbeat_timeout=timedelta(minutes=1),
                retry_policy=ACTIVITY_RETRY,
            )
        except ActivityError as err:
            self.step_failed(rec, _cause(err))
            raise _Stop("Held", "dns_failed", f"DNS shift to {active.region} failed: {_cause(err)}; the promoted database "
                        "and scaled compute are left in place for a person", errors.VERIFICATION_FAILED, severity="critical") from None
        self.dns_shifted = True
        await self.step_done(rec, f"{dns.record_name} {dns.routing} records point at {active.dns_value}")

    async def verify(self, side: RegionSide, passes: int, attempts: int, interval: timedelta, timeout: float, hold: timedelta) -> None:
        """Probe until ``passes`` consecutive successes; on failure page and hold for a person (never flap back)."""
        while True:
            rec = self.step_started("verify", side.health_url)
            streak, last = 0, None
            for attempt in range(1, attempts + 1):
                last = await self.probe(side, timeout)
                streak = streak + 1 if last.ok else 0
                if streak >= passes:
                    break
                if attempt < attempts:
                    await workflow.sleep(interval)
            if streak >= passes:
                self.verified_at = workflow.now()
                await self.step_done(rec, f"{passes} consecutive passing probes ({last.status}, {last.latency_ms:.0f} ms)")
                return
            assert last is not None
            self.step_failed(rec, f"failed: {last.error}")
            self.held = True
            self.reverify_request = None
            self.set_status("Held", f"held: {side.region} failed verification")
            await self.notify(
                "alert",
                f"{self.service}: {side.region} failed verification after the DNS shift - HELD",
                f"{last.error}. Traffic stays on {side.region}; nothing shifts back automatically. Fix it and send "
                "`reverify`, or abort to end the run held.",
                severity="critical",
            )
            try:
                await workflow.wait_condition(lambda: self.reverify_request is not None or self.aborting, timeout=hold)
            except TimeoutError:
                pass
            if self.reverify_request is None:
                who = self.abort_request.requested_by if self.abort_request else "nobody"
                raise _Stop("Held", "held", f"{side.region} failed verification ({last.error}); held, ended by {who}",
                            errors.VERIFICATION_FAILED, severity="critical")
            self.held = False
            self.set_status("Running", "verify")

    async def set_size(self, side: RegionSide, replicas: int) -> None:
        if side.deployment is None:
            skip = self.step_started("standby", f"{side.region}: compute to {replicas}")
            self.step_failed(skip, f"skipped: no compute (deployment) configured for {side.region}", status="skipped")
            return
        ref = DeploymentRef(context=side.k8s_context, namespace=side.namespace, name=side.deployment)
        rec = self.step_started("standby", f"{side.region}/{side.deployment} to {replicas}")
        try:
            await workflow.execute_activity_method(
                KubernetesActivities.scale_deployment,
                ScaleInput(ref=ref, replicas=replicas, ignore_missing=True),
                start_to_close_timeout=timedelta(minutes=2),
                retry_policy=ACTIVITY_RETRY,
            )
        except ActivityError as err:
            self.step_failed(rec, _cause(err))
            await self.notify("alert", f"{self.service}: could not resize {side.region}", _cause(err), severity="warning")
            return
        await self.step_done(rec, f"{side.deployment} at {replicas}")

    # -- the end
    def result(self, status: RunStatus, outcome: str, summary: str) -> RegionMoveResult:
        rto = (self.verified_at - self.started_at).total_seconds() if self.verified_at else None
        return RegionMoveResult(
            status=status,
            summary=summary,
            steps=list(self._steps),
            gates=list(self._closed_gates),
            outcome=outcome,  # type: ignore[arg-type]
            from_region=self.source.region,
            to_region=self.target.region,
            fenced=list(self.fenced),
            not_fenced=list(self.not_fenced),
            dns_shifted=self.dns_shifted,
            rto_seconds=rto,
            rto_target_seconds=self.rto_target.total_seconds(),
            rto_met=None if rto is None else rto <= self.rto_target.total_seconds(),
            evidence=list(self.evidence),
        )

    def report_fields(self, result: RegionMoveResult) -> dict[str, str]:
        fields = {
            "from": result.from_region,
            "to": result.to_region,
            "RTO": "n/a" if result.rto_seconds is None else f"{format_duration(timedelta(seconds=round(result.rto_seconds)))}"
            f" (target {format_duration(self.rto_target)}, {'met' if result.rto_met else 'MISSED'})",
            "fenced": "; ".join(result.fenced) or "nothing",
        }
        if result.not_fenced:
            fields["not fenced"] = "; ".join(result.not_fenced)
        for step in result.steps:
            if step.finished_at:
                fields[f"step {step.name}"] = f"{step.status} in {(step.finished_at - step.started_at).total_seconds():.0f}s"
        return fields

    async def stop(self, stop: _Stop) -> RegionMoveResult:
        result = self.result(stop.status, stop.outcome, stop.summary)
        if stop.severity == "critical":
            await self.notify("alert", f"{self.service}: {stop.outcome.replace('_', ' ')}", stop.summary,
                              fields=self.report_fields(result), severity="critical")
        await self.finish(stop.status, stop.summary, severity=stop.severity)
        if stop.error_type is None:
            return result
        raise ApplicationError(stop.summary, result.model_dump(mode="json"), type=stop.error_type, non_retryable=True)


# --------------------------------------------------------------------------------------------------- failover
@workflow.defn
class RegionFailover(_RegionMove):
    @workflow.init
    def __init__(self, input: RegionFailoverInput) -> None:
        super().__init__(input.meta)
        self._init_move(input.service, input.primary, input.dr, input.rto_target)
        self.mode = input.mode

    def status_details(self) -> dict[str, Any]:
        return {**super().status_details(), "mode": self.mode}

    @workflow.run
    async def run(self, input: RegionFailoverInput) -> RegionMoveResult:
        self.begin()
        await self.notify("started", f"{input.mode} failover of {input.service}: {input.primary.region} -> {input.dr.region}")
        try:
            if input.mode == "real":
                await self.confirm_outage(input)
            await self.ask_approval(input)
            await self.fence(input.primary, compute=True)
            await self.promote_or_compensate(input)
            await self.shift_dns(input.dns, input.dr, input.primary)
            await self.verify(input.dr, input.verify_passes, input.verify_attempts, input.verify_interval,
                              input.probe_timeout_seconds, input.timeouts.hold)
        except _Stop as stop:
            return await self.stop(stop)
        result = self.result("Succeeded", "failed_over", "")
        result.summary = (
            f"{input.service} serves from {input.dr.region}; RTO {result.rto_seconds:.0f}s "
            f"(target {input.rto_target.total_seconds():.0f}s, {'met' if result.rto_met else 'MISSED'})"
        )
        await self.notify("step_done", f"{input.service} failed over to {input.dr.region}", result.summary,
                          fields=self.report_fields(result), severity="info" if result.rto_met else "warning")
        if input.mode == "drill":
            result.failback = await self.drill_failback(input)
            if result.failback.status != "Succeeded":
                result.status = "Failed"
                result.summary += f"; automatic failback {result.failback.outcome}: {result.failback.summary}"
                await self.finish("Failed", result.summary, severity="error")
                raise ApplicationError(result.summary, result.model_dump(mode="json"), type=errors.VERIFICATION_FAILED,
                                       non_retryable=True)
            result.summary += f"; failed back to {input.primary.region} (RTO {result.failback.rto_seconds:.0f}s)"
        await self.finish("Succeeded", result.summary)
        return result

    async def confirm_outage(self, input: RegionFailoverInput) -> None:
        rec = self.step_started("confirm", f"{input.confirm_probes} consecutive failed probes of {input.primary.health_url}")
        deadline = workflow.now() + input.confirm_window
        failures = successes = 0
        while True:
            if self.incident_resolved_at is not None:
                self.step_failed(rec, "incident resolved while confirming", status="skipped")
                raise _Stop("Succeeded", "no_failover_needed", "no failover needed: the incident was resolved", None, "info")
            if self.aborting:
                self.step_failed(rec, "aborted", status="skipped")
                raise _Stop("Aborted", "aborted", f"aborted while confirming by {self.abort_request.requested_by}", errors.ABORTED, "warning")
            probe = await self.probe(input.primary, input.probe_timeout_seconds)
            at = workflow.now().strftime("%H:%M:%S")
            self.evidence.append(f"{at} {input.primary.region}: " + (f"ok {probe.status}" if probe.ok else f"FAILED {probe.error}"))
            if probe.ok:
                failures, successes = 0, successes + 1
            else:
                failures, successes = failures + 1, 0
            if failures >= input.confirm_probes:
                await self.step_done(rec, f"outage confirmed: {failures} consecutive failed probes")
                return
            if successes >= input.confirm_probes:
                self.step_failed(rec, "primary healthy", status="skipped")
                raise _Stop("Succeeded", "no_failover_needed",
                            f"no failover needed: {input.primary.region} answered {successes} probes in a row", None, "info")
            if workflow.now() + input.confirm_interval > deadline:
                self.step_failed(rec, "not confirmed within the window", status="skipped")
                raise _Stop("Succeeded", "no_failover_needed",
                            f"no failover needed: outage of {input.primary.region} not confirmed within "
                            f"{format_duration(input.confirm_window)} (flapping?)", None, "warning")
            try:
                await workflow.wait_condition(
                    lambda: self.incident_resolved_at is not None or self.aborting, timeout=input.confirm_interval
                )
            except TimeoutError:
                pass

    async def ask_approval(self, input: RegionFailoverInput) -> None:
        evidence = "\n".join(self.evidence[-10:]) or "drill: primary not probed"
        outcome = await self.request_approval(
            "failover",
            f"{input.mode.capitalize()} failover of {input.service}: {input.primary.region} -> {input.dr.region}",
            f"Promote {input.dr.region}/{input.dr.database}, "
            + (f"scale {input.dr.deployment} to {input.dr.replicas}, " if input.dr.deployment else "")
            + f"point {input.dns.record_name} at {input.dr.dns_value}.\nEvidence:\n{evidence}",
            binding=f"failover:{input.service}:{input.primary.region}->{input.dr.region}",
        )
        if not outcome.approved:
            status: RunStatus = "Aborted" if outcome.decision == "aborted" else "Failed"
            kind = {"aborted": errors.ABORTED, "timed_out": errors.APPROVAL_TIMED_OUT}.get(outcome.decision, errors.APPROVAL_REJECTED)
            raise _Stop(status, "not_approved" if outcome.decision != "aborted" else "aborted",
                        f"failover not approved ({outcome.decision.replace('_', ' ')}): nothing was changed", kind, "warning")

    async def promote_or_compensate(self, input: RegionFailoverInput) -> None:
        try:
            await self.promote(input.dr.database, input.dr.region, input.timeouts)
            await self.scale_up(input.dr, input.timeouts)
        except _Stop:
            # ---- compensation (before any DNS change): a drill gives the primary its compute back
            if input.mode == "drill" and any(f.startswith("compute") for f in self.fenced):
                await self.set_size(input.primary, input.primary.replicas)
            raise

    async def drill_failback(self, input: RegionFailoverInput) -> RegionMoveResult:
        self.set_status("Running", "failback")
        child_input = RegionFailbackInput(
            meta=self.meta.model_copy(
                update={"runbook": "region-failback", "approval": ApprovalPolicy(required_approvals=0)}
            ),
            service=input.service,
            original=input.primary,
            current=input.dr,
            dns=input.dns,
            replica=input.failback_replica or f"{input.primary.database}-failback",
            max_replica_lag_seconds=input.max_replica_lag_seconds,
            rto_target=input.rto_target,
            probe_timeout_seconds=input.probe_timeout_seconds,
            verify_passes=input.verify_passes,
            verify_attempts=input.verify_attempts,
            verify_interval=input.verify_interval,
            timeouts=input.timeouts,
        )
        try:
            return await workflow.execute_child_workflow(
                RegionFailback.run, child_input, id=f"{workflow.info().workflow_id}-failback"
            )
        except ChildWorkflowError as err:
            cause = err.cause
            if isinstance(cause, ApplicationError) and cause.details:
                return RegionMoveResult.model_validate(cause.details[0])
            return RegionMoveResult(status="Failed", summary=str(cause or err), outcome="held",
                                    from_region=input.dr.region, to_region=input.primary.region,
                                    rto_target_seconds=input.rto_target.total_seconds())


# --------------------------------------------------------------------------------------------------- failback
@workflow.defn
class RegionFailback(_RegionMove):
    @workflow.init
    def __init__(self, input: RegionFailbackInput) -> None:
        super().__init__(input.meta)
        target = input.original.model_copy(update={"database": input.replica})
        self._init_move(input.service, input.current, target, input.rto_target)

    @workflow.run
    async def run(self, input: RegionFailbackInput) -> RegionMoveResult:
        self.begin()
        back = self.target  # the original region, with the new replica as its database
        await self.notify("started", f"failback of {input.service}: {input.current.region} -> {back.region}")
        try:
            await self.catch_up(input, back)
            outcome = await self.request_approval(
                "failback",
                f"Failback of {input.service}: {input.current.region} -> {back.region}",
                f"Replica {back.region}/{input.replica} has caught up ({self.evidence[-1] if self.evidence else ''}). "
                "Promote it, "
                + (f"scale {back.deployment} to {back.replicas}, " if back.deployment else "")
                + f"point {input.dns.record_name} at {back.dns_value}"
                + (f", then scale {input.current.region} to {input.current.standby_replicas}." if input.current.deployment else "."),
                binding=f"failback:{input.service}:{input.current.region}->{back.region}",
            )
            if not outcome.approved:
                status: RunStatus = "Aborted" if outcome.decision == "aborted" else "Failed"
                kind = {"aborted": errors.ABORTED, "timed_out": errors.APPROVAL_TIMED_OUT}.get(outcome.decision, errors.APPROVAL_REJECTED)
                raise _Stop(status, "not_approved", f"failback not approved ({outcome.decision.replace('_', ' ')}); "
                            f"the replica {input.replica} is left in place", kind, "warning")
            self.started_at = workflow.now()  # the failback's RTO counts from the decision, not the catch-up
            # the serving region keeps its compute until DNS has moved: only its database writes are fenced
            await self.fence(input.current, compute=False)
            await self.promote(input.replica, back.region, input.timeouts)
            await self.scale_up(back, input.timeouts)
            await self.shift_dns(input.dns, back, input.current)
            await self.verify(back, input.verify_passes, input.verify_attempts, input.verify_interval,
                              input.probe_timeout_seconds, input.timeouts.hold)
            await self.set_size(input.current, input.current.standby_replicas)
        except _Stop as stop:
            return await self.stop(stop)
        result = self.result("Succeeded", "failed_back", "")
        result.summary = f"{input.service} serves from {back.region} again; RTO {result.rto_seconds:.0f}s"
        await self.finish("Succeeded", result.summary)
        return result

    async def catch_up(self, input: RegionFailbackInput, back: RegionSide) -> None:
        rec = self.step_started("replica", f"{back.region}/{input.replica} from {input.current.region}/{input.current.database}")
        try:
            await workflow.execute_activity_method(
                RdsActivities.rds_create_replica,
                RdsCreateReplicaInput(
                    source_arn_or_id=input.current.database,
                    source_region=input.current.region,
                    replica_identifier=input.replica,
                    region=back.region,
                ),
                start_to_close_timeout=timedelta(minutes=5),
                retry_policy=ACTIVITY_RETRY,
            )
            await workflow.execute_activity_method(
                RdsActivities.rds_wait_available,
                RdsWaitInput(identifier=input.replica, region=back.region, deadline_seconds=input.catch_up_timeout.total_seconds()),
                start_to_close_timeout=input.catch_up_timeout + timedelta(minutes=2),
                heartbeat_timeout=timedelta(minutes=2),
                retry_policy=ACTIVITY_RETRY,
            )
            deadline = workflow.now() + input.catch_up_timeout
            while True:
                lag = await workflow.execute_activity_method(
                    RdsActivities.rds_replica_lag,
                    RdsInstanceRef(identifier=input.replica, region=back.region),
                    start_to_close_timeout=timedelta(minutes=1),
                    retry_policy=ACTIVITY_RETRY,
                )
                seen = "unknown" if lag.lag_seconds is None else f"{lag.lag_seconds:.0f}s"
                self.evidence.append(f"{workflow.now():%H:%M:%S} replica lag {seen}")
                if lag.lag_seconds is not None and lag.lag_seconds <= input.max_replica_lag_seconds:
                    break
                if self.aborting:
                    raise _Stop("Aborted", "aborted", "aborted while the replica catches up", errors.ABORTED, "warning")
                if workflow.now() + input.catch_up_poll > deadline:
                    raise _Stop("Failed", "catch_up_failed", f"replica {input.replica} lag {seen} still above "
                                f"{input.max_replica_lag_seconds:.0f}s after {format_duration(input.catch_up_timeout)}",
                                errors.DEADLINE_EXCEEDED, "error")
                try:
                    await workflow.wait_condition(lambda: self.aborting, timeout=input.catch_up_poll)
                except TimeoutError:
                    pass
        except ActivityError as err:
            self.step_failed(rec, _cause(err))
            raise _Stop("Failed", "catch_up_failed", f"replica {input.replica} in {back.region}: {_cause(err)}",
                        errors.VERIFICATION_FAILED, "error") from None
        await self.step_done(rec, self.evidence[-1])


def _cause(err: BaseException) -> str:
    cause = err
    while getattr(cause, "cause", None) is not None:
        cause = cause.cause  # type: ignore[assignment]
    return getattr(cause, "message", None) or str(cause)


WORKFLOWS = [RegionFailover, RegionFailback]
