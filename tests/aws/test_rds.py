import itertools
import time
from datetime import datetime, timedelta, timezone

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.aws import RdsActivities
from core import errors
from core.aws import (
    RdsCreateReplicaInput,
    RdsDeleteInput,
    RdsFenceInput,
    RdsInstance,
    RdsInstanceRef,
    RdsRestoreInput,
    RdsSnapshotQuery,
    RdsWaitInput,
)

EAST, WEST = "us-east-1", "us-west-2"


@pytest.fixture
def rds(clients):
    return RdsActivities(clients)


@pytest.fixture
def run():
    return ActivityEnvironment().run


@pytest.fixture
def primary(clients):
    return clients.client("rds", EAST).create_db_instance(
        DBInstanceIdentifier="orders-db", DBInstanceClass="db.t3.micro", Engine="postgres", AllocatedStorage=20,
        MasterUsername="u", MasterUserPassword="password123",
    )["DBInstance"]


def test_describe_existing_and_missing(rds, run, primary):
    inst = run(rds.rds_describe_instance, RdsInstanceRef(identifier="orders-db", region=EAST))
    assert inst.exists and inst.status == "available" and inst.engine == "postgres" and inst.arn == primary["DBInstanceArn"]
    assert inst.endpoint and inst.port
    missing = run(rds.rds_describe_instance, RdsInstanceRef(identifier="nope", region=EAST))
    assert not missing.exists


def test_latest_snapshot_picks_newest_available_of_requested_kinds(rds, run, primary, clients):
    client = clients.client("rds", EAST)
    client.create_db_snapshot(DBSnapshotIdentifier="snap-old", DBInstanceIdentifier="orders-db")
    time.sleep(1.1)  # moto stamps snapshots with the wall clock (second resolution)
    client.create_db_snapshot(DBSnapshotIdentifier="snap-new", DBInstanceIdentifier="orders-db")
    newest = run(rds.rds_latest_snapshot, RdsSnapshotQuery(instance_identifier="orders-db", region=EAST))
    assert newest.identifier == "snap-new" and newest.kind == "manual" and newest.engine == "postgres"
    pinned = run(rds.rds_latest_snapshot, RdsSnapshotQuery(instance_identifier="orders-db", region=EAST,
                                                          snapshot_identifier="snap-old"))
    assert pinned.identifier == "snap-old"
    automated = run(rds.rds_latest_snapshot, RdsSnapshotQuery(instance_identifier="orders-db", region=EAST, kinds=["automated"]))
    assert automated.kind == "automated" and automated.identifier.startswith("rds:orders-db")


def test_latest_snapshot_none_is_not_found(rds, run, primary):
    with pytest.raises(ApplicationError) as err:
        run(rds.rds_latest_snapshot, RdsSnapshotQuery(instance_identifier="orders-db", region=EAST, kinds=["manual"]))
    assert err.value.type == errors.NOT_FOUND and err.value.non_retryable


def test_restore_reuses_its_own_target_and_refuses_a_foreign_one(rds, run, primary, clients):
    clients.client("rds", EAST).create_db_snapshot(DBSnapshotIdentifier="snap-1", DBInstanceIdentifier="orders-db")
    req = RdsRestoreInput(snapshot_identifier="snap-1", target_identifier="drill-wf1", region=EAST)
    first = run(rds.rds_restore_snapshot, req)
    assert first.identifier == "drill-wf1" and first.restored_from == "snap-1"
    second = run(rds.rds_restore_snapshot, req)  # a retry / replay
    assert second.arn == first.arn
    ids = [d["DBInstanceIdentifier"] for d in clients.client("rds", EAST).describe_db_instances()["DBInstances"]]
    assert sorted(ids) == ["drill-wf1", "orders-db"]
    with pytest.raises(ApplicationError) as err:  # an unrelated instance under the target name is never reused
        run(rds.rds_restore_snapshot, RdsRestoreInput(snapshot_identifier="snap-1", target_identifier="orders-db", region=EAST))
    assert err.value.type == errors.INVALID_INPUT


