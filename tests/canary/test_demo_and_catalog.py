"""The catalog entry, the demo (emitter + seeded ALB + catalog defaults -> a rollback), and cancellation."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

import boto3
import pytest
from pydantic import ValidationError
from temporalio import activity
from temporalio.testing import WorkflowEnvironment

from activities.aws import AwsClients, ElbActivities
from activities.metrics import MetricsActivities
from core.aws import AlbSetWeightsInput, AlbWeights
from core.catalog import Catalog, ParameterError
from starters.demo_aws import seed_alb
from starters.demo_metrics import canary_bad, publish_once, run_emitter
from tests import harness
from tests.canary.standins import CANARY, STABLE, FakeMetrics, FakeTraffic, Recorder, healthy
from tests.canary.test_ramp import make_input, sleep_between_ticks
from workflows.canary_ramp import CanaryRamp
from workflows.registry import inputs

ROOT = Path(__file__).resolve().parents[2]


def plan(params: dict):
    wfs = inputs()
    return Catalog.load(ROOT / "runbooks", inputs=wfs).plan_start("canary-ramp", params, requested_by="alice", inputs=wfs)


def test_catalog_defaults_are_the_policy() -> None:
    start = plan({"service": "payments", "version": "v7"})
    assert start.workflow_type == "CanaryRamp" and start.workflow_id == "canary:payments"
    inp = start.input
    assert [s.set_weight for s in inp.plan if s.set_weight is not None] == [5, 25, 50, 100]
    assert [s.analysis.duration.total_seconds() / 60 for s in inp.plan if s.analysis] == [10, 20, 30]
    assert inp.router.stable_target_group == "payments-stable" and inp.router.canary_target_group == "payments-canary"
    assert {m.name for m in inp.templates[0].metrics} == {"error-rate", "latency-p95", "cpu", "memory"}
    custom = plan({"service": "web", "version": "v2", "router": "{kind: httproute, namespace: shop}", "plan": "[{set_weight: 50}, {pause: {}}]"})
    assert custom.input.router.canary_deployment == "web-canary" and custom.input.router.route == "web"
    assert custom.input.plan[1].pause is not None and custom.input.plan[1].pause.duration is None


def test_catalog_refuses_a_bad_plan() -> None:
    with pytest.raises(ParameterError, match="exactly one of"):
        plan({"service": "web", "version": "v2", "plan": "[{set_weight: 5, pause: {duration: 1m}}]"})
    with pytest.raises(ParameterError, match="unknown analysis template"):
        plan({"service": "web", "version": "v2", "plan": "[{analysis: {template: nope, duration: 1m}}]"})


def test_emitter_switch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class Sink:
        def __init__(self) -> None:
            self.calls: list[dict] = []

        def put_metric_data(self, **kw) -> None:
            self.calls.append(kw)

    sink = Sink()
    good = publish_once(sink, tmp_path, ["v2"])
    assert good["v2"]["ErrorRate"] < 0.5 and good["v2"]["LatencyP95"] < 1.5
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "canary-bad").touch()
    bad = publish_once(sink, tmp_path, ["v2"])
    assert bad["v2"]["ErrorRate"] > 0.5 and bad["v2"]["LatencyP95"] > 1.5
    assert bad["stable"]["ErrorRate"] < 0.5  # only the canary goes bad
    (tmp_path / "demo" / "canary-bad").unlink()
    monkeypatch.setenv("RUNBOOK_DEMO_CANARY_BAD", "1")
    assert canary_bad(tmp_path)


async def test_demo_bad_canary_rolls_back_with_catalog_defaults(
    aws: str, ts_env: WorkflowEnvironment, task_queue: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What `make dev` shows: seeded ALB, emitter with the bad switch on, `runbook start canary-ramp --set
    service=checkout --set version=v2` -> rolled back, ALB back at 100/0."""
    seed_alb()
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "canary-bad").touch()
    monkeypatch.setenv("RUNBOOK_DEMO_METRICS_INTERVAL", "0.05")
    stop = threading.Event()
    emitter = threading.Thread(target=run_emitter, args=(stop, tmp_path), daemon=True)
    emitter.start()
    start = plan({"service": "checkout", "version": "v2"})
    elb, metrics, recorder = ElbActivities(AwsClients()), MetricsActivities(), Recorder([])
    acts = [elb.alb_find_listener, elb.alb_get_weights, elb.alb_set_weights, metrics.measure_metric, metrics.measure_metrics, recorder.notify]
    try:
        async with harness.running_worker(ts_env.client, task_queue, [CanaryRamp], acts):
            result = await ts_env.client.execute_workflow(
                CanaryRamp.run, start.input, id=f"{start.workflow_id}-{uuid.uuid4().hex[:6]}", task_queue=task_queue
            )
    finally:
        stop.set()
        emitter.join(5)
    assert result.status == "RolledBack"
    assert [w.weight for w in result.weights] == [5, 0]
    assert result.failed_criterion in ("error-rate < 0.5", "latency-p95 < 1.5")
    elb_client = boto3.client("elbv2", region_name="us-east-1")
    lb = elb_client.describe_load_balancers(Names=["demo-alb"])["LoadBalancers"][0]
    listener = next(lst for lst in elb_client.describe_listeners(LoadBalancerArn=lb["LoadBalancerArn"])["Listeners"] if lst["Port"] == 8080)
    tgs = {g["TargetGroupArn"]: g["TargetGroupName"] for g in elb_client.describe_target_groups()["TargetGroups"]}
    weights = {tgs[g["TargetGroupArn"]]: g["Weight"] for g in listener["DefaultActions"][0]["ForwardConfig"]["TargetGroups"]}
    assert weights == {"checkout-stable": 100, "checkout-canary": 0}


