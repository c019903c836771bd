"""The dry run of every runbook against the real stand-ins: the plan shows what the run would change, read from the
systems it would change, and afterwards nothing has changed (moto's resources described before and after, the
Kubernetes fakes' change ledgers, the Terraform workspaces and state serial, PostgreSQL's databases).

The worker registers only READ-ONLY activities: a dry run that tried to change something would fail on an
unregistered activity."""

from __future__ import annotations

import asyncio
import uuid
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator, Callable

import psycopg
import pytest
from temporalio.testing import ActivityEnvironment

from activities.aws import AwsClients, ElbActivities, RdsActivities, Route53Activities, S3Activities
from activities.kubernetes import KubernetesActivities
from activities.terraform import TerraformActivities, TerraformAdapter
from core.approval import ApprovalPolicy
from core.canary import CanaryRampInput
from core.catalog import StartPlan
from core.dry_run import DryRunPlan
from core.provision import PlanInput, ProvisionEnvironmentInput, StateInput
from core.restore import PgServer, scratch_name
from core.runbook import RunbookInput, RunbookMeta
from starters.client import DryRunFailed, RunbookClient
from tests import aws_session, harness
from tests.bluegreen.conftest import Alb, make_input, seed_kubernetes
from tests.dryrun.waiting import Waiting
from tests.failover.conftest import EAST, NS, WEST, HealthServer, seed_aws, seed_deployment
from tests.fakes.kubernetes import kube_fake
from tests.matrix.moto_ledger import Snapshotter
from workflows.dry_run import RunbookDryRun
from workflows.failover import DnsSpec, RegionFailbackInput, RegionFailoverInput, RegionSide
from workflows.restore_drill import RestoreDrillInput

MODULE = Path(__file__).resolve().parents[1] / "provision" / "modules" / "app"  # provider-free: outputs only


class _Preview:
    def __init__(self, colour: str) -> None:
        self.url = f"http://127.0.0.1:1/{colour}"  # never reached: a dry run sends no request to the colours


COLOURS = {c: _Preview(c) for c in ("blue", "green")}


def moto_state(moto: str) -> dict[str, Any]:
    """Every resource a runbook changes, described through the public API (the failure matrix's snapshot)."""
    return Snapshotter(moto, "123456789012", ["elbv2", "route53", "rds", "s3"], [EAST, WEST]).take()


def read_only_activities(kube: Callable[[str | None], Any] | None = None, tf_root: Path | None = None) -> list[Callable]:
    clients = AwsClients(aws_session.session())
    elb, rds, r53, s3 = ElbActivities(clients), RdsActivities(clients), Route53Activities(clients), S3Activities(clients)
    acts: list[Callable] = [elb.alb_find_listener, elb.alb_get_weights, elb.alb_target_health, rds.rds_describe_instance,
                            rds.rds_replica_lag, rds.rds_latest_snapshot, r53.route53_get_records, s3.s3_bucket_exists,
                            s3.s3_latest_object]
    if kube is not None:
        k8s = KubernetesActivities(kube)
        acts += [k8s.get_deployment, k8s.get_service_selector, k8s.get_httproute_weights, k8s.get_namespace]
    if tf_root is not None:
        tf = TerraformActivities(None, tf_root)
        acts += [tf.check_module, tf.plan_preview]
    return acts


@asynccontextmanager
async def dry_runner(env, acts: list[Callable]) -> AsyncIterator[Callable[..., Any]]:
    task_queue = harness.new_task_queue()

    async def dry(workflow_type: str, inp: RunbookInput, workflow_id: str | None = None):
        plan = StartPlan(inp.meta.runbook, workflow_type, workflow_id or f"{inp.meta.runbook}:{uuid.uuid4().hex[:6]}",
                         inp, inp.meta)
        return await RunbookClient(env.client, task_queue).dry_run(plan)

    async with harness.running_worker(env.client, task_queue, [RunbookDryRun], acts):
        yield dry


def meta(runbook: str, target: str, environment: str = "prod", **policy: Any) -> RunbookMeta:
    return RunbookMeta(runbook=runbook, target=target, environment=environment, requested_by="bob",
                       approval=ApprovalPolicy(approvers=["alice"], groups={"sre": ["carol", "dave"]},
                                               required_approvals=policy.pop("required_approvals", 1), **policy))


def changes(plan: DryRunPlan) -> list[tuple[str, str, str, str]]:
    return [(c.step, c.target, c.before, c.after) for c in plan.changes]


