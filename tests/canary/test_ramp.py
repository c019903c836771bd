"""The canary ramp's logic on the time-skipping server, with stand-in router/metrics activities."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError
from temporalio.testing import WorkflowEnvironment

from core.approval import AbortInput, ApprovalPolicy, ApproveInput
from core.canary import AlbRouterSpec
from core.runbook import RunbookMeta
from tests import harness
from tests.canary.standins import CANARY, HEALTHY, STABLE, FakeMetrics, FakeTraffic, Recorder, healthy
from workflows.canary_ramp import (
    AnalysisStepSpec,
    CanaryRamp,
    CanaryRampInput,
    CanaryRampResult,
    ExtendInput,
    PlanStep,
    SteerInput,
)

M = timedelta(minutes=1)


def make_input(**kw: Any) -> CanaryRampInput:
    meta = RunbookMeta(
        runbook="canary-ramp",
        target="checkout",
        requested_by="alice",
        approval=ApprovalPolicy(approvers=["bob"], timeout=timedelta(hours=4)),
    )
    router = AlbRouterSpec(listener_arn="arn:listener", stable_target_group=STABLE, canary_target_group=CANARY)
    kw = {"service": "checkout", "version": "v2", **kw}
    return CanaryRampInput(meta=meta, router=router, **kw)


class Rig:
    def __init__(self, env: WorkflowEnvironment, task_queue: str, value=healthy) -> None:
        self.env, self.task_queue = env, task_queue
        self.log: list[tuple] = []
        self.traffic = FakeTraffic(self.log)
        self.metrics = FakeMetrics(self.traffic, value)
        self.recorder = Recorder(self.log)

    def worker(self):
        acts = [self.traffic.get, self.traffic.set, self.metrics.measure, self.metrics.measure_batch, self.recorder.notify]
        return harness.running_worker(self.env.client, self.task_queue, [CanaryRamp], acts)

    async def start(self, inp: CanaryRampInput) -> WorkflowHandle:
        return await self.env.client.start_workflow(
            CanaryRamp.run, inp, id=f"canary-{uuid.uuid4().hex[:8]}", task_queue=self.task_queue
        )


def offsets(result: CanaryRampResult) -> list[tuple[int, timedelta]]:
    """(weight, virtual time since the first change), to the minute: while an activity or a workflow task runs, the
    V1 server's clock runs at wall speed, and on a loaded machine a step boundary costs seconds (601 s seen for 600)."""
    t0 = result.weights[0].at
    return [(w.weight, round((w.at - t0) / M) * M) for w in result.weights]


async def sleep_between_ticks(env: WorkflowEnvironment, duration: timedelta) -> None:
    """``harness.skip(env, duration)`` and half a minute more: a test that steers right after its sleep never meets a
    timer firing.

    The canary's timers (measurement ticks, step ends) fall on whole minutes of the run, and a steering update
    (extend, pause, resume, promote, abort) wakes a timed wait, which cancels its timer. When that timer fires while
    the update's workflow task runs, the V1 test server refuses the task's completion ("invalid history builder state
    for action": the real server drops the buffered fire instead) and loses the time-skipping lock the task held: from
    then on its clock runs at wall speed and the next sleep or ``result()`` waits real minutes (the 120 s timeouts).
    Under load the run reaches its ticks seconds after the test's sleep ends, just when the test steers; half a
    minute is room for any load and changes no outcome the tests assert.
    """
    await harness.skip(env, duration + M / 2)


async def gate_open(handle: WorkflowHandle) -> str:
    status = await harness.poll(lambda: handle.query(CanaryRamp.status), lambda s: s.gate is not None, "a gate opens")
    return status.gate.gate_id


