"""Single flight per service across runbooks, through the product's RunbookClient (what `runbook start`, the gateway
and schedules use) on the time-skipping server: while a release of a service runs, a stand-alone canary-ramp or
blue-green of that service is refused as already running (and a dry run says so), and the reverse; another service
is not refused, and the release's own children (started by the release, not through the client) are not refused."""

from __future__ import annotations

import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

import pytest
from temporalio.testing import WorkflowEnvironment

from activities.release_ledger import ReleaseLedgerActivities
from core.catalog import Catalog, StartPlan
from starters.client import RunbookClient
from tests import harness
from tests.release.stand_ins import Fleet, router
from workflows.canary_ramp import CanaryRamp
from workflows.registry import inputs
from workflows.release import Release

SESSION_LOOP = pytest.mark.asyncio(loop_scope="session")  # not module-wide: one test here is sync
RUNBOOKS = Path(__file__).resolve().parents[2] / "runbooks"


def _catalog() -> Catalog:
    folder = Path(tempfile.mkdtemp(prefix="single-flight-"))
    for name in ("release.yaml", "canary-ramp.yaml", "blue-green.yaml", "groups.yaml"):
        shutil.copy(RUNBOOKS / name, folder / name)
    return Catalog.load(folder)


CATALOG = _catalog()
PLAN = [{"set_weight": 50}, {"set_weight": 100}]


def plan(runbook: str, service: str, **params: Any) -> StartPlan:
    defaults: dict[str, dict[str, Any]] = {
        "release": {"version": "v2"},
        "canary-ramp": {"version": "v2"},
        "blue-green": {"image": "v2", "router": "alb", "alb": {"load_balancer": "demo-alb", "port": 80},
                       "preview_urls": {"blue": "http://127.0.0.1:1/blue", "green": "http://127.0.0.1:1/green"}},
    }
    return CATALOG.plan_start(runbook, {"service": service, **defaults[runbook], **params}, requested_by="dave",
                              inputs=inputs())


@SESSION_LOOP
async def test_a_release_and_a_stand_alone_canary_or_cutover_of_one_service_exclude_each_other(
        ts_env: WorkflowEnvironment) -> None:
    """No worker polls this task queue: a started run stays Running, which is all single flight looks at."""
    runs = RunbookClient(ts_env.client, harness.new_task_queue())
    service, other = f"svc-{uuid.uuid4().hex[:8]}", f"svc-{uuid.uuid4().hex[:8]}"
    started = []
    try:
        release = await runs.start(plan("release", service))
        assert release.started and release.workflow_id == f"release:{service}"
        started.append(release.handle)
        for runbook, key in (("canary-ramp", "canary"), ("blue-green", "bluegreen")):
            refused = await runs.start(plan(runbook, service))
            assert not refused.started, runbook
            assert (refused.workflow_id, refused.run_id) == (release.workflow_id, release.run_id)
            assert refused.excluded == f"{key}:{service}"
            dry = await runs.dry_run(plan(runbook, service))
            assert (dry.status, dry.workflow_id, dry.excluded) == ("AlreadyRunning", release.workflow_id,
                                                                   f"{key}:{service}")
        assert not await _exists(runs, f"canary:{service}") and not await _exists(runs, f"bluegreen:{service}")
        elsewhere = await runs.start(plan("canary-ramp", other))  # another service: not refused
        assert elsewhere.started
        started.append(elsewhere.handle)
        await release.handle.terminate("test: the release ends")
        canary = await runs.start(plan("canary-ramp", service))  # the release ended: the canary may start
        assert canary.started
        started.append(canary.handle)
        refused = await runs.start(plan("release", service))  # and now a release waits for the canary
        assert not refused.started and refused.workflow_id == f"canary:{service}"
        assert refused.excluded == f"release:{service}"
    finally:
        for handle in started:
            try:
                await handle.terminate("test cleanup")
            except Exception:  # noqa: BLE001 (already ended)
                pass


async def _exists(runs: RunbookClient, workflow_id: str) -> bool:
    from temporalio.service import RPCError

    try:
        await runs.handle(workflow_id).describe()
    except RPCError:
        return False
    return True


@SESSION_LOOP
async def test_the_releases_own_children_are_not_refused(ts_env: WorkflowEnvironment, postgres: str,
                                                         task_queue: str, recording) -> None:
    """A release started through the client runs its canary children while it holds the service."""
    fleet, ledger = Fleet(), ReleaseLedgerActivities(postgres)
    acts = [*fleet.activities(), ledger.ledger_read, ledger.ledger_record, recording[1].notify]
    service = f"svc-{uuid.uuid4().hex[:8]}"
    stages = [{"name": "development", "strategy": "canary", "parameters": {"plan": PLAN, "router": router("development")}}]
    async with harness.running_worker(ts_env.client, task_queue, [Release, CanaryRamp], acts):
        runs = RunbookClient(ts_env.client, task_queue)
        outcome = await runs.start(plan("release", service, stages=stages))
        assert outcome.started
        result = await outcome.handle.result()
    assert result["status"] == "Succeeded", result["summary"]
    child = result["stages"][0]["waves"][0]
    assert child["child_workflow_id"] == f"release:{service}.development.all" and child["child_status"] == "Succeeded"


