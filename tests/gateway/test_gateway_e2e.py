"""The gateway end to end against the Temporal dev server, the Slack and PagerDuty fakes and a real worker.

A PagerDuty incident starts the mapped runbook; redeliveries and new events for the same incident start nothing
new; the Slack approval button approves it; the Slack message shows each step; the incident gets notes; forged,
stale, oversized and malformed requests start nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any, AsyncIterator
from urllib.parse import urlencode

import httpx
import pytest_asyncio
from slack_sdk.web.async_client import AsyncWebClient
from temporalio.service import RPCError, RPCStatusCode

from activities.notify import NotificationActivities
from activities.pagerduty import PagerDutyChannel
from activities.slack import SlackChannel
from core.buttons import APPROVE_ACTION
from core.catalog import Catalog
from core.config import Settings
from core.runbook import RunbookResult
from starters.gateway import create_app, incident_workflow_id
from tests import harness
from tests.fakes.pagerduty import incident_event, sign, webhook
from tests.gateway.runbook_under_test import GatewayDrill, GatewayDrillInput

SLACK_SECRET = "slack-signing-secret-for-tests"
PD_OLD, PD_NEW = "pd-webhook-secret-old", "pd-webhook-secret-new"
CHANNEL = "C0OPS"

RUNBOOK = """
name: orders-drill
description: Restore drill for the orders database
workflow: GatewayDrill
target: "{service}"
environment: prod
concurrency_key: "orders-drill:{service}"
parameters:
  service: {type: string, required: true}
  incident_title: {type: string}
approval:
  groups: [dba]
triggers:
  slack:
    channels: [C0OPS]
    users: [U0REQ, U0ALICE]
  pagerduty:
    - service_ids: [PSVC001]
      priorities: [P1]
      parameters:
        service: orders
        incident_title: "{incident.title}"
