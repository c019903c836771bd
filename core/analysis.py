"""Analysis: what to measure, how one value is judged, and how measurements and limits become a verdict.

Measuring is kept apart from judging (the argo-rollouts model):

- an ``AnalysisTemplate`` names metrics; each ``MetricSpec`` has a provider query (Prometheus, CloudWatch, or
  HTTP health: the % of a measurement's requests that failed), a success condition, an interval and three limits;
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
from typing import Annotated, Any, Literal, Sequence, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from core.duration import Duration
from core.http_checks import HttpCheck

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
    """A PromQL query. ``{{service}}``, ``{{version}}``... are replaced by the analysis arguments.

    The query must return one series or a scalar (aggregate with ``sum(...)``/``max(...)``). An instant query gives
    the value; a compared metric (``compare``) reads ``window`` with a range query at ``step``: one sample a step.
    """

    model_config = ConfigDict(extra="forbid")

    provider: Literal["prometheus"] = "prometheus"
    query: str = Field(min_length=1)
    address: str | None = Field(None, description="Prometheus base URL; default: the worker's PROMETHEUS_URL")
    window: Duration = Field(timedelta(minutes=5), description="compared metrics: the range query's span")
    step: Duration = Field(timedelta(minutes=1), description="compared metrics: the range query's step (one sample each)")


_STAT = re.compile(r"^(Average|Maximum|Minimum|Sum|SampleCount|IQM|(?:p|tm|wm|tc|ts)\d{1,2}(?:\.\d+)?)$")


def _check_stat(value: str) -> str:
    if not _STAT.match(value):
        raise ValueError(
            f"{value!r} is not a CloudWatch statistic (Average, Maximum, Minimum, Sum, SampleCount, or an extended "
            "statistic such as p95, p99.9, tm90)"
        )
    return value


class CloudWatchMetric(BaseModel):
    """One metric of a metric-math expression: ``MetricStat`` of GetMetricData."""

    model_config = ConfigDict(extra="forbid")

    namespace: str = Field(min_length=1)
    metric_name: str = Field(min_length=1)
    dimensions: dict[str, str] = Field(default_factory=dict, description="values may use {{args}}")
    statistic: str = "Sum"

    @field_validator("statistic")
    @classmethod
    def _statistic(cls, value: str) -> str:
        return _check_stat(value)


_MATH_ID = re.compile(r"^[a-z][a-zA-Z0-9_]*$")


class CloudWatchQuery(BaseModel):
    """A CloudWatch read through ``GetMetricData``: one metric with a statistic (basic or extended: ``p95``,
    ``p99``, ``tm90``...), or a metric-math ``expression`` over named ``metrics`` (e.g. ``100 * errors /
    requests``). The values of the window, one per period, are the samples; the most recent one is the value.
    """

    model_config = ConfigDict(extra="forbid")

    provider: Literal["cloudwatch"] = "cloudwatch"
    namespace: str | None = Field(None, min_length=1)
    metric_name: str | None = Field(None, min_length=1)
    dimensions: dict[str, str] = Field(default_factory=dict, description="values may use {{args}}")
    statistic: str = "Average"
    expression: str | None = Field(None, min_length=1, description="metric math over the ids of `metrics`")
    metrics: dict[str, CloudWatchMetric] = Field(default_factory=dict, description="id -> metric, for `expression`")
    period_seconds: int = Field(60, ge=1)
    window: Duration = timedelta(minutes=5)
    region: str | None = None

    @field_validator("statistic")
    @classmethod
    def _statistic(cls, value: str) -> str:
        return _check_stat(value)

    @model_validator(mode="after")
    def _one_shape(self) -> "CloudWatchQuery":
        if self.expression is None:
            if self.metrics:
                raise ValueError("metrics: only used with an expression (add expression: or move the metric up)")
            missing = [f for f in ("namespace", "metric_name") if getattr(self, f) is None]
            if missing:
                raise ValueError(f"{' and '.join(missing)} required (or an expression over metrics)")
        else:
            if self.namespace or self.metric_name or self.dimensions:
                raise ValueError("expression: give the metrics it uses under metrics:, not namespace/metric_name")
            if not self.metrics:
                raise ValueError("metrics: an expression needs at least one metric (id -> {namespace, metric_name...})")
            bad = sorted(i for i in self.metrics if not _MATH_ID.match(i))
            if bad:
                raise ValueError(f"metrics: ids must start with a lower-case letter ({', '.join(bad)})")
        return self


class HttpHealthQuery(BaseModel):
    """HTTP health as a metric (Argo's ``web`` provider, counted): one measurement sends every check ``probes``
    times; its value is the share of those requests that failed (no answer, another status, a body without the
    expected text), in %. Blue-green's bake builds it from ``health_checks`` and judges it with ``success: "<=
    <health_failure_limit>"``. The samples are 1 per failed request and 0 per passed one, in order."""

    model_config = ConfigDict(extra="forbid")

    provider: Literal["http"] = "http"
    checks: list[HttpCheck] = Field(min_length=1)
    probes: int = Field(1, ge=1, le=100, description="requests per check in one measurement")

    def worst_case(self) -> timedelta:
        """How long one measurement may take when every request runs into its timeout (they are sent in turn)."""
        return timedelta(seconds=self.probes * sum(c.timeout_seconds for c in self.checks))


MetricQuery = Annotated[Union[PrometheusQuery, CloudWatchQuery, HttpHealthQuery], Field(discriminator="provider")]


_BOUND = re.compile(
    r"^\s*(?:canary\s*)?(<=|>=|<|>)\s*(?:(\d+(?:\.\d+)?)\s*[x*×]\s*)?stable\s*(?:([+-])\s*(\d+(?:\.\d+)?))?\s*$"
)


class Comparison(BaseModel):
    """Judge the canary against the stable version measured over the same window (Kayenta's model).

    The stable query is the metric's own query rendered with ``baseline_args`` laid over the analysis arguments
    (default ``{version: "{{stable_version}}"}``: the version label or dimension swapped; for ALB target-group
    metrics ``{target_group: "{{stable_target_group}}"}``). Each side's samples are the values of the query's
    window (CloudWatch: one per period; Prometheus: a range query at ``step``).

    - ``mode: bound``: ``mean(canary) <op> factor x mean(stable) + offset``, written ``bound: "<= 1.5 x stable +
      0.1"``;
    - ``mode: mann-whitney``: Mann-Whitney U over both sides' samples; the canary fails when it is worse (``worse:
      higher`` or ``lower``) with one-sided significance ``1 - confidence`` AND its mean differs from stable's by
      more than ``tolerance`` (relative: 0.1 = 10 %), as Kayenta's classifier does.
    Fewer than ``min_samples`` values on either side is Inconclusive.
    """

    model_config = ConfigDict(extra="forbid")

    against: Literal["stable"] = "stable"
    mode: Literal["bound", "mann-whitney"] = "bound"
    op: Literal["<", "<=", ">", ">="] = "<="
    factor: float = Field(1.0, gt=0)
    offset: float = 0.0
    worse: Literal["higher", "lower"] = "higher"
    confidence: float = Field(0.95, gt=0.5, lt=1)
    tolerance: float = Field(0.0, ge=0)
    min_samples: int = Field(3, ge=1, description="values needed on EACH side, else Inconclusive")
    baseline_args: dict[str, str] = Field(default_factory=lambda: {"version": "{{stable_version}}"})

    @model_validator(mode="before")
    @classmethod
    def _parse_bound(cls, data: Any) -> Any:
        if isinstance(data, dict) and "bound" in data:
            data = dict(data)
            bound = data.pop("bound")
            match = _BOUND.match(str(bound))
            if not match:
                raise ValueError(f"bound: {bound!r} is not a bound (write it like '<= 1.5 x stable + 0.1')")
            op, factor, sign, offset = match.groups()
            data.setdefault("mode", "bound")
            data.update(op=op, factor=float(factor or 1), offset=(-1 if sign == "-" else 1) * float(offset or 0))
        return data

    @field_validator("baseline_args")
    @classmethod
    def _swaps(cls, value: dict[str, str]) -> dict[str, str]:
        if not value:
            raise ValueError("baseline_args: give at least one argument to swap for the stable query")
        return value

    def __str__(self) -> str:
        if self.mode == "bound":
            offset = f" {'+' if self.offset >= 0 else '-'} {abs(self.offset):g}" if self.offset else ""
            return f"canary {self.op} {self.factor:g} x stable{offset}"
        return f"canary not {self.worse} than stable (Mann-Whitney, {self.confidence:g} confidence, tolerance {self.tolerance:g})"


class MetricSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    query: MetricQuery
    success: Condition | None = Field(None, description="absolute condition on the canary's value")
    compare: Comparison | None = Field(None, description="relative judgement against the stable version")
    unit: str = ""
    interval: Duration = timedelta(minutes=1)
    initial_delay: Duration = Field(timedelta(0), description="wait this long before the first interval starts")
    count: int | None = Field(None, ge=1, description="measure this many times, then stop measuring this metric")
    dry_run: bool = Field(False, description="measured and shown, never deciding the verdict")
    critical: bool = Field(False, description="with template scoring: a failure fails the analysis whatever the score")
    failure_limit: int = Field(1, ge=0, description="failed measurements tolerated; one more fails the analysis")
    inconclusive_limit: int = Field(2, ge=0, description="inconclusive measurements tolerated before asking a person")
    consecutive_error_limit: int = Field(4, ge=0, description="consecutive provider errors tolerated")

    @field_validator("interval")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("interval must be positive")
        return value

    @field_validator("initial_delay")
    @classmethod
    def _not_negative(cls, value: timedelta) -> timedelta:
        if value < timedelta(0):
            raise ValueError("initial_delay must not be negative")
        return value

    @model_validator(mode="after")
    def _judged(self) -> "MetricSpec":
        if self.success is None and self.compare is None:
            raise ValueError(f"metric {self.name!r}: give success (an absolute condition) and/or compare (against stable)")
        if self.compare is not None and isinstance(self.query, HttpHealthQuery):
            raise ValueError(f"metric {self.name!r}: an http query is judged by success, not compared with stable")
        return self

    def criterion(self) -> str:
        """How this metric is judged, for people: ``< 0.5`` and/or ``canary <= 1.5 x stable + 0.1``."""
        return " and ".join(str(c) for c in (self.success, self.compare) if c is not None)


class Scoring(BaseModel):
    """Kayenta's score: 100 x deciding metrics not Failed / deciding metrics. ``score < marginal`` fails the
    analysis at once, ``marginal <= score < pass`` is Inconclusive (a person decides) when the run completes; a
    ``critical`` metric that fails fails the analysis whatever the score."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    pass_score: float = Field(95, alias="pass", ge=0, le=100)
    marginal: float = Field(75, ge=0, le=100)

    @model_validator(mode="after")
    def _ordered(self) -> "Scoring":
        if self.marginal > self.pass_score:
            raise ValueError(f"scoring: marginal ({self.marginal:g}) must not exceed pass ({self.pass_score:g})")
        return self


class AnalysisTemplate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    metrics: list[MetricSpec] = Field(min_length=1)
    scoring: Scoring | None = Field(None, description="judge by score (Kayenta) instead of 'any failed metric fails'")

    @model_validator(mode="after")
    def _unique(self) -> "AnalysisTemplate":
        names = [m.name for m in self.metrics]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"metric names must be unique in a template: {', '.join(dupes)}")
        if all(m.dry_run for m in self.metrics):
            raise ValueError("metrics: every metric is dry_run; at least one must decide")
        return self


class MeasureInput(BaseModel):
    """Input of the ``measure_metric`` activity: one metric, and the arguments its query is templated with."""

    metric: MetricSpec
    args: dict[str, str] = Field(default_factory=dict)


def baseline_args(compare: Comparison, args: dict[str, str]) -> dict[str, str]:
    """The arguments of the stable query: the analysis arguments with ``compare.baseline_args`` laid over them
    (their own ``{{...}}`` rendered from the analysis arguments: ``version: "{{stable_version}}"``)."""
    return {**args, **{k: render(v, args) for k, v in compare.baseline_args.items()}}


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
    baseline: float | None = Field(None, description="the stable version's value (compared metrics)")
    samples: list[float] = Field(
        default_factory=list,
        description="compared metrics: the canary's window samples; HTTP health: 1 per failed request, 0 per passed",
    )
    baseline_samples: list[float] = Field(default_factory=list, description="compared metrics: the stable's samples")


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
    baselines: list[float | None] = Field(default_factory=list, description="compared metrics: stable's values")
    dry_run: bool = False


class AnalysisVerdict(BaseModel):
    phase: VerdictPhase
    reason: str = ""
    metric: str | None = Field(None, description="the metric that decided a non-successful verdict")
    condition: str | None = None
    values: list[float | None] = Field(default_factory=list, description="that metric's measured values")
    metrics: list[MetricVerdict] = Field(default_factory=list)
    score: float | None = Field(None, description="with template scoring: 100 x deciding metrics not Failed / all")


# --------------------------------------------------------------------------------------------- pure functions
def render(text: str, args: dict[str, str]) -> str:
    """Replace ``{{name}}`` by ``args[name]``; a missing argument is an error a person must fix."""

    def sub(match: re.Match[str]) -> str:
        key = match.group(1)
        if key not in args:
            raise KeyError(f"query uses {{{{{key}}}}} but the analysis has no argument {key!r} (has: {', '.join(sorted(args)) or 'none'})")
        return args[key]

    return _ARG.sub(sub, text)


def classify(condition: Condition | None, value: float | None) -> MeasurementPhase:
    """Judge one value: None or NaN is Inconclusive (no data), else Successful if the condition holds (or there is
    no absolute condition)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "Inconclusive"
    return "Successful" if condition is None or condition.holds(value) else "Failed"


class MannWhitney(BaseModel):
    """The result of a Mann-Whitney U test of x against y."""

    u: float = Field(description="U of x: the number of pairs (x_i, y_j) with x_i > y_j, ties counting 1/2")
    p_greater: float = Field(description="one-sided p-value of 'x tends to be greater than y'")
    p_less: float = Field(description="one-sided p-value of 'x tends to be less than y'")
    p_two_sided: float
    exact: bool


def _exact_counts(n1: int, n2: int) -> list[int]:
    """How many of the C(n1+n2, n1) orderings give each U = 0..n1*n2 (no ties): the exact null distribution,
    by the recurrence f(i, j, u) = f(i-1, j, u-j) + f(i, j-1, u)."""
    table: dict[tuple[int, int], list[int]] = {}
    for i in range(n1 + 1):
        for j in range(n2 + 1):
            if i == 0 or j == 0:
                table[i, j] = [1]
                continue
            row = [0] * (i * j + 1)
            for u, c in enumerate(table[i - 1, j]):
                row[u + j] += c
            for u, c in enumerate(table[i, j - 1]):
                row[u] += c
            table[i, j] = row
    return table[n1, n2]


def mann_whitney_u(x: Sequence[float], y: Sequence[float]) -> MannWhitney:
    """Mann-Whitney U test (Wilcoxon rank-sum) of x against y, without scipy.

    Exact null distribution when there are no ties and both samples have at most 20 values (as scipy's ``auto``);
    otherwise the normal approximation with tie correction and continuity correction. The two-sided p-value is
    twice the smaller one-sided one, at most 1 (scipy's convention).
    """
    n1, n2 = len(x), len(y)
    if n1 == 0 or n2 == 0:
        raise ValueError("Mann-Whitney U needs at least one value on each side")
    u = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a in x for b in y)
    pooled = [*x, *y]
    ties = [pooled.count(v) for v in set(pooled)]
    if all(t == 1 for t in ties) and n1 <= 20 and n2 <= 20:
        counts = _exact_counts(n1, n2)
        total = sum(counts)
        k = int(round(u))
        p_greater = sum(counts[k:]) / total
        p_less = sum(counts[: k + 1]) / total
        exact = True
    else:
        n = n1 + n2
        mean = n1 * n2 / 2
        var = n1 * n2 / 12 * ((n + 1) - sum(t**3 - t for t in ties) / (n * (n - 1)))
        if var <= 0:  # every value equal: no evidence either way
            return MannWhitney(u=u, p_greater=1.0, p_less=1.0, p_two_sided=1.0, exact=False)
        sd = math.sqrt(var)
        p_greater = 0.5 * math.erfc((u - mean - 0.5) / sd / math.sqrt(2))
        p_less = 0.5 * math.erfc((mean - u - 0.5) / sd / math.sqrt(2))
        exact = False
    p_greater, p_less = min(p_greater, 1.0), min(p_less, 1.0)
    return MannWhitney(u=u, p_greater=p_greater, p_less=p_less, p_two_sided=min(1.0, 2 * min(p_greater, p_less)), exact=exact)


