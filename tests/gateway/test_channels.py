"""The Slack and PagerDuty notification channels against the wire-format fakes, through the notify activity."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone

from activities.notify import NotificationActivities
from activities.pagerduty import PagerDutyChannel, clients, dedup_key
from activities.slack import SlackChannel, web_client
from core.approval import GateView
from core.buttons import APPROVE_ACTION, parse_button_value
from core.events import RunbookEvent

NOW = datetime(2026, 11, 1, tzinfo=timezone.utc)


def event(kind: str, title: str, refs: dict | None = None, **kw) -> RunbookEvent:
    return RunbookEvent(kind=kind, workflow_id="restore-drill:orders", run_id="r1", runbook="restore-drill",
                        target="orders", title=title, slack_channel="C0OPS", refs=refs or {},
                        ui_url="http://ui/namespaces/default/workflows/restore-drill:orders", **kw)


def test_one_slack_message_updated_in_place_showing_each_step(fake_slack, slack_client):
    notify = NotificationActivities([SlackChannel(slack_client)]).notify
    refs: dict[str, str] = {}
    for kind, title in [("started", "restore-drill started"), ("step_done", "snapshot: done"),
                        ("step_done", "restore: done"), ("finished", "restore-drill succeeded")]:
        result = notify(event(kind, title, refs))
        assert result.failures == []
        refs.update(result.refs)
    assert len(fake_slack.method_calls("chat.postMessage")) == 1
    assert len(fake_slack.method_calls("chat.update")) == 3
    [message] = fake_slack.channel_messages("C0OPS")
    shown = message.all_text()
    for step in ("snapshot: done", "restore: done", "restore-drill succeeded", "open in the Temporal UI"):
        assert step in shown
    assert message.ts == refs["slack_ts"]


def test_approval_request_has_buttons_carrying_workflow_and_gate(fake_slack, slack_client):
    channel = SlackChannel(slack_client)
    refs = channel.send(event("started", "started"))
    gate = GateView(gate_id="restore-1", title="Restore into scratch", opened_at=NOW, deadline=NOW + timedelta(hours=1),
                    eligible=["U0ALICE"], binding="snap-123")
    refs.update(channel.send(event("approval_needed", "Restore into scratch", refs, gate=gate)))
    gate_ts = refs["slack_gate:restore-1"]
    message = fake_slack.messages[("C0OPS", gate_ts)]
    buttons = [e for b in message.blocks if b["type"] == "actions" for e in b["elements"]]
    assert [b["action_id"] for b in buttons] == [APPROVE_ACTION, "runbook_reject"]
    assert parse_button_value(buttons[0]["value"]) == {"w": "restore-drill:orders", "g": "restore-1", "b": "snap-123"}
    decided = gate.model_copy(update={"decision": "approved", "decided_by": "U0ALICE"})
    channel.send(event("approval_decided", "Restore into scratch: approved", refs, gate=decided))
    message = fake_slack.messages[("C0OPS", gate_ts)]
    assert not [b for b in message.blocks if b["type"] == "actions"]
    assert "approved by <@U0ALICE>" in message.all_text()


def test_slack_429_retry_after_is_honoured(fake_slack, slack_client):
    fake_slack.rate_limit("chat.postMessage", times=1, retry_after=1)
    started = time.monotonic()
    result = NotificationActivities([SlackChannel(slack_client)]).notify(event("started", "started"))
    assert result.failures == []
    assert time.monotonic() - started >= 1.0
    assert [name for name, _ in fake_slack.calls] == ["chat.postMessage:429", "chat.postMessage"]


def test_slack_rate_limit_beyond_bound_is_a_reported_failure_not_an_exception(fake_slack):
    client = web_client(fake_slack.token, fake_slack.api_url, max_wait_seconds=2)
    fake_slack.rate_limit("chat.postMessage", times=5, retry_after=30)
    started = time.monotonic()
    result = NotificationActivities([SlackChannel(client)]).notify(event("started", "started"))
    assert time.monotonic() - started < 2
    assert len(result.failures) == 1 and result.failures[0].startswith("slack:")
    assert "ratelimited" in result.failures[0]


def test_bad_slack_token_is_reported(fake_slack):
    client = web_client("xoxb-wrong", fake_slack.api_url)
    result = NotificationActivities([SlackChannel(client)]).notify(event("started", "started"))
    assert "invalid_auth" in result.failures[0]
    assert "xoxb-wrong" not in result.failures[0]


def test_pagerduty_notes_on_the_incident_with_from_header(fake_pd, pd_clients):
    channel = PagerDutyChannel(*pd_clients)
    notify = NotificationActivities([channel]).notify
    for kind, title in [("started", "restore-drill started"), ("step_done", "snapshot: done")]:
        assert notify(event(kind, title, incident_id="PINC9")).failures == []
    notes = [n["content"] for n in fake_pd.notes["PINC9"]]
    assert notes[0].startswith("[restore-drill on orders] restore-drill started")
    assert "snapshot: done" in notes[1]
    assert {r["headers"]["from"] for r in fake_pd.note_requests} == {"runbooks@example.com"}
    assert fake_pd.events == []  # progress is not an alert


def test_pagerduty_alert_triggered_then_resolved_with_deterministic_dedup_key(fake_pd, pd_clients):
    notify = NotificationActivities([PagerDutyChannel(*pd_clients)]).notify
    refs: dict[str, str] = {}
    for _ in range(2):  # a retried activity updates the same alert
        result = notify(event("alert", "replica lag critical", refs, severity="critical"))
        assert result.failures == []
    refs.update(result.refs)
    key = dedup_key("restore-drill:orders")
    assert refs["pagerduty_dedup_key"] == key
    assert list(fake_pd.alerts) == [key]
    assert fake_pd.alerts[key]["payload"]["severity"] == "critical"
    result = notify(event("recovered", "replica caught up", refs))
    assert result.failures == []
    assert fake_pd.alerts[key]["status"] == "resolved"
    assert [e["event_action"] for e in fake_pd.events] == ["trigger", "trigger", "resolve"]


def test_pagerduty_alert_resolved_only_by_a_run_that_ends_succeeded(fake_pd, pd_clients):
    """The run's ending status, not its title, decides: a rolled-back run keeps its alert open."""
    notify = NotificationActivities([PagerDutyChannel(*pd_clients)]).notify
    refs = notify(event("alert", "replica lag high", severity="critical")).refs
    key = dedup_key("restore-drill:orders")
    notify(event("finished", "restore-drill: RolledBack", refs, status="RolledBack"))
    assert fake_pd.alerts[key]["status"] == "triggered"
    notify(event("finished", "restore-drill: Succeeded", refs, status="Succeeded"))
    assert fake_pd.alerts[key]["status"] == "resolved"