async def test_full_default_ramp_promotes_on_schedule(ts_env: WorkflowEnvironment, task_queue: str) -> None:
    rig = Rig(ts_env, task_queue)
    async with rig.worker():
        handle = await rig.start(make_input())
        result = await handle.result()
        await harness.save_history(handle, "canary-full_default_ramp_promotes_on_schedule")
        view = await handle.query(CanaryRamp.canary)
    assert result.status == "Succeeded"
    assert offsets(result) == [(5, 0 * M), (25, 10 * M), (50, 30 * M), (100, 60 * M)]
    assert result.measurements_total == 60 * 4  # 60 one-minute ticks x 4 metrics
    assert rig.traffic.weights == {STABLE: 0, CANARY: 100}
    assert result.failed_criterion is None
    assert view.step_index == 7 and view.current_weight == 100 and view.plan_hash.startswith("sha256:")
    assert {m.metric for m in view.recent_measurements} == set(HEALTHY)


async def test_canary_bad_at_25_rolls_back_within_failure_limit(ts_env: WorkflowEnvironment, task_queue: str) -> None:
    rig = Rig(ts_env, task_queue, lambda metric, weight, n: 2.0 if metric == "error-rate" and weight >= 25 else HEALTHY[metric])
    async with rig.worker():
        result = await (await rig.start(make_input())).result()
    assert result.status == "RolledBack"
    seq = offsets(result)
    assert [w for w, _ in seq] == [5, 25, 0]
    # failure_limit 1 -> the 2nd failed one-minute measurement rolls back: 2 intervals after 25 %
    assert seq[2][1] - seq[1][1] == 2 * M
    assert result.failed_criterion == "error-rate < 0.5"
    assert result.measured_values == [2.0, 2.0]
    assert result.failed_step == 3 and result.failed_step_name == "analysis default for 20m"
    assert rig.traffic.weights == {STABLE: 100, CANARY: 0}
    # weight 0 first, then the notification
    rollback_at = rig.log.index(("weights", 0))
    assert ("notify", "rolled_back") in rig.log[rollback_at:]
    event = next(e for e in rig.recorder.events if e.kind == "rolled_back")
    assert event.severity == "error" and event.fields["criterion"] == "error-rate < 0.5"


async def test_inconclusive_pauses_and_a_person_continues(ts_env: WorkflowEnvironment, task_queue: str) -> None:
    # no latency data for the first 3 measurements (inconclusive limit 2), then data
    rig = Rig(ts_env, task_queue, lambda metric, weight, n: None if metric == "latency-p95" and n < 3 else HEALTHY[metric])
    async with rig.worker():
        with ts_env.auto_time_skipping_disabled():
            handle = await rig.start(make_input())
            await harness.skip(ts_env, 5 * M)
            gate = await gate_open(handle)
            assert gate.startswith("analysis-decision")
            view = await handle.query(CanaryRamp.canary)
            assert view.phase == "WaitingForDecision" and view.last_verdict.phase == "Inconclusive"
            await harness.skip(ts_env, 7 * M)  # the person decides at 12 min: the step's clock stood still for 9
            await handle.execute_update(CanaryRamp.approve, ApproveInput(gate_id=gate, approver="bob", reason="dashboards fine"))
        result = await handle.result()
        status = await handle.query(CanaryRamp.status)
    assert result.status == "Succeeded"
    seq = offsets(result)
    # inconclusive at 3 min, decided at 12 min: the 10-minute step ends 9 minutes late
    assert seq == [(5, 0 * M), (25, 19 * M), (50, 39 * M), (100, 69 * M)]
    assert any(a.action == "continue" and a.by == "bob" for a in status.actions)


async def test_inconclusive_without_decision_rolls_back_at_deadline(ts_env: WorkflowEnvironment, task_queue: str) -> None:
    rig = Rig(ts_env, task_queue, lambda metric, weight, n: None if metric == "cpu" else HEALTHY[metric])
    async with rig.worker():
        result = await (await rig.start(make_input(decision_timeout="15m"))).result()
    assert result.status == "RolledBack"
    seq = offsets(result)
    assert seq == [(5, 0 * M), (0, 18 * M)]  # inconclusive at 3 min + 15 min deadline
    assert "no decision before the deadline" in result.summary
    assert result.failed_criterion == "cpu < 80"
    assert result.gates[-1].decision == "timed_out"


