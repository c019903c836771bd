"""`runbook login` against a real OpenBao, and the CLI approving with the token it gets, through the dev server and a
worker that verifies tokens."""

from __future__ import annotations

import asyncio
import json
import stat
import subprocess
import textwrap
import time
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from core.identity import unverified_claims
from starters import login as auth
from starters.cli import app
from tests import harness
from tests.core.gated_workflows import GatedChange

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg" / "runbook" / "login.json"


def invoke(*args: str, input: str | None = None):
    return CliRunner().invoke(app, list(args), input=input)


def test_vault_login_caches_the_vault_token_0600_and_mints_a_fresh_id_token_per_approval(openbao, idp, cache):
    addr, _ = openbao
    refused = invoke("login", "bob", "--password-stdin", "--vault-addr", addr, input="wrong\n")
    assert refused.exit_code == 2 and "refused the login of bob" in refused.stderr and not cache.exists()

    done = invoke("login", "bob", "--password-stdin", "--vault-addr", addr, input="pw\n")
    assert done.exit_code == 0 and "logged in as bob (vault)" in done.stdout
    assert stat.S_IMODE(cache.stat().st_mode) == 0o600 and stat.S_IMODE(cache.parent.stat().st_mode) == 0o700
    assert "pw" not in json.loads(cache.read_text()).values()  # the password is never kept
    first, who = auth.approval_token()
    time.sleep(1.1)  # OpenBao's iat has a one-second resolution
    second, _ = auth.approval_token()
    assert who == "bob" and first != second  # a fresh token for each approval (a token counts once per run)
    assert unverified_claims(second)["groups"] == ["platform-team"]

    cache.chmod(0o644)
    with pytest.raises(auth.LoginError, match="readable by others"):
        auth.approval_token()
    assert invoke("logout").stdout.strip() == "logged out" and auth.approval_token() is None


def test_a_token_from_stdin_or_a_command_for_any_provider(token_of, cache, tmp_path):
    token = token_of("carol")
    done = invoke("login", "--token-stdin", input=token + "\n")
    assert done.exit_code == 0 and "logged in as carol (token)" in done.stdout
    assert stat.S_IMODE(cache.stat().st_mode) == 0o600 and auth.approval_token() == (token, "carol")
    assert token not in done.stdout + done.stderr

    script = tmp_path / "idp-token"
    script.write_text(f"#!/bin/sh\necho {token_of('dave')}\n")
    script.chmod(0o700)
    done = invoke("login", "--token-command", str(script))
    assert done.exit_code == 0 and "logged in as dave (command)" in done.stdout
    assert auth.approval_token()[1] == "dave"

    expired = invoke("login", "--token-stdin", input="eyJhbGciOiJub25lIn0.eyJleHAiOjF9.\n")
    assert expired.exit_code == 2 and "expired" in expired.stderr


CATALOG = {
    "gated-change.yaml": """
        name: gated-change
        description: Apply a change after an SRE or the platform team approves it.
        workflow: GatedChange
        target: "{service}"
        concurrency_key: "idchange:{service}"
        parameters:
          service: {type: string, required: true}
          hold: {type: duration, default: 0s}
        approval:
          groups: [sre, platform-team]
          timeout: 1h
    """,
}


async def run_cli(*args: str, input: str | None = None):
    return await asyncio.to_thread(CliRunner().invoke, app, list(args), input=input)


async def wait_status(workflow_id: str, wanted: str) -> dict:
    for _ in range(200):
        out = await run_cli("status", workflow_id, "--json")
        if out.exit_code == 0 and json.loads(out.stdout)["status"] == wanted:
            return json.loads(out.stdout)
        await asyncio.sleep(0.1)
    raise AssertionError(f"{workflow_id} never {wanted}")


async def test_the_cli_approves_with_the_login_and_prints_the_ui_signal(
        dev_env, openbao, idp, identity, recording, cache, tmp_path, monkeypatch, task_queue):
    addr, _ = openbao
    catalog = tmp_path / "runbooks"
    catalog.mkdir()
    (catalog / "groups.yaml").write_text((ROOT / "runbooks" / "groups.yaml").read_text())
    for name, text in CATALOG.items():
        (catalog / name).write_text(textwrap.dedent(text))
    address = dev_env.client.service_client.config.target_host
    for key, value in {"TEMPORAL_ADDRESS": address, "RUNBOOK_CATALOG_DIR": str(catalog), "RUNBOOK_TASK_QUEUE": task_queue,
                       "RUNBOOK_WORKFLOW_MODULES": '["tests.core.gated_workflows"]', "RUNBOOK_USER": "alice"}.items():
        monkeypatch.setenv(key, value)
    _, notifier = recording
    async with harness.running_worker(dev_env.client, task_queue, [GatedChange], [notifier.notify, identity.verify_id_token]):
        first, second = (f"idchange:{uuid.uuid4().hex[:6]}" for _ in range(2))
        for wf in (first, second):
            started = await run_cli("start", "gated-change", "--set", f"service={wf.split(':')[1]}", "--as", "alice")
            assert started.exit_code == 0, started.stdout + started.stderr
            await wait_status(wf, "WaitingForApproval")

        monkeypatch.setenv("RUNBOOK_USER", "bob")  # nobody logged in: the typed local name, which this worker refuses
        typed = await run_cli("approve", first)
        assert typed.exit_code == 2 and "not logged in" in typed.stderr and "no ID token" in typed.stderr
        assert (await run_cli("login", "alice", "--password-stdin", "--vault-addr", addr, input="pw\n")).exit_code == 0
        own = await run_cli("approve", first)
        assert own.exit_code == 2 and "alice requested this run" in own.stderr
        assert (await run_cli("login", "bob", "--password-stdin", "--vault-addr", addr, input="pw\n")).exit_code == 0
        ok = await run_cli("approve", first, "--reason", "checked")
        assert ok.exit_code == 0 and "gate approved" in ok.stdout
        final = await wait_status(first, "Succeeded")
        approval = final["gates"][0]["approvals"][0]
        assert approval["approver"] == "bob" and approval["verified"] and approval["groups"] == ["platform-team"]
        assert approval["via"] == "cli" and approval["reason"] == "checked"

        assert (await run_cli("login", "dave", "--password-stdin", "--vault-addr", addr, input="pw\n")).exit_code == 0
        printed = await run_cli("approve", second, "--print-signal")
        assert printed.exit_code == 0 and "Send a Signal" in printed.stderr
        payload = json.loads(printed.stdout)
        assert set(payload) == {"gate_id", "reason", "token"} and unverified_claims(payload["token"])["preferred_username"] == "dave"
        await asyncio.to_thread(subprocess.run, [
            harness.binary("temporal"), "workflow", "signal", "--address", address, "--workflow-id", second,
            "--name", "approve_signal", "--input", printed.stdout.strip()], check=True, capture_output=True, timeout=30)
        final = await wait_status(second, "Succeeded")
        approval = final["gates"][0]["approvals"][0]
        assert approval["approver"] == "dave" and approval["via"] == "ui" and approval["verified"]
        assert payload["token"] not in json.dumps(final)