def reads(plan: DryRunPlan) -> dict[str, str]:
    return {r.what: r.value for r in plan.reads}


# ----------------------------------------------------------------------------------------------- blue-green
async def test_blue_green_kubernetes_shows_the_switch_and_changes_nothing(ts_env, aws) -> None:
    with kube_fake() as kube:
        seed_kubernetes(kube.fake)
        before = kube.fake.state()
        inp = make_input(COLOURS)
        async with dry_runner(ts_env, read_only_activities(lambda context: kube.api)) as dry:
            outcome = await dry("BlueGreenCutover", inp)
        assert kube.fake.ledger == [] and kube.fake.state() == before
    plan = outcome.plan
    assert outcome.status == "DryRun" and plan.outcome == "WouldChange"
    assert reads(plan)["live colour"] == "blue"
    assert reads(plan)["Deployment shop-green"] == "absent"
    assert changes(plan) == [
        ("bring-up", "Deployment shop-green", "absent", "3 replicas, image shop:v2"),
        ("switch", "Service shop-prod/shop selector", "app=shop,colour=blue", "app=shop,colour=green"),
        ("scale-down", "Deployment shop-blue", "3 replicas", "0 replicas"),
    ]
    assert plan.approval[0] == "1 approval(s) from alice; no self-approval; timeout 1h -> reject"
    assert "gate: cutover (before the switch)" in plan.approval
    # the bake and the rollback triggers (issue 13: "the bake and rollback triggers"), and what a rollback does
    assert any(line.startswith("bake 3m, every 1m: http-health (2 request(s)") for line in plan.procedure), plan.procedure
    assert plan.rollback[0].startswith("rolls back when: a preview check fails")
    assert plan.rollback[1:] == ["Service shop-prod/shop selector back to colour=blue", "Deployment shop-green removed"]


async def test_blue_green_alb_shows_the_forward_action_before_and_after(ts_env, aws, moto) -> None:
    alb = Alb()
    inp = make_input(COLOURS, router="alb", alb=alb)
    was = moto_state(moto)
    async with dry_runner(ts_env, read_only_activities()) as dry:
        outcome = await dry("BlueGreenCutover", inp)
    assert moto_state(moto) == was
    plan = outcome.plan
    blue, green = alb.groups["blue"], alb.groups["green"]
    assert reads(plan)["blue target group"].startswith(f"{blue} (weight 1;")
    assert ("switch", f"listener {alb.listener} forward action", f"blue ({blue})", f"green ({green})") in changes(plan)
    assert changes(plan)[0] == ("bring-up", f"target group {green}", "-", "register 10.0.1.20:8080, 10.0.2.20:8080")


# ----------------------------------------------------------------------------------------------- canary
def seed_canary_alb() -> dict[str, str]:
    elb, ec2 = aws_session.client("elbv2", region_name=EAST), aws_session.client("ec2", region_name=EAST)
    vpc = ec2.create_vpc(CidrBlock="10.1.0.0/16")["Vpc"]["VpcId"]
    subnets = [ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.1.{i}.0/24", AvailabilityZone=f"us-east-1{z}")["Subnet"]["SubnetId"]
               for i, z in ((1, "a"), (2, "b"))]
    lb = elb.create_load_balancer(Name="web-alb", Subnets=subnets, Type="application")["LoadBalancers"][0]
    groups = {name: elb.create_target_group(Name=f"web-{name}", Protocol="HTTP", Port=80, VpcId=vpc)["TargetGroups"][0]["TargetGroupArn"]
              for name in ("stable", "canary")}
    elb.create_listener(LoadBalancerArn=lb["LoadBalancerArn"], Protocol="HTTP", Port=80, DefaultActions=[{
        "Type": "forward", "ForwardConfig": {"TargetGroups": [{"TargetGroupArn": groups["stable"], "Weight": 100},
                                                             {"TargetGroupArn": groups["canary"], "Weight": 0}]}}])
    return groups


