"""How a canary run ends (issue 11): one ending for every path, refusal before any change, abort and cancel at every
step, a rollback that fails, the extend cap, and continue-as-new in the middle of a ramp."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import pytest
from temporalio.client import WorkflowFailureError, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from activities.kubernetes import KubernetesActivities
from core import errors
from core.approval import AbortInput, RejectInput
from tests import harness
from tests.canary.standins import CANARY, HEALTHY, STABLE
from tests.canary.test_end_to_end import seed_kube
from tests.canary.test_ramp import Rig, gate_open, make_input, offsets, sleep_between_ticks
from tests.fakes.kubernetes import kube_fake
from workflows.canary_ramp import (
    AnalysisStepSpec,
    CanaryRamp,
    CanaryRampInput,
    ExtendInput,
    PauseSpec,
    PlanStep,
    SteerInput,
)

M = timedelta(minutes=1)


def every_step_plan() -> list[PlanStep]:
    """set weight, timed pause, analysis, a continue gate, then the plan's end (promotion)."""
    return [
        PlanStep(set_weight=10),
        PlanStep(pause=PauseSpec(duration=timedelta(minutes=5))),
        PlanStep(analysis=AnalysisStepSpec(duration=timedelta(minutes=5))),
        PlanStep(pause=PauseSpec()),
        PlanStep(set_weight=100),
    ]


def weight_writes(rig: Rig) -> list[int]:
    return [w for kind, w in rig.log if kind == "weights"]


async def stop_run(handle: WorkflowHandle, how: str, *, held: bool = False) -> None:
    """Abort or cancel the run; a cancel only once it is settled (``harness.cancel_settled``), unless it awaits a
    weight change the test holds (``held``: a change is never cancelled, it finishes and is then undone)."""
    if how == "abort":
        await handle.execute_update(CanaryRamp.abort, AbortInput(requested_by="carol", reason="stop it"))
    elif held:
        await handle.cancel()
    else:
        await harness.cancel_settled(handle)


# ----------------------------------------------------------------------------------------------- refusal
@pytest.mark.parametrize("wiring", ["canary group not attached", "third group takes traffic"])
async def test_a_mis_wired_listener_is_refused_with_nothing_changed(ts_env: WorkflowEnvironment, task_queue: str, wiring: str) -> None:
    rig = Rig(ts_env, task_queue)
    rig.traffic.weights = {STABLE: 100} if wiring == "canary group not attached" else {STABLE: 90, CANARY: 0, "arn:tg/other": 10}
    async with rig.worker():
        result = await (await rig.start(make_input())).result()
    assert result.status == "Refused"
    assert "nothing was changed" in result.summary and "ROLLBACK" not in result.summary
    assert weight_writes(rig) == [] and result.compensated == [] and result.not_undone == []
    assert rig.recorder.events[-1].severity == "warning"
    assert all(e.severity != "critical" and e.kind != "rolled_back" for e in rig.recorder.events)


async def test_httproute_with_a_missing_deployment_is_refused(ts_env: WorkflowEnvironment, task_queue: str) -> None:
    with kube_fake() as kube:
        router = seed_kube(kube.fake)
        kube.fake.requests.clear()
        router = router.model_copy(update={"canary_deployment": "checkout-canary-missing"})
        k8s = KubernetesActivities(lambda context: kube.api)
        rig = Rig(ts_env, task_queue)
        inp = CanaryRampInput(meta=make_input().meta, service="checkout", version="v2", router=router)
        acts = [k8s.get_deployment, k8s.scale_deployment, k8s.get_httproute_weights, k8s.set_httproute_weights,
                rig.metrics.measure_batch, rig.recorder.notify]
        async with harness.running_worker(ts_env.client, task_queue, [CanaryRamp], acts):
            result = await ts_env.client.execute_workflow(CanaryRamp.run, inp, id=f"c-{uuid.uuid4().hex[:8]}", task_queue=task_queue)
        assert result.status == "Refused" and "checkout-canary-missing" in result.summary
        assert [r for r in kube.fake.requests if r.method != "GET"] == []  # read-only: no write at all
        assert rig.recorder.events[-1].severity == "warning"


