"""The pure verdict function: measurements + limits -> Successful / Failed / Inconclusive / Error."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

import pytest

from core.analysis import (
    AnalysisTemplate,
    CloudWatchQuery,
    Condition,
    Measurement,
    MetricSpec,
    PrometheusQuery,
    assess,
    classify,
    default_template,
    render,
)

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def spec(name: str = "error-rate", cond: str = "< 0.5", **limits) -> MetricSpec:
    return MetricSpec(name=name, query=PrometheusQuery(query="up"), success=Condition.model_validate(cond), **limits)


def m(phase: str, value: float | None = None, metric: str = "error-rate", i: int = 0) -> Measurement:
    return Measurement(metric=metric, phase=phase, value=value, at=T0 + timedelta(minutes=i))  # type: ignore[arg-type]


def template(*specs: MetricSpec) -> AnalysisTemplate:
    return AnalysisTemplate(name="t", metrics=list(specs) or [spec()])


@pytest.mark.parametrize(
    "cond,value,expected",
    [
        ("< 0.5", 0.49, "Successful"),
        ("< 0.5", 0.5, "Failed"),  # exactly at the threshold of a strict bound fails
        ("<= 0.5", 0.5, "Successful"),
        ("> 99", 99.0, "Failed"),
        (">= 99", 99.0, "Successful"),
        ("< 0.5", None, "Inconclusive"),  # no data
        ("< 0.5", math.nan, "Inconclusive"),  # NaN (e.g. 0/0 in PromQL)
        ("< 1.5", -1.0, "Successful"),
    ],
)
def test_classify(cond: str, value: float | None, expected: str) -> None:
    assert classify(Condition.model_validate(cond), value) == expected


def test_condition_parsing_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        Condition.model_validate("about 5")
    assert str(Condition.model_validate("result < 1.5")) == "< 1.5"


def test_no_measurements_is_running_then_inconclusive_at_the_end() -> None:
    assert assess(template(), []).phase == "Running"
    final = assess(template(), [], complete=True)
    assert final.phase == "Inconclusive"
    assert final.metric == "error-rate"


def test_failure_limit_counts_failed_measurements_not_consecutive() -> None:
    t = template(spec(failure_limit=1))
    one = [m("Failed", 0.9, i=0), m("Successful", 0.1, i=1)]
    assert assess(t, one).phase == "Running"
    two = one + [m("Failed", 0.8, i=2)]
    verdict = assess(t, two)
    assert verdict.phase == "Failed"
    assert verdict.metric == "error-rate" and verdict.condition == "< 0.5"
    assert verdict.values == [0.9, 0.1, 0.8]
    assert "2 failed" in verdict.reason and "0.9" in verdict.reason


def test_limits_of_zero_decide_on_the_first_measurement() -> None:
    assert assess(template(spec(failure_limit=0)), [m("Failed", 1.0)]).phase == "Failed"
    assert assess(template(spec(inconclusive_limit=0)), [m("Inconclusive")]).phase == "Inconclusive"
    assert assess(template(spec(consecutive_error_limit=0)), [m("Error")]).phase == "Error"


def test_errors_must_be_consecutive() -> None:
    t = template(spec(consecutive_error_limit=1))
    assert assess(t, [m("Error"), m("Successful", 0.1), m("Error")]).phase == "Running"
    assert assess(t, [m("Successful", 0.1), m("Error"), m("Error")]).phase == "Error"


def test_inconclusive_past_limit() -> None:
    t = template(spec(inconclusive_limit=2))
    assert assess(t, [m("Inconclusive")] * 2).phase == "Running"
    assert assess(t, [m("Inconclusive")] * 3).phase == "Inconclusive"


def test_worst_metric_wins_failed_over_error_over_inconclusive() -> None:
    a, b, c = spec("a", failure_limit=0), spec("b", consecutive_error_limit=0), spec("c", inconclusive_limit=0)
    t = template(a, b, c)
    ms = [m("Failed", 2.0, "a"), m("Error", None, "b"), m("Inconclusive", None, "c")]
    assert assess(t, ms).metric == "a"
    assert assess(t, ms[1:]).metric == "b"
    assert assess(t, ms[2:]).phase == "Inconclusive"


def test_complete_successful_needs_every_metric_measured() -> None:
    t = template(spec("a"), spec("b"))
    good = [m("Successful", 0.1, "a"), m("Successful", 0.2, "b")]
    assert assess(t, good, complete=True).phase == "Successful"
    only_a = [m("Successful", 0.1, "a")]
    verdict = assess(t, only_a, complete=True)
    assert verdict.phase == "Inconclusive" and verdict.metric == "b"


def test_default_template_is_the_policy() -> None:
    t = default_template()
    by_name = {s.name: s for s in t.metrics}
    assert {k: str(v.success) for k, v in by_name.items()} == {
        "error-rate": "< 0.5",
        "latency-p95": "< 1.5",
        "cpu": "< 80",
        "memory": "< 85",
    }
    assert all(s.failure_limit == 1 and s.interval == timedelta(minutes=1) for s in t.metrics)
    assert isinstance(by_name["latency-p95"].query, CloudWatchQuery)
    assert by_name["latency-p95"].query.metric_name == "LatencyP95"


def test_render_templates_and_missing_argument() -> None:
    assert render('x{service="{{service}}",v="{{ version }}"}', {"service": "checkout", "version": "v2"}) == (
        'x{service="checkout",v="v2"}'
    )
    with pytest.raises(KeyError, match="version"):
        render("{{version}}", {})


def test_duplicate_metric_names_refused() -> None:
    with pytest.raises(ValueError, match="unique"):
        AnalysisTemplate(name="t", metrics=[spec("a"), spec("a")])
