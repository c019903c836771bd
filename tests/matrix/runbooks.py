"""The runbooks of the failure matrix: how each is seeded on its stand-ins, started, snapshotted, and which end state
is safe for it. Inputs are small (short plans, no approvals) so that one run takes a fraction of a second."""

from __future__ import annotations

import json
import subprocess
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import boto3
import psycopg
from botocore.config import Config
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from core.approval import ApprovalPolicy
from core.runbook import RunbookMeta
from tests import harness

REPO = Path(__file__).resolve().parents[2]
EAST, WEST = "us-east-1", "us-west-2"


_SESSION = boto3.Session()
_SESSION_LOCK = threading.Lock()


@dataclass
class Ctx:
    """One case's stand-ins."""

    case_id: str
    workflow_id: str
    dir: Path
    account: str
    access_key: str
    moto_url: str
    kube: dict[str, Any] = field(default_factory=dict)  # context -> KubeFake
    servers: list[Any] = field(default_factory=list)  # HTTP stand-ins to close
    shared: dict[str, Any] = field(default_factory=dict)  # session stand-ins (postgres, vault, dump)
    data: dict[str, Any] = field(default_factory=dict)  # what seeding found out (ARNs, zone id)
    clients: dict[tuple[str, str], Any] = field(default_factory=dict)

    def client(self, service: str, region: str = EAST) -> Any:
        """A boto3 client of this case's moto account (one shared session: service models load once), one per
        service and region (creating one costs tens of milliseconds of CPU)."""
        with _SESSION_LOCK:
            if (service, region) not in self.clients:
                self.clients[service, region] = _SESSION.client(
                    service, region_name=region, endpoint_url=self.moto_url, aws_access_key_id=self.access_key,
                    aws_secret_access_key="x", config=Config(retries={"max_attempts": 2}))
            return self.clients[service, region]

    @property
    def tf_root(self) -> Path:
        return self.dir / "terraform"

    @property
    def bucket_suffix(self) -> str:
        return self.account


def meta(runbook: str, target: str, **kw: Any) -> RunbookMeta:
    return RunbookMeta(runbook=runbook, target=target, environment=kw.pop("environment", "production"),
                       requested_by="matrix", approval=ApprovalPolicy(required_approvals=0), **kw)


@dataclass(frozen=True)
class StepRule:
    """A per-step exception to the matrix's general expectation (tests/matrix/judge.py), declared by the runbook's
    scenario as data and documented in the runbook's own docs: for these fault kinds at a step of this activity type
    (in the run itself, ``{wf}``, or a child such as ``{wf}-failback``), the run ends with one of ``outcome`` and
    leaves ``safe``: ``"as found"`` (everything as at the start) or ``"as left"`` (as the fault-free run left it),
    except the snapshot keys starting with one of ``as_found``, which stay as they were found; or ``"named"``: a
    state left for a person (Held) that the result names in ``left_in_place`` (the state is then not compared)."""

    kinds: tuple[str, ...]
    activity: str
    outcome: tuple[str, ...]
    safe: str = "as found"
    as_found: tuple[str, ...] = ()
    role: str = "{wf}"
    why: str = ""

    def applies(self, kind: str, step: str | None) -> bool:
        return (kind in self.kinds and step is not None and step.split("#", 1)[0] == self.role
                and step.rsplit(":", 1)[-1] == self.activity)


class Scenario:
    name: str
    workflow: Any  # the workflow's run method
    kube_contexts: tuple[str, ...] = ()
    aws_services: tuple[str, ...] = ()
    regions: tuple[str, ...] = (EAST,)
    drill = False  # a drill may end Failed when it proves something unsafe
    success_is_initial = False  # a successful run leaves everything as found (drills, sandboxes)
    rules: tuple[StepRule, ...] = ()  # per-step exceptions to the general expectation (the runbook's docs say why)
    # what the quick scope (make test) plays: "each kind" (the fault-free run and every fault kind once, see
    # session.quick_cases), "one" (one fault case, no fault-free run: for a variant of a runbook already there)
    # or "none" (covered by another variant's case)
    quick = "each kind"

    def rule(self, kind: str, step: str | None) -> StepRule | None:
        return next((r for r in self.rules if r.applies(kind, step)), None)

    def seed(self, ctx: Ctx) -> None: ...

    def input(self, ctx: Ctx) -> Any: ...

    def extra_snapshot(self, ctx: Ctx) -> dict[str, Any]:
        return {}

    def safe_key(self, key: str) -> bool:
        """Which snapshot keys the safe state speaks about (reports and records are not infrastructure)."""
        return True

    def worker_env(self, ctx: Ctx) -> dict[str, str]:
        """Variables the case's workers get on top of the session's (after seeding)."""
        return {}

    def ledger(self, ctx: Ctx, entries: list[dict]) -> list[dict]:
        """The case's change ledger (moto's and the Kubernetes fakes' entries in time order): a scenario may add its
        own stand-ins' entries and name values that differ from case to case (random material) by what they are."""
        return entries


