"""The Prometheus provider against a real Prometheus server (Debian's `prometheus`, installed by .ci/run).

A small exporter serves the demo service's request counters, latency histogram and container metrics for the
stable and the canary version; Prometheus scrapes it every second; the canary's own PromQL templates are then
measured through the real `measure_metric` activity. On a machine without the binary the test skips, except in
CI, where a missing server is a failure.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from temporalio.testing import ActivityEnvironment

from activities.metrics import MetricsActivities
from core.analysis import Condition, MeasureInput, MetricSpec, PrometheusQuery, prometheus_template
from tests import harness

LABELS = ("service", "version")


class Exporter:
    """The service under test: stable answers cleanly, the canary v2 fails 2 % of its requests."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("http_requests", "requests", [*LABELS, "code"], registry=self.registry)
        self.latency = Histogram("http_request_duration_seconds", "latency", LABELS, registry=self.registry,
                                 buckets=(0.1, 0.25, 0.5, 1.0, 2.5))
        self.cpu = Counter("container_cpu_usage_seconds", "cpu", LABELS, registry=self.registry)
        self.memory = Gauge("container_memory_working_set_bytes", "memory", LABELS, registry=self.registry)
        self.limit = Gauge("container_spec_memory_limit_bytes", "limit", LABELS, registry=self.registry)
        self.stop = threading.Event()

    def tick(self) -> None:
        for version, errors in (("stable", 0), ("v2", 2)):
            self.requests.labels("checkout", version, "200").inc(100 - errors)
            if errors:
                self.requests.labels("checkout", version, "500").inc(errors)
            for _ in range(10):
                self.latency.labels("checkout", version).observe(0.2)
            self.cpu.labels("checkout", version).inc(0.03)  # 0.3 cpu-seconds per second: 30 %
            self.memory.labels("checkout", version).set(400e6)
            self.limit.labels("checkout", version).set(1e9)

    def run(self) -> None:
        while not self.stop.wait(0.1):
            self.tick()


@pytest.fixture(scope="module")
def prometheus() -> Iterator[str]:
    binary = shutil.which("prometheus")
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("CI must provide Debian's prometheus (installed by .ci/run)")
        pytest.skip("no prometheus binary here (apt-get install prometheus); CI installs it")
    exporter = Exporter()
    exporter_port = harness.free_port()
    server, _ = start_http_server(exporter_port, addr="127.0.0.1", registry=exporter.registry)
    feeder = threading.Thread(target=exporter.run, daemon=True)
    feeder.start()
    workdir = Path(tempfile.mkdtemp(prefix="prom-"))
    (workdir / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"scrape_configs: [{{job_name: demo, static_configs: [{{targets: ['127.0.0.1:{exporter_port}']}}]}}]\n"
    )
    port = harness.free_port()
    args = [binary, f"--config.file={workdir / 'prometheus.yml'}", f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}"]
    try:
        with harness.subprocess_server(args, f"http://127.0.0.1:{port}/-/ready", ok=lambda r: r.status_code == 200):
            yield f"http://127.0.0.1:{port}"
    finally:
        exporter.stop.set()
        server.shutdown()
        shutil.rmtree(workdir, ignore_errors=True)


def _measure(url: str, spec: MetricSpec, version: str):
    acts = MetricsActivities(prometheus_url=url)
    return ActivityEnvironment().run(acts.measure_metric, MeasureInput(metric=spec, args={"service": "checkout", "version": version}))


def _settled(url: str, spec: MetricSpec, version: str, timeout: float = 20.0):
    """rate() needs two scrapes inside its window: poll until the first real value arrives."""
    deadline = time.monotonic() + timeout
    while True:
        result = _measure(url, spec, version)
        if result.phase != "Inconclusive" or time.monotonic() > deadline:
            return result
        time.sleep(0.5)


def test_the_canary_templates_measure_and_judge_real_prometheus_data(prometheus: str) -> None:
    metrics = {m.name: m for m in prometheus_template().metrics}

    bad = _settled(prometheus, metrics["error-rate"], "v2")
    assert bad.phase == "Failed" and bad.value == pytest.approx(2.0, abs=0.01)
    good = _settled(prometheus, metrics["error-rate"], "stable")
    assert good.phase == "Successful" and good.value == pytest.approx(0.0)

    latency = _settled(prometheus, metrics["latency-p95"], "v2")
    assert latency.phase == "Successful" and 0.1 < latency.value <= 0.25  # inside the bucket holding 0.2 s
    memory = _settled(prometheus, metrics["memory"], "v2")
    assert memory.phase == "Successful" and memory.value == pytest.approx(40.0)
    cpu = _settled(prometheus, metrics["cpu"], "v2")
    # within a series' first minute rate(...[1m]) divides a few seconds' increase by the whole minute, so an
    # absolute rate reads low here (ratios such as the error rate do not): it is measured, and below 80 %
    assert cpu.phase == "Successful" and 0 < cpu.value < 80

    unknown = _measure(prometheus, metrics["error-rate"], "v9")
    assert unknown.phase == "Inconclusive"  # no series for that version: no data is not a verdict
    broken = _measure(prometheus, MetricSpec(name="broken", query=PrometheusQuery(query='sum(rate(x{a="b"[1m])'),
                                                success=Condition.model_validate("< 1")), "v2")
    assert broken.phase == "Error" and "bad_data" in broken.message  # the real server's own refusal
