"""Test-only workflows and activities the platform tests add to the product worker (never product code)."""

from __future__ import annotations

import asyncio
import os
import time
from datetime import timedelta

from pydantic import BaseModel
from temporalio import activity, workflow


class FanOutInput(BaseModel):
    count: int
    sleep_s: float = 0.2


class FanOutResult(BaseModel):
    pids: list[int]


class SlowInput(BaseModel):
    sleep_s: float


@activity.defn(name="platform_test_whoami")
def whoami(sleep_s: float) -> int:
    time.sleep(sleep_s)
    return os.getpid()


@activity.defn(name="platform_test_slow")
def slow(input: SlowInput) -> int:
    """Sleeps, heartbeating; records which process finished it."""
    deadline = time.monotonic() + input.sleep_s
    while time.monotonic() < deadline:
        activity.heartbeat()
        time.sleep(0.05)
    return os.getpid()


@workflow.defn(name="PlatformFanOut")
class FanOut:
    @workflow.run
    async def run(self, input: FanOutInput) -> FanOutResult:
        pids = await asyncio.gather(
            *(
                workflow.execute_activity(whoami, input.sleep_s, start_to_close_timeout=timedelta(seconds=30))
                for _ in range(input.count)
            )
        )
        return FanOutResult(pids=list(pids))


@workflow.defn(name="PlatformSlow")
class Slow:
    @workflow.run
    async def run(self, input: SlowInput) -> int:
        return await workflow.execute_activity(
            slow, input, start_to_close_timeout=timedelta(seconds=60), heartbeat_timeout=timedelta(seconds=10)
        )


WORKFLOWS = [FanOut, Slow]
ACTIVITIES = [whoami, slow]
