"""Regional failover and failback: move a service to its disaster-recovery region and back.

``RegionFailover`` (runbook ``region-failover``), stages of the status query:
0. ``look``      READ-ONLY: resolve every target (databases, the DNS zone and record, the Deployments) and record
   the as-found state of everything the run will touch. A blank or unknown target ends the run ``Refused``
   ("nothing was changed") before any change.
1. ``confirm``   (real mode) probe the primary's health endpoint every ``confirm_interval``; ``confirm_probes``
   consecutive failures confirm the outage; as many consecutive successes, an expired ``confirm_window`` or the
   ``incident_resolved`` signal end the run Succeeded with "no failover needed" (a blip never moves a region).
2. ``approval``  the gate shows the evidence (probe results); a policy may pre-approve (required_approvals 0).
3. ``fence``     scale the primary's Deployment to 0 and block writes on the primary database (best effort: the
   primary region may be unreachable). A fence that cannot be applied is reported and needs an explicit approval.
4. ``promote``   promote the DR read replica and wait until it is available (a writable primary).
5. ``scale``     scale the DR Deployment to production size and wait for its rollout.
6. ``dns``       UPSERT the Route53 records so DR takes the traffic; the activity reads them back.
7. ``verify``    probe the DR health endpoint from outside; a failure pages and holds for a person (``reverify``
   runs the checks again; ``abort`` or the hold timeout ends the run ``Held``). Never an automatic shift back.
A ``drill`` skips 1, then runs ``RegionFailback`` as a child workflow and ``restore``s the as-found state it
recorded in 0 (parameter groups, which database is the writable primary, the DR replica, compute, DNS) and
compares: any difference is ``not_undone`` and the drill ``Failed``.

``RegionFailback`` (runbook ``region-failback``): look (read-only), re-create a read replica in the original region
from the now-primary DR database, wait until it has caught up, approval, then fence / promote / scale / DNS / verify
in the other direction, and scale the DR region back to standby.

One way to end (workflows/base.py ``conduct``/``conclude``); abort and cancel are honoured at every step: between
steps (``check_abort``), during waits (``interruptible``), and right after a change (``change``). Compensation, one
block per runbook (``_compensate``): before DNS moved, the run gives back what it changed (a drill: everything, to
the as-found state); after DNS moved, a failure is never shifted back automatically (Held, the state named in
``left_in_place``), nor is a real failover's abort (Aborted, the state named), while an aborted drill goes home the
way it planned to (failback, restore). A drill's way back (failback, restore) is finished whatever arrives meanwhile;
an abort or cancel then ends it Aborted. docs/failover.md has the table per step.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any, Awaitable

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, ChildWorkflowError

with workflow.unsafe.imports_passed_through():

    from activities.aws import RdsActivities, Route53Activities
    from activities.http_checks import HttpCheckActivities
    from activities.kubernetes import KubernetesActivities
    from core import errors
    from core.approval import AbortInput, ApprovalPolicy
    from core.aws import (
        RdsCreateReplicaInput,
        RdsDeleteInput,
        RdsFenceInput,
        RdsInstanceRef,
        RdsParameterGroupInput,
        RdsWaitInput,
        RecordSet,
        Route53QueryInput,
        Route53UpsertInput,
    )
    from core.duration import format_duration, format_span
    from core.failover import (  # the runbooks' contract, re-exported: the workflows' own types
        AsFound,
        ComputeState,
        DbState,
        DnsSpec,
        RegionFailbackInput,
        RegionFailoverInput,
        RegionMoveResult,
        RegionSide,
        Timeouts,
        compare_as_found,
        db_state,
        dns_records,
        failback_problems,
        failover_problems,
        record_view,
    )
    from core.http_checks import HttpProbeInput, HttpProbeResult
    from core.kubernetes import DeploymentRef, ScaleInput, WaitRolloutInput
    from core.runbook import RunStatus
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
    from workflows.contract import ReverifyInput
    from workflows.steering import RegionMoveSteering

# The old primary's region may be down: a fence gets a few quick tries, then is reported as not applied.
FENCE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2), maximum_attempts=3, non_retryable_error_types=errors.NON_RETRYABLE
)
PROBE_RETRY = RetryPolicy(maximum_attempts=2)
# Reads of a region that may be down (a real failover's primary): a few quick tries, then "unreadable".
READ_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1), maximum_attempts=3, non_retryable_error_types=errors.NON_RETRYABLE
)
NOTHING_CHANGED = "nothing was changed"


# --------------------------------------------------------------------------------------------------- shared steps
# A run held after a failed verification and reverified tells people it recovered (runs recorded before did not).
RECOVERED_PATCH = "failover-recovered-notification"


class _RegionMove(RunbookWorkflow, RegionMoveSteering):
    """What both directions share: the read-only look, fence / promote / scale / DNS / verify, giving back."""

    def _init_move(self, service: str, source: RegionSide, target: RegionSide, rto_target: timedelta) -> None:
        self.service = service
        self.source, self.target = source, target
        self.rto_target = rto_target
        self.started_at: datetime = workflow.now()
        self.outcome = ""
        self.fenced: list[str] = []
        self.not_fenced: list[str] = []
        self.fence_started = False  # a fence change may have been made (compensation gives it back)
        self.promote_started = False  # the target database may have been promoted (irreversible)
        self.scaled_up = False
        self.dns_attempted = False  # the DNS change was started: from here on nothing shifts back automatically
        self.dns_shifted = False
        self.verified_at: datetime | None = None
        self.evidence: list[str] = []
        self.held = False
        self.reverify_request: ReverifyInput | None = None
        self.left_in_place: list[str] = []
        self.as_found: AsFound | None = None
        self.after: AsFound | None = None
        self.differences: list[str] = []
        self.giving_back = False  # in compensation or a drill's restore: reads are not cut short by the abort

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
            "elapsed": format_span(workflow.now() - self.started_at),
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

    # -- activities
    def _act(self, method: Any, arg: Any, *, minutes: float = 2, retry: RetryPolicy = ACTIVITY_RETRY,
             timeout: timedelta | None = None, heartbeat: timedelta | None = None) -> Awaitable[Any]:
        return workflow.execute_activity_method(
            method, arg, start_to_close_timeout=timeout or timedelta(minutes=minutes), heartbeat_timeout=heartbeat,
            retry_policy=retry,
        )

    async def probe(self, side: RegionSide, timeout: float) -> HttpProbeResult:
        """One probe from outside; an abort cuts it short (``interruptible``)."""
        try:
            return await self.interruptible(self._act(
                HttpCheckActivities.http_probe,
                HttpProbeInput(url=side.health_url, expect_body=side.health_expect_body, timeout_seconds=timeout),
                timeout=timedelta(seconds=timeout + 10), retry=PROBE_RETRY,
            ))
        except ActivityError as err:
            return HttpProbeResult(url=side.health_url, ok=False, error=f"probe failed: {cause_of(err)}")

    async def read(self, awaitable: Awaitable[Any], where: str = "") -> Any:
        """A read: cut short by an abort, except while giving back (then it must finish)."""
        return await (awaitable if self.giving_back else self.interruptible(awaitable, where))

    async def pause(self, interval: timedelta) -> None:
        """Sleep between polls; an abort wakes it and stops the run here."""
        try:
            await workflow.wait_condition(lambda: self.aborting, timeout=interval,
                                          timeout_summary=f"{self.stage}: next poll in {format_duration(interval)}")
        except TimeoutError:
            pass
        self.check_abort()

    # -- look: READ-ONLY, before the first change
    async def read_db(self, identifier: str, region: str, *, may_be_down: bool = False) -> DbState:
        try:
            inst = await self.read(self._act(
                RdsActivities.rds_describe_instance, RdsInstanceRef(identifier=identifier, region=region),
                minutes=1, retry=READ_RETRY if may_be_down else ACTIVITY_RETRY,
            ))
        except ActivityError as err:
            if not may_be_down:
                raise
            return DbState(identifier=identifier, region=region, exists=False, role="unreadable",
                           status=f"unreadable: {cause_of(err)}")
        return db_state(inst, region)

    async def read_compute(self, side: RegionSide, *, may_be_down: bool = False) -> ComputeState | None:
        if side.deployment is None:
            return None
        ref = DeploymentRef(context=side.k8s_context, namespace=side.namespace, name=side.deployment)
        try:
            state = await self.read(self._act(
                KubernetesActivities.get_deployment, ref, minutes=1,
                retry=READ_RETRY if may_be_down else ACTIVITY_RETRY,
            ))
        except ActivityError as err:
            if error_type(err) == errors.NOT_FOUND or not may_be_down:
                raise
            return ComputeState(region=side.region, deployment=side.deployment, replicas=None)
        return ComputeState(region=side.region, deployment=side.deployment, replicas=state.replicas)

    async def read_records(self, dns: DnsSpec) -> list[RecordSet]:
        found = await self.read(self._act(
            Route53Activities.route53_get_records,
            Route53QueryInput(zone_id=dns.zone_id, name=dns.record_name, type=dns.record_type), minutes=1,
        ))
        return sorted(found.records, key=lambda r: str(r.set_identifier))

    async def read_state(self, dbs: list[tuple[str, str, bool]], dns: DnsSpec,
                         sides: list[tuple[RegionSide, bool]]) -> AsFound:
        """Read every database ``(identifier, region, may_be_down)``, the DNS record and every side's compute."""
        state = AsFound()
        for identifier, region, may_be_down in dbs:
            db = await self.read_db(identifier, region, may_be_down=may_be_down)
            state.databases.append(db)
            if db.role == "unreadable":
                state.unreadable.append(f"database {db.key}: {db.status}")
        state.records = await self.read_records(dns)
        for side, may_be_down in sides:
            compute = await self.read_compute(side, may_be_down=may_be_down)
            if compute is not None:
                state.compute.append(compute)
                if compute.replicas is None:
                    state.unreadable.append(f"compute {compute.key}")
        return state

    async def look(self, what: str, dbs: list[tuple[str, str, bool]], dns: DnsSpec,
                   sides: list[tuple[RegionSide, bool]]) -> AsFound:
        """Resolve and validate every target with read-only activities; a blank or unknown one refuses the run."""
        rec = self.step_started("look", f"read-only: {what}")
        blank = [name for name, value in [("service", self.service), ("dns.zone_id", dns.zone_id),
                                          ("dns.record_name", dns.record_name)] + [(f"database in {r}", i) for i, r, _ in dbs]
                 if not str(value).strip()]
        blank += [f"{side.region} deployment" for side, _ in sides if side.deployment is not None and not side.deployment.strip()]
        if blank:
            self.step_failed(rec, "blank: " + ", ".join(blank))
            raise Stop("Refused", f"blank {', '.join(blank)}: {NOTHING_CHANGED}")
        try:
            state = await self.read_state(dbs, dns, sides)
        except ActivityError as err:
            self.step_failed(rec, cause_of(err))
            raise Stop("Refused", f"a target cannot be resolved: {cause_of(err)}: {NOTHING_CHANGED}") from None
        if not state.records:
            self.step_failed(rec, f"no {dns.record_type} record {dns.record_name}")
            raise Stop("Refused", f"no {dns.record_type} record {dns.record_name} in zone {dns.zone_id}: {NOTHING_CHANGED}")
        await self.step_done(rec, f"{len(state.databases)} databases, {len(state.records)} records, "
                                  f"{len(state.compute)} deployments read" +
                             (f"; unreadable: {'; '.join(state.unreadable)}" if state.unreadable else ""), notify=False)
        return state

    @staticmethod
    def refuse(problems: list[str]) -> None:
        if problems:
            raise Stop("Refused", "; ".join(problems) + f": {NOTHING_CHANGED}")

    # -- fence
    async def fence(self, side: RegionSide, *, compute: bool) -> None:
        self.check_abort("fence")
        if compute and side.deployment is None:
            self.step_skipped("fence-compute", f"no compute (deployment) configured for {side.region}")
            compute = False
        rec = self.step_started("fence", f"{side.region}: stop writes" + (" and compute" if compute else ""))
        self.fence_started = True
        if compute:
            ref = DeploymentRef(context=side.k8s_context, namespace=side.namespace, name=side.deployment)
            try:
                await self.change(self._act(KubernetesActivities.scale_deployment,
                                            ScaleInput(ref=ref, replicas=0, ignore_missing=True), retry=FENCE_RETRY), "fence")
                self.fenced.append(f"compute {side.region}/{side.namespace}/{side.deployment} scaled to 0")
            except ActivityError as err:
                self.not_fenced.append(f"compute {side.region}/{side.deployment}: {cause_of(err)}")
        try:
            result = await self.change(self._act(
                RdsActivities.rds_set_writes_blocked,
                RdsFenceInput(identifier=side.database, region=side.region, parameter_group=side.read_only_parameter_group),
                minutes=5, retry=FENCE_RETRY,
            ), "fence")
            if result.fenced:
                self.fenced.append(f"database {side.region}/{side.database} ({result.how}: {result.reason})")
            else:
                self.not_fenced.append(f"database {side.region}/{side.database}: {result.reason}")
        except ActivityError as err:
            self.not_fenced.append(f"database {side.region}/{side.database}: {cause_of(err)}")
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
            self.outcome = "fence_refused"
            raise gate_stop(outcome, "stopped before promotion (fence incomplete): continuing")

    # -- promote / scale / DNS
    async def promote(self, database: str, region: str, timeouts: Timeouts) -> None:
        self.check_abort("promote")
        rec = self.step_started("promote", f"{region}/{database}")
        self.promote_started = True
        try:
            await self.change(self._act(RdsActivities.rds_promote_replica,
                                        RdsInstanceRef(identifier=database, region=region), minutes=5), "promote")
            inst = await self.interruptible(self._act(
                RdsActivities.rds_wait_available,
                RdsWaitInput(identifier=database, region=region, deadline_seconds=timeouts.promote.total_seconds()),
                timeout=timeouts.promote + timedelta(minutes=2), heartbeat=timedelta(minutes=2),
            ), "promote")
        except ActivityError as err:
            self.step_failed(rec, cause_of(err))
            self.outcome = "promotion_failed"
            raise Stop("RolledBack", f"promotion of {region}/{database} failed: {cause_of(err)}; DNS unchanged",
                       severity="error") from None
        except Stop:
            self.step_failed(rec, "aborted (the promotion itself, once started, is not undone)")
            raise
        await self.step_done(rec, f"{database} is a writable primary ({inst.status}, endpoint {inst.endpoint})")

    async def scale_up(self, side: RegionSide, timeouts: Timeouts) -> None:
        self.check_abort("scale")
        if side.deployment is None:
            self.step_skipped("scale", f"no compute (deployment) configured for {side.region}")
            return
        rec = self.step_started("scale", f"{side.region}/{side.namespace}/{side.deployment} to {side.replicas}")
        ref = DeploymentRef(context=side.k8s_context, namespace=side.namespace, name=side.deployment)
        self.scaled_up = True
        try:
            await self.change(self._act(KubernetesActivities.scale_deployment,
                                        ScaleInput(ref=ref, replicas=side.replicas)), "scale")
            state = await self.interruptible(self._act(
                KubernetesActivities.wait_rollout,
                WaitRolloutInput(ref=ref, deadline_seconds=timeouts.rollout.total_seconds(),
                                 poll_seconds=timeouts.rollout_poll_seconds),
                timeout=timeouts.rollout + timedelta(minutes=2),
                heartbeat=timedelta(seconds=max(60, 4 * timeouts.rollout_poll_seconds)),
            ), "scale")
        except ActivityError as err:
            self.step_failed(rec, cause_of(err))
            self.outcome = "scale_failed"
            raise Stop("RolledBack", f"{side.region} compute not ready: {cause_of(err)}; DNS unchanged",
                       severity="error") from None
        except Stop:
            self.step_failed(rec, "aborted", "compensated")
            raise
        await self.step_done(rec, f"{state.ready_replicas}/{state.replicas} ready")

    async def shift_dns(self, dns: DnsSpec, active: RegionSide, standby: RegionSide) -> None:
        self.check_abort("dns")
        rec = self.step_started("dns", f"{dns.record_name} -> {active.region}")
        self.dns_attempted = True
        try:
            await self.change(self._act(
                Route53Activities.route53_upsert_records,
                Route53UpsertInput(zone_id=dns.zone_id, records=dns_records(dns, active, standby)),
                minutes=10, heartbeat=timedelta(minutes=1),
            ), "dns")
        except ActivityError as err:
            self.step_failed(rec, cause_of(err))
            self.outcome = "dns_failed"
            raise Stop("Held", f"DNS shift to {active.region} failed: {cause_of(err)}", severity="critical") from None
        except (Stop, asyncio.CancelledError):  # aborted or cancelled right after the shift: it is done
            self.dns_shifted = True
            self.step_failed(rec, f"{dns.record_name} points at {active.dns_value}; then aborted", "done")
            raise
        self.dns_shifted = True
        await self.step_done(rec, f"{dns.record_name} {dns.routing} records point at {active.dns_value}")

    async def verify(self, side: RegionSide, passes: int, attempts: int, interval: timedelta, timeout: float,
                     hold: timedelta) -> None:
        """Probe until ``passes`` consecutive successes; on failure page and hold for a person (never flap back). A
        run that passes after a hold says so (``recovered``: Slack is told, and the page of the hold resolves)."""
        reverified_by: str | None = None
        while True:
            self.check_abort("verify")
            rec = self.step_started("verify", side.health_url)
            streak, last = 0, None
            try:
                for attempt in range(1, attempts + 1):
                    last = await self.probe(side, timeout)
                    streak = streak + 1 if last.ok else 0
                    if streak >= passes:
                        break
                    if attempt < attempts:
                        await self.pause(interval)
            except Stop:
                self.step_failed(rec, "aborted while verifying")
                raise
            assert last is not None  # attempts >= 1 (the input says so)
            if streak >= passes:
                self.verified_at = workflow.now()
                await self.step_done(rec, f"{passes} consecutive passing probes ({last.status}, {last.latency_ms:.0f} ms)")
                if reverified_by is not None and workflow.patched(RECOVERED_PATCH):
                    await self.notify(
                        "recovered",
                        f"{self.service}: {side.region} passed verification after the hold - recovered",
                        f"{passes} consecutive passing probes after `reverify` by {reverified_by}; traffic stays on "
                        f"{side.region}.",
                    )
                return
            self.step_failed(rec, f"failed: {last.error}")
            self.held = True
            self.reverify_request = None
            # Paused, not Held: Held is how a run ENDS; while it waits for a person, abort and reverify still work
            self.set_status("Paused", f"held: {side.region} failed verification")
            await self.notify(
                "alert",
                f"{self.service}: {side.region} failed verification after the DNS shift - HELD",
                f"{last.error}. Traffic stays on {side.region}; nothing shifts back automatically. Fix it and send "
                "`reverify`, or abort to end the run held.",
                severity="critical",
            )
            try:
                await workflow.wait_condition(lambda: self.reverify_request is not None or self.aborting, timeout=hold,
                                              timeout_summary=f"held: waiting up to {format_duration(hold)} for reverify or abort")
            except TimeoutError:
                pass
            if self.reverify_request is None:
                who = self.abort_request.requested_by if self.abort_request else f"nobody within {format_duration(hold)}"
                self.outcome = "held"
                raise Stop("Held", f"{side.region} failed verification ({last.error}); held, ended by {who}",
                           severity="critical")
            self.held = False
            reverified_by = self.reverify_request.requested_by
            self.set_status("Running", "verify")

    async def set_size(self, side: RegionSide, replicas: int, step: str = "standby") -> None:
        if side.deployment is None:
            self.step_skipped(step, f"no compute (deployment) configured for {side.region}")
            return
        ref = DeploymentRef(context=side.k8s_context, namespace=side.namespace, name=side.deployment)
        rec = self.step_started(step, f"{side.region}/{side.deployment} to {replicas}")
        try:
            await self.change(self._act(KubernetesActivities.scale_deployment,
                                        ScaleInput(ref=ref, replicas=replicas, ignore_missing=True)), step)
        except ActivityError as err:
            self.step_failed(rec, cause_of(err))
            await self.notify("alert", f"{self.service}: could not resize {side.region}", cause_of(err), severity="warning")
            return
        await self.step_done(rec, f"{side.deployment} at {replicas}")

    # -- giving back (compensation): each action says what it undid or why it could not
    async def undo(self, ending: Ending, what: str, awaitable: Awaitable[Any]) -> bool:
        try:
            await awaitable
        except ActivityError as err:
            ending.not_undone.append(f"{what}: {cause_of(err)}")
            return False
        ending.compensated.append(what)
        return True

    async def unfence(self, ending: Ending, side: RegionSide, *, compute: bool) -> None:
        """Give the fenced side back what the fence took (its as-found parameter group and compute size)."""
        db_fenced = any(f.startswith(f"database {side.region}/{side.database} ") for f in self.fenced)
        compute_fenced = any(f.startswith(f"compute {side.region}/") for f in self.fenced)
        before = self.as_found.db(side.region, side.database) if self.as_found else None
        if db_fenced and not side.read_only_parameter_group:
            ending.not_undone.append(f"database {side.region}/{side.database}: stopped by the fence; start it by hand")
        elif db_fenced and (before is None or len(before.parameter_groups) != 1):
            ending.not_undone.append(f"database {side.region}/{side.database}: its parameter group before the fence "
                                     f"is not known; it keeps {side.read_only_parameter_group} (read-only)")
        elif db_fenced and before is not None and before.parameter_groups[0] != side.read_only_parameter_group:
            group = before.parameter_groups[0]
            await self.undo(ending, f"database {side.region}/{side.database} parameter group back to {group}",
                            self._act(RdsActivities.rds_set_parameter_group,
                                      RdsParameterGroupInput(identifier=side.database, region=side.region,
                                                             parameter_group=group), minutes=5))
        if compute and compute_fenced:
            await self.resize_back(ending, side, side.replicas)

    async def resize_back(self, ending: Ending, side: RegionSide, fallback: int) -> None:
        if side.deployment is None:
            return
        replicas = self.as_found.replicas(side.region, side.deployment) if self.as_found else None
        replicas = fallback if replicas is None else replicas
        ref = DeploymentRef(context=side.k8s_context, namespace=side.namespace, name=side.deployment)
        await self.undo(ending, f"compute {side.region}/{side.deployment} back to {replicas}",
                        self._act(KubernetesActivities.scale_deployment,
                                  ScaleInput(ref=ref, replicas=replicas, ignore_missing=True)))

    # -- the end
    def build(self, common: dict[str, Any], **extra: Any) -> RegionMoveResult:
        rto = (self.verified_at - self.started_at).total_seconds() if self.verified_at else None
        status = common["status"]
        outcome = self.outcome or {"Aborted": "aborted", "Rejected": "not_approved", "Refused": "refused",
                                   "Held": "held", "RolledBack": "rolled_back", "Failed": "failed"}.get(status, status.lower())
        return RegionMoveResult(
            **common,
            outcome=outcome,
            from_region=self.source.region,
            to_region=self.target.region,
            fenced=list(self.fenced),
            not_fenced=list(self.not_fenced),
            dns_shifted=self.dns_shifted,
            left_in_place=list(self.left_in_place),
            rto_seconds=rto,
            rto_target_seconds=self.rto_target.total_seconds(),
            rto_met=None if rto is None else rto <= self.rto_target.total_seconds(),
            evidence=list(self.evidence),
            as_found=self.as_found,
            after=self.after,
            differences=list(self.differences),
            **extra,
        )

    def report_fields(self) -> dict[str, str]:
        rto = (self.verified_at - self.started_at).total_seconds() if self.verified_at else None
        fields = {
            "from": self.source.region,
            "to": self.target.region,
            "RTO": "n/a" if rto is None else f"{format_duration(timedelta(seconds=round(rto)))}"
            f" (target {format_duration(self.rto_target)}, {'met' if rto <= self.rto_target.total_seconds() else 'MISSED'})",
            "fenced": "; ".join(self.fenced) or "nothing",
        }
        if self.not_fenced:
            fields["not fenced"] = "; ".join(self.not_fenced)
        if self.left_in_place:
            fields["left in place"] = "; ".join(self.left_in_place)
        for step in self.steps:
            if step.finished_at:
                fields[f"step {step.name}"] = f"{step.status} in {(step.finished_at - step.started_at).total_seconds():.0f}s"
        return fields

