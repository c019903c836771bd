"""Backup restore drill: restore the newest backup to a scratch target, verify it, measure RPO and RTO, clean up.

Two backup kinds, one workflow:
- ``pg_dump``: the newest ``pg_dump -Fc`` object under an S3 prefix is streamed into ``pg_restore`` (one activity)
  into a scratch database on ``restore_server``;
- ``rds_snapshot``: the newest (or a named) snapshot of ``source_instance`` is restored to a scratch instance,
  waited for, and checked. ``check_endpoint_override`` runs the SQL checks against a clone of a local database
  instead of the restored endpoint (moto has no database engine behind RDS; never set it in production).

Scratch identifiers derive from the workflow id, so a retried activity or a replayed run finds its own scratch
(and a leftover of its own is replaced, never duplicated). Clean-up runs on success, failure and cancellation, in
one shielded block. A failed drill writes its report, alerts, and then fails the workflow with
``ApplicationError(type=ChecksFailed)`` whose details carry the report, so Temporal, schedules and dashboards
all see the failure.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime, timedelta
from typing import Any, Literal

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError
from temporalio.workflow import ActivityCancellationType

with workflow.unsafe.imports_passed_through():
    from pydantic import Field, model_validator

    from activities.aws import RdsActivities, S3Activities
    from activities.database import DatabaseActivities
    from core import errors
    from core.aws import RdsInstanceRef, RdsRestoreInput, RdsSnapshotQuery, RdsWaitInput, S3LatestQuery, S3PutJsonInput
    from core.duration import Duration, format_duration
    from core.restore import (
        BackupRef,
        CheckEndpointOverride,
        CheckResult,
        PgCloneInput,
        PgDatabaseRef,
        PgRestoreDumpInput,
        PgRunChecksInput,
        PgScratchInput,
        PgServer,
        RestoreCheck,
        RestoreManifest,
        RestoreReport,
        Tier,
        as_utc,
        evaluate_check,
        newest_write,
        scratch_name,
        targets_for,
    )
    from core.runbook import RunbookInput, RunbookResult
    from workflows.base import RunbookWorkflow


class RestoreDrillInput(RunbookInput):
    database: str = Field(description="the logical database the backups are of (reports, alerts, target)")
    environment: str = Field("production", description="the environment the backups come from (reports, alerts)")
    kind: Literal["pg_dump", "rds_snapshot"] = "pg_dump"
    tier: Tier = "standard"
    rpo_target: Duration | None = Field(None, description="default from the tier: 15m, tier-1 5m")
    rto_target: Duration | None = Field(None, description="default from the tier: 1h, tier-1 15m")
    checks: list[RestoreCheck] = Field(default_factory=list)
    source: PgDatabaseRef | None = Field(None, description="the live database, for checks with baseline: source")

    # pg_dump backups
    dump_bucket: str | None = None
    dump_prefix: str = ""
    dump_key: str | None = Field(None, description="pin this dump instead of the newest under dump_prefix")
    manifest_key_template: str | None = Field(
        "manifests/{key}.json", description="where the manifest recorded at backup time lives; {key} = dump key"
    )
    restore_server: PgServer | None = Field(None, description="server that hosts the scratch database")

    # RDS snapshots
    source_instance: str | None = None
    region: str = "us-east-1"
    snapshot_identifier: str | None = None
    snapshot_kinds: list[Literal["automated", "manual"]] = Field(default_factory=lambda: ["automated", "manual"])
    instance_class: str | None = None
    rds_vault_path: str | None = Field(None, description="credentials of the restored instance (Vault KV path)")
    rds_database: str = "postgres"
    check_endpoint_override: CheckEndpointOverride | None = None

    # limits and the report
    restore_timeout: Duration = timedelta(hours=2)
    poll_interval: Duration = timedelta(seconds=15)
    statement_timeout: Duration = timedelta(minutes=5)
    heartbeat_timeout: Duration = Field(
        timedelta(minutes=1), description="of the restore and wait activities; a cancellation reaches them within ~80% of it"
    )
    report_bucket: str
    report_prefix: str = "restore-drills/"

    @model_validator(mode="after")
    def _complete(self) -> "RestoreDrillInput":
        if self.kind == "pg_dump":
            missing = [n for n in ("dump_bucket", "restore_server") if getattr(self, n) is None]
        else:
            missing = [] if self.source_instance else ["source_instance"]
            if self.check_endpoint_override is None and not self.rds_vault_path:
                missing.append("rds_vault_path (or check_endpoint_override)")
        if missing:
            raise ValueError(f"a {self.kind} drill needs {', '.join(missing)}")
        if not self.checks:
            raise ValueError("declare at least one check: a drill must verify the restored data")
        return self


class RestoreDrillResult(RunbookResult):
    report: RestoreReport


class _Stop(Exception):
    """Ends the drill early (aborted by a person); clean-up still runs."""


LOCATE_RETRY = RetryPolicy(initial_interval=timedelta(seconds=5), maximum_attempts=5, non_retryable_error_types=errors.NON_RETRYABLE)
RESTORE_RETRY = RetryPolicy(initial_interval=timedelta(seconds=10), maximum_attempts=3, non_retryable_error_types=errors.NON_RETRYABLE)
WAIT_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=30), backoff_coefficient=2, maximum_interval=timedelta(minutes=5),
    non_retryable_error_types=errors.NON_RETRYABLE,
)
CLEANUP_RETRY = RetryPolicy(initial_interval=timedelta(seconds=5), maximum_interval=timedelta(minutes=1), maximum_attempts=10,
                            non_retryable_error_types=[errors.INVALID_INPUT, errors.ACCESS_DENIED])


@workflow.defn
class RestoreDrill(RunbookWorkflow):
    @workflow.init
    def __init__(self, input: RestoreDrillInput) -> None:
        super().__init__(input.meta)
        info = workflow.info()
        rpo, rto = targets_for(input.tier, input.rpo_target, input.rto_target)
        self.report = RestoreReport(
            workflow_id=info.workflow_id, run_id=info.run_id, database=input.database, kind=input.kind,
            tier=input.tier, started_at=workflow.now(), rpo_target=rpo, rto_target=rto,
        )
        self._scratch_db = scratch_name(info.workflow_id, kind="database")
        self._scratch_rds = scratch_name(info.workflow_id, kind="rds")
        self._restore_started = False
        self._manifest: RestoreManifest | None = None

    def status_details(self) -> dict[str, Any]:
        r = self.report
        return {
            "backup": r.backup.model_dump(mode="json") if r.backup else None,
            "scratch": r.scratch,
            "checks": [{"name": c.name, "passed": c.passed, "detail": c.detail} for c in r.checks],
            "rto_achieved": format_duration(r.rto_achieved) if r.rto_achieved is not None else None,
            "rpo_achieved": format_duration(r.rpo_achieved) if r.rpo_achieved is not None else None,
            "failures": list(r.failures),
        }

    @workflow.run
    async def run(self, input: RestoreDrillInput) -> RestoreDrillResult:
        self.begin()
        report = self.report
        await self.notify(
            "started", f"Restore drill of {input.database} ({input.kind})",
            f"RPO target {format_duration(report.rpo_target)}, RTO target {format_duration(report.rto_target)}",
        )
        cancelled = False
        try:
            await self._drill(input)
        except ActivityError as err:
            if isinstance(err.cause, CancelledError):  # the activity we waited on was cancelled with the run
                cancelled = True
                report.failures.append("cancelled")
            else:
                report.failures.append(_explain(err))
        except ApplicationError as err:
            report.failures.append(_explain(err))
        except _Stop:
            report.failures.append(f"aborted by {self.abort_request.requested_by if self.abort_request else '?'}")
        except asyncio.CancelledError:
            cancelled = True
            report.failures.append("cancelled")

        # ---------------------------------------------------------------- compensation: always remove the scratch
        # Shielded, so a cancellation arriving now cannot interrupt the clean-up it is waiting for.
        await asyncio.shield(asyncio.ensure_future(self._cleanup(input)))

        self._judge()
        await self._write_report(input)
        summary = _summary(report)
        if cancelled:
            await self.finish("Aborted", f"drill cancelled; scratch removed. {summary}", severity="warning")
            raise asyncio.CancelledError("restore drill cancelled")
        if report.passed:
            await self.finish("Succeeded", summary)
            return RestoreDrillResult(status="Succeeded", summary=summary, steps=list(self._steps), report=report)
        if not self.aborting:  # a person stopped it: no page
            await self.notify(
                "alert", f"Restore drill FAILED: {input.database}", summary, severity="error",
                fields={"failures": "; ".join(report.failures)[:1000], "report": report.report_uri or "not written"},
            )
        status = "Aborted" if self.aborting else "Failed"
        await self.finish(status, summary, severity="error")
        raise ApplicationError(
            f"restore drill of {input.database} failed: {'; '.join(report.failures)}",
            report.model_dump(mode="json"),
            type=errors.ABORTED if self.aborting else errors.CHECKS_FAILED,
            non_retryable=True,
        )

    # ------------------------------------------------------------------------------------------------ the drill
    async def _abortable(self, handle: Any) -> Any:
        """Wait for a long activity; an abort (or a cancellation of the run) cancels it and waits until it stopped."""
        try:
            await workflow.wait_condition(lambda: handle.done() or self.aborting)
        except asyncio.CancelledError:
            handle.cancel()
            with contextlib.suppress(ActivityError, asyncio.CancelledError):
                await handle
            raise
        if not handle.done():
            handle.cancel()
            with contextlib.suppress(ActivityError, asyncio.CancelledError):
                await handle
            raise _Stop()
        return handle.result()

    def _check_abort(self) -> None:
        if self.aborting:
            raise _Stop()

    async def _drill(self, input: RestoreDrillInput) -> None:
        report = self.report
        step = self.step_started("locate backup")
        backup = await (self._locate_dump(input) if input.kind == "pg_dump" else self._locate_snapshot(input))
        report.backup = backup
        await self.step_done(step, f"{backup.identifier} from {backup.created_at:%Y-%m-%d %H:%M:%S} UTC", notify=False)
        self._check_abort()

        step = self.step_started("restore")
        restore_start = workflow.now()
        report.restore_started_at = restore_start
        self._restore_started = True
        target = await (self._restore_dump(input) if input.kind == "pg_dump" else self._restore_snapshot(input))
        report.checks_endpoint = f"{target.server.host}:{target.server.port}/{target.database}"
        if input.kind == "rds_snapshot" and input.check_endpoint_override is not None:
            report.checks_endpoint += " (check_endpoint_override: local stand-in for the restored instance)"
        await self.step_done(step, f"scratch {report.scratch}", notify=False)
        self._check_abort()

        step = self.step_started("checks")
        measured = await workflow.execute_activity_method(
            DatabaseActivities.pg_run_checks,
            PgRunChecksInput(target=target, checks=input.checks, source=input.source,
                             statement_timeout_seconds=input.statement_timeout.total_seconds()),
            start_to_close_timeout=input.statement_timeout * max(1, len(input.checks)) + timedelta(minutes=1),
            heartbeat_timeout=input.statement_timeout + timedelta(minutes=1),
            retry_policy=LOCATE_RETRY,
        )
        by_name = {m.name: m for m in measured.measurements}
        manifest = self._manifest
        backup_time = manifest.backup_time if manifest and manifest.backup_time else backup.created_at
        report.checks += [evaluate_check(c, by_name.get(c.name), manifest, backup_time) for c in input.checks]
        if all(c.passed for c in report.checks):
            report.checks_passed_at = workflow.now()
            report.rto_achieved = _whole(report.checks_passed_at - restore_start)
            await self.step_done(step, f"{len(report.checks)} check(s) passed", notify=False)
        else:
            failed = [c.name for c in report.checks if not c.passed]
            self.step_failed(step, f"failed: {', '.join(failed)}")

    async def _locate_dump(self, input: RestoreDrillInput) -> BackupRef:
        prefix = input.dump_key or input.dump_prefix
        info = await workflow.execute_activity_method(
            S3Activities.s3_latest_object, S3LatestQuery(bucket=input.dump_bucket or "", prefix=prefix),
            start_to_close_timeout=timedelta(minutes=2), retry_policy=LOCATE_RETRY,
        )
        if input.dump_key and info.key != input.dump_key:
            raise ApplicationError(f"no backup found: dump s3://{input.dump_bucket}/{input.dump_key} does not exist", type=errors.NOT_FOUND)
        return BackupRef(
            kind="pg_dump", identifier=f"s3://{input.dump_bucket}/{info.key}", version_id=info.version_id,
            created_at=info.last_modified, size_bytes=info.size, age=_age(info.last_modified),
        )

    async def _locate_snapshot(self, input: RestoreDrillInput) -> BackupRef:
        snap = await workflow.execute_activity_method(
            RdsActivities.rds_latest_snapshot,
            RdsSnapshotQuery(instance_identifier=input.source_instance or "", region=input.region,
                             snapshot_identifier=input.snapshot_identifier, kinds=list(input.snapshot_kinds)),
            start_to_close_timeout=timedelta(minutes=2), retry_policy=LOCATE_RETRY,
        )
        return BackupRef(kind="rds_snapshot", identifier=snap.identifier, created_at=snap.created_at,
                         age=_age(snap.created_at))

    async def _restore_dump(self, input: RestoreDrillInput) -> PgDatabaseRef:
        assert input.restore_server is not None and self.report.backup is not None
        key = self.report.backup.identifier.split("/", 3)[3]
        self.report.scratch = self._scratch_db
        result = await self._abortable(workflow.start_activity_method(
            DatabaseActivities.pg_restore_dump,
            PgRestoreDumpInput(
                server=input.restore_server, database=self._scratch_db, bucket=input.dump_bucket or "", key=key,
                version_id=self.report.backup.version_id,
                manifest_key=input.manifest_key_template.format(key=key) if input.manifest_key_template else None,
                jobs_timeout_seconds=input.restore_timeout.total_seconds(),
            ),
            start_to_close_timeout=input.restore_timeout,
            heartbeat_timeout=input.heartbeat_timeout,
            retry_policy=RESTORE_RETRY,
            # wait for pg_restore to be stopped before clean-up drops the database under it
            cancellation_type=ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
        ))
        self._manifest = result.manifest
        if result.manifest and result.manifest.backup_time and self.report.backup:
            self.report.backup.created_at = result.manifest.backup_time
            self.report.backup.age = _age(result.manifest.backup_time)
        if not result.ok:
            self.report.checks.append(CheckResult(
                name="pg_restore", kind="restore", passed=False, value=result.exit_code, expected=0,
                detail="; ".join(result.errors[-5:]) or f"pg_restore exited {result.exit_code}",
            ))
        return PgDatabaseRef(server=input.restore_server, database=self._scratch_db)

    async def _restore_snapshot(self, input: RestoreDrillInput) -> PgDatabaseRef:
        assert self.report.backup is not None
        self.report.scratch = self._scratch_rds
        await workflow.execute_activity_method(
            RdsActivities.rds_restore_snapshot,
            RdsRestoreInput(snapshot_identifier=self.report.backup.identifier, target_identifier=self._scratch_rds,
                            region=input.region, instance_class=input.instance_class),
            start_to_close_timeout=timedelta(minutes=5), retry_policy=RESTORE_RETRY,
        )
        instance = await self._abortable(workflow.start_activity_method(
            RdsActivities.rds_wait_available,
            RdsWaitInput(identifier=self._scratch_rds, region=input.region,
                         deadline_seconds=input.restore_timeout.total_seconds(),
                         poll_seconds=input.poll_interval.total_seconds()),
            start_to_close_timeout=input.restore_timeout + timedelta(minutes=5),
            schedule_to_close_timeout=input.restore_timeout + timedelta(minutes=10),
            heartbeat_timeout=input.poll_interval + input.heartbeat_timeout,
            retry_policy=WAIT_RETRY,
            cancellation_type=ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
        ))
        override = input.check_endpoint_override
        if override is not None:
            self.report.scratch = f"{self._scratch_rds} (+ database {self._scratch_db})"
            await workflow.execute_activity_method(
                DatabaseActivities.pg_clone_database,
                PgCloneInput(server=override.server, template=override.template_database, database=self._scratch_db),
                start_to_close_timeout=timedelta(minutes=10), retry_policy=RESTORE_RETRY,
            )
            return PgDatabaseRef(server=override.server, database=self._scratch_db)
        if not instance.endpoint:
            raise ApplicationError(f"restored instance {self._scratch_rds} has no endpoint", type=errors.VERIFICATION_FAILED)
        server = PgServer(host=instance.endpoint, port=instance.port or 5432, maintenance_db=input.rds_database,
                          vault_path=input.rds_vault_path or "", sslmode="require")
        return PgDatabaseRef(server=server, database=input.rds_database)

    # ------------------------------------------------------------------------------------------------ clean-up
    async def _cleanup(self, input: RestoreDrillInput) -> None:
        if not self._restore_started:
            return
        step = self.step_started("clean up")
        jobs: list[tuple[str, Any, Any]] = []
        if input.kind == "pg_dump" and input.restore_server is not None:
            jobs.append((f"database {self._scratch_db}", DatabaseActivities.pg_drop_database,
                         PgScratchInput(server=input.restore_server, database=self._scratch_db)))
        if input.kind == "rds_snapshot":
            jobs.append((f"instance {self._scratch_rds}", RdsActivities.rds_delete_instance,
                         RdsInstanceRef(identifier=self._scratch_rds, region=input.region)))
            if input.check_endpoint_override is not None:
                jobs.append((f"database {self._scratch_db}", DatabaseActivities.pg_drop_database,
                             PgScratchInput(server=input.check_endpoint_override.server, database=self._scratch_db)))
        problems = []
        for what, method, arg in jobs:
            try:
                result = await workflow.execute_activity_method(
                    method, arg, start_to_close_timeout=timedelta(minutes=5), retry_policy=CLEANUP_RETRY,
                )
                self.report.cleanup.append(f"{what}: {'removed' if result.existed else 'already gone'}")
            except ActivityError as err:
                problems.append(f"clean-up of {what} failed, remove it by hand: {_explain(err)}")
        self.report.cleanup += problems
        self.report.failures += problems
        if problems:
            self.step_failed(step, "; ".join(problems))
        else:
            await self.step_done(step, "; ".join(self.report.cleanup), notify=False)

    # ------------------------------------------------------------------------------------------------ judging
    def _judge(self) -> None:
        r = self.report
        for check in r.checks:
            if not check.passed:
                r.failures.append(f"check {check.name} failed: {check.detail}")
        newest = newest_write([c for c in r.checks if c.kind == "freshness"], r.checks)
        r.newest_write = newest
        if r.backup is not None and r.checks:
            if newest is None:
                r.failures.append("RPO not measured: declare a freshness check on a timestamp column")
            else:
                r.rpo_achieved = _whole(max(timedelta(0), as_utc(r.backup.created_at) - newest))
                r.rpo_met = r.rpo_achieved <= r.rpo_target
                if not r.rpo_met:
                    r.failures.append(f"RPO breach: {format_duration(r.rpo_achieved)} of writes missing "
                                      f"(target {format_duration(r.rpo_target)})")
        if r.rto_achieved is not None:
            r.rto_met = r.rto_achieved <= r.rto_target
            if not r.rto_met:
                r.failures.append(f"RTO breach: restore and checks took {format_duration(_whole(r.rto_achieved))} "
                                  f"(target {format_duration(r.rto_target)})")
        elif r.restore_started_at is not None and not r.failures:
            r.failures.append("RTO not measured: the checks did not complete")
        r.passed = not r.failures

    async def _write_report(self, input: RestoreDrillInput) -> None:
        r = self.report
        stamp = r.started_at.strftime("%Y%m%dT%H%M%SZ")
        key = f"{input.report_prefix}{input.database}/{stamp}-{r.workflow_id}.json"
        r.report_uri = f"s3://{input.report_bucket}/{key}"
        try:
            ref = await workflow.execute_activity_method(
                S3Activities.s3_put_json,
                S3PutJsonInput(bucket=input.report_bucket, key=key, document=r.model_dump(mode="json"), ensure_versioned=True),
                start_to_close_timeout=timedelta(minutes=2), retry_policy=LOCATE_RETRY,
            )
            if ref.version_id:
                r.report_uri += f"?versionId={ref.version_id}"
        except ActivityError as err:
            r.report_uri = None
            r.failures.append(f"report not written: {_explain(err)}")
            r.passed = False


def _explain(err: ActivityError | ApplicationError) -> str:
    if isinstance(err, ApplicationError):
        return err.message
    cause = err.cause
    message = getattr(cause, "message", None) or str(cause or err)
    kind = getattr(cause, "type", None)
    if kind == errors.NOT_FOUND and err.activity_type in ("s3_latest_object", "rds_latest_snapshot"):
        return f"no backup found: {message}"
    return f"{err.activity_type}: {message}"


def _age(created_at: datetime) -> timedelta:
    return _whole(max(timedelta(0), workflow.now() - as_utc(created_at)))


def _whole(value: timedelta) -> timedelta:
    return timedelta(seconds=round(value.total_seconds()))


def _summary(r: RestoreReport) -> str:
    parts = [f"{'PASSED' if r.passed else 'FAILED'}: {r.database}"]
    if r.backup:
        parts.append(f"backup {r.backup.identifier}")
    passed = sum(c.passed for c in r.checks)
    parts.append(f"checks {passed}/{len(r.checks)}")
    rpo = format_duration(_whole(r.rpo_achieved)) if r.rpo_achieved is not None else "n/a"
    rto = format_duration(_whole(r.rto_achieved)) if r.rto_achieved is not None else "n/a"
    parts.append(f"RPO {rpo} (target {format_duration(r.rpo_target)})")
    parts.append(f"RTO {rto} (target {format_duration(r.rto_target)})")
    if r.failures:
        parts.append("failures: " + "; ".join(r.failures))
    return ", ".join(parts)
