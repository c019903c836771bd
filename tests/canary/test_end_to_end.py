"""The canary ramp with the REAL activities: ALB weights in moto + CloudWatch metrics in moto; Kubernetes HTTPRoute
weights and Deployment scaling against the wire-format fake API server; Prometheus provider outage."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import boto3
import pytest
from temporalio.testing import WorkflowEnvironment

from activities.aws import AwsClients, ElbActivities
from activities.kubernetes import KubernetesActivities
from activities.metrics import MetricsActivities
from core.analysis import prometheus_template
from core.approval import ApprovalPolicy
from core.canary import AlbRouterSpec, HttpRouteRouterSpec
from core.runbook import RunbookMeta
from starters.demo_aws import seed_alb
from tests import aws_session, harness
from tests.canary.standins import CANARY, STABLE, FakeTraffic, Recorder
from tests.fakes.kubernetes import kube_fake
from workflows.canary_ramp import AnalysisStepSpec, CanaryRamp, CanaryRampInput, PlanStep

NS = "shop"
M = timedelta(minutes=1)


def meta() -> RunbookMeta:
    return RunbookMeta(runbook="canary-ramp", target="checkout", requested_by="alice", approval=ApprovalPolicy(approvers=["bob"]))


def short_plan(*weights: int, minutes: int = 3) -> list[PlanStep]:
    plan: list[PlanStep] = []
    for w in weights:
        plan += [PlanStep(set_weight=w), PlanStep(analysis=AnalysisStepSpec(duration=timedelta(minutes=minutes)))]
    return plan + [PlanStep(set_weight=100)]


def publish(version: str, error_rate: float) -> None:
    cw = boto3.client("cloudwatch", region_name="us-east-1")
    now = datetime.now(timezone.utc)
    values = {"ErrorRate": error_rate, "LatencyP95": 0.4, "CPUUtilization": 35.0, "MemoryUtilization": 60.0}
    cw.put_metric_data(
        Namespace="Demo/Service",
        MetricData=[
            {
                "MetricName": name,
                "Dimensions": [{"Name": "Service", "Value": "checkout"}, {"Name": "Version", "Value": version}],
                "Timestamp": now,
                "Value": value,
            }
            for name, value in values.items()
        ],
    )


def listener_weights(listener_arn: str, names: dict[str, str]) -> dict[str, int]:
    elb = boto3.client("elbv2", region_name="us-east-1")
    action = elb.describe_listeners(ListenerArns=[listener_arn])["Listeners"][0]["DefaultActions"][0]
    return {names[g["TargetGroupArn"]]: g["Weight"] for g in action["ForwardConfig"]["TargetGroups"]}


@pytest.mark.parametrize("canary_error_rate,expected", [(0.1, "Succeeded"), (2.0, "RolledBack")])
async def test_alb_and_cloudwatch_in_moto(aws: str, ts_env: WorkflowEnvironment, task_queue: str, canary_error_rate: float, expected: str) -> None:
    demo = seed_alb(aws_session.session())
    tgs = demo["target_groups"]
    names = {tgs["checkout-stable"]: "stable", tgs["checkout-canary"]: "canary"}
    publish("v2", canary_error_rate)
    if expected == "Succeeded":  # named as the catalog names them: looked up once through alb_find_listener
        router = AlbRouterSpec(load_balancer="demo-alb", port=8080, stable_target_group="checkout-stable", canary_target_group="checkout-canary")
    else:
        router = AlbRouterSpec(
            listener_arn=demo["listener_canary_arn"], stable_target_group=tgs["checkout-stable"], canary_target_group=tgs["checkout-canary"]
        )
    elb = ElbActivities(AwsClients(aws_session.session()))
    metrics = MetricsActivities(cloudwatch=lambda region: aws_session.client("cloudwatch", region))
    recorder = Recorder([])
    inp = CanaryRampInput(meta=meta(), service="checkout", version="v2", router=router, plan=short_plan(20, 50))
    async with harness.running_worker(
        ts_env.client, task_queue, [CanaryRamp], [elb.alb_find_listener, elb.alb_get_weights, elb.alb_set_weights, metrics.measure_metric, metrics.measure_metrics, recorder.notify]
    ):
        result = await ts_env.client.execute_workflow(CanaryRamp.run, inp, id=f"canary-{uuid.uuid4().hex[:8]}", task_queue=task_queue)
    assert result.status == expected
    if expected == "Succeeded":
        assert [w.weight for w in result.weights] == [20, 50, 100]
        assert listener_weights(demo["listener_canary_arn"], names) == {"stable": 0, "canary": 100}
    else:
        assert [w.weight for w in result.weights] == [20, 0]
        assert result.failed_criterion == "error-rate < 0.5" and result.measured_values == [2.0, 2.0]
        assert listener_weights(demo["listener_canary_arn"], names) == {"stable": 100, "canary": 0}
        assert recorder.events[-2].kind == "rolled_back"


def deployment(name: str, replicas: int, version: str) -> dict:
    labels = {"app": "checkout", "version": version}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "app", "image": f"checkout:{version}"}]}},
        },
    }


def seed_kube(fake) -> HttpRouteRouterSpec:
    fake.put_object(deployment("checkout-stable", 4, "v1"))
    fake.put_object(deployment("checkout-canary", 0, "v2"))
    fake.put_object(
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": {"name": "checkout", "namespace": NS},
            "spec": {
                "parentRefs": [{"name": "public-gw"}],
                "rules": [{"backendRefs": [{"name": "checkout-stable", "port": 80, "weight": 100}, {"name": "checkout-canary", "port": 80, "weight": 0}]}],
            },
        }
    )
    return HttpRouteRouterSpec(
        namespace=NS,
        route="checkout",
        stable_service="checkout-stable",
        canary_service="checkout-canary",
        stable_deployment="checkout-stable",
        canary_deployment="checkout-canary",
    )


def replicas(fake, name: str) -> int:
    return fake.get("deployments", NS, name)["spec"]["replicas"]


def route_weights(fake) -> dict[str, int]:
    refs = fake.get("httproutes", NS, "checkout")["spec"]["rules"][0]["backendRefs"]
    return {r["name"]: r.get("weight", 1) for r in refs}


@pytest.mark.parametrize("bad", [False, True])
async def test_httproute_router_scales_the_canary_with_its_share(ts_env: WorkflowEnvironment, task_queue: str, bad: bool) -> None:
    from tests.canary.standins import HEALTHY, FakeMetrics

    with kube_fake() as kube:
        router = seed_kube(kube.fake)
        k8s = KubernetesActivities(lambda context: kube.api)
        seen: list[tuple[int, int]] = []  # (canary weight, canary replicas) after each weight change

        def value(metric: str, weight: int, n: int) -> float | None:
            w = route_weights(kube.fake)["checkout-canary"]
            seen.append((w, replicas(kube.fake, "checkout-canary")))
            return 3.0 if bad and metric == "error-rate" and w >= 50 else HEALTHY[metric]

        metrics = FakeMetrics(FakeTraffic([]), value)
        recorder = Recorder([])
        inp = CanaryRampInput(meta=meta(), service="checkout", version="v2", router=router, plan=short_plan(25, 50, minutes=2))
        acts = [k8s.get_deployment, k8s.scale_deployment, k8s.get_httproute_weights, k8s.set_httproute_weights, metrics.measure, metrics.measure_batch, recorder.notify]
        async with harness.running_worker(ts_env.client, task_queue, [CanaryRamp], acts):
            result = await ts_env.client.execute_workflow(CanaryRamp.run, inp, id=f"canary-{uuid.uuid4().hex[:8]}", task_queue=task_queue)
        # the canary had ceil(4 * w / 100) replicas while it took w %
        assert (25, 1) in seen and (50, 2) in seen
        patches = [r for r in kube.fake.requests if r.method == "PATCH"]
        if not bad:
            assert result.status == "Succeeded"
            assert route_weights(kube.fake) == {"checkout-stable": 0, "checkout-canary": 100}
            assert replicas(kube.fake, "checkout-canary") == 4 and replicas(kube.fake, "checkout-stable") == 0
        else:
            assert result.status == "RolledBack"
            assert route_weights(kube.fake) == {"checkout-stable": 100, "checkout-canary": 0}
            assert replicas(kube.fake, "checkout-canary") == 0 and replicas(kube.fake, "checkout-stable") == 4
            # weight 0 first, then the scale-down
            assert "httproutes" in patches[-2].path and patches[-1].path.endswith("/checkout-canary/scale")


async def test_provider_outage_asks_a_person_then_rolls_back(ts_env: WorkflowEnvironment, task_queue: str) -> None:
    log: list[tuple] = []
    traffic, recorder = FakeTraffic(log), Recorder(log)
    metrics = MetricsActivities(prometheus_url=f"http://127.0.0.1:{harness.free_port()}")  # nobody listens
    router = AlbRouterSpec(listener_arn="arn:listener", stable_target_group=STABLE, canary_target_group=CANARY)
    template = prometheus_template(name="default")
    inp = CanaryRampInput(meta=meta(), service="checkout", version="v2", router=router, templates=[template], decision_timeout="10m")
    async with harness.running_worker(ts_env.client, task_queue, [CanaryRamp], [traffic.get, traffic.set, metrics.measure_metric, metrics.measure_metrics, recorder.notify]):
        result = await ts_env.client.execute_workflow(CanaryRamp.run, inp, id=f"canary-{uuid.uuid4().hex[:8]}", task_queue=task_queue)
    assert result.status == "RolledBack"
    assert result.verdict is not None and result.verdict.phase == "Error"
    t0 = result.weights[0].at
    # 5 consecutive errors (limit 4) at 5 min, then 10 min without a decision
    assert round((result.weights[-1].at - t0) / M) == 15
    assert traffic.weights == {STABLE: 100, CANARY: 0}
    assert any(e.kind == "approval_needed" for e in recorder.events)
