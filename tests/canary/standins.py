"""Stand-in activities registered under the real activity names, for tests about the workflow's logic.

``FakeTraffic`` holds an ALB-like weight table; ``FakeMetrics`` answers ``measure_metric`` from a function of
(metric name, canary weight, measurement count) so a test can make the canary go bad at a weight.
Every call is appended to one shared ``log`` so tests can assert the order of effects.
"""

from __future__ import annotations

import threading
from datetime import datetime, timezone
from typing import Callable

from temporalio import activity
from temporalio.exceptions import ApplicationError

from core.analysis import MeasureBatchInput, MeasureInput, Measurement, classify, render
from core.aws import AlbSetWeightsInput, AlbTrafficRef, AlbWeights
from core.events import NotifyResult, RunbookEvent

STABLE, CANARY = "arn:tg/stable", "arn:tg/canary"


class FakeTraffic:
    """``fail_at``: canary weights whose write fails (non-retryable); ``block_at``: a canary weight whose write waits
    for ``release`` (``entered`` is set when it starts), outside the lock, so a concurrent write could overtake it."""

    def __init__(self, log: list[tuple]) -> None:
        self.weights = {STABLE: 100, CANARY: 0}
        self.log = log
        self.lock = threading.Lock()
        self.fail_at: set[int] = set()
        self.block_at: int | None = None
        self.entered = threading.Event()
        self.release = threading.Event()
        self.gets = 0

    @property
    def canary(self) -> int:
        return self.weights[CANARY]

    @activity.defn(name="alb_get_weights")
    def get(self, ref: AlbTrafficRef) -> AlbWeights:
        self.gets += 1
        return AlbWeights(weights=dict(self.weights))

    @activity.defn(name="alb_set_weights")
    def set(self, req: AlbSetWeightsInput) -> AlbWeights:
        wanted = req.weights[CANARY]
        if wanted in self.fail_at:
            self.log.append(("failed", wanted))
            raise ApplicationError(f"listener refused weight {wanted}", type="AccessDenied", non_retryable=True)
        if wanted == self.block_at:
            self.entered.set()
            self.release.wait(30)
        with self.lock:
            self.weights.update(req.weights)
            self.log.append(("weights", req.weights[CANARY]))
        return AlbWeights(weights=dict(self.weights))


class FakeMetrics:
    def __init__(self, traffic: FakeTraffic, value: Callable[[str, int, int], float | None]) -> None:
        self.traffic = traffic
        self.value = value
        self.count: dict[str, int] = {}
        self.lock = threading.Lock()

    @activity.defn(name="measure_metric")
    def measure(self, req: MeasureInput) -> Measurement:
        render(str(req.metric.query.model_dump()), req.args)  # the workflow passes every argument the template uses
        with self.lock:
            n = self.count.get(req.metric.name, 0)
            self.count[req.metric.name] = n + 1
        value = self.value(req.metric.name, self.traffic.canary, n)
        return Measurement(
            metric=req.metric.name,
            phase=classify(req.metric.success, value),
            value=value,
            at=datetime.now(timezone.utc),
        )


    @activity.defn(name="measure_metrics")
    def measure_batch(self, req: MeasureBatchInput) -> list[Measurement]:
        return [self.measure(MeasureInput(metric=spec, args=req.args)) for spec in req.metrics]


HEALTHY = {"error-rate": 0.1, "latency-p95": 0.3, "cpu": 40.0, "memory": 50.0}


def healthy(metric: str, weight: int, n: int) -> float | None:
    return HEALTHY[metric]


class Recorder:
    """The notify activity, logging into the same list as the traffic stand-in."""

    def __init__(self, log: list[tuple]) -> None:
        self.log = log
        self.events: list[RunbookEvent] = []

    @activity.defn(name="notify")
    def notify(self, event: RunbookEvent) -> NotifyResult:
        self.events.append(event)
        self.log.append(("notify", event.kind))
        return NotifyResult()
