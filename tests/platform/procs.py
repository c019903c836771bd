"""Helpers for tests that run product processes as subprocesses and watch their logs."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Iterator

from tests import harness

ROOT = Path(__file__).resolve().parents[2]


class LoggedProcess:
    """A subprocess whose merged stdout/stderr is collected line by line, so a test can wait for a line."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path = ROOT) -> None:
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self.proc = subprocess.Popen(
            args,
            cwd=cwd,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    @property
    def output(self) -> str:
        with self._cond:
            return "\n".join(self.lines)

    def wait_for(self, text: str, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines:
                    if text in line:
                        return line
                if self.proc.poll() is not None and not self._reader.is_alive():
                    raise AssertionError(f"process exited ({self.proc.returncode}) before {text!r}:\n{self.output}")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"no {text!r} within {timeout}s:\n{self.output}")
                self._cond.wait(min(remaining, 0.2))

    def stop(self, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(5)
        return self.proc.returncode


BUILD_ID = "platform-tests"


def worker_process(address: str, task_queue: str, metrics_port: int, **env: str) -> LoggedProcess:
    return LoggedProcess(
        [sys.executable, "-m", "tests.platform.worker_proc"],
        {
            "TEMPORAL_ADDRESS": address,
            "TEMPORAL_NAMESPACE": "default",
            "RUNBOOK_TASK_QUEUE": task_queue,
            "RUNBOOK_METRICS_PORT": str(metrics_port),
            # given, not hashed from the loaded modules by the SDK (about a second of CPU per worker)
            "RUNBOOK_WORKER_BUILD_ID": BUILD_ID,
            **env,
        },
    )


def free_dev_ports() -> dict[str, int]:
    """A free port for every part of the local stack (names as in starters.dev.DevPorts.ENV)."""
    from starters.dev import DevPorts
    from tests import harness

    return {name: harness.free_port() for name in DevPorts.ENV}


@contextlib.contextmanager
def short_state_dir() -> Iterator[Path]:
    """A state folder for `runbook dev` with a short path: PostgreSQL's Unix socket lives in it, and a socket path
    may not exceed 107 bytes (pytest's tmp_path under xdist, /tmp/pytest-of-USER/pytest-N/popen-gwN/<test>/, is
    too long)."""
    root = Path(tempfile.mkdtemp(prefix="dev-", dir="/tmp"))
    try:
        yield root / "state"
    finally:
        shutil.rmtree(root, ignore_errors=True)


def start_dev(state: Path, ports: dict[str, int], **env: str) -> LoggedProcess:
    """``python -m starters.dev STATE`` with every port moved to ``ports``, so it never meets a running `make dev`."""
    from starters.dev import DevPorts

    port_env = {DevPorts.ENV[name]: str(port) for name, port in ports.items()}
    catalog = {"RUNBOOK_CATALOG_DIR": str(catalog_without_freezes(state.parent / "catalog"))}
    return LoggedProcess([sys.executable, "-m", "starters.dev", str(state)], {**port_env, **catalog, **env})


def catalog_without_freezes(folder: Path) -> Path:
    """The stock catalog with an empty change calendar, for the stack's worker: the stock calendar freezes production
    over the year end, and the demo's runs (production by default) would wait there when the suite runs in those
    days. The calendar's own behaviour is tested with calendars of its tests (tests/canary/test_freeze.py)."""
    return folder if folder.exists() else harness.catalog_with_calendar(folder)


OK = (0,)  # the CLI exits through os._exit after flushing, so SDK threads can no longer crash its exit


def sh(state: Path, command: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """``source <state>/dev.env; <command>`` in bash, with this venv's `runbook` first on PATH."""
    from starters.dev import SCRIPTS

    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "TEMPORAL_", "RUNBOOK_", "VAULT_"))}
    env["PATH"] = f"{SCRIPTS}:{env.get('PATH', '')}"
    env["XDG_CACHE_HOME"] = str(state / "cache")  # `runbook login` caches there, not in the real home
    return subprocess.run(
        ["bash", "-c", f"source {state / 'dev.env'} && {command}"],
        env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT,
    )


def status_json(state: Path, workflow_id: str) -> dict:
    """`runbook status ID --json` through the real CLI."""
    out = sh(state, f"runbook status {workflow_id} --json")
    assert out.returncode in OK, out.stdout + out.stderr
    return json.loads(out.stdout)


def wait_status(state: Path, workflow_id: str, wanted: str, timeout: float = 30) -> dict:
    """Wait in-process until the run's status is ``wanted``; return its status (RunbookClient, the CLI's own query,
    with the stack's codec keys): a `runbook` process per poll costs about a second of CPU for its imports. Tests run
    the CLI's `status` for real (``status_json``) where a user reads it.

    It polls the run's RunbookStatus search attribute (the workflow sets it with every change of status), which the
    server answers alone, and queries the run once it shows ``wanted``: a query costs about 10 ms of CPU between
    test, server and worker (a workflow activation), and these runs wait on real seconds-long steps."""
    from temporalio.client import Client
    from temporalio.service import RPCError, RPCStatusCode

    from core.config import Settings
    from starters.client import RunbookClient
    from workers.codec import data_converter
    from workflows.search_attributes import RUNBOOK_STATUS

    env = dev_env(state)

    async def poll() -> dict:
        settings = Settings(codec_keys_file=Path(env["RUNBOOK_CODEC_KEYS_FILE"]))
        client = await Client.connect(env["TEMPORAL_ADDRESS"], namespace=env.get("TEMPORAL_NAMESPACE", "default"),
                                      data_converter=data_converter(settings))
        runs, handle = RunbookClient(client), client.get_workflow_handle(workflow_id)
        deadline = time.monotonic() + timeout
        pause = 0.25
        while True:
            try:
                shown = (await handle.describe()).typed_search_attributes.get(RUNBOOK_STATUS)
            except RPCError as err:  # not started yet
                if err.status != RPCStatusCode.NOT_FOUND:
                    raise
                shown = None
            if shown == wanted:
                found = (await runs.status(workflow_id)).model_dump(mode="json")
                if found.get("status") == wanted:
                    return found
            if time.monotonic() >= deadline:
                found = (await runs.status(workflow_id)).model_dump(mode="json")
                assert found.get("status") == wanted, f"{workflow_id} not {wanted} in {timeout}s: {found}"
                return found
            # 0.25 s, growing to a look every half second
            await asyncio.sleep(pause)
            pause = min(0.5, pause * 1.5)

    return asyncio.run(poll())


def dev_env(state: Path) -> dict[str, str]:
    """The variables `runbook dev` wrote to <state>/dev.env."""
    env = {}
    for line in (state / "dev.env").read_text().splitlines():
        if line.startswith("export "):
            key, _, value = line[len("export "):].partition("=")
            env[key] = value.strip("'")
    return env