def test_failed_run_alerts_at_least_error(fake_pd, pd_clients):
    notify = NotificationActivities([PagerDutyChannel(*pd_clients)]).notify
    notify(event("failed", "restore-drill failed", severity="info", channels=["pagerduty"]))
    [alert] = fake_pd.alerts.values()
    assert alert["payload"]["severity"] == "error"


def test_pagerduty_failures_reported_never_raised(fake_pd):
    rest, events = clients("wrong-token", "wrong-routing-key", from_email="runbooks@example.com",
                           transport=fake_pd.transport())
    notify = NotificationActivities([PagerDutyChannel(rest, events)]).notify
    result = notify(event("alert", "held failover", incident_id="PINC9", severity="critical"))
    assert len(result.failures) == 1
    failure = result.failures[0]
    assert failure.startswith("pagerduty:") and "PINC9" in failure
    assert "wrong-token" not in failure and "wrong-routing-key" not in failure
    assert fake_pd.alerts == {} and fake_pd.notes == {}


def test_slack_and_pagerduty_together(fake_slack, slack_client, fake_pd, pd_clients):
    fake_pd.fail_next = [403, 403]  # PagerDuty refuses; Slack still told
    notify = NotificationActivities([SlackChannel(slack_client), PagerDutyChannel(*pd_clients)]).notify
    result = notify(event("alert", "held failover", incident_id="PINC9", severity="critical"))
    assert "slack_ts" in result.refs
    assert len(result.failures) == 1 and result.failures[0].startswith("pagerduty:")
    assert json.loads(result.refs["slack_log"])[-1].endswith("held failover")


def test_a_typed_slack_approval_must_name_what_the_gate_approves():
    """The slash command never fills the binding in from the run: it refuses, naming the value; with --expect the
    approval goes to the run as the gateway's service identity vouching for the Slack user."""
    import asyncio

    from core.approval import ApproveInput
    from core.catalog import Catalog
    from core.config import Settings
    from core.runbook import RunbookStatus
    from starters.gateway import Gateway, SlackCommands

    sent: list[ApproveInput] = []

    class Handle:
        async def execute_update(self, name, arg, result_type=None):
            sent.append(arg)
            return gate.model_copy(update={"decision": "approved", "decided_by": "alice"})

    class Client:
        def get_workflow_handle(self, workflow_id, run_id=None):
            return Handle()

    gate = GateView(gate_id="apply-1", title="Apply plan", opened_at=NOW, deadline=NOW + timedelta(hours=1),
                    binding="sha256:abc")
    gateway = Gateway(Settings(_env_file=None), Client(), Catalog({}, {}, {}), {})

    async def status(workflow_id):
        return RunbookStatus(workflow_id=workflow_id, runbook="r", target="t", requested_by="slack:U0REQ",
                             status="WaitingForApproval", stage="s", gate=gate, open_gates=[gate])

    gateway.status = status  # type: ignore[method-assign]
    commands = SlackCommands(gateway)
    refused = asyncio.run(commands.run("approve provision-x looks fine", "U0ALICE01", "C0OPS"))
    assert "approves `sha256:abc`" in refused and "--expect sha256:abc" in refused and not sent
    accepted = asyncio.run(commands.run("approve provision-x --expect sha256:abc looks fine", "U0ALICE01", "C0OPS"))
    assert "approved by <@U0ALICE01>" in accepted
    assert (sent[0].binding, sent[0].on_behalf_of, sent[0].reason, sent[0].token) == (
        "sha256:abc", "slack:U0ALICE01", "looks fine", None)


