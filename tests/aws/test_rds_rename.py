"""The RDS activities a failover drill restores with: rename (retries safe), parameter group, the describe's groups,
and a new replica that is never reported as promoted."""

from __future__ import annotations

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.aws import RdsActivities
from core import errors
from core.aws import RdsCreateReplicaInput, RdsInstanceRef, RdsParameterGroupInput, RdsRenameInput

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


def test_rename_keeps_the_instance_and_a_retry_is_a_no_op(rds, run, primary):
    req = RdsRenameInput(identifier="orders-db", new_identifier="orders-db-retired", region=EAST)
    renamed = run(rds.rds_rename_instance, req)
    assert renamed.identifier == "orders-db-retired" and renamed.status == "available"
    assert renamed.endpoint.startswith("orders-db-retired.")
    assert not run(rds.rds_describe_instance, RdsInstanceRef(identifier="orders-db", region=EAST)).exists
    assert run(rds.rds_rename_instance, req).identifier == "orders-db-retired"  # retried after it landed


def test_rename_refuses_when_both_names_are_taken_or_neither_exists(rds, run, primary, clients):
    clients.client("rds", EAST).create_db_instance(
        DBInstanceIdentifier="other", DBInstanceClass="db.t3.micro", Engine="postgres", AllocatedStorage=20,
        MasterUsername="u", MasterUserPassword="password123",
    )
    with pytest.raises(ApplicationError) as both:
        run(rds.rds_rename_instance, RdsRenameInput(identifier="orders-db", new_identifier="other", region=EAST))
    assert both.value.type == errors.INVALID_INPUT
    with pytest.raises(ApplicationError) as neither:
        run(rds.rds_rename_instance, RdsRenameInput(identifier="a", new_identifier="b", region=EAST))
    assert neither.value.type == errors.NOT_FOUND


def test_a_new_replica_of_a_promoted_source_is_not_promoted(rds, run, primary):
    """moto copies the source's tags onto a replica: the runbook:promoted tag must not make a replica look promoted
    (the failback would then skip promoting it, and a drill would see a replica as a primary)."""
    run(rds.rds_create_replica, RdsCreateReplicaInput(source_arn_or_id="orders-db", source_region=EAST,
                                                      replica_identifier="orders-dr", region=WEST))
    assert run(rds.rds_promote_replica, RdsInstanceRef(identifier="orders-dr", region=WEST)).promoted
    back = run(rds.rds_create_replica, RdsCreateReplicaInput(source_arn_or_id="orders-dr", source_region=WEST,
                                                             replica_identifier="orders-back", region=EAST))
    assert not back.promoted and back.read_replica_source.endswith(":db:orders-dr")
