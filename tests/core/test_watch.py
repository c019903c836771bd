"""`runbook watch` and `runbook status` on a running canary against the Temporal dev server: the Live view captured
through a pseudo-terminal (what a person sees), and the plain, complete form a pipe gets."""

from __future__ import annotations

import asyncio
import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
import uuid
from datetime import timedelta
from pathlib import Path

from typer.testing import CliRunner

from core.analysis import default_template
from core.approval import AbortInput, ApprovalPolicy
from core.canary import AlbRouterSpec, AnalysisStepSpec, CanaryRampInput, PlanStep
from core.runbook import RunbookMeta
from starters.cli import app
from tests import harness
from tests.canary.standins import CANARY, STABLE, FakeMetrics, FakeTraffic, Recorder, healthy
from workflows.canary_ramp import CanaryRamp

ROOT = Path(__file__).resolve().parents[2]
# A time of day as the CLI prints it: with the date when it is not today (a run near midnight UTC ends tomorrow).
CLOCK = r"\((\d{4}-\d\d-\d\d )?\d\d:\d\d:\d\d UTC\)"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\r")


def canary_input() -> CanaryRampInput:
    template = default_template("fast")
    template = template.model_copy(update={"metrics": [m.model_copy(update={"interval": timedelta(seconds=1)})
                                                       for m in template.metrics]})
    return CanaryRampInput(
        meta=RunbookMeta(runbook="canary-ramp", target="checkout", requested_by="alice",
                         approval=ApprovalPolicy(approvers=["bob"])),
        router=AlbRouterSpec(listener_arn="arn:listener", stable_target_group=STABLE, canary_target_group=CANARY),
        service="checkout", version="v2", templates=[template],
        plan=[PlanStep(set_weight=25), PlanStep(analysis=AnalysisStepSpec(template="fast", duration=timedelta(minutes=10)))],
    )


def cli_env(client) -> dict[str, str]:
    """The CLI's environment: the terminal's own size decides, not COLUMNS/LINES (pytest-xdist's workers set 80x24,
    which Rich would take over the pseudo-terminal's size)."""
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    return {**env, "TEMPORAL_ADDRESS": client.service_client.config.target_host, "TERM": "xterm-256color",
            "PYTHONPATH": str(ROOT)}