# ------------------------------------------------------------------------------------------------------- canary
class Canary(Scenario):
    name = "canary"
    aws_services = ("elbv2",)

    def __init__(self) -> None:
        from workflows.canary_ramp import CanaryRamp

        self.workflow = CanaryRamp.run

    def seed(self, ctx: Ctx) -> None:
        from starters.demo_aws import seed_alb

        ctx.data["alb"] = seed_alb(_CaseSession(ctx))
        publish_metrics(ctx, "checkout", "v2")

    def input(self, ctx: Ctx) -> Any:
        from core.canary import AlbRouterSpec
        from workflows.canary_ramp import AnalysisStepSpec, CanaryRampInput, PlanStep

        plan = [PlanStep(set_weight=20), PlanStep(analysis=AnalysisStepSpec(duration=timedelta(minutes=2))),
                PlanStep(set_weight=100)]
        router = AlbRouterSpec(load_balancer="demo-alb", port=8080, stable_target_group="checkout-stable",
                               canary_target_group="checkout-canary")
        return CanaryRampInput(meta=meta("canary-ramp", "checkout"), service="checkout", version="v2",
                               router=router, plan=plan)


def publish_metrics(ctx: Ctx, service: str, version: str) -> None:
    cw = ctx.client("cloudwatch")
    now = datetime.now(timezone.utc)
    values = {"ErrorRate": 0.1, "LatencyP95": 0.4, "CPUUtilization": 35.0, "MemoryUtilization": 60.0}
    cw.put_metric_data(Namespace="Demo/Service", MetricData=[
        {"MetricName": name, "Dimensions": [{"Name": "Service", "Value": service}, {"Name": "Version", "Value": version}],
         "Timestamp": now, "Value": value} for name, value in values.items()])


class _CaseSession:
    """What product seeding helpers need of a boto3 Session: clients, here of the case's moto account."""

    def __init__(self, ctx: Ctx) -> None:
        self.ctx = ctx

    def client(self, service: str, region_name: str = EAST, **_: Any) -> Any:
        return self.ctx.client(service, region_name)


# --------------------------------------------------------------------------------------------------- blue-green
BG_NS, BG_SERVICE = "shop-prod", "shop"


class BlueGreen(Scenario):
    name = "bluegreen"
    kube_contexts = ("default",)
    rules = (
        # docs/bluegreen.md: a failure while retiring the old colour after a clean bake does not roll back a healthy
        # release: Held, the new colour live and the old one still running (an abort or a cancel there: Aborted,
        # everything as found, like anywhere else)
        StepRule(kinds=("fail",), activity="k8s_scale_deployment", outcome=("Held",), safe="as left",
                 as_found=(f"k8s:default:deployments/{BG_NS}/{BG_SERVICE}-blue",),
                 why="retiring the old colour failed after a clean bake: the release stands, the old colour still runs"),
    )

    def __init__(self) -> None:
        from workflows.blue_green import BlueGreenCutover

        self.workflow = BlueGreenCutover.run

    def seed(self, ctx: Ctx) -> None:
        from tests.bluegreen.conftest import seed_kubernetes
        from tests.bluegreen.servers import ColourServer

        seed_kubernetes(ctx.kube["default"])
        blue, green = ColourServer("blue", "shop:v1").__enter__(), ColourServer("green", "shop:v2").__enter__()
        ctx.servers += [blue, green]
        ctx.data["colours"] = {"blue": blue.url, "green": green.url}

    def input(self, ctx: Ctx) -> Any:
        from core.bluegreen import BlueGreenInput

        return BlueGreenInput(
            meta=meta("blue-green", BG_SERVICE), service=BG_SERVICE, image="shop:v2", router="kubernetes",
            kubernetes={"namespace": BG_NS}, preview_urls=ctx.data["colours"],
            smoke_checks=[{"name": "smoke", "path": "/smoke", "expect_body": "{version}"}],
            check_attempts=2, check_interval="0s", bake="2m", bake_interval="1m", bake_probes=1, bake_analysis=None,
        )


# ----------------------------------------------------------------------------------------------------- failover
RECORD = "shop.example.com."