class ComparisonResult(BaseModel):
    phase: MeasurementPhase
    canary: float | None = None
    stable: float | None = None
    message: str


def _clean(values: Sequence[float | None]) -> list[float]:
    return [float(v) for v in values if v is not None and not math.isnan(float(v))]


def compare_samples(compare: Comparison, canary: Sequence[float | None], stable: Sequence[float | None]) -> ComparisonResult:
    """The comparative judge (pure): the canary's samples against the stable version's over the same window."""
    c, s = _clean(canary), _clean(stable)
    c_mean = math.fsum(c) / len(c) if c else None
    s_mean = math.fsum(s) / len(s) if s else None
    if c_mean is None or s_mean is None or len(c) < compare.min_samples or len(s) < compare.min_samples:
        return ComparisonResult(
            phase="Inconclusive", canary=c_mean, stable=s_mean,
            message=f"too few samples: canary {len(c)}, stable {len(s)}, need {compare.min_samples} each",
        )
    if compare.mode == "bound":
        limit = compare.factor * s_mean + compare.offset
        ok = _OPS[compare.op](c_mean, limit)
        return ComparisonResult(
            phase="Successful" if ok else "Failed", canary=c_mean, stable=s_mean,
            message=f"canary {c_mean:g} vs stable {s_mean:g}: {compare.op} {limit:g} ({compare}): {'met' if ok else 'not met'}",
        )
    test = mann_whitney_u(c, s)
    p = test.p_greater if compare.worse == "higher" else test.p_less
    alpha = 1 - compare.confidence
    shift = (c_mean - s_mean) if compare.worse == "higher" else (s_mean - c_mean)
    failed = p < alpha and shift > compare.tolerance * abs(s_mean)
    return ComparisonResult(
        phase="Failed" if failed else "Successful", canary=c_mean, stable=s_mean,
        message=(
            f"canary mean {c_mean:g} vs stable {s_mean:g} (n={len(c)}/{len(s)}): Mann-Whitney U={test.u:g}, "
            f"p={p:.3g} for '{compare.worse}' (alpha {alpha:.3g}), tolerance {compare.tolerance:g}: "
            + ("canary worse" if failed else "no significant degradation")
        ),
    )


