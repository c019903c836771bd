"""The RestoreDrill workflow end to end on the time-skipping server, with real PostgreSQL/pg_restore, moto and OpenBao.

Stand-ins (registered under the real activity names) appear only where the test is about the workflow's reaction to
something the real systems cannot produce here: slow RDS availability, a transient failure after a restore started,
a restore long enough to cancel.
"""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from temporalio import activity
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import ApplicationError, CancelledError
from temporalio.worker import Replayer

from activities.aws import AwsClients, RdsActivities, S3Activities
from activities.database import DatabaseActivities
from core import errors
from core.approval import AbortInput, ApprovalPolicy
from core.aws import RdsRestoreInput, RdsWaitInput
from core.restore import CheckEndpointOverride, PgDropResult, PgRestoreDumpInput, PgRestoreDumpResult, PgScratchInput
from core.runbook import RunbookMeta
from tests import aws_session, harness
from tests.restore.conftest import DUMP_BUCKET, REPORT_BUCKET, database_exists, upload_dump
from workflows.restore_drill import RestoreDrill, RestoreDrillInput, RestoreDrillResult

CHECKS = [
    {"kind": "tables_present", "tables": ["orders", "customers"]},
    {"kind": "row_count", "table": "orders", "baseline": "manifest"},
    {"kind": "row_count", "table": "customers", "baseline": "manifest"},
    {"kind": "checksum", "name": "orders_checksum",
     "query": "SELECT md5(string_agg(id || ':' || amount, ',' ORDER BY id)) FROM orders"},
    {"kind": "assert", "name": "every order has a customer",
     "sql": "SELECT NOT EXISTS (SELECT 1 FROM orders o LEFT JOIN customers c ON c.id = o.customer_id WHERE c.id IS NULL)"},
    {"kind": "freshness", "table": "orders", "column": "updated_at"},
]


def meta() -> RunbookMeta:
    return RunbookMeta(runbook="restore-drill", target="shop", requested_by="tester",
                       approval=ApprovalPolicy(required_approvals=0))


def dump_input(pg_server, **kw) -> RestoreDrillInput:
    data = dict(meta=meta(), database="shop", dump_bucket=DUMP_BUCKET, dump_prefix="shop/",
                restore_server=pg_server, report_bucket=REPORT_BUCKET, checks=CHECKS)
    data.update(kw)
    return RestoreDrillInput.model_validate(data)


def scratch_of(workflow_id: str) -> str:
    from core.restore import scratch_name

    return scratch_name(workflow_id, kind="database")


def activities_for(db: DatabaseActivities, recording, **replace):
    clients = AwsClients(aws_session.session())
    rds, s3 = RdsActivities(clients), S3Activities(clients)
    acts = {
        "s3_latest_object": s3.s3_latest_object, "s3_put_json": s3.s3_put_json,
        "rds_latest_snapshot": rds.rds_latest_snapshot, "rds_restore_snapshot": rds.rds_restore_snapshot,
        "rds_wait_available": rds.rds_wait_available, "rds_delete_instance": rds.rds_delete_instance,
        "pg_restore_dump": db.pg_restore_dump, "pg_clone_database": db.pg_clone_database,
        "pg_drop_database": db.pg_drop_database, "pg_run_checks": db.pg_run_checks,
        "s3_bucket_exists": s3.s3_bucket_exists, "rds_describe_instance": rds.rds_describe_instance,
        "notify": recording[1].notify,
    }
    acts.update(replace)
    return list(acts.values())


async def run_drill(ts_env, task_queue, acts, input: RestoreDrillInput, workflow_id: str | None = None, histories=None):
    workflow_id = workflow_id or f"restore-drill-{uuid.uuid4().hex[:8]}"
    async with harness.running_worker(ts_env.client, task_queue, [RestoreDrill], acts):
        handle = await ts_env.client.start_workflow(RestoreDrill.run, input, id=workflow_id, task_queue=task_queue)
        try:
            return workflow_id, await handle.result(), None
        except WorkflowFailureError as err:
            return workflow_id, None, err
        finally:
            if histories is not None:
                histories.append(await handle.fetch_history())


def failed_result(err: WorkflowFailureError | None) -> dict:
    """A Failed drill fails the workflow with RunFailed; its details carry the result (and in it the report)."""
    assert err is not None, "the drill should have failed"
    cause = err.cause
    assert isinstance(cause, ApplicationError) and cause.type == errors.RUN_FAILED, cause
    result = cause.details[0]
    assert result["status"] == "Failed"
    return result