def run_on_terminal(args: list[str], env: dict[str, str], columns: int = 140) -> tuple[subprocess.Popen, int]:
    """Start the command on a pseudo-terminal of ``columns`` x 60; returns it and the terminal's reading end."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 60, columns, 0, 0))
    proc = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave, env=env, cwd=ROOT, close_fds=True)
    os.close(slave)
    return proc, master


def read_terminal(master: int, seconds: float, done=lambda text: False) -> str:
    """What the terminal shows within ``seconds``, or until ``done(text so far)``."""
    chunks, end = [], time.monotonic() + seconds
    while time.monotonic() < end:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                data = os.read(master, 65536)
            except OSError:  # the other end closed
                break
            if not data:
                break
            chunks.append(data)
            if done(b"".join(chunks).decode("utf-8", "replace")):
                break
    return b"".join(chunks).decode("utf-8", "replace")


async def measured(handle) -> None:
    for _ in range(300):
        state = await handle.query(CanaryRamp.status)
        if len(state.details.get("recent_measurements") or []) >= 4 and state.details.get("step_ends_at"):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"no measurements: {state}")


async def test_watch_on_a_terminal_shows_progress_time_left_and_measurements(dev_env, task_queue):
    log: list[tuple] = []
    traffic = FakeTraffic(log)
    metrics = FakeMetrics(traffic, healthy)
    acts = [traffic.get, traffic.set, metrics.measure, metrics.measure_batch, Recorder(log).notify]
    async with harness.running_worker(dev_env.client, task_queue, [CanaryRamp], acts):
        handle = await dev_env.client.start_workflow(
            CanaryRamp.run, canary_input(), id=f"canary:watch-{uuid.uuid4().hex[:6]}", task_queue=task_queue)
        await measured(handle)
        proc, master = run_on_terminal([sys.executable, "-m", "starters.cli", "watch", handle.id],
                                       cli_env(dev_env.client))
        try:
            # the first frames (the command starts in seconds on a loaded machine), then a second of redraws
            screen = await asyncio.to_thread(read_terminal, master, 90.0, lambda text: "Successful" in text)
            screen += await asyncio.to_thread(read_terminal, master, 1.5)
            await handle.execute_update(CanaryRamp.abort, AbortInput(requested_by="carol", reason="seen enough"))
            rest = await asyncio.to_thread(read_terminal, master, 90.0, lambda text: "finished:" in text)
            code = await asyncio.to_thread(proc.wait, 30)
        finally:
            if proc.poll() is None:
                proc.kill()
            os.close(master)
        await handle.result()
    text = ANSI.sub("", screen)
    assert "━" in text, text  # Rich's progress bars: the canary weight and the analysis step's clock
    assert re.search(r"this step +━+ *\d+% +\d+m\d*s? left, ends in \d+m\d*s? " + CLOCK, text), text
    assert re.search(r"canary weight +━+.* 25%", text), text
    assert re.search(r"running [⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏]", text), text  # the current step turns at every redraw
    for word in ("measurements (last", "metric", "value", "threshold", "verdict", "error-rate", "< 0.5", "Successful",
                 "▶", "step 2/2: analysis fast for 10m", "running"):
        assert word in text, (word, text)
    assert not re.search(r"\d{4}-\d\d-\d\dT\d\d:", text) and not re.search(r"\d\.\d{4,}s\b", text), text
    final = ANSI.sub("", rest)
    assert code == 3 and "finished: Aborted" in final, (code, final)
    assert "abort by carol: seen enough" in final, final


async def test_status_and_watch_on_a_pipe_are_plain_and_complete(dev_env, task_queue, monkeypatch, tmp_path):
    log: list[tuple] = []
    traffic = FakeTraffic(log)
    metrics = FakeMetrics(traffic, healthy)
    acts = [traffic.get, traffic.set, metrics.measure, metrics.measure_batch, Recorder(log).notify]
    monkeypatch.setenv("TEMPORAL_ADDRESS", dev_env.client.service_client.config.target_host)
    async with harness.running_worker(dev_env.client, task_queue, [CanaryRamp], acts):
        handle = await dev_env.client.start_workflow(
            CanaryRamp.run, canary_input(), id=f"canary:pipe-{uuid.uuid4().hex[:6]}", task_queue=task_queue)
        await measured(handle)
        status = await asyncio.to_thread(CliRunner().invoke, app, ["status", handle.id])
        out_file = tmp_path / "watch.out"
        with out_file.open("w") as sink:
            piped = subprocess.Popen([sys.executable, "-m", "starters.cli", "watch", handle.id, "--interval", "0.5"],
                                     stdout=sink, stderr=subprocess.STDOUT, env=cli_env(dev_env.client), cwd=ROOT)
        for _ in range(900):  # the command starts in seconds on a loaded machine: wait for its first lines
            if piped.poll() is not None or os.path.getsize(out_file) > 0:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(3)
        await handle.execute_update(CanaryRamp.abort, AbortInput(requested_by="carol", reason="seen enough"))
        await asyncio.to_thread(piped.wait, 90)
        out = err = out_file.read_text()
        await handle.result()
    assert status.exit_code == 0, status.output
    lines = status.stdout.splitlines()
    assert "  > running     step 2/2: analysis fast for 10m" in " ".join(lines) or any(
        line.startswith("  > running     step 2/2: analysis fast for 10m [") for line in lines), lines
    assert any(re.fullmatch(r"this step: \[#*-*\] +\d+% 9m\d*s? left, ends in 9m\d*s? " + CLOCK, line)
               for line in lines), lines
    assert any(re.fullmatch(r"  (now|.* ago) " + CLOCK + r"  error-rate = 0.1  threshold < 0.5  Successful", line)
               for line in lines), lines
    assert max(len(line) for line in lines) > 80 and not any("…" in line for line in lines)  # never cut at 80
    assert "\x1b[" not in status.stdout  # no colour codes in a pipe
    assert piped.returncode == 3 and "\x1b[" not in out, (piped.returncode, out, err)
    assert "canary weight: [" in out and re.search(r"\d\d:\d\d:\d\d measured (error-rate|latency-p95|cpu|memory) = ", out), out
    assert re.search(r"\d\d:\d\d:\d\d .*abort by carol: seen enough", out) and "finished: Aborted" in out, out
