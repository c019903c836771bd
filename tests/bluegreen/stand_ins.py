"""Stand-ins for the blue-green tests, registered under the real activity names: a wrapper that holds one call of a
real activity (so a test can abort or cancel while that step runs) or fails it, and a scripted ``measure_metrics``."""

from __future__ import annotations

import asyncio
import inspect
import threading
import typing
from datetime import datetime, timezone
from typing import Any, Callable

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.metrics import MetricsActivities
from core.analysis import HttpHealthQuery, MeasureBatchInput, MeasureInput, Measurement


class Hold:
    """Holds the ``call``-th call (1-based) of one activity until ``release()``, and fails chosen calls of others."""

    def __init__(self, name: str | None = None, call: int = 1, fail: dict[str, set[int]] | None = None) -> None:
        self.name, self.call = name, call
        self.fail = fail or {}
        self.calls: dict[str, int] = {}
        self.arrived = threading.Event()
        self._released = threading.Event()
        self._lock = threading.Lock()

    def wrap(self, real: Callable) -> Callable:
        name = getattr(real, "__temporal_activity_definition").name
        hints = typing.get_type_hints(real)
        (param,) = inspect.signature(real).parameters

        def stand_in(arg):  # type: ignore[no-untyped-def]
            with self._lock:
                self.calls[name] = n = self.calls.get(name, 0) + 1
            if name == self.name and n == self.call:
                self.arrived.set()
                self._released.wait(30)
            if n in self.fail.get(name, set()):
                raise ApplicationError(f"{name} call {n} failed (injected)", type="AccessDenied", non_retryable=True)
            return real(arg)

        stand_in.__annotations__ = {"arg": hints[param], "return": hints["return"]}
        stand_in.__name__ = name
        return activity.defn(name=name)(stand_in)

    def wrap_all(self, acts: list[Callable]) -> dict[str, Callable]:
        return {getattr(a, "__temporal_activity_definition").name: self.wrap(a) for a in acts}

    async def reached(self, timeout: float = 15.0) -> None:
        if not await asyncio.to_thread(self.arrived.wait, timeout):
            raise AssertionError(f"{self.name} call {self.call} never started")

    def release(self) -> None:
        self._released.set()


class Measurer:
    """``measure_metrics`` answering each metric with the phase scripted for that call (then ``then``); the bake's
    HTTP health metric is measured for real (requests to the colour servers)."""

    def __init__(self, script: list[str] | None = None, then: str = "Successful") -> None:
        self.script = list(script or [])
        self.then = then
        self.calls = 0
        self._lock = threading.Lock()
        self._real = MetricsActivities()

    @property
    def activity(self) -> Callable:
        @activity.defn(name="measure_metrics")
        def measure_metrics(req: MeasureBatchInput) -> list[Measurement]:
            with self._lock:
                phase = self.script[self.calls] if self.calls < len(self.script) else self.then
                self.calls += 1
            value = {"Successful": 0.1, "Failed": 50.0}.get(phase)
            return [
                self._real.measure_metric(MeasureInput(metric=m, args=req.args)) if isinstance(m.query, HttpHealthQuery)
                else Measurement(metric=m.name, phase=phase, value=value, at=datetime.now(timezone.utc),  # type: ignore[arg-type]
                                 message="no data" if phase == "Inconclusive" else "")
                for m in req.metrics
            ]

        return measure_metrics


async def workflow_task_failures(handle: Any) -> list[str]:
    """Every WorkflowTaskFailed in the run's history (its last run), but for the one the server causes by design
    (new events arrived while the task ran: UNHANDLED_COMMAND, retried at once): each other one is a bug."""
    from temporalio.api.enums.v1 import EventType, WorkflowTaskFailedCause

    failures = []
    async for event in handle.fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED:
            attrs = event.workflow_task_failed_event_attributes
            if attrs.cause == WorkflowTaskFailedCause.WORKFLOW_TASK_FAILED_CAUSE_UNHANDLED_COMMAND:
                continue
            failures.append(f"{WorkflowTaskFailedCause.Name(attrs.cause)}: {attrs.failure.message}")
    return failures
