"""Abort and cancel at the steps that change, wait or bake: a change started is finished, then undone."""

from __future__ import annotations

import pytest

from tests.bluegreen.abort_cases import abort_at

STEPS = ["bring-up", "approval", "switch", "bake", "scale-down delay", "retire"]


@pytest.mark.parametrize("how", ["abort", "cancel"])
@pytest.mark.parametrize("step", STEPS)
async def test_abort_and_cancel_at_step(ts_env, task_queue, recording, kube, colours, step, how):
    await abort_at(ts_env, task_queue, recording, kube, colours, step, how)
