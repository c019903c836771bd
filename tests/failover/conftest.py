"""Fixtures of the failover tests: two regions in moto (RDS primary + cross-region replica, a Route53 zone), two
Kubernetes clusters (one wire-format fake each), regional health endpoints as local HTTP servers, and a worker
with the real activities."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Iterator

import pytest

from activities.aws import RdsActivities, Route53Activities
from activities.http_checks import HttpCheckActivities
from activities.kubernetes import KubernetesActivities
from core.approval import ApprovalPolicy
from core.runbook import RunbookMeta
from tests import aws_session
from tests.fakes.kubernetes import kube_fake
from workflows.failover import DnsSpec, RegionSide

EAST, WEST = "us-east-1", "us-west-2"
NS = "shop"
RECORD = "shop.example.com."


class HealthServer:
    """A region's health endpoint: answers ``script`` statuses in turn, then ``status``."""

    def __init__(self) -> None:
        self.status = 200
        self.script: list[int] = []
        self.hits = 0
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                with server._lock:
                    server.hits += 1
                    code = server.script.pop(0) if server.script else server.status
                data = (b"ok" if code == 200 else b"down")
                self.send_response(code)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}/healthz"
        threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


@dataclass
class Regions:
    east_health: HealthServer
    west_health: HealthServer
    east_k8s: object
    west_k8s: object
    zone_id: str
    activities: list[Callable] = field(default_factory=list)

    def side(self, region: str, **kw) -> RegionSide:
        east = region == EAST
        base = dict(
            region=region,
            health_url=(self.east_health if east else self.west_health).url,
            database="orders-east" if east else "orders-west",
            read_only_parameter_group="read-only",
            k8s_context="east" if east else "west",
            namespace=NS,
            deployment="web",
            replicas=4,
            standby_replicas=1,
            dns_value=f"web.{region}.example.com",
        )
        return RegionSide(**{**base, **kw})

    def dns(self) -> DnsSpec:
        return DnsSpec(zone_id=self.zone_id, record_name=RECORD)

    def records(self) -> dict[str, str]:
        r53 = aws_session.client("route53")
        sets = r53.list_resource_record_sets(HostedZoneId=self.zone_id)["ResourceRecordSets"]
        return {s["Failover"]: s["ResourceRecords"][0]["Value"] for s in sets if s.get("Failover")}

    def replicas(self, region: str) -> int:
        fake = self.east_k8s if region == EAST else self.west_k8s
        return fake.get("deployments", NS, "web")["spec"]["replicas"]

    def everything(self, databases: tuple[tuple[str, str], ...] = (
        ("orders-east", EAST), ("orders-west", WEST), ("orders-east-failback", EAST),
    )) -> dict:
        """A describe of everything a drill touches, straight from moto (not through the runbook's activities): the
        raw replica link and the runbook's tags too, so a drill that leaves a promoted database behind shows."""
        dbs = {}
        # one describe of all a region's instances (two calls, not one per database and an error for each absent one)
        found = {
            region: {d["DBInstanceIdentifier"]: d for d in aws_session.client("rds", region_name=region).describe_db_instances()["DBInstances"]}
            for region in dict.fromkeys(region for _, region in databases)
        }
        for identifier, region in databases:
            raw = found[region].get(identifier)
            if raw is None:
                dbs[f"{region}/{identifier}"] = None
                continue
            tags = {t["Key"]: t["Value"] for t in raw.get("TagList", []) if t["Key"].startswith("runbook:")}
            source = raw.get("ReadReplicaSourceDBInstanceIdentifier")  # raw: moto keeps it after a promotion
            dbs[f"{region}/{identifier}"] = {
                "writable_primary": source is None or tags.get("runbook:promoted") == "true",
                "source": source,
                "runbook_tags": tags,
                "parameter_groups": sorted(g["DBParameterGroupName"] for g in raw["DBParameterGroups"]),
                "status": raw["DBInstanceStatus"],
                "endpoint": raw["Endpoint"]["Address"],
            }
        r53 = aws_session.client("route53")
        records = sorted(
            (s for s in r53.list_resource_record_sets(HostedZoneId=self.zone_id)["ResourceRecordSets"] if s["Name"] == RECORD),
            key=lambda s: s.get("SetIdentifier", ""),
        )
        return {"databases": dbs, "records": records,
                "compute": {EAST: self.replicas(EAST), WEST: self.replicas(WEST)}}

    def db(self, identifier: str, region: str) -> dict:
        return aws_session.client("rds", region_name=region).describe_db_instances(DBInstanceIdentifier=identifier)["DBInstances"][0]


