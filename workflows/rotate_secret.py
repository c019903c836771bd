"""Rotate a secret with zero downtime: create the new material, roll it out while the old one still works, verify
the consumers use the new one, then revoke the old.

Kind ``database`` (OpenBao/Vault's database secrets engine): validate (read-only: the role exists, the KV path the
consumers read exists) -> issue a new user and write it as the next KV version (the old user still works: both are
valid during the overlap) -> verify (pg_stat_activity: every consumer connected as the new user, none as the old)
-> revoke the old lease (the engine drops the old user). Safe states, per step (docs/rotate-secret.md):
- before the issue, or a Refused input: nothing changed;
- after the issue, on a failed verification, an abort or a cancel: the one compensation block writes the old
  credential back as the newest KV version and revokes the new lease; the old user was never touched;
- once the consumers are verified and the revoke of the old lease has started, an abort or a cancel is too late:
  the rotation completes (Succeeded, the refused abort recorded); a revoke that fails rolls back as above.
No secret value enters the workflow: its activities answer with versions, lease ids and user names.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.database import DatabaseActivities
    from activities.http_checks import HttpCheckActivities
    from activities.kubernetes import KubernetesActivities
    from activities.vault import SecretEngineActivities
    from core import errors
    from core.approval import AbortInput
    from core.http_checks import HttpCheck, HttpSuiteInput
    from core.kubernetes import DeploymentRef, RestartInput, SecretFromVault, SecretRolloutTarget, WaitRolloutInput
    from core.rotation import (
        ApiKeyIssued,
        ApiKeyIssueInput,
        ApiKeyTarget,
        ConsumerCheckInput,
        DbCredentialInput,
        DbCredentialIssued,
        DbRotationTarget,
        KvRef,
        KvRestoreInput,
        LeaseRef,
        PkiIssued,
        PkiIssueInput,
        PkiRevokeInput,
        PkiRotationTarget,
        RotateSecretInput,
        RotateSecretResult,
        RotationRecord,
        TlsServedInput,
        expiry_alert,
        rollout_problems,
    )
    from core.runbook import StepRecord
    from workflows.base import ACTIVITY_RETRY, Ending, RunbookWorkflow, Stop, cause_of, until_done

NOTHING_CHANGED = "nothing was changed"
T = TypeVar("T", str, int)
COMPENSATE_RETRY = RetryPolicy(initial_interval=timedelta(seconds=5), maximum_interval=timedelta(minutes=1),
                               maximum_attempts=10, non_retryable_error_types=[errors.INVALID_INPUT, errors.ACCESS_DENIED])


@workflow.defn
class RotateSecret(RunbookWorkflow):
    @workflow.init
    def __init__(self, input: RotateSecretInput) -> None:
        super().__init__(input.meta, input.carry)
        self.record = RotationRecord(kind=input.kind, kv_path=input.kv_path)
        self._issuing = False  # set BEFORE the issue: compensation must look for what it may have written
        self._issued: DbCredentialIssued | None = None
        self._cert: PkiIssued | None = None
        self._key: ApiKeyIssued | None = None
        self._old_revoked = False
        self._rolled_out = False  # set BEFORE the Secret is written: compensation must roll the Secret back too

    def status_details(self) -> dict[str, Any]:
        return {"rotation": self.record.model_dump(mode="json")}

    @workflow.run
    async def run(self, input: RotateSecretInput) -> RotateSecretResult:
        self.begin()
        await self.notify("started", f"Rotate {input.kind} secret {input.kv_path}", f"role {input.role}")
        if input.kind == "api_key":
            ending = await self.conduct(lambda: self._rotate_api_key(input), lambda e: self._compensate_api_key(input, e))
        elif input.kind == "certificate":
            ending = await self.conduct(lambda: self._rotate_certificate(input),
                                        lambda e: self._compensate_certificate(input, e))
        else:
            ending = await self.conduct(lambda: self._rotate(input), lambda e: self._compensate(input, e))
        return await self.conclude(ending, lambda common: RotateSecretResult(**common, rotation=self.record))

    async def _rotate(self, input: RotateSecretInput) -> Ending:
        step = self.step_started("validate")
        self._refuse(step, input.problems())
        state = await self.interruptible(workflow.execute_activity_method(
            SecretEngineActivities.db_rotation_target, DbRotationTarget(mount=input.mount, role=input.role, kv_path=input.kv_path),
            start_to_close_timeout=timedelta(minutes=1), retry_policy=ACTIVITY_RETRY), "validate")
        why = []
        if not state.role_exists:
            why.append(f"role: {input.mount}/roles/{input.role} does not exist")
        if not state.kv_version:
            why.append(f"kv_path: {input.kv_path} does not exist (the consumers' current credential)")
        why += await self._rollout_problems(input)
        self._refuse(step, why)
        self.record.old_version, self.record.old_username = state.kv_version, state.kv_username
        self.record.old_lease_id = state.kv_lease_id
        await self.step_done(step, f"role {input.role}; {input.kv_path} v{state.kv_version} ({state.kv_username})",
                             notify=False)

        step = self.step_started("issue new credential")
        self._issuing = True
        issued: DbCredentialIssued = await self.change(workflow.execute_activity_method(
            SecretEngineActivities.db_issue_credential,
            DbCredentialInput(mount=input.mount, role=input.role, kv_path=input.kv_path,
                              rotation_id=workflow.info().workflow_id),
            start_to_close_timeout=timedelta(minutes=1), retry_policy=ACTIVITY_RETRY), "issue new credential")
        self._issued = issued
        r = self.record
        r.new_version, r.new_username, r.new_lease_id = issued.kv.version, issued.username, issued.lease_id
        r.old_version, r.old_username, r.old_lease_id = issued.previous.version, issued.previous_username, issued.previous_lease_id
        await self.step_done(step, f"{input.kv_path} v{issued.kv.version}: user {issued.username} (old "
                                   f"{issued.previous_username} still valid)")
        await self._roll_out_step(input, issued.kv)

        step = self.step_started("verify consumers")
        assert input.server is not None  # problems() refused it otherwise
        timeout = input.verify_timeout.total_seconds()
        sessions = await self.interruptible(workflow.execute_activity_method(
            DatabaseActivities.pg_wait_consumers,
            ConsumerCheckInput(server=input.server, consumers=input.consumers, expect_user=issued.username,
                               timeout_seconds=timeout),
            start_to_close_timeout=timedelta(seconds=timeout + 120), heartbeat_timeout=timedelta(seconds=60),
            retry_policy=ACTIVITY_RETRY), "verify consumers")
        await self.step_done(step, f"{len(sessions.users)} consumer(s) connected as {issued.username}")

        await self._retire_old(
            "revoke old credential", issued.previous_lease_id, SecretEngineActivities.vault_revoke_lease,
            lambda lease: LeaseRef(lease_id=lease), into=r.revoked,
            done=lambda d: f"lease {d.lease_id} {'revoked' if d.revoked else 'was already gone'}: "
                           f"user {issued.previous_username} dropped",
            nothing="the old version has no lease (a static credential): nothing to revoke")
        return Ending("Succeeded", f"{input.kv_path} v{r.old_version} -> v{r.new_version}: consumers on "
                                   f"{r.new_username}, {r.old_username or 'old credential'} revoked")

    def _refuse(self, step: StepRecord, why: list[str]) -> None:
        """Part of every kind's read-only validate step: any reason ends the run Refused, before any change."""
        if why:
            self.step_failed(step, "; ".join(why))
            raise Stop("Refused", f"{'; '.join(why)}: {NOTHING_CHANGED}", severity="warning")

    async def _compensate(self, input: RotateSecretInput, ending: Ending) -> None:
        """Before the old lease is revoked: put the old credential back where consumers read it and revoke the new
        lease. The old user was never touched, so consumers that never switched kept working throughout."""
        async def revoke_new(issued: DbCredentialIssued) -> str:
            await self._compensating(SecretEngineActivities.vault_revoke_lease, LeaseRef(lease_id=issued.lease_id))
            self.record.revoked.append(issued.lease_id)
            return f"new lease revoked (user {issued.username} dropped)"

        await self._roll_back(input, ending, "credential", self._issued, was=lambda i: i.previous_username,
                              target=lambda: self._compensating(
                                  SecretEngineActivities.db_rotation_target,
                                  DbRotationTarget(mount=input.mount, role=input.role, kv_path=input.kv_path)),
                              reissue=lambda: self._compensating(
                                  SecretEngineActivities.db_issue_credential,
                                  DbCredentialInput(mount=input.mount, role=input.role, kv_path=input.kv_path,
                                                    rotation_id=workflow.info().workflow_id)),
                              undo_new=revoke_new)

    async def _roll_back(self, input: RotateSecretInput, ending: Ending, noun: str, issued: Any, *,
                         was: Callable[[Any], str], target: Callable[[], Awaitable[Any]],
                         reissue: Callable[[], Awaitable[Any]], undo_new: Callable[[Any], Awaitable[str]]) -> None:
        """The one roll-back of every kind, before the old material is revoked: the old version's data written back
        as the newest KV version, then the new material undone (``undo_new``: a lease or serial revoked, a version
        destroyed). Stopped around the issue (``issued`` None), it first asks whether the issue wrote (``target``:
        its rotation id on the newest version) and, if so, what (``reissue``: the issue is idempotent)."""
        if not self._issuing or self._old_revoked:
            return
        step = self.step_started(f"roll back to old {noun}")
        try:
            if issued is None:
                state = await target()
                if state.kv_rotation_id != workflow.info().workflow_id:
                    self.step_failed(step, f"no new {noun} was issued: nothing to roll back", status="skipped")
                    return
                issued = await reissue()  # idempotent: answers what it wrote
            if issued.previous.version:
                restored: KvRef = await self._compensating(SecretEngineActivities.kv_restore_version,
                                                           KvRestoreInput(source=issued.previous))
                self.record.restored_version = restored.version
                ending.compensated.append(f"{input.kv_path} v{restored.version} holds the old {noun} again "
                                          f"({was(issued)})")
                if self._rolled_out:  # the consumers back onto the old material before the new one is undone
                    ending.compensated.append(await self._roll_out(input, restored, back=True))
            ending.compensated.append(await undo_new(issued))
            self.step_failed(step, "; ".join(ending.compensated), status="compensated")
        except Exception as err:  # noqa: BLE001 - what could not be undone is reported, the run ends Failed
            ending.not_undone.append(f"roll back {input.kv_path}: {cause_of(err)}")
            self.step_failed(step, cause_of(err))

    @staticmethod
    def _compensating(activity: Any, arg: Any) -> Awaitable[Any]:
        return workflow.execute_activity_method(activity, arg, start_to_close_timeout=timedelta(minutes=1),
                                                retry_policy=COMPENSATE_RETRY)

    async def _retire_old(self, name: str, old: T, activity: Any, request: Callable[[T], Any], *, into: list[T],
                          done: Callable[[Any], str], nothing: str) -> None:
        """The last step of every kind, once the consumers are verified: retire the old material ``old`` (a lease, a
        serial, a KV version) with ``activity`` on ``request(old)`` and record it ``into`` the rotation record;
        ``done`` describes the activity's answer. No old material (``old`` empty): ``nothing`` to retire.
        An abort or a cancel arriving while it runs is too late: refused (recorded), the rotation completes; a
        failed retire fails the step (compensation rolls back)."""
        step = self.step_started(name)
        if not old:
            self._old_revoked = True
            await self.step_done(step, nothing)
            return
        self.check_abort(name)
        await self.respect_freeze(name)
        task = asyncio.ensure_future(workflow.execute_activity_method(
            activity, request(old), start_to_close_timeout=timedelta(minutes=1), retry_policy=ACTIVITY_RETRY))
        if await until_done(task):
            self.request_abort(AbortInput(requested_by="temporal", reason="the workflow was cancelled"))
        result = task.result()
        self._old_revoked = True
        if self.aborting:
            req = self.abort_request
            self.record_action("abort", req.requested_by if req else "?", req.reason if req else "", accepted=False,
                               note=f"arrived during {name}: the rotation completed")
        into.append(old)
        await self.step_done(step, done(result))

    # ------------------------------------------------------------------------------ rollout through Kubernetes
    async def _rollout_problems(self, input: RotateSecretInput) -> list[str]:
        """Part of the read-only validate step (rollout kubernetes): the Secret exists with the kind's type, and
        every consumer Deployment exists. Rollout kv: nothing to read (no command)."""
        if input.rollout != "kubernetes" or input.secret is None:
            return []
        state = await self.interruptible(workflow.execute_activity_method(
            KubernetesActivities.secret_rollout_target,
            SecretRolloutTarget(secret=input.secret, deployments=[d for d in input.deployments if d.strip()]),
            start_to_close_timeout=timedelta(minutes=1), retry_policy=ACTIVITY_RETRY), "validate")
        return rollout_problems(input, state)

    async def _roll_out_step(self, input: RotateSecretInput, source: KvRef) -> None:
        if input.rollout != "kubernetes":
            return
        step = self.step_started("roll out")
        await self.step_done(step, await self._roll_out(input, source))

    async def _roll_out(self, input: RotateSecretInput, source: KvRef, *, back: bool = False) -> str:
        """Write KV version ``source`` into the Secret (the activity reads Vault itself: only the reference is
        here), then a rolling restart of every consumer Deployment and a wait until each is rolled out (ready).
        ``back``: the same as compensation (retried, not interrupted by an abort)."""
        assert input.secret is not None  # problems() refused it otherwise
        self._rolled_out = True
        secret_type, keys = input.secret_layout()
        write = SecretFromVault(ref=input.secret, source_path=input.kv_path, source_version=source.version, keys=keys,
                                type=secret_type)
        # restartedAt from the run's clock: a retried restart sets the same value (no second rollout); a restart
        # on the way back always differs from the one before it
        stamp = workflow.now().strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        if self.record.restarts and stamp <= self.record.restarts[-1]:
            stamp = self.record.restarts[-1] + "+1"
        refs = [DeploymentRef(context=input.secret.context, namespace=input.secret.namespace, name=d.strip())
                for d in input.deployments if d.strip()]
        deadline = input.rollout_timeout.total_seconds()

        def wait(ref: DeploymentRef) -> Awaitable[Any]:
            return workflow.execute_activity_method(
                KubernetesActivities.wait_rollout, WaitRolloutInput(ref=ref, deadline_seconds=deadline),
                start_to_close_timeout=timedelta(seconds=deadline + 120), heartbeat_timeout=timedelta(seconds=60),
                retry_policy=COMPENSATE_RETRY if back else ACTIVITY_RETRY)

        if back:
            written = await self._compensating(KubernetesActivities.write_secret_from_vault, write)
            self.record.secret_source = written.source
            for ref in refs:
                await self._compensating(KubernetesActivities.restart_deployment, RestartInput(ref=ref, restarted_at=stamp))
            self.record.restarts += [stamp] if refs else []
            for ref in refs:
                await wait(ref)
        else:
            written = await self.change(workflow.execute_activity_method(
                KubernetesActivities.write_secret_from_vault, write, start_to_close_timeout=timedelta(minutes=1),
                retry_policy=ACTIVITY_RETRY), "roll out")
            self.record.secret_source = written.source
            for ref in refs:
                await self.change(workflow.execute_activity_method(
                    KubernetesActivities.restart_deployment, RestartInput(ref=ref, restarted_at=stamp),
                    start_to_close_timeout=timedelta(minutes=1), retry_policy=ACTIVITY_RETRY), "roll out")
            self.record.restarts += [stamp] if refs else []
            for ref in refs:
                await self.interruptible(wait(ref), "roll out")
        restarted = f"; {', '.join(r.name for r in refs)} restarted and ready" if refs else ""
        return f"secret {input.secret.namespace}/{input.secret.name} holds {written.source}{restarted}"

    # ------------------------------------------------------------------------------------------ certificates
    async def _rotate_certificate(self, input: RotateSecretInput) -> Ending:
        """Issue from the PKI role into the KV path the TLS endpoint reads, wait until every endpoint presents the
        new serial in a handshake, then revoke the old certificate. Both certificates are valid until then."""
        step = self.step_started("validate")
        self._refuse(step, input.problems())
        target = PkiRotationTarget(mount=input.pki_mount, role=input.role, common_name=input.common_name,
                                   kv_path=input.kv_path)
        state = await self.interruptible(workflow.execute_activity_method(
            SecretEngineActivities.pki_rotation_target, target,
            start_to_close_timeout=timedelta(minutes=1), retry_policy=ACTIVITY_RETRY), "validate")
        why = []
        if not state.role_exists:
            why.append(f"role: {input.pki_mount}/roles/{input.role} does not exist")
        elif not state.cn_allowed:
            why.append(f"common_name: {input.common_name} is outside the role's allowed domains "
                       f"{', '.join(state.allowed_domains) or '(none)'}")
        if not state.kv_version:
            why.append(f"kv_path: {input.kv_path} does not exist (the endpoint's current certificate)")
        why += await self._rollout_problems(input)
        self._refuse(step, why)
        r = self.record
        r.old_version, r.old_serial = state.kv_version, state.kv_serial
        await self.step_done(step, f"role {input.role} allows {input.common_name}; {input.kv_path} v{state.kv_version} "
                                   f"(serial {state.kv_serial or '?'})", notify=False)
        if input.renew_within is not None and state.kv_not_after:
            expires = datetime.fromisoformat(state.kv_not_after)
            days_left = (expires - workflow.now()).days
            alert = expiry_alert(days_left)
            if alert is not None:
                await self.notify("alert", f"Certificate {input.common_name} expires in {days_left} day(s)",
                                  f"{input.kv_path} serial {state.kv_serial}, not after {state.kv_not_after}",
                                  severity="warning" if days_left > 7 else "error",
                                  fields={"expires": state.kv_not_after, "serial": state.kv_serial})
            if expires - workflow.now() > input.renew_within:
                self.step_skipped("issue new certificate", f"expires in {days_left} days: not within "
                                                           f"{input.renew_within.days} days")
                return Ending("Succeeded", f"nothing to do: {input.kv_path} (serial {state.kv_serial}) expires in "
                                           f"{days_left} days")

        step = self.step_started("issue new certificate")
        self._issuing = True
        cert: PkiIssued = await self.change(workflow.execute_activity_method(
            SecretEngineActivities.pki_issue_certificate,
            PkiIssueInput(mount=input.pki_mount, role=input.role, common_name=input.common_name,
                          kv_path=input.kv_path, rotation_id=workflow.info().workflow_id),
            start_to_close_timeout=timedelta(minutes=1), retry_policy=ACTIVITY_RETRY), "issue new certificate")
        self._cert = cert
        r.new_version, r.new_serial, r.new_not_after = cert.kv.version, cert.serial, cert.not_after
        r.old_version, r.old_serial = cert.previous.version, cert.previous_serial
        await self.step_done(step, f"{input.kv_path} v{cert.kv.version}: serial {cert.serial}, until {cert.not_after} "
                                   f"(old {cert.previous_serial or '?'} still valid)")
        await self._roll_out_step(input, cert.kv)

        step = self.step_started("verify endpoints")
        timeout = input.verify_timeout.total_seconds()
        served = await self.interruptible(workflow.execute_activity_method(
            HttpCheckActivities.tls_wait_serial,
            TlsServedInput(endpoints=input.endpoints, serial=cert.serial, timeout_seconds=timeout),
            start_to_close_timeout=timedelta(seconds=timeout + 120), heartbeat_timeout=timedelta(seconds=60),
            retry_policy=ACTIVITY_RETRY), "verify endpoints")
        await self.step_done(step, f"{len(served.serials)} endpoint(s) present serial {cert.serial}")

        await self._retire_old(
            "revoke old certificate", cert.previous_serial, SecretEngineActivities.pki_revoke_certificate,
            lambda serial: PkiRevokeInput(mount=input.pki_mount, serial=serial), into=r.revoked,
            done=lambda _: f"serial {cert.previous_serial} revoked",
            nothing="the old version names no serial: nothing to revoke")
        return Ending("Succeeded", f"{input.kv_path} v{r.old_version} -> v{r.new_version}: endpoints present "
                                   f"{r.new_serial}, {r.old_serial or 'old certificate'} revoked")

    async def _compensate_certificate(self, input: RotateSecretInput, ending: Ending) -> None:
        """Before the old certificate is revoked: put it back where the endpoint reads it, revoke the new one."""
        async def revoke_new(cert: PkiIssued) -> str:
            await self._compensating(SecretEngineActivities.pki_revoke_certificate,
                                     PkiRevokeInput(mount=input.pki_mount, serial=cert.serial))
            self.record.revoked.append(cert.serial)
            return f"new certificate {cert.serial} revoked"

        await self._roll_back(input, ending, "certificate", self._cert, was=lambda c: c.previous_serial,
                              target=lambda: self._compensating(
                                  SecretEngineActivities.pki_rotation_target,
                                  PkiRotationTarget(mount=input.pki_mount, role=input.role,
                                                    common_name=input.common_name, kv_path=input.kv_path)),
                              reissue=lambda: self._compensating(
                                  SecretEngineActivities.pki_issue_certificate,
                                  PkiIssueInput(mount=input.pki_mount, role=input.role, common_name=input.common_name,
                                                kv_path=input.kv_path, rotation_id=workflow.info().workflow_id)),
                              undo_new=revoke_new)

    # ------------------------------------------------------------------------------------------ API keys
    async def _rotate_api_key(self, input: RotateSecretInput) -> Ending:
        """A new key as the next KV version (the old version stays: both valid), verified when every consumer URL
        reports the new key's fingerprint, then, after the grace period, the old version destroyed."""
        step = self.step_started("validate")
        self._refuse(step, input.problems())
        state = await self.interruptible(workflow.execute_activity_method(
            SecretEngineActivities.apikey_rotation_target, ApiKeyTarget(kv_path=input.kv_path),
            start_to_close_timeout=timedelta(minutes=1), retry_policy=ACTIVITY_RETRY), "validate")
        why = [f"kv_path: {input.kv_path} does not exist (the consumers' current key)"] if not state.kv_version else []
        why += await self._rollout_problems(input)
        self._refuse(step, why)
        r = self.record
        r.old_version, r.old_fingerprint = state.kv_version, state.fingerprint
        await self.step_done(step, f"{input.kv_path} v{state.kv_version} ({state.fingerprint or 'no fingerprint'})",
                             notify=False)

        step = self.step_started("issue new key")
        self._issuing = True
        key: ApiKeyIssued = await self.change(workflow.execute_activity_method(
            SecretEngineActivities.apikey_issue,
            ApiKeyIssueInput(kv_path=input.kv_path, rotation_id=workflow.info().workflow_id),
            start_to_close_timeout=timedelta(minutes=1), retry_policy=ACTIVITY_RETRY), "issue new key")
        self._key = key
        r.new_version, r.new_fingerprint = key.kv.version, key.fingerprint
        r.old_version, r.old_fingerprint = key.previous.version, key.previous_fingerprint
        await self.step_done(step, f"{input.kv_path} v{key.kv.version}: {key.fingerprint} (v{key.previous.version} "
                                   "still valid)")
        await self._roll_out_step(input, key.kv)

        step = self.step_started("verify consumers")
        interval = 2.0
        attempts = max(1, min(100, int(input.verify_timeout.total_seconds() / interval) + 1))
        checks = [HttpCheck(name=f"consumer {i + 1}", url=url, expect_body=key.fingerprint)
                  for i, url in enumerate(u for u in input.consumer_urls if u.strip())]
        suite = await self.interruptible(workflow.execute_activity_method(
            HttpCheckActivities.http_check_suite, HttpSuiteInput(checks=checks, attempts=attempts, interval_seconds=interval),
            start_to_close_timeout=input.verify_timeout + timedelta(minutes=2), heartbeat_timeout=timedelta(seconds=60),
            retry_policy=ACTIVITY_RETRY), "verify consumers")
        if not suite.passed:
            self.step_failed(step, suite.summary())
            raise Stop("RolledBack", f"verify consumers: not on {key.fingerprint}: {suite.summary()}", severity="error")
        await self.step_done(step, f"{len(checks)} consumer(s) report {key.fingerprint}")

        step = self.step_started("grace period")
        if input.grace_period > timedelta(0):
            try:
                await self.interruptible(workflow.wait_condition(
                    lambda: False, timeout=input.grace_period,
                    timeout_summary=f"grace period: v{key.previous.version} destroyed at its end"), "grace period")
            except asyncio.TimeoutError:
                pass
        await self.step_done(step, f"{input.grace_period} passed with both versions readable", notify=False)

        await self._retire_old(
            "destroy old version", key.previous.version, SecretEngineActivities.kv_destroy_version,
            lambda version: KvRef(path=input.kv_path, version=version), into=r.destroyed_versions,
            done=lambda _: f"{input.kv_path} v{key.previous.version} destroyed",
            nothing="no old version: nothing to destroy")
        return Ending("Succeeded", f"{input.kv_path} v{r.old_version} -> v{r.new_version}: consumers on "
                                   f"{r.new_fingerprint}, v{r.old_version} destroyed")

    async def _compensate_api_key(self, input: RotateSecretInput, ending: Ending) -> None:
        """Before the old version is destroyed: write it back as the newest version and destroy the new one."""
        async def destroy_new(key: ApiKeyIssued) -> str:
            await self._compensating(SecretEngineActivities.kv_destroy_version, key.kv)
            self.record.destroyed_versions.append(key.kv.version)
            return f"new key v{key.kv.version} destroyed"

        await self._roll_back(input, ending, "key", self._key, was=lambda k: k.previous_fingerprint,
                              target=lambda: self._compensating(SecretEngineActivities.apikey_rotation_target,
                                                                ApiKeyTarget(kv_path=input.kv_path)),
                              reissue=lambda: self._compensating(
                                  SecretEngineActivities.apikey_issue,
                                  ApiKeyIssueInput(kv_path=input.kv_path, rotation_id=workflow.info().workflow_id)),
                              undo_new=destroy_new)