class Failover(Scenario):
    name = "failover"
    kube_contexts = ("east", "west")
    aws_services = ("rds", "route53")
    regions = (EAST, WEST)
    drill = True
    success_is_initial = True
    rules = (
        # docs/failover.md ("How a run ends", "Abort and cancel at every step"). The matrix plays a drill; an abort
        # or a cancel anywhere ends Aborted with everything as found (the general rule), also after DNS moved (the
        # drill goes home: failback, restore) and during the failback or the restore (finished, then Aborted).
        StepRule(kinds=("fail",), activity="rds_set_writes_blocked", outcome=("Rejected",),
                 why="a fence that cannot be applied needs an explicit approval; nobody approves: Rejected, given back"),
        StepRule(kinds=("fail",), activity="k8s_scale_deployment", outcome=("Rejected", "RolledBack"),
                 why="fence compute (as above: Rejected) or the DR scale-up (RolledBack), both before DNS moved"),
        StepRule(kinds=("fail",), activity="route53_upsert_records", outcome=("Held",), safe="named",
                 why="a DNS change that failed is never shifted back automatically: held, paged, the state named"),
        StepRule(kinds=("fail",), activity="route53_upsert_records", role="{wf}-failback", outcome=("Held",),
                 safe="named", why="the failback's DNS change failed: held with traffic on DR, the state named"),
    )

    def __init__(self) -> None:
        from workflows.failover import RegionFailover

        self.workflow = RegionFailover.run

    def seed(self, ctx: Ctx) -> None:
        from tests.failover.conftest import HealthServer, seed_deployment

        for region in (EAST, WEST):
            ctx.client("rds", region).create_db_parameter_group(
                DBParameterGroupName="read-only", DBParameterGroupFamily="postgres16", Description="read only")
        source = ctx.client("rds", EAST).create_db_instance(
            DBInstanceIdentifier="orders-east", DBInstanceClass="db.t3.micro", Engine="postgres",
            MasterUsername="admin", MasterUserPassword="password123", AllocatedStorage=20)["DBInstance"]
        ctx.client("rds", WEST).create_db_instance_read_replica(
            DBInstanceIdentifier="orders-west", SourceDBInstanceIdentifier=source["DBInstanceArn"], SourceRegion=EAST)
        r53 = ctx.client("route53")
        zone = r53.create_hosted_zone(Name="example.com.", CallerReference=ctx.case_id)["HostedZone"]["Id"].split("/")[-1]
        r53.change_resource_record_sets(HostedZoneId=zone, ChangeBatch={"Changes": [
            {"Action": "CREATE", "ResourceRecordSet": {
                "Name": RECORD, "Type": "CNAME", "TTL": 60, "SetIdentifier": sid, "Failover": kind,
                "ResourceRecords": [{"Value": value}]}}
            for sid, kind, value in (("primary", "PRIMARY", f"web.{EAST}.example.com"),
                                     ("secondary", "SECONDARY", f"web.{WEST}.example.com"))]})
        ctx.data["zone"] = zone
        ctx.client("cloudwatch", EAST).put_metric_data(Namespace="AWS/RDS", MetricData=[
            {"MetricName": "ReplicaLag", "Dimensions": [{"Name": "DBInstanceIdentifier", "Value": "orders-east-failback"}],
             "Value": 2.0, "Timestamp": datetime.now(timezone.utc)}])
        seed_deployment(ctx.kube["east"], 4)
        seed_deployment(ctx.kube["west"], 0)
        east, west = HealthServer(), HealthServer()
        ctx.servers += [east, west]
        ctx.data["health"] = {EAST: east.url, WEST: west.url}

    def input(self, ctx: Ctx) -> Any:
        from workflows.failover import DnsSpec, RegionFailoverInput, RegionSide

        def side(region: str) -> RegionSide:
            east = region == EAST
            return RegionSide(region=region, health_url=ctx.data["health"][region],
                              database="orders-east" if east else "orders-west", read_only_parameter_group="read-only",
                              k8s_context="east" if east else "west", namespace="shop", deployment="web", replicas=4,
                              standby_replicas=0, dns_value=f"web.{region}.example.com")

        return RegionFailoverInput(
            meta=meta("region-failover", "shop"), service="shop", mode="drill", primary=side(EAST), dr=side(WEST),
            dns=DnsSpec(zone_id=ctx.data["zone"], record_name=RECORD),
            verify_interval=timedelta(seconds=30), confirm_interval=timedelta(seconds=30),
        )


# ---------------------------------------------------------------------------------------------------- provision
class Provision(Scenario):
    name = "provision"
    kube_contexts = ("default",)
    aws_services = ("s3",)
    success_is_initial = True  # a sandbox is destroyed when its TTL ends

    def __init__(self) -> None:
        from workflows.provision import ProvisionEnvironment

        self.workflow = ProvisionEnvironment.run

    def seed(self, ctx: Ctx) -> None:
        ctx.client("s3").create_bucket(Bucket=f"env-records-{ctx.bucket_suffix}")

    def input(self, ctx: Ctx) -> Any:
        from core.provision import ProvisionEnvironmentInput

        catalog = harness.stock_catalog()
        params = {"environment": f"sbx-{ctx.account[-6:]}", "tier": "sandbox", "ttl": "1h",
                  "module": str(REPO / "tests" / "provision" / "modules" / "app"),
                  "record_bucket": f"env-records-{ctx.bucket_suffix}"}
        plan = catalog.plan_start("provision-environment", params, requested_by="matrix",
                                  inputs={"ProvisionEnvironment": ProvisionEnvironmentInput})
        data = plan.input.model_dump()
        data["meta"]["approval"] = ApprovalPolicy(required_approvals=0).model_dump()
        return ProvisionEnvironmentInput.model_validate(data)

    def extra_snapshot(self, ctx: Ctx) -> dict[str, Any]:
        return terraform_snapshot(ctx.tf_root)

    def safe_key(self, key: str) -> bool:
        return not key.startswith("tfserial:")


