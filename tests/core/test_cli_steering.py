"""The steering verbs (`runbook pause|resume|promote|extend|destroy-now|reverify`) driven from the real command
against the dev server: the run's own validator accepts or refuses each, refusals are one line with exit 2, and a
verb the runbook does not have is refused naming the verbs it has. Runs are real runbook workflows with stand-in
activities registered under the real activity names."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import timedelta

import pytest
from typer.testing import CliRunner

from core.approval import ApprovalPolicy
from core.canary import AlbRouterSpec, AnalysisStepSpec, CanaryRampInput, PlanStep
from core.runbook import RunbookMeta
from starters.cli import app
from tests import harness
from tests.canary.standins import CANARY, STABLE, FakeMetrics, FakeTraffic, Recorder, healthy
from workflows.canary_ramp import CanaryRamp


@pytest.fixture
def cli_env(dev_env, monkeypatch, task_queue, tmp_path):
    monkeypatch.setenv("TEMPORAL_ADDRESS", dev_env.client.service_client.config.target_host)
    monkeypatch.setenv("RUNBOOK_TASK_QUEUE", task_queue)
    monkeypatch.setenv("RUNBOOK_USER", "dave")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return task_queue


async def runbook(*args: str):
    return await asyncio.to_thread(CliRunner().invoke, app, list(args))


def _canary_input() -> CanaryRampInput:
    meta = RunbookMeta(runbook="canary-ramp", target="checkout", requested_by="alice",
                       approval=ApprovalPolicy(approvers=["bob"], timeout=timedelta(hours=4)))
    router = AlbRouterSpec(listener_arn="arn:listener", stable_target_group=STABLE, canary_target_group=CANARY)
    plan = [PlanStep(set_weight=10), PlanStep(analysis=AnalysisStepSpec(duration=timedelta(minutes=30))),
            PlanStep(set_weight=100)]
    return CanaryRampInput(meta=meta, router=router, service="checkout", version="v2", plan=plan)


async def _wait_step(handle, index: int) -> None:
    await harness.poll(lambda: handle.query(CanaryRamp.canary), lambda c: c.step_index == index,
                       f"the canary reaches step {index}")


async def test_canary_steered_from_the_cli(cli_env, dev_env):
    log: list[tuple] = []
    traffic = FakeTraffic(log)
    metrics = FakeMetrics(traffic, healthy)
    activities = [traffic.get, traffic.set, metrics.measure, metrics.measure_batch, Recorder(log).notify]
    workflow_id = f"canary-{uuid.uuid4().hex[:8]}"
    async with harness.running_worker(dev_env.client, cli_env, [CanaryRamp], activities):
        handle = await dev_env.client.start_workflow(CanaryRamp.run, _canary_input(), id=workflow_id, task_queue=cli_env)
        await _wait_step(handle, 1)  # in the 30-minute analysis step at weight 10

        refused = await runbook("resume", workflow_id)
        assert refused.exit_code == 2 and "refused" in refused.stderr and "not paused" in refused.stderr, refused.output
        assert len(refused.stderr.strip().splitlines()) == 1

        paused = await runbook("pause", workflow_id, "--reason", "lunch")
        assert paused.exit_code == 0, paused.output
        assert "pause: accepted" in paused.stdout and "step 2/3" in paused.stdout and "weight 10%" in paused.stdout
        again = await runbook("pause", workflow_id)
        assert again.exit_code == 2 and "already paused" in again.stderr, again.output

        bad = await runbook("extend", workflow_id, "soon")
        assert bad.exit_code == 2 and "extend: duration 'soon'" in bad.stderr, bad.output
        zero = await runbook("extend", workflow_id, "0s")
        assert zero.exit_code == 2 and "refused" in zero.stderr, zero.output
        extended = await runbook("extend", workflow_id, "5m", "--reason", "slow traffic", "--as", "erin")
        assert extended.exit_code == 0 and "extend: accepted" in extended.stdout, extended.output

        assert (await runbook("resume", workflow_id)).exit_code == 0

        other = await runbook("destroy-now", workflow_id, "--reason", "wrong verb")
        assert other.exit_code == 2, other.output
        assert "a CanaryRamp run cannot be steered this way" in other.stderr
        assert "it supports pause, resume, promote, extend" in other.stderr
        assert (await runbook("reverify", workflow_id)).exit_code == 2

        promoted = await runbook("promote", workflow_id, "--reason", "hotfix")
        assert promoted.exit_code == 0 and "promote: accepted" in promoted.stdout, promoted.output
        twice = await runbook("promote", workflow_id)
        assert twice.exit_code == 2 and "refused" in twice.stderr, twice.output

        status = json.loads((await runbook("status", workflow_id, "--json")).stdout)
        assert [(a["action"], a["by"]) for a in status["actions"]] == [
            ("pause", "dave"), ("extend", "erin"), ("resume", "dave"), ("promote", "dave")]

        assert (await runbook("abort", workflow_id, "--reason", "test over")).exit_code == 0
        await handle.result()
        finished = await runbook("pause", workflow_id)
        assert finished.exit_code == 2, finished.output

    missing = await runbook("pause", f"nope-{uuid.uuid4().hex[:6]}")
    assert missing.exit_code == 2 and "no runbook run with id" in missing.stderr, missing.output
