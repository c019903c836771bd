"""Change freeze windows (issue 13 item 2) on the time-skipping server: a canary ramp checks the change calendar
(the real ``check_freeze`` activity reading a real catalog folder) before each weight change. Inside a window it
waits (WaitingForWindow) and runs at the window's end; a break-glass approval with a reason lets it through at once
and is recorded; an exempt runbook is not held; a window opening mid-ramp holds the next weight change; an abort
while waiting changes nothing; an edited calendar reaches a waiting run; a runbook that refuses ends Refused."""

from __future__ import annotations

import textwrap
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError
from temporalio.testing import WorkflowEnvironment

from activities.calendar import CalendarActivities
from core.approval import AbortInput, ApproveInput
from core.runbook import RunbookStatus
from tests import harness
from tests.canary.standins import CANARY, STABLE
from tests.canary.test_ramp import Rig, gate_open, make_input, offsets
from workflows.canary_ramp import CanaryRamp, CanaryRampInput

REPO = Path(__file__).resolve().parents[2]
M = timedelta(minutes=1)


def catalog(folder: Path, start: datetime, length: timedelta, glass: str = "{groups: [sre], timeout: 2h}",
            **extra: str) -> Path:
    """The product's catalog with a calendar of one window on production (wall-clock UTC, whole minutes)."""
    lines = "".join(f"    {k}: {v}\n" for k, v in extra.items())
    return harness.catalog_with_calendar(folder, textwrap.dedent(f"""\
        timezone: UTC
        break_glass: {glass}
        windows:
          - name: test-freeze
            description: a test freeze
            start: {start:%Y-%m-%dT%H:%M}
            duration: {int(length.total_seconds())}s
            environments: [production]
        """) + lines)


def production(**kw) -> CanaryRampInput:
    inp = make_input(**kw)
    return inp.model_copy(update={"meta": inp.meta.model_copy(update={"environment": "production"})})


async def minute(env: WorkflowEnvironment, offset: timedelta = timedelta(0)) -> datetime:
    now = await env.get_current_time() + offset
    return now.astimezone(timezone.utc).replace(second=0, microsecond=0)


class FrozenRig(Rig):
    def __init__(self, env: WorkflowEnvironment, task_queue: str, folder: Path) -> None:
        super().__init__(env, task_queue)
        self.calendar = CalendarActivities(folder)

    def worker(self):
        acts = [self.traffic.get, self.traffic.set, self.metrics.measure, self.metrics.measure_batch,
                self.recorder.notify, self.calendar.check_freeze]
        return harness.running_worker(self.env.client, self.task_queue, [CanaryRamp], acts)


async def waiting(handle: WorkflowHandle) -> RunbookStatus:
    return await harness.poll(lambda: handle.query(CanaryRamp.status), lambda s: s.status == "WaitingForWindow",
                              "the run waits for the window")


async def test_a_canary_started_inside_a_freeze_waits_and_runs_at_its_end(ts_env, task_queue, tmp_path) -> None:
    start = await minute(ts_env, -1 * timedelta(hours=1))
    end = start + timedelta(hours=2)  # before the break-glass gate's own 2 h timeout: the window's end closes it
    rig = FrozenRig(ts_env, task_queue, catalog(tmp_path, start, timedelta(hours=2)))
    async with rig.worker():
        with ts_env.auto_time_skipping_disabled():
            handle = await rig.start(production())
            status = await waiting(handle)
            assert status.freeze is not None and status.freeze.window == "test-freeze"
            assert status.freeze.ends_at == end and "waiting for the end of the change freeze" in status.stage
            assert rig.traffic.weights == {STABLE: 100, CANARY: 0}  # nothing changed yet
        result = await handle.result()
        after = await handle.query(CanaryRamp.status)
    assert result.status == "Succeeded"
    assert end <= result.weights[0].at < end + M  # the first weight change at the window's end
    assert [w for w, _ in offsets(result)] == [5, 25, 50, 100]
    assert after.freeze is None
    # Slack hears of it through the break-glass gate's request, which names the window; the window's end closes it
    assert any(e.kind == "approval_needed" and "test-freeze" in e.title for e in rig.recorder.events)
    assert result.gates[0].gate_id.startswith("break-glass") and result.gates[0].decided_by == "calendar"


async def test_break_glass_with_a_reason_lets_it_change_at_once_and_is_recorded(ts_env, task_queue, tmp_path) -> None:
    start = await minute(ts_env, -1 * timedelta(hours=1))
    rig = FrozenRig(ts_env, task_queue, catalog(tmp_path, start, timedelta(hours=6)))
    async with rig.worker():
        with ts_env.auto_time_skipping_disabled():
            handle = await rig.start(production())
            await waiting(handle)
            gate = await gate_open(handle)
            began = await ts_env.get_current_time()
            with pytest.raises(WorkflowUpdateFailedError):  # not in the break-glass group
                await handle.execute_update(CanaryRamp.approve, ApproveInput(
                    gate_id=gate, approver="bob", reason="urgent", binding="break-glass test-freeze"))
            with pytest.raises(WorkflowUpdateFailedError) as no_reason:  # a break-glass approval says why
                await handle.execute_update(CanaryRamp.approve, ApproveInput(
                    gate_id=gate, approver="dave", binding="break-glass test-freeze"))
            assert "reason" in str(no_reason.value.cause)
            await handle.execute_update(CanaryRamp.approve, ApproveInput(
                gate_id=gate, approver="dave", reason="INC-42 hotfix", binding="break-glass test-freeze"))
        result = await handle.result()
    assert result.status == "Succeeded"
    assert result.weights[0].at - began < M  # at once, not at the window's end
    # later weight changes inside the same window are not held again
    assert [w for w, _ in offsets(result)] == [5, 25, 50, 100] and result.weights[-1].at < start + timedelta(hours=6)
    glass = next(a for a in result.actions if a.action == "break_glass")
    assert glass.by == "dave" and "INC-42 hotfix" in glass.reason and glass.accepted
    approved = next(g for g in result.gates if g.gate_id == gate)
    assert approved.decision == "approved" and approved.approvals[0].reason == "INC-42 hotfix"


