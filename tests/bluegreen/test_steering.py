"""Blue-green steered end to end against the dev server: a real BlueGreenCutover (the real Kubernetes activities on
the wire-format fake, real HTTP checks of the colours) steered through the real `runbook` command and through Slack
(the gateway with the stock catalog, on the Slack fake). `promote` ends the bake early through its gate, `extend`
moves the bake's end; each is refused by the run while it does not apply, and the verbs blue-green does not have are
refused naming the ones it has (exit 2 from the command)."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import datetime, timedelta
from pathlib import Path

import httpx
from slack_sdk.web.async_client import AsyncWebClient
from typer.testing import CliRunner

from activities.notify import NotificationActivities
from activities.slack import SlackChannel
from core.catalog import Catalog
from core.config import Settings
from starters.cli import app
from starters.gateway import create_app
from tests import harness
from tests.bluegreen.conftest import SERVICE, activities, approve, deployment, make_input, selector, start, wait_for
from tests.core.test_cli_steering import cli_env  # noqa: F401 (fixture: the command aimed at dev_env)
from tests.gateway.conftest import fake_slack, slack_client  # noqa: F401 (fixtures)
from tests.gateway.test_gateway_e2e import eventually, slack_signed, slash
from workflows.blue_green import BlueGreenCutover
from workflows.registry import inputs

STOCK = Path(__file__).resolve().parents[2] / "runbooks"
SECRET = "slack-secret-for-bluegreen-steering"
CHANNEL = "C0OPS"  # the stock catalog's demo channel
ALICE = "U0ALICE01"
LOADED = 60.0  # seconds a step may take on a loaded machine (the real activities, a dev server shared by the suite)


def soon(check):
    return eventually(check, timeout=LOADED)


async def runbook(*args: str, user: str | None = None):
    """The real command; ``user`` is who runs it (RUNBOOK_USER; cli_env says dave). Without a cached login an
    approval carries that name, which the test worker's unauthenticated verifier takes."""
    env = {"RUNBOOK_USER": user} if user else None
    return await asyncio.to_thread(CliRunner().invoke, app, list(args), env=env)


def bake_end(status) -> datetime:
    return datetime.fromisoformat(status.details["bake_ends_at"])


async def test_blue_green_steered_from_the_cli(cli_env,  # noqa: F811
                                                dev_env, recording, kube, colours):
    workflow_id = f"bluegreen:{SERVICE}:{harness.new_task_queue()}"
    async with harness.running_worker(dev_env.client, cli_env, [BlueGreenCutover], activities(recording, kube)):
        handle = await start(dev_env.client, cli_env, make_input(colours, bake="1h", bake_interval="10m",
                                                                 scale_down_delay="0s"), workflow_id)
        status = await wait_for(handle, lambda s: s.gate is not None, timeout=LOADED)

        # before the bake: the run itself refuses both of its verbs, in its own words
        early = await runbook("extend", workflow_id, "10m")
        assert early.exit_code == 2, early.output
        assert "extend-bake applies during the bake; the run is at approval" in early.stderr
        assert len(early.stderr.strip().splitlines()) == 1
        early = await runbook("promote", workflow_id)
        assert early.exit_code == 2 and "promote-now applies during the bake" in early.stderr, early.output
        # the verbs blue-green does not have: refused, naming those it has
        for verb, *rest in (("pause",), ("resume",), ("destroy-now", "--reason", "wrong run"), ("reverify",)):
            other = await runbook(verb, workflow_id, *rest)
            assert other.exit_code == 2, other.output
            assert f"{verb}: a BlueGreenCutover run cannot be steered this way" in other.stderr
            assert "it supports promote, extend" in other.stderr

        approved = await runbook("approve", workflow_id, "--expect", status.gate.binding, user="alice")
        assert approved.exit_code == 0, approved.output
        baking = await wait_for(handle, lambda s: s.details.get("phase") == "bake", timeout=LOADED)
        before = bake_end(baking)

        bad = await runbook("extend", workflow_id, "soon")
        assert bad.exit_code == 2 and "extend: duration 'soon'" in bad.stderr, bad.output
        zero = await runbook("extend", workflow_id, "0s")
        assert zero.exit_code == 2 and "refused: the extension must be positive" in zero.stderr, zero.output
        extended = await runbook("extend", workflow_id, "30m", "--reason", "slow traffic")
        assert extended.exit_code == 0, extended.output
        assert "extend: accepted; bake extended by 30m" in extended.stdout
        assert bake_end(await handle.query(BlueGreenCutover.status)) - before == timedelta(minutes=30)
        over = await runbook("extend", workflow_id, "1d")  # 30m + 1d > max_bake_extension (1d)
        assert over.exit_code == 2 and "extensions may total at most 1d" in over.stderr, over.output

        promoted = await runbook("promote", workflow_id, "--reason", "metrics clean")
        assert promoted.exit_code == 0, promoted.output
        assert "promote: accepted; promote-now requested: the bake ends early once gate promote-now-2" in promoted.stdout
        twice = await runbook("promote", workflow_id, "--as", "erin")
        assert twice.exit_code == 2 and "promote-now already requested by dave" in twice.stderr, twice.output

        listed = json.loads((await runbook("status", workflow_id, "--json")).stdout)
        assert [(a["action"], a["by"], a["reason"]) for a in listed["actions"]] == [
            ("extend_bake", "dave", "slow traffic"), ("promote_now", "dave", "metrics clean")]
        assert listed["details"]["promote_gate"] == "promote-now-2"

        # the promotion happens once its gate is approved: the 1 h 30 m bake ends now
        blind = await runbook("approve", workflow_id, "--gate", "promote-now-2", user="alice")
        assert blind.exit_code == 2 and "this gate approves shop: promote green (shop:v2)" in blind.stderr, blind.output
        ok = await runbook("approve", workflow_id, "--expect", "shop: promote green (shop:v2)", user="alice")
        assert ok.exit_code == 0, ok.output
        result = await asyncio.wait_for(handle.result(), 60)
    assert result.status == "Succeeded" and result.live_colour == "green"
    bake = next(s for s in result.steps if s.name == "bake")
    assert "promoted early by alice: metrics clean" in bake.detail
    assert bake.finished_at - bake.started_at < timedelta(minutes=5)
    assert selector(kube.fake)["colour"] == "green" and deployment(kube.fake, "blue")["spec"]["replicas"] == 0

    finished = await runbook("extend", workflow_id, "5m")
    assert finished.exit_code == 2 and "no running runbook run" in finished.stderr, finished.output