async def test_canary_alb_shows_every_weight_and_the_rendered_queries(ts_env, aws, moto) -> None:
    groups = seed_canary_alb()
    inp = CanaryRampInput(meta=meta("canary-ramp", "web"), service="web", version="v2",
                          router={"kind": "alb", "load_balancer": "web-alb", "port": 80},
                          templates=[{"name": "default", "metrics": [{
                              "name": "errors", "success": "< 1",
                              "query": {"provider": "prometheus", "query": 'rate(errors{version="{{version}}"}[1m])'}}]}])
    was = moto_state(moto)
    async with dry_runner(ts_env, read_only_activities()) as dry:
        outcome = await dry("CanaryRamp", inp)
    assert moto_state(moto) == was
    plan = outcome.plan
    assert reads(plan)["canary share now"] == "0%"
    assert reads(plan)["stable target group weight"] == f"{groups['stable']}: 100"
    weights = [(c.step, c.before, c.after) for c in plan.changes]
    assert [w[2] for w in weights] == ["canary 5% / stable 95%", "canary 25% / stable 75%", "canary 50% / stable 50%",
                                       "canary 100% / stable 0%"]
    assert weights[0][1] == "canary 0% / stable 100%"
    assert any('PromQL rate(errors{version="v2"}[1m])' in line for line in plan.procedure), plan.procedure
    assert plan.rollback == ["ALB web-alb:80: canary weight to 0% (stable 100%)"]


async def test_canary_httproute_shows_weights_and_the_canary_replicas(ts_env) -> None:
    from tests.canary.test_end_to_end import NS as SHOP
    from tests.canary.test_end_to_end import seed_kube

    with kube_fake() as kube:
        router = seed_kube(kube.fake)
        inp = CanaryRampInput(meta=meta("canary-ramp", "checkout"), service="checkout", version="v2",
                              router=router.model_dump(), plan=[{"set_weight": 25}, {"pause": {}}, {"set_weight": 100}])
        before = kube.fake.state()
        async with dry_runner(ts_env, read_only_activities(lambda context: kube.api)) as dry:
            outcome = await dry("CanaryRamp", inp)
        assert kube.fake.ledger == [] and kube.fake.state() == before
    plan = outcome.plan
    assert reads(plan)[f"stable Deployment {SHOP}/checkout-stable"] == "4 replicas, image checkout:v1"
    assert changes(plan) == [
        ("step 1/3", f"Deployment {SHOP}/checkout-canary", "0 replicas", "1 replicas"),
        ("step 1/3", f"HTTPRoute {SHOP}/checkout", "canary 0% / stable 100%", "canary 25% / stable 75%"),
        ("step 3/3", f"Deployment {SHOP}/checkout-canary", "1 replicas", "4 replicas"),
        ("step 3/3", f"HTTPRoute {SHOP}/checkout", "canary 25% / stable 75%", "canary 100% / stable 0%"),
        ("promote", f"Deployment {SHOP}/checkout-stable", "4 replicas", "0 replicas"),
    ]
    assert "gate: continue at step 2/3 (pause until approved; rejected or timed out rolls back)" in plan.approval


async def test_a_freeze_in_force_is_shown_with_its_window(ts_env, tmp_path) -> None:
    from activities.calendar import CalendarActivities

    stock = Path(__file__).parents[2] / "runbooks"
    (tmp_path / "groups.yaml").write_text((stock / "groups.yaml").read_text())
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "calendar.yaml").write_text("windows:\n  - {name: w, start: 2020-01-01T00:00, end: 2019-01-01T00:00}\n")
    (tmp_path / "calendar.yaml").write_text(
        "timezone: UTC\nbreak_glass: {groups: [sre], required_approvals: 1, timeout: 4h}\nwindows:\n"
        "  - {name: long-freeze, start: 2020-01-01T00:00, end: 2040-01-01T00:00, environments: [prod],"
        " runbooks: [blue-green]}\n")
    with kube_fake() as kube:
        seed_kubernetes(kube.fake)
        acts = [*read_only_activities(lambda context: kube.api), CalendarActivities(broken).check_freeze]
        async with dry_runner(ts_env, acts) as dry:
            with pytest.raises(DryRunFailed, match=r"^change calendar: could not read runbooks/calendar.yaml: "):
                await dry("BlueGreenCutover", make_input(COLOURS))
        (tmp_path / "blue-green.yaml").write_text((stock / "blue-green.yaml").read_text())
        acts = [*read_only_activities(lambda context: kube.api), CalendarActivities(tmp_path).check_freeze]
        async with dry_runner(ts_env, acts) as dry:
            frozen = (await dry("BlueGreenCutover", make_input(COLOURS))).plan
            other = make_input(COLOURS, meta=meta("blue-green", "shop", environment="staging"))
            open_ = (await dry("BlueGreenCutover", other)).plan
            refusing = make_input(COLOURS, meta=meta("blue-green", "shop").model_copy(update={"freeze": "refuse"}))
            refused = (await dry("BlueGreenCutover", refusing)).plan
        assert kube.fake.ledger == []
    assert frozen.freeze.frozen and frozen.freeze.window == "long-freeze"
    assert frozen.freeze.ends_at is not None and frozen.freeze.ends_at.year == 2040
    assert "the run would wait until it ends (or a break-glass approval)" in frozen.freeze.text()
    assert open_.freeze.checked and not open_.freeze.frozen and open_.outcome == "WouldChange"
    assert frozen.outcome == "WouldChange"  # it would wait: its changes are listed
    assert refused.outcome == "WouldRefuse" and refused.refusal == refused.freeze.text()
    assert "the run would be refused" in refused.freeze.text()


