"""Abort and cancel at every step after approval, refusals before any change, and a drill that cannot restore.

The abort tests pause one activity (a stand-in under the real name: the real activity runs, then the thread waits),
abort the run while it is there, then let the activity finish: a change completes and the abort is honoured right
after it; a wait is cut short."""

from __future__ import annotations

import asyncio
import threading
import typing
import uuid
from datetime import timedelta

import pytest
from temporalio import activity
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import ApplicationError

from core import errors
from core.approval import AbortInput
from core.aws import RdsInstanceRef, RdsReplicaLag
from tests import harness
from tests.failover.conftest import EAST, WEST
from tests.failover.test_failover import WORKFLOWS, alerts, failover_input, replace, run
from workflows.failover import AsFound, DbState, RegionFailover, RegionMoveResult, compare_as_found


class Pause:
    def __init__(self) -> None:
        self.reached = threading.Event()
        self.release = threading.Event()

    def around(self, real, when=None):
        """A stand-in for ``real`` (same name and types) that runs it, then waits once where ``when`` holds."""
        hints = typing.get_type_hints(real)
        arg_type = next(v for k, v in hints.items() if k != "return")

        def stand_in(arg):
            out = real(arg)
            if (when is None or when(arg)) and not self.reached.is_set():
                self.reached.set()
                self.release.wait(30)
            return out

        stand_in.__annotations__ = {"arg": arg_type, "return": hints["return"]}
        return activity.defn(name=getattr(real, "__temporal_activity_definition").name)(stand_in)

    async def wait(self) -> None:
        for _ in range(1800):  # the drill's failback is ~40 s into a run on a loaded machine
            if self.reached.is_set():
                return
            await asyncio.sleep(0.05)
        raise AssertionError("the run never reached the paused activity")


def real(regions, name: str):
    return next(a for a in regions.activities if a.__temporal_activity_definition.name == name)


# Time skips only while a test awaits a result: until the run reaches the paused activity its timers take real time,
# and verify waits verify_interval between its passes (in the drill and again in its failback): 1 s, not 30 s.
REAL_TIME_VERIFY = timedelta(seconds=1)

STEPS = [
    # (where, activity paused in, when, DNS already moved)
    ("fence compute", "k8s_scale_deployment", lambda a: a.replicas == 0, False),
    ("fence database", "rds_set_writes_blocked", None, False),
    ("promote (change)", "rds_promote_replica", None, False),
    ("promote (wait)", "rds_wait_available", None, False),
    ("scale (wait)", "k8s_wait_rollout", None, False),
    ("dns (change)", "route53_upsert_records", None, True),
    ("verify (probe)", "http_probe", None, True),
]


async def stop_at(ts_env, task_queue, regions, name, when, stop) -> RegionMoveResult:
    from tests.failover.conftest import report_lag

    report_lag("orders-east-failback", EAST, 2.0)  # a drill that goes home: its failback replica has caught up
    pause = Pause()
    acts = replace(regions.activities, pause.around(real(regions, name), when))
    async with harness.running_worker(ts_env.client, task_queue, WORKFLOWS, acts):
        handle = await ts_env.client.start_workflow(
            RegionFailover.run, failover_input(regions, verify_interval=REAL_TIME_VERIFY), id=f"fo-{uuid.uuid4().hex[:6]}",
            task_queue=task_queue, execution_timeout=timedelta(days=3),
        )
        try:
            await pause.wait()
            await stop(handle)
        finally:
            pause.release.set()  # also when the test failed: the worker's thread is not held for the pause's 30 s
        return await handle.result()