# --------------------------------------------------------------------------------------------------- failover
@workflow.defn
class RegionFailover(_RegionMove):
    @workflow.init
    def __init__(self, input: RegionFailoverInput) -> None:
        super().__init__(input.meta, input.carry)
        self._init_move(input.service, input.primary, input.dr, input.rto_target)
        self.input = input
        self.mode = input.mode
        self.failback_db = input.failback_replica or f"{input.primary.database}-failback"
        self.failback_handle: workflow.ChildWorkflowHandle | None = None
        self.failback_result: RegionMoveResult | None = None

    def freeze_kind(self) -> str:
        """A real failover and a drill are exempted from a freeze separately (region-failover:real)."""
        return self.mode

    def status_details(self) -> dict[str, Any]:
        drill, dr = self.mode != "real", self.input.dr
        plan = ["look", *([] if drill else ["confirm"]), "fence", "promote", *(["scale"] if dr.deployment else []),
                "dns", "verify", *(["failback", "restore"] if drill else [])]
        details = {**super().status_details(), "mode": self.mode, "plan": plan}
        if self.failback_result is not None:
            details["failback"] = self.failback_result.status
        return details

    @workflow.run
    async def run(self, input: RegionFailoverInput) -> RegionMoveResult:
        self.begin()
        await self.notify("started", f"{input.mode} failover of {input.service}: {input.primary.region} -> {input.dr.region}")
        ending = await self.conduct(lambda: self._failover(input), self._compensate)
        return await self.conclude(ending, lambda common: self.build(common, failback=self.failback_result),
                                   fields=self.report_fields())

    # -- what a drill touches (and records before it starts)
    def _databases(self) -> list[tuple[str, str, bool]]:
        p, d = self.input.primary, self.input.dr
        real = self.mode == "real"
        dbs = [(p.database, p.region, real), (d.database, d.region, False)]
        if not real:
            dbs.append((self.failback_db, p.region, False))
        return dbs

    def _sides(self) -> list[tuple[RegionSide, bool]]:
        return [(self.input.primary, self.mode == "real"), (self.input.dr, False)]

    def _problems(self) -> list[str]:
        """What makes the targets unusable, from the read-only look (empty: go on)."""
        p, d, state = self.input.primary, self.input.dr, self.as_found
        assert state is not None
        primary, dr = state.db(p.region, p.database), state.db(d.region, d.database)
        assert primary is not None and dr is not None  # look() records every database it was given, read or not
        extras = [state.db(region, identifier) for identifier, region, _ in self._databases()[2:]]
        return failover_problems(primary, dr, self.mode, [e for e in extras if e is not None])

    async def _failover(self, input: RegionFailoverInput) -> str | Ending:
        primary, dr = input.primary, input.dr
        self.as_found = await self.look(f"{primary.region} -> {dr.region}", self._databases(), input.dns, self._sides())
        self.refuse(self._problems())
        if input.mode == "real":
            no_need = await self.confirm_outage(input)
            if no_need is not None:
                self.outcome = "no_failover_needed"
                return no_need
        await self.ask_approval(input)
        await self.fence(primary, compute=True)
        await self.promote(dr.database, dr.region, input.timeouts)
        await self.scale_up(dr, input.timeouts)
        await self.shift_dns(input.dns, dr, primary)
        await self.verify(dr, input.verify_passes, input.verify_attempts, input.verify_interval,
                          input.probe_timeout_seconds, input.timeouts.hold)
        self.outcome = "failed_over"
        assert self.verified_at is not None  # verify() returned: it passed
        rto = (self.verified_at - self.started_at).total_seconds()
        met = rto <= input.rto_target.total_seconds()
        summary = (f"{input.service} serves from {dr.region}; RTO {rto:.0f}s "
                   f"(target {input.rto_target.total_seconds():.0f}s, {'met' if met else 'MISSED'})")
        await self.notify("step_done", f"{input.service} failed over to {dr.region}", summary,
                          fields=self.report_fields(), severity="info" if met else "warning")
        if input.mode == "real":
            return summary
        # ---- drill: fail back, then put everything back as it was found, and prove it. This is the drill's way
        # back: once started it is finished whatever arrives meanwhile (an abort or a cancel then ends it Aborted).
        self.check_abort("failback")  # aborted before the failback: the compensation takes the drill home
        ending = Ending("Succeeded", summary)
        task = asyncio.ensure_future(self.go_home(ending))
        if await until_done(task):  # cancelled meanwhile: treated as an abort, after the way back
            self.request_abort(AbortInput(requested_by="temporal", reason="the workflow was cancelled"))
        task.result()
        if self.aborting:
            ending.status = "Aborted"
            ending.summary = (f"{self.abort_stop(self.stage).ending.summary}; {summary}; the drill's way back "
                              "(failback and restore) was under way and was finished")
        self.outcome = "drill_done" if not ending.not_undone else "drill_not_restored"
        return ending

    async def go_home(self, ending: Ending) -> None:
        """The drill's way back: the failback (a child workflow), then the restore of the as-found state."""
        back = self.failback_result or await self.run_failback(self.input)
        if back.status != "Succeeded":
            status: RunStatus = back.status if back.status in ("Aborted", "Held") else "Failed"
            raise Stop(status, f"{ending.summary}; automatic failback {back.status}: {back.reason or back.summary}",
                       severity="critical" if status != "Aborted" else None)
        ending.summary += f"; failed back to {self.input.primary.region} (RTO {back.rto_seconds or 0:.0f}s)"
        await self.restore(ending)

    async def confirm_outage(self, input: RegionFailoverInput) -> str | None:
        """Confirm the outage, or say why no failover is needed (a blip never moves a region)."""
        rec = self.step_started("confirm", f"{input.confirm_probes} consecutive failed probes of {input.primary.health_url}")
        deadline = workflow.now() + input.confirm_window
        failures = successes = 0
        while True:
            if self.incident_resolved_at is not None:
                self.step_failed(rec, "incident resolved while confirming", status="skipped")
                return "no failover needed: the incident was resolved"
            try:
                probe = await self.probe(input.primary, input.probe_timeout_seconds)
            except Stop:
                self.step_failed(rec, "aborted", status="skipped")
                raise
            at = workflow.now().strftime("%H:%M:%S")
            self.evidence.append(f"{at} {input.primary.region}: " + (f"ok {probe.status}" if probe.ok else f"FAILED {probe.error}"))
            if probe.ok:
                failures, successes = 0, successes + 1
            else:
                failures, successes = failures + 1, 0
            if failures >= input.confirm_probes:
                await self.step_done(rec, f"outage confirmed: {failures} consecutive failed probes")
                return None
            if successes >= input.confirm_probes:
                self.step_failed(rec, "primary healthy", status="skipped")
                return f"no failover needed: {input.primary.region} answered {successes} probes in a row"
            if workflow.now() + input.confirm_interval > deadline:
                self.step_failed(rec, "not confirmed within the window", status="skipped")
                return (f"no failover needed: outage of {input.primary.region} not confirmed within "
                        f"{format_duration(input.confirm_window)} (flapping?)")
            try:
                await workflow.wait_condition(
                    lambda: self.incident_resolved_at is not None or self.aborting, timeout=input.confirm_interval,
                    timeout_summary=f"confirm outage: next probe of {input.primary.region} in "
                                    f"{format_duration(input.confirm_interval)}",
                )
            except TimeoutError:
                pass
            if self.aborting:
                self.step_failed(rec, "aborted", status="skipped")
                self.check_abort("confirm")

    async def ask_approval(self, input: RegionFailoverInput) -> None:
        self.check_abort("approval")
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
            self.outcome = "not_approved" if outcome.decision != "aborted" else "aborted"
            raise gate_stop(outcome, f"failover not approved, {NOTHING_CHANGED}")

    # -- the automatic failback of a drill (a child workflow). It is the drill's way back: an abort of the drill does
    #    not stop it (the child can still be aborted by its own id)
    async def run_failback(self, input: RegionFailoverInput) -> RegionMoveResult:
        rec = self.step_started("failback", f"{input.dr.region} -> {input.primary.region} (child workflow)")
        child_input = RegionFailbackInput(
            meta=self.meta.model_copy(
                update={"runbook": "region-failback", "approval": ApprovalPolicy(required_approvals=0)}
            ),
            service=input.service,
            original=input.primary,
            current=input.dr,
            dns=input.dns,
            replica=self.failback_db,
            max_replica_lag_seconds=input.max_replica_lag_seconds,
            rto_target=input.rto_target,
            probe_timeout_seconds=input.probe_timeout_seconds,
            verify_passes=input.verify_passes,
            verify_attempts=input.verify_attempts,
            verify_interval=input.verify_interval,
            timeouts=input.timeouts,
        )
        handle = await workflow.start_child_workflow(
            RegionFailback.run, child_input, id=f"{workflow.info().workflow_id}-failback"
        )
        self.failback_handle = handle
        await workflow.wait_condition(handle.done)
        back = await self.failback_outcome()
        if back.status == "Succeeded":
            await self.step_done(rec, back.summary)
        else:
            self.step_failed(rec, f"{back.status}: {back.reason or back.summary}")
        return back

    async def failback_outcome(self) -> RegionMoveResult:
        """The child's result, once it has ended (a failed child's result is its failure's details)."""
        handle = self.failback_handle
        assert handle is not None
        try:
            back = await handle
        except ChildWorkflowError as err:
            cause = err.cause
            if isinstance(cause, ApplicationError) and cause.details:
                back = RegionMoveResult.model_validate(cause.details[0])
            else:
                back = RegionMoveResult(status="Failed", summary=cause_of(err), reason=cause_of(err), outcome="failed",
                                        from_region=self.input.dr.region, to_region=self.input.primary.region,
                                        rto_target_seconds=self.rto_target.total_seconds(), dns_shifted=False)
        self.failback_result = RegionMoveResult.model_validate(back) if isinstance(back, dict) else back
        return self.failback_result

    # -- compensation: the ONE block
    async def _compensate(self, ending: Ending) -> None:
        self.giving_back = True
        try:
            await self._give_back(ending)
        except (ActivityError, ChildWorkflowError, Stop) as err:
            ending.not_undone.append(f"compensation stopped: {cause_of(err)}")

    async def _give_back(self, ending: Ending) -> None:
        if self.failback_handle is not None and self.failback_result is None:
            await self.failback_outcome()
        if not self.fence_started:
            return  # nothing was changed
        p, d = self.input.primary, self.input.dr
        if self.mode == "drill" and ending.status == "Aborted" and self.dns_shifted and self.failback_result is None:
            # a drill aborted after DNS moved goes home the way it planned to: the failback (the primary region is
            # healthy in a drill), then the restore; a failure or a hold after DNS moved never shifts back
            await self.run_failback(self.input)
            if self.failback_result and self.failback_result.status == "Succeeded":
                ending.summary += "; the drill went home first (failback, then restore)"
        home = not self.dns_attempted or bool(self.failback_result and self.failback_result.dns_shifted)
        if self.mode == "drill":
            if home:
                await self.restore(ending)
            else:
                await self.name_state(ending)
                if ending.status not in ("Aborted", "Held"):
                    ending.not_undone.extend(self.differences)
            return
        # real failover
        if self.dns_attempted:
            await self.name_state(ending)
            return
        if self.promote_started:
            dr = await self._read_quietly(d.database, d.region)
            if dr is None or dr.role != "replica":
                if ending.status != "Aborted":  # an abort stays Aborted (the convention), with the state named
                    ending.status = "Held"
                ending.severity = "critical"
                ending.summary += (f"; {d.region}/{d.database} is promoted (it cannot become a replica again) and "
                                   f"{p.region} stays fenced: finish the failover or rebuild the replica by hand")
                await self.name_state(ending)
                return
        await self.unfence(ending, p, compute=True)
        if self.scaled_up:
            await self.resize_back(ending, d, d.standby_replicas)

    async def _read_quietly(self, identifier: str, region: str) -> DbState | None:
        try:
            return await self.read_db(identifier, region, may_be_down=True)
        except ActivityError:
            return None

    async def name_state(self, ending: Ending) -> None:
        """After DNS moved (or a real failover that cannot give back): name the state the run leaves, never flap."""
        p, d = self.input.primary, self.input.dr
        back = self.failback_result
        if self.dns_shifted and not (back and back.dns_shifted):
            self.left_in_place.append(f"traffic on {d.region}: {self.input.dns.record_name} points at {d.dns_value} "
                                      f"(never shifted back automatically; region-failback returns it)")
        elif self.dns_attempted and not self.dns_shifted:
            self.left_in_place.append(f"DNS of {self.input.dns.record_name}: the change to {d.region} failed "
                                      "part way or could not be read back: check the records")
        if self.promote_started:
            self.left_in_place.append(f"{d.region}/{d.database} promoted: the writable primary")
        if self.fenced:
            self.left_in_place.append(f"{p.region} fenced: " + "; ".join(self.fenced))
        if back is not None and back.status != "Succeeded":
            self.left_in_place.append(f"failback {back.status}: {back.reason or back.summary}")
            self.left_in_place.extend(back.left_in_place)
        try:
            self.after = await self.read_state([(i, r, True) for i, r, _ in self._databases()[:3]], self.input.dns,
                                               [(p, True), (d, True)])
        except ActivityError as err:
            self.left_in_place.append(f"state not read: {cause_of(err)}")
            return
        if self.as_found is not None:
            self.differences = compare_as_found(self.as_found, self.after)

    # -- a drill's restore: converge to the as-found state, then compare
    async def restore(self, ending: Ending) -> None:
        """Put back what the drill recorded before it started, and prove it by reading everything again.

        The original primary is the authoritative database after a drill: it was fenced (read-only) for the whole
        drill, and a drill runs against drill resources, so what was written to the DR and failback databases during
        the drill is discarded with them. The drill's failback database is deleted, the primary gets its recorded
        parameter group back (writable again), and a DR replica that was promoted (AWS cannot turn it back into a
        replica) is deleted and re-created from the primary under its own identifier (same endpoint). The restore is
        not cut short by an abort: it is what an abort would do."""
        p, d, state = self.input.primary, self.input.dr, self.as_found
        assert state is not None
        rec = self.step_started("restore", "the as-found state recorded before the drill")
        self.giving_back = True  # an abort now cannot cut the restore short: it is what an abort would do
        self.set_status("RollingBack", "restore")
        before_p, before_d = state.db(p.region, p.database), state.db(d.region, d.database)
        assert before_p is not None and before_d is not None
        failed = len(ending.not_undone)
        try:
            now = await self.read_state(self._databases(), self.input.dns, self._sides())
            # DNS: the recorded record sets, exactly (health checks and TTLs included)
            if [record_view(r) for r in now.records] != [record_view(r) for r in state.records]:
                await self.undo(ending, f"DNS {self.input.dns.record_name} as found", self._act(
                    Route53Activities.route53_upsert_records,
                    Route53UpsertInput(zone_id=self.input.dns.zone_id, records=state.records),
                    minutes=10, heartbeat=timedelta(minutes=1)))
            # compute as found (the failback's last step, standby, does it: the same order when it could not)
            for side, _ in self._sides():
                replicas = state.replicas(side.region, side.deployment)
                if replicas is not None and now.replicas(side.region, side.deployment) != replicas:
                    await self.resize_back(ending, side, replicas)
            # the drill's failback database goes: the original primary holds the as-found data
            failback = now.db(p.region, self.failback_db)
            if failback is not None and failback.role != "absent":
                await self._delete(ending, p.region, self.failback_db, "the drill's failback database deleted")
            # the original primary writable again: its recorded parameter group
            await self._parameter_group(ending, p.region, p.database, before_p, now.db(p.region, p.database))
            # the DR replica: a promoted database cannot become a replica again; re-create it from the primary
            dr = now.db(d.region, d.database)
            assert dr is not None
            if (dr.role, dr.source) != (before_d.role, before_d.source):
                if dr.role != "absent":
                    await self._delete(ending, d.region, d.database, "promoted DR database deleted", wait=True)
                await self.undo(ending, f"{d.region}/{d.database} re-created as a read replica of {p.region}/{p.database}",
                                self._recreate_replica(before_d))
                dr = await self.read_db(d.database, d.region)
            await self._parameter_group(ending, d.region, d.database, before_d, dr)
            self.after = await self.read_state(self._databases(), self.input.dns, self._sides())
        except ActivityError as err:
            ending.not_undone.append(f"restore stopped: {cause_of(err)}")
        if self.after is not None:
            self.differences = compare_as_found(state, self.after)
            ending.not_undone.extend(f"differs from as found: {diff}" for diff in self.differences)
        if len(ending.not_undone) > failed:
            self.step_failed(rec, "; ".join(ending.not_undone[failed:]))
        else:
            await self.step_done(rec, "everything as found: " + ", ".join(
                [db.key for db in state.databases] + [f"{len(state.records)} DNS record sets"]
                + [c.key for c in state.compute]), notify=False)

    async def _recreate_replica(self, before: DbState) -> None:
        p, d = self.input.primary, self.input.dr
        group = before.parameter_groups[0] if len(before.parameter_groups) == 1 else None  # as found, from the start
        await self._act(RdsActivities.rds_create_replica, RdsCreateReplicaInput(
            source_arn_or_id=p.database, source_region=p.region, replica_identifier=d.database, region=d.region,
            parameter_group=group), minutes=5)
        await self._act(RdsActivities.rds_wait_available, RdsWaitInput(
            identifier=d.database, region=d.region, deadline_seconds=self.input.timeouts.promote.total_seconds()),
            timeout=self.input.timeouts.promote + timedelta(minutes=2), heartbeat=timedelta(minutes=2))

    async def _delete(self, ending: Ending, region: str, identifier: str, why: str, *, wait: bool = False) -> None:
        """Delete a database the drill made or changed beyond repair; ``wait``: until its identifier is free (a new
        instance of that name follows)."""
        deadline = self.input.timeouts.promote
        try:
            result = await self._act(
                RdsActivities.rds_delete_instance,
                RdsDeleteInput(identifier=identifier, region=region,
                               wait_gone_seconds=deadline.total_seconds() if wait else 0),
                timeout=deadline + timedelta(minutes=2), heartbeat=timedelta(minutes=2))
        except ActivityError as err:  # said, and the restore goes on: the comparison names what differs
            ending.not_undone.append(f"{region}/{identifier} not deleted ({why}): {cause_of(err)}")
            return
        if result.existed:
            ending.compensated.append(f"{region}/{identifier}: {why}")

    async def _parameter_group(self, ending: Ending, region: str, identifier: str, before: DbState,
                               now: DbState | None) -> None:
        if len(before.parameter_groups) != 1 or now is None or now.role == "absent":
            return
        if now.parameter_groups != before.parameter_groups:
            group = before.parameter_groups[0]
            await self.undo(ending, f"{region}/{identifier} parameter group back to {group}", self._act(
                RdsActivities.rds_set_parameter_group,
                RdsParameterGroupInput(identifier=identifier, region=region, parameter_group=group), minutes=5))


