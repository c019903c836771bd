"""The runbooks' own metrics on the worker's Prometheus endpoint: runs started and ended, rollbacks by criterion,
approval waits, step durations, canary weight, gate timeouts and escalations, failover RTO and restore RPO/RTO.
Emitted from workflow code (workflows/metrics.py) and scraped from a worker whose runtime serves them, as the
product's worker does; the Grafana dashboard queries only what is exported."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from prometheus_client.parser import text_string_to_metric_families
from temporalio import activity
from temporalio.client import Client

from core.approval import ApprovalPolicy, ApproveInput
from core.runbook import RunbookMeta
from tests import harness
from tests.platform.metrics_workflows import MetricsDrill, MetricsDrillInput
from workers.main import metrics_runtime
from workflows import metrics as m

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "runbooks.json"


@activity.defn(name="drill_step")
def drill_step(service: str) -> str:
    return service


def _meta(policy: ApprovalPolicy, target: str) -> RunbookMeta:
    return RunbookMeta(runbook="metrics-drill", target=target, requested_by="alice", approval=policy)


async def _wait_for_gate(handle) -> str:
    for _ in range(400):
        state = await handle.query(MetricsDrill.status)
        if state.gate is not None:
            return state.gate.gate_id
        await asyncio.sleep(0.05)
    raise AssertionError("no gate opened")


def _samples(text: str) -> list[tuple[str, dict, float]]:
    return [(s.name, s.labels, s.value) for family in text_string_to_metric_families(text) for s in family.samples]


def _value(samples, name: str, **labels) -> float | None:
    found = [v for n, lab, v in samples if n == name and labels.items() <= lab.items()]
    return sum(found) if found else None


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def scraped(dev_env, recording_module) -> list[tuple[str, dict, float]]:
    """Three runs on a worker serving metrics: approved and promoted, approved then rolled back, and a gate that
    escalates on its timeout and then times out (rejected). Returns the scrape after all three."""
    port = harness.free_port()
    runtime = metrics_runtime(port, "127.0.0.1")
    client = await Client.connect(dev_env.client.service_client.config.target_host, namespace="default",
                                  runtime=runtime, data_converter=dev_env.client.data_converter)
    task_queue = harness.new_task_queue()
    approve = ApprovalPolicy(approvers=["bob"], timeout=timedelta(hours=1))
    escalating = ApprovalPolicy(approvers=["bob"], timeout=timedelta(seconds=1), on_timeout="escalate",
                                escalate_to=["carol"])
    async with harness.running_worker(client, task_queue, [MetricsDrill], [drill_step, recording_module.notify]):
        async def run(policy, target, roll_back=False, decide=True):
            handle = await client.start_workflow(
                MetricsDrill.run, MetricsDrillInput(meta=_meta(policy, target), service=target, roll_back=roll_back),
                id=f"metrics-{uuid.uuid4().hex[:8]}", task_queue=task_queue)
            if decide:
                gate_id = await _wait_for_gate(handle)
                await handle.execute_update(MetricsDrill.approve, ApproveInput(gate_id=gate_id, approver="bob"))
            return await handle.result()

        results = await asyncio.gather(run(approve, "checkout"), run(approve, "payments", roll_back=True),
                                       run(escalating, "search", decide=False))
        assert [r.status for r in results] == ["Succeeded", "RolledBack", "Rejected"]
        text = ""
        for _ in range(50):  # the exporter publishes what the worker recorded within a moment
            text = (await asyncio.to_thread(httpx.get, f"http://127.0.0.1:{port}/metrics", timeout=5)).text
            if m.RESTORE_RTO in text and m.GATE_ESCALATIONS in text and m.ROLLBACKS in text:
                break
            await asyncio.sleep(0.1)
    return _samples(text)


@pytest.fixture(scope="module")
def recording_module():
    from activities.notify import NotificationActivities, RecordingChannel

    return NotificationActivities([RecordingChannel(None)])


def test_runs_started_and_ended_by_runbook_and_outcome(scraped):
    assert _value(scraped, m.RUNS_STARTED, runbook="metrics-drill") == 3
    assert _value(scraped, m.RUNS_ENDED, runbook="metrics-drill", outcome="Succeeded") == 1
    assert _value(scraped, m.RUNS_ENDED, runbook="metrics-drill", outcome="RolledBack") == 1
    assert _value(scraped, m.RUNS_ENDED, runbook="metrics-drill", outcome="Rejected") == 1
    # the meter adds the workflow's own labels
    sample = next(lab for n, lab, _ in scraped if n == m.RUNS_STARTED)
    assert sample["workflow_type"] == "MetricsDrill" and sample["namespace"] == "default"


def test_rollbacks_by_failed_criterion(scraped):
    assert _value(scraped, m.ROLLBACKS, runbook="metrics-drill", criterion="error_rate < 0.005") == 1


def test_approval_wait_and_step_duration_histograms(scraped):
    assert _value(scraped, f"{m.APPROVAL_WAIT}_count", runbook="metrics-drill", decision="approved") == 2
    assert _value(scraped, f"{m.APPROVAL_WAIT}_count", runbook="metrics-drill", decision="timed_out") == 1
    buckets = {lab["le"] for n, lab, _ in scraped if n == f"{m.APPROVAL_WAIT}_bucket"}
    assert "86400.0" in buckets or "86400" in buckets  # the runtime uses the product's buckets
    assert _value(scraped, f"{m.STEP_DURATION}_count", runbook="metrics-drill", step="set weight") == 4


def test_gate_timeouts_and_escalations(scraped):
    assert _value(scraped, m.GATE_TIMEOUTS, runbook="metrics-drill", action="escalate") == 1
    assert _value(scraped, m.GATE_TIMEOUTS, runbook="metrics-drill", action="reject") == 1
    assert _value(scraped, m.GATE_ESCALATIONS, runbook="metrics-drill") == 1


def test_last_values_per_target(scraped):
    assert _value(scraped, m.CANARY_WEIGHT, service="checkout") == 100
    assert _value(scraped, m.CANARY_WEIGHT, service="payments") == 0
    assert _value(scraped, m.FAILOVER_RTO, target="checkout") == 42
    assert _value(scraped, m.RESTORE_RPO, target="checkout") == 180
    assert _value(scraped, m.RESTORE_RTO, target="checkout") == 90


def test_every_runbook_metric_is_exported(scraped):
    names = {re.sub(r"_(bucket|sum|count)$", "", n) for n, _, _ in scraped}
    assert set(m.METRICS) <= names, set(m.METRICS) - names


def _queried_metrics(dashboard: dict) -> set[str]:
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
    assert exprs, "the dashboard has no queries"
    names = set()
    for expr in exprs:
        for token in re.findall(r"\b((?:runbook|temporal)_[a-z0-9_]+)\b", expr):
            names.add(re.sub(r"_(bucket|sum|count)$", "", token))
    return names


def test_dashboard_queries_only_exported_metrics_and_shows_them_all(scraped):
    dashboard = json.loads(DASHBOARD.read_text())
    queried = _queried_metrics(dashboard)
    exported = {re.sub(r"_(bucket|sum|count)$", "", n) for n, _, _ in scraped}
    assert queried <= exported, f"the dashboard queries metrics nobody exports: {queried - exported}"
    assert set(m.METRICS) <= queried, f"not on the dashboard: {set(m.METRICS) - queried}"
    assert all(p.get("datasource", {}).get("uid") == "${datasource}" for p in dashboard["panels"] if "targets" in p)


def test_step_kind_is_bounded():
    assert m.step_kind("step 3/7: set weight 25 %") == "set weight"
    assert m.step_kind("restore") == "restore"
    assert m.step_kind("wait for instance") == "wait for"
    assert m.step_kind("42") == "step"


def test_the_fields_the_metrics_read_are_the_real_runbooks_result_fields():
    """The drill above carries the real results' field names; these are the real results' models."""
    from core.bluegreen import BlueGreenResult
    from core.canary import CanaryRampResult
    from core.failover import RegionMoveResult
    from core.restore import RestoreDrillResult, RestoreReport

    assert {"failed_criterion", "final_weight", "service"} <= set(CanaryRampResult.model_fields)
    assert "rto_seconds" in RegionMoveResult.model_fields
    assert "report" in RestoreDrillResult.model_fields
    assert {"rpo_achieved", "rto_achieved"} <= set(RestoreReport.model_fields)
    assert "bake_verdict" in BlueGreenResult.model_fields


def test_rollback_criterion_of_a_canary_and_of_a_blue_green_run():
    from types import SimpleNamespace

    from core.analysis import AnalysisVerdict

    criterion_of = m.RunbookMetrics.criterion_of
    assert criterion_of(SimpleNamespace(failed_criterion="error-rate < 0.5")) == "error-rate < 0.5"
    failed = AnalysisVerdict(phase="Failed", metric="latency-p99", condition="< 300")
    assert criterion_of(SimpleNamespace(bake_verdict=failed)) == "latency-p99 < 300"
    assert criterion_of(SimpleNamespace(bake_verdict=AnalysisVerdict(phase="Failed", metric="http-health"))) == "http-health"
    assert criterion_of(SimpleNamespace(bake_verdict=AnalysisVerdict(phase="Successful", metric="x"))) is None
    assert criterion_of(SimpleNamespace(bake_verdict=None)) is None  # a failed step: run_ended says "step failed"
