"""Abort and cancel while a step reads (the read is cancelled): before any change, or before the switch."""

from __future__ import annotations

import pytest

from tests.bluegreen.abort_cases import abort_at, per_case_ts_env  # noqa: F401 (the ts_env fixture of these cases)

READS = ["discover", "wait-ready", "preview", "pre-analysis"]


@pytest.mark.parametrize("how", ["abort", "cancel"])
@pytest.mark.parametrize("step", READS)
async def test_abort_and_cancel_while_reading(ts_env, task_queue, recording, kube, colours, step, how):
    await abort_at(ts_env, task_queue, recording, kube, colours, step, how)
