"""The suite's clean-up of the runs a test leaves open on the shared servers (tests/harness.py ``OpenRuns``, called by
the autouse fixture of tests/conftest.py when each test ends)."""

from __future__ import annotations

import uuid

from temporalio.client import WorkflowExecutionStatus

from tests import harness
from tests.replay.workflows_under_test import ReplayProbe, probe


async def test_a_run_left_open_is_terminated_and_a_finished_one_left_as_it_is(ts_env, task_queue):
    async with harness.running_worker(ts_env.client, task_queue, [ReplayProbe], [probe]):
        finished = await ts_env.client.start_workflow(ReplayProbe.run, 1, id=f"done-{uuid.uuid4().hex[:8]}",
                                                      task_queue=task_queue)
        assert await finished.result() == ["done s0"]
        left = await ts_env.client.start_workflow(ReplayProbe.run, 3, id=f"left-{uuid.uuid4().hex[:8]}",
                                                  task_queue=task_queue)
        # on its 5-minute timer (its workflow task done: one the worker still held would keep the clock stopped)
        await harness.poll(left.fetch_history, lambda h: any(e.HasField("timer_started_event_attributes")
                                                             for e in h.events), "the run waits on its timer")
        assert [h.id for h in harness.OPEN_RUNS.handles] == [finished.id, left.id]
        await harness.OPEN_RUNS.terminate_open()
    assert harness.OPEN_RUNS.handles == []
    assert (await left.describe()).status == WorkflowExecutionStatus.TERMINATED
    assert (await finished.describe()).status == WorkflowExecutionStatus.COMPLETED