def test_restore_from_missing_snapshot_is_not_found(rds, run, aws):
    with pytest.raises(ApplicationError) as err:
        run(rds.rds_restore_snapshot, RdsRestoreInput(snapshot_identifier="nope", target_identifier="x", region=EAST))
    assert err.value.type == errors.NOT_FOUND


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000_000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def _states(*states):
    it = itertools.chain(states, itertools.repeat(states[-1]))
    return lambda identifier, region: RdsInstance(identifier=identifier, status=next(it))


def test_wait_available_polls_and_heartbeats_until_available(clients):
    clock = FakeClock()
    rds = RdsActivities(clients, describe=_states("creating", "backing-up", "available"), sleep=clock.sleep, clock=clock)
    env = ActivityEnvironment()
    beats = []
    env.on_heartbeat = lambda *d: beats.append(d[0])
    inst = env.run(rds.rds_wait_available, RdsWaitInput(identifier="x", region=EAST, deadline_seconds=600, poll_seconds=15))
    assert inst.status == "available"
    assert clock.sleeps == [15, 15]
    assert [b["status"] for b in beats] == ["creating", "backing-up", "available"]


def test_wait_available_deadline_exceeded(clients):
    clock = FakeClock()
    rds = RdsActivities(clients, describe=_states("creating"), sleep=clock.sleep, clock=clock)
    with pytest.raises(ApplicationError) as err:
        ActivityEnvironment().run(rds.rds_wait_available, RdsWaitInput(identifier="x", region=EAST, deadline_seconds=40, poll_seconds=15))
    assert err.value.type == errors.DEADLINE_EXCEEDED and err.value.non_retryable
    assert clock.sleeps == [15, 15, 10]  # never sleeps past the deadline


def test_wait_available_retry_keeps_the_first_attempts_clock(clients):
    """A retried attempt resumes from the heartbeat's start time: the deadline does not restart."""
    clock = FakeClock()
    rds = RdsActivities(clients, describe=_states("modifying"), sleep=clock.sleep, clock=clock)
    env = ActivityEnvironment()
    env.info = env.info.__class__(**{**env.info.__dict__, "attempt": 2,
                                      "heartbeat_details": [{"status": "modifying", "since": clock.now - 100}]})
    with pytest.raises(ApplicationError) as err:
        env.run(rds.rds_wait_available, RdsWaitInput(identifier="x", region=EAST, deadline_seconds=90, poll_seconds=15))
    assert err.value.type == errors.DEADLINE_EXCEEDED
    assert clock.sleeps == []


def test_wait_available_failed_state_stops_at_once(clients):
    clock = FakeClock()
    rds = RdsActivities(clients, describe=_states("creating", "incompatible-restore"), sleep=clock.sleep, clock=clock)
    with pytest.raises(ApplicationError) as err:
        ActivityEnvironment().run(rds.rds_wait_available, RdsWaitInput(identifier="x", region=EAST, deadline_seconds=600))
    assert err.value.type == errors.VERIFICATION_FAILED and "incompatible-restore" in str(err.value)


def test_wait_available_against_moto(rds, run, primary):
    inst = run(rds.rds_wait_available, RdsWaitInput(identifier="orders-db", region=EAST, deadline_seconds=5))
    assert inst.status == "available"


def test_delete_is_idempotent(rds, run, primary, clients):
    ref = RdsInstanceRef(identifier="orders-db", region=EAST)
    delete = RdsDeleteInput(identifier="orders-db", region=EAST)
    assert run(rds.rds_delete_instance, delete).model_dump() == {"deleted": True, "existed": True}
    assert not run(rds.rds_describe_instance, ref).exists
    assert run(rds.rds_delete_instance, delete).model_dump() == {"deleted": False, "existed": False}


