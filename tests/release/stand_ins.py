"""Stand-ins for the release tests, registered under the real activity names: every wave's ALB (a weight table per
listener) and the metrics provider (the canary criteria per wave and version, the availability per wave). The
children are the product's real CanaryRamp workflows; the ledger is the real PostgreSQL one; checks are real HTTP."""

from __future__ import annotations

import threading
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

from temporalio import activity
from temporalio.exceptions import ApplicationError

from core.analysis import MeasureBatchInput, MeasureInput, Measurement, classify
from core.aws import AlbSetWeightsInput, AlbTrafficRef, AlbWeights

HEALTHY = {"error-rate": 0.1, "latency-p95": 0.3, "cpu": 40.0, "memory": 50.0}


def listener(wave: str) -> str:
    return f"arn:aws:elasticloadbalancing:us-east-1:123456789012:listener/app/{wave}-alb/0123/4567"


def groups(wave: str) -> tuple[str, str]:
    base = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup"
    return f"{base}/{wave}-stable/1", f"{base}/{wave}-canary/2"


def router(wave: str) -> dict[str, Any]:
    stable, canary = groups(wave)
    return {"kind": "alb", "listener_arn": listener(wave), "stable_target_group": stable, "canary_target_group": canary}


class Fleet:
    """Every wave's ALB weights and metrics. ``bad``: (wave, version) pairs whose error rate breaches the criteria;
    ``availability``: wave -> availability in percent (default 99.99); ``log``: every weight write, in order."""

    def __init__(self) -> None:
        self.weights: dict[str, dict[str, int]] = {}
        self.bad: set[tuple[str, str]] = set()
        self.availability: dict[str, float | None] = {}
        self.budget_reads: list[str] = []
        self.log: list[tuple[str, str, int]] = []
        self.lock = threading.Lock()

    def canary_weight(self, wave: str) -> int:
        return self.weights.get(listener(wave), {}).get(groups(wave)[1], 0)

    def _table(self, arn: str) -> dict[str, int]:
        wave = arn.split("/app/", 1)[1].split("-alb/", 1)[0]
        stable, canary = groups(wave)
        return self.weights.setdefault(arn, {stable: 100, canary: 0})

    @activity.defn(name="alb_get_weights")
    def get(self, ref: AlbTrafficRef) -> AlbWeights:
        with self.lock:
            return AlbWeights(weights=dict(self._table(ref.listener_arn)))

    @activity.defn(name="alb_set_weights")
    def set(self, req: AlbSetWeightsInput) -> AlbWeights:
        with self.lock:
            table = self._table(req.ref.listener_arn)
            table.update(req.weights)
            wave = req.ref.listener_arn.split("/app/", 1)[1].split("-alb/", 1)[0]
            self.log.append(("weight", wave, self.canary_weight(wave)))
            return AlbWeights(weights=dict(table))

    def _value(self, metric: str, args: dict[str, str]) -> float | None:
        if metric == "availability":
            self.budget_reads.append(args["wave"])
            return self.availability.get(args["wave"], 99.99)
        wave = args.get("load_balancer", "").removeprefix("app/").split("-alb/", 1)[0]
        if metric == "error-rate" and (wave, args.get("version", "")) in self.bad:
            return 5.0
        return HEALTHY[metric]

    @activity.defn(name="measure_metric")
    def measure(self, req: MeasureInput) -> Measurement:
        value = self._value(req.metric.name, req.args)
        return Measurement(metric=req.metric.name, phase=classify(req.metric.success, value), value=value,
                           at=datetime.now(timezone.utc))

    @activity.defn(name="measure_metrics")
    def measure_batch(self, req: MeasureBatchInput) -> list[Measurement]:
        return [self.measure(MeasureInput(metric=spec, args=req.args)) for spec in req.metrics]

    def activities(self) -> list[Callable]:
        return [self.get, self.set, self.measure, self.measure_batch]


class Smoke:
    """A real HTTP endpoint for the check steps: ``/ok`` answers 200 "ok", ``/fail`` 503."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                code = 503 if self.path.startswith("/fail") else 200
                body = f"ok {self.path}".encode()
                self.send_response(code)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def failing(name: str) -> Callable:
    """An activity that always fails (typed, non-retryable): a ledger that cannot be reached, say."""

    @activity.defn(name=name)
    def stand_in(arg: Any) -> Any:
        raise ApplicationError(f"{name} failed (injected)", type="AccessDenied", non_retryable=True)

    return stand_in