@pytest.mark.parametrize("where, name, when, after_dns", STEPS, ids=[s[0] for s in STEPS])
async def test_drill_abort_after_approval_is_honoured_at_every_step(ts_env, task_queue, regions, recording,
                                                                    where, name, when, after_dns):
    """Named bug: fence, promote, scale, DNS and verify never looked at the abort, and the drill still failed back."""
    before = regions.everything()

    async def abort(handle):
        await handle.execute_update(RegionFailover.abort, AbortInput(requested_by="dave", reason="drill called off"))

    result = await stop_at(ts_env, task_queue, regions, name, when, abort)

    assert result.status == "Aborted", (where, result.summary)
    assert "dave" in result.reason
    # stopped before the next change and gave everything back: as found, and proved
    assert regions.everything() == before, where
    assert not result.not_undone and result.differences == [] and result.compensated
    if not after_dns:  # an aborted drill never starts the failback before DNS moved
        assert result.failback is None and "failback" not in [s.name for s in result.steps]
    else:  # DNS moved: a drill goes home the way it planned to (the primary region is healthy): failback, restore
        assert result.dns_shifted and result.failback is not None and result.failback.status == "Succeeded"
        assert "went home" in result.summary, result.summary
    end = [e for e in recording[0].events if e.kind == "finished" and not e.workflow_id.endswith("-failback")]
    assert end and end[0].severity == "warning"


async def test_cancelling_a_failover_is_an_abort(ts_env, task_queue, regions):
    before = regions.everything()

    async def cancel(handle):
        await handle.cancel()
        # let the run take the cancel in before the paused activity completes: the time-skipping test server
        # refuses the cancel of an activity that completed meanwhile (ACTIVITY_UNKNOWN), a race of the test setup
        for reads in range(600):
            if any(a.action == "abort" for a in (await handle.query(RegionFailover.status)).actions):
                return
            await harness.backoff(reads)

    result = await stop_at(ts_env, task_queue, regions, "rds_wait_available", None, cancel)
    assert result.status == "Aborted" and "cancelled" in result.reason, result.summary
    assert regions.everything() == before
    assert result.failback is None


async def test_cancel_right_after_the_dns_change_takes_the_drill_home(ts_env, task_queue, regions):
    """The DNS change under way when the cancel arrives is finished, known as done, and the drill goes home."""
    before = regions.everything()

    async def cancel(handle):
        await handle.cancel()

    result = await stop_at(ts_env, task_queue, regions, "route53_upsert_records", None, cancel)
    assert result.status == "Aborted" and "cancelled" in result.reason and "went home" in result.summary, result.summary
    assert result.dns_shifted and result.failback is not None and result.failback.status == "Succeeded"
    assert regions.everything() == before and result.differences == []


async def test_abort_during_the_drills_failback_finishes_the_way_back_and_ends_aborted(ts_env, task_queue, regions):
    """The failback is the drill's way back (its compensation): an abort there lets it finish, then the restore."""
    before = regions.everything()

    async def abort(handle):
        await handle.execute_update(RegionFailover.abort, AbortInput(requested_by="dave", reason="stop the drill"))

    result = await stop_at(ts_env, task_queue, regions, "rds_create_replica", None, abort)
    assert result.status == "Aborted" and "dave" in result.reason, result.summary
    assert "way back" in result.reason and "finished" in result.reason, result.reason
    assert result.failback is not None and result.failback.status == "Succeeded", result.failback
    assert regions.everything() == before and result.differences == []


async def test_cancel_during_the_drills_restore_finishes_it_and_ends_aborted(ts_env, task_queue, regions):
    before = regions.everything()

    async def cancel(handle):
        await handle.cancel()

    # the restore's only create_replica is the DR re-creation: the failback's comes first (count 2)
    pause = Pause()
    seen = {"n": 0}

    def second(arg) -> bool:
        seen["n"] += 1
        return seen["n"] == 2

    from tests.failover.conftest import report_lag

    report_lag("orders-east-failback", EAST, 2.0)
    acts = replace(regions.activities, pause.around(real(regions, "rds_create_replica"), second))
    async with harness.running_worker(ts_env.client, task_queue, WORKFLOWS, acts):
        handle = await ts_env.client.start_workflow(
            RegionFailover.run, failover_input(regions, verify_interval=REAL_TIME_VERIFY), id=f"fo-{uuid.uuid4().hex[:6]}",
            task_queue=task_queue, execution_timeout=timedelta(days=3),
        )
        try:
            await pause.wait()
            await cancel(handle)
        finally:
            pause.release.set()
        result = await handle.result()
    assert result.status == "Aborted" and "cancelled" in result.reason and "way back" in result.reason, result.summary
    assert regions.everything() == before and result.differences == [] and not result.not_undone


