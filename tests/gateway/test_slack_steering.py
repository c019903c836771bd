"""The steering verbs from Slack (`/runbook pause|resume|promote|extend ID ... reason`) end to end against the dev
server: a real CanaryRamp (stand-in traffic and metrics, the real Slack notification channel on the Slack fake)
steered through the gateway with the stock catalog. Each verb goes through the RunbookClient to the run's own
validator; refusals are shown to the person; the run's one Slack message is rewritten in place at once with the
steering (and keeps it when the worker rewrites the message)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import timedelta
from pathlib import Path

import httpx
from slack_sdk.web.async_client import AsyncWebClient

from activities.notify import NotificationActivities
from activities.slack import SlackChannel
from core.approval import ApprovalPolicy
from core.canary import AlbRouterSpec, AnalysisStepSpec, CanaryRampInput, PlanStep
from core.catalog import Catalog
from core.config import Settings
from core.runbook import RunbookMeta
from starters.gateway import create_app
from tests import harness
from tests.canary.standins import CANARY, STABLE, FakeMetrics, FakeTraffic, healthy
from tests.gateway.test_gateway_e2e import eventually, slack_signed, slash
from workflows.canary_ramp import CanaryRamp
from workflows.registry import inputs

STOCK = Path(__file__).resolve().parents[2] / "runbooks"
SECRET = "slack-secret-for-steering"
CHANNEL = "C0OPS"  # the stock catalog's demo channel
ALICE, MALLORY = "U0ALICE01", "U0MALLORY"


def _canary_input() -> CanaryRampInput:
    meta = RunbookMeta(runbook="canary-ramp", target="checkout", requested_by="slack:U0PLATFORM1",
                       approval=ApprovalPolicy(approvers=["bob"], timeout=timedelta(hours=4)), slack_channel=CHANNEL)
    router = AlbRouterSpec(listener_arn="arn:listener", stable_target_group=STABLE, canary_target_group=CANARY)
    plan = [PlanStep(set_weight=10), PlanStep(analysis=AnalysisStepSpec(duration=timedelta(minutes=30))),
            PlanStep(set_weight=100)]
    return CanaryRampInput(meta=meta, router=router, service="checkout", version="v2", plan=plan)


async def test_canary_steered_from_slack_with_its_message_updated_in_place(dev_env, task_queue, fake_slack, slack_client):
    log: list[tuple] = []
    traffic = FakeTraffic(log)
    metrics = FakeMetrics(traffic, healthy)
    notifier = NotificationActivities([SlackChannel(slack_client)])
    activities = [traffic.get, traffic.set, metrics.measure, metrics.measure_batch, notifier.notify]
    models = inputs()
    settings = Settings(_env_file=None, task_queue=task_queue, SLACK_SIGNING_SECRET=SECRET, ui_url="http://ui.test")
    app = create_app(settings, dev_env.client, Catalog.load(STOCK, inputs=models), models,
                     slack_client=AsyncWebClient(token=fake_slack.token, base_url=fake_slack.api_url))
    workflow_id = f"canary-slack-{uuid.uuid4().hex[:8]}"

    async with harness.running_worker(dev_env.client, task_queue, [CanaryRamp], activities), \
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as http:

        async def command(text: str, user: str = ALICE, channel: str = CHANNEL) -> str:
            key = f"k{len(fake_slack.responses)}-{time.monotonic_ns()}"
            body = slash(text, user, fake_slack.response_url(key), channel=channel)
            response = await http.post("/slack/commands", content=body, headers={
                **slack_signed(body, secret=SECRET)})
            assert response.status_code == 200, response.text
            return await eventually(lambda: next((b["text"] for k, b in fake_slack.responses if k == key), None))

        handle = await dev_env.client.start_workflow(CanaryRamp.run, _canary_input(), id=workflow_id,
                                                     task_queue=task_queue)
        await harness.poll(lambda: handle.query(CanaryRamp.canary), lambda c: c.step_index == 1,
                           "the canary in its 30-minute analysis step at weight 10")
        message = await eventually(lambda: next((m for m in fake_slack.channel_messages(CHANNEL)
                                                 if workflow_id in json.dumps(m.blocks)), None))
        updates = len(message.history)

        assert "not paused" in await command(f"resume {workflow_id} nothing to resume")
        assert "a reason is required" in await command(f"pause {workflow_id}")
        paused = await command(f"pause {workflow_id} lunch break")
        assert "pause: accepted" in paused and "weight 10%" in paused, paused
        # the run's message, rewritten in place at once: paused, and who paused it and why
        await eventually(lambda: "pause by <@U0ALICE01>: lunch break" in message.all_text())
        assert ":double_vertical_bar: paused" in message.all_text() and len(message.history) > updates
        assert "already paused" in await command(f"pause {workflow_id} again")

        assert "extend: duration 'soon'" in await command(f"extend {workflow_id} soon slow traffic")
        extended = await command(f"extend {workflow_id} 5m slow traffic", "U0SRE00002")
        assert "extend: accepted" in extended, extended
        await eventually(lambda: "extend by <@U0SRE00002>: slow traffic (+5m" in message.all_text())
        resumed = await command(f"resume {workflow_id} back from lunch")
        assert "resume: accepted" in resumed, resumed
        await eventually(lambda: ":arrows_counterclockwise: running" in message.all_text())

        # who may not steer from where; a verb the runbook lacks; a run that does not exist
        refused = await command(f"pause {workflow_id} mine now", MALLORY, "C0RANDOM")
        assert "may not pause" in refused, refused
        assert "cannot be steered this way" in await command(f"destroy-now {workflow_id} wrong verb")
        assert "no run" in await command(f"pause nope-{uuid.uuid4().hex[:6]} why")

        promoted = await command(f"promote {workflow_id} hotfix")
        assert "promote: accepted" in promoted, promoted
        assert "refused" in await command(f"promote {workflow_id} twice")

        status = await handle.query(CanaryRamp.status)
        assert [(a.action, a.by, a.reason) for a in status.actions] == [
            ("pause", "slack:U0ALICE01", "lunch break"), ("extend", "slack:U0SRE00002", "slow traffic"),
            ("resume", "slack:U0ALICE01", "back from lunch"), ("promote", "slack:U0ALICE01", "hotfix")]

        await command(f"abort {workflow_id} test over")
        result = await asyncio.wait_for(handle.result(), 60)
        assert result.status == "Aborted"
        # the worker's own rewrites keep the steering lines
        await eventually(lambda: "Aborted" in message.all_text())
        assert "pause by <@U0ALICE01>: lunch break" in message.all_text()
        assert "promote by <@U0ALICE01>: hotfix" in message.all_text()
