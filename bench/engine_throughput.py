"""Engine cost: a canary run with a short plan against a bare workflow with the same activities and timers, on one
dev server and one worker (the product's worker shape: thread-pool activities, the summary interceptor, the
encrypting data converter), in completed runs per second.

The short plan: set weight 20 %, an analysis measuring the four default metrics twice, a second apart (two local
``measure_metrics`` activities, two timers), set weight 100 %; around it the canary's start and end notifications,
its read-only resolve, and the change calendar's ``check_freeze`` local activity before each change. The bare
workflow (``bench/_bare_canary.py``) issues those same activities and timers in the same order with the same
inputs; the benchmark checks that against each kind's recorded history (activity types, local-activity markers,
timers) before it counts anything. Both kinds start with the Runbook* search
attributes set, as the starters do. N runs of each kind, in alternating batches started all at once; each kind's
throughput is its runs over the sum of its batches' wall times, after one warm-up batch of each.

Prints ``engine_throughput_ratio`` (canary / bare; goal >= 0.95), both throughputs, the worker's CPU time per run
of each kind (this process, less sensitive than wall time to other load on the machine) and each kind's history
events per run.     python bench/engine_throughput.py [N] [BATCH]     (defaults 200 and 25)
"""

from __future__ import annotations

import asyncio
import collections
import os
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from temporalio.api.enums.v1 import EventType  # noqa: E402
from temporalio.client import Client, WorkflowHandle  # noqa: E402
from temporalio.common import SearchAttributePair, TypedSearchAttributes  # noqa: E402

from bench._bare_canary import BareCanary  # noqa: E402
from core.analysis import default_template  # noqa: E402
from core.canary import AnalysisStepSpec, CanaryRampInput, PlanStep  # noqa: E402
from tests import harness  # noqa: E402
from tests.canary.standins import FakeMetrics, FakeTraffic, Recorder, healthy  # noqa: E402
from tests.canary.test_ramp import make_input  # noqa: E402
from workflows import search_attributes as sa  # noqa: E402
from workflows.canary_ramp import CanaryRamp  # noqa: E402

GOAL = 0.95
TICKS = 2


def short_plan_input() -> CanaryRampInput:
    stock = default_template()
    # two measurements a metric (``count``), a second apart: the analysis ends after them however late a loaded
    # machine fires its timers (a 2 s window could hold one tick or two)
    template = stock.model_copy(update={"metrics": [m.model_copy(update={"interval": timedelta(seconds=1), "count": TICKS})
                                                    for m in stock.metrics]})
    plan = [PlanStep(set_weight=20),
            PlanStep(analysis=AnalysisStepSpec(template=template.name, duration=timedelta(minutes=1))),
            PlanStep(set_weight=100)]
    return make_input(plan=plan, templates=[template])


def attributes(inp: CanaryRampInput) -> TypedSearchAttributes:
    meta = inp.meta
    return TypedSearchAttributes([
        SearchAttributePair(sa.RUNBOOK_NAME, meta.runbook),
        SearchAttributePair(sa.RUNBOOK_TARGET, meta.target),
        SearchAttributePair(sa.RUNBOOK_ENVIRONMENT, meta.environment or "-"),
        SearchAttributePair(sa.RUNBOOK_REQUESTED_BY, meta.requested_by),
        SearchAttributePair(sa.RUNBOOK_STATUS, "Running"),
    ])


async def start(client: Client, kind: str, task_queue: str, inp: CanaryRampInput) -> WorkflowHandle:
    wf_id = f"bench-{kind}-{uuid.uuid4().hex[:10]}"
    if kind == "canary":
        return await client.start_workflow(CanaryRamp.run, inp, id=wf_id, task_queue=task_queue,
                                           search_attributes=attributes(inp))
    return await client.start_workflow(BareCanary.run, inp, id=wf_id, task_queue=task_queue,
                                       search_attributes=attributes(inp))


async def batch(client: Client, kind: str, task_queue: str, inp: CanaryRampInput, size: int) -> tuple[float, list[WorkflowHandle]]:
    """Wall seconds from the first start to the last completion of ``size`` runs started at once."""
    started = time.perf_counter()
    handles = await asyncio.gather(*(start(client, kind, task_queue, inp) for _ in range(size)))
    results = await asyncio.gather(*(h.result() for h in handles))
    elapsed = time.perf_counter() - started
    for result in results:
        measured = result.measurements_total if kind == "canary" else result
        assert measured == 4 * TICKS, f"{kind}: {measured} measurements, wanted {4 * TICKS}"
    return elapsed, list(handles)


