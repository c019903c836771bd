"""Helpers for tests that run product processes as subprocesses and watch their logs."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Iterator

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


def worker_process(address: str, task_queue: str, metrics_port: int, **env: str) -> LoggedProcess:
    return LoggedProcess(
        [sys.executable, "-m", "tests.platform.worker_proc"],
        {
            "TEMPORAL_ADDRESS": address,
            "TEMPORAL_NAMESPACE": "default",
            "RUNBOOK_TASK_QUEUE": task_queue,
            "RUNBOOK_METRICS_PORT": str(metrics_port),
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
    return LoggedProcess([sys.executable, "-m", "starters.dev", str(state)], {**port_env, **env})
