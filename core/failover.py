"""The region failover and failback runbooks' contract: inputs, the result, the as-found state a drill reads and
restores, and the pure functions over them (what makes a database unusable, the difference between two
readings, the DNS records that send traffic to a region).

Shared types, no client library: the workflows (workflows/failover.py), the dry run, starters and tests build and
read them without importing a workflow, and the sandbox passes them through instead of rebuilding them per run.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from core.aws import RdsInstance, RecordSet
from core.duration import Duration
from core.runbook import RunbookInput, RunbookResult


# --------------------------------------------------------------------------------------------------- types
class RegionSide(BaseModel):
    """One region of the service: where its health endpoint, database, compute and DNS target are."""

    model_config = ConfigDict(extra="forbid")

    region: str
    health_url: str = Field(description="probed from outside, e.g. https://web.us-east-1.example.com/healthz")
    health_expect_body: str | None = None
    database: str = Field(description="RDS instance identifier in this region")
    read_only_parameter_group: str | None = Field(
        None, description="fence writes by applying this parameter group; None = stop the instance"
    )
    k8s_context: str | None = Field(None, description="kubeconfig context of this region's cluster")
    namespace: str = "default"
    deployment: str | None = Field(
        None,
        description="the region's compute (Kubernetes Deployment); None = no compute managed by this runbook: the "
        "fence-compute, scale and standby steps are skipped and recorded as skipped with the reason",
    )
    replicas: int = Field(1, ge=1, description="production size")
    standby_replicas: int = Field(0, ge=0, description="size while this region is the standby")
    dns_value: str = Field(description="record value that sends traffic here (CNAME target or IP)")


class DnsSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    zone_id: str
    record_name: str
    record_type: Literal["A", "AAAA", "CNAME"] = "CNAME"
    ttl: int = Field(60, ge=0)
    routing: Literal["failover", "weighted"] = "failover"
    primary_set_identifier: str = "primary"
    secondary_set_identifier: str = "secondary"


class Timeouts(BaseModel):
    model_config = ConfigDict(extra="forbid")

    promote: Duration = timedelta(minutes=30)
    rollout: Duration = timedelta(minutes=10)
    rollout_poll_seconds: float = 5
    hold: Duration = Field(timedelta(hours=24), description="how long a held run waits for a person")


class RegionFailoverInput(RunbookInput):
    service: str
    mode: Literal["drill", "real"] = "drill"
    primary: RegionSide
    dr: RegionSide
    dns: DnsSpec
    rto_target: Duration = timedelta(minutes=15)
    confirm_probes: int = Field(3, ge=1, description="consecutive failed probes that confirm the outage")
    confirm_interval: Duration = timedelta(seconds=30)
    confirm_window: Duration = Field(timedelta(minutes=10), description="give up confirming after this long")
    probe_timeout_seconds: float = 5
    verify_passes: int = Field(2, ge=1, description="consecutive passing probes of the DR region")
    verify_attempts: int = Field(10, ge=1)
    verify_interval: Duration = timedelta(seconds=30)
    timeouts: Timeouts = Field(default_factory=Timeouts)
    failback_replica: str | None = Field(
        None, description="drill: identifier of the replica the automatic failback creates (default <db>-failback)"
    )
    max_replica_lag_seconds: float = 30


class RegionFailbackInput(RunbookInput):
    service: str
    original: RegionSide = Field(description="the region to return to (its `database` is ignored: see replica)")
    current: RegionSide = Field(description="the region serving now (its database is the primary)")
    dns: DnsSpec
    replica: str = Field(description="identifier of the read replica created in the original region, then promoted")
    max_replica_lag_seconds: float = Field(30, gt=0)
    catch_up_timeout: Duration = timedelta(hours=1)
    catch_up_poll: Duration = timedelta(seconds=30)
    rto_target: Duration = timedelta(minutes=15)
    probe_timeout_seconds: float = 5
    verify_passes: int = Field(2, ge=1)
    verify_attempts: int = Field(10, ge=1)
    verify_interval: Duration = timedelta(seconds=30)
    timeouts: Timeouts = Field(default_factory=Timeouts)


# ------------------------------------------------------------------------------------------ as-found state (drills)
class DbState(BaseModel):
    """What the run needs to know of one database to put it back: its role and everything the roles hang on."""

    identifier: str
    region: str
    exists: bool = True
    role: Literal["primary", "replica", "absent", "unreadable"] = "primary"
    source: str | None = Field(None, description="replication source as <region>/<identifier> (replicas only)")
    parameter_groups: list[str] = Field(default_factory=list)
    status: str = ""
    endpoint: str | None = None

    @property
    def key(self) -> str:
        return f"{self.region}/{self.identifier}"


class ComputeState(BaseModel):
    region: str
    deployment: str
    replicas: int | None = Field(None, description="spec.replicas; None = unreadable")

    @property
    def key(self) -> str:
        return f"{self.region}/{self.deployment}"


class AsFound(BaseModel):
    """The state of everything a run touches, read with read-only activities (before it starts, and after)."""

    databases: list[DbState] = Field(default_factory=list)
    records: list[RecordSet] = Field(default_factory=list, description="the DNS record's sets, by set identifier")
    compute: list[ComputeState] = Field(default_factory=list)
    unreadable: list[str] = Field(default_factory=list, description="what could not be read (a region down)")

    def db(self, region: str, identifier: str) -> DbState | None:
        return next((d for d in self.databases if d.region == region and d.identifier == identifier), None)

    def replicas(self, region: str, deployment: str | None) -> int | None:
        found = next((c for c in self.compute if c.region == region and c.deployment == deployment), None)
        return found.replicas if found else None


def db_state(inst: RdsInstance, region: str) -> DbState:
    """Role from what RDS says: a replica names its source (moto keeps the link after a promotion, so our
    ``runbook:promoted`` tag says "primary" too)."""
    if not inst.exists or inst.status == "deleting":  # a database being deleted is gone for what the run knows
        return DbState(identifier=inst.identifier, region=region, exists=False, role="absent", status=inst.status)
    source = None
    if inst.read_replica_source and not inst.promoted:
        parts = inst.read_replica_source.split(":")
        source = f"{parts[3]}/{parts[-1]}" if len(parts) >= 7 else f"{region}/{parts[-1]}"
    return DbState(
        identifier=inst.identifier,
        region=region,
        role="replica" if source else "primary",
        source=source,
        parameter_groups=sorted(inst.parameter_groups),
        status=inst.status,
        endpoint=inst.endpoint,
    )


def record_view(record: RecordSet) -> str:
    """A record set as compared between two readings (its values in any order are the same)."""
    data = record.model_dump(exclude_none=True)
    data["values"] = sorted(record.values)
    return str(sorted(data.items()))


def compare_as_found(before: AsFound, after: AsFound) -> list[str]:
    """Every difference between two readings, one line each, for people (pure: the drill's verdict)."""
    diffs: list[str] = []
    for was in before.databases:
        now = after.db(was.region, was.identifier)
        if now is None or now.role == "unreadable" or was.role == "unreadable":
            diffs.append(f"database {was.key}: not read both times")
            continue
        if was.role == now.role == "absent":
            continue
        for name in ("role", "source", "parameter_groups", "status", "endpoint"):
            a, b = getattr(was, name), getattr(now, name)
            if a != b:
                diffs.append(f"database {was.key}: {name} {b} (was {a})")
    wanted = {r.set_identifier: record_view(r) for r in before.records}
    got = {r.set_identifier: record_view(r) for r in after.records}
    for sid in sorted(set(wanted) | set(got), key=str):
        if wanted.get(sid) != got.get(sid):
            diffs.append(f"DNS record {sid}: {got.get(sid) or 'absent'} (was {wanted.get(sid) or 'absent'})")
    for compute in before.compute:
        now_replicas = after.replicas(compute.region, compute.deployment)
        if compute.replicas != now_replicas:
            diffs.append(f"compute {compute.key}: {now_replicas} replicas (was {compute.replicas})")
    return diffs


def failover_problems(primary: DbState, dr: DbState, mode: str, extras: list[DbState]) -> list[str]:
    """What makes a failover's databases unusable, as read (empty: go on); ``extras``: what a drill creates (pure:
    the run's look and the dry run judge alike)."""
    problems: list[str] = []
    if primary.role == "absent":
        problems.append(f"primary database {primary.key} does not exist")
    if dr.role == "absent":
        problems.append(f"DR database {dr.key} does not exist")
    elif dr.role != "replica":
        problems.append(f"DR database {dr.key} is not a read replica (already failed over?)")
    if mode == "drill":
        if primary.role == "primary" and dr.role == "replica" and dr.source != primary.key:
            problems.append(f"DR database {dr.key} replicates {dr.source}, not {primary.key}")
        problems += [f"{e.key} already exists (a drill creates and removes it)" for e in extras if e.role != "absent"]
    return problems


def failback_problems(serving: DbState, replica: DbState) -> list[str]:
    """What makes a failback's databases unusable, as read (empty: go on)."""
    problems: list[str] = []
    if serving.role == "absent":
        problems.append(f"database {serving.key} does not exist")
    elif serving.role != "primary":
        problems.append(f"database {serving.key} is a replica of {serving.source}, not the writable primary")
    if replica.role != "absent" and (replica.role != "replica" or replica.source != serving.key):
        problems.append(f"{replica.key} exists and is not a read replica of {serving.key}")
    return problems


# --------------------------------------------------------------------------------------------------- results
class RegionMoveResult(RunbookResult):
    outcome: str = Field(description="what happened, one word: failed_over, failed_back, no_failover_needed, ...")
    from_region: str
    to_region: str
    fenced: list[str] = Field(default_factory=list)
    not_fenced: list[str] = Field(default_factory=list)
    dns_shifted: bool = False
    left_in_place: list[str] = Field(
        default_factory=list, description="the state the run deliberately leaves for a person (never flapping back)"
    )
    rto_seconds: float | None = Field(None, description="start of the run -> DR verified (workflow clock)")
    rto_target_seconds: float
    rto_met: bool | None = None
    evidence: list[str] = Field(default_factory=list, description="probe results that led to the decision")
    as_found: AsFound | None = Field(None, description="read before the first change")
    after: AsFound | None = Field(None, description="read at the end (drills: after the restore)")
    differences: list[str] = Field(default_factory=list, description="after vs as_found")
    failback: "RegionMoveResult | None" = None


def dns_records(dns: DnsSpec, active: RegionSide, standby: RegionSide) -> list[RecordSet]:
    """The records that send the traffic to ``active`` (pure: the same input always gives the same UPSERT)."""
    base = dict(name=dns.record_name, type=dns.record_type, ttl=dns.ttl)
    if dns.routing == "failover":
        return [
            RecordSet(**base, values=[active.dns_value], set_identifier=dns.primary_set_identifier, failover="PRIMARY"),
            RecordSet(**base, values=[standby.dns_value], set_identifier=dns.secondary_set_identifier, failover="SECONDARY"),
        ]
    return [
        RecordSet(**base, values=[active.dns_value], set_identifier=active.region, weight=100),
        RecordSet(**base, values=[standby.dns_value], set_identifier=standby.region, weight=0),
    ]
