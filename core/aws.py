"""Inputs and results of the AWS activities (activities/aws.py): ELBv2, Route53, RDS, S3.

Plain pydantic types, no boto3 import, so workflows and starters can build them freely. Every input names the
outside object by a business identifier (ARN, zone id, deterministic DB identifier) so a retried activity acts on
the same object again; every write takes ABSOLUTE values (weights, records) rather than increments.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

# AWS limits moto does not enforce (we validate them ourselves).
ALB_MAX_WEIGHT = 999
ROUTE53_MAX_WEIGHT = 255


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --------------------------------------------------------------------------------------------------- ELBv2 (ALB)
class AlbTrafficRef(_Model):
    """Where traffic is split: the listener's default action, or one of its rules when ``rule_arn`` is set."""

    listener_arn: str
    rule_arn: str | None = None
    region: str | None = None


class AlbWeights(_Model):
    """Weights of the weighted forward action, by target group ARN (absolute values, 0..999)."""

    weights: dict[str, int] = Field(default_factory=dict)


class AlbSetWeightsInput(_Model):
    ref: AlbTrafficRef
    weights: dict[str, int]


class AlbLookupInput(_Model):
    """Find a listener (by load balancer name and port) and target groups (by name): for catalogs that name things."""

    load_balancer: str
    port: int
    target_groups: list[str] = Field(default_factory=list, description="target group names")
    region: str | None = None


class AlbLookup(_Model):
    listener_arn: str
    target_groups: dict[str, str] = Field(default_factory=dict, description="name -> ARN")


class AlbSwitchInput(_Model):
    ref: AlbTrafficRef
    target_group_arn: str


class AlbSwitchResult(_Model):
    previous: dict[str, int] = Field(default_factory=dict)
    changed: bool


class AlbTarget(_Model):
    id: str
    port: int | None = None


class AlbTargetsInput(_Model):
    target_group_arn: str
    targets: list[AlbTarget]
    region: str | None = None


class AlbTargetsResult(_Model):
    registered: list[str] = Field(default_factory=list, description="target ids registered after the call")


class AlbTargetGroupRef(_Model):
    target_group_arn: str
    region: str | None = None


class AlbTargetState(_Model):
    id: str
    port: int | None = None
    state: str


class AlbTargetHealth(_Model):
    targets: list[AlbTargetState] = Field(default_factory=list)


# ------------------------------------------------------------------------------------------------------ Route53
class AliasTarget(_Model):
    dns_name: str
    hosted_zone_id: str
    evaluate_target_health: bool = False


class RecordSet(_Model):
    name: str
    type: str
    ttl: int | None = None
    values: list[str] = Field(default_factory=list)
    set_identifier: str | None = None
    weight: int | None = None
    failover: Literal["PRIMARY", "SECONDARY"] | None = None
    health_check_id: str | None = None
    alias_target: AliasTarget | None = None


class Route53UpsertInput(_Model):
    zone_id: str
    records: list[RecordSet]


class Route53QueryInput(_Model):
    zone_id: str
    name: str
    type: str | None = None


class Route53Records(_Model):
    records: list[RecordSet] = Field(default_factory=list)


# ---------------------------------------------------------------------------------------------------------- RDS
class RdsInstanceRef(_Model):
    identifier: str
    region: str


class RdsInstance(_Model):
    identifier: str
    status: str = ""
    exists: bool = True
    endpoint: str | None = None
    port: int | None = None
    engine: str = ""
    read_replica_source: str | None = None
    replicas: list[str] = Field(default_factory=list)
    arn: str = ""
    promoted: bool = Field(False, description="tagged runbook:promoted=true by rds_promote_replica")
    restored_from: str | None = Field(None, description="snapshot id, from the runbook:restored-from tag")
    parameter_groups: list[str] = Field(default_factory=list, description="DB parameter group names, sorted")


class RdsSnapshotQuery(_Model):
    instance_identifier: str
    region: str
    snapshot_identifier: str | None = Field(None, description="pin this snapshot instead of the newest")
    kinds: list[Literal["automated", "manual"]] = ["automated", "manual"]  # pydantic copies the default per instance


class RdsSnapshot(_Model):
    identifier: str
    created_at: datetime
    instance_identifier: str
    engine: str = ""
    kind: str = ""
    arn: str = ""


class RdsRestoreInput(_Model):
    snapshot_identifier: str
    target_identifier: str
    region: str
    instance_class: str | None = None


class RdsWaitInput(_Model):
    identifier: str
    region: str
    deadline_seconds: float
    poll_seconds: float = 15


class RdsDeleteInput(RdsInstanceRef):
    """Delete an instance; ``wait_gone_seconds`` > 0 also waits until its identifier is free (AWS keeps a deleting
    instance under its name for minutes: a new instance of the same name must wait for it)."""

    wait_gone_seconds: float = Field(0, ge=0)
    poll_seconds: float = Field(15, gt=0)


class RdsDeleteResult(_Model):
    deleted: bool
    existed: bool


class RdsCreateReplicaInput(_Model):
    source_arn_or_id: str
    source_region: str
    replica_identifier: str
    region: str
    instance_class: str | None = None
    parameter_group: str | None = Field(None, description="the replica's DB parameter group (None: the default)")


class RdsParameterGroupInput(_Model):
    """Set an instance's DB parameter group (applied immediately); a no-op when it already has it."""

    identifier: str
    region: str
    parameter_group: str


class RdsReplicaLag(_Model):
    lag_seconds: float | None = None


class RdsFenceInput(_Model):
    identifier: str
    region: str
    parameter_group: str | None = Field(None, description="read-only parameter group; None = stop the instance")


class RdsFenceResult(_Model):
    fenced: bool
    how: str = ""
    reason: str = ""


# ----------------------------------------------------------------------------------------------------------- S3
class S3PutJsonInput(_Model):
    bucket: str
    key: str
    document: dict
    ensure_versioned: bool = True
    region: str | None = None


class S3ObjectKey(_Model):
    bucket: str
    key: str


class S3ObjectRef(_Model):
    bucket: str
    key: str
    version_id: str | None = None
    etag: str = ""


class S3JsonDocument(_Model):
    document: dict | None = None
    version_id: str | None = None


class S3DeleteResult(_Model):
    deleted: bool
    existed: bool


class S3LatestQuery(_Model):
    bucket: str
    prefix: str = ""


class S3ObjectInfo(_Model):
    key: str
    last_modified: datetime
    size: int
    version_id: str | None = None


class S3BucketRef(_Model):
    bucket: str
    region: str | None = None


class S3BucketInfo(_Model):
    bucket: str
    exists: bool
