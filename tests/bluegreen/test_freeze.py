"""Change freeze windows in a blue-green cutover (issue 13 item 2: a mutating runbook checks the calendar before its
first change and before each later change step, not only the canary's weight changes). A window that opens after
the new colour was brought up, while the cutover gate waits, holds the switch: the run waits (WaitingForWindow, the
Service still on blue) and switches at the window's end. The real ``check_freeze`` activity reads a real catalog
folder, edited while the run waits."""

from __future__ import annotations

import textwrap
from datetime import datetime, timedelta, timezone
from pathlib import Path

from activities.calendar import CalendarActivities
from core.runbook import RunbookResult
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
)
from workflows.blue_green import BlueGreenCutover

REPO = Path(__file__).resolve().parents[2]


def catalog(folder: Path) -> Path:
    """The product's catalog with an empty change calendar (nothing frozen yet)."""
    return harness.catalog_with_calendar(folder)


def freeze(folder: Path, start_at: datetime, length: timedelta) -> None:
    """One window on prod (no break-glass: the run can only wait for its end)."""
    (folder / "calendar.yaml").write_text(textwrap.dedent(f"""\
        timezone: UTC
        windows:
          - name: cutover-freeze
            description: a freeze that opens mid-run
            start: {start_at:%Y-%m-%dT%H:%M}
            duration: {int(length.total_seconds())}s
            environments: [prod]
        """))


async def test_a_window_opening_after_bring_up_holds_the_switch_until_it_ends(
        ts_env, task_queue, recording, kube, colours, tmp_path) -> None:
    folder = catalog(tmp_path)
    acts = [*activities(recording, kube), CalendarActivities(folder).check_freeze]
    async with harness.running_worker(ts_env.client, task_queue, [BlueGreenCutover], acts):
        handle = await start(ts_env.client, task_queue, make_input(colours))
        await wait_for(handle, lambda s: open_gate(s, "cutover") is not None)
        assert deployment(kube.fake, "green") is not None  # the first change (bring-up) was not frozen
        now = (await ts_env.get_current_time()).astimezone(timezone.utc).replace(second=0, microsecond=0)
        begins, ends = now - timedelta(hours=1), now + timedelta(hours=1)
        freeze(folder, begins, ends - begins)  # the calendar is read afresh before each change
        await approve(handle)
        waiting = await wait_for(handle, lambda s: s.status == "WaitingForWindow")
        assert waiting.freeze is not None and waiting.freeze.window == "cutover-freeze"
        assert waiting.freeze.ends_at == ends and "switch: waiting for the end of" in waiting.stage
        assert selector(kube.fake)["colour"] == "blue"  # the switch is held
        shown = (await handle.query("__temporal_workflow_metadata")).current_details  # the web UI's details
        assert "Waiting for the end of the change freeze 'cutover-freeze'" in shown
        assert "(this window allows no break-glass approval)" in shown
        result: RunbookResult = await handle.result()
    assert result.status == "Succeeded" and result.live_colour == "green", result.summary
    assert selector(kube.fake)["colour"] == "green"
    switch = next(s for s in result.steps if s.name == "switch")
    assert switch.finished_at is not None and ends <= switch.finished_at < ends + timedelta(minutes=1)
    bring_up = next(s for s in result.steps if s.name == "bring-up")
    assert bring_up.finished_at is not None and bring_up.finished_at < ends - timedelta(minutes=30)  # before the window
    told = next(e for e in recording[0].events if e.kind == "alert" and "change freeze" in e.title)
    assert told.fields["window"] == "cutover-freeze" and told.severity == "warning"