def test_stock_routing_a_warning_goes_to_slack_and_does_not_page(fake_slack, slack_client, fake_pd, pd_clients):
    """The sandbox TTL reminder (a warning alert) and a rollback that worked (error) are Slack's; a critical alert,
    a failed drill's alert (error) and a run that ends Failed page."""
    notify = NotificationActivities([SlackChannel(slack_client), PagerDutyChannel(*pd_clients)]).notify
    refs: dict[str, str] = {}
    for kind, title, severity in [("alert", "Sandbox dev-1 expires in 1h", "warning"),
                                  ("rolled_back", "canary rolled back", "error"),
                                  ("approval_reminder", "Still waiting", "info")]:
        result = notify(event(kind, title, refs, severity=severity))
        assert result.failures == []
        refs.update(result.refs)
    assert fake_pd.events == []
    assert "Sandbox dev-1 expires in 1h" in fake_slack.channel_messages("C0OPS")[0].all_text()
    notify(event("alert", "Restore drill FAILED: orders", refs, severity="error"))
    assert [e["event_action"] for e in fake_pd.events] == ["trigger"]


def test_routing_keeps_an_event_from_slack_when_the_table_says_so(fake_slack, slack_client):
    result = NotificationActivities([SlackChannel(slack_client)]).notify(event("started", "started", channels=[]))
    assert result.refs == {} and fake_slack.calls == []


def test_escalation_pages_per_gate_and_the_gate_closing_resolves_it(fake_slack, slack_client, fake_pd, pd_clients):
    notify = NotificationActivities([SlackChannel(slack_client), PagerDutyChannel(*pd_clients)]).notify
    gate = GateView(gate_id="apply-1", title="Apply plan", opened_at=NOW, deadline=NOW + timedelta(hours=1),
                    eligible=["bob"])
    refs = dict(notify(event("started", "started")).refs)
    refs.update(notify(event("approval_needed", "Apply plan", refs, gate=gate, severity="warning")).refs)
    assert fake_pd.events == []  # asking is not paging
    escalated = gate.model_copy(update={"eligible": ["bob", "carol"], "escalated": True,
                                        "deadline": NOW + timedelta(hours=2)})
    for _ in range(2):  # a retried activity pages once: the same alert
        result = notify(event("approval_escalated", "Escalated: Apply plan", refs, gate=escalated,
                              severity="critical", text="no decision within 1h; now also for carol"))
        assert result.failures == []
    refs.update(result.refs)
    key = dedup_key("restore-drill:orders", "apply-1")
    assert key == "runbook:restore-drill:orders:gate:apply-1" and refs["pagerduty_gate:apply-1"] == key
    assert list(fake_pd.alerts) == [key] and fake_pd.alerts[key]["payload"]["severity"] == "critical"
    assert fake_pd.alerts[key]["payload"]["custom_details"]["approvers"] == "bob, carol"
    [request] = [m for m in fake_slack.channel_messages("C0OPS") if m.ts == refs["slack_gate:apply-1"]]
    assert "carol" in request.all_text()  # the request shows the widened approvers
    thread = [text for name, body in fake_slack.calls if name == "chat.postMessage" and body.get("thread_ts")
              for text in [body.get("text", "")]]
    assert any("Escalated: Apply plan" in t for t in thread)
    decided = escalated.model_copy(update={"decision": "approved", "decided_by": "carol"})
    refs.update(notify(event("approval_decided", "Apply plan: approved", refs, gate=decided)).refs)
    assert fake_pd.alerts[key]["status"] == "resolved" and refs["pagerduty_gate:apply-1"] == ""
    notify(event("finished", "restore-drill: Succeeded", refs, status="Succeeded"))
    assert [e["event_action"] for e in fake_pd.events] == ["trigger", "trigger", "resolve"]  # resolved once


def test_a_gate_alert_still_open_at_the_end_of_the_run_is_resolved(fake_pd, pd_clients):
    """A gate closed without a decision event (the workflow cancelled while waiting) is over with the run."""
    notify = NotificationActivities([PagerDutyChannel(*pd_clients)]).notify
    gate = GateView(gate_id="apply-1", title="Apply plan", opened_at=NOW, deadline=NOW, eligible=["bob"])
    refs = notify(event("approval_escalated", "Escalated: Apply plan", gate=gate, severity="critical")).refs
    notify(event("finished", "restore-drill: Aborted", refs, status="Aborted"))
    assert fake_pd.alerts[dedup_key("restore-drill:orders", "apply-1")]["status"] == "resolved"
