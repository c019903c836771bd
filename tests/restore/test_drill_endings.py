"""How a restore drill ends, step by step: abort and cancel at every step, refusals before any change, a clean-up
that cannot remove the scratch. Real PostgreSQL (the scratch database), real moto (the scratch RDS instance).

A step is held by a stand-in registered under the real activity's name: it says when it was entered and then either
holds until released (a read, or a change that must finish) or until its cancellation reaches it (the long
restore and the instance wait, the checks). The scratch is checked on the real systems afterwards.
"""

from __future__ import annotations

import asyncio
import json
import threading
import typing
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

import pytest
from temporalio import activity
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHandle
from temporalio.exceptions import ApplicationError, CancelledError

from activities.aws import AwsClients, RdsActivities, S3Activities
from core import errors
from core.approval import AbortInput
from core.restore import PgDropResult, PgScratchInput
from tests import aws_session, harness
from tests.restore.conftest import DUMP_BUCKET, REPORT_BUCKET, database_exists, upload_dump
from tests.restore.test_restore_drill import (
    activities_for,
    dump_input,
    failed_result,
    instance_ids,
    rds_input,
    run_drill,
    scratch_of,
    seed_rds,
    stored_report,
)
from workflows.restore_drill import RestoreDrill, RestoreDrillResult


class Held:
    """A stand-in for one activity: records that it was entered, then holds the step.

    ``cancellable``: heartbeats until the activity's cancellation reaches it, then stops (the long restore, the
    instance wait, the checks). Otherwise it holds until ``release`` and then does the real work (a read, or a
    change that must finish once started). ``prepare`` runs first (e.g. creates the scratch a real restore would).
    """

    def __init__(self, name: str, real: Callable, *, cancellable: bool = False, prepare: Callable | None = None,
                 log: list[str] | None = None) -> None:
        self.name, self.real, self.cancellable, self.prepare = name, real, cancellable, prepare
        self.entered, self.release, self.stopped = threading.Event(), threading.Event(), threading.Event()
        self.log = log if log is not None else []

    def activity(self) -> Callable:
        def held(req):  # type: ignore[no-untyped-def]
            if self.prepare is not None:
                self.prepare(req)
            self.entered.set()
            try:
                while not self.release.is_set():
                    if self.cancellable:
                        activity.heartbeat()
                        if activity.is_cancelled():
                            raise CancelledError("cancelled")
                        activity.wait_for_cancelled_sync(0.05)
                    else:
                        self.release.wait(0.05)
            finally:
                if not self.release.is_set():
                    self.log.append(f"{self.name} stopped")
                self.stopped.set()
            return self.real(req)

        return typed_activity(self.name, self.real, held)


def typed_activity(name: str, real: Callable, fn: Callable) -> Callable:
    """``fn`` registered as activity ``name`` with ``real``'s argument and return types (for the data converter)."""
    hints = typing.get_type_hints(real)
    (arg_type,) = [t for k, t in hints.items() if k != "return"]
    fn.__annotations__ = {"req": arg_type, "return": hints["return"]}
    return activity.defn(name=name)(fn)


def recorded(name: str, real: Callable, log: list[str], line: str) -> Callable:
    """The real activity, noting in ``log`` when it ran (to check the order of stop and removal)."""
    def run(req):  # type: ignore[no-untyped-def]
        log.append(line)
        return real(req)

    return typed_activity(name, real, run)


# A held step heartbeats every 50 ms and sees its cancellation in the answer to a heartbeat. The worker sends them at
# most every 80 % of the step's heartbeat timeout (the restore's 2 s, the instance wait's 3 s): each test that stopped
# the restore or the wait waited 1.6 or 2.4 s for it; here a heartbeat goes at most every 0.2 s (the timeouts stay).
HEARTBEAT_THROTTLE = timedelta(milliseconds=200)


async def entered(held: Held) -> None:
    for _ in range(1200):  # up to 30 s on a busy machine; usually well under 1 s
        if held.entered.is_set():
            return
        await asyncio.sleep(0.025)
    raise AssertionError(f"{held.name} was never reached")


async def cancel_and_wait_delivered(handle: WorkflowHandle) -> None:
    """Cancel, and return once a workflow task has processed the cancellation (so a held change is released after
    the workflow knows, deterministically)."""
    await handle.cancel()
    for reads in range(400):  # the whole history each time: not every 25 ms
        types = [e.event_type async for e in handle.fetch_history_events()]
        requested = EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCEL_REQUESTED
        if requested in types and EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED in types[types.index(requested):]:
            return
        await harness.backoff(reads)
    raise AssertionError("the cancellation never reached the workflow")


