"""Analysis: what to measure, how one value is judged, and how measurements and limits become a verdict.

Measuring is kept apart from judging (the argo-rollouts model):

- an ``AnalysisTemplate`` names metrics; each ``MetricSpec`` has a provider query (Prometheus or CloudWatch), a
  success condition, an interval and three limits;
- the ``measure_metric`` activity (activities/metrics.py) fetches ONE value and classifies it with ``classify``:
  provider error -> ``Error``, no data or NaN -> ``Inconclusive``, condition met -> ``Successful``, else ``Failed``;
- ``assess`` (pure) turns the measurements taken so far and the limits into the analysis verdict.

How measurements, criteria and limits combine (per metric, counted over the measurements of one analysis run):

- ``Failed``        when the metric's failed measurements > ``failure_limit`` (default 1: the 2nd failure fails);
- ``Error``         when its *consecutive* errors at the end of its list > ``consecutive_error_limit`` (default 4);
- ``Inconclusive``  when its inconclusive measurements > ``inconclusive_limit`` (default 2);
- otherwise the metric is ``Running`` (or ``Successful`` once the run is complete and it has at least one
  successful measurement; a metric with no measurement at all at completion is ``Inconclusive``).

The analysis verdict is the worst metric verdict, in the order Failed > Error > Inconclusive > Running >
Successful; its ``reason`` names the metric, the condition and the measured values. A limit of 0 means the first
such measurement decides. Everything here is pure (no I/O, no clock) so workflows and tests share it.
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from core.duration import Duration

MeasurementPhase = Literal["Successful", "Failed", "Inconclusive", "Error"]
VerdictPhase = Literal["Running", "Successful", "Failed", "Inconclusive", "Error"]

_OPS = {
    "<": lambda v, t: v < t,
    "<=": lambda v, t: v <= t,
    ">": lambda v, t: v > t,
    ">=": lambda v, t: v >= t,
}
_CONDITION = re.compile(r"^\s*(?:result\s*)?(<=|>=|<|>)\s*(-?\d+(?:\.\d+)?(?:[eE]-?\d+)?)\s*$")
_ARG = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


class Condition(BaseModel):
    """A success condition on one value: ``value <op> threshold``. Written in YAML as ``"< 0.5"``."""

    model_config = ConfigDict(extra="forbid")

    op: Literal["<", "<=", ">", ">="]
    threshold: float

    @model_validator(mode="before")
    @classmethod
    def _parse(cls, data: Any) -> Any:
        if isinstance(data, str):
            match = _CONDITION.match(data)
            if not match:
                raise ValueError(f"{data!r} is not a condition (write it like '< 0.5' or '>= 99')")
            return {"op": match.group(1), "threshold": float(match.group(2))}
        return data

    def holds(self, value: float) -> bool:
        return _OPS[self.op](value, self.threshold)

    def __str__(self) -> str:
        return f"{self.op} {self.threshold:g}"


class PrometheusQuery(BaseModel):
    """A PromQL instant query. ``{{service}}``, ``{{version}}``... are replaced by the analysis arguments.

    The query must return one series or a scalar (aggregate with ``sum(...)``/``max(...)``).
    """

    model_config = ConfigDict(extra="forbid")

    provider: Literal["prometheus"] = "prometheus"
    query: str = Field(min_length=1)
    address: str | None = Field(None, description="Prometheus base URL; default: the worker's PROMETHEUS_URL")


class CloudWatchQuery(BaseModel):
    """A CloudWatch metric read with get_metric_statistics; the most recent datapoint in the window counts.

    Latency percentiles are published as their own metrics (e.g. ``LatencyP95``) and read with Average/Maximum:
    ExtendedStatistics are not used (moto cannot compute them, and this keeps one code path).
    """

    model_config = ConfigDict(extra="forbid")

    provider: Literal["cloudwatch"] = "cloudwatch"
    namespace: str = Field(min_length=1)
    metric_name: str = Field(min_length=1)
    dimensions: dict[str, str] = Field(default_factory=dict, description="values may use {{args}}")
    statistic: Literal["Average", "Maximum", "Minimum", "Sum", "SampleCount"] = "Average"
    period_seconds: int = Field(60, ge=1)
    window: Duration = timedelta(minutes=5)
    region: str | None = None


MetricQuery = Annotated[Union[PrometheusQuery, CloudWatchQuery], Field(discriminator="provider")]


class MetricSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    query: MetricQuery
    success: Condition
    unit: str = ""
    interval: Duration = timedelta(minutes=1)
    failure_limit: int = Field(1, ge=0, description="failed measurements tolerated; one more fails the analysis")
    inconclusive_limit: int = Field(2, ge=0, description="inconclusive measurements tolerated before asking a person")
    consecutive_error_limit: int = Field(4, ge=0, description="consecutive provider errors tolerated")

    @field_validator("interval")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("interval must be positive")
        return value


class AnalysisTemplate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    metrics: list[MetricSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> "AnalysisTemplate":
        names = [m.name for m in self.metrics]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"metric names must be unique in a template: {', '.join(dupes)}")
        return self


class MeasureInput(BaseModel):
    """Input of the ``measure_metric`` activity: one metric, and the arguments its query is templated with."""

    metric: MetricSpec
    args: dict[str, str] = Field(default_factory=dict)


class MeasureBatchInput(BaseModel):
    """Input of the ``measure_metrics`` activity: the metrics due at one analysis tick."""

    metrics: list[MetricSpec]
    args: dict[str, str] = Field(default_factory=dict)


class Measurement(BaseModel):
    metric: str
    phase: MeasurementPhase
    value: float | None = None
    at: datetime
    query: str = Field("", description="the rendered query, for people reading the result")
    message: str = ""


class MetricVerdict(BaseModel):
    metric: str
    phase: VerdictPhase
    condition: str
    successful: int = 0
    failed: int = 0
    inconclusive: int = 0
    errors: int = 0
    consecutive_errors: int = 0
    values: list[float | None] = Field(default_factory=list, description="measured values, oldest first")


class AnalysisVerdict(BaseModel):
    phase: VerdictPhase
    reason: str = ""
    metric: str | None = Field(None, description="the metric that decided a non-successful verdict")
    condition: str | None = None
    values: list[float | None] = Field(default_factory=list, description="that metric's measured values")
    metrics: list[MetricVerdict] = Field(default_factory=list)


# --------------------------------------------------------------------------------------------- pure functions
def render(text: str, args: dict[str, str]) -> str:
    """Replace ``{{name}}`` by ``args[name]``; a missing argument is an error a person must fix."""

    def sub(match: re.Match[str]) -> str:
        key = match.group(1)
        if key not in args:
            raise KeyError(f"query uses {{{{{key}}}}} but the analysis has no argument {key!r} (has: {', '.join(sorted(args)) or 'none'})")
        return args[key]

    return _ARG.sub(sub, text)


def classify(condition: Condition, value: float | None) -> MeasurementPhase:
    """Judge one value: None or NaN is Inconclusive (no data), else Successful if the condition holds."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "Inconclusive"
    return "Successful" if condition.holds(value) else "Failed"


