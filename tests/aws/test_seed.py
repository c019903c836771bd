import boto3

from starters.demo_aws import seed_demo


def test_seed_demo_twice_is_idempotent(aws):
    session = boto3.Session(region_name="us-east-1")
    first = seed_demo(session)
    second = seed_demo(session)
    assert first == second
    elb = session.client("elbv2")
    # demo-alb, and the release demo's production wave in this region
    assert sorted(lb["LoadBalancerName"] for lb in elb.describe_load_balancers()["LoadBalancers"]) == [
        "demo-alb", "prod-us-east-1"]
    assert len(elb.describe_target_groups()["TargetGroups"]) == 4 + 4 + 2
    listeners = elb.describe_listeners(LoadBalancerArn=first["load_balancer_arn"])["Listeners"]
    assert sorted(lst["Port"] for lst in listeners) == [80, 8080, 8081, 8082]  # the release's development and staging
    west = session.client("elbv2", region_name="us-west-2")
    assert [lb["LoadBalancerName"] for lb in west.describe_load_balancers()["LoadBalancers"]] == ["prod-us-west-2"]
    assert sorted(tg["TargetGroupName"] for tg in west.describe_target_groups()["TargetGroups"]) == [
        "checkout-prod-blue", "checkout-prod-green"]
    assert set(first["release_listeners"]) == {"demo-alb:8081", "demo-alb:8082", "prod-us-east-1:80", "prod-us-west-2:80"}
    bg = next(lst for lst in listeners if lst["Port"] == 80)
    groups = {g["TargetGroupArn"]: g["Weight"] for g in bg["DefaultActions"][0]["ForwardConfig"]["TargetGroups"]}
    assert groups == {first["target_groups"]["checkout-blue"]: 100, first["target_groups"]["checkout-green"]: 0}
    assert len(session.client("ec2").describe_subnets(Filters=[{"Name": "vpc-id", "Values": [first["vpc_id"]]}])["Subnets"]) == 2
    r53 = session.client("route53")
    assert len([z for z in r53.list_hosted_zones()["HostedZones"] if z["Name"] == "demo.internal."]) == 1
    records = r53.list_resource_record_sets(HostedZoneId=first["hosted_zone_id"])["ResourceRecordSets"]
    assert sorted((r["Name"], r.get("SetIdentifier")) for r in records if r["Type"] in ("A", "CNAME")) == [
        ("checkout.demo.internal.", "blue"),
        ("checkout.demo.internal.", "green"),
        ("orders-db.demo.internal.", "primary"),
        ("orders-db.demo.internal.", "secondary"),
    ]
    rds = session.client("rds", region_name="us-east-1")
    assert [s["DBSnapshotIdentifier"] for s in rds.describe_db_snapshots(DBInstanceIdentifier="orders-db", SnapshotType="manual")["DBSnapshots"]] == ["orders-db-seed"]
    west = session.client("rds", region_name="us-west-2").describe_db_instances()["DBInstances"]
    assert [(d["DBInstanceIdentifier"], d["ReadReplicaSourceDBInstanceIdentifier"]) for d in west] == [
        ("orders-db-replica", first["rds_primary"]["arn"])
    ]
