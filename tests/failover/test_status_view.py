"""What `runbook status` shows of a failover waiting at its gate: the step done, the gate with its deadline and a
copy-safe approve command, and the steps still ahead (the issue: an empty steps table while a failover waited)."""

from __future__ import annotations

import asyncio
import shlex
import uuid
from datetime import datetime, timedelta, timezone

from core.approval import AbortInput
from starters.render import plain_lines
from tests import harness
from tests.failover.conftest import EAST, WEST, meta
from tests.failover.test_failover import WORKFLOWS, failover_input
from workflows.failover import RegionFailover


async def test_a_failover_at_its_gate_shows_the_steps_ahead_and_how_to_approve(ts_env, task_queue, regions):
    wf_input = failover_input(regions, meta=meta(approvers=["alice"], timeout=timedelta(hours=1)))
    async with harness.running_worker(ts_env.client, task_queue, WORKFLOWS, regions.activities):
        with ts_env.auto_time_skipping_disabled():
            handle = await ts_env.client.start_workflow(
                RegionFailover.run, wf_input, id=f"failover-{uuid.uuid4().hex[:8]}", task_queue=task_queue)
            for _ in range(300):
                state = await handle.query(RegionFailover.status)
                if state.open_gates:
                    break
                await asyncio.sleep(0.05)
            await handle.execute_update(RegionFailover.abort, AbortInput(requested_by="alice", reason="view seen"))
        await handle.result()
    lines = plain_lines(state, datetime.now(timezone.utc))
    rows = lines[lines.index("steps:") + 1:]
    assert rows[0].startswith("    done        look [")
    assert rows[1].startswith(f"  > waiting     approval: Drill failover of shop: {EAST} -> {WEST} [")
    assert [row.split()[-1] for row in rows[2:7]] == ["fence", "promote", "scale", "dns", "verify"]
    assert all(row.startswith("    next ") for row in rows[2:9]) and rows[8].split()[-1] == "restore"
    hint = next(line for line in lines if line.startswith("  approve: ")).removeprefix("  approve: ")
    assert shlex.split(hint)[-2:] == ["--expect", f"failover:shop:{EAST}->{WEST}"]
    assert any(line.startswith("gate failover-1 deadline: [") and "left, ends in" in line for line in lines), lines
