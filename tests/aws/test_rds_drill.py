"""The RDS activities a failover drill restores with: delete and wait until the identifier is free (retries safe),
parameter group, the describe's groups, and a new replica that is never reported as promoted."""

from __future__ import annotations

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.aws import RdsActivities
from core import errors
from core.aws import (
    RdsCreateReplicaInput,
    RdsDeleteInput,
    RdsDeleteResult,
    RdsInstanceRef,
    RdsParameterGroupInput,
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
    client = clients.client("rds", EAST)
    client.create_db_parameter_group(DBParameterGroupName="read-only", DBParameterGroupFamily="postgres16",
                                     Description="default_transaction_read_only=on")
    return client.create_db_instance(
        DBInstanceIdentifier="orders-db", DBInstanceClass="db.t3.micro", Engine="postgres", AllocatedStorage=20,
        MasterUsername="u", MasterUserPassword="password123",
    )["DBInstance"]


def test_describe_reports_parameter_groups(rds, run, primary):
    inst = run(rds.rds_describe_instance, RdsInstanceRef(identifier="orders-db", region=EAST))
    assert inst.parameter_groups == sorted(g["DBParameterGroupName"] for g in primary["DBParameterGroups"])


def test_set_parameter_group_is_exact_and_idempotent(rds, run, primary):
    original = run(rds.rds_describe_instance, RdsInstanceRef(identifier="orders-db", region=EAST)).parameter_groups[0]
    ref = RdsParameterGroupInput(identifier="orders-db", region=EAST, parameter_group="read-only")
    assert run(rds.rds_set_parameter_group, ref).parameter_groups == ["read-only"]
    assert run(rds.rds_set_parameter_group, ref).parameter_groups == ["read-only"]
    back = RdsParameterGroupInput(identifier="orders-db", region=EAST, parameter_group=original)
    assert run(rds.rds_set_parameter_group, back).parameter_groups == [original]
    with pytest.raises(ApplicationError) as err:
        run(rds.rds_set_parameter_group, RdsParameterGroupInput(identifier="nope", region=EAST, parameter_group=original))
    assert err.value.type == errors.NOT_FOUND


def test_delete_waits_until_the_identifier_is_free_and_a_retry_is_a_no_op(rds, run, primary):
    req = RdsDeleteInput(identifier="orders-db", region=EAST, wait_gone_seconds=60, poll_seconds=0.01)
    assert run(rds.rds_delete_instance, req) == RdsDeleteResult(deleted=True, existed=True)
    assert not run(rds.rds_describe_instance, RdsInstanceRef(identifier="orders-db", region=EAST)).exists
    assert run(rds.rds_delete_instance, req) == RdsDeleteResult(deleted=False, existed=False)  # retried after it landed


def test_delete_that_does_not_free_the_identifier_in_time_is_a_deadline(clients, run, primary):
    """AWS keeps a deleting instance under its name for minutes: the wait reports it rather than returning early."""
    real = RdsActivities(clients)

    def deleting(identifier, region):
        inst = real.rds_describe_instance(RdsInstanceRef(identifier=identifier, region=region))
        return inst.model_copy(update={"exists": True, "status": "deleting"})

    clock = iter(range(0, 1000, 50))
    rds = RdsActivities(clients, describe=deleting, sleep=lambda s: None, clock=lambda: float(next(clock)))
    with pytest.raises(ApplicationError) as err:
        run(rds.rds_delete_instance, RdsDeleteInput(identifier="orders-db", region=EAST, wait_gone_seconds=120))
    assert err.value.type == errors.DEADLINE_EXCEEDED and "still deleting" in str(err.value)


def test_a_new_replica_of_a_promoted_source_is_not_promoted(rds, run, primary):
    """moto copies the source's tags onto a replica: the runbook:promoted tag must not make a replica look promoted
    (the failback would then skip promoting it, and a drill would see a replica as a primary)."""
    run(rds.rds_create_replica, RdsCreateReplicaInput(source_arn_or_id="orders-db", source_region=EAST,
                                                      replica_identifier="orders-dr", region=WEST))
    assert run(rds.rds_promote_replica, RdsInstanceRef(identifier="orders-dr", region=WEST)).promoted
    back = run(rds.rds_create_replica, RdsCreateReplicaInput(source_arn_or_id="orders-dr", source_region=WEST,
                                                             replica_identifier="orders-back", region=EAST))
    assert not back.promoted and back.read_replica_source.endswith(":db:orders-dr")


def test_a_replica_gets_the_parameter_group_asked_for_not_its_sources(rds, run, primary):
    """A drill re-creates its DR replica from a primary that may still be fenced (read-only group): as found at once."""
    run(rds.rds_set_parameter_group, RdsParameterGroupInput(identifier="orders-db", region=EAST, parameter_group="read-only"))
    default = sorted(g["DBParameterGroupName"] for g in primary["DBParameterGroups"])[0]
    made = run(rds.rds_create_replica, RdsCreateReplicaInput(source_arn_or_id="orders-db", source_region=EAST,
                                                             replica_identifier="orders-dr", region=WEST,
                                                             parameter_group=default))
    assert made.parameter_groups == [default]
