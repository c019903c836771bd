"""Backup restore drill: restore the newest backup to a scratch target, verify it, measure RPO and RTO, clean up.

Two backup kinds, one workflow:
- ``pg_dump``: the newest ``pg_dump -Fc`` object under an S3 prefix is streamed into ``pg_restore`` (one activity)
  into a scratch database on ``restore_server``;
- ``rds_snapshot``: the newest (or a named) snapshot of ``source_instance`` is restored to a scratch instance,
  waited for, and checked. ``check_endpoint_override`` runs the SQL checks against a clone of a local database
  instead of the restored endpoint (moto has no database engine behind RDS; never set it in production).

The procedure reads top to bottom: validate (read-only) -> locate backup -> restore [-> wait for instance -> clone]
-> checks (judged by ``core.restore.judge``) -> clean up. It ends the platform's one way (``conduct``/``conclude``):
- Refused: the database name is blank, or the bucket / source instance / pinned backup does not exist; found by
  read-only calls before anything is restored, so nothing was changed (no report, no page);
- Failed: the drill proved the backup unsafe (no backup, a failed restore or check, an RPO or RTO breach), or the
  scratch could not be removed (``not_undone``); the report is written, an alert raised, and the workflow fails
  with ``RunFailed`` whose details carry the result (and in it the report);
- Aborted: an abort or a cancellation, at any step (docs/restore.md has the table); the scratch is removed;
- Succeeded: the backup restored, every check passed, RPO and RTO met, the scratch removed, the report written.

Scratch identifiers derive from the workflow id, so a retried activity or a replayed run finds its own scratch
(and a leftover of its own is replaced, never duplicated). The one compensation block removes the scratch; on the
way to success the same clean-up is the procedure's last step.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any, Awaitable, Callable, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError
from temporalio.workflow import ActivityCancellationType

with workflow.unsafe.imports_passed_through():
    from activities.aws import RdsActivities, S3Activities
    from activities.database import DatabaseActivities
    from core import errors
    from core.approval import AbortInput
    from core.aws import (
        RdsDeleteInput,
        RdsInstanceRef,
        RdsRestoreInput,
        RdsSnapshotQuery,
        RdsWaitInput,
        S3BucketRef,
        S3LatestQuery,
        S3PutJsonInput,
    )
    from core.duration import format_duration
    from core.restore import (  # the runbook's contract (input, result) is re-exported: the workflow's own types
        BackupRef,
        CheckResult,
        PgCloneInput,
        PgDatabaseRef,
        PgRestoreDumpInput,
        PgRunChecksInput,
        PgScratchInput,
        PgServer,
        RestoreDrillInput,
        RestoreDrillResult,
        RestoreManifest,
        RestoreReport,
        as_utc,
        evaluate_check,
        judge,
        scratch_name,
        targets_for,
        whole,
    )
    from core.runbook import RunStatus, StepRecord
    from workflows.base import Ending, RunbookWorkflow, Stop, cause_of, until_done


T = TypeVar("T")

LOCATE_RETRY = RetryPolicy(initial_interval=timedelta(seconds=5), maximum_attempts=5, non_retryable_error_types=errors.NON_RETRYABLE)
RESTORE_RETRY = RetryPolicy(initial_interval=timedelta(seconds=10), maximum_attempts=3, non_retryable_error_types=errors.NON_RETRYABLE)
WAIT_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=30), backoff_coefficient=2, maximum_interval=timedelta(minutes=5),
    non_retryable_error_types=errors.NON_RETRYABLE,
)
CLEANUP_RETRY = RetryPolicy(initial_interval=timedelta(seconds=5), maximum_interval=timedelta(minutes=1), maximum_attempts=10,
                            non_retryable_error_types=[errors.INVALID_INPUT, errors.ACCESS_DENIED])
# What a read-only validation call can say about a target a person named: it is not there, or not ours to read.
REFUSING_ERRORS = (errors.NOT_FOUND, errors.ACCESS_DENIED, errors.INVALID_INPUT)
NOTHING_CHANGED = "nothing was changed"


@workflow.defn
class RestoreDrill(RunbookWorkflow):
    @workflow.init
    def __init__(self, input: RestoreDrillInput) -> None:
        super().__init__(input.meta, input.carry)
        info = workflow.info()
        rpo, rto = targets_for(input.tier, input.rpo_target, input.rto_target)
        self.report = RestoreReport(
            workflow_id=info.workflow_id, run_id=info.run_id, database=input.database, kind=input.kind,
            tier=input.tier, started_at=workflow.now(), rpo_target=rpo, rto_target=rto,
        )
        self._scratch_db = scratch_name(info.workflow_id, kind="database")
        self._scratch_rds = scratch_name(info.workflow_id, kind="rds")
        self._manifest: RestoreManifest | None = None
        # what exists (or may exist) and must be removed: set BEFORE the call that creates it
        self._restore_started = False
        self._clone_started = False
        self._cleaned: tuple[list[str], list[str]] | None = None  # (removed, left behind) once clean-up ran
        self._verdict_failed = False  # the drill ended on its own verdict (checks, RPO, RTO): failures say why
        self._cancelled_at_report = False

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
        await self.notify(
            "started", f"Restore drill of {input.database} ({input.kind})",
            f"RPO target {format_duration(self.report.rpo_target)}, RTO target {format_duration(self.report.rto_target)}",
        )
        ending = await self.conduct(lambda: self._drill(input), lambda e: self._compensate(input, e), failed_step="Failed")
        await self._report(input, ending)
        status = ending.final_status
        summary = _summary(self.report, status)
        if status == "Failed":
            await self.notify(
                "alert", f"Restore drill FAILED: {input.database}", summary, severity="error",
                fields={"failures": "; ".join(self.report.failures)[:1000], "report": self.report.report_uri or "not written"},
            )
        return await self.conclude(
            ending, lambda common: RestoreDrillResult(**{**common, "summary": summary}, report=self.report)
        )

    # ------------------------------------------------------------------------------------------------ the drill
    async def _drill(self, input: RestoreDrillInput) -> Ending:
        report = self.report
        await self._validate(input)

        step = self.step_started("locate backup")
        backup = await (self._locate_dump(input, step) if input.kind == "pg_dump" else self._locate_snapshot(input, step))
        report.backup = backup
        await self.step_done(step, f"{backup.identifier} from {backup.created_at:%Y-%m-%d %H:%M:%S} UTC", notify=False)

        target = await (self._restore_dump(input) if input.kind == "pg_dump" else self._restore_snapshot(input))
        report.checks_endpoint = f"{target.server.host}:{target.server.port}/{target.database}"
        if input.kind == "rds_snapshot" and input.check_endpoint_override is not None:
            report.checks_endpoint += " (check_endpoint_override: local stand-in for the restored instance)"

        await self._checks(input, target)
        self.report = report = judge(report)
        if not report.passed:
            self._verdict_failed = True
            raise Stop("Failed", "drill failed: " + "; ".join(report.failures), severity="error")

        removed, left = await self._finished("clean up", lambda: self._remove_scratch(input))
        verdict = (f"{report.backup.identifier if report.backup else '?'} restored and verified: "
                   f"{len(report.checks)} check(s) passed, RPO {_fmt(report.rpo_achieved)}, RTO {_fmt(report.rto_achieved)}")
        return Ending("Succeeded", verdict, not_undone=left)

    async def _validate(self, input: RestoreDrillInput) -> None:
        """Read-only: every target a person named exists, before anything is restored."""
        step = self.step_started("validate")
        named: dict[str, str | None] = {"database": input.database, "report_bucket": input.report_bucket}
        if input.kind == "pg_dump":
            named["dump_bucket"] = input.dump_bucket
        elif not input.snapshot_identifier:
            named["source_instance"] = input.source_instance
        blank = [name for name, value in named.items() if not (value or "").strip()]
        if blank:
            self._refuse(step, f"{' and '.join(blank)} {'is' if len(blank) == 1 else 'are'} blank")
        if input.kind == "pg_dump":
            bucket = input.dump_bucket or ""
            try:
                found = await self._stoppable("validate", lambda: workflow.execute_activity_method(
                    S3Activities.s3_bucket_exists, S3BucketRef(bucket=bucket),
                    start_to_close_timeout=timedelta(minutes=1), retry_policy=LOCATE_RETRY,
                ))
            except ActivityError as err:
                self._refuse_on(step, err, f"cannot read backup bucket s3://{bucket}")
                raise
            if not found.exists:
                self._refuse(step, f"backup bucket s3://{bucket} does not exist")
            detail = f"bucket s3://{bucket} exists"
        elif input.snapshot_identifier:
            detail = f"snapshot {input.snapshot_identifier} pinned (checked when located)"
        else:
            instance = input.source_instance or ""
            try:
                source = await self._stoppable("validate", lambda: workflow.execute_activity_method(
                    RdsActivities.rds_describe_instance, RdsInstanceRef(identifier=instance, region=input.region),
                    start_to_close_timeout=timedelta(minutes=1), retry_policy=LOCATE_RETRY,
                ))
            except ActivityError as err:
                self._refuse_on(step, err, f"cannot describe RDS instance {instance} in {input.region}")
                raise
            if not source.exists:
                self._refuse(step, f"source RDS instance {instance} does not exist in {input.region}")
            detail = f"source instance {instance} exists"
        await self.step_done(step, detail, notify=False)

    def _refuse(self, step: StepRecord, why: str) -> None:
        self.step_failed(step, why)
        raise Stop("Refused", f"{why}: {NOTHING_CHANGED}", severity="warning")

    def _refuse_on(self, step: StepRecord, err: ActivityError, what: str) -> None:
        if _kind(err) in REFUSING_ERRORS:
            self._refuse(step, f"{what}: {_message(err)}")

    async def _locate_dump(self, input: RestoreDrillInput, step: StepRecord) -> BackupRef:
        prefix = input.dump_key or input.dump_prefix
        try:
            info = await self._stoppable("locate backup", lambda: workflow.execute_activity_method(
                S3Activities.s3_latest_object, S3LatestQuery(bucket=input.dump_bucket or "", prefix=prefix),
                start_to_close_timeout=timedelta(minutes=2), retry_policy=LOCATE_RETRY,
            ))
        except ActivityError as err:
            if _kind(err) == errors.NOT_FOUND:
                self._no_backup(input, step, _message(err))
            raise
        if input.dump_key and info.key != input.dump_key:
            self._no_backup(input, step, f"dump s3://{input.dump_bucket}/{input.dump_key} does not exist")
        return BackupRef(
            kind="pg_dump", identifier=f"s3://{input.dump_bucket}/{info.key}", version_id=info.version_id,
            created_at=info.last_modified, size_bytes=info.size, age=_age(info.last_modified),
        )

    async def _locate_snapshot(self, input: RestoreDrillInput, step: StepRecord) -> BackupRef:
        try:
            snap = await self._stoppable("locate backup", lambda: workflow.execute_activity_method(
                RdsActivities.rds_latest_snapshot,
                RdsSnapshotQuery(instance_identifier=input.source_instance or "", region=input.region,
                                 snapshot_identifier=input.snapshot_identifier, kinds=list(input.snapshot_kinds)),
                start_to_close_timeout=timedelta(minutes=2), retry_policy=LOCATE_RETRY,
            ))
        except ActivityError as err:
            if _kind(err) == errors.NOT_FOUND:
                self._no_backup(input, step, _message(err))
            raise
        return BackupRef(kind="rds_snapshot", identifier=snap.identifier, created_at=snap.created_at,
                         age=_age(snap.created_at))

    def _no_backup(self, input: RestoreDrillInput, step: StepRecord, why: str) -> None:
        """A pinned backup that is not there is a mistake in the input (Refused); no backup at all under the prefix
        or of the instance is what the drill exists to find (Failed, with an alert)."""
        self.step_failed(step, why)
        pinned = input.dump_key if input.kind == "pg_dump" else input.snapshot_identifier
        if pinned:
            raise Stop("Refused", f"the pinned backup does not exist: {why}: {NOTHING_CHANGED}", severity="warning")
        raise Stop("Failed", f"no backup found: {why}", severity="error")

    async def _restore_dump(self, input: RestoreDrillInput) -> PgDatabaseRef:
        backup = self.report.backup
        assert input.restore_server is not None and backup is not None
        key = backup.identifier.split("/", 3)[3]
        step = self.step_started("restore", f"into scratch database {self._scratch_db}")
        self.check_abort("restore")
        self.report.scratch = self._scratch_db
        self.report.restore_started_at = workflow.now()
        self._restore_started = True
        # An abort or a cancellation stops pg_restore and waits until it has stopped; compensation then drops the
        # scratch database (never under a pg_restore still writing into it).
        result = await self._stoppable("restore", lambda: workflow.start_activity_method(
            DatabaseActivities.pg_restore_dump,
            PgRestoreDumpInput(
                server=input.restore_server, database=self._scratch_db, bucket=input.dump_bucket or "", key=key,
                version_id=backup.version_id,
                manifest_key=input.manifest_key_template.format(key=key) if input.manifest_key_template else None,
                jobs_timeout_seconds=input.restore_timeout.total_seconds(),
            ),
            start_to_close_timeout=input.restore_timeout,
            heartbeat_timeout=input.heartbeat_timeout,
            retry_policy=RESTORE_RETRY,
            cancellation_type=ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
        ))
        self._manifest = result.manifest
        if result.manifest and result.manifest.backup_time and self.report.backup:
            self.report.backup.created_at = result.manifest.backup_time
            self.report.backup.age = _age(result.manifest.backup_time)
        if result.ok:
            await self.step_done(step, f"scratch {self._scratch_db}", notify=False)
        else:  # the declared checks still run on what was restored, so the report shows what is missing
            self.report.checks.append(CheckResult(
                name="pg_restore", kind="restore", passed=False, value=result.exit_code, expected=0,
                detail="; ".join(result.errors[-5:]) or f"pg_restore exited {result.exit_code}",
            ))
            self.step_failed(step, f"pg_restore exited {result.exit_code}")
        return PgDatabaseRef(server=input.restore_server, database=self._scratch_db)

    async def _restore_snapshot(self, input: RestoreDrillInput) -> PgDatabaseRef:
        backup = self.report.backup
        assert backup is not None
        step = self.step_started("restore", f"snapshot {backup.identifier} to {self._scratch_rds}")
        self.check_abort("restore")
        self.report.scratch = self._scratch_rds
        self.report.restore_started_at = workflow.now()
        self._restore_started = True
        # The restore call is a change: once started it finishes (compensation then deletes the instance).
        await self._finished("restore", lambda: workflow.execute_activity_method(
            RdsActivities.rds_restore_snapshot,
            RdsRestoreInput(snapshot_identifier=backup.identifier, target_identifier=self._scratch_rds,
                            region=input.region, instance_class=input.instance_class),
            start_to_close_timeout=timedelta(minutes=5), retry_policy=RESTORE_RETRY,
        ))
        await self.step_done(step, f"scratch instance {self._scratch_rds} requested", notify=False)

        step = self.step_started("wait for instance", self._scratch_rds)
        instance = await self._stoppable("wait for instance", lambda: workflow.start_activity_method(
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
        await self.step_done(step, f"{instance.identifier} {instance.status}", notify=False)

        override = input.check_endpoint_override
        if override is not None:
            step = self.step_started("clone", f"database {self._scratch_db} from {override.template_database}")
            self.check_abort("clone")
            self.report.scratch = f"{self._scratch_rds} (+ database {self._scratch_db})"
            self._clone_started = True
            await self._finished("clone", lambda: workflow.execute_activity_method(
                DatabaseActivities.pg_clone_database,
                PgCloneInput(server=override.server, template=override.template_database, database=self._scratch_db),
                start_to_close_timeout=timedelta(minutes=10), retry_policy=RESTORE_RETRY,
            ))
            await self.step_done(step, notify=False)
            return PgDatabaseRef(server=override.server, database=self._scratch_db)
        if not instance.endpoint:
            raise Stop("Failed", f"restored instance {self._scratch_rds} has no endpoint", severity="error")
        server = PgServer(host=instance.endpoint, port=instance.port or 5432, maintenance_db=input.rds_database,
                          vault_path=input.rds_vault_path or "", sslmode="require")
        return PgDatabaseRef(server=server, database=input.rds_database)

    async def _checks(self, input: RestoreDrillInput, target: PgDatabaseRef) -> None:
        report = self.report
        step = self.step_started("checks", f"{len(input.checks)} declared")
        measured = await self._stoppable("checks", lambda: workflow.start_activity_method(
            DatabaseActivities.pg_run_checks,
            PgRunChecksInput(target=target, checks=input.checks, source=input.source,
                             statement_timeout_seconds=input.statement_timeout.total_seconds()),
            start_to_close_timeout=input.statement_timeout * max(1, len(input.checks)) + timedelta(minutes=1),
            heartbeat_timeout=input.statement_timeout + timedelta(minutes=1),
            retry_policy=LOCATE_RETRY,
        ))
        by_name = {m.name: m for m in measured.measurements}
        manifest = self._manifest
        assert report.backup is not None
        backup_time = manifest.backup_time if manifest and manifest.backup_time else report.backup.created_at
        report.checks += [evaluate_check(c, by_name.get(c.name), manifest, backup_time) for c in input.checks]
        if all(c.passed for c in report.checks):
            report.checks_passed_at = workflow.now()
            assert report.restore_started_at is not None
            report.rto_achieved = whole(report.checks_passed_at - report.restore_started_at)
            await self.step_done(step, f"{len(report.checks)} check(s) passed", notify=False)
        else:
            self.step_failed(step, "failed: " + ", ".join(c.name for c in report.checks if not c.passed))

    async def _stoppable(self, where: str, start: Callable[[], Awaitable[T]]) -> T:
        """A read or a wait that an abort cuts short (``interruptible``); not even started after an abort."""
        self.check_abort(where)
        return await self.interruptible(start(), where)

    async def _finished(self, where: str, start: Callable[[], Awaitable[T]]) -> T:
        """A change: not started after an abort, finished once started, the abort honoured after it (``change``)."""
        self.check_abort(where)
        return await self.change(start(), where)

    # ------------------------------------------------------------------------------------------------ compensation
    async def _compensate(self, input: RestoreDrillInput, ending: Ending) -> None:
        """The one compensation block: remove the scratch (unless the procedure's own clean-up already did)."""
        removed, left = await self._remove_scratch(input)
        ending.compensated += removed
        ending.not_undone += [item for item in left if item not in ending.not_undone]

    async def _remove_scratch(self, input: RestoreDrillInput) -> tuple[list[str], list[str]]:
        """Remove every scratch object this run may have created; idempotent, runs once. Returns (removed, left)."""
        if self._cleaned is not None:
            return self._cleaned
        if not self._restore_started:
            self._cleaned = ([], [])
            return self._cleaned
        step = self.step_started("clean up")
        jobs: list[tuple[str, Any, Any]] = []
        if input.kind == "pg_dump" and input.restore_server is not None:
            jobs.append((f"scratch database {self._scratch_db} on {input.restore_server.host}",
                         DatabaseActivities.pg_drop_database,
                         PgScratchInput(server=input.restore_server, database=self._scratch_db)))
        if input.kind == "rds_snapshot":
            jobs.append((f"scratch RDS instance {self._scratch_rds} in {input.region}", RdsActivities.rds_delete_instance,
                         RdsDeleteInput(identifier=self._scratch_rds, region=input.region)))
            if self._clone_started and input.check_endpoint_override is not None:
                jobs.append((f"scratch database {self._scratch_db} on {input.check_endpoint_override.server.host}",
                             DatabaseActivities.pg_drop_database,
                             PgScratchInput(server=input.check_endpoint_override.server, database=self._scratch_db)))
        removed: list[str] = []
        left: list[str] = []
        for what, method, arg in jobs:
            try:
                result = await workflow.execute_activity_method(
                    method, arg, start_to_close_timeout=timedelta(minutes=5), retry_policy=CLEANUP_RETRY,
                )
                removed.append(f"{what} {'removed' if result.existed else 'already gone'}")
            except ActivityError as err:
                left.append(f"{what} could not be removed, remove it by hand: {_message(err)}")
        self._cleaned = (removed, left)
        self.report.cleanup += removed + left
        self.report.failures += left
        if left:
            self.step_failed(step, "; ".join(left))
        else:
            await self.step_done(step, "; ".join(removed), notify=False)
        return self._cleaned

    # ------------------------------------------------------------------------------------------------ the report
    async def _report(self, input: RestoreDrillInput, ending: Ending) -> None:
        """Close the report with the ending and write it (not for a refused drill: nothing was done to report).
        Runs to its end even if the run is cancelled meanwhile: the scratch is already gone, nothing is left to stop.
        An abort or a cancel that arrives while a passed drill's report is written ends the run Aborted like an
        abort at any other step: the write finishes, and the report is written again saying so."""
        r = self.report
        self._close_report(ending)
        if ending.status == "Refused":
            return
        step = self.step_started("report")
        written = await self._write_to_end(input)
        if ending.status == "Succeeded" and self.aborting:  # an abort during a passed drill's report ends it Aborted
            stopped = "cancelled at report: treated as an abort" if self._cancelled_at_report \
                else self.abort_stop("report").ending.summary
            ending.status, ending.summary = "Aborted", f"{stopped} (the drill itself had passed: {ending.summary})"
            self._close_report(ending)
            written = await self._write_to_end(input)
        if written:
            await self.step_done(step, r.report_uri or "", notify=False)
            return
        self.step_failed(step, r.failures[-1])
        if ending.status == "Succeeded":  # a drill without its evidence has not proved anything
            ending.status = "Failed"
            ending.summary += f"; {r.failures[-1]}"

    def _close_report(self, ending: Ending) -> None:
        r = self.report
        if ending.status != "Succeeded" and not self._verdict_failed:
            r.failures.insert(0, ending.summary)
        r.passed = ending.final_status == "Succeeded" and not r.failures

    async def _write_to_end(self, input: RestoreDrillInput) -> bool:
        """Write the report, shielded: a cancellation meanwhile is recorded as an abort (by ``temporal``)."""
        task = asyncio.ensure_future(self._write_report(input))
        if await until_done(task):
            self._cancelled_at_report = True
            self.request_abort(AbortInput(requested_by="temporal", reason="the workflow was cancelled"))
        return task.result()

    async def _write_report(self, input: RestoreDrillInput) -> bool:
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
        except ActivityError as err:
            r.report_uri = None
            r.failures.append(f"report not written: {_message(err)}")
            r.passed = False
            return False
        if ref.version_id:
            r.report_uri += f"?versionId={ref.version_id}"
        return True

def _kind(err: ActivityError) -> str | None:
    """The type of the error the activity itself raised (``error_type`` would go on to what it was raised from)."""
    return getattr(err.cause, "type", None)


def _message(err: ActivityError) -> str:
    """The message of the error the activity itself raised: it says what the activity was doing."""
    return getattr(err.cause, "message", None) or cause_of(err)


def _age(created_at: datetime) -> timedelta:
    return whole(max(timedelta(0), workflow.now() - as_utc(created_at)))


def _fmt(value: timedelta | None) -> str:
    return format_duration(whole(value)) if value is not None else "n/a"


def _summary(r: RestoreReport, status: RunStatus) -> str:
    word = {"Succeeded": "PASSED", "Failed": "FAILED"}.get(status, str(status).upper())
    parts = [f"{word}: {r.database}"]
    if r.backup:
        parts.append(f"backup {r.backup.identifier}")
    passed = sum(c.passed for c in r.checks)
    parts.append(f"checks {passed}/{len(r.checks)}")
    parts.append(f"RPO {_fmt(r.rpo_achieved)} (target {format_duration(r.rpo_target)})")
    parts.append(f"RTO {_fmt(r.rto_achieved)} (target {format_duration(r.rto_target)})")
    if r.failures:
        parts.append("failures: " + "; ".join(r.failures))
    return ", ".join(parts)