def terraform_snapshot(root: Path) -> dict[str, Any]:
    """Per Terraform state file: its outputs (what exists) and, separately, its serial (how many writes)."""
    snap: dict[str, Any] = {}
    if not root.exists():
        return snap
    for state in sorted(root.rglob("*.tfstate")):
        if "/.terraform/" in str(state):
            continue
        try:
            data = json.loads(state.read_text() or "{}")
        except json.JSONDecodeError:
            continue
        rel = str(state.relative_to(root))
        snap[f"tf:{rel}"] = sorted((data.get("outputs") or {}).keys())
        snap[f"tfserial:{rel}"] = data.get("serial")
    return snap


# ------------------------------------------------------------------------------------------------------ restore
CHECKS = [
    {"kind": "tables_present", "tables": ["orders", "customers"]},
    {"kind": "row_count", "table": "orders", "baseline": "manifest"},
    {"kind": "checksum", "name": "orders_checksum",
     "query": "SELECT md5(string_agg(id || ':' || amount, ',' ORDER BY id)) FROM orders"},
    {"kind": "freshness", "table": "orders", "column": "updated_at"},
]


class Restore(Scenario):
    name = "restore"
    aws_services = ("s3", "rds")
    drill = True
    success_is_initial = True  # the scratch database is always removed (the report is not infrastructure)

    def __init__(self) -> None:
        from workflows.restore_drill import RestoreDrill

        self.workflow = RestoreDrill.run

    def seed(self, ctx: Ctx) -> None:
        s3 = ctx.client("s3")
        dumps, reports = f"drill-dumps-{ctx.bucket_suffix}", f"drill-reports-{ctx.bucket_suffix}"
        for bucket in (dumps, reports):
            s3.create_bucket(Bucket=bucket)
        source = ctx.shared["source"]
        s3.put_object(Bucket=dumps, Key="shop/dump-1.pgdump", Body=source["dump"])
        s3.put_object(Bucket=dumps, Key="manifests/shop/dump-1.pgdump.json", Body=json.dumps(source["manifest"]).encode())
        ctx.data["buckets"] = (dumps, reports)

    def input(self, ctx: Ctx) -> Any:
        from workflows.restore_drill import RestoreDrillInput

        dumps, reports = ctx.data["buckets"]
        return RestoreDrillInput.model_validate(dict(
            meta=meta("restore-drill", "shop").model_dump(), database="shop", dump_bucket=dumps, dump_prefix="shop/",
            restore_server=ctx.shared["pg_server"], report_bucket=reports, checks=CHECKS))

    def extra_snapshot(self, ctx: Ctx) -> dict[str, Any]:
        from core.restore import scratch_name

        scratch = scratch_name(ctx.workflow_id, kind="database")
        with psycopg.connect(**conninfo_to_dict(ctx.shared["pg_uri"]), autocommit=True) as conn:
            names = [r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s",
                                                 (scratch[:40] + "%",))]
        return {f"pg:{name}": "exists" for name in names}

    def safe_key(self, key: str) -> bool:
        return "s3:drill-reports-" not in key


# ------------------------------------------------------------------------------------------------------ release
class Release(Scenario):
    """One production stage of one wave (a canary on the demo ALB), gated on the error budget, with the real ledger
    (the session's PostgreSQL). Each case releases its own service name, so one case's verdicts (a version marked
    bad) never meet another's."""

    name = "release"
    aws_services = ("elbv2",)
    rules = (
        # docs/release.md: the budget cannot be told (the provider failed) -> blocked; this policy names nobody who
        # may break the glass, so the release is Rejected before its first change
        StepRule(kinds=("fail",), activity="measure_metric", outcome=("Rejected",),
                 why="the error budget could not be measured: blocked, and no break-glass approver under this policy"),
        # the final verdict's write failing is reported (details.ledger_failures), never a reason to undo a release
        StepRule(kinds=("fail",), activity="ledger_record", outcome=("Succeeded",), safe="as left",
                 why="the ledger write after the last wave is reported, not undone"),
        # an abort or a cancel that arrives while the last wave's verdict is written: the release is complete
        StepRule(kinds=("abort", "cancel"), activity="ledger_record", outcome=("Succeeded",), safe="as left",
                 why="every wave was promoted and checked: nothing is left to abort"),
    )

    def __init__(self) -> None:
        from workflows.release import Release as ReleaseWorkflow

        self.workflow = ReleaseWorkflow.run

    def service(self, ctx: Ctx) -> str:
        return f"checkout-{ctx.account[-6:]}"

    def seed(self, ctx: Ctx) -> None:
        from starters.demo_aws import seed_alb

        ctx.data["alb"] = seed_alb(_CaseSession(ctx))
        publish_metrics(ctx, self.service(ctx), "v2")
        ctx.client("cloudwatch").put_metric_data(Namespace="Demo/Service", MetricData=[
            {"MetricName": "Availability", "Dimensions": [{"Name": "Service", "Value": self.service(ctx)}],
             "Timestamp": datetime.now(timezone.utc), "Value": 99.99}])

    def input(self, ctx: Ctx) -> Any:
        from core.release import ReleaseInput, StageSpec, WaveSpec

        plan = [{"set_weight": 20}, {"analysis": {"duration": "2m"}}, {"set_weight": 100}]
        wave = WaveSpec(name="east", router={"kind": "alb", "load_balancer": "demo-alb", "port": 8080,
                                            "stable_target_group": "checkout-stable",
                                            "canary_target_group": "checkout-canary"})
        return ReleaseInput(meta=meta("release", self.service(ctx)), service=self.service(ctx), version="v2",
                            stages=[StageSpec(name="production", strategy="canary", error_budget=True,
                                              parameters={"plan": plan}, waves=[wave])])


