"""CloudWatch through GetMetricData: extended statistics (p95/p99) and metric math for ALB target groups against a
wire-format fake (tests/fakes/cloudwatch.py: moto computes neither), and what moto can answer (basic statistics,
the comparative judge on the demo's Version dimension) against moto."""

from __future__ import annotations

import math
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

import boto3
import pytest
from botocore.config import Config
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment

from activities.aws import AwsClients, ElbActivities
from activities.metrics import MetricsActivities
from core.analysis import CloudWatchQuery, Comparison, MeasureInput, MetricSpec, alb_args, alb_template
from core.canary import AlbRouterSpec
from starters.demo_aws import seed_alb
from tests import aws_session, harness
from tests.canary.standins import Recorder
from tests.canary.test_end_to_end import M, meta
from tests.fakes.cloudwatch import CloudWatchFake, cloudwatch_fake
from workflows.canary_ramp import AnalysisStepSpec, CanaryRamp, CanaryRampInput, PlanStep

LB = "app/demo-alb/50dc6c495c0c9188"
CANARY_TG, STABLE_TG = "targetgroup/checkout-canary/943f017f100becff", "targetgroup/checkout-stable/73e2d6bc24d8a067"
ARGS = {"service": "checkout", "version": "v2", "stable_version": "stable", "load_balancer": LB,
        "target_group": CANARY_TG, "stable_target_group": STABLE_TG}
NOW = datetime(2026, 12, 1, 12, 0, 30, tzinfo=timezone.utc)