async def test_canary_that_the_run_would_refuse_says_why_and_exits_3(ts_env, aws) -> None:
    seed_canary_alb()
    inp = CanaryRampInput(meta=meta("canary-ramp", "web"), service="web", version="v2",
                          router={"kind": "alb", "load_balancer": "web-alb", "port": 80, "canary_target_group": "nope"})
    async with dry_runner(ts_env, read_only_activities()) as dry:
        outcome = await dry("CanaryRamp", inp)
    assert outcome.plan.outcome == "WouldRefuse" and outcome.plan.changes == []
    assert "looking up target groups web-stable, nope" in (outcome.plan.refusal or "")


# ----------------------------------------------------------------------------------------------- failover / failback
@asynccontextmanager
async def two_regions(east_replicas: int = 4, west_replicas: int = 0):
    zone = seed_aws()
    health = HealthServer()
    with kube_fake() as east, kube_fake() as west:
        seed_deployment(east.fake, east_replicas)
        seed_deployment(west.fake, west_replicas)
        try:
            yield zone, health, east, west
        finally:
            health.close()


def side(region: str, health: HealthServer, **kw: Any) -> RegionSide:
    east = region == EAST
    return RegionSide(**{**dict(region=region, health_url=health.url, database="orders-east" if east else "orders-west",
                                read_only_parameter_group="read-only", k8s_context="east" if east else "west",
                                namespace=NS, deployment="web", replicas=4, standby_replicas=1,
                                dns_value=f"web.{region}.example.com"), **kw})


async def test_failover_drill_lists_the_ordered_changes_with_before_and_after(ts_env, aws, moto) -> None:
    async with two_regions() as (zone, health, east, west):
        inp = RegionFailoverInput(meta=meta("region-failover", "shop"), service="shop", mode="drill",
                                  primary=side(EAST, health), dr=side(WEST, health),
                                  dns=DnsSpec(zone_id=zone, record_name="shop.example.com."))
        was = moto_state(moto)
        apis = {"east": east.api, "west": west.api}
        async with dry_runner(ts_env, read_only_activities(lambda context: apis[context])) as dry:
            outcome = await dry("RegionFailover", inp)
        assert moto_state(moto) == was
        assert east.fake.ledger == [] and west.fake.ledger == []
    plan = outcome.plan
    found = reads(plan)
    assert found[f"database {EAST}/orders-east"].startswith("primary; parameter groups ")
    assert found[f"database {WEST}/orders-west"].startswith(f"replica of {EAST}/orders-east")
    assert found[f"replica lag of {WEST}/orders-west"] != "-"
    assert found[f"Deployment {EAST}/{NS}/web"] == "4 replicas" and found[f"Deployment {WEST}/{NS}/web"] == "0 replicas"
    steps = changes(plan)
    assert [s[0] for s in steps] == ["fence", "fence", "promote", "scale", "dns", "dns"]
    assert steps[0] == ("fence", f"Deployment {EAST}/web", "4 replicas", "0 replicas")
    assert steps[1][3] == "parameter group read-only (writes blocked)"
    assert steps[3] == ("scale", f"Deployment {WEST}/web", "0 replicas", "4 replicas")
    assert steps[4] == ("dns", "shop.example.com. (primary)", f"web.{EAST}.example.com PRIMARY ttl 60",
                        f"web.{WEST}.example.com PRIMARY ttl 60")
    assert plan.freeze.checked