# --------------------------------------------------------------------------------------------------- failback
@workflow.defn
class RegionFailback(_RegionMove):
    @workflow.init
    def __init__(self, input: RegionFailbackInput) -> None:
        super().__init__(input.meta, input.carry)
        target = input.original.model_copy(update={"database": input.replica})
        self._init_move(input.service, input.current, target, input.rto_target)
        self.input = input
        self.replica_created = False
        self.catch_up_deadline: datetime | None = None
        if self.carried_state:  # continued as new while the replica catches up (the only long loop before the gate)
            state = self.carried_state
            self.as_found = AsFound.model_validate(state["as_found"])
            self.replica_created = True
            self.evidence = list(state["evidence"])
            self.catch_up_deadline = datetime.fromisoformat(state["deadline"])

    @workflow.run
    async def run(self, input: RegionFailbackInput) -> RegionMoveResult:
        self.begin()
        await self.notify("started", f"failback of {input.service}: {input.current.region} -> {input.original.region}")
        ending = await self.conduct(lambda: self._failback(input), self._compensate)
        return await self.conclude(ending, self.build, fields=self.report_fields())

    async def _failback(self, input: RegionFailbackInput) -> str:
        back, current = self.target, input.current  # back: the original region, with the new replica as its database
        if self.catch_up_deadline is not None:  # a continuation: looked, and the replica exists; keep polling its lag
            await self.catch_up(input, back)
        else:
            await self._look_and_create(input, back, current)
        await self._rest(input, back, current)
        assert self.verified_at is not None  # _rest() returned: verify passed
        rto = (self.verified_at - self.started_at).total_seconds()
        return f"{input.service} serves from {back.region} again; RTO {rto:.0f}s"

    async def _look_and_create(self, input: RegionFailbackInput, back: RegionSide, current: RegionSide) -> None:
        self.as_found = await self.look(
            f"{current.region} -> {back.region}",
            [(current.database, current.region, False), (input.replica, back.region, False)],
            input.dns, [(back, False), (current, False)],
        )
        serving, replica = self.as_found.databases
        self.refuse(failback_problems(serving, replica))
        await self.catch_up(input, back)

    async def _rest(self, input: RegionFailbackInput, back: RegionSide, current: RegionSide) -> None:
        self.check_abort("approval")
        outcome = await self.request_approval(
            "failback",
            f"Failback of {input.service}: {current.region} -> {back.region}",
            f"Replica {back.region}/{input.replica} has caught up ({self.evidence[-1] if self.evidence else ''}). "
            "Promote it, "
            + (f"scale {back.deployment} to {back.replicas}, " if back.deployment else "")
            + f"point {input.dns.record_name} at {back.dns_value}"
            + (f", then scale {current.region} to {current.standby_replicas}." if current.deployment else "."),
            binding=f"failback:{input.service}:{current.region}->{back.region}",
        )
        if not outcome.approved:
            self.outcome = "not_approved" if outcome.decision != "aborted" else "aborted"
            raise gate_stop(outcome, "failback not approved")
        self.started_at = workflow.now()  # the failback's RTO counts from the decision, not the catch-up
        # the serving region keeps its compute until DNS has moved: only its database writes are fenced
        await self.fence(current, compute=False)
        await self.promote(input.replica, back.region, input.timeouts)
        await self.scale_up(back, input.timeouts)
        await self.shift_dns(input.dns, back, current)
        await self.verify(back, input.verify_passes, input.verify_attempts, input.verify_interval,
                          input.probe_timeout_seconds, input.timeouts.hold)
        self.check_abort("standby")
        await self.set_size(current, current.standby_replicas)
        self.outcome = "failed_back"

    async def catch_up(self, input: RegionFailbackInput, back: RegionSide) -> None:
        self.check_abort("replica")
        resumed = self.catch_up_deadline is not None
        rec = next((r for r in reversed(self.steps) if r.name == "replica"), None) if resumed else None
        if rec is None:
            rec = self.step_started("replica", f"{back.region}/{input.replica} from {input.current.region}/"
                                               f"{input.current.database}")
        try:
            if not resumed:
                self.replica_created = True
                await self.change(self._act(RdsActivities.rds_create_replica, RdsCreateReplicaInput(
                    source_arn_or_id=input.current.database, source_region=input.current.region,
                    replica_identifier=input.replica, region=back.region), minutes=5), "replica")
                await self.interruptible(self._act(
                    RdsActivities.rds_wait_available,
                    RdsWaitInput(identifier=input.replica, region=back.region,
                                 deadline_seconds=input.catch_up_timeout.total_seconds()),
                    timeout=input.catch_up_timeout + timedelta(minutes=2), heartbeat=timedelta(minutes=2),
                ), "replica")
                self.catch_up_deadline = workflow.now() + input.catch_up_timeout
            deadline = self.catch_up_deadline
            assert deadline is not None
            while True:
                lag = await self.interruptible(self._act(
                    RdsActivities.rds_replica_lag, RdsInstanceRef(identifier=input.replica, region=back.region),
                    minutes=1), "catch-up")
                seen = "unknown" if lag.lag_seconds is None else f"{lag.lag_seconds:.0f}s"
                self.evidence.append(f"{workflow.now():%H:%M:%S} replica lag {seen}")
                if lag.lag_seconds is not None and lag.lag_seconds <= input.max_replica_lag_seconds:
                    break
                if workflow.now() + input.catch_up_poll > deadline:
                    self.outcome = "catch_up_failed"
                    raise Stop("RolledBack", f"replica {input.replica} lag {seen} still above "
                               f"{input.max_replica_lag_seconds:.0f}s after {format_duration(input.catch_up_timeout)}",
                               severity="error")
                await self.pause(input.catch_up_poll)
                if self.continue_as_new_due():  # a quiet point: no gate open yet, nothing changed but the replica
                    workflow.continue_as_new(input.model_copy(update={"carry": self.carry(state={
                        "as_found": self.as_found.model_dump(mode="json") if self.as_found else None,
                        "evidence": self.evidence[-10:],
                        "deadline": deadline.isoformat(),
                    })}))
        except ActivityError as err:
            self.step_failed(rec, cause_of(err))
            self.outcome = "catch_up_failed"
            raise Stop("RolledBack", f"replica {input.replica} in {back.region}: {cause_of(err)}", severity="error") from None
        except Stop as stop:
            self.step_failed(rec, stop.ending.summary)
            raise
        await self.step_done(rec, self.evidence[-1])

    async def _compensate(self, ending: Ending) -> None:
        self.giving_back = True
        try:
            await self._give_back(ending)
        except (ActivityError, Stop) as err:
            ending.not_undone.append(f"compensation stopped: {cause_of(err)}")

    async def _give_back(self, ending: Ending) -> None:
        current, back = self.input.current, self.target
        if self.dns_attempted:  # never flap back: name what stays
            if self.dns_shifted:
                self.left_in_place.append(f"traffic on {back.region}: {self.input.dns.record_name} points at "
                                          f"{back.dns_value}")
            else:
                self.left_in_place.append(f"DNS of {self.input.dns.record_name}: the change to {back.region} failed "
                                          "part way or could not be read back: check the records")
            self.left_in_place.append(f"{current.region}/{current.database} fenced; {back.region}/{back.database} promoted")
            if current.deployment:
                self.left_in_place.append(f"{current.region}/{current.deployment} not scaled to standby")
            return
        if self.fence_started:
            await self.unfence(ending, current, compute=False)
        if self.scaled_up:
            await self.resize_back(ending, back, back.standby_replicas)
        if self.replica_created:
            self.left_in_place.append(
                f"{back.region}/{back.database} left in place: "
                + ("promoted, takes no traffic; delete it before a retry" if self.promote_started else "a replica, for a retry"))


WORKFLOWS = [RegionFailover, RegionFailback]
