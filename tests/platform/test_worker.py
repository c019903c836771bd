"""The worker process: registration, work sharing between processes, graceful shutdown, Prometheus metrics."""

from __future__ import annotations

import asyncio
import signal
import sys
import uuid

import httpx
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest

from tests import harness
from tests.platform.procs import BUILD_ID, LoggedProcess, worker_process
from tests.platform.workflows import FanOut, FanOutInput, Slow, SlowInput, slow

READY = "polling task queue"


def address(env) -> str:
    return env.client.service_client.config.target_host


async def test_two_worker_processes_share_one_task_queue_and_serve_prometheus_metrics(dev_env, task_queue):
    """(One test for both: a worker process costs seconds of CPU to start.)"""
    ports = [harness.free_port(), harness.free_port()]
    workers = [worker_process(address(dev_env), task_queue, port) for port in ports]
    try:
        for w in workers:
            w.wait_for(READY, timeout=90)  # a loaded 2-core machine: a worker process takes long to import
        result = await dev_env.client.execute_workflow(
            FanOut.run, FanOutInput(count=24, sleep_s=0.3), id=f"fanout-{uuid.uuid4().hex[:8]}", task_queue=task_queue
        )
        by_pid = {w.proc.pid: result.pids.count(w.proc.pid) for w in workers}
        assert sum(by_pid.values()) == 24
        assert all(n > 0 for n in by_pid.values()), f"one process did all the work: {by_pid}"
        # both poll with the build id they were given (RUNBOOK_WORKER_BUILD_ID), not one the SDK hashed
        described = await dev_env.client.workflow_service.describe_task_queue(DescribeTaskQueueRequest(
            namespace="default", task_queue=TaskQueue(name=task_queue), task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY))
        assert {p.worker_version_capabilities.build_id for p in described.pollers} == {BUILD_ID}, described.pollers

        # each serves the SDK runtime's metrics, its activities' among them
        for w, port in zip(workers, ports, strict=True):
            assert f"metrics on :{port}/metrics" in w.output
            body = ""
            for _ in range(50):
                body = (await asyncio.to_thread(httpx.get, f"http://127.0.0.1:{port}/metrics", timeout=2)).text
                if "temporal_activity_execution_latency" in body:
                    break
                await asyncio.sleep(0.1)
            assert "temporal_activity_execution_latency" in body
            assert f'task_queue="{task_queue}"' in body
    finally:
        codes = [w.stop() for w in workers]
    assert codes == [0, 0], [w.output for w in workers]


async def test_sigterm_lets_a_running_activity_finish(dev_env, task_queue):
    worker = worker_process(address(dev_env), task_queue, harness.free_port())
    try:
        worker.wait_for(READY, timeout=90)
        handle = await dev_env.client.start_workflow(
            Slow.run, SlowInput(sleep_s=2.0), id=f"slow-{uuid.uuid4().hex[:8]}", task_queue=task_queue
        )
        # wait until the activity is running on the worker, then ask it to stop
        await harness.poll(handle.describe, lambda d: d.raw_description.pending_activities and
                           d.raw_description.pending_activities[0].last_started_time.seconds,
                           "the activity runs on the worker")
        worker.proc.send_signal(signal.SIGTERM)
        await asyncio.to_thread(worker.proc.wait, 20)
        assert worker.proc.returncode == 0, worker.output
        assert "stopping" in worker.output and "stopped" in worker.output
        # the activity finished on the stopping worker; a new worker only has to run the last workflow task
        history = await handle.fetch_history()
        completed = [e for e in history.events if e.HasField("activity_task_completed_event_attributes")]
        assert len(completed) == 1, "activity did not complete before the worker exited"
        # (in this process: a second worker process would cost seconds of CPU to import for one workflow task)
        async with harness.running_worker(dev_env.client, task_queue, [Slow], [slow]):
            assert await handle.result() == worker.proc.pid
    finally:
        worker.stop()


def test_unreachable_temporal_names_the_address_and_exits_1():
    port = harness.free_port()
    proc = LoggedProcess(
        [sys.executable, "-m", "workers"],
        {"TEMPORAL_ADDRESS": f"127.0.0.1:{port}", "RUNBOOK_METRICS_PORT": str(harness.free_port())},
    )
    code = proc.proc.wait(30)
    proc.stop()
    assert code == 1
    assert f"127.0.0.1:{port}" in proc.output
    assert "Traceback" not in proc.output
