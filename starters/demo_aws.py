"""Seed the demo AWS infrastructure the runbook catalog refers to, in moto (local stack, ``make dev``).

``seed_demo(session)`` creates, idempotently (every object is looked up by name first):

- a VPC (tag Name=demo-vpc) with two subnets in two availability zones;
- ALB ``demo-alb``: listener :80 forwards to ``checkout-blue``/``checkout-green`` at 100/0 (blue-green) and
  listener :8080 to ``checkout-stable``/``checkout-canary`` at 100/0 (canary);
- Route53 zone ``demo.internal.`` with weighted records ``checkout.demo.internal`` (blue 100 / green 0) and
  failover records ``orders-db.demo.internal`` (PRIMARY us-east-1 / SECONDARY us-west-2, with a health check);
- RDS ``orders-db`` (postgres) in us-east-1 with manual snapshot ``orders-db-seed``, and a cross-region read
  replica ``orders-db-replica`` in us-west-2; in both regions the parameter group ``orders-read-only``
  (``default_transaction_read_only=on``) the failover drill fences writes with;
- the release demo's routers (``seed_release``): on ``demo-alb`` listener :8081 forwards to
  ``checkout-dev-stable``/``checkout-dev-canary`` (development's canary) and :8082 to ``checkout-stg-stable``/
  ``checkout-stg-canary`` (staging's), both 100/0; production's two waves are one ALB per region, ``prod-us-east-1``
  (us-east-1) and ``prod-us-west-2`` (us-west-2, its own VPC), each with listener :80 forwarding to its region's
  ``checkout-prod-blue``/``checkout-prod-green`` at 100/0. They are created last, so the ids above stay those of
  the fixed seed.

Returns the ARNs and ids (the local stack prints them). Run: ``python -m starters.demo_aws``.
"""

from __future__ import annotations

import json
from typing import Any

import boto3
from botocore.exceptions import ClientError

PRIMARY_REGION = "us-east-1"
REPLICA_REGION = "us-west-2"
ZONE = "demo.internal."


def _vpc(ec2: Any, region: str = PRIMARY_REGION) -> tuple[str, list[str]]:
    found = ec2.describe_vpcs(Filters=[{"Name": "tag:Name", "Values": ["demo-vpc"]}])["Vpcs"]
    if found:
        vpc_id = found[0]["VpcId"]
    else:
        vpc_id = ec2.create_vpc(CidrBlock="10.42.0.0/16")["Vpc"]["VpcId"]
        ec2.create_tags(Resources=[vpc_id], Tags=[{"Key": "Name", "Value": "demo-vpc"}])
    subnets = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])["Subnets"]
    by_cidr = {s["CidrBlock"]: s["SubnetId"] for s in subnets}
    ids = []
    for cidr, az in (("10.42.1.0/24", f"{region}a"), ("10.42.2.0/24", f"{region}b")):
        if cidr not in by_cidr:
            by_cidr[cidr] = ec2.create_subnet(VpcId=vpc_id, CidrBlock=cidr, AvailabilityZone=az)["Subnet"]["SubnetId"]
        ids.append(by_cidr[cidr])
    return vpc_id, ids


def _target_group(elb: Any, name: str, vpc_id: str) -> str:
    try:
        return elb.describe_target_groups(Names=[name])["TargetGroups"][0]["TargetGroupArn"]
    except ClientError as err:
        if "NotFound" not in err.response["Error"]["Code"]:
            raise
    return elb.create_target_group(
        Name=name, Protocol="HTTP", Port=80, VpcId=vpc_id, TargetType="ip", HealthCheckPath="/healthz"
    )["TargetGroups"][0]["TargetGroupArn"]


def _load_balancer(elb: Any, subnets: list[str], name: str = "demo-alb") -> dict:
    try:
        return elb.describe_load_balancers(Names=[name])["LoadBalancers"][0]
    except ClientError as err:
        if "NotFound" not in err.response["Error"]["Code"]:
            raise
    return elb.create_load_balancer(Name=name, Subnets=subnets, Scheme="internal", Type="application")[
        "LoadBalancers"
    ][0]