def test_an_exclusion_over_an_unknown_parameter_is_refused_naming_it() -> None:
    from pydantic import ValidationError

    from core.catalog import RunbookSpec

    entry = {"name": "ramp", "description": "x", "workflow": "CanaryRamp", "target": "{service}",
             "concurrency_key": "canary:{service}", "parameters": {"service": {"type": "string", "required": True}}}
    assert RunbookSpec.model_validate({**entry, "excludes": ["release:{service}"]}).excludes == ["release:{service}"]
    with pytest.raises(ValidationError) as err:
        RunbookSpec.model_validate({**entry, "excludes": ["release:{service}", "bluegreen:{svc}"]})
    assert "excludes.1 uses {svc}, which is not a parameter" in str(err.value)
    # the plan carries the rendered ids; its own id is never among them
    assert plan("canary-ramp", "shop").excludes == ["release:shop"]
    assert plan("release", "shop").excludes == ["canary:shop", "bluegreen:shop"]


@SESSION_LOOP
async def test_runbook_start_of_a_canary_during_a_release_exits_4_naming_the_release(
        dev_env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI as a person runs it, with the product's catalog entries; no worker polls the task queue, so the
    release stays Running."""
    import asyncio

    from typer.testing import CliRunner

    from starters.cli import app

    catalog = tmp_path / "runbooks"
    catalog.mkdir()
    for name in ("release.yaml", "canary-ramp.yaml", "blue-green.yaml", "groups.yaml"):
        shutil.copy(RUNBOOKS / name, catalog / name)
    monkeypatch.setenv("TEMPORAL_ADDRESS", dev_env.client.service_client.config.target_host)
    monkeypatch.setenv("RUNBOOK_CATALOG_DIR", str(catalog))
    monkeypatch.setenv("RUNBOOK_TASK_QUEUE", harness.new_task_queue())
    monkeypatch.setenv("RUNBOOK_USER", "alice")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    service = f"svc-{uuid.uuid4().hex[:8]}"

    async def runbook(*args: str) -> Any:
        return await asyncio.to_thread(CliRunner().invoke, app, list(args))

    release = await runbook("start", "release", "--set", f"service={service}", "--set", "version=v2")
    assert release.exit_code == 0, release.output
    try:
        canary = await runbook("start", "canary-ramp", "--set", f"service={service}", "--set", "version=v2")
        assert canary.exit_code == 4, canary.output
        message = " ".join(canary.stderr.split())
        assert f"already running: release:{service} (run " in message
        assert f"canary:{service} may not run beside it (single flight per service); nothing new was started" in message
        assert f"runbook watch release:{service}" in message
        as_json = await runbook("start", "canary-ramp", "--set", f"service={service}", "--set", "version=v2", "--json")
        assert as_json.exit_code == 4
        import json

        body = json.loads(as_json.stdout)
        assert (body["status"], body["workflow_id"], body["excluded"]) == ("AlreadyRunning", f"release:{service}",
                                                                           f"canary:{service}")
    finally:
        await dev_env.client.get_workflow_handle(f"release:{service}").terminate("test cleanup")


@SESSION_LOOP
async def test_of_two_starts_that_raced_past_the_first_read_the_later_one_is_cancelled(
        ts_env: WorkflowEnvironment) -> None:
    """Two starts in one instant both find nothing running; each then reads again after starting. Both runs are
    started here past the first read (as such a race leaves them), then each start's second read is made."""
    runs = RunbookClient(ts_env.client, harness.new_task_queue())
    service = f"svc-{uuid.uuid4().hex[:8]}"
    first, second = plan("release", service), plan("canary-ramp", service)
    handles = []
    try:
        for planned in (first, second):
            handles.append(await ts_env.client.start_workflow(planned.workflow_type, planned.input,
                                                              id=planned.workflow_id, task_queue=runs.task_queue))
        release, canary = handles
        assert await runs._yield_if_raced(first, release) is None  # the earlier start goes on
        lost = await runs._yield_if_raced(second, canary)
        assert lost is not None and not lost.started
        assert (lost.workflow_id, lost.excluded) == (first.workflow_id, second.workflow_id)
        events = (await canary.fetch_history()).events
        assert any(e.HasField("workflow_execution_cancel_requested_event_attributes") for e in events)
        events = (await release.fetch_history()).events
        assert not any(e.HasField("workflow_execution_cancel_requested_event_attributes") for e in events)
    finally:
        for handle in handles:
            try:
                await handle.terminate("test cleanup")
            except Exception:  # noqa: BLE001 (already ended)
                pass
