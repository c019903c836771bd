"""THE HANG (issue 11): a promote-now gate and a bake-inconclusive gate open at once. Each is its own object, decided
by its id, closing only itself; the bake closes its own promote gate when it ends; no workflow task ever fails."""

from __future__ import annotations

from datetime import timedelta

import pytest

from core.analysis import AnalysisTemplate, CloudWatchQuery, MetricSpec
from core.approval import AbortInput
from tests import harness
from tests.bluegreen.conftest import (
    approve,
    deployment,
    make_input,
    open_gate,
    reject,
    selector,
    start,
    wait_for,
    worker,
)
from tests.bluegreen.stand_ins import Measurer, workflow_task_failures
from workflows.blue_green import BlueGreenCutover, PromoteNowInput


def strict_template() -> AnalysisTemplate:
    """One metric; the first inconclusive measurement makes the bake Inconclusive (a person is asked)."""
    return AnalysisTemplate(
        name="strict",
        metrics=[MetricSpec(name="error-rate", query=CloudWatchQuery(namespace="Demo/Service", metric_name="ErrorRate"),
                            success="<= 1", failure_limit=0, inconclusive_limit=0)],
    )


async def both_gates_open(ts_env, handle):
    """Bake running: ask to promote now (gate 1), then let one tick measure Inconclusive (gate 2)."""
    await wait_for(handle, lambda s: s.details.get("phase") == "bake")
    await handle.execute_update(BlueGreenCutover.promote_now, PromoteNowInput(requested_by="carol", reason="looks fine"))
    await wait_for(handle, lambda s: open_gate(s, "promote-now") is not None)
    await harness.skip(ts_env, timedelta(minutes=1, seconds=1))  # the first bake tick: Inconclusive
    status = await wait_for(handle, lambda s: open_gate(s, "bake-inconclusive") is not None)
    assert [g.gate_id for g in status.open_gates] == ["promote-now-2", "bake-inconclusive-3"]
    assert status.gate.gate_id == "promote-now-2" and status.status == "WaitingForApproval"
    return status


def decisions(result) -> dict[str, str]:
    return {g.gate_id: g.decision for g in result.gates}


@pytest.fixture
def inconclusive_once():
    return Measurer(["Inconclusive"])


async def test_both_gates_open_and_each_is_approved_by_id(ts_env, task_queue, recording, kube, colours, inconclusive_once):
    replace = {"measure_metrics": inconclusive_once.activity}
    async with worker(ts_env, task_queue, recording, kube, replace) as client:
        handle = await start(client, task_queue, make_input(colours, bake="1h", bake_analysis=strict_template()))
        await approve(handle)
        await both_gates_open(ts_env, handle)
        await approve(handle, "promote-now")  # used to be refused as stale: the inconclusive gate took the slot
        status = await wait_for(handle, lambda s: open_gate(s, "promote-now") is None)
        assert [g.gate_id for g in status.open_gates] == ["bake-inconclusive-3"]  # approving one closed only it
        await approve(handle, "bake-inconclusive")
        result = await handle.result()
        assert await workflow_task_failures(handle) == []
        await harness.save_history(handle, "bluegreen-both_gates_open_each_approved_by_id")
    assert result.status == "Succeeded" and result.live_colour == "green"
    assert decisions(result) == {"cutover-1": "approved", "promote-now-2": "approved", "bake-inconclusive-3": "approved"}
    bake = next(s for s in result.steps if s.name == "bake")
    assert "promoted early by alice" in bake.detail and bake.finished_at - bake.started_at < timedelta(minutes=5)
    assert deployment(kube.fake, "blue")["spec"]["replicas"] == 0


