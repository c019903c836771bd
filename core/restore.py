"""Backup restore drills: where a backup is, the checks declared in the runbook YAML, and the typed report.

Measuring is separate from judging: the database activity measures (runs each check's query and returns the raw
value), and the pure functions here (``evaluate_check``, ``judge``) turn measurements, the backup manifest and
the policy targets into pass/fail. No client library is imported here.
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime, timedelta, timezone
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator

from core.duration import Duration, format_duration
from core.runbook import RunbookInput, RunbookResult

# Policy targets: monthly restore tests against RPO/RTO targets; tier-1 services have tighter ones.
TIER_TARGETS: dict[str, tuple[timedelta, timedelta]] = {
    "standard": (timedelta(minutes=15), timedelta(hours=1)),
    "tier-1": (timedelta(minutes=5), timedelta(minutes=15)),
}

Tier = Literal["standard", "tier-1"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ------------------------------------------------------------------------------------------------ where to connect
class PgServer(_Model):
    """A PostgreSQL server. Credentials are a Vault KV v2 path (keys ``username``, ``password``), never values."""

    host: str = Field(description="host name, or a Unix-socket directory (starts with /)")
    port: int = 5432
    maintenance_db: str = Field("postgres", description="database to connect to for CREATE/DROP DATABASE")
    vault_path: str = Field(description="KV v2 path of the credentials, e.g. secret/db/orders-restore")
    sslmode: str | None = None


class PgDatabaseRef(_Model):
    server: PgServer
    database: str


class CheckEndpointOverride(_Model):
    """Run an RDS drill's SQL checks against a local PostgreSQL instead of the restored instance's endpoint.

    The local stack and the tests need this because moto has no database engine behind a restored RDS instance:
    the drill clones ``template_database`` (standing in for the snapshot's data) into its scratch database on
    ``server``, runs the checks there, and drops it at clean-up. Never set it in production.
    """

    server: PgServer
    template_database: str


# ------------------------------------------------------------------------------------------------------- checks
def _table_name(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*)?", value):
        raise ValueError(f"{value!r} is not a table name (write table or schema.table)")
    return value


class _Check(_Model):
    name: str = Field("", description="how reports and alerts call the check; derived when empty")


class TablesPresentCheck(_Check):
    kind: Literal["tables_present"] = "tables_present"
    tables: list[str] = Field(min_length=1)

    @model_validator(mode="after")
    def _named(self) -> "TablesPresentCheck":
        self.tables = [_table_name(t) for t in self.tables]
        self.name = self.name or "tables_present"
        return self


class RowCountCheck(_Check):
    """Rows of a table within ``tolerance_pct`` of the expected count: a literal, the manifest, or the source."""

    kind: Literal["row_count"] = "row_count"
    table: str
    baseline: Literal["manifest", "source", "value"] = "manifest"
    expected: int | None = Field(None, ge=0, description="with baseline: value")
    tolerance_pct: float = Field(0.0, ge=0, le=100)

    @model_validator(mode="after")
    def _named(self) -> "RowCountCheck":
        _table_name(self.table)
        if self.baseline == "value" and self.expected is None:
            raise ValueError("baseline: value needs expected")
        self.name = self.name or f"row_count:{self.table}"
        return self


class ChecksumCheck(_Check):
    """A query returning one value (e.g. ``md5(string_agg(...))``) compared with the manifest, the source or a value."""

    kind: Literal["checksum"] = "checksum"
    query: str = Field(min_length=1)
    baseline: Literal["manifest", "source", "value"] = "manifest"
    expected: str | None = None

    @model_validator(mode="after")
    def _named(self) -> "ChecksumCheck":
        if not self.name:
            raise ValueError("a checksum check needs a name (the manifest's checksums are keyed by it)")
        if self.baseline == "value" and self.expected is None:
            raise ValueError("baseline: value needs expected")
        return self


class SqlAssertion(_Check):
    """A query whose first column of its first row must be true."""

    kind: Literal["assert"] = "assert"
    sql: str = Field(min_length=1)

    @model_validator(mode="after")
    def _named(self) -> "SqlAssertion":
        if not self.name:
            raise ValueError("an assertion needs a name")
        return self


class FreshnessCheck(_Check):
    """The newest value of a timestamp column: the newest write the restored data contains (RPO is measured on it).

    ``max_lag`` optionally bounds backup time minus newest write for this table alone.
    """

    kind: Literal["freshness"] = "freshness"
    table: str
    column: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_$]*$")
    max_lag: Duration | None = None

    @model_validator(mode="after")
    def _named(self) -> "FreshnessCheck":
        _table_name(self.table)
        self.name = self.name or f"freshness:{self.table}.{self.column}"
        return self


RestoreCheck = Annotated[
    Union[TablesPresentCheck, RowCountCheck, ChecksumCheck, SqlAssertion, FreshnessCheck],
    Field(discriminator="kind"),
]


class RestoreManifest(_Model):
    """Recorded at backup time next to the dump (``<dump key>.manifest.json``)."""

    model_config = ConfigDict(extra="ignore")

    backup_time: datetime | None = Field(None, description="when pg_dump took its snapshot")
    row_counts: dict[str, int] = Field(default_factory=dict)
    checksums: dict[str, str] = Field(default_factory=dict)


# ------------------------------------------------------------------------------------------ activity inputs/results
class PgScratchInput(_Model):
    server: PgServer
    database: str


class PgDropResult(_Model):
    database: str
    existed: bool


class PgCloneInput(_Model):
    server: PgServer
    template: str
    database: str


class PgRestoreDumpInput(_Model):
    server: PgServer
    database: str = Field(description="scratch database to (re)create and restore into")
    bucket: str
    key: str
    version_id: str | None = None
    manifest_key: str | None = Field(None, description="JSON manifest to read alongside the dump; missing is fine")
    jobs_timeout_seconds: float = Field(3600, description="pg_restore is killed after this long")


class PgRestoreDumpResult(_Model):
    database: str
    bytes_streamed: int
    exit_code: int
    errors: list[str] = Field(default_factory=list, description="pg_restore's error lines (last 20)")
    manifest: RestoreManifest | None = None
    dropped_leftover: bool = False

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


class PgRunChecksInput(_Model):
    target: PgDatabaseRef
    checks: list[RestoreCheck]
    source: PgDatabaseRef | None = Field(None, description="for baseline: source checks")
    statement_timeout_seconds: float = 300


class Measurement(_Model):
    name: str
    kind: str
    value: Any = None
    source_value: Any = None
    error: str | None = None


class PgChecksMeasured(_Model):
    measurements: list[Measurement]


# ------------------------------------------------------------------------------------------------------- report
class BackupRef(_Model):
    kind: Literal["pg_dump", "rds_snapshot"]
    identifier: str = Field(description="S3 URI of the dump, or the snapshot identifier")
    version_id: str | None = None
    created_at: datetime
    size_bytes: int | None = None
    age: Duration | None = Field(None, description="drill start minus backup time")


class CheckResult(_Model):
    name: str
    kind: str
    passed: bool
    value: Any = None
    expected: Any = None
    detail: str = ""


class RestoreReport(_Model):
    workflow_id: str
    run_id: str
    database: str
    kind: Literal["pg_dump", "rds_snapshot"]
    tier: str
    backup: BackupRef | None = None
    scratch: str = Field("", description="scratch database or instance identifier")
    checks_endpoint: str = Field("", description="where the SQL checks ran (host/database), says so when overridden")
    checks: list[CheckResult] = Field(default_factory=list)
    started_at: datetime
    restore_started_at: datetime | None = None
    checks_passed_at: datetime | None = None
    newest_write: datetime | None = None
    rpo_target: Duration
    rpo_achieved: Duration | None = None
    rpo_met: bool = False
    rto_target: Duration
    rto_achieved: Duration | None = None
    rto_met: bool = False
    passed: bool = False
    failures: list[str] = Field(default_factory=list, description="one line per reason the drill failed")
    cleanup: list[str] = Field(default_factory=list)
    report_uri: str | None = None


# ------------------------------------------------------------------------------------------------------- judging
def targets_for(tier: str, rpo: timedelta | None, rto: timedelta | None) -> tuple[timedelta, timedelta]:
    default_rpo, default_rto = TIER_TARGETS[tier]
    return rpo or default_rpo, rto or default_rto


def scratch_name(workflow_id: str, *, kind: Literal["database", "rds"]) -> str:
    """A deterministic scratch identifier from the workflow id: the same run always finds its own scratch.

    PostgreSQL identifiers: lowercase, underscores, at most 63 bytes. RDS identifiers: letters, digits, single
    hyphens, starting with a letter, at most 63 characters.
    """
    digest = hashlib.sha256(workflow_id.encode()).hexdigest()[:10]
    slug = re.sub(r"[^a-z0-9]+", "-", workflow_id.lower()).strip("-")[:36].strip("-")
    if kind == "rds":
        return f"drill-{slug}-{digest}" if slug else f"drill-{digest}"
    return f"drill_{slug.replace('-', '_')}_{digest}" if slug else f"drill_{digest}"


def as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def evaluate_check(
    check: TablesPresentCheck | RowCountCheck | ChecksumCheck | SqlAssertion | FreshnessCheck,
    measured: Measurement | None,
    manifest: RestoreManifest | None,
    backup_time: datetime | None,
) -> CheckResult:
    """Judge one measured check. Pure: the same inputs always give the same verdict."""
    base = {"name": check.name, "kind": check.kind}
    if measured is None:
        return CheckResult(**base, passed=False, detail="not measured")
    if measured.error:
        return CheckResult(**base, passed=False, detail=f"query failed: {measured.error}")
    value = measured.value
    if isinstance(check, TablesPresentCheck):
        missing = list(value or [])
        return CheckResult(
            **base, passed=not missing, value=missing, expected=[],
            detail=f"missing: {', '.join(missing)}" if missing else f"{len(check.tables)} table(s) present",
        )
    if isinstance(check, (RowCountCheck, ChecksumCheck)):
        expected, where = _expected(check, measured, manifest)
        if expected is None:
            return CheckResult(**base, passed=False, value=value, detail=f"no expected value ({where})")
        if isinstance(check, RowCountCheck):
            allowed = int(expected) * check.tolerance_pct / 100
            diff = abs(int(value) - int(expected))
            ok = diff <= allowed
            detail = f"{value} rows, expected {expected} ±{check.tolerance_pct:g}% ({where})"
        else:
            ok = str(value) == str(expected)
            detail = f"{'matches' if ok else 'differs from'} {where}"
        return CheckResult(**base, passed=ok, value=value, expected=expected, detail=detail)
    if isinstance(check, SqlAssertion):
        ok = value is True
        return CheckResult(**base, passed=ok, value=value, expected=True, detail="" if ok else f"returned {value!r}")
    # freshness
    if value is None:
        return CheckResult(**base, passed=False, value=None, detail=f"{check.table} has no rows with {check.column}")
    newest = as_utc(datetime.fromisoformat(value) if isinstance(value, str) else value)
    if check.max_lag is None or backup_time is None:
        return CheckResult(**base, passed=True, value=newest.isoformat(), detail="newest write")
    lag = as_utc(backup_time) - newest
    ok = lag <= check.max_lag
    return CheckResult(
        **base, passed=ok, value=newest.isoformat(), expected=f"lag <= {check.max_lag}",
        detail=f"newest write {lag} before the backup",
    )


def _expected(check: RowCountCheck | ChecksumCheck, measured: Measurement, manifest: RestoreManifest | None) -> tuple[Any, str]:
    if check.baseline == "value":
        return check.expected, "declared value"
    if check.baseline == "source":
        return measured.source_value, "source database"
    if manifest is None:
        return None, "no manifest next to the backup"
    if isinstance(check, RowCountCheck):
        return manifest.row_counts.get(check.table), "manifest"
    return manifest.checksums.get(check.name), "manifest"


def newest_write(checks: list[Any], results: list[CheckResult]) -> datetime | None:
    """The newest write the restored data contains, across every freshness check that found one."""
    names = {c.name for c in checks if getattr(c, "kind", None) == "freshness"}
    stamps = [as_utc(datetime.fromisoformat(r.value)) for r in results if r.name in names and r.value]
    return max(stamps) if stamps else None


def whole(value: timedelta) -> timedelta:
    """A duration rounded to whole seconds (reports and verdicts)."""
    return timedelta(seconds=round(value.total_seconds()))


def judge(report: RestoreReport) -> RestoreReport:
    """The drill's verdict once its checks have run: every failed check, the RPO and RTO achieved against their
    targets, and ``passed``. Pure: returns a judged copy; the failures already in the report stay first."""
    r = report.model_copy(deep=True)
    failures = [f"check {c.name} failed: {c.detail}" for c in r.checks if not c.passed]
    r.newest_write = newest_write([c for c in r.checks if c.kind == "freshness"], r.checks)
    if r.backup is not None and r.checks:
        if r.newest_write is None:
            failures.append("RPO not measured: declare a freshness check on a timestamp column")
        else:
            r.rpo_achieved = whole(max(timedelta(0), as_utc(r.backup.created_at) - r.newest_write))
            r.rpo_met = r.rpo_achieved <= r.rpo_target
            if not r.rpo_met:
                failures.append(f"RPO breach: {format_duration(r.rpo_achieved)} of writes missing "
                                f"(target {format_duration(r.rpo_target)})")
    if r.rto_achieved is not None:
        r.rto_met = r.rto_achieved <= r.rto_target
        if not r.rto_met:
            failures.append(f"RTO breach: restore and checks took {format_duration(whole(r.rto_achieved))} "
                            f"(target {format_duration(r.rto_target)})")
    elif not failures:
        failures.append("RTO not measured: the checks did not complete")
    r.failures += failures
    r.passed = not r.failures
    return r


class PgCloneResult(_Model):
    database: str
    dropped_leftover: bool = False


# --------------------------------------------------------------------------------------------------- the runbook's contract
SnapshotKind = Literal["automated", "manual"]


def _every_snapshot_kind() -> list[SnapshotKind]:
    return ["automated", "manual"]


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
    snapshot_kinds: list[SnapshotKind] = Field(default_factory=_every_snapshot_kind)
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
            missing = [] if self.source_instance is not None else ["source_instance"]
            if self.check_endpoint_override is None and not self.rds_vault_path:
                missing.append("rds_vault_path (or check_endpoint_override)")
        if missing:
            raise ValueError(f"a {self.kind} drill needs {', '.join(missing)}")
        if not self.checks:
            raise ValueError("declare at least one check: a drill must verify the restored data")
        return self


class RestoreDrillResult(RunbookResult):
    report: RestoreReport
