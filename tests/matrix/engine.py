"""Runs one matrix case end to end and judges it.

A case = (runbook, fault kind, step). Each case gets its own time-skipping test server (its clock is global, so
cases must not share one), its own moto account (through the ledger server), its own Kubernetes fakes, HTTP
stand-ins and Terraform root, and worker processes forked from the zygote with the case's fault plan.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from temporalio.api.enums.v1 import EventType, WorkflowTaskFailedCause
from temporalio.client import WorkflowFailureError, WorkflowHandle
from temporalio.exceptions import ApplicationError, CancelledError
from temporalio.testing import WorkflowEnvironment

from core.approval import AbortInput
from tests import harness
from tests.fakes.kubernetes import KubeFake
from tests.matrix.faults import step_key
from tests.matrix.moto_ledger import access_key_for
from tests.matrix.runbooks import SCENARIOS, Ctx, Scenario

TERMINAL = ("Succeeded", "RolledBack", "Aborted", "Rejected", "Refused", "Held", "Failed")
KINDS = ("kill", "fail", "abort", "cancel")
CHAOS_SEEDS = (1, 2, 3)
STALL = 60.0  # a run with no new activity attempt and no new history event for this long is stuck
CASE_CAP = 300.0  # and none, however busy, runs longer than this (a run looping on without end)
_accounts = itertools.count(100000000000 + (os.getpid() % 1000) * 100000)


@dataclass(frozen=True)
class Case:
    runbook: str
    kind: str  # baseline | kill | fail | abort | cancel | chaos
    step: str | None = None  # step key for kill/fail/abort/cancel
    seed: int = 0

    @property
    def id(self) -> str:
        if self.kind == "baseline":
            return f"{self.runbook}-baseline"
        if self.kind == "chaos":
            return f"{self.runbook}-chaos-seed{self.seed}"
        index, name = self.step.split("#", 1)[1].split(":", 1) if self.step else ("?", "?")
        role = self.step.split("#", 1)[0].replace("{wf}", "") if self.step else ""
        where = f"{role.strip('-:') + '.' if role else ''}{index}-{name}"
        return f"{self.runbook}-{self.kind}-{where}"


@dataclass
class Outcome:
    case: Case
    status: str | None = None  # the result's status, or "Failed" from a RunFailed error
    ending: str = ""  # how the run ended: "completed", "failed RunFailed", "failed <type>", "cancelled", "timeout", ...
    reason: str = ""
    result: dict | None = None
    workflow_task_failures: list[str] = field(default_factory=list)
    steps: list[str] = field(default_factory=list)  # scheduled activities (non-notify) in order
    ledger: list[dict] = field(default_factory=list)
    initial: dict[str, Any] = field(default_factory=dict)
    final: dict[str, Any] = field(default_factory=dict)
    reached: bool = True
    problems: list[str] = field(default_factory=list)
    wall: float = 0.0
    dir: str = ""
    tokens: list[str] = field(default_factory=list)  # the case's own names (account, workflow id) in keys and values
    phases: list[tuple[str, float]] = field(default_factory=list)

    def mark(self, phase: str, since: float) -> None:
        self.phases.append((phase, round(time.monotonic() - since, 2)))


class Runtime:
    """The session's shared stand-ins: the ledger moto server, the worker zygote, OpenBao, PostgreSQL."""

    def __init__(self, moto_url: str, zygote: subprocess.Popen, root: Path, shared: dict[str, Any]) -> None:
        self.moto_url, self.zygote, self.root, self.shared = moto_url, zygote, root, shared
        self._spawn_lock = asyncio.Lock()
        # the ledger's HTTP client, one for the session (a new client loads the CA bundle: about 30 ms of CPU)
        self.http = httpx.AsyncClient(timeout=30)

    async def close(self) -> None:
        await self.http.aclose()

    async def spawn(self, config: dict, name: str) -> int:
        path = Path(config["dir"]) / f"{name}.json"
        path.write_text(json.dumps(config))
        async with self._spawn_lock:
            loop = asyncio.get_running_loop()

            def ask() -> int:
                assert self.zygote.stdin and self.zygote.stdout
                self.zygote.stdin.write(json.dumps({"config": str(path)}) + "\n")
                self.zygote.stdin.flush()
                line = self.zygote.stdout.readline()
                return int(line.split()[1])

            return await loop.run_in_executor(None, ask)


def kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