def failure_report(err: WorkflowFailureError | None) -> dict:
    return failed_result(err)["report"]


def stored_report(s3, uri: str) -> dict:
    bucket, key = uri.removeprefix("s3://").split("?")[0].split("/", 1)
    return json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())


# ------------------------------------------------------------------------------------------------------- pg_dump
async def test_healthy_dump_restore_passes(ts_env, task_queue, recording, db_activities, s3, source_db, fresh_dump, pg_server, admin_uri):
    backup_time = datetime.now(timezone.utc)
    upload_dump(s3, "shop/2026-11-22T0300.dump", fresh_dump)
    s3.put_object(Bucket=DUMP_BUCKET, Key="manifests/shop/2026-11-22T0300.dump.json",
                  Body=json.dumps(source_db.manifest(backup_time)).encode())
    histories: list = []
    wf_id, result, err = await run_drill(ts_env, task_queue, activities_for(db_activities, recording), dump_input(pg_server),
                                         histories=histories)
    assert err is None, err and err.cause
    assert isinstance(result, RestoreDrillResult) and result.status == "Succeeded"
    # deterministic: the recorded history replays against today's code; the credentials never entered it
    await Replayer(workflows=[RestoreDrill], data_converter=harness.DATA_CONVERTER).replay_workflow(histories[0])
    await harness.save_history(histories[0], "restore-healthy_dump_restore_passes")
    payloads = await harness.decoded_payload_bytes(histories[0])  # payloads are encrypted in history: decrypt first
    assert b"secret/db/restore-drill" in payloads and b"not-checked-by-trust-auth" not in payloads
    report = result.report
    assert report.passed and report.failures == []
    assert report.backup.identifier == f"s3://{DUMP_BUCKET}/shop/2026-11-22T0300.dump"
    assert [c.name for c in report.checks] == [
        "tables_present", "row_count:orders", "row_count:customers", "orders_checksum",
        "every order has a customer", "freshness:orders.updated_at"]
    assert all(c.passed for c in report.checks)
    # RPO: manifest backup time minus the newest write (2 minutes before it), to the second
    assert abs(report.rpo_achieved.total_seconds() - (backup_time - source_db.newest).total_seconds()) < 1
    assert report.rpo_met and report.rto_met and report.rto_achieved is not None
    # the scratch database is gone, the report is in the versioned bucket
    assert not database_exists(admin_uri, scratch_of(wf_id))
    stored = stored_report(s3, report.report_uri)
    assert stored["passed"] is True and stored["rpo_target"] == "15m" and stored["rto_target"] == "1h"
    assert s3.get_bucket_versioning(Bucket=REPORT_BUCKET)["Status"] == "Enabled"
    kinds = recording[0].kinds(wf_id)
    assert "finished" in kinds and "alert" not in kinds


@pytest.mark.parametrize("damage", ["truncated", "corrupted"])
async def test_damaged_dump_fails_naming_the_check(damage, ts_env, task_queue, recording, db_activities, s3, source_db, fresh_dump, pg_server, admin_uri):
    data = fresh_dump[: int(len(fresh_dump) * 0.6)] if damage == "truncated" else b"PGDMP" + bytes(range(256)) * 40
    upload_dump(s3, "shop/bad.dump", data)
    s3.put_object(Bucket=DUMP_BUCKET, Key="manifests/shop/bad.dump.json",
                  Body=json.dumps(source_db.manifest(datetime.now(timezone.utc))).encode())
    wf_id, result, err = await run_drill(ts_env, task_queue, activities_for(db_activities, recording), dump_input(pg_server))
    assert result is None
    report = failure_report(err)  # the drill proved the backup unsafe: RunFailed, the report in the result
    failed = {c["name"] for c in report["checks"] if not c["passed"]}
    assert "pg_restore" in failed
    assert failed - {"pg_restore"}, "the declared checks measured the damage too"
    assert any(f.startswith("check pg_restore failed") for f in report["failures"])
    assert "pg_restore" in err.cause.message
    assert not database_exists(admin_uri, scratch_of(wf_id))
    assert stored_report(s3, report["report_uri"])["passed"] is False
    alerts = [e for e in recording[0].events if e.workflow_id == wf_id and e.kind == "alert"]
    assert len(alerts) == 1 and alerts[0].severity == "error" and "pg_restore" in alerts[0].text