# ------------------------------------------------------------------------------------------------ rotate-secret
class RotateMaterial(Scenario):
    """rotate-secret's kinds (``database`` on the session's OpenBao database engine and PostgreSQL, ``certificate`` on
    its PKI engine, ``api_key`` in KV v2), each with the KV rollout (the consumer reads the KV path) and the Kubernetes
    rollout (the consumer reads a Secret of the case's Kubernetes fake; a Deployment's pods are restarted onto it).

    The case's worker reaches OpenBao through its own ledger proxy (tests/matrix/vault_ledger.py), so OpenBao's
    effective changes are in the ledger with moto's and the fake's. Material is named, never shown: ``old`` (what
    the case was seeded with) and ``new#1``, ``new#2``... in order of appearance, so that the cases compare with the
    baseline: a second new certificate or key where the baseline has one is a change off the baseline's path. The
    snapshot says which material the KV path's newest version holds, which material is still valid (certificates:
    not revoked; keys: a version holding it not destroyed), what the consumer serves or reports and, with the
    Kubernetes rollout, what the Secret holds and which material the Deployment's pods were restarted onto."""

    kube_contexts: tuple[str, ...] = ()
    rollout = "kv"
    kind = ""
    # the Secret and the consumer Deployment of the Kubernetes rollout
    NS, SECRET, APP = "shop", "shop-material", "shop-api"

    def __init__(self) -> None:
        from workflows.rotate_secret import RotateSecret

        self.workflow = RotateSecret.run
        if self.rollout == "kubernetes":
            self.kube_contexts = ("default",)

    def _vault(self, ctx: Ctx) -> Any:
        import hvac

        env = ctx.shared["env"]
        return hvac.Client(url=env["VAULT_ADDR"], token=env["VAULT_TOKEN"])

    # -- naming material --------------------------------------------------------------------------------------
    def identity(self, data: dict[str, str]) -> str:
        """What tells one material from another in a KV version's data (a serial, a key's fingerprint)."""
        raise NotImplementedError

    def secret_identity(self, data: dict[str, str]) -> str:
        """The same, from the Kubernetes Secret's decoded data."""
        raise NotImplementedError

    def label(self, ctx: Ctx, identity: str) -> str:
        labels: dict[str, str] = ctx.data.setdefault("labels", {})
        if identity not in labels:
            labels[identity] = "old" if not labels else f"new#{len(labels)}"
        return labels[identity]

    def valid(self, ctx: Ctx, vault: Any, label: str, identity: str, live: bool) -> bool:
        """Whether the material is still valid (``live``: a version holding it is not destroyed)."""
        raise NotImplementedError

    def vault_state(self, ctx: Ctx) -> dict[str, Any]:
        """The case's OpenBao state, by material: the ledger proxy takes it around every write, the snapshot too."""
        vault = self._vault(ctx)
        path = ctx.data["kv"]
        meta = vault.secrets.kv.v2.read_secret_metadata(path=path, mount_point="secret")["data"]
        seen: dict[int, str] = ctx.data.setdefault("versions", {})  # version -> identity (a version never changes)
        live: dict[str, bool] = {}
        with ctx.data.setdefault("lock", threading.Lock()):
            for number, version in sorted(meta["versions"].items(), key=lambda item: int(item[0])):
                gone = bool(version["destroyed"] or version["deletion_time"])
                if int(number) not in seen and not gone:
                    data = vault.secrets.kv.v2.read_secret_version(path=path, version=int(number), mount_point="secret",
                                                                   raise_on_deleted_version=True)["data"]["data"]
                    seen[int(number)] = self.identity(data)
                identity = seen.get(int(number), f"unread v{number}")
                live[identity] = live.get(identity, False) or not gone
            state: dict[str, Any] = {f"vault:{path} newest": self.label(ctx, seen.get(int(meta["current_version"]), "?"))}
            for identity, alive in live.items():
                label = self.label(ctx, identity)
                if self.valid(ctx, vault, label, identity, alive):
                    state[f"vault:{path} {label}"] = "valid"
        return state

    # -- seeding ----------------------------------------------------------------------------------------------
    def seed_material(self, ctx: Ctx, vault: Any, path: str) -> dict[str, str]:
        """The case's first material, written to KV ``path`` (below secret/) as a deploy would have."""
        raise NotImplementedError

    def consumer(self, ctx: Ctx, vault: Any) -> Any:
        """The consumer stand-in, entered."""
        raise NotImplementedError

    def seed(self, ctx: Ctx) -> None:
        from tests.matrix.vault_ledger import VaultLedger

        vault = self._vault(ctx)
        path = f"apps/mx-{ctx.account[-6:]}/{self.kind}"
        ctx.data["kv"] = path
        data = self.seed_material(ctx, vault, path)
        self.label(ctx, self.identity(data))  # "old"
        if self.rollout == "kubernetes":
            self.seed_kubernetes(ctx, data)
        ledger = VaultLedger(ctx.shared["env"]["VAULT_ADDR"], lambda: self.vault_state(ctx)).__enter__()
        ctx.servers.append(ledger)
        ctx.data["vault_ledger"] = ledger
        consumer = self.consumer(ctx, vault)
        ctx.servers.append(consumer)
        ctx.data["consumer"] = consumer

    def seed_kubernetes(self, ctx: Ctx, data: dict[str, str]) -> None:
        import base64

        fake = ctx.kube["default"]
        secret_type, keys = self.layout()
        fake.put_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": self.NS}})
        fake.put_object({"apiVersion": "v1", "kind": "Secret", "type": secret_type,
                         "metadata": {"name": self.SECRET, "namespace": self.NS},
                         "data": {k: base64.b64encode(data[field].encode()).decode() for k, field in keys.items()}})
        if self.deployments():
            labels = {"app": self.APP}
            fake.put_object({"apiVersion": "apps/v1", "kind": "Deployment",
                             "metadata": {"name": self.APP, "namespace": self.NS},
                             "spec": {"replicas": 2, "selector": {"matchLabels": labels}, "template": {
                                 "metadata": {"labels": labels},
                                 "spec": {"containers": [{"name": "app", "image": "shop:v1"}]}}}})

    def layout(self) -> tuple[str, dict[str, str]]:
        from core.rotation import SECRET_LAYOUT

        return SECRET_LAYOUT[self.kind]

    def deployments(self) -> list[str]:
        return [self.APP] if self.kind != "certificate" else []

    def worker_env(self, ctx: Ctx) -> dict[str, str]:
        return {"VAULT_ADDR": ctx.data["vault_ledger"].url}

    def rollout_input(self) -> dict[str, Any]:
        from core.kubernetes import SecretRef

        if self.rollout != "kubernetes":
            return {}
        return {"rollout": "kubernetes", "secret": SecretRef(namespace=self.NS, name=self.SECRET, context="default"),
                "deployments": self.deployments()}

    # -- snapshot and ledger ----------------------------------------------------------------------------------
    def served(self, ctx: Ctx) -> str:
        """The identity of the material the consumer serves or reports now."""
        raise NotImplementedError

    def extra_snapshot(self, ctx: Ctx) -> dict[str, Any]:
        import time

        state = self.vault_state(ctx)
        # where the consumers read it: the KV path's newest version, or the Secret; the consumer reloads within a
        # second (a Deployment's pods when it is restarted): give it that long to agree
        wanted = state[f"vault:{ctx.data['kv']} newest"]
        if self.rollout == "kubernetes":
            wanted = self.label(ctx, self.secret_identity(self.secret_data(ctx)))
            state[f"k8s:default:secrets/{self.NS}/{self.SECRET}"] = {"holds": wanted}
        deadline = time.monotonic() + 3
        served = self.label(ctx, self.served(ctx))
        while served != wanted and time.monotonic() < deadline:
            time.sleep(0.1)
            served = self.label(ctx, self.served(ctx))
        state["consumer serves"] = served
        if self.rollout == "kubernetes" and self.deployments():
            state[f"k8s:default:deployments/{self.NS}/{self.APP}"] = {"pods on": served}
        return state

    def secret_data(self, ctx: Ctx) -> dict[str, str]:
        from tests.rotation.stand_ins import secret_data

        return secret_data(ctx.kube["default"], self.NS, self.SECRET)

    def ledger(self, ctx: Ctx, entries: list[dict]) -> list[dict]:
        """OpenBao's entries merged in; the fake's Secret and Deployment entries named by material, as in the
        snapshot (the Secret: what it holds; the Deployment: what its pods were restarted onto, i.e. what the
        Secret held when it was restarted)."""
        import base64

        out = []
        holds = "old"
        for entry in sorted(entries + ctx.data["vault_ledger"].ledger, key=lambda e: e["t"]):
            key = entry["key"]
            if key == f"k8s:default:secrets/{self.NS}/{self.SECRET}" and entry["value"] is not None:
                data = {k: base64.b64decode(v).decode() for k, v in (entry["value"].get("data") or {}).items()}
                holds = self.label(ctx, self.secret_identity(data))
                entry = dict(entry, value={"holds": holds})
            elif key == f"k8s:default:deployments/{self.NS}/{self.APP}" and entry["value"] is not None:
                entry = dict(entry, value={"pods on": holds})
            out.append(entry)
        return out


