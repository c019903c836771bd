"""Metric providers: ONE activity, ``measure_metric``, that fetches one value and classifies it.

- Prometheus: an instant query (``GET /api/v1/query``) over httpx; the query is templated with the analysis
  arguments (``{{service}}``, ``{{version}}``...). One series or a scalar is expected.
- CloudWatch: ``get_metric_statistics`` over boto3 with the metric's statistic (Average/Maximum...); the most
  recent datapoint in the window is the value. Latency percentiles are their own metrics (``LatencyP95``).

The activity never raises for a provider problem: an unreachable provider, an HTTP or API error, a malformed
answer or a bad template is a measurement with phase ``Error``; no data (empty result, no datapoint, NaN) is
``Inconclusive``. The limits in the analysis template decide what that means (core/analysis.py). It only reads,
so it is trivially retry-safe.
"""

from __future__ import annotations

import logging
import math
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

import httpx
from temporalio import activity

from core.analysis import (
    CloudWatchQuery,
    MeasureBatchInput,
    MeasureInput,
    Measurement,
    PrometheusQuery,
    classify,
    render,
)

log = logging.getLogger(__name__)


class ProviderError(Exception):
    """The provider could not answer; the message says what to check."""


class MetricsActivities:
    def __init__(
        self,
        *,
        http: httpx.Client | None = None,
        prometheus_url: str = "http://localhost:9090",
        cloudwatch: Callable[[str | None], Any] | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        """``cloudwatch(region)`` returns a boto3 CloudWatch client (the worker caches one per region)."""
        self._http = http or httpx.Client(timeout=10.0)
        self._prometheus_url = prometheus_url.rstrip("/")
        self._cloudwatch = cloudwatch or _default_cloudwatch
        self._clock = clock or (lambda: datetime.now(timezone.utc))

    @activity.defn(name="measure_metric")
    def measure_metric(self, req: MeasureInput) -> Measurement:
        spec = req.metric
        now = self._clock()
        query = spec.query
        try:
            if isinstance(query, PrometheusQuery):
                rendered = render(query.query, req.args)
                value = self._prometheus(query, rendered)
            else:
                dims = {k: render(v, req.args) for k, v in query.dimensions.items()}
                rendered = f"{query.namespace}/{query.metric_name} {query.statistic} " + ",".join(
                    f"{k}={v}" for k, v in sorted(dims.items())
                )
                value = self._cloudwatch_value(query, dims, now)
        except KeyError as err:  # a template names an argument the analysis does not have
            return Measurement(metric=spec.name, phase="Error", at=now, message=str(err.args[0]))
        except ProviderError as err:
            log.warning("metric %s: provider error: %s", spec.name, err)
            return Measurement(metric=spec.name, phase="Error", at=now, query=rendered, message=str(err))
        phase = classify(spec.success, value)
        message = "no data" if phase == "Inconclusive" else f"{value:g} {spec.success}: {phase.lower()}"
        return Measurement(metric=spec.name, phase=phase, value=value, at=now, query=rendered, message=message)

    @activity.defn(name="measure_metrics")
    def measure_metrics(self, req: MeasureBatchInput) -> list[Measurement]:
        """Every metric due at one tick, in one activity: one workflow activation per tick instead of one per
        metric. A provider error is an Error measurement, as with ``measure_metric``."""
        return [self.measure_metric(MeasureInput(metric=spec, args=req.args)) for spec in req.metrics]

    # ----------------------------------------------------------------------------------------- Prometheus
    def _prometheus(self, query: PrometheusQuery, promql: str) -> float | None:
        base = (query.address or self._prometheus_url).rstrip("/")
        try:
            response = self._http.get(f"{base}/api/v1/query", params={"query": promql})
        except httpx.HTTPError as err:
            raise ProviderError(f"Prometheus at {base} unreachable: {type(err).__name__}: {err}") from None
        try:
            body = response.json()
        except ValueError:
            raise ProviderError(f"Prometheus at {base} answered HTTP {response.status_code} with a non-JSON body") from None
        if response.status_code != 200 or body.get("status") != "success":
            raise ProviderError(
                f"Prometheus at {base} answered HTTP {response.status_code}: "
                f"{body.get('errorType', 'error')}: {body.get('error', 'no detail')}"
            )
        data = body.get("data") or {}
        kind = data.get("resultType")
        result: Any = data.get("result")  # JSON; a wrong shape is caught below as malformed
        try:
            if kind == "scalar":
                return _number(result[1])
            if kind == "vector":
                if not result:
                    return None
                if len(result) > 1:
                    raise ProviderError(
                        f"query returned {len(result)} series; aggregate it to one (e.g. sum(...) or max(...))"
                    )
                return _number(result[0]["value"][1])
        except (TypeError, KeyError, IndexError, ValueError):
            raise ProviderError(f"Prometheus answered a malformed {kind} result: {result!r:.200}") from None
        raise ProviderError(f"query returned a {kind!r} result; an instant query must return a vector or a scalar")

    # ----------------------------------------------------------------------------------------- CloudWatch
    def _cloudwatch_value(self, query: CloudWatchQuery, dims: dict[str, str], now: datetime) -> float | None:
        try:
            client = self._cloudwatch(query.region)
            answer = client.get_metric_statistics(
                Namespace=query.namespace,
                MetricName=query.metric_name,
                Dimensions=[{"Name": k, "Value": v} for k, v in sorted(dims.items())],
                StartTime=now - query.window,
                EndTime=now + timedelta(seconds=1),
                Period=query.period_seconds,
                Statistics=[query.statistic],
            )
        except Exception as err:  # botocore ClientError, endpoint/connection errors, missing credentials
            raise ProviderError(f"CloudWatch get_metric_statistics failed: {type(err).__name__}: {err}") from None
        points = [p for p in answer.get("Datapoints", []) if query.statistic in p]
        if not points:
            return None
        latest = max(points, key=lambda p: p["Timestamp"])
        return _number(latest[query.statistic])


def _number(raw: Any) -> float | None:
    value = float(raw)
    return None if math.isnan(value) else value


def _default_cloudwatch(region: str | None) -> Any:
    import boto3

    return boto3.client("cloudwatch", region_name=region) if region else boto3.client("cloudwatch")


def cloudwatch_factory() -> Callable[[str | None], Any]:
    """A thread-safe cache of boto3 CloudWatch clients per region (boto3 clients are thread-safe; sessions are not)."""
    import threading

    import boto3

    clients: dict[str | None, Any] = {}
    lock = threading.Lock()

    def get(region: str | None) -> Any:
        with lock:
            if region not in clients:
                clients[region] = boto3.client("cloudwatch", region_name=region) if region else boto3.client("cloudwatch")
            return clients[region]

    return get
