"""The HTTP check activities against real local HTTP servers, run alone in an ActivityEnvironment."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.http_checks import HttpCheckActivities
from activities.metrics import MetricsActivities
from core import errors
from core.analysis import Comparison, Condition, HttpHealthQuery, MeasureInput, MetricSpec
from core.http_checks import HttpCheck, HttpProbeInput, HttpSuiteInput
from tests.bluegreen.servers import ColourServer, closed_port_url


@pytest.fixture
def server():
    with ColourServer("green", "v2") as s:
        yield s


@pytest.fixture
def checks():
    return HttpCheckActivities()


def test_probe_ok_with_body(server, checks):
    result = ActivityEnvironment().run(
        checks.http_probe, HttpProbeInput(url=server.url + "/smoke", expect_body="green v2")
    )
    assert result.ok and result.status == 200 and result.error is None
    assert "green v2" in result.body_excerpt
    assert result.latency_ms > 0


def test_probe_wrong_status_and_missing_body(server, checks):
    server.routes["/healthz"] = (500, "boom")
    bad_status = checks.probe(HttpProbeInput(url=server.url + "/healthz"))
    assert not bad_status.ok and bad_status.status == 500
    assert "answered 500, expected 200" in bad_status.error
    wrong_body = checks.probe(HttpProbeInput(url=server.url + "/smoke", expect_body="blue"))
    assert not wrong_body.ok and wrong_body.status == 200 and "lacks 'blue'" in wrong_body.error
    expected_404 = checks.probe(HttpProbeInput(url=server.url + "/nope", expect_status=404))
    assert expected_404.ok


def test_probe_unreachable_and_timeout(server, checks):
    down = checks.probe(HttpProbeInput(url=closed_port_url() + "/healthz"))
    assert not down.ok and down.status is None and "cannot reach" in down.error
    server.delay_seconds = 0.5
    slow = checks.probe(HttpProbeInput(url=server.url + "/healthz", timeout_seconds=0.1))
    assert not slow.ok and "no answer within 0.1s" in slow.error


def test_probe_refuses_malformed_url(checks):
    with pytest.raises(ApplicationError) as err:
        checks.probe(HttpProbeInput(url="not-a-url"))
    assert err.value.type == errors.INVALID_INPUT and err.value.non_retryable


def test_suite_retries_until_pass_and_does_not_repeat_passed_checks(server, checks):
    server.fail_first["/healthz"] = 2
    heartbeats = []
    env = ActivityEnvironment()
    env.on_heartbeat = lambda *d: heartbeats.append(d)
    result = env.run(
        checks.http_check_suite,
        HttpSuiteInput(
            checks=[
                HttpCheck(name="health", url=server.url + "/healthz"),
                HttpCheck(name="smoke", url=server.url + "/smoke", expect_body="v2"),
            ],
            attempts=5,
            interval_seconds=0.01,
        ),
    )
    assert result.passed
    assert [r.name for r in result.results] == ["health", "smoke"]
    assert result.results[0].attempts == 3 and result.results[1].attempts == 1
    assert server.hits["/healthz"] == 3 and server.hits["/smoke"] == 1
    assert heartbeats and heartbeats[-1][0]["attempt"] == 3


def test_suite_fails_after_attempts(server, checks):
    server.routes["/smoke"] = (200, "hello from blue v1")
    result = ActivityEnvironment().run(
        checks.http_check_suite,
        HttpSuiteInput(
            checks=[
                HttpCheck(name="health", url=server.url + "/healthz"),
                HttpCheck(name="smoke", url=server.url + "/smoke", expect_body="v2"),
            ],
            attempts=3,
            interval_seconds=0,
        ),
    )
    assert not result.passed
    assert [r.name for r in result.failed] == ["smoke"]
    assert result.failed[0].attempts == 3 and server.hits["/smoke"] == 3
    assert "smoke: FAILED after 3 attempt(s)" in result.summary()


def test_suite_refuses_duplicate_names(server, checks):
    with pytest.raises(ApplicationError) as err:
        checks.http_check_suite(
            HttpSuiteInput(checks=[HttpCheck(name="a", url=server.url), HttpCheck(name="a", url=server.url)])
        )
    assert err.value.type == errors.INVALID_INPUT


# ------------------------------------------------------------------------------------------------ HTTP health as a metric
def health_metric(*checks: HttpCheck, probes: int = 4, limit: float = 5) -> MetricSpec:
    """The bake's ``http-health`` metric: every check ``probes`` times; more than ``limit`` % failed is a failed
    measurement."""
    return MetricSpec(name="http-health", query=HttpHealthQuery(checks=list(checks), probes=probes),
                      success=Condition(op="<=", threshold=limit), unit="%")


def measure_health(spec: MetricSpec, args: dict[str, str] | None = None):
    return ActivityEnvironment().run(MetricsActivities().measure_metric, MeasureInput(metric=spec, args=args or {}))


def test_http_health_metric_is_the_share_of_failed_requests(server):
    healthy = measure_health(health_metric(HttpCheck(name="health", url=server.url + "/healthz")))
    assert (healthy.phase, healthy.value, healthy.samples) == ("Successful", 0.0, [0.0] * 4)
    assert server.hits["/healthz"] == 4
    assert healthy.message.startswith("0/4 requests failed")

    server.fail_first["/healthz"] = 1  # one request in four: 25 % > 5 %
    flaky = measure_health(health_metric(HttpCheck(name="health", url=server.url + "/healthz")))
    assert (flaky.phase, flaky.value, flaky.samples) == ("Failed", 25.0, [1.0, 0.0, 0.0, 0.0])
    assert "1/4 requests failed" in flaky.message and "answered 503, expected 200" in flaky.message
    again = measure_health(health_metric(HttpCheck(name="health", url=server.url + "/healthz")))
    assert again.phase == "Successful"  # a measurement judges its own requests only
    server.fail_first["/healthz"] = 1
    assert measure_health(health_metric(HttpCheck(name="health", url=server.url + "/healthz"), limit=25)).phase == "Successful"

    # two checks, each sent twice; the body check fails every time: half the requests
    two = measure_health(health_metric(HttpCheck(name="health", url=server.url + "/healthz"),
                                       HttpCheck(name="page", url=server.url + "/smoke", expect_body="blue"), probes=2))
    assert (two.phase, two.value) == ("Failed", 50.0) and "lacks 'blue'" in two.message


def test_http_health_metric_outage_arguments_and_bad_urls(server):
    server.routes["/healthz"] = (503, "overloaded")
    down = measure_health(health_metric(HttpCheck(name="health", url="{{base}}/healthz"), probes=2), {"base": server.url})
    assert (down.phase, down.value) == ("Failed", 100.0) and down.query == f"GET {server.url}/healthz"
    unreachable = measure_health(health_metric(HttpCheck(name="health", url=closed_port_url() + "/healthz"), probes=1))
    assert (unreachable.phase, unreachable.value) == ("Failed", 100.0) and "cannot reach" in unreachable.message
    missing = measure_health(health_metric(HttpCheck(name="health", url="{{base}}/healthz")))
    assert missing.phase == "Error" and "'base'" in missing.message  # the template names an argument it lacks
    bad = measure_health(health_metric(HttpCheck(name="health", url="ftp://nowhere/healthz")))
    assert bad.phase == "Error" and "not an absolute http(s) URL" in bad.message


def test_http_health_metric_is_judged_by_success_only(server):
    with pytest.raises(ValidationError, match="an http query is judged by success"):
        MetricSpec(name="h", query=HttpHealthQuery(checks=[HttpCheck(name="health", url=server.url)]),
                   compare=Comparison(mode="bound", factor=1.5))
    with pytest.raises(ValidationError, match="checks"):
        HttpHealthQuery(checks=[])
