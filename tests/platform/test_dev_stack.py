"""`runbook dev` (starters.dev.run_dev) as a user runs it, on one stack started for the module (a start of the
whole stack costs tens of seconds of CPU, so the tests share it and run in file order):

- the demo commands, as a new user pastes them: source its dev.env and run the banner's commands
  (starters.dev.DEMO_COMMANDS) through the real `runbook` CLI in a shell: blue-green with its approval, the failover
  drill with its approval, the restore drill, each to Succeeded, with their effects checked in moto; the three
  rotate-secret demos and the release with its two approvals, to Succeeded, with their effects checked in OpenBao,
  PostgreSQL, the TLS endpoint and moto; and the banner's signed examples through the gateway's doors;
- then its life: everything seeded and polling, a dead worker is restarted, a start after the parent was SIGKILLed
  cleans up what it left behind and has the same AWS ids (the stock catalog's and a run in flight's) and no user a
  previous OpenBao issued, the demo
  backup refreshes on its schedule after a new order, metrics flow for every version the demo serves, and Ctrl-C
  stops every child."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import boto3
import httpx
import hvac
import pytest
import yaml

from starters.dev import DEMO_COMMANDS, DOOR_COMMANDS
from tests import harness
from tests.platform.procs import OK, dev_env, free_dev_ports, sh, short_state_dir, start_dev, status_json, wait_status

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


def backups(s3) -> list[dict]:
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket="demo-backups", Prefix="orders/").get("Contents", []))
    return [json.loads(s3.get_object(Bucket="demo-backups", Key=f"manifests/{key}.json")["Body"].read()) for key in keys]


def wait_for(check, timeout: float, what: str, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, what
        time.sleep(interval)


COMMANDS = list(DEMO_COMMANDS.values())
BLUEGREEN, FAILOVER, RESTORE = COMMANDS[0], COMMANDS[1], COMMANDS[2]
ROTATE = [cmds for name, cmds in DEMO_COMMANDS.items() if name.startswith("rotate-secret")]
RELEASE = next(cmds for name, cmds in DEMO_COMMANDS.items() if name.startswith("release"))


@pytest.fixture(scope="module")
def stack() -> Iterator[tuple[Path, dict[str, int], list]]:
    """The module's stack: (state folder, ports, [the running `runbook dev`]); the last test replaces the process."""
    with short_state_dir() as state:
        ports = free_dev_ports()
        devs = [start_dev(state, ports)]  # the demo metrics every 5 s, as `make dev` has them
        try:
            devs[-1].wait_for(READY, timeout=120)
            devs[-1].wait_for("Ctrl-C stops everything", timeout=10)
            yield state, ports, devs
        finally:
            dev = devs[-1]
            dev.proc.send_signal(signal.SIGINT)
            try:
                dev.proc.wait(30)
            except subprocess.TimeoutExpired:
                dev.stop()
            dev.stop()
            for pid in recorded_pids(state).values():
                if alive(pid):
                    os.kill(pid, signal.SIGKILL)


@pytest.mark.timeout(180)  # the first test: the module's stack starts in its setup
def test_banner_lists_one_command_per_runbook(stack):
    _, _, devs = stack
    dev = devs[-1]
    for name in ("blue-green", "region-failover", "restore-drill", "provision-environment", "canary-ramp",
                 "rotate-secret", "release"):
        assert f"runbook start {name} " in dev.output


@pytest.mark.timeout(600)  # real-time runbooks on the whole stack: about 1.5 minutes idle, over 4 at a load of 20
def test_demo_commands_run_to_succeeded(stack):
    """The banner's demos, side by side where they act on different services (one run per service at a time), in
    two lines: the checkout service's release, then its blue-green switch; meanwhile the orders database's failover
    drill waits at its gate while the restore drill runs, and the three rotate-secret demos run together while the
    drill fails over and back."""
    state, _, _ = stack
    started = time.monotonic()
    with ThreadPoolExecutor(2) as pool:
        checkout = pool.submit(release_then_blue_green, state)
        orders = pool.submit(drills_and_rotations, state)
        checkout.result(), orders.result()  # each line's failure is raised here
    print(f"all_demos_wall_s {time.monotonic() - started:.1f} s")


APPROVING = threading.Lock()  # one login cache ($XDG_CACHE_HOME/runbook/login.json): a login and its approval together


def approve(state: Path, command: str, answer: str) -> None:
    with APPROVING:
        out = sh(state, command)
    assert out.returncode in OK and answer in out.stdout, out.stdout + out.stderr


