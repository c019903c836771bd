"""The local stack's rotate-secret demo (starters.demo_rotation) on a real OpenBao and PostgreSQL, without the stack:
set-up creates only what is missing (a second call issues nothing), a fresh OpenBao's set-up drops the users the
previous one issued, and the consumers follow a new KV version unless the stuck switch is on. The full demo (the
runbook's commands on `make dev`'s stack) is tests/platform/test_dev_stack.py's."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Iterator

import hvac
import psycopg
import pytest

from starters.demo_rotation import DB_KV, STUCK, TLS_KV, RotationDemo, setup_rotation
from tests.platform.test_dev_stack import consumer_users, engine_users, served_serial, wait_for

DATABASE = "postgres"


def kv(vault: hvac.Client, path: str) -> tuple[int, dict]:
    data = vault.secrets.kv.v2.read_secret_version(path=path, mount_point="secret", raise_on_deleted_version=True)["data"]
    return int(data["metadata"]["version"]), data["data"]


@pytest.fixture
def demo(openbao: tuple[str, str], postgres: str, tmp_path: Path) -> Iterator[tuple[hvac.Client, RotationDemo]]:
    addr, token = openbao
    setup_rotation(addr, token, postgres, DATABASE)
    rotation = RotationDemo(addr, token, postgres, DATABASE, tmp_path, tls_port=_free_port())
    stop = threading.Event()
    thread = threading.Thread(target=rotation.run, args=(stop, 0.1), daemon=True)
    thread.start()
    try:
        yield hvac.Client(url=addr, token=token), rotation
    finally:
        stop.set()
        thread.join(10)


def _free_port() -> int:
    from tests import harness

    return harness.free_port()


def test_consumers_follow_a_new_version_unless_stuck(demo, postgres, tmp_path):
    vault, rotation = demo
    endpoint = f"127.0.0.1:{rotation.tls_port}"
    user = kv(vault, DB_KV)[1]["username"]
    wait_for(lambda: consumer_users(postgres) == [user], 10, "orders-api did not connect")
    assert served_serial(endpoint) == kv(vault, TLS_KV)[1]["serial"]

    # the stuck switch: a new credential is not picked up
    (tmp_path / "demo" / STUCK).touch()
    creds = vault.secrets.database.generate_credentials("orders-app", mount_point="database")
    vault.secrets.kv.v2.create_or_update_secret(path=DB_KV, mount_point="secret", secret={
        "username": creds["data"]["username"], "password": creds["data"]["password"], "lease_id": creds["lease_id"]})
    time.sleep(0.5)
    assert consumer_users(postgres) == [user]

    # healed: the consumer connects as the new user and lets the old connection go
    (tmp_path / "demo" / STUCK).unlink()
    wait_for(lambda: consumer_users(postgres) == [creds["data"]["username"]], 10, "orders-api kept the old user")
    with psycopg.connect(postgres, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'orders-api'").fetchone() == (1,)


# last: it drops the users the session's OpenBao issued (a fresh OpenBao's set-up does that)
def test_setup_creates_only_what_is_missing_and_a_fresh_openbao_leaves_no_stray_user(openbao, postgres):
    addr, token = openbao
    setup_rotation(addr, token, postgres, DATABASE)
    vault = hvac.Client(url=addr, token=token)
    before = {path: kv(vault, path) for path in (DB_KV, TLS_KV)}
    assert setup_rotation(addr, token, postgres, DATABASE) == []  # nothing issued or seeded again
    assert {path: kv(vault, path) for path in (DB_KV, TLS_KV)} == before

    # a fresh OpenBao (the dev server forgets everything at a restart): the old one's user is dropped, a new one issued
    from tests import harness

    port = harness.free_port()
    import subprocess

    fresh = subprocess.Popen([harness.binary("bao"), "server", "-dev", f"-dev-root-token-id={token}",
                              f"-dev-listen-address=127.0.0.1:{port}"], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        fresh_addr = f"http://127.0.0.1:{port}"
        wait_for(lambda: _answers(fresh_addr), 30, "the fresh OpenBao does not answer")
        left = engine_users(postgres)
        assert before[DB_KV][1]["username"] in left
        done = setup_rotation(fresh_addr, token, postgres, DATABASE)
        assert done[0] == f"dropped {len(left)} PostgreSQL user(s) a previous OpenBao issued", done
        new_user = kv(hvac.Client(url=fresh_addr, token=token), DB_KV)[1]["username"]
        assert engine_users(postgres) == {new_user}
    finally:
        fresh.terminate()
        fresh.wait(10)


def _answers(addr: str) -> bool:
    try:
        return "secret/" in hvac.Client(url=addr, token="root").sys.list_mounted_secrets_engines()["data"]
    except Exception:  # noqa: BLE001 - not up yet
        return False
