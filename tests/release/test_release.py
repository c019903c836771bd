"""The release end to end on the time-skipping server: the product's Release workflow with the product's CanaryRamp
children (stand-in ALBs and metrics per wave, tests/release/stand_ins.py), the real PostgreSQL ledger and real HTTP
checks. Policies come from the product's catalog (runbooks/release.yaml, groups.yaml)."""

from __future__ import annotations

import shutil
import tempfile
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, AsyncIterator, Callable

import pytest
import pytest_asyncio
from temporalio.client import WorkflowFailureError, WorkflowHandle
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from activities.http_checks import HttpCheckActivities
from activities.release_ledger import ReleaseLedgerActivities
from core.approval import ApproveInput, RejectInput
from core.catalog import Catalog
from core.release import LedgerEntry, LedgerQuery, Verdict
from core.runbook import TERMINAL, RunbookStatus
from starters.render import plain_lines
from tests import harness
from tests.release.stand_ins import Fleet, Smoke, router
from workflows.canary_ramp import CanaryRamp
from workflows.registry import inputs
from workflows.release import Release, ReleaseResult


def _catalog() -> Catalog:
    """The product's release entry and approver groups (alone: the test depends on no other catalog file)."""
    folder = Path(tempfile.mkdtemp(prefix="release-catalog-"))
    for name in ("release.yaml", "groups.yaml"):
        shutil.copy(RUNBOOKS / name, folder / name)
    return Catalog.load(folder)


RUNBOOKS = Path(__file__).resolve().parents[2] / "runbooks"
CATALOG = _catalog()
PLAN = [{"set_weight": 50}, {"analysis": {"template": "default", "duration": "3m"}}, {"set_weight": 100}]
# the session loop (the servers' clients live there): a mark on each async test, as a module-wide pytestmark would
# mark the sync tests too and pytest-asyncio warns about each of them
SESSION_LOOP = pytest.mark.asyncio(loop_scope="session")


def production(**kw: Any) -> dict[str, Any]:
    return {"name": "production", "strategy": "canary", "error_budget": True, "bake": "30m",
            "parameters": {"plan": PLAN},
            "waves": [{"name": "eu", "router": router("eu"), "args": {"region": "eu-west-1"}},
                      {"name": "us", "router": router("us"), "args": {"region": "us-east-1"}}], **kw}


def single(name: str, **kw: Any) -> dict[str, Any]:
    return {"name": name, "strategy": "canary", "parameters": {"plan": PLAN, "router": router(name)}, **kw}


class Run:
    def __init__(self, env: WorkflowEnvironment, handle: WorkflowHandle, fleet: Fleet, ledger: ReleaseLedgerActivities):
        self.env, self.handle, self.fleet, self.ledger = env, handle, fleet, ledger

    async def status(self) -> RunbookStatus:
        return await self.handle.query(Release.status)

    async def until(self, predicate: Callable[[RunbookStatus], bool], what: str) -> RunbookStatus:
        """Poll the status, moving the clock 20 s between polls (time skips only when a test says so)."""
        for _ in range(400):
            status = await self.status()
            if predicate(status):
                return status
            if status.status in TERMINAL:
                raise AssertionError(f"ended {status.status} while waiting for {what}: {status.stage}")
            await harness.skip(self.env, timedelta(seconds=20))
        raise AssertionError(f"never reached: {what}; at {status.stage}")

    async def gate(self, prefix: str) -> str:
        status = await self.until(lambda s: any(g.gate_id.startswith(prefix) for g in s.open_gates), f"gate {prefix}")
        return next(g.gate_id for g in status.open_gates if g.gate_id.startswith(prefix))

    async def approve(self, gate_id: str, *people: str) -> None:
        """Each person approves what the gate shows (its binding, as `runbook approve --expect` does)."""
        status = await self.status()
        binding = next(g.binding for g in status.open_gates if g.gate_id == gate_id)
        for person in people:
            await self.handle.execute_update(Release.approve, ApproveInput(gate_id=gate_id, approver=person,
                                                                            reason="checked", binding=binding))

    async def result(self) -> ReleaseResult:
        return await self.handle.result()

    def wave(self, result: ReleaseResult, stage: str, wave: str) -> Any:
        return next(w for s in result.stages if s.name == stage for w in s.waves if w.wave == wave)


class Releases:
    """Starts releases from the product's catalog on one worker; ``fleet`` and ``ledger`` are what they act on."""

    def __init__(self, env: WorkflowEnvironment, task_queue: str, fleet: Fleet, ledger: ReleaseLedgerActivities):
        self.env, self.task_queue, self.fleet, self.ledger = env, task_queue, fleet, ledger

    async def __call__(self, stages: list[dict[str, Any]], service: str | None = None, **params: Any) -> Run:
        service = service or f"svc-{uuid.uuid4().hex[:8]}"
        plan = CATALOG.plan_start("release", {"service": service, "version": params.pop("version", "v2"),
                                              "stages": stages, **params},
                                  requested_by="dave", inputs=inputs())
        with self.env.auto_time_skipping_disabled():
            handle = await self.env.client.start_workflow(Release.run, plan.input, id=plan.workflow_id,
                                                          task_queue=self.task_queue)
        return Run(self.env, handle, self.fleet, self.ledger)