_SEVERITY: dict[str, int] = {"Failed": 4, "Error": 3, "Inconclusive": 2, "Running": 1, "Successful": 0}


def judge_metric(spec: MetricSpec, measurements: list[Measurement], *, complete: bool) -> MetricVerdict:
    """One metric's verdict from its own measurements (oldest first) and limits."""
    mine = [m for m in measurements if m.metric == spec.name]
    counts = {p: sum(1 for m in mine if m.phase == p) for p in ("Successful", "Failed", "Inconclusive", "Error")}
    consecutive = 0
    for m in reversed(mine):
        if m.phase != "Error":
            break
        consecutive += 1
    if counts["Failed"] > spec.failure_limit:
        phase: VerdictPhase = "Failed"
    elif consecutive > spec.consecutive_error_limit:
        phase = "Error"
    elif counts["Inconclusive"] > spec.inconclusive_limit:
        phase = "Inconclusive"
    elif not complete:
        phase = "Running"
    elif counts["Successful"] == 0:
        phase = "Inconclusive"  # the run ended without one good measurement of this metric
    else:
        phase = "Successful"
    return MetricVerdict(
        metric=spec.name,
        phase=phase,
        condition=str(spec.success),
        successful=counts["Successful"],
        failed=counts["Failed"],
        inconclusive=counts["Inconclusive"],
        errors=counts["Error"],
        consecutive_errors=consecutive,
        values=[m.value for m in mine],
    )


