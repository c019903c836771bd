"""Two versions of one workflow, to prove the replay test catches a non-deterministic change (test-only)."""

from __future__ import annotations

from datetime import timedelta

from temporalio import activity, workflow


@activity.defn(name="replay_probe")
def probe(step: str) -> str:
    return f"done {step}"


@workflow.defn(name="ReplayProbe")
class ReplayProbe:
    @workflow.run
    async def run(self, steps: int) -> list[str]:
        done = []
        for i in range(steps):
            done.append(await workflow.execute_activity(probe, f"s{i}", start_to_close_timeout=timedelta(seconds=10)))
            await workflow.sleep(timedelta(minutes=5))
        return done


@workflow.defn(name="ReplayProbe")
class ReplayProbeChanged:
    """The same workflow after an incompatible edit: a timer was added before the first activity."""

    @workflow.run
    async def run(self, steps: int) -> list[str]:
        await workflow.sleep(timedelta(seconds=1))
        done = []
        for i in range(steps):
            done.append(await workflow.execute_activity(probe, f"s{i}", start_to_close_timeout=timedelta(seconds=10)))
            await workflow.sleep(timedelta(minutes=5))
        return done