@pytest_asyncio.fixture(loop_scope="session")
async def release(ts_env: WorkflowEnvironment, postgres: str, task_queue: str, recording) -> AsyncIterator[Releases]:
    fleet, ledger = Fleet(), ReleaseLedgerActivities(postgres)
    _, notifier = recording
    acts = [*fleet.activities(), ledger.ledger_read, ledger.ledger_record, HttpCheckActivities().http_check_suite,
            notifier.notify]
    async with harness.running_worker(ts_env.client, task_queue, [Release, CanaryRamp], acts):
        yield Releases(ts_env, task_queue, fleet, ledger)


def seed(ledger: ReleaseLedgerActivities, service: str, version: str, verdict: Verdict = "good",
         environment: str = "production") -> None:
    ledger.ledger_record(LedgerEntry(service=service, environment=environment, version=version, verdict=verdict,
                                     workflow_id=f"seed-{uuid.uuid4().hex[:6]}", reason="seeded by the test"))


@SESSION_LOOP
async def test_release_through_three_environments_with_two_production_waves(release: Releases) -> None:
    smoke = Smoke()
    try:
        run = await release([single("development"),
                             single("staging", checks=[{"name": "smoke", "url": smoke.url + "/ok/{version}",
                                                        "expect_body": "{version}"}]),
                             production(checks=[{"name": "smoke", "url": smoke.url + "/ok/{service}"}])])
        gate = await run.gate("promote-production")
        status = await run.status()
        stages = {s["name"]: s for s in status.details["stages"]}
        assert stages["development"]["phase"] == stages["staging"]["phase"] == "done"
        assert stages["development"]["waves"][0]["child_workflow_id"] == f"{run.handle.id}.development.all"
        assert run.fleet.budget_reads == []  # no wave of production has started
        shown = plain_lines(status, datetime.now(timezone.utc))  # `runbook status` / `watch` on a pipe
        at = shown.index("stages:")
        assert shown[at + 1:at + 3] == ["  development (development, canary): done, gate promote-development-1",
                                        f"    all: promoted  {run.handle.id}.development.all Succeeded"]
        assert f"  production (production, canary): approval, gate {gate}" in shown
        await run.approve(gate, "bob", "carol")
        result = await run.result()
    finally:
        smoke.close()
    assert result.status == "Succeeded", result.summary
    assert [(s.name, s.phase) for s in result.stages] == [("development", "done"), ("staging", "done"),
                                                          ("production", "done")]
    eu, us = run.wave(result, "production", "eu"), run.wave(result, "production", "us")
    assert (eu.phase, us.phase) == ("promoted", "promoted")
    assert eu.child_workflow_id == f"{run.handle.id}.production.eu"
    assert us.started_at - eu.finished_at >= timedelta(minutes=30)  # the bake between the waves
    # eu was at 100 % before us moved at all; the budget was read before each wave
    writes = [(wave, weight) for _, wave, weight in run.fleet.log if wave in ("eu", "us")]
    assert writes.index(("eu", 100)) < writes.index(("us", 50))
    assert run.fleet.budget_reads == ["eu", "us"]
    assert [b.blocked for b in result.budget] == [False, False]
    gate_view = next(g for g in result.gates if g.gate_id == gate)
    assert sorted(a.approver for a in gate_view.approvals) == ["bob", "carol"]
    view = run.ledger.ledger_read(LedgerQuery(service=result.service))
    assert view.last_good == {"development": "v2", "staging": "v2", "production": "v2"}
    await harness.save_history(run.handle, "release-three_environments_two_production_waves")


