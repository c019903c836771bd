"""The HTTP check activities against real local HTTP servers, run alone in an ActivityEnvironment."""

from __future__ import annotations

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.http_checks import HttpCheckActivities
from core import errors
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