REFUSALS = [
    ("unknown DR database", lambda r: dict(dr=r.side(WEST, database="nope")), "does not exist"),
    ("unknown primary database", lambda r: dict(primary=r.side(EAST, database="nope")), "does not exist"),
    ("unknown zone", lambda r: dict(dns=r.dns().model_copy(update={"zone_id": "ZNOPE"})), "cannot be resolved"),
    ("unknown record", lambda r: dict(dns=r.dns().model_copy(update={"record_name": "nope.example.com."})), "no CNAME record"),
    ("unknown deployment", lambda r: dict(dr=r.side(WEST, deployment="nope")), "cannot be resolved"),
    ("blank service", lambda r: dict(service="   "), "blank service"),
    ("blank database", lambda r: dict(primary=r.side(EAST, database=" ")), "blank database"),
]


@pytest.mark.parametrize("case, change, words", REFUSALS, ids=[r[0] for r in REFUSALS])
async def test_unknown_or_blank_target_is_refused_before_any_change(ts_env, task_queue, regions, recording,
                                                                    case, change, words):
    before = regions.everything()
    result = await run(ts_env, task_queue, regions.activities, failover_input(regions, **change(regions)))
    assert result.status == "Refused" and "nothing was changed" in result.summary and words in result.summary, result.summary
    assert [s.name for s in result.steps] == ["look"] and result.fenced == []
    assert regions.everything() == before
    assert regions.east_k8s.calls("PATCH") == [] and regions.west_k8s.calls("PATCH") == []
    end = [e for e in recording[0].events if e.kind == "finished"]
    assert end and end[0].severity == "warning" and not alerts(recording)  # a warning, never a page


async def test_drill_that_was_already_failed_over_is_refused(ts_env, task_queue, regions):
    regions.east_health.status = 503
    await run(ts_env, task_queue, regions.activities, failover_input(regions, mode="real"))
    result = await run(ts_env, task_queue, regions.activities, failover_input(regions))
    assert result.status == "Refused" and "not a read replica" in result.summary, result.summary


@activity.defn(name="rds_delete_instance")
def delete_fails(input) -> None:
    raise ApplicationError("delete refused: InvalidDBInstanceState", type=errors.INVALID_INPUT, non_retryable=True)


async def test_drill_that_cannot_restore_its_as_found_state_fails(ts_env, task_queue, regions, recording):
    from tests.failover.conftest import report_lag

    report_lag("orders-east-failback", EAST, 2.0)
    with pytest.raises(WorkflowFailureError) as info:
        await run(ts_env, task_queue, replace(regions.activities, delete_fails), failover_input(regions))
    cause = info.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == errors.RUN_FAILED
    result = RegionMoveResult.model_validate(cause.details[0])
    assert result.status == "Failed" and result.failback is not None and result.failback.status == "Succeeded"
    assert any("delete refused" in x for x in result.not_undone), result.not_undone
    assert any("orders-east-failback" in d for d in result.differences), result.differences
    end = [e for e in recording[0].events if e.kind == "failed"]
    assert end and end[0].severity == "critical"


def test_compare_as_found_names_every_difference():
    db = DbState(identifier="orders-east", region=EAST, parameter_groups=["default"], status="available")
    before = AsFound(databases=[db, DbState(identifier="x", region=EAST, exists=False, role="absent")])
    assert compare_as_found(before, before) == []
    after = AsFound(databases=[db.model_copy(update={"parameter_groups": ["read-only"]}),
                               DbState(identifier="x", region=EAST, role="primary")])
    diffs = compare_as_found(before, after)
    assert diffs[0] == "database us-east-1/orders-east: parameter_groups ['read-only'] (was ['default'])"
    assert "database us-east-1/x: role primary (was absent)" in diffs


def failback_input(regions, **kw):
    from tests.failover.conftest import meta
    from workflows.failover import RegionFailbackInput

    base = dict(meta=meta("region-failback"), service="shop", original=regions.side(EAST), current=regions.side(WEST),
                dns=regions.dns(), replica="orders-east-2", verify_interval=timedelta(seconds=30))
    return RegionFailbackInput(**{**base, **kw})