@SESSION_LOOP
async def test_a_wave_that_rolls_back_stops_the_line_and_restores_the_promoted_wave(release: Releases) -> None:
    service = f"svc-{uuid.uuid4().hex[:8]}"
    seed(release.ledger, service, "v1")
    release.fleet.bad.add(("us", "v2"))
    run = await release([production()], service=service)
    await run.approve(await run.gate("promote-production"), "bob", "carol")
    result = await run.result()
    assert result.status == "RolledBack", result.summary
    assert "stop the line: production/us ended RolledBack" in result.reason
    eu, us = run.wave(result, "production", "eu"), run.wave(result, "production", "us")
    assert us.phase == "failed" and us.child_status == "RolledBack"
    assert eu.phase == "restored" and eu.restore_workflow_id == f"{eu.child_workflow_id}.restore"
    restore = await run.env.client.get_workflow_handle(eu.restore_workflow_id).result()
    assert restore["status"] == "Succeeded" and "v1" in restore["summary"], restore["summary"]
    assert result.compensated == [f"production/eu back on v1 ({eu.restore_workflow_id}): all traffic on the stable "
                                  "side, which served before this release; v2 left at 0 % on the canary side"]
    # the restore ramped the side that served before the wave (its stable group) back to 100 %: the canary group,
    # which runs v2 (the ramp changes no image), is at 0 % again
    assert release.fleet.canary_weight("eu") == 0 and restore["version"] == "v1"
    assert result.marked_bad
    view = run.ledger.ledger_read(LedgerQuery(service=service))
    assert "v2" in view.bad and view.last_good == {"production": "v1"}
    assert release.fleet.canary_weight("us") == 0  # the failing wave's own child rolled it back
    await harness.save_history(run.handle, "release-wave_rolls_back_stops_the_line")


@SESSION_LOOP
async def test_a_version_marked_bad_is_refused_and_an_approved_override_releases_it(release: Releases) -> None:
    service = f"svc-{uuid.uuid4().hex[:8]}"
    seed(release.ledger, service, "v2", "bad")
    run = await release([single("development")], service=service)
    result = await run.result()
    assert result.status == "Refused"
    assert result.reason.startswith("version: v2 is marked bad")
    assert [s.phase for s in result.stages] == ["pending"]
    assert result.stages[0].waves[0].child_workflow_id is None  # nothing was started
    # the override asks the production approvers
    await harness.skip(run.env, timedelta(seconds=1))
    run = await release([single("development")], service=service, override_bad_version=True)
    await run.approve(await run.gate("override-bad-version"), "alice", "carol")
    result = await run.result()
    assert result.status == "Succeeded", result.summary
    assert any(s.name == "last-known-good" and "released anyway, approved by alice, carol" in s.detail
               for s in result.steps)


@SESSION_LOOP
async def test_a_spent_error_budget_blocks_production_until_the_glass_is_broken(release: Releases) -> None:
    release.fleet.availability["eu"] = 99.5  # 0.5 % unavailable against 0.1 % allowed: 400 % of the budget spent
    run = await release([production()])
    await run.approve(await run.gate("promote-production"), "bob", "carol")
    gate = await run.gate("break-glass-production-eu")
    assert release.fleet.canary_weight("eu") == 0  # blocked before the wave's first change
    status = await run.status()
    assert status.details["budget"][0]["blocked"] and "error budget spent" in status.details["budget"][0]["reason"]
    await run.approve(gate, "alice", "carol")
    result = await run.result()
    release.fleet.availability.pop("eu")
    assert result.status == "Succeeded", result.summary
    assert result.budget[0].blocked and result.budget[0].break_glass == ["alice", "carol"]
    assert result.budget[0].remaining_percent == pytest.approx(-400.0)
    assert not result.budget[1].blocked
    await harness.save_history(run.handle, "release-spent_budget_break_glass")


@SESSION_LOOP
async def test_a_spent_error_budget_with_the_glass_not_broken_rejects_the_release(release: Releases) -> None:
    release.fleet.availability["eu"] = None  # the provider has no data: the budget cannot be told
    run = await release([production()])
    await run.approve(await run.gate("promote-production"), "bob", "carol")
    gate = await run.gate("break-glass-production-eu")
    await run.handle.execute_update(Release.reject, RejectInput(gate_id=gate, approver="carol", reason="not now"))
    result = await run.result()
    release.fleet.availability.pop("eu")
    assert result.status == "Rejected", result.summary
    assert "could not be measured" in result.reason
    assert run.wave(result, "production", "eu").child_workflow_id is None


@SESSION_LOOP
async def test_abort_mid_wave_aborts_the_child_and_restores_the_promoted_wave(release: Releases) -> None:
    service = f"svc-{uuid.uuid4().hex[:8]}"
    seed(release.ledger, service, "v1")
    run = await release([production()], service=service)
    await run.approve(await run.gate("promote-production"), "bob", "carol")
    await run.until(lambda s: release.fleet.canary_weight("us") == 50, "the us wave at 50 %")
    await run.handle.execute_update(Release.abort, {"requested_by": "erin", "reason": "customer incident"})
    result = await run.result()
    assert result.status == "Aborted", result.summary
    eu, us = run.wave(result, "production", "eu"), run.wave(result, "production", "us")
    assert us.child_status == "Aborted" and release.fleet.canary_weight("us") == 0
    child = await run.env.client.get_workflow_handle(us.child_workflow_id).result()
    assert "erin" in child["reason"]
    assert eu.phase == "restored" and release.fleet.canary_weight("eu") == 0  # all traffic back on eu's stable side
    assert not result.marked_bad  # an abort says nothing about the version
    assert "v2" not in run.ledger.ledger_read(LedgerQuery(service=service)).bad
    await harness.save_history(run.handle, "release-abort_mid_wave_restores_promoted_wave")