class RotateDatabase(RotateMaterial):
    """A database credential: one role, KV path and consumer (its own ``application_name``) per case. The material is
    a user of the role; it is valid while the user exists (revoking its lease drops it)."""

    kind = "database"
    rules = (
        # docs/rotate-secret.md: once the consumers are verified and the old lease's revoke has started, an abort or
        # a cancel is too late to roll back: the rotation completes
        StepRule(kinds=("abort", "cancel"), activity="vault_revoke_lease", outcome=("Succeeded",), safe="as left",
                 why="the consumers are verified on the new user and the old one is being revoked: it completes"),
    )

    def identity(self, data: dict[str, str]) -> str:
        return data["username"]

    def secret_identity(self, data: dict[str, str]) -> str:
        return data["username"]

    def users(self, ctx: Ctx) -> list[str]:
        with psycopg.connect(**conninfo_to_dict(ctx.shared["pg_uri"]), autocommit=True) as conn:
            return [r[0] for r in conn.execute("SELECT rolname FROM pg_roles WHERE rolname LIKE %s",
                                                (f"v-token-{ctx.data['role']}-%",))]

    def valid(self, ctx: Ctx, vault: Any, label: str, identity: str, live: bool) -> bool:
        return identity in self.users(ctx)

    def vault_state(self, ctx: Ctx) -> dict[str, Any]:
        """As for every kind, and the users of the role no KV version names (issued and left behind)."""
        state = super().vault_state(ctx)
        untracked = [u for u in self.users(ctx) if u not in ctx.data["versions"].values()]
        if untracked:
            state["pg:users no KV version names"] = len(untracked)
        return state

    def seed_material(self, ctx: Ctx, vault: Any, path: str) -> dict[str, str]:
        from tests.rotation.stand_ins import configure_engine, make_role, seed_credential

        configure_engine(vault, ctx.shared["pg_uri"])
        # the engine's user names are v-<token display name>-<role, cut to 8 characters>-...: a role of 7, unique per
        # case, so that the case's users are found by their prefix (mx-<6 digits> was cut, and the prefix matched none)
        ctx.data["role"] = make_role(vault, f"m{ctx.account[-6:]}")
        return seed_credential(vault, ctx.data["role"], path)

    def consumer(self, ctx: Ctx, vault: Any) -> Any:
        from tests.rotation.stand_ins import Consumer, PodConsumer

        name = f"mx-app-{ctx.account[-6:]}"  # what pg_stat_activity shows: one per case on the shared server
        if self.rollout == "kubernetes":
            pods = PodConsumer(vault, ctx.shared["pg_server"], ctx.kube["default"], self.NS, self.APP, self.SECRET)
            pods.name = name
            return pods.__enter__()
        return Consumer(vault, ctx.shared["pg_server"], f"secret/{ctx.data['kv']}", name=name).__enter__()

    def served(self, ctx: Ctx) -> str:
        return ctx.data["consumer"].user

    def input(self, ctx: Ctx) -> Any:
        from core.rotation import RotateSecretInput

        path = f"secret/{ctx.data['kv']}"
        return RotateSecretInput(meta=meta("rotate-secret", path), role=ctx.data["role"], kv_path=path,
                                 consumers=[ctx.data["consumer"].name], server=ctx.shared["pg_server"],
                                 verify_timeout=timedelta(seconds=30), **self.rollout_input())