def judge_measurement(
    spec: MetricSpec, canary: Sequence[float | None], stable: Sequence[float | None] | None = None
) -> ComparisonResult:
    """One measurement's phase from its samples (oldest first): the absolute condition on the latest canary value
    and, for a compared metric, the comparison with the stable samples. A failed absolute condition fails."""
    latest = next((v for v in reversed(canary) if v is not None and not math.isnan(float(v))), None)
    phase = classify(spec.success, latest)
    if spec.compare is None:
        message = "no data" if phase == "Inconclusive" else f"{latest:g} {spec.success}: {phase.lower()}"
        return ComparisonResult(phase=phase, canary=latest, message=message)
    judged = compare_samples(spec.compare, canary, stable or [])
    if spec.success is not None and phase == "Failed":
        judged = judged.model_copy(update={"phase": "Failed", "message": f"{latest:g} {spec.success}: failed; {judged.message}"})
    return judged


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
        condition=spec.criterion(),
        successful=counts["Successful"],
        failed=counts["Failed"],
        inconclusive=counts["Inconclusive"],
        errors=counts["Error"],
        consecutive_errors=consecutive,
        values=[m.value for m in mine],
        baselines=[m.baseline for m in mine] if spec.compare else [],
        dry_run=spec.dry_run,
    )


