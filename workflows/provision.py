"""Provision an environment with Terraform: plan, approval bound to the plan's hash, apply exactly that plan,
namespace guardrails, an S3 record, and for sandboxes a TTL that tears everything down.

Steps:
1. ``terraform_plan`` (secrets are read from Vault inside the activity): no changes -> finish early.
2. The summary goes out as a notification; the approval gate opens per tier with ``binding=plan_hash``, so an
   approval naming another plan is refused by the gate itself.
3. ``terraform_apply`` of the approved saved plan. A plan that no longer applies (``PlanStale``: the state moved)
   is planned again and goes through the gate again (at most ``max_replans`` times).
4. Outputs (sensitive ones withheld), the Kubernetes namespace with its guardrails, the S3 record.
5. Sandbox: a durable timer to ``expires_at`` with a reminder ``reminder_before`` it; ``extend`` and
   ``destroy_now`` updates; an abort or a cancellation while the sandbox lives also tears it down. Teardown is
   ``terraform destroy`` of the workspace, delete the namespace, delete the record (shielded from cancellation).
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

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
        PLAN_STALE,
        ApplyInput,
        ApplyResult,
        DestroyInput,
        DestroyNowInput,
        EnvironmentRecord,
        ExtendInput,
        OutputsInput,
        PlanInput,
        PlanSummary,
        ProvisionEnvironmentInput,
        ProvisionEnvironmentResult,
        SandboxExpiry,
        TerraformTarget,
    )
    from core.runbook import RunStatus
    from workflows.base import RunbookWorkflow

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
MANAGED_BY = {"app.kubernetes.io/managed-by": "runbook-automation"}


class _Stop(Exception):
    def __init__(self, status: RunStatus, error_type: str, reason: str) -> None:
        super().__init__(reason)
        self.status, self.error_type, self.reason = status, error_type, reason


def _cause(err: ActivityError) -> tuple[str, str]:
    cause = err.cause
    if isinstance(cause, ApplicationError):
        return cause.type or errors.TRANSIENT, cause.message
    return errors.TRANSIENT, str(cause or err)


@workflow.defn(name="ProvisionEnvironment")
class ProvisionEnvironment(RunbookWorkflow):
    @workflow.init
    def __init__(self, input: ProvisionEnvironmentInput) -> None:
        super().__init__(input.meta)
        self._input = input
        self._phase = "plan"
        self._plan: PlanSummary | None = None
        self._outputs: dict[str, Any] = {}
        self._sensitive: list[str] = []
        self._record_key: str | None = None
        self._namespace: str | None = None
        self._provisioned_at: datetime | None = None
        self._expires_at: datetime | None = None
        self._reminded_for: datetime | None = None
        self._destroy_now: DestroyNowInput | None = None
        self._tearing_down = False
        self._destroyed = False
        self._approved_at: datetime | None = None

    # ----------------------------------------------------------------------------------------- queries/updates
    def status_details(self) -> dict[str, Any]:
        plan = self._plan
        return {
            "phase": self._phase,
            "environment": self._input.environment,
            "tier": self._input.tier,
            "plan": None if plan is None else {"hash": plan.plan_hash, "add": plan.add, "change": plan.change,
                                               "destroy": plan.destroy, "outputs": plan.output_changes},
            "outputs": self._outputs,
            "namespace": self._namespace,
            "record_key": self._record_key,
            "expires_at": self._expires_at.isoformat() if self._expires_at else None,
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
        if self._expires_at is None or self._tearing_down:
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
        if self._destroy_now is not None or self._tearing_down:
            raise ValueError("the sandbox is already being torn down")

    # ----------------------------------------------------------------------------------------- activities
    async def _terraform(self, method: Any, arg: Any, attempts: int = 5) -> Any:
        policy = TERRAFORM_RETRY if attempts == 5 else RetryPolicy(
            initial_interval=TERRAFORM_RETRY.initial_interval, backoff_coefficient=2,
            maximum_interval=TERRAFORM_RETRY.maximum_interval, maximum_attempts=attempts,
            non_retryable_error_types=NON_RETRYABLE)
        return await workflow.execute_activity_method(method, arg, start_to_close_timeout=TERRAFORM_TIMEOUT,
                                                      heartbeat_timeout=TERRAFORM_HEARTBEAT, retry_policy=policy)

    async def _apply_namespace(self, input: ProvisionEnvironmentInput) -> None:
        ns = input.namespace
        self._namespace = ns.name or input.environment
        rec = self.step_started("namespace", self._namespace)
        spec = NamespaceSpec(
            context=ns.context, name=self._namespace,
            labels={**MANAGED_BY, "runbook/environment": input.environment, "runbook/tier": input.tier, **ns.labels},
            resource_quota=ns.resource_quota, limit_range=ns.limit_range, default_deny=ns.default_deny)
        try:
            created = await self._side(KubernetesActivities.apply_namespace, spec)
        except ActivityError as err:
            kind, message = _cause(err)
            self.step_failed(rec, message)
            raise _Stop("Failed", kind, f"namespace {self._namespace}: {message}") from None
        await self.step_done(rec, ("created: " if created.created else "updated: ") + ", ".join(created.objects),
                             notify=False)

    async def _side(self, method: Any, arg: Any) -> Any:
        return await workflow.execute_activity_method(method, arg, start_to_close_timeout=SHORT_TIMEOUT,
                                                      retry_policy=SIDE_RETRY)

    # ----------------------------------------------------------------------------------------- the run
    @workflow.run
    async def run(self, input: ProvisionEnvironmentInput) -> ProvisionEnvironmentResult:
        self.begin()
        target = input.target()
        try:
            self._check_input(input)
            approved = await self._plan_approve_apply(input, target)
            if approved is None:
                assert self._plan is not None
                summary = f"{input.environment}: no changes, the infrastructure matches the configuration"
                await self.finish("Succeeded", summary)
                return self._result("Succeeded", summary)
            await self._make_usable(input, target, approved)
        except _Stop as stop:
            return await self._fail(stop)
        if input.tier != "sandbox":
            summary = f"{input.environment} ({input.tier}) provisioned: {', '.join(sorted(self._outputs)) or 'no outputs'}"
            await self.finish("Succeeded", summary)
            return self._result("Succeeded", summary)
        return await self._sandbox_lifetime(input, target)

    def _check_input(self, input: ProvisionEnvironmentInput) -> None:
        if input.tier == "sandbox":
            if input.ttl is None or input.ttl <= timedelta(0):
                raise _Stop("Failed", errors.INVALID_INPUT, "a sandbox needs a positive ttl (e.g. 8h)")
            if input.ttl > input.max_ttl:
                raise _Stop("Failed", errors.INVALID_INPUT,
                            f"ttl {format_duration(input.ttl)} exceeds the maximum {format_duration(input.max_ttl)}")

    async def _plan_approve_apply(self, input: ProvisionEnvironmentInput,
                                  target: TerraformTarget) -> list[Approval] | None:
        """Plan, gate on the plan's hash, apply; again from the plan when the plan went stale."""
        replans = 0
        while True:
            self._phase = "plan"
            rec = self.step_started("plan", f"{input.module} in workspace {target.workspace}")
            try:
                plan: PlanSummary = await self._terraform(TerraformActivities.plan, PlanInput(target=target))
            except ActivityError as err:
                kind, message = _cause(err)
                self.step_failed(rec, message)
                raise _Stop("Failed", kind, message) from None
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
                kinds = {"rejected": errors.APPROVAL_REJECTED, "timed_out": errors.APPROVAL_TIMED_OUT,
                         "aborted": errors.ABORTED}
                status: RunStatus = "Aborted" if outcome.decision == "aborted" else "Failed"
                raise _Stop(status, kinds[outcome.decision],
                            f"plan {plan.plan_hash[:19]} {outcome.decision.replace('_', ' ')}: {outcome.reason}")
            who = ", ".join(a.approver for a in outcome.approvals) or "policy (no approval required)"
            await self.step_done(rec, f"approved by {who}", notify=False)
            if self.aborting:
                raise _Stop("Aborted", errors.ABORTED, f"aborted before apply: {self.abort_request.reason}")  # type: ignore[union-attr]

            self._phase = "apply"
            rec = self.step_started("apply", plan.plan_hash)
            try:
                result: ApplyResult = await self._terraform(
                    TerraformActivities.apply, ApplyInput(target=target, plan_hash=plan.plan_hash),
                    attempts=input.apply_attempts)
            except ActivityError as err:
                kind, message = _cause(err)
                if kind == PLAN_STALE and replans < input.max_replans:
                    replans += 1
                    self.step_failed(rec, f"{message}; planning again ({replans}/{input.max_replans})")
                    await self.notify("alert", f"{input.environment}: plan went stale, planning again", message,
                                      severity="warning")
                    continue
                self.step_failed(rec, message)
                raise _Stop("Failed", kind, f"apply of {plan.plan_hash[:19]} failed: {message}") from None
            await self.step_done(rec, result.detail)
            self._approved_at = outcome.approvals[-1].at if outcome.approvals else workflow.now()
            return list(outcome.approvals)

    async def _make_usable(self, input: ProvisionEnvironmentInput, target: TerraformTarget,
                           approvals: list[Approval]) -> None:
        self._phase = "outputs"
        rec = self.step_started("outputs")
        try:
            outputs = await self._terraform(TerraformActivities.outputs, OutputsInput(target=target))
        except ActivityError as err:
            kind, message = _cause(err)
            self.step_failed(rec, message)
            raise _Stop("Failed", kind, message) from None
        self._outputs, self._sensitive = outputs.values, outputs.sensitive
        await self.step_done(rec, ", ".join(sorted(outputs.values)) or "no outputs", notify=False)

        self._phase = "namespace"
        ns = input.namespace
        if not ns.enabled:
            rec = self.step_started("namespace", ns.name or input.environment)
            self.step_failed(rec, "skipped: namespace.enabled is false (no Kubernetes cluster for this environment)",
                             status="skipped")
        else:
            await self._apply_namespace(input)

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
        try:
            ref = await self._side(S3Activities.s3_put_json, S3PutJsonInput(
                bucket=input.record_bucket, key=key, document=record.model_dump(mode="json")))
        except ActivityError as err:
            kind, message = _cause(err)
            self.step_failed(rec, message)
            raise _Stop("Failed", kind, f"record: {message}") from None
        self._record_key = key
        await self.step_done(rec, f"version {ref.version_id or '-'}", notify=False)

    # ----------------------------------------------------------------------------------------- sandbox TTL
    async def _sandbox_lifetime(self, input: ProvisionEnvironmentInput,
                                target: TerraformTarget) -> ProvisionEnvironmentResult:
        self._phase = "live"
        assert self._expires_at is not None
        self.set_status("Running", f"sandbox live until {self._expires_at:%Y-%m-%d %H:%M} UTC")
        await self.notify("step_done", f"Sandbox {input.environment} is ready",
                          f"It will be destroyed at {self._expires_at:%Y-%m-%d %H:%M} UTC unless extended.",
                          fields={"expires_at": self._expires_at.isoformat(), **{
                              k: str(v) for k, v in self._outputs.items()}})
        try:
            reason = await self._wait_for_expiry(input)
        except asyncio.CancelledError:
            # Cancelling the run of a live sandbox tears it down: nothing else would.
            reason = "the run was cancelled"
            await asyncio.shield(asyncio.ensure_future(self._teardown(input, target, reason)))
            raise
        return await self._teardown(input, target, reason)

    async def _wait_for_expiry(self, input: ProvisionEnvironmentInput) -> str:
        while True:
            if self._destroy_now is not None:
                return f"destroy-now by {self._destroy_now.requested_by}: {self._destroy_now.reason}"
            if self.aborting:
                return f"aborted by {self.abort_request.requested_by}: {self.abort_request.reason}"  # type: ignore[union-attr]
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
            wake = remind_at if self._reminded_for != expires else expires
            try:
                await workflow.wait_condition(
                    lambda: self._destroy_now is not None or self.aborting or self._expires_at != expires,
                    timeout=wake - now)
            except asyncio.TimeoutError:
                pass

    async def _teardown(self, input: ProvisionEnvironmentInput, target: TerraformTarget,
                        reason: str) -> ProvisionEnvironmentResult:
        """Compensation of a sandbox: destroy, delete the namespace, delete the record (each step retried)."""
        self._tearing_down = True
        self._phase = "teardown"
        self.set_status("Running", f"tearing down: {reason}")
        problems: list[str] = []
        rec = self.step_started("destroy", target.workspace)
        try:
            result = await self._terraform(TerraformActivities.destroy, DestroyInput(target=target))
            await self.step_done(rec, result.detail, notify=False)
            self._destroyed = True
        except ActivityError as err:
            problems.append(f"terraform destroy: {_cause(err)[1]}")
            self.step_failed(rec, problems[-1])
        if self._namespace:
            rec = self.step_started("delete namespace", self._namespace)
            try:
                await self._side(KubernetesActivities.delete_namespace,
                                 NamespaceRef(context=input.namespace.context, name=self._namespace))
                await self.step_done(rec, notify=False)
            except ActivityError as err:
                problems.append(f"namespace {self._namespace}: {_cause(err)[1]}")
                self.step_failed(rec, problems[-1])
        if self._record_key:
            rec = self.step_started("delete record", self._record_key)
            try:
                await self._side(S3Activities.s3_delete_object,
                                 S3ObjectKey(bucket=input.record_bucket, key=self._record_key))
                await self.step_done(rec, notify=False)
            except ActivityError as err:
                problems.append(f"record {self._record_key}: {_cause(err)[1]}")
                self.step_failed(rec, problems[-1])
        if problems:
            return await self._fail(_Stop("Failed", errors.VERIFICATION_FAILED,
                                          f"sandbox teardown ({reason}) incomplete: " + "; ".join(problems)))
        summary = f"sandbox {input.environment} destroyed ({reason})"
        status: RunStatus = "Aborted" if self.aborting else "Succeeded"
        await self.finish(status, summary)
        result = self._result(status, summary)
        result.expired_at = workflow.now()
        return result

    # ----------------------------------------------------------------------------------------- endings
    def _result(self, status: RunStatus, summary: str) -> ProvisionEnvironmentResult:
        return ProvisionEnvironmentResult(
            status=status, summary=summary, steps=list(self._steps), gates=list(self._closed_gates),
            environment=self._input.environment, plan=self._plan, outputs=self._outputs,
            record_key=self._record_key, namespace=self._namespace, destroyed=self._destroyed)

    async def _fail(self, stop: _Stop) -> ProvisionEnvironmentResult:
        await self.finish(stop.status, stop.reason, severity="error" if stop.status == "Failed" else "warning")
        result = self._result(stop.status, stop.reason)
        raise ApplicationError(stop.reason, result.model_dump(mode="json"), type=stop.error_type, non_retryable=True)