def _listener(elb: Any, lb_arn: str, port: int, first: str, second: str) -> str:
    for listener in elb.describe_listeners(LoadBalancerArn=lb_arn)["Listeners"]:
        if listener["Port"] == port:
            return listener["ListenerArn"]
    action = {
        "Type": "forward",
        "ForwardConfig": {"TargetGroups": [{"TargetGroupArn": first, "Weight": 100}, {"TargetGroupArn": second, "Weight": 0}]},
    }
    return elb.create_listener(LoadBalancerArn=lb_arn, Protocol="HTTP", Port=port, DefaultActions=[action])[
        "Listeners"
    ][0]["ListenerArn"]


def _zone(r53: Any) -> str:
    for zone in r53.list_hosted_zones_by_name(DNSName=ZONE)["HostedZones"]:
        if zone["Name"] == ZONE:
            return zone["Id"].split("/")[-1]
    return r53.create_hosted_zone(Name=ZONE, CallerReference="runbook-demo-zone")["HostedZone"]["Id"].split("/")[-1]


def _health_check(r53: Any, fqdn: str) -> str:
    for check in r53.list_health_checks()["HealthChecks"]:
        if check.get("HealthCheckConfig", {}).get("FullyQualifiedDomainName") == fqdn:
            return check["Id"]
    return r53.create_health_check(
        CallerReference=f"runbook-demo-{fqdn}",
        HealthCheckConfig={"Type": "HTTPS", "FullyQualifiedDomainName": fqdn, "Port": 443, "ResourcePath": "/healthz"},
    )["HealthCheck"]["Id"]


def _db(rds: Any, identifier: str) -> dict | None:
    try:
        return rds.describe_db_instances(DBInstanceIdentifier=identifier)["DBInstances"][0]
    except ClientError as err:
        if "NotFound" not in err.response["Error"]["Code"]:
            raise
        return None


READ_ONLY_PARAMETER_GROUP = "orders-read-only"


def _read_only_group(rds: Any) -> None:
    try:
        if rds.describe_db_parameter_groups(DBParameterGroupName=READ_ONLY_PARAMETER_GROUP)["DBParameterGroups"]:
            return  # (moto answers an unknown name with an empty list, AWS with DBParameterGroupNotFound)
    except ClientError as err:
        if "NotFound" not in err.response["Error"]["Code"]:
            raise
    rds.create_db_parameter_group(
        DBParameterGroupName=READ_ONLY_PARAMETER_GROUP,
        DBParameterGroupFamily="postgres16",
        Description="default_transaction_read_only=on (fences writes during a failover)",
    )


def seed_alb(session: boto3.Session | None = None) -> dict:
    """The network and ALB part of the demo (VPC, subnets, target groups, demo-alb and its two listeners)."""
    session = session or boto3.Session()
    ec2 = session.client("ec2", region_name=PRIMARY_REGION)
    elb = session.client("elbv2", region_name=PRIMARY_REGION)
    vpc_id, subnets = _vpc(ec2)
    tgs = {name: _target_group(elb, name, vpc_id) for name in ("checkout-blue", "checkout-green", "checkout-stable", "checkout-canary")}
    lb = _load_balancer(elb, subnets)
    return {
        "vpc_id": vpc_id,
        "subnet_ids": subnets,
        "load_balancer": lb,
        "load_balancer_arn": lb["LoadBalancerArn"],
        "load_balancer_dns": lb["DNSName"],
        "listener_bluegreen_arn": _listener(elb, lb["LoadBalancerArn"], 80, tgs["checkout-blue"], tgs["checkout-green"]),
        "listener_canary_arn": _listener(elb, lb["LoadBalancerArn"], 8080, tgs["checkout-stable"], tgs["checkout-canary"]),
        "target_groups": tgs,
    }


# the release demo: development's and staging's canary listeners on demo-alb, production's ALB per region (a wave each)
RELEASE_CANARY_LISTENERS = {"dev": 8081, "stg": 8082}
RELEASE_WAVE_REGIONS = (PRIMARY_REGION, REPLICA_REGION)


