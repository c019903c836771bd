"""Metric providers: ONE activity, ``measure_metric``, that fetches one value and classifies it.

- Prometheus: an instant query (``GET /api/v1/query``) over httpx; the query is templated with the analysis
  arguments (``{{service}}``, ``{{version}}``...). One series or a scalar is expected.
- CloudWatch: ``GetMetricData`` over boto3: one metric with a basic or extended statistic (``p95``, ``p99``), or a
  metric-math expression over several (``100 * errors / requests``); the most recent value in the window is the
  value, the window's values are the samples.
- HTTP health (``provider: http``): every check sent ``probes`` times through the product's HTTP probe
  (activities/http_checks.py); the value is the % of those requests that failed, the samples 1 per failed request
  and 0 per passed one; the message names what failed.
- A compared metric (``compare``) also reads the stable version (the same query with ``baseline_args`` swapped in)
  and is judged by ``core.analysis.judge_measurement`` on both sides' samples (Prometheus: a range query).

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
from temporalio.exceptions import ApplicationError

from activities.http_checks import HttpCheckActivities, http_client
from core.analysis import (
    CloudWatchQuery,
    HttpHealthQuery,
    MeasureBatchInput,
    MeasureInput,
    Measurement,
    MetricQuery,
    MetricSpec,
    PrometheusQuery,
    baseline_args,
    classify,
    judge_measurement,
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
        prober: HttpCheckActivities | None = None,
    ) -> None:
        """``cloudwatch(region)`` returns a boto3 CloudWatch client (the worker caches one per region); ``prober``
        sends the requests of HTTP health metrics (the worker's HTTP check client)."""
        self._http = http or http_client(timeout=10.0)
        self._prober = prober or HttpCheckActivities()
        self._prometheus_url = prometheus_url.rstrip("/")
        self._cloudwatch = cloudwatch or _default_cloudwatch
        self._clock = clock or (lambda: datetime.now(timezone.utc))

    @activity.defn(name="measure_metric")
    def measure_metric(self, req: MeasureInput) -> Measurement:
        spec = req.metric
        now = self._clock()
        if isinstance(spec.query, HttpHealthQuery):
            return self._http_health(spec, spec.query, req.args, now)
        rendered = ""
        try:
            rendered, canary = self._samples(spec.query, req.args, now, series=spec.compare is not None)
            stable: list[float | None] = []
            if spec.compare is not None:
                stable_query, stable = self._samples(spec.query, baseline_args(spec.compare, req.args), now, series=True)
                rendered = f"canary: {rendered}; stable: {stable_query}"
        except KeyError as err:  # a template names an argument the analysis does not have
            return Measurement(metric=spec.name, phase="Error", at=now, query=rendered, message=str(err.args[0]))
        except ProviderError as err:
            log.warning("metric %s: provider error: %s", spec.name, err)
            return Measurement(metric=spec.name, phase="Error", at=now, query=rendered, message=str(err))
        judged = judge_measurement(spec, canary, stable)
        return Measurement(
            metric=spec.name,
            phase=judged.phase,
            value=judged.canary,
            baseline=judged.stable,
            at=now,
            query=rendered,
            message=judged.message,
            samples=[v for v in canary if v is not None] if spec.compare else [],
            baseline_samples=[v for v in stable if v is not None],
        )

    def _samples(self, query: MetricQuery, args: dict[str, str], now: datetime, *, series: bool) -> tuple[str, list[float | None]]:
        """The rendered query and its values, oldest first: one value (instant), or the window's samples."""
        if isinstance(query, PrometheusQuery):
            promql = render(query.query, args)
            if series:
                return promql, self._prometheus_range(query, promql, now)
            value = self._prometheus(query, promql)
            return promql, [] if value is None else [value]
        assert isinstance(query, CloudWatchQuery)  # HTTP health is measured by _http_health
        return self._cloudwatch_samples(query, args, now)

    @activity.defn(name="measure_metrics")
    def measure_metrics(self, req: MeasureBatchInput) -> list[Measurement]:
        """Every metric due at one tick, in one activity: one workflow activation per tick instead of one per
        metric. A provider error is an Error measurement, as with ``measure_metric``."""
        return [self.measure_metric(MeasureInput(metric=spec, args=req.args)) for spec in req.metrics]

    # ----------------------------------------------------------------------------------------- HTTP health
    def _http_health(self, spec: MetricSpec, query: HttpHealthQuery, args: dict[str, str], now: datetime) -> Measurement:
        """Every check ``probes`` times, in turn; the value is the % of the requests that failed."""
        failed: list[float] = []
        errors: list[str] = []
        try:
            probes = [c.probe().model_copy(update={"url": render(c.url, args)}) for c in query.checks]
            for _ in range(query.probes):
                for probe in probes:
                    result = self._prober.probe(probe)
                    failed.append(0.0 if result.ok else 1.0)
                    if not result.ok and result.error not in errors:
                        errors.append(result.error or f"{probe.url} failed")
        except KeyError as err:  # a URL names an argument the analysis does not have
            return Measurement(metric=spec.name, phase="Error", at=now, message=str(err.args[0]))
        except ApplicationError as err:  # a URL that can never work
            return Measurement(metric=spec.name, phase="Error", at=now, message=str(err))
        value = 100.0 * sum(failed) / len(failed)
        phase = classify(spec.success, value)
        told = f"{int(sum(failed))}/{len(failed)} requests failed" + (f": {'; '.join(errors)}" if errors else "")
        return Measurement(
            metric=spec.name, phase=phase, value=value, at=now, samples=failed,
            query=", ".join(sorted({f"{p.method} {p.url}" for p in probes})),
            message=f"{told} ({value:g} % {spec.success}: {phase.lower()})",
        )

    # ----------------------------------------------------------------------------------------- Prometheus
    def _prometheus(self, query: PrometheusQuery, promql: str) -> float | None:
        base = (query.address or self._prometheus_url).rstrip("/")
        try:
            response = self._http.get(f"{base}/api/v1/query", params={"query": promql})
        except httpx.HTTPError as err:
            raise ProviderError(f"Prometheus at {base} unreachable: {type(err).__name__}: {err}") from None
        body = self._prometheus_body(base, response)
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

    @staticmethod
    def _prometheus_body(base: str, response: httpx.Response) -> dict[str, Any]:
        try:
            body = response.json()
        except ValueError:
            raise ProviderError(f"Prometheus at {base} answered HTTP {response.status_code} with a non-JSON body") from None
        if response.status_code != 200 or not isinstance(body, dict) or body.get("status") != "success":
            detail = body if isinstance(body, dict) else {}
            raise ProviderError(
                f"Prometheus at {base} answered HTTP {response.status_code}: "
                f"{detail.get('errorType', 'error')}: {detail.get('error', 'no detail')}"
            )
        return body

    def _prometheus_range(self, query: PrometheusQuery, promql: str, now: datetime) -> list[float | None]:
        base = (query.address or self._prometheus_url).rstrip("/")
        params = {
            "query": promql,
            "start": f"{(now - query.window).timestamp():.3f}",
            "end": f"{now.timestamp():.3f}",
            "step": f"{query.step.total_seconds():g}",
        }
        try:
            response = self._http.get(f"{base}/api/v1/query_range", params=params)
        except httpx.HTTPError as err:
            raise ProviderError(f"Prometheus at {base} unreachable: {type(err).__name__}: {err}") from None
        body = self._prometheus_body(base, response)
        data = body.get("data") or {}
        result: Any = data.get("result")
        if data.get("resultType") != "matrix":
            raise ProviderError(f"range query returned a {data.get('resultType')!r} result, not a matrix")
        try:
            if not result:
                return []
            if len(result) > 1:
                raise ProviderError(f"query returned {len(result)} series; aggregate it to one (e.g. sum(...) or max(...))")
            return [_number(v) for _, v in result[0]["values"]]
        except (TypeError, KeyError, IndexError, ValueError):
            raise ProviderError(f"Prometheus answered a malformed matrix: {result!r:.200}") from None

    # ----------------------------------------------------------------------------------------- CloudWatch
    def _cloudwatch_samples(self, query: CloudWatchQuery, args: dict[str, str], now: datetime) -> tuple[str, list[float | None]]:
        """GetMetricData: one MetricStat (basic or extended statistic), or a metric-math expression over MetricStats
        (returned with ReturnData false). The values of the window, oldest first."""

        def stat(metric: Any) -> dict[str, Any]:
            dims = {k: render(v, args) for k, v in metric.dimensions.items()}
            return {
                "Metric": {
                    "Namespace": metric.namespace,
                    "MetricName": metric.metric_name,
                    "Dimensions": [{"Name": k, "Value": v} for k, v in sorted(dims.items())],
                },
                "Period": query.period_seconds,
                "Stat": metric.statistic,
            }

        def shown(metric: Any) -> str:
            dims = ",".join(f"{k}={render(v, args)}" for k, v in sorted(metric.dimensions.items()))
            return f"{metric.namespace}/{metric.metric_name} {metric.statistic} {dims}".rstrip()

        if query.expression is None:
            queries = [{"Id": "m", "MetricStat": stat(query), "ReturnData": True}]
            rendered = shown(query)
        else:
            expression = render(query.expression, args)
            queries = [{"Id": i, "MetricStat": stat(m), "ReturnData": False} for i, m in sorted(query.metrics.items())]
            queries.append({"Id": "result", "Expression": expression, "Label": "result", "ReturnData": True})
            rendered = f"{expression} where " + "; ".join(f"{i} = {shown(m)}" for i, m in sorted(query.metrics.items()))
        try:
            client = self._cloudwatch(query.region)
            answer = client.get_metric_data(
                MetricDataQueries=queries,
                StartTime=now - query.window,
                EndTime=now + timedelta(seconds=1),
                ScanBy="TimestampAscending",
            )
        except Exception as err:  # botocore ClientError, endpoint/connection errors, missing credentials
            raise ProviderError(f"CloudWatch get_metric_data failed: {type(err).__name__}: {err}") from None
        results = [r for r in answer.get("MetricDataResults", []) if r.get("Id") == queries[-1]["Id"]]
        if not results:
            raise ProviderError(f"CloudWatch get_metric_data answered no result for {queries[-1]['Id']!r}")
        result = results[0]
        if result.get("StatusCode") == "InternalError":
            messages = "; ".join(m.get("Value", "") for m in answer.get("Messages", []) + result.get("Messages", []))
            raise ProviderError(f"CloudWatch could not compute {rendered}: {messages or 'InternalError'}")
        try:
            pairs = sorted(zip(result.get("Timestamps", []), result.get("Values", []), strict=True), key=lambda p: p[0])
            return rendered, [_number(v) for _, v in pairs]
        except (TypeError, ValueError):
            raise ProviderError(f"CloudWatch answered a malformed result: {result!r:.200}") from None


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
