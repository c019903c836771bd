"""The worker process: every workflow and activity of the product on one task queue.

Run it as ``runbook worker`` (or ``python -m workers``). Any number of these processes may poll the same task
queue; Temporal hands each task to exactly one of them, so adding processes adds capacity.

- Blocking activities (boto3, hvac, kubernetes, Terraform, Slack, PagerDuty) run synchronously on a
  ``ThreadPoolExecutor`` of ``settings.activity_threads`` threads; ``max_concurrent_activities`` caps how many
  activity tasks the process accepts at once.
- SIGTERM / SIGINT stop polling at once; running activities get up to the graceful-shutdown period to finish
  (they are then cancelled and Temporal retries them elsewhere); workflow state is never lost either way.
- With ``settings.metrics_port`` set, the SDK runtime serves Prometheus metrics on ``0.0.0.0:<port>/metrics``: the
  SDK's ``temporal_*`` and the runbooks' own ``runbook_*`` (workflows/metrics.py).
- With ``settings.health_port`` set, ``/livez`` and ``/readyz`` (ready while polling) on that port (workers/health.py).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence

from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.worker import Worker

from core.config import Settings
from workers.activities import build_activities
from workers.connection import TemporalUnreachable, connect
from workers.health import HealthState, serve_health
from workers.log_context import RunbookContextInterceptor
from workers.sandbox import workflow_runner
from workers.telemetry import configure_logging
from workflows import metrics as runbook_metrics
from workflows import registry
from workflows.summaries import SummaryInterceptor

log = logging.getLogger("runbook.worker")



def worker_identity() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def product_workflows(settings: Settings) -> list[type]:
    """workflows/registry.py's runbooks and helpers plus those of ``settings.workflow_modules`` (a team's own)."""
    return registry.load(settings.workflow_modules)


def metrics_runtime(port: int | None, host: str = "0.0.0.0") -> Runtime | None:
    """A runtime exporting the SDK's metrics for Prometheus, or None (the default runtime) when no port is set."""
    if not port:
        return None
    return Runtime(telemetry=TelemetryConfig(metrics=PrometheusConfig(
        bind_address=f"{host}:{port}", histogram_bucket_overrides=runbook_metrics.HISTOGRAM_BUCKETS)))


async def run_worker(
    settings: Settings,
    *,
    stop: asyncio.Event | None = None,
    extra_workflows: Sequence[type] = (),
    extra_activities: Sequence[Callable] = (),
) -> None:
    """Run until SIGTERM/SIGINT (or until ``stop`` is set), then shut down gracefully.

    ``extra_workflows`` / ``extra_activities`` let tests add their own definitions to the product's.
    """
    configure_logging()  # plain text, or JSON lines with RUNBOOK_LOG_FORMAT=json
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or no signals here
            pass

    identity = worker_identity()
    if not settings.oidc_issuer:
        log.warning("APPROVALS ARE UNAUTHENTICATED: RUNBOOK_OIDC_ISSUER is not set, so this worker accepts typed "
                    "approver names without checking them (marked verified: false). Configure RUNBOOK_OIDC_ISSUER and "
                    "RUNBOOK_OIDC_AUDIENCE for any shared or production use.")
    else:
        log.info("approvals verified against %s (audience %s)", settings.oidc_issuer, settings.oidc_audience)
    health = HealthState(task_queue=settings.task_queue, identity=identity)
    health_server = await serve_health(health, settings.health_port, settings.metrics_host) if settings.health_port else None
    runtime = metrics_runtime(settings.metrics_port, settings.metrics_host)
    try:
        client = await connect(settings, runtime=runtime)
    except BaseException:
        if health_server is not None:
            health_server.close()
        raise
    workflows = [*product_workflows(settings), *extra_workflows]
    activities = [*build_activities(settings), *extra_activities]
    grace = settings.graceful_shutdown_timeout
    try:
        with ThreadPoolExecutor(max_workers=settings.activity_threads, thread_name_prefix="activity") as pool:
            worker = Worker(
                client,
                task_queue=settings.task_queue,
                workflows=workflows,
                workflow_runner=workflow_runner(workflows),  # workflow modules and contracts passed through
                activities=activities,
                activity_executor=pool,
                # more concurrent activities than threads would only queue inside the process
                max_concurrent_activities=min(settings.max_concurrent_activities, settings.activity_threads),
                graceful_shutdown_timeout=grace,
                identity=identity,
                build_id=settings.worker_build_id,  # None: the SDK's hash of the loaded code
                # a summary on every activity, for the web UI's timeline; the runbook and target into activities' logs
                interceptors=[SummaryInterceptor(), RunbookContextInterceptor()],
            )
            async with worker:
                health.polling = True
                log.info(
                    "worker %s polling task queue %r on %s (namespace %s): %d workflows, %d activities%s",
                    identity,
                    settings.task_queue,
                    client.service_client.config.target_host,
                    client.namespace,
                    len(workflows),
                    len(activities),
                    f", metrics on :{settings.metrics_port}/metrics" if settings.metrics_port else "",
                )
                await stop.wait()
                health.polling = False
                log.info("worker %s stopping: no new tasks; running activities get up to %s", identity, grace)
            # leaving the context ran Worker.shutdown(): polling stopped, activities finished or were cancelled
        log.info("worker %s stopped", identity)
    finally:
        health.polling = False
        if health_server is not None:
            health_server.close()
        for sig in installed:
            loop.remove_signal_handler(sig)


def main() -> None:
    try:
        asyncio.run(run_worker(Settings()))
    except TemporalUnreachable as err:
        print(f"runbook worker: {err}", file=sys.stderr)
        # Exit now, not through interpreter finalization: the SDK runtime's threads may still call into Python while
        # it finalizes ("PyGILState_Release ... must be current", SIGABRT), seen under load. Nothing is left to flush.
        logging.shutdown()
        sys.stderr.flush()
        os._exit(1)
