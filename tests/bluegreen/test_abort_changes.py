"""Abort and cancel at the steps that change, wait or bake: a change started is finished, then undone."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from core.approval import AbortInput
from tests import harness
from tests.bluegreen.abort_cases import abort_at, per_case_ts_env  # noqa: F401 (the ts_env fixture of these cases)
from tests.bluegreen.conftest import activities, approve, make_input, start, wait_for, worker
from tests.bluegreen.stand_ins import Hold, workflow_task_failures
from workflows.blue_green import BlueGreenCutover

STEPS = ["bring-up", "approval", "switch", "bake", "scale-down delay", "retire"]


@pytest.mark.parametrize("how", ["abort", "cancel"])
@pytest.mark.parametrize("step", STEPS)
async def test_abort_and_cancel_at_step(ts_env, task_queue, recording, kube, colours, step, how):
    await abort_at(ts_env, task_queue, recording, kube, colours, step, how)


async def test_abort_while_retiring_alb_brings_the_old_targets_back(ts_env, task_queue, recording, alb, colours):
    """ALB: the retire's deregistration finishes, then the old colour's targets are registered again (and found
    healthy) before the listener switches back; the new colour's targets are removed: everything as found."""
    found = (alb.targets("blue"), alb.targets("green"))
    hold = Hold("alb_deregister_targets", 1)
    replace = hold.wrap_all(activities(recording))
    async with worker(ts_env, task_queue, recording, None, replace) as client:
        handle = await start(client, task_queue, make_input(colours, router="alb", alb=alb, bake="10m",
                                                            scale_down_delay="1s"))
        try:
            await approve(handle)
            await wait_for(handle, lambda s: s.details.get("phase") == "bake")
            skipping = asyncio.ensure_future(harness.skip(ts_env, timedelta(minutes=11)))
            await hold.reached()
            assert alb.weights().get("blue", 0) == 0 and alb.targets("blue") == found[0]
            await handle.execute_update(BlueGreenCutover.abort, AbortInput(requested_by="carol", reason="stop it"))
        finally:
            hold.release()
        result = await handle.result()
        await skipping
        assert await workflow_task_failures(handle) == []
    assert result.status == "Aborted" and "carol" in result.reason, result.summary
    assert result.compensated == ["blue brought back", "traffic switched back to blue", "green removed"]
    assert (alb.targets("blue"), alb.targets("green")) == found and found[0] and not found[1]
    weights = alb.weights()
    assert weights["blue"] > 0 and weights.get("green", 0) == 0
    assert result.live_colour == "blue" and not result.not_undone