async def stop_at(held: Held, how: str, handle: WorkflowHandle) -> RestoreDrillResult:
    await entered(held)
    if how == "cancel":
        await cancel_and_wait_delivered(handle)
    else:
        await handle.execute_update(RestoreDrill.abort, AbortInput(requested_by="dave", reason="stop the drill"))
    if not held.cancellable:  # a held read or change goes on; a cancellable step must see its cancellation
        held.release.set()
    return await handle.result()


def seed_backup(s3, source_db, fresh_dump) -> None:
    upload_dump(s3, "shop/2026-11-22T0300.dump", fresh_dump)
    s3.put_object(Bucket=DUMP_BUCKET, Key="manifests/shop/2026-11-22T0300.dump.json",
                  Body=json.dumps(source_db.manifest(datetime.now(timezone.utc))).encode())


def report_objects(s3) -> list[str]:
    return [o["Key"] for o in s3.list_objects_v2(Bucket=REPORT_BUCKET).get("Contents", [])]


# ----------------------------------------------------------------------------------------- pg_dump: every step
PG_STEPS: dict[str, tuple[str, bool]] = {  # step -> (activity held there, cancellable)
    "validate": ("s3_bucket_exists", False),
    "locate backup": ("s3_latest_object", False),
    "restore": ("pg_restore_dump", True),
    "checks": ("pg_run_checks", True),
    "clean up": ("pg_drop_database", False),
    "report": ("s3_put_json", False),
}


@pytest.mark.parametrize("how", ["abort", "cancel"])
@pytest.mark.parametrize("step", list(PG_STEPS))
async def test_pg_dump_drill_stopped_at_every_step(step, how, ts_env, task_queue, recording, db_activities, s3,
                                                   source_db, fresh_dump, pg_server, admin_uri):
    seed_backup(s3, source_db, fresh_dump)
    name, cancellable = PG_STEPS[step]
    log: list[str] = []
    clients = AwsClients(aws_session.session())
    reals: dict[str, Callable] = {
        "s3_bucket_exists": S3Activities(clients).s3_bucket_exists, "s3_latest_object": S3Activities(clients).s3_latest_object,
        "pg_restore_dump": db_activities.pg_restore_dump, "pg_run_checks": db_activities.pg_run_checks,
        "pg_drop_database": db_activities.pg_drop_database, "s3_put_json": S3Activities(clients).s3_put_json,
    }
    prepare = (lambda req: db_activities._recreate(req.server, req.database)) if name == "pg_restore_dump" else None
    held = Held(name, reals[name], cancellable=cancellable, prepare=prepare, log=log)
    replace: dict[str, Any] = {name: held.activity()}
    if name != "pg_drop_database":
        replace["pg_drop_database"] = recorded("pg_drop_database", db_activities.pg_drop_database, log,
                                               "scratch database dropped")
    # a short heartbeat timeout only where a stand-in holds the long restore: a real pg_restore heartbeats every 2 s
    fast = {"heartbeat_timeout": "2s"} if name == "pg_restore_dump" else {}
    wf_id = f"restore-drill-{uuid.uuid4().hex[:8]}"
    try:
        async with harness.running_worker(ts_env.client, task_queue, [RestoreDrill],
                                          activities_for(db_activities, recording, **replace),
                                          heartbeat_throttle=HEARTBEAT_THROTTLE):
            handle = await ts_env.client.start_workflow(
                RestoreDrill.run, dump_input(pg_server, **fast), id=wf_id, task_queue=task_queue)
            result = await stop_at(held, how, handle)
    finally:
        held.release.set()

    scratch = scratch_of(wf_id)
    assert not database_exists(admin_uri, scratch), "the scratch database is always removed"
    steps = [s.name for s in result.steps]
    kinds = recording[0].kinds(wf_id)
    assert "alert" not in kinds
    assert result.status == "Aborted", result.summary
    assert result.reason.startswith(f"aborted at {step} by dave" if how == "abort" else f"cancelled at {step}")
    assert result.not_undone == [] and result.report.passed is False
    assert stored_report(s3, result.report.report_uri)["failures"][0] == result.reason
    if step == "report":  # the write under way finished; the report was written again saying the run was aborted
        assert "the drill itself had passed" in result.reason and all(c.passed for c in result.report.checks)
        assert steps.count("clean up") == 1 and result.compensated == []  # the scratch went on the way to success
        return
    if step in ("validate", "locate backup"):  # stopped before anything was restored: nothing to undo
        assert "restore" not in steps and "clean up" not in steps and result.compensated == []
        return
    assert result.compensated == [f"scratch database {scratch} on {pg_server.host} removed"]
    if step == "restore":  # pg_restore was stopped (and waited for) before its database was dropped
        assert log == ["pg_restore_dump stopped", "scratch database dropped"]
    if step == "clean up":  # the clean-up under way finished; the abort was honoured after it
        assert steps.count("clean up") == 1 and result.report.checks and all(c.passed for c in result.report.checks)