class Progress:
    """Whether a run still moves: a new activity attempt (steps.log, the run's and its children's) or a new event in
    its history. A case gives up on a run that stalls (STALL) or exceeds CASE_CAP, not after a fixed time: on a
    loaded machine (a Terraform plan taking 10 s) cases get slower, not failing."""

    def __init__(self, case_dir: Path, started: float) -> None:
        self.steps = case_dir / "steps.log"
        self.seen: tuple[int, int] = (-1, -1)
        self.since = time.monotonic()
        self.cap = started + CASE_CAP

    def note(self, history_length: int) -> None:
        seen = (self.steps.stat().st_size if self.steps.exists() else 0, history_length)
        if seen != self.seen:
            self.seen, self.since = seen, time.monotonic()

    def stalled(self) -> str | None:
        now = time.monotonic()
        if now - self.since > STALL:
            return f"timeout: no activity attempt and no history event for {STALL:.0f}s"
        if now > self.cap:
            return f"timeout: no end within {CASE_CAP:.0f}s"
        return None


async def _wait_for(path: Path, handle: WorkflowHandle, progress: Progress) -> bool:
    """Wait for a marker file; False when the run closed (or stalled) first."""
    checks = 0
    while not path.exists():
        checks += 1
        if checks % 25 == 0:  # the run's state twice a second, the marker 50 times
            desc = await handle.describe()
            if desc.status is not None and desc.status.name != "RUNNING":
                return path.exists()
            progress.note(desc.raw_description.workflow_execution_info.history_length)
            if progress.stalled():
                return path.exists()
        await asyncio.sleep(0.02)
    return True


async def run_case(case: Case, rt: Runtime) -> Outcome:
    started = time.monotonic()
    scenario: Scenario = SCENARIOS[case.runbook]()
    account = str(next(_accounts))
    workflow_id = f"mx-{case.runbook}-{account[-6:]}"
    case_dir = rt.root / case.id
    case_dir.mkdir(parents=True, exist_ok=True)
    ctx = Ctx(case_id=case.id, workflow_id=workflow_id, dir=case_dir, account=account,
              access_key=access_key_for(account), moto_url=rt.moto_url, shared=rt.shared)
    out = Outcome(case=case, dir=str(case_dir), tokens=[workflow_id, account, account[-6:]])
    pids: list[int] = []
    env: WorkflowEnvironment | None = None
    result_task: asyncio.Future | None = None
    loop = asyncio.get_running_loop()
    try:
        for context in scenario.kube_contexts:
            ctx.kube[context] = KubeFake().start()
        await loop.run_in_executor(None, scenario.seed, ctx)
        out.mark("seeded", started)
        watched = (await rt.http.post(f"{rt.moto_url}/_ledger/{account}/watch",
                                      json={"services": list(scenario.aws_services),
                                            "regions": list(scenario.regions)})).json()
        out.initial = await loop.run_in_executor(None, snapshot_sync, scenario, ctx, watched["snapshot"])
        out.mark("snapshot", started)
        env = await harness.start_time_skipping()
        out.mark("server", started)
        task_queue = harness.new_task_queue()
        plan = {"kind": {"abort": "pause", "cancel": "pause", "baseline": "none"}.get(case.kind, case.kind),
                "workflow_id": workflow_id, "target": case.step, "dir": str(case_dir), "seed": case.seed, "p": 0.3}
        (case_dir / "plan.json").write_text(json.dumps(plan))
        config = {
            "address": env.client.service_client.config.target_host, "task_queue": task_queue, "dir": str(case_dir),
            "plan": str(case_dir / "plan.json"), "tf_root": str(ctx.tf_root), "no_cache": case.kind == "kill",
            "kube": {c: f.url for c, f in ctx.kube.items()},
            "env": {"AWS_ACCESS_KEY_ID": ctx.access_key, "AWS_SECRET_ACCESS_KEY": "x", "AWS_DEFAULT_REGION": "us-east-1",
                    "AWS_ENDPOINT_URL": rt.moto_url, "AWS_MAX_ATTEMPTS": "1", **rt.shared.get("env", {}),
                    **scenario.worker_env(ctx)},
        }
        pids.append(await rt.spawn(config, "worker-1"))
        out.mark("worker", started)
        inp = await loop.run_in_executor(None, scenario.input, ctx)
        out.mark("input", started)
        # a killed worker's pending poll may swallow a workflow task: let it time out after 2 s, not 10 s
        handle = await env.client.start_workflow(scenario.workflow, inp, id=workflow_id, task_queue=task_queue,
                                                 execution_timeout=timedelta(days=30),
                                                 task_timeout=timedelta(seconds=2 if case.kind == "kill" else 10))
        result_task = asyncio.ensure_future(_result(handle))
        progress = Progress(case_dir, started)
        reached = case_dir / "reached"
        if case.kind in ("kill", "abort", "cancel"):
            out.reached = await _wait_for(reached, handle, progress)
            if out.reached:
                where = json.loads(reached.read_text())
                if case.kind == "kill":
                    kill(pids[0])
                    config["no_cache"] = False
                    pids.append(await rt.spawn(config, "worker-2"))
                    await _lost(env, handle, where, case_dir)
                else:
                    try:
                        if case.kind == "abort":
                            await handle.execute_update("abort", AbortInput(requested_by="matrix", reason="matrix abort"))
                        else:
                            await handle.cancel()
                            await _cancel_processed(handle)
                    except Exception as err:  # noqa: BLE001 - a refused abort is a finding, not a crash
                        out.problems.append(f"{case.kind} request failed: {type(err).__name__}: {err}")
                    (case_dir / "go").write_text("")
        ended = await _watch(handle, result_task, progress)
        if ended is None:
            status, ending, reason, result = result_task.result()
        else:
            status, ending, reason, result = None, ended, "", None
            try:
                await handle.terminate(f"matrix: {ended}")
            except Exception:  # noqa: BLE001
                pass
        out.status, out.ending, out.reason, out.result = status, ending, reason, result
        out.mark("ended", started)
        history = await handle.fetch_history()
        out.workflow_task_failures, out.steps = await _scan(env, handle, history, workflow_id)
        answer = (await rt.http.get(f"{rt.moto_url}/_ledger/{ctx.account}")).json()
        out.ledger = scenario.ledger(ctx, _ledger(ctx, answer["entries"]))
        out.final = await loop.run_in_executor(None, snapshot_sync, scenario, ctx, answer["snapshot"])
        out.mark("judged", started)
    except Exception as err:  # noqa: BLE001
        out.problems.append(f"harness error: {type(err).__name__}: {err}\n{traceback.format_exc()}")
    finally:
        if result_task is not None and not result_task.done():
            result_task.cancel()
            try:
                await result_task
            except BaseException:  # noqa: BLE001
                pass
        for pid in pids:
            kill(pid)
        if env is not None:
            try:
                await env.shutdown()
            except Exception:  # noqa: BLE001
                pass
        for fake in ctx.kube.values():
            fake.stop()
        for server in ctx.servers:
            try:
                close = getattr(server, "close", None)
                close() if close else server.__exit__(None, None, None)
            except Exception:  # noqa: BLE001
                pass
        out.wall = time.monotonic() - started
    return out