class RotateDatabaseK8s(RotateDatabase):
    quick = "none"  # the database kind's quick cases are the KV rollout's (scenario rotate)
    rollout = "kubernetes"


class RotateCertificate(RotateMaterial):
    kind = "certificate"
    quick = "none"  # the quick scope plays the Kubernetes variant: its path has every activity of this one
    rules = (
        StepRule(kinds=("abort", "cancel"), activity="pki_revoke_certificate", outcome=("Succeeded",), safe="as left",
                 why="the endpoints present the new serial and the old one's revoke has started: it completes"),
    )

    def identity(self, data: dict[str, str]) -> str:
        return data["serial"]

    def secret_identity(self, data: dict[str, str]) -> str:
        from cryptography import x509
        from cryptography.hazmat.primitives.serialization import Encoding

        from core.rotation import serial_of

        return serial_of(x509.load_pem_x509_certificate(data["tls.crt"].encode()).public_bytes(Encoding.DER))

    def valid(self, ctx: Ctx, vault: Any, label: str, identity: str, live: bool) -> bool:
        from tests.rotation.stand_ins import PKI_MOUNT

        return not int(vault.read(f"{PKI_MOUNT}/cert/{identity}")["data"].get("revocation_time") or 0)

    def seed_material(self, ctx: Ctx, vault: Any, path: str) -> dict[str, str]:
        from tests.rotation.stand_ins import PKI_MOUNT, configure_pki

        configure_pki(vault)
        issued = vault.write_data(f"{PKI_MOUNT}/issue/web", data={"common_name": "www.shop.test"})["data"]
        data = {"certificate": issued["certificate"], "private_key": issued["private_key"],
                "serial": issued["serial_number"]}
        vault.secrets.kv.v2.create_or_update_secret(path=path, mount_point="secret", secret=data)
        return data

    def consumer(self, ctx: Ctx, vault: Any) -> Any:
        from tests.rotation.stand_ins import SecretTlsEndpoint, TlsEndpoint

        if self.rollout == "kubernetes":
            return SecretTlsEndpoint(vault, ctx.kube["default"], self.NS, self.SECRET).__enter__()
        return TlsEndpoint(vault, f"secret/{ctx.data['kv']}").__enter__()

    def served(self, ctx: Ctx) -> str:
        from activities.http_checks import _served_serial

        return _served_serial(ctx.data["consumer"].endpoint)

    def input(self, ctx: Ctx) -> Any:
        from core.rotation import RotateSecretInput
        from tests.rotation.stand_ins import PKI_MOUNT

        path = f"secret/{ctx.data['kv']}"
        return RotateSecretInput(meta=meta("rotate-secret", path), kind="certificate", role="web", pki_mount=PKI_MOUNT,
                                 common_name="www.shop.test", kv_path=path, endpoints=[ctx.data["consumer"].endpoint],
                                 verify_timeout=timedelta(seconds=30), **self.rollout_input())