async def test_abort_mid_step_rolls_back(ts_env: WorkflowEnvironment, task_queue: str) -> None:
    rig = Rig(ts_env, task_queue)
    async with rig.worker():
        with ts_env.auto_time_skipping_disabled():
            handle = await rig.start(make_input())
            await sleep_between_ticks(ts_env, 15 * M)
            await handle.execute_update(CanaryRamp.abort, AbortInput(requested_by="carol", reason="customer complaints"))
        result = await handle.result()
        await harness.save_history(handle, "canary-abort_mid_step_rolls_back")
        status = await handle.query(CanaryRamp.status)
    assert result.status == "Aborted"
    assert [w for w, _ in offsets(result)] == [5, 25, 0]
    assert "carol" in result.summary and "customer complaints" in result.summary
    assert rig.traffic.weights == {STABLE: 100, CANARY: 0}
    assert [(a.action, a.by) for a in status.actions][0] == ("abort", "carol")


async def test_promote_early_through_approval(ts_env: WorkflowEnvironment, task_queue: str) -> None:
    rig = Rig(ts_env, task_queue)
    async with rig.worker():
        with ts_env.auto_time_skipping_disabled():
            handle = await rig.start(make_input())
            await sleep_between_ticks(ts_env, 3 * M)
            await handle.execute_update(CanaryRamp.promote, SteerInput(by="alice", reason="hotfix needed everywhere"))
            gate = await gate_open(handle)
            assert gate.startswith("promote")
            with pytest.raises(WorkflowUpdateFailedError):  # the requester may not approve herself
                await handle.execute_update(CanaryRamp.approve, ApproveInput(gate_id=gate, approver="alice"))
            await handle.execute_update(CanaryRamp.approve, ApproveInput(gate_id=gate, approver="bob"))
        result = await handle.result()
        await harness.save_history(handle, "canary-promote_early_through_approval")
    assert result.status == "Succeeded"
    assert [w for w, _ in offsets(result)] == [5, 100]
    assert rig.traffic.weights == {STABLE: 0, CANARY: 100}


async def test_extend_and_pause_move_the_step_end(ts_env: WorkflowEnvironment, task_queue: str) -> None:
    plan = [
        PlanStep(set_weight=10),
        PlanStep(analysis=AnalysisStepSpec(duration=timedelta(minutes=5))),
        PlanStep(set_weight=100),
    ]
    rig = Rig(ts_env, task_queue)
    async with rig.worker():
        with ts_env.auto_time_skipping_disabled():
            handle = await rig.start(make_input(plan=plan))
            await sleep_between_ticks(ts_env, 2 * M)
            with pytest.raises(WorkflowUpdateFailedError):
                await handle.execute_update(CanaryRamp.extend, ExtendInput(by="dave", duration="0s"))
            await handle.execute_update(CanaryRamp.extend, ExtendInput(by="dave", reason="slow traffic", duration="3m"))
            await handle.execute_update(CanaryRamp.pause, SteerInput(by="dave", reason="lunch"))
            await harness.skip(ts_env, 4 * M)  # from between two ticks to between two ticks
            await handle.execute_update(CanaryRamp.resume, SteerInput(by="dave"))
        result = await handle.result()
        await harness.save_history(handle, "canary-extend_and_pause_move_the_step_end")
        status = await handle.query(CanaryRamp.status)
    # 5 m analysis + 3 m extension + 4 m paused
    assert offsets(result) == [(10, 0 * M), (100, 12 * M)]
    assert [a.action for a in status.actions] == ["extend", "pause", "resume"]
    # measuring went on while paused: one per minute per metric over 12 minutes
    assert result.measurements_total == 12 * 4
