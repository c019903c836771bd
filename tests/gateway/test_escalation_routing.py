"""Approval timeouts, escalation and severity routing end to end: a run on the time-skipping server, its events
through the real Slack and PagerDuty channels to the wire-format fakes."""

from __future__ import annotations

import uuid
from datetime import timedelta

from temporalio.client import WorkflowHandle

from activities.notify import NotificationActivities, RecordingChannel
from activities.pagerduty import PagerDutyChannel, dedup_key
from activities.slack import SlackChannel
from core.approval import AbortInput, ApprovalPolicy, ApproveInput
from core.routing import DEFAULT_ROUTES, Route
from core.runbook import RunbookMeta, RunbookResult, RunbookStatus
from tests import harness
from tests.gateway.noticed_change import NoticedChange, NoticedChangeInput

POLICY = ApprovalPolicy(approvers=["bob"], timeout=timedelta(hours=1), reminder_interval=timedelta(minutes=20))


def _input(policy: ApprovalPolicy = POLICY, routing: list[Route] | None = None, **kw) -> NoticedChangeInput:
    meta = RunbookMeta(runbook="noticed-change", target="payments", requested_by="alice", approval=policy,
                       slack_channel="C0OPS", **({"routing": routing} if routing is not None else {}))
    return NoticedChangeInput(meta=meta, **kw)


def _notifier(slack_client, pd_clients) -> tuple[RecordingChannel, NotificationActivities]:
    recorder = RecordingChannel()
    return recorder, NotificationActivities([recorder, SlackChannel(slack_client), PagerDutyChannel(*pd_clients)])


async def _start(env, task_queue: str, inp: NoticedChangeInput) -> WorkflowHandle:
    return await env.client.start_workflow(NoticedChange.run, inp, id=f"noticed-{uuid.uuid4().hex[:8]}",
                                           task_queue=task_queue)


async def _gate(handle: WorkflowHandle) -> RunbookStatus:
    return await harness.poll(lambda: handle.query(NoticedChange.status), lambda s: s.gate is not None,
                              "the run opens a gate")


def _actions(fake_pd, key: str) -> list[str]:
    return [e["event_action"] for e in fake_pd.events if e["dedup_key"] == key]


async def test_each_on_timeout_value_does_what_it_says(ts_env, task_queue, fake_slack, slack_client, fake_pd,
                                                       pd_clients):
    _, notifier = _notifier(slack_client, pd_clients)
    async with harness.running_worker(ts_env.client, task_queue, [NoticedChange], [notifier.notify]):
        # reject: the gate times out, the run ends Rejected (its change undone), nobody is paged
        rejected: RunbookResult = await (await _start(ts_env, task_queue, _input(POLICY))).result()
        # abort: the run aborts as `runbook abort` does; compare with a person's abort at the same gate
        timed_abort = await _start(ts_env, task_queue, _input(POLICY.model_copy(update={"on_timeout": "abort"})))
        aborted_by_policy: RunbookResult = await timed_abort.result()
        by_hand = await _start(ts_env, task_queue, _input(POLICY))
        await _gate(by_hand)
        await by_hand.execute_update(NoticedChange.abort, AbortInput(requested_by="dave", reason="incident"))
        aborted_by_hand: RunbookResult = await by_hand.result()
        # escalate: at 1 h the gate pages and widens to carol; at 2 h, still undecided, it times out (Rejected)
        escalating = await _start(ts_env, task_queue, _input(POLICY.model_copy(
            update={"on_timeout": "escalate", "escalate_to": ["carol"]})))
        escalated: RunbookResult = await escalating.result()

    assert rejected.status == "Rejected" and rejected.gates[0].decision == "timed_out"
    assert rejected.compensated == ["prepare undone"] and not rejected.actions

    assert aborted_by_policy.status == aborted_by_hand.status == "Aborted"
    assert aborted_by_policy.compensated == aborted_by_hand.compensated == ["prepare undone"]
    assert [g.decision for g in aborted_by_policy.gates] == [g.decision for g in aborted_by_hand.gates] == ["aborted"]
    assert [(a.action, a.by) for a in aborted_by_policy.actions] == [("abort", "policy")]
    assert [(a.action, a.by) for a in aborted_by_hand.actions] == [("abort", "dave")]
    assert "on_timeout: abort" in aborted_by_policy.summary

    assert escalated.status == "Rejected" and escalated.gates[0].decision == "timed_out"
    assert escalated.gates[0].escalated and "carol" in escalated.gates[0].eligible
    waited = escalated.gates[0].decided_at - escalated.gates[0].opened_at
    assert timedelta(hours=2) <= waited < timedelta(hours=2, seconds=1)
    gate_key = dedup_key(escalating.id, escalated.gates[0].gate_id)
    assert [e["dedup_key"] for e in fake_pd.events] == [gate_key, gate_key]  # only the escalation ever paged
    assert _actions(fake_pd, gate_key) == ["trigger", "resolve"]  # closed by the timeout: resolved