async def _cancel_processed(handle: WorkflowHandle, timeout: float = 60.0) -> None:
    """Wait until the run has answered the cancel request (a workflow task completed after it), as the abort Update
    waits for its handler, before the held activity is let go. Otherwise the activity may complete while the
    workflow task that asks to cancel it is under way: a real server buffers that completion and accepts the
    cancel command; the time-skipping test server rejects the task (ACTIVITY_UNKNOWN) and never retries it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen = False
        async for event in handle.fetch_history_events():
            if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCEL_REQUESTED:
                seen = True
            elif seen and event.event_type in (EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED,
                                               EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED):
                return
        await asyncio.sleep(0.1)


async def _lost(env: WorkflowEnvironment, handle: WorkflowHandle, where: dict, case_dir: Path) -> None:
    """Do what the server does when a dead worker's timeout fires, without waiting for it in real time: fail the
    lost attempt (retryable). The killed process's open poll may swallow the retry as well (the test server does
    not notice the dropped connection): fail again until a live worker has run the activity again."""
    activity = env.client.get_async_activity_handle(workflow_id=where["workflow_id"], run_id=None,
                                                    activity_id=where["activity_id"])
    steps = case_dir / "steps.log"
    for _ in range(4):
        try:
            await activity.fail(ApplicationError("worker process killed (SIGKILL)", type="WorkerLost"))
        except Exception:  # noqa: BLE001 - not pending any more (completed or the run moved on)
            return
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            lines = steps.read_text().splitlines() if steps.exists() else []
            if any(line.split()[1] == where["key"] and not line.endswith("attempt=1") for line in lines):
                return
            await asyncio.sleep(0.05)


async def _watch(handle: WorkflowHandle, result_task: asyncio.Future, progress: Progress) -> str | None:
    """None when the run ended; otherwise why the test gave up on it (a workflow task failing over and over
    never ends on its own; a run that stalls)."""
    while True:
        done, _ = await asyncio.wait([result_task], timeout=1.0)
        if done:
            return None
        try:
            desc = await handle.describe()
            attempt = desc.raw_description.pending_workflow_task.attempt
            progress.note(desc.raw_description.workflow_execution_info.history_length)
        except Exception:  # noqa: BLE001
            attempt = 0
        if attempt >= 3:
            return f"stuck: the workflow task failed {attempt - 1} times in a row (a bug, not a fault)"
        stalled = progress.stalled()
        if stalled:
            return stalled


async def _result(handle: WorkflowHandle) -> tuple[str | None, str, str, dict | None]:
    try:
        result = await handle.result()
    except WorkflowFailureError as err:
        cause = err.cause
        if isinstance(cause, CancelledError):
            return None, "cancelled (Temporal Cancelled, not Aborted)", str(cause), None
        if isinstance(cause, ApplicationError):
            details = cause.details[0] if cause.details else None
            status = details.get("status") if isinstance(details, dict) else None
            if cause.type == "RunFailed":
                return status, "failed RunFailed", str(cause), details
            return None, f"failed ApplicationError(type={cause.type}) status={status}", str(cause), details
        return None, f"failed {type(cause).__name__}", str(cause), None
    data = result.model_dump(mode="json") if hasattr(result, "model_dump") else result
    status = data.get("status") if isinstance(data, dict) else None
    return status, "completed", str((data or {}).get("reason") or (data or {}).get("summary") or ""), data


async def _scan(env: WorkflowEnvironment, handle: WorkflowHandle, history: Any, root: str) -> tuple[list[str], list[str]]:
    """WorkflowTaskFailed events and the scheduled non-notify activities, of the run and its children."""
    failures: list[str] = []
    steps: list[str] = []
    histories = [(root, history)]
    seen = {root}
    index = 0
    while index < len(histories):
        wf_id, hist = histories[index]
        index += 1
        for event in hist.events:
            if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED:
                attrs = event.workflow_task_failed_event_attributes
                failure = attrs.failure
                text = failure.message or (failure.stack_trace.strip().splitlines() or [""])[-1]
                failures.append(f"{wf_id}: {WorkflowTaskFailedCause.Name(attrs.cause)}: {text[:300]}")
            elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
                attrs = event.activity_task_scheduled_event_attributes
                if attrs.activity_type.name != "notify":
                    steps.append(step_key(wf_id, root, attrs.activity_id, attrs.activity_type.name))
            elif event.event_type == EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED:
                child = event.start_child_workflow_execution_initiated_event_attributes.workflow_id
                if child not in seen:
                    seen.add(child)
                    try:
                        histories.append((child, await env.client.get_workflow_handle(child).fetch_history()))
                    except Exception as err:  # noqa: BLE001
                        failures.append(f"{child}: history not readable: {err}")
    return failures, steps


def _ledger(ctx: Ctx, moto: list[dict]) -> list[dict]:
    """The moto ledger's entries and the Kubernetes fakes', in one order (same machine, same clock)."""
    entries = [dict(e, key=f"aws:{e['key']}") for e in moto]
    for context, fake in ctx.kube.items():
        entries += [dict(e, key=f"k8s:{context}:{e['key']}") for e in fake.ledger]
    return sorted(entries, key=lambda e: e["t"])


def snapshot_sync(scenario: Scenario, ctx: Ctx, aws: dict[str, Any]) -> dict[str, Any]:
    """The whole snapshot: ``aws`` (the ledger server's, taken with its answer to watch or to the ledger's read),
    every Kubernetes fake's objects and the scenario's own parts."""
    snap: dict[str, Any] = {f"aws:{k}": v for k, v in aws.items()}
    for context, fake in ctx.kube.items():
        snap.update({f"k8s:{context}:{k}": v for k, v in fake.state().items()})
    snap.update(scenario.extra_snapshot(ctx))
    return snap


def start_moto(root: Path) -> tuple[subprocess.Popen, str]:
    port = harness.free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tests.matrix.moto_ledger", str(port)],
                            stdout=subprocess.PIPE, stderr=open(root / "moto.log", "ab"), text=True,
                            cwd=str(Path(__file__).resolve().parents[2]))
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc, f"http://127.0.0.1:{port}"


def start_zygote(root: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "tests.matrix.worker_proc"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=open(root / "zygote.log", "ab"), text=True,
                            cwd=str(Path(__file__).resolve().parents[2]))
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc
