"""Provision an environment with Terraform: plan, approval bound to the plan's hash, apply exactly that plan,
namespace guardrails, an S3 record, and for sandboxes a TTL that tears everything down.

Steps (the procedure, ``_provision``; docs/provisioning.md has the table of what an abort does at each):
0. ``resolve``: the input is checked (``core.provision.input_problems``) and the module folder looked up on the
   worker (read-only): a blank or invalid name, a bad ttl or a missing module ends the run Refused, nothing changed.
1. ``plan`` (secrets are read from Vault inside the activity): no changes -> Succeeded early; a configuration error
   in the module -> Refused (nothing changed).
2. ``approval``: the gate opens per tier with ``binding=plan_hash``, so an approval naming another plan is refused
   by the gate itself. Rejected or timed out -> Rejected, nothing applied.
3. ``apply`` of the approved saved plan; once started it is finished, even on abort or cancel. A plan that no
   longer applies (``PlanStale``: the state moved) is planned again and goes through the gate again (at most
   ``max_replans`` times).
4. ``outputs`` (sensitive ones withheld), the Kubernetes ``namespace`` with its guardrails (whether it existed is
   read first), the S3 ``record``.
5. Sandbox: ``live`` until ``expires_at`` with a reminder ``reminder_before`` it; ``extend`` and ``destroy_now``
   updates; the history stays bounded (continue-as-new carrying ``SandboxCursor``).

One compensation block (``_compensate``) runs once, shielded, for every ending after a change: the TTL, destroy-now,
an abort, a cancellation, a failed step. What this run created goes: ``terraform destroy`` of the workspace when the
tier is sandbox or the plan was made against an empty workspace, the namespace when it did not exist before this
run, the record it wrote. An environment that existed before this run is never destroyed by it: the run ends Held
and names what it left in place. Whatever could not be undone makes the run Failed.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any, Literal

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.aws import S3Activities
    from activities.kubernetes import KubernetesActivities
    from activities.terraform import TerraformActivities
    from core import errors
    from core.approval import Approval
    from core.aws import S3ObjectKey, S3PutJsonInput
    from core.duration import format_duration
    from core.kubernetes import NamespaceRef, NamespaceSpec
    from core.provision import (
        MANAGED_BY,
        PLAN_STALE,
        ApplyInput,
        ApplyResult,
        DestroyInput,
        DestroyNowInput,
        EnvironmentRecord,
        ExtendInput,
        ModuleCheckInput,
        OutputsInput,
        PlanInput,
        PlanSummary,
        ProvisionEnvironmentInput,
        ProvisionEnvironmentResult,
        SandboxCursor,
        SandboxExpiry,
        StateInput,
        TerraformTarget,
        input_problems,
    )
    from workflows.base import Ending, RunbookWorkflow, Stop, cause_of, error_type, gate_stop
    from workflows.steering import ProvisionSteering

NON_RETRYABLE = [*errors.NON_RETRYABLE, PLAN_STALE]
TERRAFORM_RETRY = RetryPolicy(initial_interval=timedelta(seconds=5), backoff_coefficient=2,
                              maximum_interval=timedelta(minutes=2), maximum_attempts=5,
                              non_retryable_error_types=NON_RETRYABLE)
SIDE_RETRY = RetryPolicy(initial_interval=timedelta(seconds=2), backoff_coefficient=2,
                         maximum_interval=timedelta(minutes=1), maximum_attempts=8,
                         non_retryable_error_types=errors.NON_RETRYABLE)
TERRAFORM_TIMEOUT = timedelta(hours=2)
TERRAFORM_HEARTBEAT = timedelta(minutes=2)
SHORT_TIMEOUT = timedelta(minutes=2)
NOTHING_CHANGED = "nothing was changed"
# A plan that fails on these is a module or input a person must fix: the run is refused, nothing was changed.
REFUSING_ERRORS = (errors.INVALID_INPUT, errors.NOT_FOUND, errors.ACCESS_DENIED)

Applied = Literal["no", "maybe", "yes"]


@workflow.defn(name="ProvisionEnvironment")
class ProvisionEnvironment(RunbookWorkflow, ProvisionSteering):
    @workflow.init
    def __init__(self, input: ProvisionEnvironmentInput) -> None:
        super().__init__(input.meta, input.carry)
        self._input = input
        self._phase = "plan"
        self._plan: PlanSummary | None = None
        # Did this run's apply write the workspace? "maybe": an apply started and did not report (failed, or was
        # interrupted): compensation reads the state to tell.
        self._applied: Applied = "no"
        self._outputs: dict[str, Any] = {}
        self._sensitive: list[str] = []
        self._namespace: str | None = None  # the namespace this run applied (or started to)
        self._namespace_existed: bool | None = None  # read just before applying it
        self._namespace_applied = False
        self._record_key: str | None = None  # the record this run wrote (or started to)
        self._record_written = False
        self._provisioned_at: datetime | None = None
        self._expires_at: datetime | None = None
        self._reminded_for: datetime | None = None
        self._destroy_now: DestroyNowInput | None = None
        self._tearing_down = False
        self._destroyed = False
        self._expired_at: datetime | None = None
        self._left_in_place: list[str] = []
        self._approved_at: datetime | None = None
        if self.carried_state:  # a live sandbox that continued as new
            cursor = SandboxCursor.model_validate(self.carried_state)
            self._phase, self._applied = "live", "yes"
            self._plan, self._outputs, self._sensitive = cursor.plan, cursor.outputs, cursor.sensitive
            self._namespace, self._namespace_existed = cursor.namespace, cursor.namespace_existed
            self._namespace_applied = cursor.namespace is not None
            self._record_key, self._provisioned_at = cursor.record_key, cursor.provisioned_at
            self._record_written = cursor.record_key is not None
            self._expires_at, self._reminded_for = cursor.expires_at, cursor.reminded_for

    # ----------------------------------------------------------------------------------------- queries/updates
    def status_details(self) -> dict[str, Any]:
        plan = self._plan
        return {
            "phase": self._phase,
            "environment": self._input.environment,
            "tier": self._input.tier,
            "plan": None if plan is None else {"hash": plan.plan_hash, "add": plan.add, "change": plan.change,
                                               "destroy": plan.destroy, "outputs": plan.output_changes},
            "applied": self._applied,
            "outputs": self._outputs,
            "namespace": self._namespace,
            "record_key": self._record_key,
            "expires_at": self._expires_at.isoformat() if self._expires_at else None,
            "left_in_place": list(self._left_in_place),
        }

    @workflow.update
    def extend(self, req: ExtendInput) -> SandboxExpiry:
        assert self._expires_at is not None
        self._expires_at = self._expires_at + req.by
        self.record_action("extend", req.requested_by, req.reason,
                           note=f"by {format_duration(req.by)}, now expires {self._expires_at:%Y-%m-%d %H:%M} UTC")
        return SandboxExpiry(expires_at=self._expires_at, extended_by=req.requested_by)

    @extend.validator
    def _validate_extend(self, req: ExtendInput) -> None:
        if self._input.tier != "sandbox":
            raise ValueError("only sandboxes have a TTL to extend")
        if self._phase != "live" or self._expires_at is None or self._tearing_down or self.aborting:
            raise ValueError("the sandbox is not live (not provisioned yet, or being torn down)")
        if req.by <= timedelta(0):
            raise ValueError("extend by a positive duration, e.g. 4h")
        limit = workflow.now() + self._input.max_ttl
        if self._expires_at + req.by > limit:
            raise ValueError(f"the sandbox may live at most {format_duration(self._input.max_ttl)} from now "
                             f"(until {limit:%Y-%m-%d %H:%M} UTC)")

    @workflow.update
    def destroy_now(self, req: DestroyNowInput) -> str:
        self._destroy_now = req
        self.record_action("destroy_now", req.requested_by, req.reason)
        return f"tearing down {self._input.environment} (requested by {req.requested_by})"

    @destroy_now.validator
    def _validate_destroy_now(self, req: DestroyNowInput) -> None:
        if self._input.tier != "sandbox":
            raise ValueError("destroy-now is for sandboxes; other tiers are destroyed by their own runbook")
        if self._destroy_now is not None or self._tearing_down or self.aborting:
            raise ValueError("the sandbox is already being torn down")
        if self._phase != "live":
            raise ValueError("the sandbox is not live yet: abort the run instead (what it applied is torn down)")

    # ----------------------------------------------------------------------------------------- activities
    async def _terraform(self, method: Any, arg: Any, attempts: int = 5) -> Any:
        policy = TERRAFORM_RETRY if attempts == 5 else RetryPolicy(
            initial_interval=TERRAFORM_RETRY.initial_interval, backoff_coefficient=2,
            maximum_interval=TERRAFORM_RETRY.maximum_interval, maximum_attempts=attempts,
            non_retryable_error_types=NON_RETRYABLE)
        return await workflow.execute_activity_method(method, arg, start_to_close_timeout=TERRAFORM_TIMEOUT,
                                                      heartbeat_timeout=TERRAFORM_HEARTBEAT, retry_policy=policy)

    async def _side(self, method: Any, arg: Any) -> Any:
        return await workflow.execute_activity_method(method, arg, start_to_close_timeout=SHORT_TIMEOUT,
                                                      retry_policy=SIDE_RETRY)

    # ----------------------------------------------------------------------------------------- the run
    @workflow.run
    async def run(self, input: ProvisionEnvironmentInput) -> ProvisionEnvironmentResult:
        self.begin()
        procedure = self._live if self._phase == "live" else self._provision
        ending = await self.conduct(lambda: procedure(input), self._compensate)
        return await self.conclude(ending, self._result)

    async def _provision(self, input: ProvisionEnvironmentInput) -> str:
        target = await self._resolve(input)
        approvals = await self._plan_approve_apply(input, target)
        if approvals is None:
            return f"{input.environment}: no changes, the infrastructure matches the configuration"
        await self._make_usable(input, target, approvals)
        if input.tier != "sandbox":
            return f"{input.environment} ({input.tier}) provisioned: {', '.join(sorted(self._outputs)) or 'no outputs'}"
        assert self._expires_at is not None
        await self.notify("step_done", f"Sandbox {input.environment} is ready",
                          f"It will be destroyed at {self._expires_at:%Y-%m-%d %H:%M} UTC unless extended.",
                          fields={"expires_at": self._expires_at.isoformat(),
                                  **{k: str(v) for k, v in self._outputs.items()}})
        return await self._live(input)

    async def _resolve(self, input: ProvisionEnvironmentInput) -> TerraformTarget:
        """Read-only: the input's names and the module folder; Refused before any change when they do not hold."""
        rec = self.step_started("resolve", input.module)
        problems = input_problems(input)
        if problems:
            self.step_failed(rec, "; ".join(problems))
            raise Stop("Refused", f"{input.environment.strip() or '(blank environment)'}: {'; '.join(problems)}; "
                                  f"{NOTHING_CHANGED}")
        target = input.target()
        try:
            check = await self.interruptible(self._side(TerraformActivities.check_module,
                                                        ModuleCheckInput(module=input.module)), "resolve")
        except ActivityError as err:
            self.step_failed(rec, cause_of(err))
            if error_type(err) in REFUSING_ERRORS:
                raise Stop("Refused", f"{input.environment}: {cause_of(err)}; {NOTHING_CHANGED}") from None
            raise
        if not check.found:
            self.step_failed(rec, check.detail)
            raise Stop("Refused", f"{input.environment}: {check.detail}; {NOTHING_CHANGED}")
        await self.step_done(rec, f"module {check.detail}, workspace {target.workspace}", notify=False)
        return target

    async def _plan_approve_apply(self, input: ProvisionEnvironmentInput,
                                  target: TerraformTarget) -> list[Approval] | None:
        """Plan, gate on the plan's hash, apply; again from the plan when the plan went stale."""
        replans = 0
        while True:
            self._phase = "plan"
            rec = self.step_started("plan", f"{input.module} in workspace {target.workspace}")
            try:
                plan: PlanSummary = await self.interruptible(
                    self._terraform(TerraformActivities.plan, PlanInput(target=target)), "plan")
            except ActivityError as err:
                self.step_failed(rec, cause_of(err))
                if error_type(err) in REFUSING_ERRORS:
                    raise Stop("Refused", f"plan of {input.environment} failed: {cause_of(err)}; {NOTHING_CHANGED}",
                               severity="warning") from None
                raise
            self._plan = plan
            if not plan.has_changes:
                await self.step_done(rec, "no changes")
                return None
            await self.step_done(rec, plan.text())

            self._phase = "approval"
            rec = self.step_started("approval", plan.plan_hash)
            outcome = await self.request_approval(
                "apply-plan",
                f"Apply Terraform plan to {input.environment} ({input.tier})",
                plan.text(),
                binding=plan.plan_hash,
                fields={"plan": plan.plan_hash, "add": str(plan.add), "change": str(plan.change),
                        "destroy": str(plan.destroy), "workspace": target.workspace},
            )
            if not outcome.approved:
                self.step_failed(rec, f"{outcome.decision}: {outcome.reason}")
                raise gate_stop(outcome, f"plan {plan.plan_hash[:19]} not applied")
            who = ", ".join(a.approver for a in outcome.approvals) or "policy (no approval required)"
            await self.step_done(rec, f"approved by {who}", notify=False)

            self._phase = "apply"
            rec = self.step_started("apply", plan.plan_hash)
            self.check_abort("apply")
            self._applied = "maybe"
            try:
                result: ApplyResult = await self.change(self._apply(input, target, plan), "apply")
            except ActivityError as err:
                message = cause_of(err)
                if error_type(err) != PLAN_STALE:
                    self.step_failed(rec, message)
                    raise
                self._applied = "no"  # the activity refuses a stale plan before applying anything
                if replans >= input.max_replans:
                    self.step_failed(rec, message)
                    raise Stop("RolledBack", f"apply of {plan.plan_hash[:19]}: {message} (planned again "
                                             f"{replans} times); {NOTHING_CHANGED}") from None
                replans += 1
                self.step_failed(rec, f"{message}; planning again ({replans}/{input.max_replans})")
                await self.notify("alert", f"{input.environment}: plan went stale, planning again", message,
                                  severity="warning")
                continue
            await self.step_done(rec, result.detail)
            self._approved_at = outcome.approvals[-1].at if outcome.approvals else workflow.now()
            return list(outcome.approvals)

    async def _apply(self, input: ProvisionEnvironmentInput, target: TerraformTarget,
                     plan: PlanSummary) -> ApplyResult:
        result = await self._terraform(TerraformActivities.apply, ApplyInput(target=target, plan_hash=plan.plan_hash),
                                       attempts=input.apply_attempts)
        self._applied = "yes"
        return result

    async def _make_usable(self, input: ProvisionEnvironmentInput, target: TerraformTarget,
                           approvals: list[Approval]) -> None:
        self._phase = "outputs"
        rec = self.step_started("outputs")
        try:
            outputs = await self.interruptible(
                self._terraform(TerraformActivities.outputs, OutputsInput(target=target)), "outputs")
        except ActivityError as err:
            self.step_failed(rec, cause_of(err))
            raise
        self._outputs, self._sensitive = outputs.values, outputs.sensitive
        await self.step_done(rec, ", ".join(sorted(outputs.values)) or "no outputs", notify=False)

        self._phase = "namespace"
        ns = input.namespace
        if not ns.enabled:
            self.step_skipped("namespace", "namespace.enabled is false (no Kubernetes cluster for this environment)")
        else:
            name = ns.name or input.environment
            rec = self.step_started("namespace", name)
            try:
                existing = await self.interruptible(
                    self._side(KubernetesActivities.get_namespace, NamespaceRef(context=ns.context, name=name)),
                    "namespace")
                self._namespace_existed, self._namespace = existing.exists, name
                spec = NamespaceSpec(
                    context=ns.context, name=name,
                    labels={**MANAGED_BY, "runbook/environment": input.environment, "runbook/tier": input.tier,
                            **ns.labels},
                    resource_quota=ns.resource_quota, limit_range=ns.limit_range, default_deny=ns.default_deny)
                applied = await self.change(self._apply_namespace(spec), "namespace")
            except ActivityError as err:
                self.step_failed(rec, cause_of(err))
                raise
            await self.step_done(rec, ("existed, updated: " if existing.exists else "created: ")
                                 + (", ".join(applied.objects) or "nothing to change"), notify=False)

        self._phase = "record"
        now = workflow.now()
        self._provisioned_at = now
        if input.tier == "sandbox" and input.ttl is not None:
            self._expires_at = now + input.ttl
        key = f"{input.record_prefix}{input.environment}.json"
        rec = self.step_started("record", f"s3://{input.record_bucket}/{key}")
        assert self._plan is not None
        record = EnvironmentRecord(
            environment=input.environment, tier=input.tier, workspace=target.workspace, module=input.module,
            namespace=self._namespace, outputs=self._outputs, sensitive_outputs=self._sensitive,
            plan_hash=self._plan.plan_hash, approved_by=[a.approver for a in approvals],
            approved_at=self._approved_at, provisioned_at=now, requested_by=self.meta.requested_by,
            workflow_id=workflow.info().workflow_id, expires_at=self._expires_at)
        self.check_abort("record")
        self._record_key = key
        try:
            ref = await self.change(self._put_record(S3PutJsonInput(
                bucket=input.record_bucket, key=key, document=record.model_dump(mode="json"))), "record")
        except ActivityError as err:
            self.step_failed(rec, cause_of(err))
            raise
        await self.step_done(rec, f"version {ref.version_id or '-'}", notify=False)

    async def _apply_namespace(self, spec: NamespaceSpec) -> Any:
        result = await self._side(KubernetesActivities.apply_namespace, spec)
        self._namespace_applied = True
        return result

    async def _put_record(self, put: S3PutJsonInput) -> Any:
        ref = await self._side(S3Activities.s3_put_json, put)
        self._record_written = True
        return ref

    # ----------------------------------------------------------------------------------------- sandbox TTL
    async def _live(self, input: ProvisionEnvironmentInput) -> str:
        """The sandbox lives until its TTL, destroy-now or an abort; each ends in the one teardown."""
        self._phase = "live"
        assert self._expires_at is not None
        self.set_status("Running", f"sandbox live until {self._expires_at:%Y-%m-%d %H:%M} UTC")
        reason = await self._wait_for_expiry(input)
        raise Stop("Succeeded", f"sandbox {input.environment} destroyed: {reason}")

    async def _wait_for_expiry(self, input: ProvisionEnvironmentInput) -> str:
        while True:
            if self._destroy_now is not None:
                return f"destroy-now by {self._destroy_now.requested_by}: {self._destroy_now.reason}"
            self.check_abort("live sandbox")
            expires = self._expires_at
            assert expires is not None
            now = workflow.now()
            if now >= expires:
                return f"TTL expired at {expires:%Y-%m-%d %H:%M} UTC"
            remind_at = expires - input.reminder_before
            if self._reminded_for != expires and now >= remind_at:
                self._reminded_for = expires
                await self.notify(
                    "alert", f"Sandbox {input.environment} expires in {format_duration(expires - now)}",
                    f"It will be destroyed at {expires:%Y-%m-%d %H:%M} UTC. Extend it with the `extend` update "
                    f"(at most {format_duration(input.max_ttl)} from now).", severity="warning",
                    fields={"expires_at": expires.isoformat()})
                continue
            if self.continue_as_new_due():  # a quiet point: nothing open, no handler running
                workflow.continue_as_new(input.model_copy(update={"carry": self.carry(state=self._cursor())}))
            wake = remind_at if self._reminded_for != expires else expires

            def woken(expires: datetime = expires) -> bool:
                return (self._destroy_now is not None or self.aborting or self._expires_at != expires
                        or self.continue_as_new_due())

            try:
                what = "expiry reminder" if wake != expires else "sandbox expires"
                await workflow.wait_condition(woken, timeout=wake - now,
                                              timeout_summary=f"{what} at {wake:%Y-%m-%d %H:%M} UTC")
            except asyncio.TimeoutError:
                pass

    def _cursor(self) -> dict[str, Any]:
        assert self._expires_at is not None
        return SandboxCursor(
            plan=self._plan, outputs=self._outputs, sensitive=self._sensitive, namespace=self._namespace,
            namespace_existed=self._namespace_existed, record_key=self._record_key,
            provisioned_at=self._provisioned_at, expires_at=self._expires_at, reminded_for=self._reminded_for,
        ).model_dump(mode="json")

    # ----------------------------------------------------------------------------------------- compensation
    async def _compensate(self, ending: Ending) -> None:
        """The one compensation block (also the sandbox's TTL teardown): undo what this run created."""
        input = self._input
        target = None if input_problems(input) else input.target()
        finished = {"apply": self._applied == "yes", "namespace": self._namespace_applied,
                    "record": self._record_written}
        for rec in self.steps:
            if rec.status == "running" and finished.get(rec.name):  # a change finished, then the run stopped
                await self.step_done(rec, f"finished, then: {ending.summary}", notify=False)
            elif rec.status == "running":
                self.step_failed(rec, f"interrupted: {ending.summary}")
        if target is None or self._applied == "no":
            if NOTHING_CHANGED not in ending.summary:
                ending.summary += f"; {NOTHING_CHANGED}"
            return
        self._tearing_down = True
        if ending.status == "Succeeded":  # the TTL or destroy-now: the sandbox's normal end
            self.set_status("Running", f"tearing down: {ending.summary}")
        if self._applied == "maybe" and not await self._apply_wrote(ending, target):
            return
        assert self._plan is not None
        if input.tier == "sandbox" or self._plan.prior_empty:
            await self._teardown(ending, target)
        else:
            self._hold(ending, target)
        if ending.status == "Succeeded" and (self.aborting or workflow.cancellation_reason() is not None):
            # an abort or cancel during the TTL / destroy-now teardown: it ran to its end all the same
            who = self.abort_request.requested_by if self.abort_request else "temporal"
            ending.status = "Aborted"
            ending.summary += f"; aborted by {who} during the teardown, which finished all the same"

    async def _apply_wrote(self, ending: Ending, target: TerraformTarget) -> bool:
        """After an apply that did not report: did it write the workspace's state? (read-only)"""
        assert self._plan is not None
        rec = self.step_started("check state", target.workspace)
        try:
            state = await self._terraform(TerraformActivities.state_version, StateInput(target=target))
        except ActivityError as err:
            self.step_failed(rec, cause_of(err))
            ending.not_undone.append(f"workspace {target.workspace}: could not tell whether the apply of "
                                     f"{self._plan.plan_hash[:19]} changed it ({cause_of(err)}); check its state")
            return False
        unchanged = (state.lineage, state.serial) == (self._plan.prior_lineage, self._plan.prior_serial)
        await self.step_done(rec, f"serial {self._plan.prior_serial} -> {state.serial}", notify=False)
        if unchanged:
            self._applied = "no"
            ending.summary += f"; the apply wrote nothing: {NOTHING_CHANGED}"
            return False
        return True

    async def _teardown(self, ending: Ending, target: TerraformTarget) -> None:
        """What this run created goes: the workspace's resources, the namespace it created, the record it wrote."""
        input = self._input
        self._phase = "teardown"
        rec = self.step_started("destroy", target.workspace)
        try:
            result = await self._terraform(TerraformActivities.destroy, DestroyInput(target=target))
            self._destroyed = True
            await self.step_done(rec, result.detail, notify=False)
            ending.compensated.append(f"workspace {target.workspace} destroyed ({result.detail})")
        except ActivityError as err:
            self.step_failed(rec, cause_of(err))
            ending.not_undone.append(f"workspace {target.workspace}: terraform destroy failed: {cause_of(err)}")
        if self._namespace is not None:
            if self._namespace_existed:
                self._left_in_place.append(f"namespace {self._namespace} (it existed before this run)")
            else:
                rec = self.step_started("delete namespace", self._namespace)
                try:
                    await self._side(KubernetesActivities.delete_namespace,
                                     NamespaceRef(context=input.namespace.context, name=self._namespace))
                    await self.step_done(rec, notify=False)
                    ending.compensated.append(f"namespace {self._namespace} deleted")
                except ActivityError as err:
                    self.step_failed(rec, cause_of(err))
                    ending.not_undone.append(f"namespace {self._namespace}: delete failed: {cause_of(err)}")
        if self._record_key is not None:
            where = f"s3://{input.record_bucket}/{self._record_key}"
            if not self._destroyed:  # the environment still exists: its record stays true
                self._left_in_place.append(f"record {where} (the environment was not destroyed)")
            else:
                rec = self.step_started("delete record", self._record_key)
                try:
                    await self._side(S3Activities.s3_delete_object,
                                     S3ObjectKey(bucket=input.record_bucket, key=self._record_key))
                    await self.step_done(rec, notify=False)
                    ending.compensated.append(f"record {where} deleted")
                except ActivityError as err:
                    self.step_failed(rec, cause_of(err))
                    ending.not_undone.append(f"record {where}: delete failed: {cause_of(err)}")
        if ending.status == "Succeeded":
            self._expired_at = workflow.now()

    def _hold(self, ending: Ending, target: TerraformTarget) -> None:
        """An environment that existed before this run is not destroyed by it: a person looks at what is there."""
        assert self._plan is not None
        input = self._input
        left = [f"workspace {target.workspace}: plan {self._plan.plan_hash[:19]} applied to the existing environment"]
        if self._namespace is not None:
            left.append(f"namespace {self._namespace} "
                        f"({'updated' if self._namespace_existed else 'created by this run'})")
        where = f"s3://{input.record_bucket}/{self._record_key}"
        if self._record_written:
            left.append(f"record {where} (written by this run)")
        elif self._record_key is not None:
            left.append(f"record {where} not written by this run (any earlier record is as it was)")
        self._left_in_place = left
        ending.status, ending.severity = "Held", None
        ending.summary += (f"; {input.environment} existed before this run, so nothing was destroyed. Left in place "
                           "for a person to check: " + "; ".join(left))

    # ----------------------------------------------------------------------------------------- the result
    def _result(self, common: dict[str, Any]) -> ProvisionEnvironmentResult:
        return ProvisionEnvironmentResult(
            **common, environment=self._input.environment, plan=self._plan, outputs=self._outputs,
            record_key=self._record_key, namespace=self._namespace, destroyed=self._destroyed,
            expired_at=self._expired_at, left_in_place=list(self._left_in_place))