async def test_failback_aborted_before_dns_gives_the_serving_database_its_writes_back(ts_env, task_queue, regions):
    """The failback fences the serving DR database before promoting the replica: an abort there must not leave the
    region that serves the traffic read-only."""
    from tests.failover.conftest import report_lag
    from workflows.failover import RegionFailback

    regions.east_health.status = 503
    await run(ts_env, task_queue, regions.activities, failover_input(regions, mode="real"))
    regions.east_health.status = 200
    report_lag("orders-east-2", EAST, 1.0)
    before = regions.everything(databases=(("orders-east", EAST), ("orders-west", WEST)))
    pause = Pause()
    acts = replace(regions.activities, pause.around(real(regions, "rds_promote_replica")))
    async with harness.running_worker(ts_env.client, task_queue, WORKFLOWS, acts):
        handle = await ts_env.client.start_workflow(
            RegionFailback.run, failback_input(regions), id=f"fb-{uuid.uuid4().hex[:6]}", task_queue=task_queue)
        try:
            await pause.wait()
            await handle.execute_update(RegionFailback.abort, AbortInput(requested_by="erin", reason="not today"))
        finally:
            pause.release.set()
        result = await handle.result()
    assert result.status == "Aborted" and not result.dns_shifted, result.summary
    assert any("orders-west parameter group back" in c for c in result.compensated), result.compensated
    assert regions.everything(databases=(("orders-east", EAST), ("orders-west", WEST))) == before
    assert any("orders-east-2 left in place" in x for x in result.left_in_place), result.left_in_place


async def test_failback_of_an_unknown_database_is_refused(ts_env, task_queue, regions):
    from workflows.failover import RegionFailback

    async with harness.running_worker(ts_env.client, task_queue, WORKFLOWS, regions.activities):
        result = await ts_env.client.execute_workflow(
            RegionFailback.run, failback_input(regions, current=regions.side(WEST, database="nope")),
            id=f"fb-{uuid.uuid4().hex[:6]}", task_queue=task_queue)
    assert result.status == "Refused" and "nothing was changed" in result.summary
    assert regions.db("orders-west", WEST)["DBParameterGroups"][0]["DBParameterGroupName"] != "read-only"


async def test_a_long_catch_up_continues_as_new_and_fails_back(ts_env, task_queue, regions):
    """Bounded history: the failback's lag polling (hours at most) continues as new at its quiet point, before the gate,
    carrying the as-found state, the evidence and the deadline."""
    from tests.failover.conftest import meta
    from workflows.failover import RegionFailback

    regions.east_health.status = 503
    await run(ts_env, task_queue, regions.activities, failover_input(regions, mode="real"))
    regions.east_health.status = 200
    calls = []

    @activity.defn(name="rds_replica_lag")
    def lagging(input: RdsInstanceRef) -> RdsReplicaLag:
        calls.append(input.identifier)
        return RdsReplicaLag(lag_seconds=120.0 if len(calls) < 25 else 1.0)

    wf_input = failback_input(regions, meta=meta("region-failback").model_copy(update={"history_limit": 100}),
                              catch_up_poll=timedelta(seconds=30))
    async with harness.running_worker(ts_env.client, task_queue, WORKFLOWS, replace(regions.activities, lagging)):
        handle = await ts_env.client.start_workflow(RegionFailback.run, wf_input, id=f"fb-{uuid.uuid4().hex[:6]}",
                                                    task_queue=task_queue)
        result = await handle.result()
        status = await handle.query(RegionFailback.status)
    assert result.status == "Succeeded" and result.outcome == "failed_back", result.summary
    assert status.continued >= 1 and len(calls) == 25
    assert [s.name for s in result.steps] == ["look", "replica", "fence", "promote", "scale", "dns", "verify", "standby"]
    assert result.steps[1].status == "done" and result.as_found is not None
    assert regions.records()["PRIMARY"] == "web.us-east-1.example.com"
