"""Webhook received -> workflow started: 1,000 signed PagerDuty webhooks through the real gateway ASGI app, side
by side with 1,000 bare ``start_workflow`` calls from the same Temporal client, on a dev server started here.

Each webhook carries a new incident, so each one starts a workflow (signature check, JSON parse, catalog match,
parameter templates, plan, one start RPC). Webhook and bare calls alternate, so both see the same server state.
No worker polls the task queue: the figure is the start path only.

Prints ``webhook_start_p99_ms``, ``bare_start_p99_ms``, ``webhook_start_p99_ratio`` (and the p50s).
Targets: ratio <= 1.5, webhook p99 < 100 ms.    python bench/webhook_start.py [N]
"""

from __future__ import annotations

import asyncio
import logging
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from core.catalog import Catalog  # noqa: E402
from core.config import Settings  # noqa: E402
from core.runbook import RunbookInput  # noqa: E402
from starters.gateway import create_app  # noqa: E402
from tests.fakes.pagerduty import incident_event, webhook  # noqa: E402
from tests.harness import new_task_queue, start_dev_server  # noqa: E402

SECRET = "bench-webhook-secret"
RUNBOOK = """
name: bench-drill
description: benchmark runbook
workflow: BenchDrill
target: "{service}"
concurrency_key: "bench-drill:{service}"
parameters:
  service: {type: string, required: true}
  title: {type: string}
triggers:
  pagerduty:
    - service_ids: [PSVC001]
      auto_approve: true
      parameters:
        service: "{incident.service.summary}"
        title: "{incident.title}"
"""


class BenchDrillInput(RunbookInput):  # the BenchDrill workflow type's input; no worker polls the queue
    service: str
    title: str = ""


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=1000, method="inclusive")[int(q * 1000) - 1] if len(values) > 1 else values[0]


async def main(n: int) -> None:
    logging.disable(logging.WARNING)
    env = await start_dev_server()
    async with env:
        client = env.client
        folder = Path(tempfile.mkdtemp(prefix="bench-catalog-"))
        (folder / "bench-drill.yaml").write_text(RUNBOOK)
        inputs = {"BenchDrill": BenchDrillInput}
        catalog = Catalog.load(folder, inputs=inputs)
        task_queue = new_task_queue()
        settings = Settings(_env_file=None, task_queue=task_queue, PAGERDUTY_WEBHOOK_SECRETS=[SECRET])
        app = create_app(settings, client, catalog, inputs)
        plan = catalog.plan_start("bench-drill", {"service": "orders"}, requested_by="bench", inputs=inputs)
        tag = uuid.uuid4().hex[:6]
        requests = [webhook(incident_event(incident_id=f"P{tag}{i:05d}", title=f"incident {i}"), SECRET)
                    for i in range(n + 50)]
        hook_ms: list[float] = []
        bare_ms: list[float] = []
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as http:
            for i, (body, headers) in enumerate(requests):
                started = time.perf_counter()
                response = await http.post("/pagerduty/webhook", content=body, headers=headers)
                hook = (time.perf_counter() - started) * 1000
                if response.status_code != 202 or not response.json().get("started"):
                    raise SystemExit(f"webhook {i} did not start a workflow: {response.status_code} {response.text}")
                started = time.perf_counter()
                await client.start_workflow("BenchDrill", plan.input, id=f"bare-{tag}-{i}", task_queue=task_queue)
                bare = (time.perf_counter() - started) * 1000
                if i >= 50:  # warm-up excluded
                    hook_ms.append(hook)
                    bare_ms.append(bare)
    hook99, bare99 = pct(hook_ms, 0.99), pct(bare_ms, 0.99)
    print(f"webhook_start_p50_ms {statistics.median(hook_ms):.2f} ms")
    print(f"bare_start_p50_ms {statistics.median(bare_ms):.2f} ms")
    print(f"webhook_start_p99_ms {hook99:.2f} ms")
    print(f"bare_start_p99_ms {bare99:.2f} ms")
    print(f"webhook_start_p99_ratio {hook99 / bare99:.2f} ratio")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 1000))
    sys.stdout.flush()
    sys.stderr.flush()
    # skip interpreter finalisation: the SDK's runtime threads can abort it (SIGABRT) after the work is done
    os._exit(0)