async def test_failover_drill_that_would_be_refused_says_why(ts_env, aws) -> None:
    async with two_regions() as (zone, health, east, west):
        aws_session.client("rds", region_name=EAST).create_db_instance(
            DBInstanceIdentifier="orders-east-failback", DBInstanceClass="db.t3.micro", Engine="postgres",
            MasterUsername="admin", MasterUserPassword="password123", AllocatedStorage=20)
        inp = RegionFailoverInput(meta=meta("region-failover", "shop"), service="shop", mode="drill",
                                  primary=side(EAST, health), dr=side(WEST, health),
                                  dns=DnsSpec(zone_id=zone, record_name="shop.example.com."))
        apis = {"east": east.api, "west": west.api}
        async with dry_runner(ts_env, read_only_activities(lambda context: apis[context])) as dry:
            outcome = await dry("RegionFailover", inp)
    assert outcome.plan.outcome == "WouldRefuse" and outcome.plan.changes == []
    assert outcome.plan.refusal == f"{EAST}/orders-east-failback already exists (a drill creates and removes it)"


async def test_failback_plans_the_replica_it_would_create(ts_env, aws, moto) -> None:
    async with two_regions() as (zone, health, east, west):
        inp = RegionFailbackInput(meta=meta("region-failback", "shop"), service="shop",
                                  original=side(WEST, health), current=side(EAST, health), replica="orders-west-back",
                                  dns=DnsSpec(zone_id=zone, record_name="shop.example.com."))
        was = moto_state(moto)
        apis = {"east": east.api, "west": west.api}
        async with dry_runner(ts_env, read_only_activities(lambda context: apis[context])) as dry:
            outcome = await dry("RegionFailback", inp)
        assert moto_state(moto) == was
        assert east.fake.ledger == [] and west.fake.ledger == []
    steps = changes(outcome.plan)
    assert steps[0] == ("replica", f"database {WEST}/orders-west-back", "absent", f"read replica of {EAST}/orders-east")
    assert [s[0] for s in steps] == ["replica", "fence", "fence", "promote", "scale", "dns", "dns", "standby"]
    assert steps[-1] == ("standby", f"Deployment {EAST}/web", "0 replicas (fenced)", "1 replicas")


async def test_an_unreachable_system_is_named_and_nothing_is_started(ts_env, aws, monkeypatch) -> None:
    async with two_regions() as (zone, health, east, west):
        inp = RegionFailoverInput(meta=meta("region-failover", "shop"), service="shop", mode="drill",
                                  primary=side(EAST, health), dr=side(WEST, health),
                                  dns=DnsSpec(zone_id=zone, record_name="shop.example.com."))
        west.fake.fail_next("GET", "/deployments/web", 503, times=10)
        apis = {"east": east.api, "west": west.api}
        async with dry_runner(ts_env, read_only_activities(lambda context: apis[context])) as dry:
            with pytest.raises(DryRunFailed) as failed:
                await dry("RegionFailover", inp)
    assert str(failed.value).startswith(f"Kubernetes: could not read Deployment {WEST}/{NS}/web: ")
    assert str(failed.value).endswith("nothing was started")


# ----------------------------------------------------------------------------------------------- provision
def provision_input(environment: str, **variables: Any) -> ProvisionEnvironmentInput:
    return ProvisionEnvironmentInput(meta=meta("provision-environment", environment, "sandbox"), environment=environment,
                                     tier="sandbox", module=str(MODULE), ttl="8h", record_bucket="env-records",
                                     namespace={"enabled": True}, variables=variables)


def apply_for_real(tf: TerraformActivities, inp: ProvisionEnvironmentInput) -> None:
    from core.provision import ApplyInput

    env = ActivityEnvironment()
    summary = env.run(tf.plan, PlanInput(target=inp.target()))
    env.run(tf.apply, ApplyInput(target=inp.target(), plan_hash=summary.plan_hash))