async def test_rpo_breach_fails_the_drill(ts_env, task_queue, recording, db_activities, s3, stale_db, pg_server):
    upload_dump(s3, "shop/stale.dump", stale_db.dump())
    s3.put_object(Bucket=DUMP_BUCKET, Key="manifests/shop/stale.dump.json",
                  Body=json.dumps(stale_db.manifest(datetime.now(timezone.utc))).encode())
    wf_id, result, err = await run_drill(ts_env, task_queue, activities_for(db_activities, recording), dump_input(pg_server))
    report = failure_report(err)
    assert all(c["passed"] for c in report["checks"])  # the data is intact, just too old
    assert report["rpo_met"] is False and report["rto_met"] is True
    assert any(f.startswith("RPO breach: 40m") for f in report["failures"]), report["failures"]


async def test_no_backup_found(ts_env, task_queue, recording, db_activities, s3, pg_server):
    wf_id, result, err = await run_drill(ts_env, task_queue, activities_for(db_activities, recording), dump_input(pg_server))
    report = failure_report(err)
    assert report["backup"] is None and report["checks"] == [] and report["cleanup"] == []
    assert report["failures"][0].startswith("no backup found: no object under s3://drill-dumps/shop/")
    assert stored_report(s3, report["report_uri"])["passed"] is False
    assert "alert" in recording[0].kinds(wf_id)
    assert failed_result(err)["reason"].startswith("no backup found")


@pytest.mark.parametrize("how", ["cancel", "abort"])
async def test_cancellation_mid_restore_cleans_up(how, ts_env, task_queue, recording, db_activities, s3, fresh_dump, pg_server, admin_uri):
    """The run is cancelled (or aborted by a person) while pg_restore runs: the restore is stopped first, then the
    scratch database is dropped, and the run COMPLETES Aborted (a cancel is an abort: no CancelledError, no page)."""
    upload_dump(s3, "shop/big.dump", fresh_dump)
    restoring, stopped = threading.Event(), threading.Event()
    order: list[str] = []

    @activity.defn(name="pg_restore_dump")
    def slow_restore(req: PgRestoreDumpInput) -> PgRestoreDumpResult:
        db_activities._recreate(req.server, req.database)  # the scratch exists, as in a real restore under way
        restoring.set()
        try:
            while True:
                activity.heartbeat()
                if activity.is_cancelled():
                    raise CancelledError("cancelled")
                activity.wait_for_cancelled_sync(0.1)
        finally:
            order.append("pg_restore stopped")
            stopped.set()

    @activity.defn(name="pg_drop_database")
    def drop(req: PgScratchInput) -> PgDropResult:
        order.append("scratch dropped")
        return db_activities.pg_drop_database(req)

    acts = activities_for(db_activities, recording, pg_restore_dump=slow_restore, pg_drop_database=drop)
    wf_id = f"restore-drill-{uuid.uuid4().hex[:8]}"
    async with harness.running_worker(ts_env.client, task_queue, [RestoreDrill], acts):
        handle = await ts_env.client.start_workflow(
            RestoreDrill.run, dump_input(pg_server, heartbeat_timeout="2s"), id=wf_id, task_queue=task_queue)
        for _ in range(200):
            if restoring.is_set():
                break
            await asyncio.sleep(0.05)
        assert database_exists(admin_uri, scratch_of(wf_id))
        if how == "cancel":
            await handle.cancel()
        else:
            await handle.execute_update(RestoreDrill.abort, AbortInput(requested_by="dave", reason="maintenance window"))
        result = await handle.result()
        status = await handle.query(RestoreDrill.status)
    assert isinstance(result, RestoreDrillResult) and result.status == "Aborted" and status.status == "Aborted"
    if how == "cancel":
        assert result.reason.startswith("cancelled at restore")
        assert [a.by for a in result.actions if a.action == "abort"] == ["temporal"]
    else:
        assert result.reason == "aborted at restore by dave: maintenance window"
    assert stopped.is_set() and order == ["pg_restore stopped", "scratch dropped"]
    assert not database_exists(admin_uri, scratch_of(wf_id))
    assert result.compensated == [f"scratch database {scratch_of(wf_id)} on {pg_server.host} removed"]
    assert result.not_undone == [] and result.report.passed is False
    assert any(s.name == "clean up" and s.status == "done" for s in status.steps)
    stored = stored_report(s3, result.report.report_uri)
    assert stored["failures"][0] == result.reason and stored["cleanup"] == result.compensated
    kinds = recording[0].kinds(wf_id)
    assert "alert" not in kinds
    finished = [e for e in recording[0].events if e.workflow_id == wf_id and e.kind == "finished"]
    assert len(finished) == 1 and finished[0].severity == "warning"


