"""The measure_metric activity against a Prometheus HTTP API fake (real response shapes) and moto CloudWatch."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import boto3
from botocore.config import Config
from temporalio.testing import ActivityEnvironment

from activities.metrics import MetricsActivities
from core.analysis import (
    CloudWatchQuery,
    Condition,
    MeasureInput,
    MetricSpec,
    PrometheusQuery,
    default_template,
    prometheus_template,
)
from tests.fakes.prometheus import prometheus_fake

ARGS = {"service": "checkout", "version": "v2"}


def prom_metric(query: str, cond: str = "< 0.5") -> MetricSpec:
    return MetricSpec(name="m", query=PrometheusQuery(query=query), success=Condition.model_validate(cond))


def measure(acts: MetricsActivities, spec: MetricSpec, args: dict | None = None):
    return ActivityEnvironment().run(acts.measure_metric, MeasureInput(metric=spec, args=ARGS if args is None else args))


def test_prometheus_vector_scalar_empty_nan_and_errors() -> None:
    with prometheus_fake() as fake:
        acts = MetricsActivities(prometheus_url=fake.url)
        template = prometheus_template()
        error_rate = template.metrics[0]
        fake.set_vector('code=~"5.."', ({"service": "checkout"}, 0.2))
        ok = measure(acts, error_rate)
        assert (ok.phase, ok.value) == ("Successful", 0.2)
        # the query was templated with service and version, PromQL braces intact
        assert 'http_requests_total{service="checkout",version="v2",code=~"5.."}' in fake.queries[-1]
        fake.set_vector('code=~"5.."', ({"service": "checkout"}, 0.7))
        assert measure(acts, error_rate).phase == "Failed"
        fake.set_vector('code=~"5.."', ({}, "NaN"))  # 0/0 when there was no traffic
        assert measure(acts, error_rate).phase == "Inconclusive"
        fake.vectors.clear()
        empty = measure(acts, error_rate)
        assert (empty.phase, empty.value, empty.message) == ("Inconclusive", None, "no data")
        fake.set_scalar("vector(1)", 1)
        assert measure(acts, prom_metric("vector(1) * 0 + 1", ">= 1")).phase == "Successful"
        fake.set_vector("up", ({"instance": "a"}, 1), ({"instance": "b"}, 1))
        two = measure(acts, prom_metric("up"))
        assert two.phase == "Error" and "aggregate" in two.message
        bad = measure(acts, prom_metric("sum(rate(x{a=\"b\"[1m])"))
        assert bad.phase == "Error" and "bad_data" in bad.message and "HTTP 400" in bad.message
        fake.unavailable = True
        down = measure(acts, error_rate)
        assert down.phase == "Error" and "503" in down.message
        missing = measure(acts, error_rate, {"service": "checkout"})
        assert missing.phase == "Error" and "version" in missing.message


def test_prometheus_unreachable_is_an_error_measurement() -> None:
    from tests.harness import free_port

    acts = MetricsActivities(prometheus_url=f"http://127.0.0.1:{free_port()}")
    result = measure(acts, prom_metric("up"))
    assert result.phase == "Error" and "unreachable" in result.message


def _put(cw, metric: str, version: str, value: float, when: datetime) -> None:
    cw.put_metric_data(
        Namespace="Demo/Service",
        MetricData=[
            {
                "MetricName": metric,
                "Dimensions": [{"Name": "Service", "Value": "checkout"}, {"Name": "Version", "Value": version}],
                "Timestamp": when,
                "Value": value,
            }
        ],
    )


def test_cloudwatch_reads_the_latest_datapoint_per_version(aws: str) -> None:
    cw = boto3.client("cloudwatch", region_name="us-east-1")
    now = datetime.now(timezone.utc)
    _put(cw, "ErrorRate", "v2", 3.0, now - timedelta(minutes=3))
    _put(cw, "ErrorRate", "v2", 0.2, now - timedelta(seconds=20))
    _put(cw, "ErrorRate", "v1", 9.0, now - timedelta(seconds=20))  # the stable version's numbers must not leak in
    _put(cw, "LatencyP95", "v2", 2.5, now - timedelta(seconds=20))
    acts = MetricsActivities()
    by_name = {m.name: m for m in default_template().metrics}
    error_rate = measure(acts, by_name["error-rate"])
    assert (error_rate.phase, error_rate.value) == ("Successful", 0.2)
    assert "Service=checkout,Version=v2" in error_rate.query
    latency = measure(acts, by_name["latency-p95"])
    assert (latency.phase, latency.value) == ("Failed", 2.5)
    cpu = measure(acts, by_name["cpu"])  # nothing published
    assert cpu.phase == "Inconclusive"


def test_cloudwatch_provider_error_is_an_error_measurement(aws: str) -> None:
    from tests.harness import free_port

    dead = f"http://127.0.0.1:{free_port()}"
    cfg = Config(retries={"max_attempts": 1}, connect_timeout=1, read_timeout=1)
    acts = MetricsActivities(cloudwatch=lambda region: boto3.client("cloudwatch", region_name="us-east-1", endpoint_url=dead, config=cfg))
    spec = MetricSpec(
        name="cpu", query=CloudWatchQuery(namespace="Demo/Service", metric_name="CPUUtilization"), success=Condition(op="<", threshold=80)
    )
    result = measure(acts, spec)
    assert result.phase == "Error" and "CloudWatch" in result.message