def seed_deployment(fake, replicas: int) -> None:
    fake.put_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    fake.put_object(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "namespace": NS},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": "web:1"}]}},
            },
        }
    )


def seed_aws(primary_db: str = "orders-east", replica_db: str | None = "orders-west") -> str:
    for region in (EAST, WEST):
        rds = aws_session.client("rds", region_name=region)
        rds.create_db_parameter_group(
            DBParameterGroupName="read-only", DBParameterGroupFamily="postgres16", Description="default_transaction_read_only=on"
        )
    east = aws_session.client("rds", region_name=EAST)
    source = east.create_db_instance(
        DBInstanceIdentifier=primary_db, DBInstanceClass="db.t3.micro", Engine="postgres",
        MasterUsername="admin", MasterUserPassword="password123", AllocatedStorage=20,
    )["DBInstance"]
    if replica_db:
        aws_session.client("rds", region_name=WEST).create_db_instance_read_replica(
            DBInstanceIdentifier=replica_db, SourceDBInstanceIdentifier=source["DBInstanceArn"], SourceRegion=EAST
        )
    r53 = aws_session.client("route53")
    zone = r53.create_hosted_zone(Name="example.com.", CallerReference="failover-tests")["HostedZone"]["Id"].split("/")[-1]
    r53.change_resource_record_sets(
        HostedZoneId=zone,
        ChangeBatch={
            "Changes": [
                {"Action": "CREATE", "ResourceRecordSet": {"Name": RECORD, "Type": "CNAME", "TTL": 60, "SetIdentifier": sid,
                                                            "Failover": kind, "ResourceRecords": [{"Value": value}]}}
                for sid, kind, value in (("primary", "PRIMARY", f"web.{EAST}.example.com"), ("secondary", "SECONDARY", f"web.{WEST}.example.com"))
            ]
        },
    )
    return zone


@pytest.fixture
def regions(aws, recording) -> Iterator[Regions]:
    zone = seed_aws()
    east_health, west_health = HealthServer(), HealthServer()
    with kube_fake() as (east_fake, east_api), kube_fake() as (west_fake, west_api):
        seed_deployment(east_fake, 4)
        seed_deployment(west_fake, 0)
        clients = aws_session.activity_clients()
        rds, r53 = RdsActivities(clients), Route53Activities(clients, wait_delay=0.01)
        k8s = KubernetesActivities(lambda context: {"east": east_api, "west": west_api}[context])
        probes = HttpCheckActivities()
        _, notifier = recording
        acts = [
            notifier.notify, probes.http_probe,
            rds.rds_describe_instance, rds.rds_promote_replica, rds.rds_wait_available, rds.rds_create_replica,
            rds.rds_replica_lag, rds.rds_set_writes_blocked, rds.rds_set_parameter_group,
            rds.rds_delete_instance, r53.route53_upsert_records, r53.route53_get_records,
            k8s.scale_deployment, k8s.wait_rollout, k8s.get_deployment,
        ]
        try:
            yield Regions(east_health, west_health, east_fake, west_fake, zone, acts)
        finally:
            east_health.close()
            west_health.close()


def meta(runbook: str = "region-failover", **approval) -> RunbookMeta:
    policy = ApprovalPolicy(**({"required_approvals": 1 if approval else 0} | approval))
    return RunbookMeta(runbook=runbook, target="shop", environment="production", requested_by="bob", approval=policy,
                       incident_id="PINC1")


def report_lag(identifier: str, region: str, seconds: float) -> None:
    """A ReplicaLag datapoint of a second ago, as RDS reports it: measured, then sent. moto's get_metric_statistics
    cuts its EndTime to the second and leaves it out, so a datapoint stamped now was invisible to a read in the same
    second: the failback's first lag read came back unknown, and it waited its catch_up_poll (30 s of real time in a
    test that holds an activity rather than await the result)."""
    from datetime import datetime, timedelta, timezone

    aws_session.client("cloudwatch", region_name=region).put_metric_data(
        Namespace="AWS/RDS",
        MetricData=[{"MetricName": "ReplicaLag", "Dimensions": [{"Name": "DBInstanceIdentifier", "Value": identifier}],
                     "Value": seconds, "Timestamp": datetime.now(timezone.utc) - timedelta(seconds=1)}],
    )


FAST = dict(verify_interval=timedelta(seconds=30), confirm_interval=timedelta(seconds=30))
