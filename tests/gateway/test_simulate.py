"""The gateway's Slack and PagerDuty secrets kept in OpenBao (starters.secret_settings), and `runbook simulate`
sending signed requests through both doors of a gateway served over HTTP with the stock catalog."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import hvac
import pytest
import uvicorn
from slack_sdk.web.async_client import AsyncWebClient
from typer.testing import CliRunner

from core.catalog import Catalog
from core.config import Settings
from starters.cli import app as cli_app
from starters.gateway import create_app
from starters.secret_settings import SecretSettingsError, with_vault_secrets
from tests import harness
from workflows.registry import inputs

STOCK = Path(__file__).resolve().parents[2] / "runbooks"
SLACK = {"bot_token": "xoxb-test-token", "signing_secret": "slack-secret-in-openbao"}
PAGERDUTY = {"webhook_secret": "pd-secret-in-openbao"}


@pytest.fixture
def vault_secrets(openbao, monkeypatch) -> dict[str, str]:
    addr, token = openbao
    client = hvac.Client(url=addr, token=token)
    client.secrets.kv.v2.create_or_update_secret(path="test-gateway/slack", secret=SLACK, mount_point="secret")
    client.secrets.kv.v2.create_or_update_secret(path="test-gateway/pagerduty", secret=PAGERDUTY, mount_point="secret")
    client.secrets.kv.v2.create_or_update_secret(path="test-gateway/empty", secret={"other": "x"}, mount_point="secret")
    for name in ("SLACK_SIGNING_SECRET", "SLACK_BOT_TOKEN", "PAGERDUTY_WEBHOOK_SECRETS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("VAULT_ADDR", addr)
    monkeypatch.setenv("VAULT_TOKEN", token)
    return {"RUNBOOK_SLACK_VAULT_PATH": "secret/test-gateway/slack",
            "RUNBOOK_PAGERDUTY_VAULT_PATH": "secret/test-gateway/pagerduty"}


def test_the_gateway_reads_its_secrets_from_vault_and_a_set_variable_wins(vault_secrets, monkeypatch):
    for key, value in vault_secrets.items():
        monkeypatch.setenv(key, value)
    settings = with_vault_secrets(Settings(_env_file=None))
    assert settings.slack_signing_secret.get_secret_value() == SLACK["signing_secret"]
    assert settings.slack_bot_token.get_secret_value() == SLACK["bot_token"]
    assert [s.get_secret_value() for s in settings.pagerduty_webhook_secrets] == [PAGERDUTY["webhook_secret"]]
    assert "slack-secret-in-openbao" not in repr(settings)  # still SecretStr

    monkeypatch.setenv("SLACK_SIGNING_SECRET", "from-the-environment")
    assert with_vault_secrets(Settings(_env_file=None)).slack_signing_secret.get_secret_value() == "from-the-environment"

    monkeypatch.setenv("RUNBOOK_PAGERDUTY_VAULT_PATH", "secret/test-gateway/empty")
    with pytest.raises(SecretSettingsError, match="secret/test-gateway/empty has no field 'webhook_secret'"):
        with_vault_secrets(Settings(_env_file=None))
    monkeypatch.setenv("RUNBOOK_PAGERDUTY_VAULT_PATH", "secret/test-gateway/missing")
    with pytest.raises(SecretSettingsError, match="test-gateway/missing does not exist"):
        with_vault_secrets(Settings(_env_file=None))


async def test_simulate_sends_signed_requests_through_both_doors(vault_secrets, monkeypatch, dev_env, fake_slack,
                                                                  task_queue):
    for key, value in vault_secrets.items():
        monkeypatch.setenv(key, value)
    models = inputs()
    settings = with_vault_secrets(Settings(_env_file=None, task_queue=task_queue))
    app = create_app(settings, dev_env.client, Catalog.load(STOCK, inputs=models), models,
                     slack_client=AsyncWebClient(token=fake_slack.token, base_url=fake_slack.api_url))
    port = harness.free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    serving = asyncio.create_task(server.serve())
    started: list[str] = []
    try:
        while not server.started:
            await asyncio.sleep(0.05)
        gateway = f"http://127.0.0.1:{port}"
        runner = CliRunner()

        def run(*args: str):
            return runner.invoke(cli_app, ["simulate", *args, "--gateway", gateway])

        listing = await asyncio.to_thread(run, "slack", "list", "--user", "U0ALICE01", "--channel", "C0OPS")
        assert listing.exit_code == 0, listing.output
        for name in ("blue-green", "canary-ramp", "provision-environment", "region-failback", "region-failover",
                     "restore-drill"):
            assert f"`{name}`" in listing.output, listing.output
        elsewhere = await asyncio.to_thread(run, "slack", "start restore-drill database=x", "--channel", "C0RANDOM")
        assert elsewhere.exit_code == 0 and "cannot be started from this channel" in elsewhere.output

        ignored = await asyncio.to_thread(run, "pagerduty", "--service", "PEDGE01", "--priority", "P3")
        assert ignored.exit_code == 0 and ignored.output.startswith("202 "), ignored.output
        assert json.loads(ignored.output[4:])["started"] == []
        real = await asyncio.to_thread(run, "pagerduty", "--service", "PEDGE01", "--priority", "P1",
                                       "--incident", f"PSIM{task_queue[-8:]}")
        assert real.exit_code == 0 and real.output.startswith("202 "), real.output
        started = json.loads(real.output[4:])["started"]
        assert started == [f"region-failover:incident:PSIM{task_queue[-8:]}"]

        # a wrong secret is refused by the gateway, and simulate says so with a non-zero exit
        monkeypatch.delenv("RUNBOOK_SLACK_VAULT_PATH")
        monkeypatch.setenv("SLACK_SIGNING_SECRET", "not-the-secret")
        forged = await asyncio.to_thread(run, "slack", "list")
        assert forged.exit_code == 2 and "401" in forged.output
    finally:
        for workflow_id in started:
            await dev_env.client.get_workflow_handle(workflow_id).terminate("test over")
        server.should_exit = True
        await serving