async def test_an_exempt_runbook_is_not_held(ts_env, task_queue, tmp_path) -> None:
    start = await minute(ts_env, -1 * timedelta(hours=1))
    rig = FrozenRig(ts_env, task_queue, catalog(tmp_path, start, timedelta(hours=6), exempt="[canary-ramp]"))
    async with rig.worker():
        began = await ts_env.get_current_time()
        result = await (await rig.start(production())).result()
    assert result.status == "Succeeded" and result.weights[0].at - began < M
    assert not result.gates


async def test_a_window_opening_mid_ramp_holds_the_next_weight_change(ts_env, task_queue, tmp_path) -> None:
    start = await minute(ts_env, 5 * M)  # the 5 % step is before it, the 25 % change (10 min in) inside it
    rig = FrozenRig(ts_env, task_queue, catalog(tmp_path, start, timedelta(hours=1)))
    async with rig.worker():
        result = await (await rig.start(production())).result()
    assert result.status == "Succeeded"
    assert result.weights[0].at < start
    assert start + timedelta(hours=1) <= result.weights[1].at < start + timedelta(hours=1) + M
    assert [w for w, _ in offsets(result)] == [5, 25, 50, 100]


async def test_abort_while_waiting_ends_aborted_with_nothing_changed(ts_env, task_queue, tmp_path) -> None:
    start = await minute(ts_env, -1 * timedelta(hours=1))
    rig = FrozenRig(ts_env, task_queue, catalog(tmp_path, start, timedelta(hours=4)))
    async with rig.worker():
        with ts_env.auto_time_skipping_disabled():
            handle = await rig.start(production())
            await waiting(handle)
            await handle.execute_update(CanaryRamp.abort, AbortInput(requested_by="carol", reason="not during the freeze"))
        result = await handle.result()
    assert result.status == "Aborted" and "not during the freeze" in result.summary
    assert result.weights == [] and not any(entry[0] == "weights" for entry in rig.log)
    assert rig.traffic.weights == {STABLE: 100, CANARY: 0}
    assert result.gates[0].decision == "aborted"


async def test_an_edited_calendar_reaches_a_waiting_run(ts_env, task_queue, tmp_path) -> None:
    start = await minute(ts_env, -1 * timedelta(hours=1))
    folder = catalog(tmp_path, start, timedelta(hours=10))
    rig = FrozenRig(ts_env, task_queue, folder)
    async with rig.worker():
        with ts_env.auto_time_skipping_disabled():
            handle = await rig.start(production())
            await waiting(handle)
            began = await ts_env.get_current_time()
            (folder / "calendar.yaml").write_text("windows: []\n")  # the freeze is lifted
        result = await handle.result()
    assert result.status == "Succeeded"
    assert result.weights[0].at - began <= timedelta(minutes=16)  # at the next look (every 15 min), not in 9 h


async def test_a_runbook_that_refuses_to_wait_ends_refused(ts_env, task_queue, tmp_path) -> None:
    start = await minute(ts_env, -1 * timedelta(hours=1))
    rig = FrozenRig(ts_env, task_queue, catalog(tmp_path, start, timedelta(hours=4)))
    inp = production()
    inp = inp.model_copy(update={"meta": inp.meta.model_copy(update={"freeze": "refuse"})})
    async with rig.worker():
        result = await (await rig.start(inp)).result()
    assert result.status == "Refused" and "test-freeze" in result.summary
    assert result.weights == [] and rig.traffic.weights == {STABLE: 100, CANARY: 0}


async def test_a_window_without_break_glass_waits_and_says_so(ts_env, task_queue, tmp_path) -> None:
    start = await minute(ts_env, -1 * timedelta(hours=1))
    rig = FrozenRig(ts_env, task_queue, catalog(tmp_path, start, timedelta(hours=3), glass="null"))
    async with rig.worker():
        with ts_env.auto_time_skipping_disabled():
            handle = await rig.start(production())
            status = await waiting(handle)
            assert status.freeze is not None and status.freeze.break_glass is None and not status.open_gates
        result = await handle.result()
    assert result.status == "Succeeded" and result.weights[0].at >= start + timedelta(hours=3)
    told = next(e for e in rig.recorder.events if e.kind == "alert")
    assert told.severity == "warning" and "test-freeze" in told.text and told.channels == ["slack"]