async def test_escalation_pages_once_and_resolves_when_decided(ts_env, task_queue, fake_slack, slack_client, fake_pd,
                                                               pd_clients):
    recorder, notifier = _notifier(slack_client, pd_clients)
    policy = POLICY.model_copy(update={"on_timeout": "escalate", "escalate_to": ["carol"]})
    async with harness.running_worker(ts_env.client, task_queue, [NoticedChange], [notifier.notify]):
        handle = await _start(ts_env, task_queue, _input(policy))
        gate_id = (await _gate(handle)).gate.gate_id
        await harness.skip(ts_env, timedelta(minutes=50))  # two reminders: Slack only
        assert fake_pd.events == []
        await harness.skip(ts_env, timedelta(minutes=15))  # past the deadline: escalated
        state = await handle.query(NoticedChange.status)
        assert state.gate is not None and state.gate.escalated and "carol" in state.gate.eligible
        await harness.skip(ts_env, timedelta(minutes=30))  # reminders after the escalation page no one
        await handle.execute_update(NoticedChange.approve, ApproveInput(gate_id=gate_id, approver="carol"))
        result = await handle.result()
    assert result.status == "Succeeded"
    key = dedup_key(handle.id, gate_id)
    assert [e["event_action"] for e in fake_pd.events] == ["trigger", "resolve"]
    assert {e["dedup_key"] for e in fake_pd.events} == {key}
    assert fake_pd.alerts[key]["status"] == "resolved"
    assert fake_pd.alerts[key]["payload"]["custom_details"]["escalated to"] == "carol"
    kinds = recorder.kinds(handle.id)
    assert kinds.count("approval_escalated") == 1 and kinds.count("approval_reminder") >= 3
    thread = [body["text"] for body in fake_slack.method_calls("chat.postMessage") if body.get("thread_ts")]
    assert sum(t.startswith("Reminder:") for t in thread) == kinds.count("approval_reminder")
    assert sum("Escalated: Apply the change" in t for t in thread) == 1
    request_ts = state.notify_refs[f"slack_gate:{gate_id}"]
    assert "approved by carol" in fake_slack.messages[("C0OPS", request_ts)].all_text()


async def test_a_warning_does_not_page_a_critical_pages_and_a_clean_end_resolves_it(
        ts_env, task_queue, fake_slack, slack_client, fake_pd, pd_clients):
    _, notifier = _notifier(slack_client, pd_clients)
    alerts = [("warning", "Sandbox payments expires in 1h"), ("critical", "replica lag over 10 minutes")]
    async with harness.running_worker(ts_env.client, task_queue, [NoticedChange], [notifier.notify]):
        warned = await _start(ts_env, task_queue, _input(alerts=alerts[:1], gate=False))
        assert (await warned.result()).status == "Succeeded"
        assert fake_pd.events == []  # a warning is Slack's
        paged = await _start(ts_env, task_queue, _input(alerts=alerts, gate=False))
        assert (await paged.result()).status == "Succeeded"
        key = dedup_key(paged.id)
        assert _actions(fake_pd, key) == ["trigger", "resolve"] and fake_pd.alerts[key]["status"] == "resolved"
        assert fake_pd.alerts[key]["payload"]["summary"].endswith("replica lag over 10 minutes")
        # a run that recovers resolves its alert then, not at its end
        recovered = await _start(ts_env, task_queue, _input(alerts=alerts[1:], recover=True))
        await _gate(recovered)
        assert _actions(fake_pd, dedup_key(recovered.id)) == ["trigger", "resolve"]  # before the run ends
        await recovered.execute_update(NoticedChange.approve, ApproveInput(gate_id=(await _gate(recovered)).gate.gate_id,
                                                                          approver="bob"))
        await recovered.result()
        assert _actions(fake_pd, dedup_key(recovered.id)) == ["trigger", "resolve"]  # resolved once
    warnings = [m for m in fake_slack.channel_messages("C0OPS") if "Sandbox payments expires in 1h" in m.all_text()]
    assert warnings, "the warning reached Slack"


async def test_a_runbook_routes_its_own_events_before_the_catalog_table(ts_env, task_queue, fake_slack, slack_client,
                                                                        fake_pd, pd_clients):
    _, notifier = _notifier(slack_client, pd_clients)
    routing = [Route(kinds=["alert"], severities=["warning"], channels=["pagerduty"]), *DEFAULT_ROUTES]
    async with harness.running_worker(ts_env.client, task_queue, [NoticedChange], [notifier.notify]):
        handle = await _start(ts_env, task_queue, _input(routing=routing, alerts=[("warning", "disk 85 %")], gate=False))
        await handle.result()
    assert _actions(fake_pd, dedup_key(handle.id)) == ["trigger", "resolve"]
    assert not [m for m in fake_slack.channel_messages("C0OPS") if "disk 85 %" in m.all_text()]  # not Slack's