def assess(template: AnalysisTemplate, measurements: list[Measurement], *, complete: bool = False) -> AnalysisVerdict:
    """The analysis verdict: the worst metric verdict (Failed > Error > Inconclusive > Running > Successful)."""
    verdicts = [judge_metric(spec, measurements, complete=complete) for spec in template.metrics]
    worst = max(verdicts, key=lambda v: _SEVERITY[v.phase])
    if worst.phase in ("Running", "Successful"):
        done = "all metrics met their conditions" if worst.phase == "Successful" else "within limits so far"
        return AnalysisVerdict(phase=worst.phase, reason=f"{template.name}: {done}", metrics=verdicts)
    spec = next(s for s in template.metrics if s.name == worst.metric)
    shown = ", ".join("no data" if v is None or math.isnan(v) else f"{v:g}" for v in worst.values[-6:])
    if worst.phase == "Failed":
        why = f"{worst.failed} failed measurement(s), limit {spec.failure_limit}"
    elif worst.phase == "Error":
        why = f"{worst.consecutive_errors} consecutive provider error(s), limit {spec.consecutive_error_limit}"
    elif worst.inconclusive > spec.inconclusive_limit:
        why = f"{worst.inconclusive} inconclusive measurement(s), limit {spec.inconclusive_limit}"
    else:
        why = "no successful measurement before the analysis ended"
    reason = f"{spec.name} {worst.phase.lower()}: condition {spec.success}{spec.unit and ' ' + spec.unit}; {why}; values: [{shown}]"
    return AnalysisVerdict(
        phase=worst.phase,
        reason=reason,
        metric=spec.name,
        condition=str(spec.success),
        values=list(worst.values),
        metrics=verdicts,
    )


# --------------------------------------------------------------------------------------------- defaults (policy)
def default_template(name: str = "default", *, namespace: str = "Demo/Service", region: str | None = None) -> AnalysisTemplate:
    """The deployment policy's default criteria, read from CloudWatch with dimensions Service and Version:
    error rate < 0.5 %, latency p95 < 1.5 s, CPU < 80 %, memory < 85 %; 2 failed measurements fail the analysis."""

    def cw(metric: str, statistic: str = "Average") -> CloudWatchQuery:
        return CloudWatchQuery(
            namespace=namespace,
            metric_name=metric,
            dimensions={"Service": "{{service}}", "Version": "{{version}}"},
            statistic=statistic,
            region=region,
        )

    return AnalysisTemplate(
        name=name,
        metrics=[
            MetricSpec(name="error-rate", query=cw("ErrorRate"), success=Condition(op="<", threshold=0.5), unit="%"),
            MetricSpec(name="latency-p95", query=cw("LatencyP95"), success=Condition(op="<", threshold=1.5), unit="s"),
            MetricSpec(name="cpu", query=cw("CPUUtilization"), success=Condition(op="<", threshold=80), unit="%"),
            MetricSpec(name="memory", query=cw("MemoryUtilization"), success=Condition(op="<", threshold=85), unit="%"),
        ],
    )


def prometheus_template(name: str = "prometheus", address: str | None = None) -> AnalysisTemplate:
    """The same policy criteria as PromQL over the usual http_requests_total / histogram / cAdvisor series."""
    sel = 'service="{{service}}",version="{{version}}"'

    def prom(query: str) -> PrometheusQuery:
        return PrometheusQuery(query=query, address=address)

    return AnalysisTemplate(
        name=name,
        metrics=[
            MetricSpec(
                name="error-rate",
                query=prom(
                    # a version with no 5xx at all has no such series: count that as 0, not as "no data"
                    f'100 * (sum(rate(http_requests_total{{{sel},code=~"5.."}}[1m])) or vector(0))'
                    f" / sum(rate(http_requests_total{{{sel}}}[1m]))"
                ),
                success=Condition(op="<", threshold=0.5),
                unit="%",
            ),
            MetricSpec(
                name="latency-p95",
                query=prom(f"histogram_quantile(0.95, sum by (le) (rate(http_request_duration_seconds_bucket{{{sel}}}[1m])))"),
                success=Condition(op="<", threshold=1.5),
                unit="s",
            ),
            MetricSpec(
                name="cpu",
                query=prom(f"100 * avg(rate(container_cpu_usage_seconds_total{{{sel}}}[1m]))"),
                success=Condition(op="<", threshold=80),
                unit="%",
            ),
            MetricSpec(
                name="memory",
                query=prom(f"100 * max(container_memory_working_set_bytes{{{sel}}} / container_spec_memory_limit_bytes{{{sel}}})"),
                success=Condition(op="<", threshold=85),
                unit="%",
            ),
        ],
    )