async def shape(handle: WorkflowHandle) -> tuple[collections.Counter, int]:
    """The activities, local activities and timers of one run, and its number of history events."""
    history = await handle.fetch_history()
    found: collections.Counter = collections.Counter()
    for event in history.events:
        if event.HasField("activity_task_scheduled_event_attributes"):
            found[f"activity {event.activity_task_scheduled_event_attributes.activity_type.name}"] += 1
        elif event.event_type == EventType.EVENT_TYPE_MARKER_RECORDED:
            if event.marker_recorded_event_attributes.marker_name == "core_local_activity":
                found["local activity"] += 1
        elif event.event_type == EventType.EVENT_TYPE_TIMER_STARTED:
            found["timer"] += 1
    return found, len(history.events)


async def main(n: int, size: int) -> dict[str, float]:
    env = await harness.start_dev_server()
    async with env:
        log: list[tuple] = []
        traffic = FakeTraffic(log)
        metrics, recorder = FakeMetrics(traffic, healthy), Recorder(log)
        inp = short_plan_input()
        task_queue = harness.new_task_queue()
        activities = [traffic.get, traffic.set, metrics.measure, metrics.measure_batch, recorder.notify]
        async with harness.running_worker(env.client, task_queue, [CanaryRamp, BareCanary], activities):
            shapes = {}
            for kind in ("canary", "bare"):  # warm-up: sandbox, server, worker caches; and the same-work check
                _, handles = await batch(env.client, kind, task_queue, inp, size)
                shapes[kind] = await shape(handles[0])
            if shapes["canary"][0] != shapes["bare"][0]:
                raise SystemExit(f"the two kinds differ in work: canary {dict(shapes['canary'][0])}, "
                                 f"bare {dict(shapes['bare'][0])}")
            print(f"same work per run: {dict(shapes['canary'][0])}", file=sys.stderr)
            wall = {"canary": 0.0, "bare": 0.0}
            cpu = {"canary": 0.0, "bare": 0.0}  # this process's CPU: the worker's (the server is another process)
            done = {"canary": 0, "bare": 0}
            while done["canary"] < n or done["bare"] < n:
                for kind in ("canary", "bare"):
                    count = min(size, n - done[kind])
                    if count:
                        used = time.process_time()
                        elapsed, _ = await batch(env.client, kind, task_queue, inp, count)
                        cpu[kind] += time.process_time() - used
                        wall[kind] += elapsed
                        done[kind] += count
                        print(f"{kind}: {count} in {elapsed:.2f}s", file=sys.stderr)
        canary, bare = n / wall["canary"], n / wall["bare"]
        return {
            "engine_throughput_ratio": canary / bare,
            "canary_short_plan_runs_per_s": canary,
            "bare_workflow_runs_per_s": bare,
            "canary_short_plan_worker_cpu_ms": 1000 * cpu["canary"] / n,
            "bare_workflow_worker_cpu_ms": 1000 * cpu["bare"] / n,
            "canary_short_plan_history_events": shapes["canary"][1],
            "bare_workflow_history_events": shapes["bare"][1],
        }


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:]]
    figures = asyncio.run(main(args[0] if args else 200, args[1] if len(args) > 1 else 25))
    units = {"engine_throughput_ratio": "x", "canary_short_plan_runs_per_s": "runs/s", "bare_workflow_runs_per_s": "runs/s",
             "canary_short_plan_worker_cpu_ms": "ms/run", "bare_workflow_worker_cpu_ms": "ms/run"}
    for name, value in figures.items():
        print(f"{name} {value:.3f} {units.get(name, 'events')}" if isinstance(value, float) else f"{name} {value} events",
              flush=True)
    ratio = figures["engine_throughput_ratio"]
    print(f"engine_throughput_ratio {ratio:.3f}: {'meets' if ratio >= GOAL else 'misses'} the goal >= {GOAL}", file=sys.stderr)
    sys.stderr.flush()
    # skip interpreter finalisation: the SDK's runtime threads can abort it (PyGILState_Release) after the work is done
    os._exit(0)