async def test_inconclusive_rejected_switches_back_and_bake_closes_its_promote_gate(
    ts_env, task_queue, recording, kube, colours, inconclusive_once
):
    replace = {"measure_metrics": inconclusive_once.activity}
    async with worker(ts_env, task_queue, recording, kube, replace) as client:
        handle = await start(client, task_queue, make_input(colours, bake="1h", bake_analysis=strict_template()))
        await approve(handle)
        await both_gates_open(ts_env, handle)
        await reject(handle, "bake-inconclusive", reason="no data is not good enough")
        result = await handle.result()
        assert await workflow_task_failures(handle) == []
    assert result.status == "RolledBack" and result.switched_back and result.live_colour == "blue"
    assert "not confirmed (rejected)" in result.reason
    assert decisions(result) == {"cutover-1": "approved", "bake-inconclusive-3": "rejected", "promote-now-2": "aborted"}
    promote = next(g for g in result.gates if g.gate_id == "promote-now-2")
    assert promote.decided_by == "runbook" and "the bake ended" in promote.reason
    assert selector(kube.fake)["colour"] == "blue" and deployment(kube.fake, "green") is None


async def test_promote_rejected_while_inconclusive_open_then_bake_continues(
    ts_env, task_queue, recording, kube, colours, inconclusive_once
):
    replace = {"measure_metrics": inconclusive_once.activity}
    async with worker(ts_env, task_queue, recording, kube, replace) as client:
        handle = await start(client, task_queue, make_input(colours, bake="10m", bake_analysis=strict_template()))
        await approve(handle)
        await both_gates_open(ts_env, handle)
        await reject(handle, "promote-now", reason="wait for the full bake")
        status = await wait_for(handle, lambda s: open_gate(s, "promote-now") is None)
        assert [g.gate_id for g in status.open_gates] == ["bake-inconclusive-3"]
        await approve(handle, "bake-inconclusive")
        result = await handle.result()
        assert await workflow_task_failures(handle) == []
    assert result.status == "Succeeded"
    assert decisions(result) == {"cutover-1": "approved", "promote-now-2": "rejected", "bake-inconclusive-3": "approved"}
    bake = next(s for s in result.steps if s.name == "bake")
    assert bake.finished_at - bake.started_at >= timedelta(minutes=10) and "without breach" in bake.detail
    refused = [a for a in result.actions if a.action == "promote_now" and not a.accepted]
    assert refused and "bake continues" in refused[0].note


async def test_both_gates_time_out_on_their_own_clocks(ts_env, task_queue, recording, kube, colours, inconclusive_once):
    """The deadlock of the old single slot: the promote gate's timeout fired while another gate held the slot."""
    replace = {"measure_metrics": inconclusive_once.activity}
    async with worker(ts_env, task_queue, recording, kube, replace) as client:
        handle = await start(client, task_queue, make_input(colours, bake="3h", bake_analysis=strict_template()))
        await approve(handle)
        await both_gates_open(ts_env, handle)
        result = await handle.result()  # nobody answers: each gate times out 1 h after it opened
        assert await workflow_task_failures(handle) == []
    assert result.status == "RolledBack" and "not confirmed (timed out)" in result.reason
    assert decisions(result) == {"cutover-1": "approved", "promote-now-2": "timed_out", "bake-inconclusive-3": "timed_out"}
    promote, inconclusive = (next(g for g in result.gates if g.gate_id == i) for i in ("promote-now-2", "bake-inconclusive-3"))
    for gate in (promote, inconclusive):
        assert timedelta(hours=1) <= gate.decided_at - gate.opened_at < timedelta(hours=1, seconds=1)
    assert promote.decided_at < inconclusive.decided_at
    assert selector(kube.fake)["colour"] == "blue"


async def test_abort_closes_both_gates(ts_env, task_queue, recording, kube, colours, inconclusive_once):
    replace = {"measure_metrics": inconclusive_once.activity}
    async with worker(ts_env, task_queue, recording, kube, replace) as client:
        handle = await start(client, task_queue, make_input(colours, bake="1h", bake_analysis=strict_template()))
        await approve(handle)
        await both_gates_open(ts_env, handle)
        await handle.execute_update(BlueGreenCutover.abort, AbortInput(requested_by="carol", reason="incident"))
        result = await handle.result()
        assert await workflow_task_failures(handle) == []
    assert result.status == "Aborted" and result.switched_back
    assert decisions(result) == {"cutover-1": "approved", "promote-now-2": "aborted", "bake-inconclusive-3": "aborted"}