"""


def slack_signed(body: str, *, secret: str = SLACK_SECRET, timestamp: int | None = None) -> dict[str, str]:
    ts = str(int(time.time()) if timestamp is None else timestamp)
    digest = hmac.new(secret.encode(), f"v0:{ts}:{body}".encode(), hashlib.sha256).hexdigest()
    return {"Content-Type": "application/x-www-form-urlencoded", "X-Slack-Request-Timestamp": ts,
            "X-Slack-Signature": f"v0={digest}"}


def slash(text: str, user: str, response_url: str, channel: str = CHANNEL) -> str:
    return urlencode({"token": "legacy", "team_id": "T0FAKE", "channel_id": channel, "user_id": user,
                      "user_name": user.lower(), "command": "/runbook", "text": text, "response_url": response_url,
                      "trigger_id": "1.2.3"})


def click(action_id: str, value: str, user: str, channel: str, message: Any) -> str:
    payload = {
        "type": "block_actions", "team": {"id": "T0FAKE"}, "user": {"id": user, "team_id": "T0FAKE"},
        "api_app_id": "A0APP", "trigger_id": "trig-1", "container": {"type": "message", "message_ts": message.ts},
        "channel": {"id": channel}, "message": {"ts": message.ts, "text": message.text, "blocks": message.blocks},
        "response_url": "http://127.0.0.1:9/unused",
        "actions": [{"type": "button", "action_id": action_id, "block_id": "b", "value": value,
                     "action_ts": str(time.time())}],
    }
    return urlencode({"payload": json.dumps(payload)})


async def eventually(check, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


async def exists(client, workflow_id: str) -> bool:
    try:
        await client.get_workflow_handle(workflow_id).describe()
        return True
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            return False
        raise


@pytest_asyncio.fixture
async def gw(dev_env, tmp_path: Path, fake_slack, fake_pd, slack_client, pd_clients, task_queue) -> AsyncIterator[dict]:
    # Slack users are aliases (slack:U...) the gateway vouches for; nobody here maps them to a CLI person
    (tmp_path / "groups.yaml").write_text(
        "groups:\n  dba: [slack:U0ALICE, slack:U0BOB]\nvouchers:\n  runbook-gateway: [slack]\n")
    (tmp_path / "orders-drill.yaml").write_text(RUNBOOK)
    models = {"GatewayDrill": GatewayDrillInput}
    catalog = Catalog.load(tmp_path, inputs=models)
    settings = Settings(
        _env_file=None, task_queue=task_queue, slack_default_channel=CHANNEL, ui_url="http://ui.test",
        gateway_max_body_bytes=8192, SLACK_SIGNING_SECRET=SLACK_SECRET, PAGERDUTY_WEBHOOK_SECRETS=[PD_OLD, PD_NEW],
    )
    notifier = NotificationActivities([SlackChannel(slack_client), PagerDutyChannel(*pd_clients)])
    app = create_app(settings, dev_env.client, catalog, models,
                     slack_client=AsyncWebClient(token=fake_slack.token, base_url=fake_slack.api_url))
    from workflows.dry_run import RunbookDryRun

    async with harness.running_worker(dev_env.client, task_queue, [GatewayDrill, RunbookDryRun], [notifier.notify]):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as http:
            yield {"http": http, "client": dev_env.client, "slack": fake_slack, "pd": fake_pd}


async def test_incident_starts_runbook_once_and_slack_button_approves_it(gw):
    http, client, slack, pd = gw["http"], gw["client"], gw["slack"], gw["pd"]
    incident = "PINC" + str(int(time.time() * 1000))[-8:]
    workflow_id = incident_workflow_id("orders-drill", incident)
    first = incident_event(incident_id=incident, title="orders-db is down")
    body, headers = webhook(first, PD_OLD, PD_NEW)  # two v1= entries, as during a secret rotation
    response = await http.post("/pagerduty/webhook", content=body, headers=headers)
    assert response.status_code == 202, response.text
    assert response.json()["started"] == [workflow_id]
    handle = client.get_workflow_handle(workflow_id)
    run_id = (await handle.describe()).run_id

    # redelivery of the same event, and a new event for the same incident: nothing new
    again = await http.post("/pagerduty/webhook", content=body, headers=headers)
    assert again.json()["status"] == "duplicate"
    body2, headers2 = webhook(incident_event(incident_id=incident), PD_NEW)
    attach = await http.post("/pagerduty/webhook", content=body2, headers=headers2)
    assert attach.status_code == 202 and attach.json()["attached"] == [workflow_id] and attach.json()["started"] == []
    assert (await handle.describe()).run_id == run_id

    # the approval request in Slack; a click by someone who may not approve is refused, visibly
    def gate_message():
        for message in slack.channel_messages(CHANNEL):
            if any(b["type"] == "actions" for b in message.blocks):
                return message
    message = await eventually(gate_message)
    approve = next(e for b in message.blocks if b["type"] == "actions" for e in b["elements"]
                   if e["action_id"] == APPROVE_ACTION)
    payload = click(APPROVE_ACTION, approve["value"], "U0MALLORY", CHANNEL, message)
    assert (await http.post("/slack/interactions", content=payload, headers=slack_signed(payload))).status_code == 200
    await eventually(lambda: "U0MALLORY is not an approver" in message.all_text())
    assert any(b["type"] == "actions" for b in message.blocks)  # buttons kept for a real approver

    payload = click(APPROVE_ACTION, approve["value"], "U0ALICE", CHANNEL, message)
    assert (await http.post("/slack/interactions", content=payload, headers=slack_signed(payload))).status_code == 200
    result = await asyncio.wait_for(client.get_workflow_handle(workflow_id, result_type=RunbookResult).result(), 60)
    assert result.status == "Succeeded"
    assert "approved by <@U0ALICE>" in message.all_text()

    # one run message, updated in place, showing every step and the UI link
    run_message = await eventually(lambda: next((m for m in slack.channel_messages(CHANNEL)
                                                  if "orders-drill: Succeeded" in m.all_text()), None))
    shown = run_message.all_text()
    for step in ("snapshot: done", "restore: done", "verify: done", "orders-drill: Succeeded",
                 f"http://ui.test/namespaces/default/workflows/{workflow_id}"):
        assert step in shown
    assert len(run_message.history) >= 6
    # the incident's notes tell the same story
    notes = [n["content"] for n in pd.notes[incident]]
    assert notes[0].startswith("[orders-drill on orders] orders-drill started")
    assert any("verify: done" in n for n in notes) and "orders-drill: Succeeded" in notes[-1]

    # incident.resolved reaches the (finished) run's id without error; unknown incidents are fine too
    body3, headers3 = webhook(incident_event("incident.resolved", incident_id="PNOTHING"), PD_NEW)
    assert (await http.post("/pagerduty/webhook", content=body3, headers=headers3)).json()["signalled"] == []


async def test_refused_requests_start_nothing(gw):
    http, client, slack = gw["http"], gw["client"], gw["slack"]
    incident = "PREF" + str(int(time.time() * 1000))[-8:]
    workflow_id = incident_workflow_id("orders-drill", incident)
    body, headers = webhook(incident_event(incident_id=incident), PD_NEW)

    forged = {**headers, "X-PagerDuty-Signature": "v1=" + "0" * 64}
    assert (await http.post("/pagerduty/webhook", content=body, headers=forged)).status_code == 401
    wrong_secret = webhook(incident_event(incident_id=incident), "not-our-secret")[1]
    assert (await http.post("/pagerduty/webhook", content=body, headers=wrong_secret)).status_code == 401
    unsigned = {k: v for k, v in headers.items() if k != "X-PagerDuty-Signature"}
    assert (await http.post("/pagerduty/webhook", content=body, headers=unsigned)).status_code == 401
    tampered = body.replace(b"orders-db", b"orders-xx")
    assert (await http.post("/pagerduty/webhook", content=tampered, headers=headers)).status_code == 401
    malformed = b'{"event": {"id": '
    bad_json = {"Content-Type": "application/json", "X-PagerDuty-Signature": sign(malformed, PD_NEW)}
    assert (await http.post("/pagerduty/webhook", content=malformed, headers=bad_json)).status_code == 400

    big = json.dumps({**incident_event(incident_id=incident), "padding": "x" * 10_000}).encode()
    big_headers = {"Content-Type": "application/json", "X-PagerDuty-Signature": sign(big, PD_NEW)}
    assert (await http.post("/pagerduty/webhook", content=big, headers=big_headers)).status_code == 413

    async def chunked():  # no Content-Length: the limit counts what arrives
        for i in range(0, len(big), 1000):
            yield big[i:i + 1000]
    response = await http.post("/pagerduty/webhook", content=chunked(), headers=big_headers)
    assert response.status_code == 413

    # Slack: stale timestamp, bad signature, missing headers
    start = slash("start orders-drill service=stale", "U0REQ", slack.response_url("stale"))
    stale = slack_signed(start, timestamp=int(time.time()) - 600)
    assert (await http.post("/slack/commands", content=start, headers=stale)).status_code == 401
    bad = slack_signed(start, secret="not-the-secret")
    assert (await http.post("/slack/commands", content=start, headers=bad)).status_code == 401
    assert (await http.post("/slack/commands", content=start,
                            headers={"Content-Type": "application/x-www-form-urlencoded"})).status_code == 401

    # Slack: a user or channel the catalog does not allow gets a visible refusal
    who = slash("start orders-drill service=mallory", "U0MALLORY", slack.response_url("who"))
    assert (await http.post("/slack/commands", content=who, headers=slack_signed(who))).status_code == 200
    where = slash("start orders-drill service=elsewhere", "U0REQ", slack.response_url("where"), channel="C0RANDOM")
    assert (await http.post("/slack/commands", content=where, headers=slack_signed(where))).status_code == 200
    replies = await eventually(lambda: {k: b["text"] for k, b in slack.responses} if len(slack.responses) >= 2 else None)
    assert "U0MALLORY> may not start orders-drill" in replies["who"]
    assert "cannot be started from this channel" in replies["where"]

    for wid in (workflow_id, "orders-drill:stale", "orders-drill:mallory", "orders-drill:elsewhere"):
        assert not await exists(client, wid), wid
    assert (await http.get("/healthz")).json()["ok"] is True


async def test_slash_command_start_status_and_approval_rules(gw):
    http, client, slack = gw["http"], gw["client"], gw["slack"]
    service = "svc" + str(int(time.time() * 1000))[-8:]
    workflow_id = f"orders-drill:{service}"

    async def command(text: str, user: str) -> str:
        key = f"k{len(slack.responses)}-{time.monotonic_ns()}"
        body = slash(text, user, slack.response_url(key))
        response = await http.post("/slack/commands", content=body, headers=slack_signed(body))
        assert response.status_code == 200
        return await eventually(lambda: next((b["text"] for k, b in slack.responses if k == key), None))

    dry = await command(f"start orders-drill service={service} --dry-run", "U0REQ")
    assert f"*dry run* of orders-drill as `{workflow_id}` (nothing changed)" in dry and "*Approval*" in dry
    assert not await exists(client, workflow_id)
    assert f"started `{workflow_id}`" in await command(f"start orders-drill service={service}", "U0REQ")
    assert "already running" in await command(f"start orders-drill service={service}", "U0REQ")
    assert "a start would start nothing" in await command(f"start orders-drill service={service} --dry-run", "U0REQ")
    assert "unknown parameter 'colour'" in await command("start orders-drill colour=red", "U0REQ")

    async def waiting() -> bool:
        return "WaitingForApproval" in await command(f"status {workflow_id}", "U0REQ")
    deadline = time.monotonic() + 60
    while not await waiting():
        assert time.monotonic() < deadline
    # the requester may not approve their own run; the approver is accepted
    assert "U0REQ requested this run and cannot approve it" in await command(f"approve {workflow_id}", "U0REQ")
    assert "approved by <@U0BOB>" in await command(f"approve {workflow_id} looks fine", "U0BOB")
    assert (await asyncio.wait_for(client.get_workflow_handle(workflow_id, result_type=RunbookResult).result(), 60)).status == "Succeeded"
    assert "orders-drill" in await command("list", "U0REQ")
    assert "Usage" in await command("help", "U0REQ")


async def test_priority_filter_and_incident_resolved_reaches_the_run(gw):
    http, client, slack = gw["http"], gw["client"], gw["slack"]
    incident = "PRES" + str(int(time.time() * 1000))[-8:]
    workflow_id = incident_workflow_id("orders-drill", incident)
    low = webhook(incident_event(incident_id=incident, priority="P3"), PD_NEW)
    response = await http.post("/pagerduty/webhook", content=low[0], headers=low[1])
    assert response.json()["started"] == [] and not await exists(client, workflow_id)
    other = webhook(incident_event(incident_id=incident, service_id="POTHER"), PD_NEW)
    assert (await http.post("/pagerduty/webhook", content=other[0], headers=other[1])).json()["started"] == []

    body, headers = webhook(incident_event(incident_id=incident), PD_NEW)
    assert (await http.post("/pagerduty/webhook", content=body, headers=headers)).json()["started"] == [workflow_id]
    resolved = webhook(incident_event("incident.resolved", incident_id=incident), PD_NEW)
    reply = await http.post("/pagerduty/webhook", content=resolved[0], headers=resolved[1])
    assert reply.json()["signalled"] == [workflow_id]
    handle = client.get_workflow_handle(workflow_id)

    async def resolved_seen() -> bool:
        status = await handle.query("status")
        return any(a["action"] == "incident_resolved" for a in status["actions"])
    deadline, reads = time.monotonic() + 60, 0
    while not await resolved_seen():
        assert time.monotonic() < deadline
        await harness.backoff(reads)
        reads += 1

    # abort from Slack by someone allowed there; the run stops at its gate
    body = slash(f"abort {workflow_id} incident is over", "U0REQ", slack.response_url("abort"))
    assert (await http.post("/slack/commands", content=body, headers=slack_signed(body))).status_code == 200
    reply = await eventually(lambda: next((b["text"] for k, b in slack.responses if k == "abort"), None))
    assert "abort requested by U0REQ" in reply
    result = await asyncio.wait_for(client.get_workflow_handle(workflow_id, result_type=RunbookResult).result(), 60)
    assert result.status == "Aborted"


async def test_reject_button_opens_reason_dialog_and_rejects(gw):
    http, client, slack = gw["http"], gw["client"], gw["slack"]
    incident = "PREJ" + str(int(time.time() * 1000))[-8:]
    workflow_id = incident_workflow_id("orders-drill", incident)
    body, headers = webhook(incident_event(incident_id=incident), PD_NEW)
    assert (await http.post("/pagerduty/webhook", content=body, headers=headers)).json()["started"] == [workflow_id]

    def gate_message():
        for message in slack.channel_messages(CHANNEL):
            if workflow_id in json.dumps(message.blocks) and any(b["type"] == "actions" for b in message.blocks):
                return message
    message = await eventually(gate_message)
    reject = next(e for b in message.blocks if b["type"] == "actions" for e in b["elements"]
                  if e["action_id"] == "runbook_reject")
    payload = click("runbook_reject", reject["value"], "U0ALICE", CHANNEL, message)
    assert (await http.post("/slack/interactions", content=payload, headers=slack_signed(payload))).status_code == 200
    view = await eventually(lambda: slack.views[-1] if slack.views else None)
    assert view["callback_id"] == "runbook_reject_reason"

    def submit(user: str, reason: str) -> str:
        return urlencode({"payload": json.dumps({
            "type": "view_submission", "team": {"id": "T0FAKE"}, "user": {"id": user, "team_id": "T0FAKE"},
            "api_app_id": "A0APP", "trigger_id": "trig-2",
            "view": {"id": "V0001", "type": "modal", "callback_id": view["callback_id"],
                     "private_metadata": view["private_metadata"],
                     "state": {"values": {"reason": {"reason": {"type": "plain_text_input", "value": reason}}}}},
        })})

    refused = submit("U0MALLORY", "nope")  # not an approver: the refusal shows in the dialog
    answer = await http.post("/slack/interactions", content=refused, headers=slack_signed(refused))
    assert answer.json()["response_action"] == "errors"
    assert "not an approver" in answer.json()["errors"]["reason"]
    accepted = submit("U0ALICE", "snapshot is too old")
    answer = await http.post("/slack/interactions", content=accepted, headers=slack_signed(accepted))
    assert answer.status_code == 200 and not answer.content.strip()
    result = await asyncio.wait_for(client.get_workflow_handle(workflow_id, result_type=RunbookResult).result(), 60)
    assert result.status == "Rejected" and "rejected by slack:U0ALICE: snapshot is too old" in result.summary
    await eventually(lambda: "rejected by <@U0ALICE>: snapshot is too old" in message.all_text())
