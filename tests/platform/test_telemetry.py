"""Tracing (OpenTelemetry through temporalio.contrib.opentelemetry) and JSON logs.

Spans go to an in-memory exporter across a start, an activity and an approval (an Update), one trace from the
starter's client to the worker; tracing is off unless the standard OTEL_* variables turn it on. JSON log lines carry
the workflow id, run id, runbook and target."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import uuid
from datetime import timedelta

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from temporalio import activity
from temporalio.client import Client
from temporalio.contrib.opentelemetry import TracingInterceptor

from activities.notify import NotificationActivities, RecordingChannel
from core.approval import ApprovalPolicy, ApproveInput
from core.runbook import RunbookMeta
from tests import harness
from tests.platform.metrics_workflows import MetricsDrill, MetricsDrillInput
from workers import telemetry

POLICY = ApprovalPolicy(approvers=["bob"], timeout=timedelta(hours=1))


@activity.defn(name="drill_step")
def drill_step(service: str) -> str:
    activity.logger.info("stepping %s", service)
    return service


def _input(target: str) -> MetricsDrillInput:
    meta = RunbookMeta(runbook="metrics-drill", target=target, requested_by="alice", approval=POLICY)
    return MetricsDrillInput(meta=meta, service=target)


async def _approve_when_open(handle, approver: str = "bob") -> None:
    for _ in range(400):
        state = await handle.query(MetricsDrill.status)
        if state.gate is not None:
            await handle.execute_update(MetricsDrill.approve, ApproveInput(gate_id=state.gate.gate_id, approver=approver))
            return
        await asyncio.sleep(0.05)
    raise AssertionError("no gate opened")


@pytest.mark.parametrize("env, on", [
    ({}, False),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_SDK_DISABLED": "true"}, False),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
    ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, False),
    ({"OTEL_TRACES_EXPORTER": "console"}, True),
])
def test_tracing_is_off_unless_the_standard_variables_turn_it_on(env, on):
    assert telemetry.tracing_enabled(env) is on


def test_off_by_default_means_no_interceptor(monkeypatch):
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_TRACES_EXPORTER"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(telemetry, "_interceptors", None)
    assert telemetry.tracing_interceptors() == []


async def test_one_trace_across_start_activity_and_approval(dev_env):
    exporter = InMemorySpanExporter()
    interceptors = telemetry.tracing_interceptors(span_exporter=exporter)
    assert [type(i) for i in interceptors] == [TracingInterceptor]
    client = await Client.connect(dev_env.client.service_client.config.target_host, namespace="default",
                                  data_converter=dev_env.client.data_converter, interceptors=interceptors)
    task_queue = harness.new_task_queue()
    notifier = NotificationActivities([RecordingChannel(None)])
    async with harness.running_worker(client, task_queue, [MetricsDrill], [drill_step, notifier.notify]):
        handle = await client.start_workflow(MetricsDrill.run, _input("checkout"), id=f"traced-{uuid.uuid4().hex[:8]}",
                                             task_queue=task_queue)
        await _approve_when_open(handle)
        assert (await handle.result()).status == "Succeeded"
    spans = exporter.get_finished_spans()
    names = {s.name for s in spans}
    for expected in ("StartWorkflow:MetricsDrill", "RunWorkflow:MetricsDrill", "StartActivity:drill_step",
                     "RunActivity:drill_step", "StartWorkflowUpdate:approve", "HandleUpdate:approve"):
        assert expected in names, f"{expected} not in {sorted(names)}"
    start = next(s for s in spans if s.name == "StartWorkflow:MetricsDrill")
    run_activity = next(s for s in spans if s.name == "RunActivity:drill_step")
    assert run_activity.context.trace_id == start.context.trace_id  # the activity is in the start's trace
    assert all(s.resource.attributes["service.name"] for s in spans)


async def test_json_log_lines_carry_workflow_run_runbook_and_target(dev_env, monkeypatch):
    from temporalio import activity as act
    from temporalio import workflow

    monkeypatch.setattr(workflow.logger, "workflow_info_on_message", False)
    monkeypatch.setattr(act.logger, "activity_info_on_message", False)
    stream = io.StringIO()
    handler = telemetry.json_handler(stream)
    root = logging.getLogger()
    root.addHandler(handler)
    previous = root.level
    root.setLevel(logging.INFO)
    task_queue = harness.new_task_queue()
    notifier = NotificationActivities([RecordingChannel(None)])
    try:
        async with harness.running_worker(dev_env.client, task_queue, [MetricsDrill], [drill_step, notifier.notify]):
            handle = await dev_env.client.start_workflow(
                MetricsDrill.run, _input("payments"), id=f"logged-{uuid.uuid4().hex[:8]}", task_queue=task_queue)
            for _ in range(400):
                state = await handle.query(MetricsDrill.status)
                if state.gate is not None:
                    break
                await asyncio.sleep(0.05)
            # a UI approval by the requester: refused, and the workflow logs the refusal
            await handle.signal(MetricsDrill.approve_signal, ApproveInput(gate_id=state.gate.gate_id, approver="alice"))
            await _approve_when_open(handle)
            await handle.result()
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    refused = [line for line in lines if line["message"].startswith("refused approve")]
    assert refused, lines
    line = refused[0]
    assert line["workflow_id"] == handle.id and line["run_id"] == handle.result_run_id
    assert (line["runbook"], line["target"], line["workflow_type"], line["level"]) == \
        ("metrics-drill", "payments", "MetricsDrill", "WARNING")
    stepped = next(line for line in lines if line["message"] == "stepping payments")
    assert stepped["workflow_id"] == handle.id and stepped["activity_type"] == "drill_step"
    assert stepped["run_id"] == handle.result_run_id
    # an activity's lines name its run's runbook and target too (workers.log_context, on the worker like the product's)
    assert (stepped["runbook"], stepped["target"]) == ("metrics-drill", "payments")


def test_activity_context_header_round_trip_and_malformed_header():
    from temporalio.converter import PayloadConverter

    from workers import log_context

    payload = PayloadConverter.default.to_payload({"runbook": "canary", "target": "checkout", "extra": "x"})
    assert log_context._read({log_context.HEADER: payload}) == {"runbook": "canary", "target": "checkout"}
    assert log_context._read({}) is None
    assert log_context._read({log_context.HEADER: PayloadConverter.default.to_payload("not a dict")}) is None


def test_plain_text_unless_json_is_asked_for(monkeypatch):
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])
    telemetry.configure_logging({"RUNBOOK_LOG_FORMAT": "json"})
    assert isinstance(root.handlers[0].formatter, telemetry.JsonFormatter)
    monkeypatch.setattr(root, "handlers", [])
    telemetry.configure_logging({})
    assert not isinstance(root.handlers[0].formatter, telemetry.JsonFormatter)


async def test_the_product_worker_installs_the_log_context_interceptor(monkeypatch):
    from core.config import Settings
    from workers import main
    from workers.log_context import RunbookContextInterceptor

    class Built(Exception):
        pass

    captured: dict = {}

    def fake_worker(client, **kwargs):
        captured.update(kwargs)
        raise Built

    async def fake_connect(settings, runtime=None):
        return object()

    monkeypatch.setattr(main, "Worker", fake_worker)
    monkeypatch.setattr(main, "connect", fake_connect)
    with pytest.raises(Built):
        await main.run_worker(Settings(_env_file=None, metrics_port=None, health_port=None))
    assert any(isinstance(i, RunbookContextInterceptor) for i in captured["interceptors"])