# ----------------------------------------------------------------------------------------------- failures
async def test_a_failed_weight_change_rolls_back(ts_env: WorkflowEnvironment, task_queue: str) -> None:
    rig = Rig(ts_env, task_queue)
    rig.traffic.fail_at = {25}
    async with rig.worker():
        result = await (await rig.start(make_input())).result()
    assert result.status == "RolledBack"
    assert "set weight 25%" in result.reason and "refused weight 25" in result.reason
    assert weight_writes(rig) == [5, 0] and rig.traffic.weights == {STABLE: 100, CANARY: 0}
    assert result.compensated and result.failed_step == 2


async def test_a_rollback_that_fails_fails_the_run_critically(ts_env: WorkflowEnvironment, task_queue: str) -> None:
    rig = Rig(ts_env, task_queue, lambda metric, weight, n: 2.0 if metric == "error-rate" else HEALTHY[metric])
    rig.traffic.fail_at = {0}
    async with rig.worker():
        handle = await rig.start(make_input())
        with pytest.raises(WorkflowFailureError) as failure:
            await handle.result()
    cause = failure.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == errors.RUN_FAILED
    result = cause.details[0]
    assert result["status"] == "Failed" and result["compensated"] == []
    assert "traffic may still reach the canary" in result["not_undone"][0]
    assert "analysis failed" in result["reason"]
    final = rig.recorder.events[-1]
    assert final.kind == "failed" and final.severity == "critical"
    assert rig.traffic.weights[CANARY] == 5  # what the run could not undo, and says so


# ----------------------------------------------------------------------------------------------- gates
@pytest.mark.parametrize("decision", ["rejected", "timed_out"])
async def test_a_continue_gate_not_approved_rolls_back_as_rejected(ts_env: WorkflowEnvironment, task_queue: str, decision: str) -> None:
    rig = Rig(ts_env, task_queue)
    async with rig.worker():
        with ts_env.auto_time_skipping_disabled():
            handle = await rig.start(make_input(plan=[PlanStep(set_weight=10), PlanStep(pause=PauseSpec()), PlanStep(set_weight=100)]))
            gate = await gate_open(handle)
            assert gate.startswith("continue")
            if decision == "rejected":
                await handle.execute_update(CanaryRamp.reject, RejectInput(gate_id=gate, approver="bob", reason="error budget spent"))
        result = await handle.result()
    assert result.status == "Rejected"
    assert result.compensated == ["canary v2 at 0 % on ALB arn:listener and scaled down"]
    assert result.gates[-1].decision == decision and result.failed_step == 1
    assert weight_writes(rig) == [10, 0]
    assert rig.recorder.events[-1].severity == "warning"
    assert not any(e.kind == "rolled_back" for e in rig.recorder.events)  # a person's decision: no alert


async def test_a_rejected_promote_gate_carries_on_with_the_ramp(ts_env: WorkflowEnvironment, task_queue: str) -> None:
    rig = Rig(ts_env, task_queue)
    async with rig.worker():
        with ts_env.auto_time_skipping_disabled():
            handle = await rig.start(make_input())
            await sleep_between_ticks(ts_env, 3 * M)
            await handle.execute_update(CanaryRamp.promote, SteerInput(by="alice", reason="hurry"))
            gate = await gate_open(handle)
            await handle.execute_update(CanaryRamp.reject, RejectInput(gate_id=gate, approver="bob", reason="no"))
        result = await handle.result()
        status = await handle.query(CanaryRamp.status)
    assert result.status == "Succeeded" and weight_writes(rig) == [5, 25, 50, 100]
    assert any(a.action == "promote" and not a.accepted and a.by == "bob" for a in status.actions)


