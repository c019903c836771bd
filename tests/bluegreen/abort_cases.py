"""Abort and cancel at every step of a blue-green cutover (issue 11), with the safe state docs/bluegreen.md promises.

A stand-in holds the step's activity (registered under the real name, wrapping the real one) while the test aborts
(Update) or cancels the run; the hold is then released. Steps that read (discover, wait-ready, preview, pre-analysis)
cancel their activity; steps that change (bring-up, switch, retire) and the bake's reads finish first.

The test modules are split by that difference: an activity cancelled while a sync stand-in still holds it stays
pending on the time-skipping test server after its workflow closed, which stops virtual time for the rest of that
module's environment; the steps that need virtual time (bake, scale-down delay, retire) run in another module.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest_asyncio
from temporalio.api.enums.v1 import EventType
from temporalio.testing import WorkflowEnvironment

from core.analysis import AnalysisTemplate, CloudWatchQuery, MetricSpec
from core.approval import AbortInput
from tests import harness
from tests.bluegreen.conftest import (
    activities,
    approve,
    deployment,
    make_input,
    open_gate,
    selector,
    start,
    wait_for,
    worker,
)
from tests.bluegreen.stand_ins import Hold, Measurer, workflow_task_failures
from workflows.blue_green import BlueGreenCutover

WRITES = ("POST", "PUT", "PATCH", "DELETE")


@pytest_asyncio.fixture(name="ts_env", loop_scope="session")
async def per_case_ts_env() -> AsyncIterator[WorkflowEnvironment]:
    """A time-skipping server per case, not per module (the modules import it as their ``ts_env``): an activity
    cancelled while its stand-in holds it stays pending on the test server after its run closed, which stops
    virtual time for every later run on that server; one stuck case then failed every later one of its module in
    fresh-clone CI runs."""
    env = await harness.start_time_skipping()
    async with env:
        yield env


def kube_writes(fake) -> list:
    return [r for r in fake.requests if r.method in WRITES]


def held_input(colours, step: str):
    kw: dict = {"bake": "10m", "scale_down_delay": "1h" if step == "scale-down delay" else "1s"}
    if step == "pre-analysis":
        kw["pre_analysis"] = AnalysisTemplate(
            name="pre", metrics=[MetricSpec(name="e", query=CloudWatchQuery(namespace="N", metric_name="M"), success="<= 1")]
        )
    return make_input(colours, **kw)


# step -> the activity held while the step runs (None: the step waits on no activity) and which call of it
STEPS = {
    "discover": ("k8s_get_service_selector", 1),
    "bring-up": ("k8s_apply_deployment", 1),
    "wait-ready": ("k8s_wait_rollout", 1),
    "preview": ("http_check_suite", 1),
    "pre-analysis": ("measure_metrics", 1),
    "approval": (None, 0),
    "switch": ("k8s_set_service_selector", 1),
    "bake": ("measure_metrics", 1),  # the first bake tick (no pre-analysis here)
    "scale-down delay": (None, 0),
    "retire": ("k8s_scale_deployment", 1),
}


def safe_state(step: str, result, fake) -> None:
    """The documented safe state after an abort at ``step`` (docs/bluegreen.md)."""
    # everything as found: at retire, the retire finished, then blue came back before traffic switched back to it
    assert selector(fake)["colour"] == "blue" and deployment(fake, "blue")["spec"]["replicas"] == 3
    assert deployment(fake, "green") is None
    assert result.live_colour == (None if step == "discover" else "blue") and not result.not_undone
    after_switch = step in ("switch", "bake", "scale-down delay", "retire")
    assert result.switched_back is after_switch
    if step == "retire":
        assert result.compensated == ["blue brought back", "traffic switched back to blue", "green removed"]
    elif after_switch:
        assert result.compensated == ["traffic switched back to blue", "green removed"]
    elif step != "discover":
        assert result.compensated == ["green removed"]
    else:
        assert result.compensated == []


async def reach(ts_env, handle, step: str, hold: Hold):
    """Drive the run to ``step``; returns the time-skipping sleep still under way (a held activity locks the test
    server's clock, so the sleep finishes only after the hold is released), or None."""
    skipping = None
    if step in ("switch", "bake", "scale-down delay", "retire"):
        await approve(handle)
    if step == "approval":
        await wait_for(handle, lambda s: open_gate(s, "cutover") is not None)
    elif step in ("bake", "scale-down delay", "retire"):
        await wait_for(handle, lambda s: s.details.get("phase") == "bake")
        # the first bake tick (its measurement is held), or past the 10 m bake
        skipping = asyncio.ensure_future(harness.skip(ts_env, timedelta(minutes=1 if step == "bake" else 11)))
        if step == "scale-down delay":
            await wait_for(handle, lambda s: s.stage == "scale-down")
    if STEPS[step][0] is not None:
        await hold.reached()
    return skipping


async def cancel_processed(handle) -> None:
    """Wait (polling the history, no wall-clock sleep guesses) until the workflow has seen the cancel request."""
    for reads in range(1500):  # the whole history each time: not every 20 ms
        seen = False
        async for event in handle.fetch_history_events():
            if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCEL_REQUESTED:
                seen = True
            elif seen and event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
                return
        await harness.backoff(reads)
    raise AssertionError("the cancel request was never processed")


async def abort_at(ts_env, task_queue, recording, kube, colours, step: str, how: str) -> None:
    """Run a cutover to ``step``, abort (Update) or cancel it there, and check the documented ending and safe state."""
    name, call = STEPS[step]
    hold = Hold(name, call)
    measurer = Measurer()
    acts = activities(recording, kube, {"measure_metrics": measurer.activity})
    replace = hold.wrap_all(acts)
    async with worker(ts_env, task_queue, recording, kube, replace) as client:
        handle = await start(client, task_queue, held_input(colours, step))
        skipping = None
        try:
            skipping = await reach(ts_env, handle, step, hold)
            if how == "abort":
                await handle.execute_update(BlueGreenCutover.abort, AbortInput(requested_by="carol", reason="stop it"))
            elif STEPS[step][0] is not None:  # the held activity completes only once the cancel was processed
                await handle.cancel()
                await cancel_processed(handle)
            else:  # no hold: an activity under way (a notification) might complete while the cancel is processed
                await harness.cancel_settled(handle)
                await cancel_processed(handle)
        finally:
            hold.release()
        result = await handle.result()
        if skipping is not None:
            await skipping
        assert await workflow_task_failures(handle) == []
    assert result.status == "Aborted", (result.status, result.summary)
    if how == "abort":
        assert "stop it" in result.reason and "carol" in result.reason
    else:
        assert "cancel" in result.reason
    safe_state(step, result, kube.fake)
    # a change started is finished before the abort is honoured (then compensation undoes it)
    changes = [(e["op"].split()[0], e["key"].split("/")[-1], bool(e["value"])) for e in kube.fake.ledger]
    if step == "bring-up":
        assert changes[0] == ("POST", "shop-green", True) and changes[-1] == ("DELETE", "shop-green", False)
    if step == "switch":
        assert [c for c in changes if c[1] == "shop"] == [("PATCH", "shop", True)] * 2  # switched, then back
    if step == "discover":
        assert not kube_writes(kube.fake)
