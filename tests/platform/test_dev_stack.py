"""`runbook dev` (starters.dev.run_dev) as a user runs it: start, everything seeded and polling, Ctrl-C stops every
child, and a start after the parent was SIGKILLed cleans up what it left behind. Every door works: a dead worker is
restarted, a restarted stack has the same AWS ids (the stock catalog's and a run in flight's), the demo backup
refreshes on its schedule after a new order, and metrics flow for every version the demo serves."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import time
from pathlib import Path
from typing import Iterator

import boto3
import httpx
import hvac
import pytest
import yaml

from tests.platform.procs import free_dev_ports, short_state_dir, start_dev

READY = "local stack ready"


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return "\nState:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False


def wait_gone(pids: list[int], timeout: float = 15) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = [pid for pid in pids if alive(pid)]
        if not left:
            return []
        time.sleep(0.1)
    return [pid for pid in pids if alive(pid)]


CORE = {"temporal", "moto", "openbao", "worker", "postgres"}  # the gateway is checked by its own tests


def recorded_pids(state: Path, only: set[str] | None = None) -> dict[str, int]:
    found = {p.stem: json.loads(p.read_text())["pid"] for p in (state / "pids").glob("*.json")}
    return {k: v for k, v in found.items() if only is None or k in only}


@pytest.fixture
def ports() -> dict[str, int]:
    return free_dev_ports()


def demo_ids(aws: dict) -> dict[str, str]:
    """The seeded ids a run holds on to: the zone, the load balancer and its listeners."""
    elb = boto3.client("elbv2", **aws)
    lb = elb.describe_load_balancers(Names=["demo-alb"])["LoadBalancers"][0]["LoadBalancerArn"]
    zones = boto3.client("route53", **aws).list_hosted_zones_by_name(DNSName="demo.internal.")["HostedZones"]
    return {"zone": zones[0]["Id"].split("/")[-1], "load_balancer": lb,
            **{f"listener:{lst['Port']}": lst["ListenerArn"] for lst in elb.describe_listeners(LoadBalancerArn=lb)["Listeners"]}}


def stock_trigger_zone_id() -> str:
    spec = yaml.safe_load((Path(__file__).resolve().parents[2] / "runbooks" / "region-failover.yaml").read_text())
    dns = spec["triggers"]["pagerduty"][0]["parameters"]["dns"]
    found = re.search(r"zone_id: (\w+)", dns)
    assert found, dns
    return found.group(1)


def backups(aws: dict) -> list[dict]:
    s3 = boto3.client("s3", **aws)
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket="demo-backups", Prefix="orders/").get("Contents", []))
    return [json.loads(s3.get_object(Bucket="demo-backups", Key=f"manifests/{key}.json")["Body"].read()) for key in keys]


def wait_for(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


@pytest.fixture
def state() -> Iterator[Path]:
    with short_state_dir() as path:
        yield path


@pytest.mark.timeout(360)  # two starts of the whole stack; on a loaded 2-core machine each can take a minute
def test_dev_stack_starts_seeded_stops_cleanly_and_survives_an_unclean_stop(state, ports):
    dev = start_dev(state, ports, RUNBOOK_DEMO_BACKUP_INTERVAL="2", RUNBOOK_DEMO_METRICS_INTERVAL="1")
    try:
        dev.wait_for(READY, timeout=120)

        # the UI answers
        assert httpx.get(f"http://127.0.0.1:{ports['ui']}/", timeout=5).status_code == 200
        # moto: the demo infrastructure and the PostgreSQL backup
        aws = dict(
            endpoint_url=f"http://127.0.0.1:{ports['moto']}",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
        )
        if (Path(__file__).resolve().parents[2] / "starters" / "demo_aws.py").exists():
            albs = boto3.client("elbv2", **aws).describe_load_balancers()["LoadBalancers"]
            assert albs, "no demo ALB seeded"
        objects = boto3.client("s3", **aws).list_objects_v2(Bucket="demo-backups", Prefix="orders/").get("Contents", [])
        assert objects and objects[0]["Size"] > 0 and objects[0]["Key"].endswith(".dump")
        # OpenBao: the demo secrets
        vault = hvac.Client(url=f"http://127.0.0.1:{ports['vault']}", token="root")
        secret = vault.secrets.kv.v2.read_secret_version(path="demo/orders-db", mount_point="secret", raise_on_deleted_version=True)
        assert set(secret["data"]["data"]) == {"username", "password"}
        # the env file points at the stand-ins
        env_file = (state / "dev.env").read_text()
        assert f"export TEMPORAL_ADDRESS=127.0.0.1:{ports['temporal']}" in env_file
        assert f"export AWS_ENDPOINT_URL=http://127.0.0.1:{ports['moto']}" in env_file
        # the worker polls (run_dev waits for pollers before READY) and serves metrics
        assert httpx.get(f"http://127.0.0.1:{ports['metrics']}/metrics", timeout=5).status_code == 200
        for name in ("temporal", "moto", "openbao", "worker"):
            assert (state / "logs" / f"{name}.log").exists()

        # moto was seeded with a fixed seed: the zone the stock PagerDuty trigger names is the seeded one
        ids = demo_ids(aws)
        assert ids["zone"] == stock_trigger_zone_id(), ids
        assert f"export RUNBOOK_DEMO_ZONE_ID={ids['zone']}" in env_file

        # a worker that dies is restarted (after a back-off, logged) and polls again
        dead = recorded_pids(state, {"worker"})["worker"]
        os.kill(dead, signal.SIGKILL)
        dev.wait_for("worker restarted", timeout=30)
        assert "worker died (-9)" in dev.output and "restarting it in 1s" in dev.output
        restarted = recorded_pids(state, {"worker"})["worker"]
        assert restarted != dead and alive(restarted)
        def serves_metrics() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{ports['metrics']}/metrics", timeout=5).status_code == 200
            except httpx.HTTPError:
                return False
        wait_for(serves_metrics, 60, "the restarted worker serves no metrics")

        # the demo backup refreshes on its schedule (2 s here), each time after a new order
        taken = wait_for(lambda: (lambda found: found if len(found) >= 3 else None)(backups(aws)), 30,
                         "the demo backup was not refreshed")
        assert taken[-1]["row_counts"]["orders"] > taken[0]["row_counts"]["orders"], taken

        # metrics for every version the demo serves: stable, blue's v1 (going back), green's and the canary's v2
        cloudwatch = boto3.client("cloudwatch", **aws)
        now = time.time()
        for version in ("stable", "v1", "v2"):
            points = cloudwatch.get_metric_statistics(
                Namespace="Demo/Service", MetricName="ErrorRate", Statistics=["Average"], Period=60,
                StartTime=now - 600, EndTime=now + 60,
                Dimensions=[{"Name": "Service", "Value": "checkout"}, {"Name": "Version", "Value": version}],
            )["Datapoints"]
            assert points, f"no metrics for version {version}"

        first = recorded_pids(state, CORE)
        assert set(first) == CORE
        assert all(alive(pid) for pid in first.values())

        # an unclean stop: SIGKILL the parent; the children live on
        dev.proc.kill()
        dev.proc.wait(10)
        assert all(alive(pid) for pid in first.values())

        # the next start stops them (their command lines still match) and comes up on the same ports
        dev = start_dev(state, ports)
        dev.wait_for(READY, timeout=120)
        assert "left over from an earlier run" in dev.output
        assert demo_ids(aws) == ids  # a fresh moto, the same ARNs and zone id: a run in flight finds its listener
        assert wait_gone(list(first.values())) == []
        second = recorded_pids(state, CORE)
        assert set(second) == CORE and not set(second.values()) & set(first.values())

        # Ctrl-C: every child stops, PID files are removed, exit status 0
        dev.proc.send_signal(signal.SIGINT)
        assert dev.proc.wait(30) == 0, dev.output
        assert wait_gone(list(second.values())) == [], dev.output
        assert recorded_pids(state) == {}
    finally:
        dev.stop()
        for pid in recorded_pids(state).values():
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_a_port_held_by_another_process_fails_fast_naming_it(tmp_path, ports):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", ports["moto"]))
        squatter.listen()
        dev = start_dev(tmp_path / "state", ports)
        code = dev.proc.wait(30)
        dev.stop()
    assert code == 1
    assert f"port {ports['moto']} (moto) is already in use" in dev.output
    assert "RUNBOOK_DEV_MOTO_PORT" in dev.output
    assert "Traceback" not in dev.output
    assert not (tmp_path / "state" / "pids").exists() or recorded_pids(tmp_path / "state") == {}