# ----------------------------------------------------------------------------------------------- abort and cancel
@pytest.mark.parametrize("how", ["abort", "cancel"])
@pytest.mark.parametrize("where", ["set weight", "timed pause", "analysis", "continue gate"])
async def test_abort_or_cancel_at_every_step_puts_traffic_back(ts_env: WorkflowEnvironment, task_queue: str, where: str, how: str) -> None:
    rig = Rig(ts_env, task_queue)
    if where == "set weight":
        rig.traffic.block_at = 10  # the write is in flight when the abort/cancel arrives
    async with rig.worker():
        with ts_env.auto_time_skipping_disabled():
            handle = await rig.start(make_input(plan=every_step_plan()))
            if where == "set weight":
                assert await asyncio.to_thread(rig.traffic.entered.wait, 10)
            elif where == "continue gate":
                await harness.skip(ts_env, 11 * M)
                await gate_open(handle)
            else:
                await sleep_between_ticks(ts_env, (2 if where == "timed pause" else 7) * M)
                view = await handle.query(CanaryRamp.canary)
                assert view.step_index == (1 if where == "timed pause" else 2)
            await stop_run(handle, how, held=where == "set weight")
            if where == "set weight" and how == "cancel":
                await asyncio.sleep(0.2)  # room for a rollback that would not wait for the write in flight to overtake it
            rig.traffic.release.set()  # the write in flight finishes; only then does the rollback run
        result = await handle.result()
    assert result.status == "Aborted"
    assert ("carol" in result.reason) if how == "abort" else ("cancelled" in result.reason)
    assert weight_writes(rig) == [10, 0]  # the change finished, then was undone; nothing after it
    assert rig.traffic.weights == {STABLE: 100, CANARY: 0}
    assert result.compensated and result.final_weight == 0
    if where == "continue gate":
        assert result.gates[-1].decision == "aborted"
    assert rig.recorder.events[-1].severity == "warning"


@pytest.mark.parametrize("how", ["abort", "cancel"])
async def test_abort_or_cancel_during_promotion_lets_it_finish(ts_env: WorkflowEnvironment, task_queue: str, how: str) -> None:
    rig = Rig(ts_env, task_queue)
    rig.traffic.block_at = 100
    plan = [PlanStep(set_weight=10), PlanStep(analysis=AnalysisStepSpec(duration=timedelta(minutes=2)))]  # promotion sets 100
    async with rig.worker():
        with ts_env.auto_time_skipping_disabled():
            handle = await rig.start(make_input(plan=plan))
            await harness.skip(ts_env, 2 * M)
            assert await asyncio.to_thread(rig.traffic.entered.wait, 10)
            await stop_run(handle, how, held=True)
            rig.traffic.release.set()
        result = await handle.result()
    assert result.status == "Succeeded"  # promotion is final: nothing rolled back
    assert weight_writes(rig) == [10, 100] and rig.traffic.weights == {STABLE: 0, CANARY: 100}
    refused = [a for a in result.actions if not a.accepted]
    assert refused and "promotion is final" in refused[-1].note


async def test_abort_at_the_analysis_decision_gate(ts_env: WorkflowEnvironment, task_queue: str) -> None:
    rig = Rig(ts_env, task_queue, lambda metric, weight, n: None if metric == "cpu" else HEALTHY[metric])
    async with rig.worker():
        with ts_env.auto_time_skipping_disabled():
            handle = await rig.start(make_input())
            await harness.skip(ts_env, 4 * M)
            gate = await gate_open(handle)
            assert gate.startswith("analysis-decision")
            await stop_run(handle, "abort")
        result = await handle.result()
    assert result.status == "Aborted" and weight_writes(rig) == [5, 0]
    assert result.gates[-1].decision == "aborted"


# ----------------------------------------------------------------------------------------------- extend cap
async def test_extend_is_capped_by_max_extension(ts_env: WorkflowEnvironment, task_queue: str) -> None:
    rig = Rig(ts_env, task_queue)
    plan = [PlanStep(set_weight=10), PlanStep(analysis=AnalysisStepSpec(duration=timedelta(minutes=5))), PlanStep(set_weight=100)]
    async with rig.worker():
        with ts_env.auto_time_skipping_disabled():
            handle = await rig.start(make_input(plan=plan, max_extension="5m"))
            await sleep_between_ticks(ts_env, 2 * M)
            await handle.execute_update(CanaryRamp.extend, ExtendInput(by="dave", duration="3m"))
            with pytest.raises(WorkflowUpdateFailedError) as refused:
                await handle.execute_update(CanaryRamp.extend, ExtendInput(by="dave", duration="3m"))
            assert "max_extension" in str(refused.value.cause) and "2m" in str(refused.value.cause)
            await handle.execute_update(CanaryRamp.extend, ExtendInput(by="dave", duration="2m"))
            view = await handle.query(CanaryRamp.canary)
        result = await handle.result()
    assert view.extended == timedelta(minutes=5) and view.max_extension == timedelta(minutes=5)
    assert offsets(result) == [(10, 0 * M), (100, 10 * M)]
    assert [a.action for a in result.actions] == ["extend", "extend"]