@SESSION_LOOP
async def test_a_release_with_no_last_known_good_cannot_restore_and_fails(release: Releases) -> None:
    release.fleet.bad.add(("us", "v3"))
    run = await release([production()], version="v3")
    await run.approve(await run.gate("promote-production"), "bob", "carol")
    with pytest.raises(WorkflowFailureError) as failure:
        await run.result()
    assert isinstance(failure.value.cause, ApplicationError) and failure.value.cause.type == "RunFailed"
    details = failure.value.cause.details[0]
    assert details["status"] == "Failed"
    assert details["not_undone"] == [f"production/eu still runs v3: {details['service']} has no last known good "
                                     "version in production to return to"]


def test_bad_input_is_refused_naming_the_field() -> None:
    from core.catalog import ParameterError

    def refusal(stages: list[dict[str, Any]]) -> str:
        with pytest.raises(ParameterError) as err:
            CATALOG.plan_start("release", {"service": "shop", "version": "v2", "stages": stages},
                               requested_by="dave", inputs=inputs())
        return str(err.value)

    assert "stages.0.strategy" in refusal([{"name": "dev", "strategy": "rolling"}])
    assert "stages.0.waves.1.router" in refusal([{"name": "prod", "strategy": "canary",
                                                  "waves": [{"name": "eu", "router": router("eu")}, {"name": "us"}]}])
    assert "stages.0.waves.0 (prod blue-green): parameter preview_urls" in refusal(
        [{"name": "prod", "strategy": "blue-green",
          "waves": [{"name": "eu", "router": {"kind": "alb", "load_balancer": "eu-alb", "port": 443}}]}])
    assert "alb.stable_target_group: Extra inputs" in refusal(  # a canary's router given to a blue-green wave
        [{"name": "prod", "strategy": "blue-green", "parameters": {"preview_urls": {"blue": "x", "green": "y"}},
          "waves": [{"name": "eu", "router": router("eu")}]}])
    assert "parameters.version: set by the release itself" in refusal(
        [{"name": "dev", "strategy": "canary", "parameters": {"version": "v9"}}])
    assert "stages: names must be unique" in refusal([single("dev"), single("dev")])




def test_the_catalog_hands_the_run_every_environments_policy() -> None:
    plan = CATALOG.plan_start("release", {"service": "shop", "version": "v2"}, requested_by="dave",
                              inputs=inputs())
    assert plan.workflow_id == "release:shop"  # single flight per service
    production = plan.meta.approval_by_environment["production"]
    assert production.required_approvals == 2 and production.required_groups == ["platform-team", "security-team"]
    assert plan.meta.approval_by_environment["development"].required_approvals == 0
    assert [s.name for s in plan.input.stages] == ["development", "staging", "production"]


@SESSION_LOOP
async def test_a_freeze_window_holds_production_until_it_ends(ts_env: WorkflowEnvironment, postgres: str,
                                                               task_queue: str, recording) -> None:
    from activities.calendar import CalendarActivities

    now = (await ts_env.get_current_time()).astimezone(timezone.utc).replace(tzinfo=None, microsecond=0)
    folder = Path(tempfile.mkdtemp(prefix="release-calendar-"))
    for name in ("release.yaml", "groups.yaml"):
        shutil.copy(RUNBOOKS / name, folder / name)
    ends = now + timedelta(hours=2)
    (folder / "calendar.yaml").write_text(
        f"timezone: UTC\nwindows:\n  - name: test-freeze\n    start: {(now - timedelta(hours=1)).isoformat()}\n"
        f"    end: {ends.isoformat()}\n    runbooks: [release]\n    environments: [production]\n")
    fleet, ledger = Fleet(), ReleaseLedgerActivities(postgres)
    acts = [*fleet.activities(), ledger.ledger_read, ledger.ledger_record, recording[1].notify,
            CalendarActivities(folder).check_freeze]
    async with harness.running_worker(ts_env.client, task_queue, [Release, CanaryRamp], acts):
        run = await Releases(ts_env, task_queue, fleet, ledger)([production(error_budget=False)])
        await run.approve(await run.gate("promote-production"), "bob", "carol")
        status = await run.until(lambda s: s.status == "WaitingForWindow", "the freeze")
        assert status.freeze is not None and status.freeze.window == "test-freeze"
        assert fleet.log == []  # nothing changed inside the window
        result = await run.result()
    assert result.status == "Succeeded", result.summary
    eu = run.wave(result, "production", "eu")
    assert eu.started_at is not None and eu.started_at.replace(tzinfo=None) >= ends