class RotateCertificateK8s(RotateCertificate):
    rollout = "kubernetes"
    quick = "one"


class RotateApiKey(RotateMaterial):
    kind = "api_key"
    quick = "none"  # as for certificates
    rules = (
        StepRule(kinds=("abort", "cancel"), activity="kv_destroy_version", outcome=("Succeeded",), safe="as left",
                 why="the consumers report the new key, the grace period passed and the destroy has started: it "
                     "completes"),
    )

    def identity(self, data: dict[str, str]) -> str:
        from core.rotation import fingerprint_of

        return fingerprint_of(data["api_key"])

    def secret_identity(self, data: dict[str, str]) -> str:
        return self.identity(data)

    def valid(self, ctx: Ctx, vault: Any, label: str, identity: str, live: bool) -> bool:
        return live

    def seed_material(self, ctx: Ctx, vault: Any, path: str) -> dict[str, str]:
        import secrets

        from core.rotation import fingerprint_of

        key = secrets.token_urlsafe(32)
        data = {"api_key": key, "fingerprint": fingerprint_of(key)}
        vault.secrets.kv.v2.create_or_update_secret(path=path, mount_point="secret", secret=data)
        return data

    def consumer(self, ctx: Ctx, vault: Any) -> Any:
        from tests.rotation.stand_ins import KeyConsumer, PodKeyConsumer

        if self.rollout == "kubernetes":
            return PodKeyConsumer(vault, ctx.kube["default"], self.NS, self.APP, self.SECRET).__enter__()
        return KeyConsumer(vault, f"secret/{ctx.data['kv']}").__enter__()

    def served(self, ctx: Ctx) -> str:
        return ctx.data["consumer"].fingerprint

    def input(self, ctx: Ctx) -> Any:
        from core.rotation import RotateSecretInput

        path = f"secret/{ctx.data['kv']}"
        return RotateSecretInput(meta=meta("rotate-secret", path), kind="api_key", kv_path=path,
                                 consumer_urls=[ctx.data["consumer"].url], verify_timeout=timedelta(seconds=30),
                                 grace_period=timedelta(minutes=10), **self.rollout_input())


class RotateApiKeyK8s(RotateApiKey):
    rollout = "kubernetes"
    quick = "one"


SCENARIOS: dict[str, type[Scenario]] = {
    "canary": Canary, "bluegreen": BlueGreen, "failover": Failover, "provision": Provision, "restore": Restore,
    "release": Release, "rotate": RotateDatabase, "rotate-cert": RotateCertificate,
    "rotate-cert-k8s": RotateCertificateK8s, "rotate-key": RotateApiKey, "rotate-key-k8s": RotateApiKeyK8s,
    "rotate-db-k8s": RotateDatabaseK8s,
}


# ------------------------------------------------------------------------------------- session stand-ins (restore)
def seed_source(pg_uri: str, pg_bin: Path) -> dict[str, Any]:
    """A small source database on the real PostgreSQL, its pg_dump and manifest (restore drills restore it)."""
    name = f"matrix_src_{uuid.uuid4().hex[:6]}"
    info = conninfo_to_dict(pg_uri)
    with psycopg.connect(**info, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    newest = datetime.now(timezone.utc) - timedelta(minutes=1)
    with psycopg.connect(**{**info, "dbname": name}, autocommit=True) as conn:
        conn.execute("CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL)")
        conn.execute("CREATE TABLE orders (id int PRIMARY KEY, customer_id int REFERENCES customers(id),"
                     " amount numeric(10,2) NOT NULL, updated_at timestamptz NOT NULL)")
        conn.execute("INSERT INTO customers SELECT g, 'c' || g FROM generate_series(1, 5) g")
        conn.execute("INSERT INTO orders SELECT g, 1 + g %% 5, g * 1.5, %s - make_interval(secs => 50 - g)"
                     " FROM generate_series(1, 50) g", (newest,))
        checksum = conn.execute("SELECT md5(string_agg(id || ':' || amount, ',' ORDER BY id)) FROM orders").fetchone()[0]
    dump = subprocess.run(
        [str(pg_bin / "pg_dump"), "-Fc", "-h", info["host"], "-p", str(info.get("port", 5432)),
         "-U", info.get("user", "postgres"), "-d", name], check=True, capture_output=True).stdout
    manifest = {"backup_time": datetime.now(timezone.utc).isoformat(), "row_counts": {"orders": 50, "customers": 5},
                "checksums": {"orders_checksum": checksum}}
    return {"name": name, "dump": dump, "manifest": manifest}
