"""`runbook dev` (starters.dev.run_dev) as a user runs it: start, everything seeded and polling, Ctrl-C stops every
child, and a start after the parent was SIGKILLed cleans up what it left behind."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from pathlib import Path

import boto3
import httpx
import hvac
import pytest

from tests.platform.procs import free_dev_ports, start_dev

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


def test_dev_stack_starts_seeded_stops_cleanly_and_survives_an_unclean_stop(tmp_path, ports):
    state = tmp_path / "state"
    dev = start_dev(state, ports)
    try:
        dev.wait_for(READY, timeout=60)

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

        first = recorded_pids(state, CORE)
        assert set(first) == CORE
        assert all(alive(pid) for pid in first.values())

        # an unclean stop: SIGKILL the parent; the children live on
        dev.proc.kill()
        dev.proc.wait(10)
        assert all(alive(pid) for pid in first.values())

        # the next start stops them (their command lines still match) and comes up on the same ports
        dev = start_dev(state, ports)
        dev.wait_for(READY, timeout=60)
        assert "left over from an earlier run" in dev.output
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