async def test_cancel_is_handled_like_an_abort(ts_env: WorkflowEnvironment, task_queue: str) -> None:
    log: list[tuple] = []
    traffic = FakeTraffic(log)
    metrics, recorder = FakeMetrics(traffic, healthy), Recorder(log)
    async with harness.running_worker(ts_env.client, task_queue, [CanaryRamp], [traffic.get, traffic.set, metrics.measure, metrics.measure_batch, recorder.notify]):
        with ts_env.auto_time_skipping_disabled():
            handle = await ts_env.client.start_workflow(CanaryRamp.run, make_input(), id=f"c-{uuid.uuid4().hex[:8]}", task_queue=task_queue)
            await sleep_between_ticks(ts_env, timedelta_minutes(12))
            await harness.cancel_settled(handle)
        result = await handle.result()  # cancel == abort: the run completes, Aborted, with the rollback done
    assert result.status == "Aborted" and "cancelled" in result.reason
    assert result.compensated and "at 0 %" in result.compensated[0]
    assert traffic.weights == {STABLE: 100, CANARY: 0}
    assert [e for e in log if e[0] == "weights"] == [("weights", 5), ("weights", 25), ("weights", 0)]
    final = recorder.events[-1]
    assert final.kind == "finished" and final.severity == "warning"  # a person's choice: no alert, no page
    assert not any(e.kind == "rolled_back" for e in recorder.events)


def test_blank_or_malformed_service_is_refused_before_a_run_starts() -> None:
    for bad in ("   ", "", "check out", "web/api", "-web", "x" * 26):
        with pytest.raises(ParameterError):  # `runbook start` exits 2 and starts nothing
            plan({"service": bad, "version": "v2"})
        with pytest.raises(ValidationError, match="service"):  # the input itself, whoever builds it
            make_input(service=bad)
    with pytest.raises(ParameterError, match="version"):
        plan({"service": "web", "version": "  "})
    assert make_input(service="  web  ", version=" v2 ").service == "web"  # surrounding whitespace stripped


def test_catalog_caps_extend() -> None:
    assert plan({"service": "web", "version": "v2"}).input.max_extension.total_seconds() == 24 * 3600
    assert plan({"service": "web", "version": "v2", "max_extension": "2h"}).input.max_extension.total_seconds() == 7200


async def test_unknown_service_is_refused_before_any_change(
    aws: str, ts_env: WorkflowEnvironment, task_queue: str
) -> None:
    """`runbook start canary-ramp --set service=nosuch`: the catalog's ALB router names nosuch-stable/-canary, which
    do not exist. The read-only resolve step refuses: nothing changed, no rollback, a warning, no page."""
    demo = seed_alb()
    start = plan({"service": "nosuch", "version": "v2"})
    elb, metrics, recorder = ElbActivities(AwsClients()), MetricsActivities(), Recorder([])
    calls: list[str] = []

    @activity.defn(name="alb_set_weights")
    def set_weights(req: AlbSetWeightsInput) -> AlbWeights:  # records any write attempt, then does it
        calls.append("set")
        return elb.alb_set_weights(req)

    acts = [elb.alb_find_listener, elb.alb_get_weights, set_weights, metrics.measure_metric, metrics.measure_metrics, recorder.notify]
    async with harness.running_worker(ts_env.client, task_queue, [CanaryRamp], acts):
        result = await ts_env.client.execute_workflow(
            CanaryRamp.run, start.input, id=f"{start.workflow_id}-{uuid.uuid4().hex[:6]}", task_queue=task_queue
        )
    assert result.status == "Refused"
    assert "nothing was changed" in result.summary and "nosuch" in result.summary
    assert "ROLLBACK" not in result.summary and result.compensated == [] and result.not_undone == []
    assert calls == [] and result.weights == []
    assert [s.name for s in result.steps] == ["resolve"] and result.steps[0].status == "failed"
    final = recorder.events[-1]
    assert final.kind == "finished" and final.severity == "warning"
    assert all(e.severity != "critical" and e.kind != "rolled_back" for e in recorder.events)
    tgs = {v: k for k, v in demo["target_groups"].items()}
    elb_client = boto3.client("elbv2", region_name="us-east-1")
    action = elb_client.describe_listeners(ListenerArns=[demo["listener_canary_arn"]])["Listeners"][0]["DefaultActions"][0]
    assert {tgs[g["TargetGroupArn"]]: g["Weight"] for g in action["ForwardConfig"]["TargetGroups"]} == {"checkout-stable": 100, "checkout-canary": 0}


def timedelta_minutes(n: int):
    from datetime import timedelta

    return timedelta(minutes=n)
