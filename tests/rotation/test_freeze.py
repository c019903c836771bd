"""Change freeze windows in rotate-secret (issue 13 item 2: the calendar is checked before each later change step,
in every mutating runbook). A window that opens during the grace period holds the old version's destruction (the
retire step, which checks the calendar itself rather than through ``change``) until the window ends; the new key,
issued before the window, is not held. Real OpenBao, the real ``check_freeze`` reading a real catalog folder."""

from __future__ import annotations

import textwrap
import uuid
from datetime import timedelta, timezone
from pathlib import Path

import hvac
import pytest

from activities.calendar import CalendarActivities
from tests import harness
from tests.rotation.stand_ins import KeyConsumer
from tests.rotation.test_rotate_api_key import acts, key_input, key_path, versions  # noqa: F401 (key_path: a fixture)
from workflows.rotate_secret import RotateSecret

pytestmark = pytest.mark.asyncio(loop_scope="session")

REPO = Path(__file__).resolve().parents[2]


async def test_a_window_opening_in_the_grace_period_holds_the_destruction_until_it_ends(
        ts_env, task_queue, recording, vault: hvac.Client, key_path: str, tmp_path: Path) -> None:  # noqa: F811
    now = (await ts_env.get_current_time()).astimezone(timezone.utc).replace(second=0, microsecond=0)
    begins, ends = now + timedelta(minutes=30), now + timedelta(hours=3)  # the grace period ends at 2 h: inside it
    harness.catalog_with_calendar(tmp_path, textwrap.dedent(f"""\
        timezone: UTC
        windows:
          - name: rotation-freeze
            start: {begins:%Y-%m-%dT%H:%M}
            end: {ends:%Y-%m-%dT%H:%M}
            environments: [test]
        """))
    with KeyConsumer(vault, key_path) as app:
        async with harness.running_worker(ts_env.client, task_queue, [RotateSecret],
                                          [*acts(vault, recording), CalendarActivities(tmp_path).check_freeze]):
            handle = await ts_env.client.start_workflow(
                RotateSecret.run, key_input(key_path, [app.url], grace_period=timedelta(hours=2)),
                id=f"rotate-key-{uuid.uuid4().hex[:8]}", task_queue=task_queue)
            result = await handle.result()
    assert result.status == "Succeeded", result.summary
    steps = {s.name: s for s in result.steps}
    issued = steps["issue new key"].finished_at
    destroyed = steps["destroy old version"].finished_at
    assert issued is not None and issued < begins  # the first change: before the window, not held
    assert destroyed is not None and ends <= destroyed < ends + timedelta(minutes=1)  # held to the window's end
    assert versions(vault, key_path)[result.rotation.old_version]["destroyed"]
    told = next(e for e in recording[0].events if e.kind == "alert" and "change freeze" in e.title)
    assert told.fields["window"] == "rotation-freeze" and "destroy old version" in told.text