async def test_provision_shows_the_terraform_plan_per_address_and_writes_no_state(ts_env, aws, moto, tmp_path) -> None:
    root = tmp_path / "terraform"
    was = moto_state(moto)  # the S3 record it would write: not written (the real apply below touches no AWS)
    with kube_fake() as kube:
        async with dry_runner(ts_env, read_only_activities(lambda context: kube.api, root)) as dry:
            fresh = await dry("ProvisionEnvironment", provision_input("sbx-one"))
            assert not root.joinpath("sbx-one").exists()  # no working dir, so no workspace, was made
            tf = TerraformActivities(None, root)
            apply_for_real(tf, provision_input("sbx-one"))
            state = ActivityEnvironment().run(tf.state_version, StateInput(target=provision_input("sbx-one").target()))
            workspaces = TerraformAdapter(root / "sbx-one").workspaces()
            same = await dry("ProvisionEnvironment", provision_input("sbx-one"))
            changed = await dry("ProvisionEnvironment", provision_input("sbx-one", replicas=5))
            after = ActivityEnvironment().run(tf.state_version, StateInput(target=provision_input("sbx-one").target()))
        assert kube.fake.ledger == []
    assert moto_state(moto) == was
    assert (after.lineage, after.serial) == (state.lineage, state.serial)
    assert TerraformAdapter(root / "sbx-one").workspaces() == workspaces
    assert not list(root.glob(".dry-run-*"))
    plan = fresh.plan
    assert reads(plan)["workspace sbx-one"] == "no state yet"
    assert ("apply", "output hostname", "-", "create") in changes(plan)
    assert ("namespace", "namespace sbx-one", "absent") == changes(plan)[-2][:3]
    assert changes(plan)[-1][:2] == ("record", "s3://env-records/environments/sbx-one.json")
    assert same.plan.outcome == "NothingToChange" and same.plan.changes == []
    assert reads(changed.plan)["workspace sbx-one"] == f"state serial {state.serial}"
    assert [c[1:] for c in changes(changed.plan) if c[0] == "apply"] == [("output replicas", "-", "update")]


# ----------------------------------------------------------------------------------------------- restore drill
async def test_restore_drill_names_the_backup_it_would_pick(ts_env, aws, moto, postgres) -> None:
    s3 = aws_session.client("s3")
    for bucket in ("drill-dumps", "drill-reports"):
        s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket="drill-dumps", Key="orders/2026-01-01.dump", Body=b"old")
    await asyncio.sleep(1.1)  # S3's LastModified has a one-second resolution
    s3.put_object(Bucket="drill-dumps", Key="orders/2026-01-02.dump", Body=b"newest!")
    inp = RestoreDrillInput(meta=meta("restore-drill", "orders", required_approvals=0), database="orders",
                            dump_bucket="drill-dumps", dump_prefix="orders/", report_bucket="drill-reports",
                            restore_server=PgServer(host="127.0.0.1", vault_path="secret/db/restore"),
                            checks=[{"kind": "tables_present", "tables": ["orders"]}])

    def databases() -> list[str]:
        with psycopg.connect(postgres, autocommit=True) as conn:
            return sorted(r[0] for r in conn.execute("SELECT datname FROM pg_database"))

    was, dbs = moto_state(moto), databases()
    async with dry_runner(ts_env, read_only_activities()) as dry:
        outcome = await dry("RestoreDrill", inp, workflow_id="restore-drill:orders")
    assert moto_state(moto) == was and databases() == dbs
    plan = outcome.plan
    assert reads(plan)["backup"] == "s3://drill-dumps/orders/2026-01-02.dump"
    assert reads(plan)["backup age / size"].endswith("; 7 bytes")
    assert changes(plan)[0][:3] == ("restore", f"database {scratch_name('restore-drill:orders', kind='database')} on "
                                          "127.0.0.1:5432", "absent")
    assert any(line.startswith("check ") and "tables_present" in line for line in plan.procedure)
    assert plan.approval == ["no approval required by the policy (required_approvals: 0)"]


# ----------------------------------------------------------------------------------------------- already running
async def test_a_run_already_going_for_the_key_is_reported_not_planned(ts_env, aws) -> None:
    task_queue = harness.new_task_queue()
    inp = CanaryRampInput(meta=meta("canary-ramp", "web"), service="web", version="v2",
                          router={"kind": "alb", "load_balancer": "web-alb", "port": 80})
    workflow_id = f"canary:web:{uuid.uuid4().hex[:6]}"
    async with harness.running_worker(ts_env.client, task_queue, [Waiting, RunbookDryRun], []):
        handle = await ts_env.client.start_workflow(Waiting.run, id=workflow_id, task_queue=task_queue)
        plan = StartPlan("canary-ramp", "CanaryRamp", workflow_id, inp, inp.meta)
        outcome = await RunbookClient(ts_env.client, task_queue).dry_run(plan)
        await handle.terminate()
    assert outcome.status == "AlreadyRunning" and outcome.running_run_id == handle.result_run_id
    assert outcome.plan is None


def test_moto_is_untouched_by_describing_it(moto) -> None:
    """The snapshot itself only reads (so it cannot hide a change)."""
    harness.http().post(f"{moto}/moto-api/reset").raise_for_status()
    assert moto_state(moto) == moto_state(moto)
