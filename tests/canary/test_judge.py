"""The comparative judge (core/analysis.py, pure): canary against stable over the same window, on recorded samples;
Mann-Whitney U against known values; the template schema (clear errors naming the field); dry_run, scoring and
critical metrics in ``assess``."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from pydantic import ValidationError

from core.analysis import (
    AnalysisTemplate,
    CloudWatchQuery,
    Comparison,
    Condition,
    Measurement,
    MetricSpec,
    PrometheusQuery,
    alb_args,
    alb_template,
    assess,
    baseline_args,
    compare_samples,
    judge_measurement,
    mann_whitney_u,
)

RECORDED = json.loads((Path(__file__).parent / "data" / "recorded_samples.json").read_text())
T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
BOUND = Comparison.model_validate({"bound": "<= 1.5 x stable + 0.1"})
MW = Comparison(mode="mann-whitney", worse="higher", tolerance=0.1)


def samples(window: str, metric: str) -> tuple[list[float | None], list[float | None]]:
    return RECORDED[window][metric]["canary"], RECORDED[window][metric]["stable"]


# ------------------------------------------------------------------------------------------- Mann-Whitney U
def test_mann_whitney_matches_known_values() -> None:
    # scipy.stats.mannwhitneyu's documented example (scipy 1.17.1): U = 17, exact two-sided p = 1/9,
    # asymptotic (continuity-corrected) p = 0.11134688653314041
    males, females = [19, 22, 16, 29, 24], [20, 11, 17, 12]
    exact = mann_whitney_u(males, females)
    assert exact.exact and exact.u == 17
    assert exact.p_two_sided == pytest.approx(1 / 9, rel=1e-12)
    assert exact.p_greater == pytest.approx(7 / 126, rel=1e-12)
    # with ties the normal approximation with tie correction applies; values from scipy 1.17.1 (method="asymptotic")
    x, y = [1.2, 1.4, 1.4, 1.9, 2.0, 2.2, 2.2, 2.5], [1.0, 1.1, 1.2, 1.3, 1.4, 1.4, 1.6]
    tied = mann_whitney_u(x, y)
    assert not tied.exact and tied.u == 47.5
    assert tied.p_greater == pytest.approx(0.013115755456365752, rel=1e-9)
    assert tied.p_less == pytest.approx(0.9903517981830459, rel=1e-9)
    assert tied.p_two_sided == pytest.approx(0.026231510912731505, rel=1e-9)
    # beyond 20 values a side scipy's "auto" goes asymptotic too: 0.03580842770046332
    big = mann_whitney_u(list(range(3, 28)), [v + 0.5 for v in range(22)])
    assert not big.exact and big.u == 360 and big.p_greater == pytest.approx(0.03580842770046332, rel=1e-9)
    # fully separated small samples: the exact one-sided p is 1/C(6,3)
    assert mann_whitney_u([1, 2, 3], [4, 5, 6]).p_less == pytest.approx(1 / 20)
    assert mann_whitney_u([5, 5, 5], [5, 5, 5]).p_two_sided == 1.0  # no evidence either way
    with pytest.raises(ValueError):
        mann_whitney_u([], [1.0])


# ------------------------------------------------------------------------------------------- on recorded samples
@pytest.mark.parametrize("compare", [BOUND, MW], ids=["bound", "mann-whitney"])
def test_a_globally_bad_hour_passes(compare: Comparison) -> None:
    canary, stable = samples("bad_hour", "error_rate")
    judged = compare_samples(compare, canary, stable)
    assert judged.phase == "Successful", judged.message
    # the same canary against the fixed policy threshold would have been rolled back
    assert not Condition.model_validate("< 0.5").holds(judged.canary or 0)
    canary, stable = samples("bad_hour", "latency_p95")
    assert compare_samples(compare, canary, stable).phase == "Successful"


@pytest.mark.parametrize("compare", [BOUND, MW], ids=["bound", "mann-whitney"])
def test_a_relatively_bad_canary_fails_under_a_loose_threshold(compare: Comparison) -> None:
    canary, stable = samples("relatively_bad_canary", "error_rate")
    judged = compare_samples(compare, canary, stable)
    assert judged.phase == "Failed", judged.message
    assert Condition.model_validate("< 0.5").holds(judged.canary or 1)  # the fixed threshold let it through
    assert judged.stable == pytest.approx(0.095) and judged.canary == pytest.approx(0.384)
    canary, stable = samples("relatively_bad_canary", "latency_p95")
    assert compare_samples(compare, canary, stable).phase == "Failed"


@pytest.mark.parametrize("compare", [BOUND, MW], ids=["bound", "mann-whitney"])
def test_too_few_samples_is_inconclusive(compare: Comparison) -> None:
    for metric in ("error_rate", "latency_p95"):  # 2 canary samples; 2 after dropping a missing one
        canary, stable = samples("too_few", metric)
        judged = compare_samples(compare, canary, stable)
        assert judged.phase == "Inconclusive" and "too few samples: canary 2" in judged.message
    assert compare_samples(compare, [1.0, 1.0, 1.0], []).phase == "Inconclusive"  # the stable side has none


def test_bound_edges_and_mann_whitney_tolerance() -> None:
    # exactly at the bound passes with <=, fails with <
    ratio = Comparison.model_validate({"bound": "<= 1.5 x stable"})
    assert compare_samples(ratio, [3.0] * 4, [2.0] * 3).phase == "Successful"
    strict = Comparison.model_validate({"bound": "< 1.5 x stable"})
    assert compare_samples(strict, [3.0] * 4, [2.0] * 3).phase == "Failed"
    assert compare_samples(ratio, [3.0, 3.0, 3.25], [2.0] * 3).phase == "Failed"
    # "lower is worse" (throughput, success rate): a canary far below stable fails
    success = Comparison.model_validate({"bound": ">= 0.99 x stable"})
    assert compare_samples(success, [97.0, 97.5, 96.8], [99.9, 99.8, 99.9]).phase == "Failed"
    # significantly higher but within the tolerance passes; beyond it fails
    stable = [1.00, 1.01, 0.99, 1.02, 1.00, 0.98]
    slightly = [1.04, 1.05, 1.03, 1.06, 1.05, 1.04]
    assert mann_whitney_u(slightly, stable).p_greater < 0.05
    assert compare_samples(MW, slightly, stable).phase == "Successful"
    assert compare_samples(MW.model_copy(update={"tolerance": 0.01}), slightly, stable).phase == "Failed"
    lower = Comparison(mode="mann-whitney", worse="lower")
    assert compare_samples(lower, stable, slightly).phase == "Failed"
    assert compare_samples(lower, slightly, stable).phase == "Successful"


def test_judge_measurement_applies_the_absolute_condition_too() -> None:
    both = MetricSpec(name="error-rate", query=PrometheusQuery(query="x"), success=Condition.model_validate("< 5"), compare=BOUND)
    canary, stable = samples("bad_hour", "error_rate")
    assert judge_measurement(both, canary, stable).phase == "Successful"
    judged = judge_measurement(both, [6.0, 6.2, 6.1], [6.0, 6.1, 6.2])  # relatively fine, absolutely too high
    assert judged.phase == "Failed" and "< 5: failed" in judged.message
    plain = MetricSpec(name="m", query=PrometheusQuery(query="x"), success=Condition.model_validate("< 5"))
    assert judge_measurement(plain, [9.0, 1.0]).phase == "Successful"  # the latest value counts
    assert judge_measurement(plain, []).message == "no data"


# ------------------------------------------------------------------------------------------- schema
def test_schema_errors_name_the_field() -> None:
    cases = [
        ({"name": "m", "query": {"provider": "prometheus", "query": "x"}}, "give success"),
        ({"name": "m", "query": {"provider": "prometheus", "query": "x"}, "compare": {"bound": "1.5 stable"}}, "bound: '1.5 stable' is not a bound"),
        ({"name": "m", "query": {"provider": "prometheus", "query": "x"}, "compare": {"mode": "mann-whitney", "confidence": 1.5}}, "confidence"),
        ({"name": "m", "query": {"provider": "prometheus", "query": "x"}, "compare": {"min_samples": 0}}, "min_samples"),
        ({"name": "m", "query": {"provider": "prometheus", "query": "x"}, "compare": {"baseline_args": {}}}, "baseline_args"),
        ({"name": "m", "query": {"provider": "prometheus", "query": "x"}, "success": "< 1", "initial_delay": "-1m"}, "initial_delay"),
        ({"name": "m", "query": {"provider": "prometheus", "query": "x"}, "success": "< 1", "count": 0}, "count"),
        ({"name": "m", "query": {"provider": "cloudwatch", "namespace": "A", "metric_name": "B", "statistic": "p"}, "success": "< 1"}, "statistic"),
        ({"name": "m", "query": {"provider": "cloudwatch", "namespace": "A"}, "success": "< 1"}, "metric_name required"),
        ({"name": "m", "query": {"provider": "cloudwatch", "expression": "a / b"}, "success": "< 1"}, "metrics: an expression needs"),
        (
            {"name": "m", "query": {"provider": "cloudwatch", "expression": "a", "metrics": {"A": {"namespace": "N", "metric_name": "M"}}}, "success": "< 1"},
            "metrics: ids must start with a lower-case letter",
        ),
    ]
    for raw, needle in cases:
        with pytest.raises(ValidationError) as err:
            MetricSpec.model_validate(raw)
        assert needle in str(err.value), (raw, str(err.value))
    metric = {"name": "m", "query": {"provider": "prometheus", "query": "x"}, "success": "< 1"}
    with pytest.raises(ValidationError, match="scoring: marginal"):
        AnalysisTemplate.model_validate({"name": "t", "metrics": [metric], "scoring": {"pass": 50, "marginal": 80}})
    with pytest.raises(ValidationError, match="every metric is dry_run"):
        AnalysisTemplate.model_validate({"name": "t", "metrics": [{**metric, "dry_run": True}]})
    # written in YAML as a template's users write it
    spec = MetricSpec.model_validate(
        {"name": "m", "query": {"provider": "prometheus", "query": "x"}, "compare": {"bound": "<= 2 * stable - 0.5"}, "initial_delay": "2m", "count": 5}
    )
    assert (spec.compare and (spec.compare.factor, spec.compare.offset)) == (2, -0.5)
    assert spec.criterion() == "canary <= 2 x stable - 0.5" and spec.initial_delay == timedelta(minutes=2)


def test_the_stable_query_swaps_the_version_or_target_group() -> None:
    args = {"service": "checkout", "version": "v2", "stable_version": "stable", "target_group": "targetgroup/c/2",
            "stable_target_group": "targetgroup/s/1"}
    assert baseline_args(Comparison(), args)["version"] == "stable"
    swapped = baseline_args(alb_template(compare=True).metrics[0].compare or Comparison(), args)
    assert swapped["target_group"] == "targetgroup/s/1" and swapped["version"] == "v2"
    with pytest.raises(KeyError, match="no argument 'stable_version'"):
        baseline_args(Comparison(), {"version": "v2"})
    assert alb_args(
        "arn:aws:elasticloadbalancing:us-east-1:123456789012:listener/app/demo-alb/50dc6c495c0c9188/f2f7dc8efc522ab2",
        "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/checkout-stable/73e2d6bc24d8a067",
        "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/checkout-canary/943f017f100becff",
    ) == {
        "load_balancer": "app/demo-alb/50dc6c495c0c9188",
        "target_group": "targetgroup/checkout-canary/943f017f100becff",
        "stable_target_group": "targetgroup/checkout-stable/73e2d6bc24d8a067",
    }
    assert alb_args(None, "checkout-stable", "checkout-canary") == {}  # names before the lookup: nothing to give


# ------------------------------------------------------------------------------------------- assess
def metric(name: str, **kw) -> MetricSpec:
    return MetricSpec(name=name, query=CloudWatchQuery(namespace="N", metric_name=name), success=Condition.model_validate("< 1"), **kw)


def ms(name: str, *phases: str) -> list[Measurement]:
    return [Measurement(metric=name, phase=p, value=0.5, at=T0 + timedelta(minutes=i)) for i, p in enumerate(phases)]


def test_dry_run_metrics_are_shown_but_never_decide() -> None:
    t = AnalysisTemplate(name="t", metrics=[metric("a"), metric("b", dry_run=True)])
    verdict = assess(t, ms("a", "Successful", "Successful") + ms("b", "Failed", "Failed", "Error"), complete=True)
    assert verdict.phase == "Successful"
    b = next(v for v in verdict.metrics if v.metric == "b")
    assert b.dry_run and b.phase == "Failed" and b.failed == 2
    assert assess(t, ms("a", "Failed", "Failed")).phase == "Failed"


def test_scoring_pass_marginal_and_critical() -> None:
    four = [metric(n) for n in "abc"] + [metric("d", critical=True)]
    t = AnalysisTemplate.model_validate({"name": "t", "metrics": [m.model_dump() for m in four], "scoring": {"pass": 95, "marginal": 70}})
    ok = {n: ms(n, "Successful") for n in "abcd"}
    one_bad = ok["b"] + ok["c"] + ok["d"] + ms("a", "Failed", "Failed")
    assert assess(t, one_bad).phase == "Running"  # 75: marginal, decided when the run completes
    marginal = assess(t, one_bad, complete=True)
    assert marginal.phase == "Inconclusive" and marginal.score == 75 and "marginal score 75" in marginal.reason
    two_bad = ok["c"] + ok["d"] + ms("a", "Failed", "Failed") + ms("b", "Failed", "Failed")
    failed = assess(t, two_bad)
    assert failed.phase == "Failed" and failed.score == 50 and "score 50 < marginal 70" in failed.reason
    critical = assess(t, ok["a"] + ok["b"] + ok["c"] + ms("d", "Failed", "Failed"))
    assert critical.phase == "Failed" and critical.metric == "d" and "critical" in critical.reason
    assert assess(t, [m for n in "abcd" for m in ok[n]], complete=True).phase == "Successful"


def test_a_failed_comparison_names_both_sides() -> None:
    spec = MetricSpec(name="error-rate", query=PrometheusQuery(query="x"), compare=BOUND, unit="%")
    t = AnalysisTemplate(name="t", metrics=[spec])
    failed = [
        Measurement(metric="error-rate", phase="Failed", value=v, baseline=b, at=T0 + timedelta(minutes=i))
        for i, (v, b) in enumerate([(0.38, 0.1), (0.41, 0.09)])
    ]
    verdict = assess(t, failed)
    assert verdict.phase == "Failed" and verdict.condition == "canary <= 1.5 x stable + 0.1"
    assert "values: [0.38, 0.41]; stable: [0.1, 0.09]" in verdict.reason


def test_the_run_report_draws_stable_beside_a_compared_canary() -> None:
    from starters.report import Call, RunData, metric_figures

    t0 = T0
    results = [
        {"metric": "error-rate", "phase": p, "value": v, "baseline": b, "at": (t0 + timedelta(minutes=i)).isoformat()}
        for i, (p, v, b) in enumerate([("Successful", 0.12, 0.1), ("Failed", 0.38, 0.1)])
    ]
    calls = [Call(activity="measure_metrics", result=[r], finished_at=t0 + timedelta(minutes=i)) for i, r in enumerate(results)]
    data = RunData(workflow_id="w", run_id="r", workflow_type="CanaryRamp", started_at=t0, calls=calls)
    (name, fig), = metric_figures(data)
    traces = {trace.name: list(trace.y) for trace in fig.data}
    assert name == "error-rate" and traces["stable"] == [0.1, 0.1] and traces["error-rate"] == [0.12, 0.38]
