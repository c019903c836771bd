"""Abort and cancel while a step reads (the read is cancelled): before any change, or before the switch."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from temporalio.testing import WorkflowEnvironment

from tests import harness
from tests.bluegreen.abort_cases import abort_at

READS = ["discover", "wait-ready", "preview", "pre-analysis"]


@pytest_asyncio.fixture(loop_scope="session")
async def ts_env() -> AsyncIterator[WorkflowEnvironment]:
    """A time-skipping server per case, not per module: a read cancelled while its stand-in holds it stays pending
    on the test server after its run closed, which stops virtual time for every later run on that server (the
    pre-analysis cases, which wait on analysis timers, then hung in one fresh-clone CI run in two)."""
    env = await harness.start_time_skipping()
    async with env:
        yield env


@pytest.mark.parametrize("how", ["abort", "cancel"])
@pytest.mark.parametrize("step", READS)
async def test_abort_and_cancel_while_reading(ts_env, task_queue, recording, kube, colours, step, how):
    await abort_at(ts_env, task_queue, recording, kube, colours, step, how)
