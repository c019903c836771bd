"""A sandbox steered end to end against the dev server: a real ProvisionEnvironment run (real Terraform on the
provider-free modules, the Kubernetes wire-format fake, moto S3) given more time to live and destroyed now through
the real `runbook` command and through Slack (the gateway with the stock catalog, on the Slack fake). The run's
validator refuses what does not apply (in its own words, exit 2 from the command), and the verbs provisioning does not
have are refused naming the ones it has."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from slack_sdk.web.async_client import AsyncWebClient
from typer.testing import CliRunner

from activities.notify import NotificationActivities
from activities.slack import SlackChannel
from core.catalog import Catalog
from core.config import Settings
from starters.cli import app
from starters.gateway import create_app
from tests.core.test_cli_steering import cli_env  # noqa: F401 (fixture: the command aimed at dev_env)
from tests.gateway.conftest import fake_slack, slack_client  # noqa: F401 (fixtures)
from tests.gateway.test_gateway_e2e import eventually, slack_signed, slash
from workflows.provision import ProvisionEnvironment
from workflows.registry import inputs

from .helpers import REPO, assert_gone, make_input, record, start, status_when, worker

SECRET = "slack-secret-for-sandbox-steering"
CHANNEL = "C0OPS"  # the stock catalog's demo channel
ALICE = "U0ALICE01"
LOADED = 120.0  # seconds Terraform plan + apply may take on a loaded machine


async def runbook(*args: str):
    return await asyncio.to_thread(CliRunner().invoke, app, list(args))


def expires(status: Any) -> datetime:
    return datetime.fromisoformat(status.details["expires_at"])


async def test_sandbox_steered_from_the_cli(
    cli_env: str, dev_env: Any, recording: Any, kube: Any, aws: str, tf_root: Path  # noqa: F811
) -> None:
    async with worker(dev_env, cli_env, recording, kube, tf_root):
        handle = await start(dev_env, cli_env, make_input("sb-cli", "sandbox", ttl="8h", max_ttl="1d"))
        workflow_id = handle.id
        live = await status_when(handle, lambda s: s.details.get("phase") == "live", timeout=LOADED)
        assert kube.fake.get("namespaces", None, "sb-cli") is not None and record("environments/sb-cli.json")

        # the verbs provisioning does not have: refused, naming those it has
        for verb in ("pause", "resume", "promote", "reverify"):
            other = await runbook(verb, workflow_id)
            assert other.exit_code == 2, other.output
            assert f"{verb}: a ProvisionEnvironment run cannot be steered this way" in other.stderr
            assert "it supports extend, destroy-now" in other.stderr

        zero = await runbook("extend", workflow_id, "0s")
        assert zero.exit_code == 2 and "refused: extend by a positive duration" in zero.stderr, zero.output
        over = await runbook("extend", workflow_id, "2d")
        assert over.exit_code == 2 and "the sandbox may live at most 1d from now" in over.stderr, over.output
        extended = await runbook("extend", workflow_id, "4h", "--reason", "demo tomorrow")
        assert extended.exit_code == 0, extended.output
        assert "extend: accepted; the sandbox now expires at" in extended.stdout
        assert expires(await handle.query(ProvisionEnvironment.status)) - expires(live) == timedelta(hours=4)

        blank = await runbook("destroy-now", workflow_id, "--reason", " ")
        assert blank.exit_code == 2 and "--reason must say why" in blank.stderr, blank.output
        destroyed = await runbook("destroy-now", workflow_id, "--reason", "done with it", "--as", "erin")
        assert destroyed.exit_code == 0, destroyed.output
        assert "destroy-now: accepted; tearing down sb-cli (requested by erin)" in destroyed.stdout
        again = await runbook("destroy-now", workflow_id, "--reason", "twice")
        assert again.exit_code == 2, again.output  # being torn down, or already gone
        assert "already being torn down" in again.stderr or "no running runbook run" in again.stderr

        result = await asyncio.wait_for(handle.result(), LOADED)
    assert result.status == "Succeeded" and "destroy-now by erin: done with it" in result.summary
    assert_gone(result, kube, tf_root, "sb-cli")
    assert [(a.action, a.by, a.reason) for a in result.actions] == [
        ("extend", "dave", "demo tomorrow"), ("destroy_now", "erin", "done with it")]

    gone = await runbook("extend", workflow_id, "1h")
    assert gone.exit_code == 2 and "no running runbook run" in gone.stderr, gone.output


async def test_sandbox_steered_from_slack(
    dev_env: Any, task_queue: str, recording: Any, kube: Any, aws: str, tf_root: Path,
    fake_slack: Any, slack_client: Any,  # noqa: F811
) -> None:
    notifier = NotificationActivities([SlackChannel(slack_client), recording[0]])
    models = inputs()
    settings = Settings(_env_file=None, task_queue=task_queue, SLACK_SIGNING_SECRET=SECRET, ui_url="http://ui.test")
    gateway = create_app(settings, dev_env.client, Catalog.load(REPO / "runbooks", inputs=models), models,
                         slack_client=AsyncWebClient(token=fake_slack.token, base_url=fake_slack.api_url))

    async with worker(dev_env, task_queue, recording, kube, tf_root, {"notify": notifier.notify}), \
            httpx.AsyncClient(transport=httpx.ASGITransport(app=gateway), base_url="http://gateway") as http:

        async def command(text: str, user: str = ALICE, channel: str = CHANNEL) -> str:
            key = f"k{len(fake_slack.responses)}-{time.monotonic_ns()}"
            body = slash(text, user, fake_slack.response_url(key), channel=channel)
            response = await http.post("/slack/commands", content=body, headers=slack_signed(body, secret=SECRET))
            assert response.status_code == 200, response.text
            return await eventually(lambda: next((b["text"] for k, b in fake_slack.responses if k == key), None),
                                    timeout=LOADED)

        inp = make_input("sb-slack", "sandbox", ttl="8h", max_ttl="1d", meta={"slack_channel": CHANNEL})
        handle = await start(dev_env, task_queue, inp)
        workflow_id = handle.id
        live = await status_when(handle, lambda s: s.details.get("phase") == "live", timeout=LOADED)
        message = await eventually(lambda: next((m for m in fake_slack.channel_messages(CHANNEL)
                                                 if workflow_id in json.dumps(m.blocks)), None), timeout=LOADED)

        other = await command(f"pause {workflow_id} lunch")
        assert "a ProvisionEnvironment run cannot be steered this way" in other and "extend, destroy-now" in other
        assert "usage: `destroy-now ID reason`" in await command(f"destroy-now {workflow_id}")
        assert "may not extend" in await command(f"extend {workflow_id} 4h mine", "U0MALLORY", "C0RANDOM")
        assert "the sandbox may live at most 1d" in await command(f"extend {workflow_id} 2d demo next week")
        extended = await command(f"extend {workflow_id} 4h demo tomorrow")
        assert "extend: accepted; the sandbox now expires at" in extended, extended
        assert expires(await handle.query(ProvisionEnvironment.status)) - expires(live) == timedelta(hours=4)
        await eventually(lambda: "extend by <@U0ALICE01>: demo tomorrow" in message.all_text(), timeout=LOADED)

        destroyed = await command(f"destroy-now {workflow_id} done with it")
        assert "destroy-now: accepted; tearing down sb-slack (requested by slack:U0ALICE01)" in destroyed, destroyed
        result = await asyncio.wait_for(handle.result(), LOADED)
    assert result.status == "Succeeded" and "destroy-now by slack:U0ALICE01: done with it" in result.summary
    assert_gone(result, kube, tf_root, "sb-slack")
    assert [(a.action, a.by) for a in result.actions] == [("extend", "slack:U0ALICE01"), ("destroy_now", "slack:U0ALICE01")]