def assess(template: AnalysisTemplate, measurements: list[Measurement], *, complete: bool = False) -> AnalysisVerdict:
    """The analysis verdict: the worst deciding metric verdict (Failed > Error > Inconclusive > Running >
    Successful); dry-run metrics are judged and shown but never decide. With ``template.scoring`` (Kayenta) a
    Failed metric decides through the score, or at once when it is ``critical``."""
    verdicts = [judge_metric(spec, measurements, complete=complete) for spec in template.metrics]
    specs = {s.name: s for s in template.metrics}
    deciding = [v for v in verdicts if not v.dry_run]
    failed = [v for v in deciding if v.phase == "Failed"]
    score: float | None = None
    scored = deciding
    if template.scoring is not None:
        score = 100 * (len(deciding) - len(failed)) / len(deciding)
        critical = [v for v in failed if specs[v.metric].critical]
        if critical:
            return _verdict(template, "Failed", critical[0], verdicts, score, f"critical metric failed (score {score:g})")
        if score < template.scoring.marginal:
            return _verdict(template, "Failed", failed[0], verdicts, score,
                            f"score {score:g} < marginal {template.scoring.marginal:g} ({', '.join(v.metric for v in failed)} failed)")
        scored = [v for v in deciding if v.phase != "Failed"]  # a non-critical failure counts through the score only
    worst = max(scored, key=lambda v: _SEVERITY[v.phase], default=None)
    phase = worst.phase if worst is not None else ("Successful" if complete else "Running")
    if phase == "Successful" and template.scoring is not None and score is not None and score < template.scoring.pass_score:
        return _verdict(template, "Inconclusive", failed[0], verdicts, score,
                        f"marginal score {score:g} (pass {template.scoring.pass_score:g}, marginal {template.scoring.marginal:g})")
    if worst is None or phase in ("Running", "Successful"):
        done = "all metrics met their conditions" if phase == "Successful" else "within limits so far"
        if score is not None:
            done += f" (score {score:g})"
        return AnalysisVerdict(phase=phase, reason=f"{template.name}: {done}", metrics=verdicts, score=score)
    spec = specs[worst.metric]
    if worst.phase == "Failed":
        why = f"{worst.failed} failed measurement(s), limit {spec.failure_limit}"
    elif worst.phase == "Error":
        why = f"{worst.consecutive_errors} consecutive provider error(s), limit {spec.consecutive_error_limit}"
    elif worst.inconclusive > spec.inconclusive_limit:
        why = f"{worst.inconclusive} inconclusive measurement(s), limit {spec.inconclusive_limit}"
    else:
        why = "no successful measurement before the analysis ended"
    return _verdict(template, worst.phase, worst, verdicts, score, why)