def acts_for(fake: CloudWatchFake, clock=lambda: NOW) -> MetricsActivities:
    cfg = Config(retries={"max_attempts": 1})

    def client(region: str | None):
        return boto3.client("cloudwatch", region_name=region or "us-east-1", endpoint_url=fake.url, config=cfg,
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    return MetricsActivities(cloudwatch=client, clock=clock)


def measure(acts: MetricsActivities, spec: MetricSpec, args: dict | None = None):
    return ActivityEnvironment().run(acts.measure_metric, MeasureInput(metric=spec, args=ARGS if args is None else args))


def serve(fake: CloudWatchFake, tg: str, minute: int, *, requests: int, errors: int, latencies: list[float]) -> None:
    """One minute of an ALB target group's own metrics, as the ALB publishes them."""
    at = NOW.replace(second=0) - timedelta(minutes=minute) + timedelta(seconds=5)
    dims = {"LoadBalancer": LB, "TargetGroup": tg}
    fake.put("AWS/ApplicationELB", "RequestCount", dims, at, [float(requests)])
    if errors:
        fake.put("AWS/ApplicationELB", "HTTPCode_Target_5XX_Count", dims, at, [float(errors)])
    fake.put("AWS/ApplicationELB", "TargetResponseTime", dims, at, latencies)


def test_alb_template_p95_p99_and_error_rate_by_metric_math() -> None:
    with cloudwatch_fake() as fake:
        latencies = [0.1 * i for i in range(1, 101)]  # 0.1 .. 10.0 s: p95 = 9.5, p99 = 9.9 (nearest rank)
        serve(fake, CANARY_TG, 1, requests=400, errors=2, latencies=[0.2] * 100)
        serve(fake, CANARY_TG, 0, requests=1000, errors=3, latencies=latencies)
        serve(fake, STABLE_TG, 0, requests=9000, errors=900, latencies=[5.0] * 100)  # must not leak in
        acts = acts_for(fake)
        by_name = {m.name: m for m in alb_template().metrics}

        p95 = measure(acts, by_name["latency-p95"])
        assert (p95.phase, p95.value) == ("Failed", 9.5)
        stat = fake.requests[-1]["MetricDataQueries"][0]["MetricStat"]
        assert stat["Stat"] == "p95" and stat["Period"] == 60
        assert stat["Metric"] == {
            "Namespace": "AWS/ApplicationELB",
            "MetricName": "TargetResponseTime",
            "Dimensions": [{"Name": "LoadBalancer", "Value": LB}, {"Name": "TargetGroup", "Value": CANARY_TG}],
        }
        assert fake.requests[-1]["ScanBy"] == "TimestampAscending"
        p99 = measure(acts, by_name["latency-p99"])
        assert math.isclose(p99.value or 0, 9.9) and p99.phase == "Failed"

        error_rate = measure(acts, by_name["error-rate"])
        assert error_rate.phase == "Successful" and math.isclose(error_rate.value or 0, 0.3)  # 100 x 3 / 1000
        queries = fake.requests[-1]["MetricDataQueries"]
        assert [(q["Id"], q["ReturnData"]) for q in queries] == [("errors", False), ("requests", False), ("result", True)]
        assert queries[-1]["Expression"] == "100 * errors / requests"
        assert {q["MetricStat"]["Metric"]["MetricName"]: q["MetricStat"]["Stat"] for q in queries[:2]} == {
            "HTTPCode_Target_5XX_Count": "Sum",
            "RequestCount": "Sum",
        }
        assert error_rate.query.startswith("100 * errors / requests where errors = AWS/ApplicationELB/HTTPCode_Target_5XX_Count Sum")


def test_alb_comparative_template_judges_canary_against_stable_target_group() -> None:
    with cloudwatch_fake() as fake:
        for minute in range(5):  # a bad five minutes for everyone: both target groups around 3 % errors
            serve(fake, STABLE_TG, minute, requests=1000, errors=30 + minute, latencies=[2.0 + 0.01 * minute] * 50)
            serve(fake, CANARY_TG, minute, requests=100, errors=3, latencies=[2.0 + 0.012 * minute] * 50)
        acts = acts_for(fake)
        template = {m.name: m for m in alb_template(compare=True).metrics}
        error_rate = measure(acts, template["error-rate"])
        assert error_rate.phase == "Successful", error_rate.message
        assert math.isclose(error_rate.baseline or 0, 3.2) and math.isclose(error_rate.value or 0, 3.0)
        assert len(error_rate.samples) == len(error_rate.baseline_samples) == 5
        # two reads: the canary's target group, then the same query with the stable's swapped in
        tgs = [q["MetricDataQueries"][0]["MetricStat"]["Metric"]["Dimensions"][1]["Value"] for q in fake.requests[-2:]]
        assert tgs == [CANARY_TG, STABLE_TG]
        assert "canary:" in error_rate.query and "stable: 100 * errors / requests" in error_rate.query
        assert measure(acts, template["latency-p95"]).phase == "Successful"

    with cloudwatch_fake() as fake:
        for minute in range(5):  # the canary is 4x worse and 50 % slower, though under the fixed 0.5 % threshold
            serve(fake, STABLE_TG, minute, requests=10000, errors=10, latencies=[0.40 + 0.01 * minute] * 50)
            serve(fake, CANARY_TG, minute, requests=1000, errors=4, latencies=[0.60 + 0.01 * minute] * 50)
        acts = acts_for(fake)
        template = {m.name: m for m in alb_template(compare=True).metrics}
        error_rate = measure(acts, template["error-rate"])
        assert error_rate.phase == "Failed" and math.isclose(error_rate.value or 0, 0.4), error_rate.message
        latency = measure(acts, template["latency-p95"])
        assert latency.phase == "Failed" and "Mann-Whitney" in latency.message

    with cloudwatch_fake() as fake:  # the canary only just started: two minutes of data
        for minute in range(5):
            serve(fake, STABLE_TG, minute, requests=1000, errors=1, latencies=[0.4] * 50)
        for minute in range(2):
            serve(fake, CANARY_TG, minute, requests=100, errors=0, latencies=[0.4] * 50)
        acts = acts_for(fake)
        latency = measure(acts, {m.name: m for m in alb_template(compare=True).metrics}["latency-p95"])
        assert latency.phase == "Inconclusive" and "too few samples: canary 2, stable 5" in latency.message


def test_getmetricdata_errors_are_error_measurements() -> None:
    with cloudwatch_fake() as fake:
        acts = acts_for(fake)
        bad_math = MetricSpec.model_validate({
            "name": "m",
            "success": "< 1",
            "query": {"provider": "cloudwatch", "expression": "errors / requestz",
                      "metrics": {"errors": {"namespace": "AWS/ApplicationELB", "metric_name": "RequestCount"}}},
        })
        result = measure(acts, bad_math)
        assert result.phase == "Error" and "InvalidParameterValue" in result.message and "requestz" in result.message
        fake.unavailable = True
        down = measure(acts, alb_template().metrics[1])
        assert down.phase == "Error" and "get_metric_data failed" in down.message
        fake.unavailable = False
        missing = measure(acts, alb_template().metrics[1], {"service": "checkout"})
        assert missing.phase == "Error" and "load_balancer" in missing.message
        assert measure(acts, alb_template().metrics[1]).phase == "Inconclusive"  # no datapoints: no data


# --------------------------------------------------------------------------------------------------- moto
def _put(cw, version: str, when: datetime, value: float) -> None:
    cw.put_metric_data(
        Namespace="Demo/Service",
        MetricData=[{
            "MetricName": "ErrorRate",
            "Dimensions": [{"Name": "Service", "Value": "checkout"}, {"Name": "Version", "Value": version}],
            "Timestamp": when,
            "Value": value,
        }],
    )


def test_comparative_judge_against_moto_swaps_the_version_dimension(aws: str) -> None:
    cw = boto3.client("cloudwatch", region_name="us-east-1")
    now = datetime.now(timezone.utc)
    for minute in range(1, 5):
        _put(cw, "stable", now - timedelta(minutes=minute), 2.0 + 0.1 * minute)  # a bad hour for everyone
        _put(cw, "v2", now - timedelta(minutes=minute), 2.2 + 0.1 * minute)
    spec = MetricSpec(
        name="error-rate",
        query=CloudWatchQuery(namespace="Demo/Service", metric_name="ErrorRate", dimensions={"Service": "{{service}}", "Version": "{{version}}"}),
        compare=Comparison.model_validate({"bound": "<= 1.5 x stable + 0.1"}),
    )
    acts = MetricsActivities()
    args = {"service": "checkout", "version": "v2", "stable_version": "stable"}
    judged = ActivityEnvironment().run(acts.measure_metric, MeasureInput(metric=spec, args=args))
    assert judged.phase == "Successful", judged.message
    assert math.isclose(judged.value or 0, 2.45) and math.isclose(judged.baseline or 0, 2.25)
    assert "Version=v2" in judged.query and "Version=stable" in judged.query
    for minute in range(1, 5):
        _put(cw, "v3", now - timedelta(minutes=minute), 4.0)
    worse = ActivityEnvironment().run(acts.measure_metric, MeasureInput(metric=spec, args={**args, "version": "v3"}))
    assert worse.phase == "Failed" and math.isclose(worse.value or 0, 4.0)


# --------------------------------------------------------------------------------------------------- end to end
@pytest.mark.parametrize("canary_errors,expected", [(10, "Succeeded"), (40, "RolledBack")])
async def test_canary_judged_against_stable_with_alb_metrics(
    aws: str, ts_env: WorkflowEnvironment, task_queue: str, canary_errors: int, expected: str
) -> None:
    """The ALB in moto, its metrics in the CloudWatch fake: a plan naming the stock template ``alb-vs-stable`` gets
    the ALB's dimension values from the resolved ARNs; both versions at 2-3 % errors (a bad hour) promotes, a
    canary at 4x stable's error rate (still under 0.5 %) rolls back."""
    demo = seed_alb(aws_session.session())
    tgs = demo["target_groups"]
    dims = alb_args(demo["listener_canary_arn"], tgs["checkout-stable"], tgs["checkout-canary"])
    now = datetime.now(timezone.utc)
    with cloudwatch_fake() as fake:
        for minute in range(6):
            at = now - timedelta(minutes=minute, seconds=1)
            for tg, requests, errors in ((dims["stable_target_group"], 100_000, 100), (dims["target_group"], 10_000, canary_errors)):
                d = {"LoadBalancer": dims["load_balancer"], "TargetGroup": tg}
                fake.put("AWS/ApplicationELB", "RequestCount", d, at, [float(requests)])
                fake.put("AWS/ApplicationELB", "HTTPCode_Target_5XX_Count", d, at, [float(errors)])
                fake.put("AWS/ApplicationELB", "TargetResponseTime", d, at, [0.3 + 0.001 * i for i in range(50)])
        metrics = acts_for(fake, clock=lambda: datetime.now(timezone.utc))
        elb = ElbActivities(AwsClients(aws_session.session()))
        router = AlbRouterSpec(load_balancer="demo-alb", port=8080)
        plan = [PlanStep(set_weight=10), PlanStep(analysis=AnalysisStepSpec(template="alb-vs-stable", duration=3 * M)), PlanStep(set_weight=100)]
        inp = CanaryRampInput(meta=meta(), service="checkout", version="v2", router=router, plan=plan)
        assert [t.name for t in inp.templates] == ["default", "alb-vs-stable"]
        acts: list[Callable[..., Any]] = [elb.alb_find_listener, elb.alb_get_weights, elb.alb_set_weights, metrics.measure_metric, metrics.measure_metrics, Recorder([]).notify]
        async with harness.running_worker(ts_env.client, task_queue, [CanaryRamp], acts):
            result = await ts_env.client.execute_workflow(CanaryRamp.run, inp, id=f"canary-{uuid.uuid4().hex[:8]}", task_queue=task_queue)
    assert result.status == expected, result.reason
    if expected == "RolledBack":
        assert result.failed_criterion == "error-rate canary <= 1.5 x stable + 0.1"
        assert result.measured_values == [pytest.approx(0.4), pytest.approx(0.4)]
        assert "stable: [0.1, 0.1]" in result.reason
    else:
        assert [w.weight for w in result.weights] == [10, 100]


def test_prometheus_comparison_reads_both_versions_with_range_queries() -> None:
    from core.analysis import prometheus_template
    from tests.fakes.prometheus import prometheus_fake

    error_rate = prometheus_template().metrics[0].model_copy(
        update={"success": None, "compare": Comparison.model_validate({"bound": "<= 1.5 x stable + 0.1"})}
    )
    latency = prometheus_template().metrics[1].model_copy(update={"compare": Comparison(mode="mann-whitney", tolerance=0.1)})
    args = {"service": "checkout", "version": "v2", "stable_version": "v1"}
    with prometheus_fake() as fake:
        acts = MetricsActivities(prometheus_url=fake.url, clock=lambda: NOW)
        fake.set_matrix('version="v1",code', [2.4, 2.9, 3.1, 2.7, 3.4])  # a bad five minutes for both
        fake.set_matrix('version="v2",code', [2.6, 3.2, 2.9, 3.0, "NaN"])
        judged = measure(acts, error_rate, args)
        assert judged.phase == "Successful", judged.message
        assert judged.samples == [2.6, 3.2, 2.9, 3.0] and judged.baseline_samples == [2.4, 2.9, 3.1, 2.7, 3.4]
        canary_q, stable_q = fake.queries[-2:]
        assert 'version="v2"' in canary_q and 'version="v1"' in stable_q and 'version="v2"' not in stable_q
        assert fake.ranges[-1]["step"] == "60" and float(fake.ranges[-1]["end"]) - float(fake.ranges[-1]["start"]) == 300
        fake.set_matrix('version="v1",code', [0.08, 0.11, 0.09, 0.12, 0.07])
        fake.set_matrix('version="v2",code', [0.31, 0.38, 0.42, 0.35, 0.44])  # under 0.5 %, 4x stable
        assert measure(acts, error_rate, args).phase == "Failed"
        # the latency histogram: a canary with only two samples is Inconclusive
        fake.set_matrix('version="v1"}', [0.41, 0.44, 0.39, 0.43])
        fake.set_matrix('version="v2"}', [0.42, 0.40])
        short = measure(acts, latency, args)
        assert short.phase == "Inconclusive" and "too few samples: canary 2, stable 4" in short.message
        fake.unavailable = True
        assert measure(acts, error_rate, args).phase == "Error"
