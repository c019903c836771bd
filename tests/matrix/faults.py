"""Fault injection for the failure matrix: a worker ActivityInboundInterceptor driven by a fault plan (JSON file).

A step is identified the way a recorded run names it: the workflow (``{wf}`` for the run itself, ``{wf}`` plus a
suffix for a child), the activity id (Temporal numbers a run's scheduled activities 1, 2, 3...) and its type. The
interceptor keeps no counter in memory, so a replacement worker process knows the step just as the killed one did.

Kinds:
- ``kill``: on the target's first attempt write ``<dir>/reached`` and block; the test SIGKILLs the process. Once
  ``<dir>/reached`` exists the target runs normally (the replacement worker must not block again).
- ``fail``: the target raises ApplicationError(type="InjectedFault", non_retryable=True) without calling anything.
- ``pause``: on the target's first attempt write ``<dir>/reached``, wait for ``<dir>/go``, then run the activity
  (the test sends abort or cancel in between).
- ``chaos``: every attempt of every activity but ``notify`` is faulted with probability ``p`` (a seeded RNG per
  workflow, activity id and attempt: reproducible across processes) with a retryable ApplicationError
  (type="Transient"), half of them before the real call and half after it (the change is made, the caller does not
  know). The last attempt the activity's retry policy allows is never faulted (the third, when the server does not
  tell the activity its policy).
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from pathlib import Path
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError
from temporalio.worker import ActivityInboundInterceptor, ExecuteActivityInput, Interceptor

SKIP = {"notify"}


def step_key(workflow_id: str, root_id: str, activity_id: str, activity_type: str) -> str:
    role = "{wf}" + workflow_id[len(root_id):] if workflow_id.startswith(root_id) else workflow_id
    return f"{role}#{activity_id}:{activity_type}"


class FaultPlan:
    def __init__(self, data: dict) -> None:
        self.kind: str = data.get("kind", "none")
        self.root: str = data["workflow_id"]
        self.target: str | None = data.get("target")
        self.dir = Path(data["dir"])
        self.seed: int = data.get("seed", 0)
        self.p: float = data.get("p", 0.3)

    @classmethod
    def load(cls, path: str | Path) -> "FaultPlan":
        return cls(json.loads(Path(path).read_text()))


def _write(path: Path, text: str) -> None:
    """Atomically: the test polls for the file and reads it at once."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.rename(path)


class FaultInterceptor(Interceptor):
    def __init__(self, plan: FaultPlan) -> None:
        self.plan = plan

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _Inbound(next, self.plan)


class _Inbound(ActivityInboundInterceptor):
    def __init__(self, next: ActivityInboundInterceptor, plan: FaultPlan) -> None:
        super().__init__(next)
        self.plan = plan

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        info = activity.info()
        plan = self.plan
        if info.activity_type in SKIP or not info.workflow_id.startswith(plan.root):
            return await self.next.execute_activity(input)
        key = step_key(info.workflow_id, plan.root, info.activity_id, info.activity_type)
        with (plan.dir / "steps.log").open("a") as log:
            log.write(f"{time.time():.2f} {key} attempt={info.attempt}\n")
        if plan.kind == "chaos":
            return await self._chaos(input, info, key)
        if key != plan.target:
            return await self.next.execute_activity(input)
        reached = plan.dir / "reached"
        if plan.kind == "fail":
            raise ApplicationError(f"injected fault at {key}", type="InjectedFault", non_retryable=True)
        where = json.dumps({"key": key, "workflow_id": info.workflow_id, "activity_id": info.activity_id})
        if plan.kind == "kill" and not reached.exists():
            _write(reached, where)
            while True:  # the test kills this process now
                await asyncio.sleep(3600)
        if plan.kind == "pause" and not reached.exists():
            _write(reached, where)
            go = plan.dir / "go"
            while not go.exists():
                await asyncio.sleep(0.01)
        return await self.next.execute_activity(input)

    async def _chaos(self, input: ExecuteActivityInput, info: Any, key: str) -> Any:
        plan = self.plan
        # the test server does not always tell the activity its retry policy: then no more than two faults in a row
        # (every retry policy of the product allows at least three attempts, probes two and tolerate a failed probe)
        limit = (info.retry_policy.maximum_attempts if info.retry_policy else 0) or 3
        if info.attempt >= limit:
            return await self.next.execute_activity(input)
        rng = random.Random(f"{plan.seed}|{key}|{info.attempt}")
        if rng.random() >= plan.p:
            return await self.next.execute_activity(input)
        after = rng.random() < 0.5
        with (plan.dir / "chaos.log").open("a") as log:
            log.write(f"{key} attempt={info.attempt} {'after' if after else 'before'}\n")
        if after:
            await self.next.execute_activity(input)
        raise ApplicationError(f"chaos: transient fault {'after' if after else 'before'} the call",
                               type="Transient")