def seed_release(session: boto3.Session | None = None) -> dict:
    """The release demo's routers (see the module's doc); idempotent. Returns their listener ARNs by name."""
    session = session or boto3.Session()
    elb = session.client("elbv2", region_name=PRIMARY_REGION)
    vpc_id, subnets = _vpc(session.client("ec2", region_name=PRIMARY_REGION))
    lb_arn = _load_balancer(elb, subnets)["LoadBalancerArn"]
    listeners: dict[str, str] = {}
    for env, port in RELEASE_CANARY_LISTENERS.items():
        stable, canary = (_target_group(elb, f"checkout-{env}-{role}", vpc_id) for role in ("stable", "canary"))
        listeners[f"demo-alb:{port}"] = _listener(elb, lb_arn, port, stable, canary)
    for region in RELEASE_WAVE_REGIONS:
        elb = session.client("elbv2", region_name=region)
        vpc_id, subnets = _vpc(session.client("ec2", region_name=region), region)
        blue, green = (_target_group(elb, f"checkout-prod-{colour}", vpc_id) for colour in ("blue", "green"))
        lb = _load_balancer(elb, subnets, f"prod-{region}")
        listeners[f"prod-{region}:80"] = _listener(elb, lb["LoadBalancerArn"], 80, blue, green)
    return listeners


def seed_demo(session: boto3.Session | None = None) -> dict:
    session = session or boto3.Session()
    r53 = session.client("route53", region_name=PRIMARY_REGION)
    rds = session.client("rds", region_name=PRIMARY_REGION)
    rds_west = session.client("rds", region_name=REPLICA_REGION)

    alb = seed_alb(session)
    lb = alb.pop("load_balancer")

    zone_id = _zone(r53)
    health_check = _health_check(r53, "orders-db.us-east-1.demo.internal")
    alias_zone = lb.get("CanonicalHostedZoneId") or "Z35SXDOTRQ7X7K"
    changes = [
        {
            "Action": "UPSERT",
            "ResourceRecordSet": {
                "Name": f"checkout.{ZONE}",
                "Type": "A",
                "SetIdentifier": ident,
                "Weight": weight,
                "AliasTarget": {"HostedZoneId": alias_zone, "DNSName": lb["DNSName"], "EvaluateTargetHealth": False},
            },
        }
        for ident, weight in (("blue", 100), ("green", 0))
    ]
    for ident, role, target, check in (
        ("primary", "PRIMARY", "orders-db.us-east-1.demo.internal", health_check),
        ("secondary", "SECONDARY", "orders-db.us-west-2.demo.internal", None),
    ):
        rrset = {
            "Name": f"orders-db.{ZONE}",
            "Type": "CNAME",
            "SetIdentifier": ident,
            "Failover": role,
            "TTL": 30,
            "ResourceRecords": [{"Value": target}],
        }
        if check:
            rrset["HealthCheckId"] = check
        changes.append({"Action": "UPSERT", "ResourceRecordSet": rrset})
    r53.change_resource_record_sets(HostedZoneId=zone_id, ChangeBatch={"Changes": changes})

    for client in (rds, rds_west):
        _read_only_group(client)
    primary = _db(rds, "orders-db") or rds.create_db_instance(
        DBInstanceIdentifier="orders-db",
        DBInstanceClass="db.t3.micro",
        Engine="postgres",
        AllocatedStorage=20,
        MasterUsername="orders",
        MasterUserPassword="demo-only-password",
        DBName="orders",
    )["DBInstance"]
    snapshots = rds.describe_db_snapshots(DBInstanceIdentifier="orders-db", SnapshotType="manual")["DBSnapshots"]
    if not any(s["DBSnapshotIdentifier"] == "orders-db-seed" for s in snapshots):
        rds.create_db_snapshot(DBSnapshotIdentifier="orders-db-seed", DBInstanceIdentifier="orders-db")
    replica = _db(rds_west, "orders-db-replica") or rds_west.create_db_instance_read_replica(
        DBInstanceIdentifier="orders-db-replica",
        SourceDBInstanceIdentifier=primary["DBInstanceArn"],
        SourceRegion=PRIMARY_REGION,
        DBInstanceClass="db.t3.micro",
    )["DBInstance"]

    return {
        **alb,
        "hosted_zone_id": zone_id,
        "health_check_id": health_check,
        "rds_primary": {"identifier": "orders-db", "region": PRIMARY_REGION, "arn": primary["DBInstanceArn"]},
        "rds_snapshot": "orders-db-seed",
        "read_only_parameter_group": READ_ONLY_PARAMETER_GROUP,
        "rds_replica": {"identifier": "orders-db-replica", "region": REPLICA_REGION, "arn": replica["DBInstanceArn"]},
        "release_listeners": seed_release(session),  # last: the ids above stay those of the fixed seed
    }


if __name__ == "__main__":
    print(json.dumps(seed_demo(), indent=2))