def _verdict(
    template: AnalysisTemplate, phase: VerdictPhase, worst: MetricVerdict, verdicts: list[MetricVerdict], score: float | None, why: str
) -> AnalysisVerdict:
    spec = next(s for s in template.metrics if s.name == worst.metric)

    def show(values: list[float | None]) -> str:
        return ", ".join("no data" if v is None or math.isnan(v) else f"{v:g}" for v in values[-6:])

    stable = f"; stable: [{show(worst.baselines)}]" if worst.baselines else ""
    reason = (
        f"{spec.name} {phase.lower()}: condition {spec.criterion()}{spec.unit and ' ' + spec.unit}; {why}; "
        f"values: [{show(worst.values)}]{stable}"
    )
    return AnalysisVerdict(
        phase=phase, reason=reason, metric=spec.name, condition=spec.criterion(), values=list(worst.values),
        metrics=verdicts, score=score,
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


def alb_args(listener_arn: str | None, stable_target_group: str | None, canary_target_group: str | None) -> dict[str, str]:
    """The CloudWatch dimension values of an ALB and its target groups, from their ARNs: ``load_balancer``
    (``app/<name>/<id>``), ``target_group`` (the canary's ``targetgroup/<name>/<id>``), ``stable_target_group``.
    What ``alb_template()`` queries with; ARNs not given (or names, before a lookup) give no argument."""
    args: dict[str, str] = {}
    if listener_arn and ":listener/" in listener_arn:
        args["load_balancer"] = listener_arn.split(":listener/", 1)[1].rsplit("/", 1)[0]
    for key, arn in (("target_group", canary_target_group), ("stable_target_group", stable_target_group)):
        if arn and ":targetgroup/" in arn:
            args[key] = "targetgroup/" + arn.split(":targetgroup/", 1)[1]
    return args


def alb_template(name: str = "alb", *, compare: bool = False, region: str | None = None) -> AnalysisTemplate:
    """The policy's criteria from the ALB's own CloudWatch metrics (namespace ``AWS/ApplicationELB``, dimensions
    ``LoadBalancer`` and ``TargetGroup``), read with GetMetricData: error rate = 100 x ``HTTPCode_Target_5XX_Count``
    / ``RequestCount`` (metric math) < 0.5 %, ``TargetResponseTime`` p95 < 1.5 s and p99 < 2 s.

    ``compare=True`` judges against the stable target group over the same window instead of fixed thresholds:
    error rate ``<= 1.5 x stable + 0.1`` (percentage points), latency p95 and p99 not significantly higher than
    stable's by more than 10 % (Mann-Whitney U, 95 % confidence), each needing 3 one-minute samples a side."""
    dims = {"LoadBalancer": "{{load_balancer}}", "TargetGroup": "{{target_group}}"}
    swap = {"target_group": "{{stable_target_group}}"}

    def alb(metric: str, statistic: str) -> CloudWatchMetric:
        return CloudWatchMetric(namespace="AWS/ApplicationELB", metric_name=metric, dimensions=dims, statistic=statistic)

    def latency(statistic: str) -> CloudWatchQuery:
        return CloudWatchQuery(
            namespace="AWS/ApplicationELB", metric_name="TargetResponseTime", dimensions=dims, statistic=statistic, region=region
        )

    errors = CloudWatchQuery(
        expression="100 * errors / requests",
        metrics={"errors": alb("HTTPCode_Target_5XX_Count", "Sum"), "requests": alb("RequestCount", "Sum")},
        region=region,
    )
    if not compare:
        metrics = [
            MetricSpec(name="error-rate", query=errors, success=Condition(op="<", threshold=0.5), unit="%"),
            MetricSpec(name="latency-p95", query=latency("p95"), success=Condition(op="<", threshold=1.5), unit="s"),
            MetricSpec(name="latency-p99", query=latency("p99"), success=Condition(op="<", threshold=2.0), unit="s"),
        ]
    else:
        slower = Comparison(mode="mann-whitney", worse="higher", tolerance=0.1, baseline_args=swap)
        metrics = [
            MetricSpec(
                name="error-rate", query=errors, unit="%",
                compare=Comparison(mode="bound", op="<=", factor=1.5, offset=0.1, baseline_args=swap),
            ),
            MetricSpec(name="latency-p95", query=latency("p95"), compare=slower, unit="s"),
            MetricSpec(name="latency-p99", query=latency("p99"), compare=slower, unit="s"),
        ]
    return AnalysisTemplate(name=name, metrics=metrics)


def stock_templates() -> dict[str, AnalysisTemplate]:
    """Templates a plan may name without declaring them: ``alb`` (the ALB's own metrics against the policy's
    thresholds), ``alb-vs-stable`` (the same metrics judged against the stable target group) and ``prometheus``
    (the policy's criteria over http_requests_total and the latency histogram). ``default`` is the canary input's
    own default (the demo's CloudWatch namespace: moto, the local AWS, computes neither percentiles nor ALB metrics)."""
    return {
        "alb": alb_template("alb"),
        "alb-vs-stable": alb_template("alb-vs-stable", compare=True),
        "prometheus": prometheus_template("prometheus"),
    }
