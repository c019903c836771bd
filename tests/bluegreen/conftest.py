"""Fixtures of the blue-green tests: the colours as local HTTP servers, a seeded Kubernetes fake, an ALB in moto,
and a worker with the real activities."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, AsyncIterator

import pytest
from temporalio.client import Client, WorkflowHandle

from activities.aws import AwsClients, ElbActivities
from activities.http_checks import HttpCheckActivities
from activities.kubernetes import KubernetesActivities
from activities.metrics import MetricsActivities
from core.approval import ApprovalPolicy, ApproveInput, RejectInput
from core.runbook import TERMINAL, RunbookMeta
from tests import aws_session, harness
from tests.bluegreen.servers import ColourServer
from tests.fakes.kubernetes import kube_fake
from workflows.blue_green import BlueGreenCutover, BlueGreenInput

NS = "shop-prod"
SERVICE = "shop"


@pytest.fixture
def colours():
    with ColourServer("blue", "shop:v1") as blue, ColourServer("green", "shop:v2") as green:
        yield {"blue": blue, "green": green}


def seed_kubernetes(fake, replicas: int = 3) -> None:
    labels = {"app": SERVICE, "colour": "blue"}
    fake.put_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    fake.put_object(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": SERVICE, "namespace": NS},
            "spec": {"selector": dict(labels), "ports": [{"port": 80, "targetPort": 8080}]},
        }
    )
    fake.put_object(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": f"{SERVICE}-blue", "namespace": NS, "labels": dict(labels)},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": dict(labels)},
                "template": {
                    "metadata": {"labels": dict(labels)},
                    "spec": {
                        "containers": [
                            {"name": "app", "image": "shop:v1", "env": [{"name": "MODE", "value": "prod"}],
                             "ports": [{"containerPort": 8080}]}
                        ]
                    },
                },
            },
        }
    )


@pytest.fixture
def kube():
    with kube_fake() as handle:
        seed_kubernetes(handle.fake)
        yield handle


def selector(fake) -> dict:
    return fake.get("services", NS, SERVICE)["spec"]["selector"]


def deployment(fake, colour: str) -> dict | None:
    return fake.get("deployments", NS, f"{SERVICE}-{colour}")


class Alb:
    """An ALB in moto: VPC, two subnets, a target group per colour, a listener forwarding to blue."""

    def __init__(self) -> None:
        self.elb = aws_session.client("elbv2", region_name="us-east-1")
        ec2 = aws_session.client("ec2", region_name="us-east-1")
        vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        subnets = [
            ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.0.{i}.0/24", AvailabilityZone=f"us-east-1{z}")["Subnet"]["SubnetId"]
            for i, z in ((1, "a"), (2, "b"))
        ]
        lb = self.elb.create_load_balancer(Name="shop-alb", Subnets=subnets, Type="application")["LoadBalancers"][0]
        self.groups = {
            colour: self.elb.create_target_group(
                Name=f"shop-{colour}", Protocol="HTTP", Port=8080, VpcId=vpc, TargetType="ip"
            )["TargetGroups"][0]["TargetGroupArn"]
            for colour in ("blue", "green")
        }
        self.elb.register_targets(
            TargetGroupArn=self.groups["blue"], Targets=[{"Id": "10.0.1.10", "Port": 8080}, {"Id": "10.0.2.10", "Port": 8080}]
        )
        self.listener = self.elb.create_listener(
            LoadBalancerArn=lb["LoadBalancerArn"],
            Protocol="HTTP",
            Port=80,
            DefaultActions=[{"Type": "forward", "TargetGroupArn": self.groups["blue"]}],
        )["Listeners"][0]["ListenerArn"]
        self.cloudwatch = aws_session.client("cloudwatch", region_name="us-east-1")

    def weights(self) -> dict[str, int]:
        action = self.elb.describe_listeners(ListenerArns=[self.listener])["Listeners"][0]["DefaultActions"][0]
        groups = (action.get("ForwardConfig") or {}).get("TargetGroups")
        if groups:
            return {self.colour_of(g["TargetGroupArn"]): g.get("Weight", 1) for g in groups}
        return {self.colour_of(action["TargetGroupArn"]): 1}

    def colour_of(self, arn: str) -> str:
        return next(c for c, a in self.groups.items() if a == arn)

    def targets(self, colour: str) -> list[str]:
        described = self.elb.describe_target_health(TargetGroupArn=self.groups[colour])["TargetHealthDescriptions"]
        return sorted(d["Target"]["Id"] for d in described if d["TargetHealth"]["State"] != "draining")

    def publish(self, version: str, error_rate: float, p99: float) -> None:
        dims = [{"Name": "Service", "Value": SERVICE}, {"Name": "Version", "Value": version}]
        self.cloudwatch.put_metric_data(
            Namespace="Demo/Service",
            MetricData=[
                {"MetricName": "ErrorRate", "Dimensions": dims, "Value": error_rate},
                {"MetricName": "LatencyP99", "Dimensions": dims, "Value": p99},
            ],
        )


@pytest.fixture
def alb(aws) -> Alb:
    return Alb()


def policy(**kw: Any) -> ApprovalPolicy:
    return ApprovalPolicy(approvers=["alice"], timeout=kw.pop("timeout", "1h"), reminder_interval=None, **kw)


def make_input(colours: dict, *, router: str = "kubernetes", alb: Alb | None = None, approval: ApprovalPolicy | None = None,
               **overrides: Any) -> BlueGreenInput:
    data: dict[str, Any] = dict(
        meta=RunbookMeta(runbook="blue-green", target=SERVICE, environment="prod", requested_by="bob",
                         approval=approval or policy()),
        service=SERVICE,
        image="shop:v2",
        router=router,
        preview_urls={c: s.url for c, s in colours.items()},
        smoke_checks=[{"name": "smoke", "path": "/smoke", "expect_body": "{version}"}],
        check_attempts=2,
        check_interval="0s",
        bake="3m",
        bake_interval="1m",
        bake_probes=2,
        bake_analysis=None,
    )
    if router == "kubernetes":
        data["kubernetes"] = {"namespace": NS}
    else:
        assert alb is not None
        data["alb"] = {
            "listener_arn": alb.listener,
            "target_groups": alb.groups,
            "targets": [{"id": "10.0.1.20", "port": 8080}, {"id": "10.0.2.20", "port": 8080}],
            "poll_seconds": 5,
        }
    data.update(overrides)
    return BlueGreenInput(**data)


def activities(recording, kube=None, replace: dict[str, Any] | None = None) -> list:
    """The real activities; ``replace`` swaps some for stand-ins registered under the real name (by name)."""
    http = HttpCheckActivities()
    k8s = KubernetesActivities(lambda context: kube.api) if kube is not None else None
    clients = AwsClients(aws_session.session())
    elb = ElbActivities(clients)
    metrics = MetricsActivities(cloudwatch=lambda region: clients.client("cloudwatch", region))
    acts = [recording[1].notify, http.http_probe, http.http_check_suite, metrics.measure_metric, metrics.measure_metrics,
            elb.alb_find_listener, elb.alb_get_weights, elb.alb_switch_target_group, elb.alb_register_targets, elb.alb_deregister_targets,
            elb.alb_target_health]
    if k8s is not None:
        acts += [k8s.get_deployment, k8s.apply_deployment, k8s.wait_rollout, k8s.scale_deployment,
                 k8s.delete_deployment, k8s.get_service_selector, k8s.set_service_selector]
    replace = replace or {}
    return [replace.get(a.__temporal_activity_definition.name, a) for a in acts]


@contextlib.asynccontextmanager
async def worker(env, task_queue: str, recording, kube=None, replace: dict[str, Any] | None = None) -> AsyncIterator[Client]:
    async with harness.running_worker(env.client, task_queue, [BlueGreenCutover], activities(recording, kube, replace)):
        yield env.client


async def start(client: Client, task_queue: str, inp: BlueGreenInput, workflow_id: str | None = None, **kw) -> WorkflowHandle:
    return await client.start_workflow(
        BlueGreenCutover.run,
        inp,
        id=workflow_id or f"bluegreen:{SERVICE}:{harness.new_task_queue()}",
        task_queue=task_queue,
        **kw,
    )


async def wait_for(handle: WorkflowHandle, predicate, timeout: float = 60.0, settle: bool = False):
    """Poll the status query (no time skipping happens while we poll) until ``predicate(status)`` holds. ``settle``:
    query only a run with nothing pending (``harness.settled``): a run that may continue as new meanwhile."""
    deadline = asyncio.get_running_loop().time() + timeout
    reads = 0
    while True:
        if settle:  # within the same deadline as the reads
            await harness.settled(handle, max(deadline - asyncio.get_running_loop().time(), 1.0))
        status = await harness.query(handle, BlueGreenCutover.status)
        if predicate(status):
            return status
        if status.status in TERMINAL:
            raise AssertionError(f"the run ended while we waited: {status.status}: {status.stage}")
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting; last status: {status.status} {status.stage} {status.details.get('phase')}")
        await harness.backoff(reads)
        reads += 1


def open_gate(status, gate_prefix: str):
    """The open gate whose id starts with ``gate_prefix`` (several may be open at once), or None."""
    return next((g for g in status.open_gates if g.gate_id.startswith(gate_prefix)), None)


async def approve(handle: WorkflowHandle, gate_prefix: str = "cutover", who: str = "alice") -> None:
    status = await wait_for(handle, lambda s: open_gate(s, gate_prefix) is not None)
    gate = open_gate(status, gate_prefix)
    await handle.execute_update(
        BlueGreenCutover.approve, ApproveInput(gate_id=gate.gate_id, approver=who, binding=gate.binding)
    )


async def reject(handle: WorkflowHandle, gate_prefix: str, who: str = "alice", reason: str = "no") -> None:
    status = await wait_for(handle, lambda s: open_gate(s, gate_prefix) is not None)
    gate = open_gate(status, gate_prefix)
    await handle.execute_update(BlueGreenCutover.reject, RejectInput(gate_id=gate.gate_id, approver=who, reason=reason))