def release_then_blue_green(state: Path) -> None:
    """The release (approved by bob and carol) to Succeeded, then blue-green to Succeeded with the ALB on green."""
    start_release(state)
    finish_release(state)
    env = dev_env(state)
    elb = boto3.client("elbv2", region_name="us-east-1", endpoint_url=env["AWS_ENDPOINT_URL"],
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    out = sh(state, BLUEGREEN[0])
    assert out.returncode in OK and "started" in out.stdout, out.stdout + out.stderr
    gate = wait_status(state, "bluegreen:checkout", "WaitingForApproval")
    assert gate["gate"]["binding"] in BLUEGREEN[1], gate["gate"]
    approve(state, BLUEGREEN[1], "approved")
    wait_status(state, "bluegreen:checkout", "Succeeded", timeout=90)
    # what a user reads: `runbook status ID --json` through the real CLI
    bg = status_json(state, "bluegreen:checkout")
    assert bg["status"] == "Succeeded", bg["status"]
    # the ALB's default action now forwards everything to green
    lb = elb.describe_load_balancers(Names=["demo-alb"])["LoadBalancers"][0]
    listener = next(lst for lst in elb.describe_listeners(LoadBalancerArn=lb["LoadBalancerArn"])["Listeners"] if lst["Port"] == 80)
    green = elb.describe_target_groups(Names=["checkout-green"])["TargetGroups"][0]["TargetGroupArn"]
    weights = {t["TargetGroupArn"]: t["Weight"] for t in listener["DefaultActions"][0]["ForwardConfig"]["TargetGroups"]}
    assert weights[green] > 0 and all(w == 0 for arn, w in weights.items() if arn != green), weights
    assert [s["name"] for s in bg["steps"]][-2:] == ["bake", "scale-down"]


def drills_and_rotations(state: Path) -> None:
    """The failover drill waits at its gate while the restore drill runs (6/6 checks); approved, it fails over and
    back while the three rotations run; all end Succeeded."""
    runs = before_rotations(state)
    out = sh(state, FAILOVER[0])
    assert out.returncode in OK and "started" in out.stdout, out.stdout + out.stderr
    restore = sh(state, RESTORE[0], timeout=90)
    assert restore.returncode in OK, restore.stdout + restore.stderr
    assert "PASSED" in restore.stdout and "checks 6/6" in restore.stdout.replace("\n", " "), restore.stdout
    wait_status(state, "region-move-orders", "WaitingForApproval")
    approve(state, FAILOVER[1], "approved")
    run_rotations(state, runs)
    check_rotations(state, runs)
    wait_status(state, "region-move-orders", "Succeeded", timeout=90)
    fo = status_json(state, "region-move-orders")
    assert fo["status"] == "Succeeded", fo["status"]
    # the drill skipped compute (none on the local stack) and failed back
    steps = {s["name"]: s["status"] for s in fo["steps"]}
    assert steps["fence-compute"] == "skipped" and steps["scale"] == "skipped", steps


def test_banner_door_examples_pass_the_gateway(stack):
    """The banner's signed examples reach the gateway with the secrets it read from OpenBao: the Slack one answers
    in the demo channel (and the gateway's Slack API calls land in the demo sink), the PagerDuty one is accepted."""
    state, _, devs = stack
    dev = devs[-1]
    slack, pagerduty = DOOR_COMMANDS.values()
    assert slack in dev.output and pagerduty in dev.output
    out = sh(state, slack)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Runbooks you may start here" in out.stdout and "`restore-drill`" in out.stdout, out.stdout
    assert "auth.test" in (state / "demo" / "slack-api.jsonl").read_text()
    # the same webhook as P3 (no trigger matches): a P1 here would start a real failover of the demo database
    out = sh(state, pagerduty + " --priority P3")
    assert out.returncode == 0 and out.stdout.startswith("202 "), out.stdout + out.stderr


def served_serial(endpoint: str) -> str:
    import ssl

    from core.rotation import serial_of

    host, _, port = endpoint.rpartition(":")
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    with socket.create_connection((host, int(port)), timeout=5) as sock, context.wrap_socket(sock) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der
    return serial_of(der)


def engine_users(pg_uri: str) -> set[str]:
    import psycopg

    from starters.demo_rotation import USER_PREFIX

    with psycopg.connect(pg_uri, autocommit=True) as conn:
        return {r[0] for r in conn.execute("SELECT rolname FROM pg_roles WHERE rolname LIKE %s", (USER_PREFIX + "%",))}


def consumer_users(pg_uri: str) -> list[str]:
    import psycopg

    with psycopg.connect(pg_uri, autocommit=True) as conn:
        return [r[0] for r in conn.execute("SELECT usename FROM pg_stat_activity WHERE application_name = 'orders-api'")]


@dataclass
class Rotations:
    """The rotate-secret demos: what they began from (``before_rotations``) and how each ended (``run_rotations``)."""

    before: dict[str, dict]
    rotations: list[subprocess.CompletedProcess] = field(default_factory=list)


def kv_now(vault: hvac.Client, path: str) -> dict:
    return vault.secrets.kv.v2.read_secret_version(path=path, mount_point="secret", raise_on_deleted_version=True)["data"]


def before_rotations(state: Path) -> Rotations:
    """What the rotations start from: the secrets in KV, and the consumers on them."""
    from starters.demo_rotation import API_KEY_KV, DB_KV, TLS_KV

    env = dev_env(state)
    vault = hvac.Client(url=env["VAULT_ADDR"], token=env["VAULT_TOKEN"])
    before = {path: kv_now(vault, path) for path in (DB_KV, TLS_KV, API_KEY_KV)}
    assert consumer_users(env["RUNBOOK_DEMO_POSTGRES_URI"]) == [before[DB_KV]["data"]["username"]]
    assert served_serial(env["RUNBOOK_DEMO_TLS_ENDPOINT"]) == before[TLS_KV]["data"]["serial"]
    return Rotations(before)


def start_release(state: Path) -> None:
    """The banner's release command (it runs development and staging, then waits for its approvers)."""
    out = sh(state, RELEASE[0])
    assert out.returncode in OK and "started release:checkout" in out.stdout, out.stdout + out.stderr


def run_rotations(state: Path, runs: Rotations) -> None:
    """The banner's three rotate-secret commands (each with --wait), together: each rotates its own secret."""
    with ThreadPoolExecutor(len(ROTATE)) as pool:
        runs.rotations = list(pool.map(lambda cmds: sh(state, cmds[0], timeout=180), ROTATE))


def check_rotations(state: Path, runs: Rotations) -> None:
    """Each rotation ended Succeeded and the stand-ins show it (orders-api on a new PostgreSQL user, the old one
    dropped; the TLS endpoint presenting the new serial, the old one revoked; the consumer reporting the new key, the
    old version destroyed)."""
    from starters.demo_rotation import API_KEY_KV, DB_KV, PKI_MOUNT, TLS_KV

    env = dev_env(state)
    vault = hvac.Client(url=env["VAULT_ADDR"], token=env["VAULT_TOKEN"])
    assert len(runs.rotations) == len(ROTATE) == 3
    for done in runs.rotations:
        assert done.returncode in OK and "finished: Succeeded" in done.stdout, done.stdout + done.stderr
    before, after = runs.before, {path: kv_now(vault, path) for path in (DB_KV, TLS_KV, API_KEY_KV)}
    for path in (DB_KV, TLS_KV, API_KEY_KV):
        assert after[path]["metadata"]["version"] == before[path]["metadata"]["version"] + 1, path
    pg = env["RUNBOOK_DEMO_POSTGRES_URI"]
    old_user, new_user = before[DB_KV]["data"]["username"], after[DB_KV]["data"]["username"]
    assert new_user != old_user and consumer_users(pg) == [new_user]
    assert old_user not in engine_users(pg) and new_user in engine_users(pg)
    new_serial, old_serial = after[TLS_KV]["data"]["serial"], before[TLS_KV]["data"]["serial"]
    assert served_serial(env["RUNBOOK_DEMO_TLS_ENDPOINT"]) == new_serial != old_serial
    assert vault.read(f"{PKI_MOUNT}/cert/{old_serial}")["data"]["revocation_time"] > 0
    answer = harness.http().get(f"{env['RUNBOOK_DEMO_URL']}/checkout/api-key", timeout=5).json()
    assert answer == {"api_key": after[API_KEY_KV]["data"]["fingerprint"]}
    versions = vault.secrets.kv.v2.read_secret_metadata(path=API_KEY_KV, mount_point="secret")["data"]["versions"]
    assert versions[str(before[API_KEY_KV]["metadata"]["version"])]["destroyed"] is True


def finish_release(state: Path) -> None:
    """The release, approved by bob and carol, ends Succeeded with both production ALBs (one per wave) on green."""
    env = dev_env(state)
    gate = wait_status(state, "release:checkout", "WaitingForApproval", timeout=120)
    assert gate["gate"]["binding"] in RELEASE[1], gate["gate"]
    for command in RELEASE[1:]:
        approve(state, command, "approved gate")
    wait_status(state, "release:checkout", "Succeeded", timeout=240)
    release = status_json(state, "release:checkout")
    waves = [s["name"] for s in release["steps"] if s["name"].startswith("production/") and s["status"] == "done"]
    assert waves == ["production/us-east-1: error budget", "production/us-east-1: blue-green",
                     "production/us-west-2: bake", "production/us-west-2: error budget",
                     "production/us-west-2: blue-green"], release["steps"]
    for region in ("us-east-1", "us-west-2"):
        elb = boto3.client("elbv2", region_name=region, endpoint_url=env["AWS_ENDPOINT_URL"],
                           aws_access_key_id="testing", aws_secret_access_key="testing")
        lb = elb.describe_load_balancers(Names=[f"prod-{region}"])["LoadBalancers"][0]["LoadBalancerArn"]
        action = elb.describe_listeners(LoadBalancerArn=lb)["Listeners"][0]["DefaultActions"][0]
        green = elb.describe_target_groups(Names=["checkout-prod-green"])["TargetGroups"][0]["TargetGroupArn"]
        weights = {t["TargetGroupArn"]: t["Weight"] for t in action["ForwardConfig"]["TargetGroups"]}
        assert weights[green] > 0 and all(w == 0 for arn, w in weights.items() if arn != green), (region, weights)


@pytest.mark.timeout(360)  # a second start of the whole stack; on a loaded 2-core machine it can take a minute
def test_dev_stack_starts_seeded_stops_cleanly_and_survives_an_unclean_stop(stack):
    """Runs after the demo tests, on their stack (the fixture stops whatever is left)."""
    state, ports, devs = stack
    dev = devs[-1]

    # the UI answers
    assert harness.http().get(f"http://127.0.0.1:{ports['ui']}/", timeout=5).status_code == 200
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
    assert harness.http().get(f"http://127.0.0.1:{ports['metrics']}/metrics", timeout=5).status_code == 200
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
            return harness.http().get(f"http://127.0.0.1:{ports['metrics']}/metrics", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False
    wait_for(serves_metrics, 60, "the restarted worker serves no metrics")

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
    # (every 3 s from here: a refresh during the demo tests' restore drill would change the backup it reads; each
    # refresh is an order, a pg_dump and three S3 requests, so not every second for the rest of the stack's life)
    dev = start_dev(state, ports, RUNBOOK_DEMO_BACKUP_INTERVAL="3")
    devs.append(dev)
    dev.wait_for(READY, timeout=120)
    assert "left over from an earlier run" in dev.output
    assert demo_ids(aws) == ids  # a fresh moto, the same ARNs and zone id: a run in flight finds its listener
    # a fresh OpenBao issued orders-api's credential again; the users the first one issued were dropped
    env = dev_env(state)
    pg = env["RUNBOOK_DEMO_POSTGRES_URI"]
    current = hvac.Client(url=env["VAULT_ADDR"], token="root").secrets.kv.v2.read_secret_version(
        path="demo/orders-app/db", mount_point="secret", raise_on_deleted_version=True)["data"]["data"]["username"]
    assert engine_users(pg) == {current}
    wait_for(lambda: consumer_users(pg) == [current], 10, "orders-api is not on the new OpenBao's user")
    assert wait_gone(list(first.values())) == []
    second = recorded_pids(state, CORE)
    assert set(second) == CORE and not set(second.values()) & set(first.values())

    # the demo backup refreshes on its schedule (3 s on this start; the start took the first), after a new order
    # one client for the polls (a boto3 client costs tens of ms of CPU), a look every half second at a 3 s schedule
    s3 = boto3.client("s3", **aws)
    taken = wait_for(lambda: (lambda found: found if len(found) >= 2 else None)(backups(s3)), 30,
                     "the demo backup was not refreshed", interval=0.5)
    assert taken[-1]["row_counts"]["orders"] > taken[0]["row_counts"]["orders"], taken

    # Ctrl-C: every child stops, PID files are removed, exit status 0
    dev.proc.send_signal(signal.SIGINT)
    assert dev.proc.wait(30) == 0, dev.output
    assert wait_gone(list(second.values())) == [], dev.output
    assert recorded_pids(state) == {}


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
