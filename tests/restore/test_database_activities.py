"""DatabaseActivities alone, on the real PostgreSQL with real pg_dump/pg_restore, S3 in moto, credentials in OpenBao."""

from __future__ import annotations

import pytest
from temporalio.testing import ActivityEnvironment

from core.restore import (
    FreshnessCheck,
    PgCloneInput,
    PgRestoreDumpInput,
    PgRunChecksInput,
    PgScratchInput,
    RowCountCheck,
    SqlAssertion,
    TablesPresentCheck,
    evaluate_check,
)
from tests.restore.conftest import DUMP_BUCKET, database_exists, ref, upload_dump


def test_restore_streams_dump_and_checks_measure_it(db_activities, s3, fresh_dump, source_db, pg_server, admin_uri, scratch_name):
    upload_dump(s3, "shop/2026-11-22.dump", fresh_dump)
    env = ActivityEnvironment()
    result = env.run(db_activities.pg_restore_dump, PgRestoreDumpInput(
        server=pg_server, database=scratch_name, bucket=DUMP_BUCKET, key="shop/2026-11-22.dump"))
    assert result.ok, result.errors
    assert result.bytes_streamed == len(fresh_dump)
    checks = [
        TablesPresentCheck(tables=["orders", "public.customers", "invoices"]),
        RowCountCheck(table="orders", baseline="value", expected=source_db.counts["orders"]),
        SqlAssertion(name="no orphans", sql="SELECT NOT EXISTS (SELECT 1 FROM orders o LEFT JOIN customers c ON c.id = o.customer_id WHERE c.id IS NULL)"),
        SqlAssertion(name="bad sql", sql="SELECT * FROM nowhere"),
        FreshnessCheck(table="orders", column="updated_at"),
    ]
    measured = env.run(db_activities.pg_run_checks, PgRunChecksInput(target=ref(pg_server, scratch_name), checks=checks))
    by_name = {m.name: m for m in measured.measurements}
    assert by_name["tables_present"].value == ["invoices"]
    assert by_name["row_count:orders"].value == 200
    assert by_name["no orphans"].value is True
    assert "nowhere" in by_name["bad sql"].error
    verdicts = [evaluate_check(c, by_name[c.name], None, None) for c in checks]
    assert [v.passed for v in verdicts] == [False, True, True, False, True]
    assert verdicts[4].value.startswith(source_db.newest.isoformat()[:19])
    env.run(db_activities.pg_drop_database, PgScratchInput(server=pg_server, database=scratch_name))
    assert not database_exists(admin_uri, scratch_name)


def test_retried_restore_replaces_its_own_leftover(db_activities, s3, fresh_dump, pg_server, admin_uri, scratch_name):
    """A second attempt with the same deterministic name drops the first attempt's database and restores cleanly."""
    upload_dump(s3, "shop/a.dump", fresh_dump)
    env = ActivityEnvironment()
    req = PgRestoreDumpInput(server=pg_server, database=scratch_name, bucket=DUMP_BUCKET, key="shop/a.dump")
    first = env.run(db_activities.pg_restore_dump, req)
    second = env.run(db_activities.pg_restore_dump, req)
    assert first.ok and not first.dropped_leftover
    assert second.ok and second.dropped_leftover, second.errors  # no "already exists" errors on the second pass
    dropped = env.run(db_activities.pg_drop_database, PgScratchInput(server=pg_server, database=scratch_name))
    assert dropped.existed
    again = env.run(db_activities.pg_drop_database, PgScratchInput(server=pg_server, database=scratch_name))
    assert not again.existed and not database_exists(admin_uri, scratch_name)


def test_truncated_dump_reports_pg_restore_errors(db_activities, s3, fresh_dump, pg_server, scratch_name):
    upload_dump(s3, "shop/cut.dump", fresh_dump[: len(fresh_dump) // 2])
    env = ActivityEnvironment()
    result = env.run(db_activities.pg_restore_dump, PgRestoreDumpInput(
        server=pg_server, database=scratch_name, bucket=DUMP_BUCKET, key="shop/cut.dump"))
    assert not result.ok and result.errors
    env.run(db_activities.pg_drop_database, PgScratchInput(server=pg_server, database=scratch_name))


def test_missing_dump_is_not_found(db_activities, s3, pg_server, scratch_name):
    from temporalio.exceptions import ApplicationError

    with pytest.raises(ApplicationError) as err:
        ActivityEnvironment().run(db_activities.pg_restore_dump, PgRestoreDumpInput(
            server=pg_server, database=scratch_name, bucket=DUMP_BUCKET, key="nope.dump"))
    assert err.value.type == "NotFound" and err.value.non_retryable


def test_clone_from_template(db_activities, source_db, pg_server, admin_uri, scratch_name):
    env = ActivityEnvironment()
    res = env.run(db_activities.pg_clone_database, PgCloneInput(server=pg_server, template=source_db.name, database=scratch_name))
    assert not res.dropped_leftover and database_exists(admin_uri, scratch_name)
    res = env.run(db_activities.pg_clone_database, PgCloneInput(server=pg_server, template=source_db.name, database=scratch_name))
    assert res.dropped_leftover
    env.run(db_activities.pg_drop_database, PgScratchInput(server=pg_server, database=scratch_name))