# ----------------------------------------------------------------------------------------- RDS: every step
RDS_STEPS: dict[str, tuple[str, bool]] = {
    "restore": ("rds_restore_snapshot", False),
    "wait for instance": ("rds_wait_available", True),
    "clone": ("pg_clone_database", False),
    "clean up": ("rds_delete_instance", False),
}


@pytest.mark.parametrize("how", ["abort", "cancel"])
@pytest.mark.parametrize("step", list(RDS_STEPS))
async def test_rds_drill_stopped_at_every_step(step, how, ts_env, task_queue, recording, db_activities, s3, rds_source,
                                               pg_server, admin_uri):
    seed_rds("shop-db")
    name, cancellable = RDS_STEPS[step]
    rds = RdsActivities(AwsClients(aws_session.session()))
    reals = {"rds_restore_snapshot": rds.rds_restore_snapshot, "rds_wait_available": rds.rds_wait_available,
             "pg_clone_database": db_activities.pg_clone_database, "rds_delete_instance": rds.rds_delete_instance}
    log: list[str] = []
    held = Held(name, reals[name], cancellable=cancellable, log=log)

    replace: dict[str, Any] = {name: held.activity()}
    if name != "rds_delete_instance":
        replace["rds_delete_instance"] = recorded("rds_delete_instance", rds.rds_delete_instance, log,
                                                  "scratch instance deleted")
    wf_id = f"restore-drill-{uuid.uuid4().hex[:8]}"
    try:
        async with harness.running_worker(ts_env.client, task_queue, [RestoreDrill],
                                          activities_for(db_activities, recording, **replace),
                                          heartbeat_throttle=HEARTBEAT_THROTTLE):
            handle = await ts_env.client.start_workflow(
                # the instance wait's heartbeat timeout is poll_interval + heartbeat_timeout: 1 s + 2 s, not 15 s + 2 s,
                # of real time (a missed heartbeat fails it; its cancellation arrives with one, HEARTBEAT_THROTTLE)
                RestoreDrill.run, rds_input(pg_server, rds_source, heartbeat_timeout="2s", poll_interval="1s"),
                id=wf_id, task_queue=task_queue)
            result = await stop_at(held, how, handle)
    finally:
        held.release.set()

    assert result.status == "Aborted", result.summary
    assert result.reason.startswith(f"aborted at {step} by dave" if how == "abort" else f"cancelled at {step}")
    assert instance_ids() == {"shop-db"}, "the scratch instance is always deleted"
    assert not database_exists(admin_uri, scratch_of(wf_id)), "the clone is always dropped"
    assert result.not_undone == [] and "alert" not in recording[0].kinds(wf_id)
    assert any(c.startswith("scratch RDS instance") and c.endswith("removed") for c in result.compensated)
    if step == "wait for instance":  # the wait was stopped (and waited for) before the instance was deleted
        assert log == ["rds_wait_available stopped", "scratch instance deleted"]
    if step == "clone":  # the clone under way finished, so compensation drops it too
        assert any(c.startswith(f"scratch database {scratch_of(wf_id)}") and c.endswith("removed") for c in result.compensated)


# ----------------------------------------------------------------------------------------- refused before any change
def bucket_missing(pg_server, **_):
    return dump_input(pg_server, dump_bucket="no-such-backups")


def blank_database(pg_server, **_):
    return dump_input(pg_server, database="   ")


def pinned_dump_missing(pg_server, **_):
    return dump_input(pg_server, dump_key="shop/never-taken.dump")


def source_instance_missing(pg_server, source_db):
    return rds_input(pg_server, source_db, source_instance="no-such-db")


def pinned_snapshot_missing(pg_server, source_db):
    return rds_input(pg_server, source_db, snapshot_identifier="no-such-snapshot")