# ----------------------------------------------------------------------------------------------- bounded history
async def test_long_ramp_continues_as_new_and_completes_correctly(ts_env: WorkflowEnvironment, task_queue: str) -> None:
    rig = Rig(ts_env, task_queue)
    inp = make_input()
    inp.meta.history_limit = 100  # force continuations: the default ramp takes some 400 events
    async with rig.worker():
        with ts_env.auto_time_skipping_disabled():
            handle = await rig.start(inp)
            await sleep_between_ticks(ts_env, 2 * M)
            await handle.execute_update(CanaryRamp.extend, ExtendInput(by="dave", reason="slow traffic", duration="3m"))
        result = await handle.result()  # follows the continuations
        await harness.save_history(handle, "canary-continued_as_new")  # the last run: it started from a carry
        first_run = await ts_env.client.get_workflow_handle(handle.id, run_id=handle.first_execution_run_id).fetch_history()
        last_run = await handle.fetch_history()
        latest = ts_env.client.get_workflow_handle(handle.id)
        status = await latest.query(CanaryRamp.status)
        view = await latest.query(CanaryRamp.canary)
    assert status.continued >= 3
    assert result.status == "Succeeded"
    assert weight_writes(rig) == [5, 25, 50, 100]  # each weight applied once, across every continuation
    # to the minute: each continuation costs a few real milliseconds of virtual time on a busy machine
    assert [(w, round(t / M)) for w, t in offsets(result)] == [(5, 0), (25, 13), (50, 33), (100, 63)]
    assert result.measurements_total == 63 * 4 and view.extended == timedelta(minutes=3)
    assert rig.traffic.gets == 1  # resolved once, not per continuation
    assert sum(1 for e in rig.recorder.events if e.kind == "started") == 1
    # the audit trail came along: every step, the extend, in order
    assert [a.action for a in result.actions] == ["extend"] and result.actions[0].by == "dave"
    assert [s.name for s in result.steps][:2] == ["resolve", "step 1/7: set weight 5%"] and len(result.steps) == 9
    assert all(s.status == "done" for s in result.steps)
    # the first run (it handed over) and the last (it started from a carry) replay against today's code
    assert first_run.events[-1].HasField("workflow_execution_continued_as_new_event_attributes")
    assert last_run.events[-1].HasField("workflow_execution_completed_event_attributes")
    replayer = Replayer(workflows=[CanaryRamp], data_converter=harness.DATA_CONVERTER)
    await replayer.replay_workflow(first_run)
    await replayer.replay_workflow(last_run)


async def test_failure_limit_holds_across_a_continuation(ts_env: WorkflowEnvironment, task_queue: str) -> None:
    # two failed error-rate measurements 20 minutes apart in the 50 % step (failure limit 1): some continuation
    # falls between them, and the second still rolls back
    rig = Rig(ts_env, task_queue, lambda metric, weight, n: 2.0 if metric == "error-rate" and n in (32, 52) else HEALTHY[metric])
    inp = make_input()
    inp.meta.history_limit = 100
    async with rig.worker():
        handle = await rig.start(inp)
        result = await handle.result()
        status = await ts_env.client.get_workflow_handle(handle.id).query(CanaryRamp.status)
    assert status.continued >= 3
    assert result.status == "RolledBack" and result.failed_step == 5
    assert result.measured_values.count(2.0) == 2 and result.failed_criterion == "error-rate < 0.5"
    assert weight_writes(rig) == [5, 25, 50, 0]
    assert round(offsets(result)[-1][1] / M) == 53
