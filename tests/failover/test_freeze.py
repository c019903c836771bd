"""Change freeze windows and region-failover (issue 13 item 2: the calendar exempts "real failovers", not drills):
inside a production freeze that exempts ``region-failover:real``, a real failover goes ahead at once, and a drill is
held (here its catalog entry says ``freeze: refuse``, so it ends Refused with nothing changed). The real
``check_freeze`` reads a real catalog folder; moto, the Kubernetes fakes and local health endpoints as in
test_failover.py."""

from __future__ import annotations

import textwrap
from datetime import timedelta, timezone
from pathlib import Path

from activities.calendar import CalendarActivities
from tests import harness
from tests.failover.conftest import WEST
from tests.failover.test_failover import failover_input, run

REPO = Path(__file__).resolve().parents[2]


async def frozen_catalog(env, folder: Path) -> Path:
    """The product's catalog with one window in force now on production, exempting real failovers (as the stock
    calendar's year-end window does)."""
    now = (await env.get_current_time()).astimezone(timezone.utc).replace(second=0, microsecond=0)
    return harness.catalog_with_calendar(folder, textwrap.dedent(f"""\
        timezone: UTC
        windows:
          - name: prod-freeze
            start: {now - timedelta(hours=1):%Y-%m-%dT%H:%M}
            duration: 1d
            environments: [production]
            exempt: ["region-failover:real"]
        """))


async def test_a_real_failover_is_exempt_and_a_drill_is_held(ts_env, task_queue, regions, recording, tmp_path):
    acts = [*regions.activities, CalendarActivities(await frozen_catalog(ts_env, tmp_path)).check_freeze]
    before = regions.everything()
    drill = failover_input(regions, mode="drill")
    drill = drill.model_copy(update={"meta": drill.meta.model_copy(update={"freeze": "refuse"})})
    held = await run(ts_env, task_queue, acts, drill)
    assert held.status == "Refused" and "prod-freeze" in held.summary, held.summary
    assert regions.everything() == before  # the drill changed nothing

    regions.east_health.status = 503
    real = await run(ts_env, task_queue, acts, failover_input(regions, mode="real"))
    assert real.status == "Succeeded" and real.outcome == "failed_over", real.summary
    assert not [g for g in real.gates if g.gate_id.startswith("break-glass")]  # the window does not hold it
    assert real.rto_seconds is not None and real.rto_seconds < 120  # no wait for the day-long window
    assert regions.records()["PRIMARY"] == f"web.{WEST}.example.com"
    assert all(e.kind != "alert" or "change freeze" not in e.title for e in recording[0].events)