@pytest.mark.parametrize("case, why", [
    (blank_database, "database is blank: nothing was changed"),
    (bucket_missing, "backup bucket s3://no-such-backups does not exist: nothing was changed"),
    (pinned_dump_missing, "the pinned backup does not exist: no object under s3://drill-dumps/shop/never-taken.dump"),
    (source_instance_missing, "source RDS instance no-such-db does not exist in us-east-1: nothing was changed"),
    (pinned_snapshot_missing, "the pinned backup does not exist: describing snapshot no-such-snapshot in us-east-1"),
])
async def test_refused_before_anything_is_restored(case, why, ts_env, task_queue, recording, db_activities, s3, source_db,
                                                   fresh_dump, pg_server, admin_uri):
    seed_backup(s3, source_db, fresh_dump)
    seed_rds("shop-db")
    wf_id, result, err = await run_drill(ts_env, task_queue, activities_for(db_activities, recording),
                                         case(pg_server, source_db=source_db))
    assert err is None, err and err.cause
    assert result.status == "Refused" and why in result.reason and result.reason.endswith("nothing was changed")
    assert "restore" not in [s.name for s in result.steps] and result.compensated == [] == result.not_undone
    assert instance_ids() == {"shop-db"} and not database_exists(admin_uri, scratch_of(wf_id))
    assert report_objects(s3) == [], "a refused drill writes nothing, not even its report"
    events = [e for e in recording[0].events if e.workflow_id == wf_id]
    assert [e.kind for e in events if e.kind in ("alert", "failed", "finished")] == ["finished"]
    assert events[-1].severity == "warning"


# ----------------------------------------------------------------------------------------- clean-up cannot remove it
async def test_scratch_that_cannot_be_removed_fails_the_drill(ts_env, task_queue, recording, db_activities, s3, source_db,
                                                              fresh_dump, pg_server, admin_uri):
    """The drill passed, but its scratch database could not be dropped: not undone, so Failed (RunFailed), paged."""
    seed_backup(s3, source_db, fresh_dump)

    @activity.defn(name="pg_drop_database")
    def refused_drop(req: PgScratchInput) -> PgDropResult:
        raise ApplicationError("permission denied to drop database", type=errors.ACCESS_DENIED, non_retryable=True)

    wf_id, result, err = await run_drill(ts_env, task_queue,
                                         activities_for(db_activities, recording, pg_drop_database=refused_drop),
                                         dump_input(pg_server))
    try:
        outcome = failed_result(err)
        scratch = scratch_of(wf_id)
        assert database_exists(admin_uri, scratch)  # really left behind, and said so
        assert outcome["not_undone"] == [f"scratch database {scratch} on {pg_server.host} could not be removed, remove it "
                                         "by hand: permission denied to drop database"]
        report = outcome["report"]
        assert all(c["passed"] for c in report["checks"]) and report["passed"] is False
        assert report["failures"] == outcome["not_undone"]
        assert "NOT UNDONE" in err.cause.message or "could not be removed" in err.cause.message
        assert stored_report(s3, report["report_uri"])["passed"] is False
        alerts = [e for e in recording[0].events if e.workflow_id == wf_id and e.kind == "alert"]
        assert len(alerts) == 1 and "could not be removed" in alerts[0].text
    finally:
        db_activities.pg_drop_database(PgScratchInput(server=pg_server, database=scratch_of(wf_id)))


# ----------------------------------------------------------------------------------------- cancelled while announcing
async def test_cancel_while_the_drill_is_announced_stops_it(ts_env, task_queue, recording, db_activities, s3, source_db,
                                                            fresh_dump, pg_server, admin_uri):
    """A cancel that arrives while a notification is being sent is not lost with that notification: it is the abort,
    honoured at the next step (here before anything is restored)."""
    seed_backup(s3, source_db, fresh_dump)
    real = recording[1].notify
    announcing, release = threading.Event(), threading.Event()

    def notify(req):  # type: ignore[no-untyped-def]
        if req.kind == "started":
            announcing.set()
            release.wait(30)
        return real(req)

    acts = activities_for(db_activities, recording, notify=typed_activity("notify", real, notify))
    wf_id = f"restore-drill-{uuid.uuid4().hex[:8]}"
    try:
        async with harness.running_worker(ts_env.client, task_queue, [RestoreDrill], acts):
            handle = await ts_env.client.start_workflow(RestoreDrill.run, dump_input(pg_server), id=wf_id,
                                                        task_queue=task_queue)
            for _ in range(1200):
                if announcing.is_set():
                    break
                await asyncio.sleep(0.025)
            await cancel_and_wait_delivered(handle)
            release.set()
            result = await handle.result()
    finally:
        release.set()
    assert result.status == "Aborted", result.summary
    assert result.reason == "aborted at validate by temporal: the workflow was cancelled"
    assert [s.name for s in result.steps][:1] == ["validate"] and "restore" not in [s.name for s in result.steps]
    assert not database_exists(admin_uri, scratch_of(wf_id))
