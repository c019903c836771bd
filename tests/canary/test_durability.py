"""A worker crash mid-ramp resumes where it stopped without repeating effects; histories replay deterministically."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer, Worker

from core.approval import ApproveInput
from tests import harness
from tests.canary.standins import CANARY, HEALTHY, STABLE, FakeMetrics, FakeTraffic, Recorder, healthy
from tests.canary.test_ramp import gate_open, make_input
from workflows.canary_ramp import CanaryRamp, ExtendInput

M = timedelta(minutes=1)


async def test_worker_restart_resumes_without_repeating_weight_changes(ts_env: WorkflowEnvironment) -> None:
    task_queue = harness.new_task_queue()
    log: list[tuple] = []
    traffic = FakeTraffic(log)
    metrics, recorder = FakeMetrics(traffic, healthy), Recorder(log)
    acts = [traffic.get, traffic.set, metrics.measure, metrics.measure_batch, recorder.notify]
    with ts_env.auto_time_skipping_disabled(), ThreadPoolExecutor(8) as pool:
        # no workflow cache: no sticky queue pinning the run to this worker after it dies
        first = Worker(ts_env.client, task_queue=task_queue, workflows=[CanaryRamp], activities=harness.with_verifier(acts),
                       activity_executor=pool, max_cached_workflows=0)
        async with first:
            handle = await ts_env.client.start_workflow(CanaryRamp.run, make_input(), id=f"c-{uuid.uuid4().hex[:8]}", task_queue=task_queue)
            await harness.skip(ts_env, 15 * M)
    # the worker is gone (its workflow cache with it): a new worker replays the history and carries on
    async with harness.running_worker(ts_env.client, task_queue, [CanaryRamp], acts):
        result = await handle.result()
        history = await handle.fetch_history()
    assert result.status == "Succeeded"
    assert [entry for entry in log if entry[0] == "weights"] == [("weights", 5), ("weights", 25), ("weights", 50), ("weights", 100)]
    await Replayer(workflows=[CanaryRamp], data_converter=harness.DATA_CONVERTER).replay_workflow(history)


async def test_steered_history_replays(ts_env: WorkflowEnvironment, task_queue: str) -> None:
    """Gates, updates and a bad canary in one history: replaying it against today's code must not diverge."""
    log: list[tuple] = []
    traffic = FakeTraffic(log)
    metrics = FakeMetrics(traffic, lambda m, w, n: None if m == "cpu" and n < 3 else (2.0 if m == "error-rate" and w >= 25 else HEALTHY[m]))
    recorder = Recorder(log)
    async with harness.running_worker(ts_env.client, task_queue, [CanaryRamp], [traffic.get, traffic.set, metrics.measure, metrics.measure_batch, recorder.notify]):
        with ts_env.auto_time_skipping_disabled():
            handle = await ts_env.client.start_workflow(CanaryRamp.run, make_input(), id=f"c-{uuid.uuid4().hex[:8]}", task_queue=task_queue)
            await harness.skip(ts_env, 4 * M)
            gate = await gate_open(handle)
            await handle.execute_update(CanaryRamp.approve, ApproveInput(gate_id=gate, approver="bob", reason="cpu exporter restarted"))
            await handle.execute_update(CanaryRamp.extend, ExtendInput(by="bob", reason="watch longer", duration="2m"))
        result = await handle.result()
        history = await handle.fetch_history()
    assert result.status == "RolledBack"
    assert traffic.weights == {STABLE: 100, CANARY: 0}
    await Replayer(workflows=[CanaryRamp], data_converter=harness.DATA_CONVERTER).replay_workflow(history)