def test_create_replica_promote_and_lag(rds, run, primary, clients):
    req = RdsCreateReplicaInput(source_arn_or_id="orders-db", source_region=EAST, replica_identifier="orders-db-replica",
                                region=WEST)
    replica = run(rds.rds_create_replica, req)
    assert replica.read_replica_source == primary["DBInstanceArn"]
    again = run(rds.rds_create_replica, req)
    assert again.arn == replica.arn
    assert len(clients.client("rds", WEST).describe_db_instances()["DBInstances"]) == 1

    ref = RdsInstanceRef(identifier="orders-db-replica", region=WEST)
    assert run(rds.rds_replica_lag, ref).lag_seconds is None
    now = datetime.now(timezone.utc)
    clients.client("cloudwatch", WEST).put_metric_data(Namespace="AWS/RDS", MetricData=[
        {"MetricName": "ReplicaLag", "Dimensions": [{"Name": "DBInstanceIdentifier", "Value": "orders-db-replica"}],
         "Timestamp": now - timedelta(seconds=s), "Value": v} for s, v in ((30, 2.0), (90, 7.5), (600, 99.0))
    ])
    assert run(rds.rds_replica_lag, ref).lag_seconds == 7.5  # max over the last 5 minutes only

    calls = []
    clients.client("rds", WEST).meta.events.register(
        "before-call.rds.PromoteReadReplica", lambda **kw: calls.append(kw["params"]))
    promoted = run(rds.rds_promote_replica, ref)
    assert promoted.promoted and len(calls) == 1
    second = run(rds.rds_promote_replica, ref)  # moto still shows the replica link: the tag says "done"
    assert second.promoted and len(calls) == 1


def test_create_replica_refuses_unrelated_instance(rds, run, primary, clients):
    clients.client("rds", WEST).create_db_instance(
        DBInstanceIdentifier="orders-db-replica", DBInstanceClass="db.t3.micro", Engine="postgres", AllocatedStorage=20,
        MasterUsername="u", MasterUserPassword="password123")
    with pytest.raises(ApplicationError) as err:
        run(rds.rds_create_replica, RdsCreateReplicaInput(source_arn_or_id="orders-db", source_region=EAST,
                                                           replica_identifier="orders-db-replica", region=WEST))
    assert err.value.type == errors.INVALID_INPUT


def test_promote_missing_is_not_found(rds, run, aws):
    with pytest.raises(ApplicationError) as err:
        run(rds.rds_promote_replica, RdsInstanceRef(identifier="nope", region=WEST))
    assert err.value.type == errors.NOT_FOUND


def test_fence_by_stopping_and_by_parameter_group(rds, run, primary, clients):
    fenced = run(rds.rds_set_writes_blocked, RdsFenceInput(identifier="orders-db", region=EAST))
    assert fenced.fenced and fenced.how == "stopped"
    assert run(rds.rds_describe_instance, RdsInstanceRef(identifier="orders-db", region=EAST)).status == "stopped"
    assert run(rds.rds_set_writes_blocked, RdsFenceInput(identifier="orders-db", region=EAST)).fenced

    client = clients.client("rds", EAST)
    client.start_db_instance(DBInstanceIdentifier="orders-db")
    client.create_db_parameter_group(DBParameterGroupName="read-only", DBParameterGroupFamily="postgres16",
                                     Description="default_transaction_read_only=on")
    out = run(rds.rds_set_writes_blocked, RdsFenceInput(identifier="orders-db", region=EAST, parameter_group="read-only"))
    assert out.fenced and out.how == "parameter-group:read-only"
    groups = [g["DBParameterGroupName"] for g in client.describe_db_instances(DBInstanceIdentifier="orders-db")["DBInstances"][0]["DBParameterGroups"]]
    assert groups == ["read-only"]


def test_fence_unreachable_or_missing_reports_instead_of_raising(rds, run, aws):
    out = run(rds.rds_set_writes_blocked, RdsFenceInput(identifier="gone-db", region=EAST))
    assert not out.fenced and "not found" in out.reason