# ------------------------------------------------------------------------------------------------------- RDS
def seed_rds(instance: str) -> str:
    rds = aws_session.client("rds")
    rds.create_db_instance(DBInstanceIdentifier=instance, Engine="postgres", DBInstanceClass="db.t3.micro",
                           MasterUsername="admin", MasterUserPassword="password123", AllocatedStorage=20)
    snap = f"{instance}-manual-1"
    rds.create_db_snapshot(DBInstanceIdentifier=instance, DBSnapshotIdentifier=snap)
    return snap


def rds_input(pg_server, source_db, **kw) -> RestoreDrillInput:
    checks = [c for c in CHECKS if c.get("baseline") != "manifest" and c["kind"] != "checksum"]
    checks.append({"kind": "row_count", "table": "orders", "baseline": "source", "tolerance_pct": 1})
    data = dict(meta=meta(), database="shop", kind="rds_snapshot", source_instance="shop-db", tier="tier-1",
                report_bucket=REPORT_BUCKET, checks=checks,
                source={"server": pg_server, "database": source_db.name},
                check_endpoint_override=CheckEndpointOverride(server=pg_server, template_database=source_db.name))
    data.update(kw)
    return RestoreDrillInput.model_validate(data)


def instance_ids() -> set[str]:
    return {i["DBInstanceIdentifier"] for i in aws_session.client("rds").describe_db_instances()["DBInstances"]}


async def test_rds_retried_restore_reuses_the_scratch_instance(ts_env, task_queue, recording, db_activities, s3, rds_source, pg_server, admin_uri):
    """Attempt 1 starts the restore and then fails; attempt 2 finds the instance it started instead of another."""
    snap = seed_rds("shop-db")
    real = RdsActivities(AwsClients(aws_session.session()))
    seen: list[tuple[int, bool, str]] = []

    @activity.defn(name="rds_restore_snapshot")
    def flaky_restore(req: RdsRestoreInput):
        existed = req.target_identifier in instance_ids()
        inst = real.rds_restore_snapshot(req)
        seen.append((activity.info().attempt, existed, inst.identifier))
        if activity.info().attempt == 1:
            raise ApplicationError("connection reset after the restore call", type=errors.TRANSIENT)
        return inst

    acts = activities_for(db_activities, recording, rds_restore_snapshot=flaky_restore)
    wf_id, result, err = await run_drill(ts_env, task_queue, acts, rds_input(pg_server, rds_source))
    assert err is None, err and err.cause
    scratch = result.report.scratch.split()[0]
    assert seen == [(1, False, scratch), (2, True, scratch)]
    assert result.report.backup.identifier == snap and result.report.passed
    assert "check_endpoint_override" in result.report.checks_endpoint
    assert result.report.rpo_target == timedelta(minutes=5)  # tier-1
    assert instance_ids() == {"shop-db"}  # scratch instance deleted
    assert not database_exists(admin_uri, scratch_of(wf_id))


async def test_rds_slow_availability_breaches_rto(ts_env, task_queue, recording, db_activities, s3, rds_source, pg_server, admin_uri):
    """The restored instance stays 'creating' for a while (injected): RTO (tier-1: 15m) is breached and reported."""
    seed_rds("shop-db")
    real = RdsActivities(AwsClients(aws_session.session()))

    @activity.defn(name="rds_wait_available")
    def slow_wait(req: RdsWaitInput):
        if activity.info().attempt <= 6:  # 30s, 1m, 2m, 4m, 5m, 5m of retry backoff: ~17.5 minutes
            raise ApplicationError(f"{req.identifier} still creating", type=errors.TRANSIENT)
        return real.rds_wait_available(req)

    acts = activities_for(db_activities, recording, rds_wait_available=slow_wait)
    wf_id, result, err = await run_drill(ts_env, task_queue, acts, rds_input(pg_server, rds_source))
    report = failure_report(err)
    assert all(c["passed"] for c in report["checks"]) and report["rpo_met"] is True
    assert report["rto_met"] is False
    rto = report["rto_achieved"]
    assert rto.startswith("17m"), rto
    assert any(f.startswith("RTO breach") and "target 15m" in f for f in report["failures"])
    assert instance_ids() == {"shop-db"}
    assert not database_exists(admin_uri, scratch_of(wf_id))