async def test_blue_green_steered_from_slack(dev_env, task_queue, recording, kube, colours, fake_slack,  # noqa: F811
                                             slack_client):  # noqa: F811
    notifier = NotificationActivities([SlackChannel(slack_client), recording[0]])
    acts = [notifier.notify if a.__name__ == "notify" else a for a in activities(recording, kube)]
    models = inputs()
    settings = Settings(_env_file=None, task_queue=task_queue, SLACK_SIGNING_SECRET=SECRET, ui_url="http://ui.test")
    gateway = create_app(settings, dev_env.client, Catalog.load(STOCK, inputs=models), models,
                         slack_client=AsyncWebClient(token=fake_slack.token, base_url=fake_slack.api_url))
    inp = make_input(colours, bake="1h", bake_interval="10m", scale_down_delay="0s")
    inp.meta.slack_channel = CHANNEL
    workflow_id = f"bluegreen:{SERVICE}:{harness.new_task_queue()}"

    async with harness.running_worker(dev_env.client, task_queue, [BlueGreenCutover], acts), \
            httpx.AsyncClient(transport=httpx.ASGITransport(app=gateway), base_url="http://gateway") as http:

        async def command(text: str, user: str = ALICE) -> str:
            key = f"k{len(fake_slack.responses)}-{time.monotonic_ns()}"
            body = slash(text, user, fake_slack.response_url(key), channel=CHANNEL)
            response = await http.post("/slack/commands", content=body, headers=slack_signed(body, secret=SECRET))
            assert response.status_code == 200, response.text
            return await soon(lambda: next((b["text"] for k, b in fake_slack.responses if k == key), None))

        handle = await start(dev_env.client, task_queue, inp, workflow_id)
        await wait_for(handle, lambda s: s.gate is not None, timeout=LOADED)
        assert "extend-bake applies during the bake" in await command(f"extend {workflow_id} 10m too early")
        other = await command(f"pause {workflow_id} lunch")
        assert "a BlueGreenCutover run cannot be steered this way" in other and "it supports promote, extend" in other

        await approve(handle)
        baking = await wait_for(handle, lambda s: s.details.get("phase") == "bake", timeout=LOADED)
        message = await soon(lambda: next((m for m in fake_slack.channel_messages(CHANNEL)
                                                 if workflow_id in json.dumps(m.blocks)), None))
        extended = await command(f"extend {workflow_id} 20m slow traffic")
        assert "extend: accepted; bake extended by 20m" in extended, extended
        assert bake_end(await handle.query(BlueGreenCutover.status)) - bake_end(baking) == timedelta(minutes=20)
        # the run's message, rewritten in place at once with who extended the bake, why and by how much
        await soon(lambda: "extend-bake by <@U0ALICE01>: slow traffic (+20m)" in message.all_text())

        promoted = await command(f"promote {workflow_id} metrics clean")
        assert "promote: accepted; promote-now requested" in promoted, promoted
        assert "already requested by slack:U0ALICE01" in await command(f"promote {workflow_id} twice")
        await soon(lambda: "promote-now by <@U0ALICE01>: metrics clean" in message.all_text())

        await approve(handle, "promote-now")
        result = await asyncio.wait_for(handle.result(), 60)
    assert result.status == "Succeeded" and result.live_colour == "green"
    assert "promoted early by alice: metrics clean" in next(s for s in result.steps if s.name == "bake").detail
    assert [(a.action, a.by) for a in result.actions] == [
        ("extend_bake", "slack:U0ALICE01"), ("promote_now", "slack:U0ALICE01")]
