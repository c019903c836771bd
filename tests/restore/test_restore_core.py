"""Pure parts of the restore drill: check declarations, verdicts, scratch names, policy targets."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import pytest
from pydantic import TypeAdapter, ValidationError

from core.restore import (
    BackupRef,
    CheckResult,
    ChecksumCheck,
    FreshnessCheck,
    Measurement,
    RestoreCheck,
    RestoreManifest,
    RestoreReport,
    RowCountCheck,
    evaluate_check,
    judge,
    scratch_name,
    targets_for,
)

CHECKS = TypeAdapter(list[RestoreCheck])


def test_checks_parse_from_yaml_shapes_and_refuse_bad_ones():
    checks = CHECKS.validate_python([
        {"kind": "tables_present", "tables": ["orders", "billing.invoices"]},
        {"kind": "row_count", "table": "orders", "tolerance_pct": 2},
        {"kind": "freshness", "table": "orders", "column": "updated_at", "max_lag": "10m"},
    ])
    assert [c.name for c in checks] == ["tables_present", "row_count:orders", "freshness:orders.updated_at"]
    assert checks[2].max_lag == timedelta(minutes=10)
    for bad in (
        {"kind": "tables_present", "tables": ["orders; DROP TABLE x"]},
        {"kind": "row_count", "table": "orders", "baseline": "value"},  # no expected
        {"kind": "checksum", "query": "SELECT 1"},  # unnamed: the manifest is keyed by name
        {"kind": "assert", "sql": "SELECT true"},
        {"kind": "freshness", "table": "orders", "column": "a b"},
        {"kind": "nonsense"},
    ):
        with pytest.raises(ValidationError):
            CHECKS.validate_python([bad])


def test_row_count_tolerance_and_baselines():
    manifest = RestoreManifest(row_counts={"orders": 1000})
    check = RowCountCheck(table="orders", tolerance_pct=1)
    assert evaluate_check(check, Measurement(name=check.name, kind="row_count", value=990), manifest, None).passed
    assert not evaluate_check(check, Measurement(name=check.name, kind="row_count", value=989), manifest, None).passed
    missing = evaluate_check(check, Measurement(name=check.name, kind="row_count", value=1000), None, None)
    assert not missing.passed and "no manifest" in missing.detail
    source = RowCountCheck(table="orders", baseline="source")
    assert evaluate_check(source, Measurement(name=source.name, kind="row_count", value=5, source_value=5), None, None).passed
    failed = evaluate_check(check, Measurement(name=check.name, kind="row_count", error="relation does not exist"), manifest, None)
    assert not failed.passed and "relation does not exist" in failed.detail


def test_checksum_and_freshness_verdicts():
    checksum = ChecksumCheck(name="sum", query="SELECT 1")
    manifest = RestoreManifest(checksums={"sum": "abc"})
    assert evaluate_check(checksum, Measurement(name="sum", kind="checksum", value="abc"), manifest, None).passed
    assert not evaluate_check(checksum, Measurement(name="sum", kind="checksum", value="abd"), manifest, None).passed
    backup = datetime(2026, 11, 1, 3, 0, tzinfo=timezone.utc)
    fresh = FreshnessCheck(table="orders", column="updated_at", max_lag="10m")
    def at(minutes: int) -> Measurement:
        return Measurement(name=fresh.name, kind="freshness", value=(backup - timedelta(minutes=minutes)).isoformat())

    assert evaluate_check(fresh, at(9), None, backup).passed
    assert not evaluate_check(fresh, at(11), None, backup).passed
    empty = evaluate_check(fresh, Measurement(name=fresh.name, kind="freshness", value=None), None, backup)
    assert not empty.passed and "no rows" in empty.detail


def test_scratch_names_are_deterministic_and_valid():
    wf = "restore-drill-production-shop-2026-11-01T03:00:00Z"
    db, rds = scratch_name(wf, kind="database"), scratch_name(wf, kind="rds")
    assert db == scratch_name(wf, kind="database") and rds == scratch_name(wf, kind="rds")
    assert db != scratch_name(wf + "x", kind="database")
    assert re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", db)
    assert re.fullmatch(r"[a-z](?!.*--)[a-z0-9-]{0,61}[a-z0-9]", rds)
    long = scratch_name("X" * 300, kind="rds")
    assert len(long) <= 63 and not long.endswith("-")


def test_policy_targets():
    assert targets_for("standard", None, None) == (timedelta(minutes=15), timedelta(hours=1))
    assert targets_for("tier-1", None, None) == (timedelta(minutes=5), timedelta(minutes=15))
    assert targets_for("tier-1", timedelta(minutes=1), None) == (timedelta(minutes=1), timedelta(minutes=15))


def _report(newest: datetime, backup_time: datetime, rto: timedelta | None, passed: bool = True) -> RestoreReport:
    return RestoreReport(
        workflow_id="w", run_id="r", database="shop", kind="pg_dump", tier="standard", started_at=backup_time,
        backup=BackupRef(kind="pg_dump", identifier="s3://b/k", created_at=backup_time),
        checks=[CheckResult(name="freshness:orders.updated_at", kind="freshness", passed=True, value=newest.isoformat()),
                CheckResult(name="row_count:orders", kind="row_count", passed=passed, detail="190 rows, expected 200")],
        rpo_target=timedelta(minutes=15), rto_target=timedelta(hours=1), rto_achieved=rto,
    )


def test_judge_rpo_rto_and_failed_checks():
    t = datetime(2026, 11, 22, 3, 0, tzinfo=timezone.utc)
    ok = judge(_report(t - timedelta(minutes=2, seconds=0.4), t, timedelta(minutes=3)))
    assert ok.passed and ok.failures == [] and ok.rpo_achieved == timedelta(minutes=2) and ok.rpo_met and ok.rto_met
    late = judge(_report(t - timedelta(minutes=40), t, timedelta(minutes=70)))
    assert not late.passed and late.failures == [
        "RPO breach: 40m of writes missing (target 15m)", "RTO breach: restore and checks took 1h10m (target 1h)"]
    broken = _report(t, t, None, passed=False)
    broken.failures = ["pg_restore exited 1"]
    judged = judge(broken)
    assert judged.failures == ["pg_restore exited 1", "check row_count:orders failed: 190 rows, expected 200"]
    assert broken.passed is False and broken.failures == ["pg_restore exited 1"]  # pure: the input is untouched
