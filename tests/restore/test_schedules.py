"""The catalog entry plans a valid drill, and a Temporal Schedule (dev server) fires one that passes and cleans up."""

from __future__ import annotations

import asyncio
import json
import shutil
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from temporalio.client import ScheduleOverlapPolicy

from core.catalog import Catalog, ParameterError
from core.restore import RestoreDrillInput
from starters.schedules import ScheduleError, create_schedule, delete_schedule, list_schedules
from tests import harness
from tests.restore.conftest import DUMP_BUCKET, REPORT_BUCKET, database_exists, upload_dump
from tests.restore.test_restore_drill import activities_for, scratch_of
from workflows.restore_drill import RestoreDrill, RestoreDrillResult

INPUTS = {"RestoreDrill": RestoreDrillInput}
YAML = Path(__file__).resolve().parents[2] / "runbooks" / "restore-drill.yaml"


@pytest.fixture
def catalog(tmp_path: Path) -> Catalog:
    shutil.copy(YAML, tmp_path / YAML.name)
    return Catalog.load(tmp_path, inputs=INPUTS)


def params(pg_server, **kw) -> dict:
    return {"database": "shop", "report_bucket": REPORT_BUCKET, "dump_bucket": DUMP_BUCKET, "dump_prefix": "shop/",
            "restore_server": pg_server.model_dump(), **kw}


def test_catalog_entry_plans_a_drill_with_policy_targets(catalog, pg_server):
    plan = catalog.plan_start("restore-drill", params(pg_server), requested_by="tester", inputs=INPUTS)
    assert plan.workflow_id == "restore-drill-production-shop" and plan.meta.approval.required_approvals == 0
    assert len(plan.input.checks) == 6 and plan.input.tier == "standard"
    tier1 = catalog.plan_start("restore-drill", params(pg_server, tier="tier-1", rpo_target="2m"),
                               requested_by="tester", inputs=INPUTS)
    assert (tier1.input.tier, tier1.input.rpo_target) == ("tier-1", timedelta(minutes=2))
    with pytest.raises(ParameterError, match="restore_server"):  # a pg_dump drill needs a server to restore to
        catalog.plan_start("restore-drill", {"database": "shop", "report_bucket": "r", "dump_bucket": "d"},
                           requested_by="tester", inputs=INPUTS)
    with pytest.raises(ParameterError, match="tier"):
        catalog.plan_start("restore-drill", params(pg_server, tier="gold"), requested_by="tester", inputs=INPUTS)


async def test_schedule_fires_a_drill(dev_env, recording, db_activities, s3, source_db, fresh_dump, pg_server, admin_uri, catalog):
    client = dev_env.client
    task_queue = harness.new_task_queue()
    upload_dump(s3, "shop/nightly.dump", fresh_dump)
    s3.put_object(Bucket=DUMP_BUCKET, Key="manifests/shop/nightly.dump.json",
                  Body=json.dumps(source_db.manifest(datetime.now(timezone.utc))).encode())
    plan = catalog.plan_start("restore-drill", params(pg_server), requested_by="tester", inputs=INPUTS)
    schedule_id = f"restore-drill-shop-{uuid.uuid4().hex[:6]}"

    async with harness.running_worker(client, task_queue, [RestoreDrill], activities_for(db_activities, recording)):
        await create_schedule(client, plan, schedule_id, "0 3 1 * *", task_queue)
        with pytest.raises(ScheduleError, match="already exists"):
            await create_schedule(client, plan, schedule_id, "0 3 1 * *", task_queue)
        handle = client.get_schedule_handle(schedule_id)
        described = await handle.describe()
        assert described.schedule.policy.overlap == ScheduleOverlapPolicy.SKIP
        await handle.trigger()
        described = await harness.poll(handle.describe, lambda d: d.info.recent_actions, "the schedule starts a run")
        workflow_id = described.info.recent_actions[0].action.workflow_id
        assert workflow_id and workflow_id.startswith(plan.workflow_id)
        result = await client.get_workflow_handle(workflow_id, result_type=RestoreDrillResult).result()
        assert result.report.passed, result.report.failures
        assert not database_exists(admin_uri, scratch_of(workflow_id))
        started = [e for e in recording[0].events if e.workflow_id == workflow_id]
        assert started and started[-1].kind == "finished"

        async def ours() -> list:
            return [s for s in await list_schedules(client) if s.schedule_id == schedule_id]

        listed = await harness.poll(ours, bool, "the schedule listed")  # the schedule list is eventually consistent
        assert listed and listed[0].runbook == "restore-drill" and listed[0].cron == "0 3 1 * *"
        assert listed[0].params["database"] == "shop" and listed[0].workflow_type == "RestoreDrill"
        assert listed[0].next_runs and listed[0].next_runs[0].day == 1

        await delete_schedule(client, schedule_id)
        with pytest.raises(ScheduleError, match="no schedule"):
            await delete_schedule(client, schedule_id)


def test_bad_cron_is_refused_before_the_server(catalog, pg_server):
    plan = catalog.plan_start("restore-drill", params(pg_server), requested_by="tester", inputs=INPUTS)
    with pytest.raises(ScheduleError, match="not a cron expression"):
        asyncio.run(create_schedule(None, plan, "x", "every monday", "q"))  # type: ignore[arg-type]
