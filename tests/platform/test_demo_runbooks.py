"""The local stack's demo commands, as a new user pastes them: start `runbook dev` once (free ports, a temp state
folder), source its dev.env, and run the banner's commands (starters.dev.DEMO_COMMANDS) through the real `runbook`
CLI in a shell: blue-green with its approval, the failover drill with its approval, the restore drill, each to
Succeeded, with their effects checked in moto."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import boto3
import pytest

from starters.dev import DEMO_COMMANDS, DOOR_COMMANDS, SCRIPTS
from tests.platform.procs import free_dev_ports, short_state_dir, start_dev

COMMANDS = list(DEMO_COMMANDS.values())
BLUEGREEN, FAILOVER, RESTORE = COMMANDS[0], COMMANDS[1], COMMANDS[2]


@pytest.fixture(scope="module")
def stack():
    with short_state_dir() as state:
        yield from _stack(state)


def _stack(state: Path):
    dev = start_dev(state, free_dev_ports(), RUNBOOK_DEMO_METRICS_INTERVAL="1")
    try:
        dev.wait_for("local stack ready", timeout=90)
        dev.wait_for("Ctrl-C stops everything", timeout=10)
        yield state, dev
    finally:
        dev.proc.send_signal(2)  # Ctrl-C
        try:
            dev.proc.wait(30)
        except subprocess.TimeoutExpired:
            dev.stop()
        dev.stop()


OK = (0,)  # the CLI exits through os._exit after flushing, so SDK threads can no longer crash its exit


def sh(state: Path, command: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """``source <state>/dev.env; <command>`` in bash, with this venv's `runbook` first on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "TEMPORAL_", "RUNBOOK_", "VAULT_"))}
    env["PATH"] = f"{SCRIPTS}:{env.get('PATH', '')}"
    env["XDG_CACHE_HOME"] = str(state / "cache")  # `runbook login` caches there, not in the real home
    return subprocess.run(
        ["bash", "-c", f"source {state / 'dev.env'} && {command}"],
        env=env, capture_output=True, text=True, timeout=timeout, cwd=Path(__file__).resolve().parents[2],
    )


def status_json(state: Path, workflow_id: str) -> dict:
    out = sh(state, f"runbook status {workflow_id} --json")
    assert out.returncode in OK, out.stdout + out.stderr
    return json.loads(out.stdout)


def wait_status(state: Path, workflow_id: str, wanted: str, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        found = status_json(state, workflow_id)
        if found.get("status") == wanted:
            return found
        assert time.monotonic() < deadline, f"{workflow_id} not {wanted} in {timeout}s: {found}"
        time.sleep(0.5)


def dev_env(state: Path) -> dict[str, str]:
    env = {}
    for line in (state / "dev.env").read_text().splitlines():
        if line.startswith("export "):
            key, _, value = line[len("export "):].partition("=")
            env[key] = value.strip("'")
    return env


def test_banner_lists_one_command_per_runbook(stack):
    _, dev = stack
    for name in ("blue-green", "region-failover", "restore-drill", "provision-environment", "canary-ramp"):
        assert f"runbook start {name} " in dev.output


def test_demo_commands_run_to_succeeded(stack):
    state, _ = stack
    env = dev_env(state)
    elb = boto3.client("elbv2", region_name="us-east-1", endpoint_url=env["AWS_ENDPOINT_URL"],
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    started = time.monotonic()

    # blue-green and the failover drill start and wait at their gates; the restore drill runs meanwhile
    for command in (BLUEGREEN[0], FAILOVER[0]):
        out = sh(state, command)
        assert out.returncode in OK and ("started" in out.stdout or "approved" in out.stdout), out.stdout + out.stderr
    restore = sh(state, RESTORE[0], timeout=60)
    assert restore.returncode in OK, restore.stdout + restore.stderr
    assert "PASSED" in restore.stdout and "checks 6/6" in restore.stdout.replace("\n", " "), restore.stdout

    gate = wait_status(state, "bluegreen:checkout", "WaitingForApproval")
    assert gate["gate"]["binding"] in BLUEGREEN[1], gate["gate"]
    wait_status(state, "region-move-orders", "WaitingForApproval")
    for command in (BLUEGREEN[1], FAILOVER[1]):
        out = sh(state, command)
        assert out.returncode in OK and ("started" in out.stdout or "approved" in out.stdout), out.stdout + out.stderr

    bg = wait_status(state, "bluegreen:checkout", "Succeeded", timeout=60)
    fo = wait_status(state, "region-move-orders", "Succeeded", timeout=60)
    elapsed = time.monotonic() - started

    # the ALB's default action now forwards everything to green
    lb = elb.describe_load_balancers(Names=["demo-alb"])["LoadBalancers"][0]
    listener = next(lst for lst in elb.describe_listeners(LoadBalancerArn=lb["LoadBalancerArn"])["Listeners"] if lst["Port"] == 80)
    green = elb.describe_target_groups(Names=["checkout-green"])["TargetGroups"][0]["TargetGroupArn"]
    weights = {t["TargetGroupArn"]: t["Weight"] for t in listener["DefaultActions"][0]["ForwardConfig"]["TargetGroups"]}
    assert weights[green] > 0 and all(w == 0 for arn, w in weights.items() if arn != green), weights
    assert [s["name"] for s in bg["steps"]][-2:] == ["bake", "scale-down"]

    # the drill skipped compute (none on the local stack) and failed back
    steps = {s["name"]: s["status"] for s in fo["steps"]}
    assert steps["fence-compute"] == "skipped" and steps["scale"] == "skipped", steps
    print(f"demo_runbooks_wall_s {elapsed:.1f} s")


def test_banner_door_examples_pass_the_gateway(stack):
    """The banner's signed examples reach the gateway with the secrets it read from OpenBao: the Slack one answers
    in the demo channel (and the gateway's Slack API calls land in the demo sink), the PagerDuty one is accepted."""
    state, dev = stack
    slack, pagerduty = DOOR_COMMANDS.values()
    assert slack in dev.output and pagerduty in dev.output
    out = sh(state, slack)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Runbooks you may start here" in out.stdout and "`restore-drill`" in out.stdout, out.stdout
    assert "auth.test" in (state / "demo" / "slack-api.jsonl").read_text()
    # the same webhook as P3 (no trigger matches): a P1 here would start a real failover of the demo database
    out = sh(state, pagerduty + " --priority P3")
    assert out.returncode == 0 and out.stdout.startswith("202 "), out.stdout + out.stderr
