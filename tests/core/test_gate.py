"""The approval gate on the time-skipping server: policy enforcement, timeouts, reminders, UI signals, abort."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError
from temporalio.testing import WorkflowEnvironment

from core.approval import AbortInput, ApprovalPolicy, ApproveInput, RejectInput
from core.runbook import RunbookMeta, RunbookStatus
from tests import harness
from tests.core.gated_workflows import GatedChange, GatedChangeInput, TwoGates, TwoGatesInput

POLICY = ApprovalPolicy(approvers=["bob"], groups={"sre": ["dave", "erin"]}, timeout=timedelta(hours=4))


def _input(policy: ApprovalPolicy = POLICY, **kw) -> GatedChangeInput:
    meta = RunbookMeta(runbook="gated-change", target="payments", requested_by="alice", approval=policy)
    return GatedChangeInput(meta=meta, service="payments", **kw)


async def _wait_for_gate(handle: WorkflowHandle) -> RunbookStatus:
    return await harness.poll(lambda: handle.query(GatedChange.status), lambda s: s.gate is not None,
                              "the run opens a gate")


async def _start(env: WorkflowEnvironment, task_queue: str, inp: GatedChangeInput) -> WorkflowHandle:
    return await env.client.start_workflow(GatedChange.run, inp, id=f"gated-{uuid.uuid4().hex[:8]}", task_queue=task_queue)


async def _close(handle: WorkflowHandle, gate_id: str) -> None:
    """End a run the test no longer needs by rejecting it (terminating a run with pending timers upsets the
    time-skipping test server's clock for later tests)."""
    await handle.execute_update(GatedChange.reject, RejectInput(gate_id=gate_id, approver="bob", reason="test over"))
    await handle.result()


async def _refusal(handle: WorkflowHandle, req: ApproveInput) -> str:
    with pytest.raises(WorkflowUpdateFailedError) as failure:
        await handle.execute_update(GatedChange.approve, req)
    return failure.value.cause.message


async def test_listed_approver_approves_and_refusals_name_the_rule(ts_env, task_queue, recording):
    channel, notifier = recording
    async with harness.running_worker(ts_env.client, task_queue, [GatedChange], [notifier.notify]):
        handle = await _start(ts_env, task_queue, _input())
        state = await _wait_for_gate(handle)
        gate_id = state.gate.gate_id
        assert state.status == "WaitingForApproval"
        assert state.gate.eligible == ["bob", "dave", "erin"]

        assert "mallory is not an approver" in await _refusal(handle, ApproveInput(gate_id=gate_id, approver="mallory"))
        assert "stale gate" in await _refusal(handle, ApproveInput(gate_id="apply-0", approver="bob"))

        view = await handle.execute_update(GatedChange.approve, ApproveInput(gate_id=gate_id, approver="dave", reason="lgtm"))
        assert view.decision == "approved" and view.approvals[0].approver == "dave"
        result = await handle.result()
        await harness.save_history(handle, "core-listed_approver_approves_and_refusals_name_the_rule")
        assert result.status == "Succeeded"
        assert result.gates[0].decided_by == "dave" and result.gates[0].reason == "lgtm"
    kinds = channel.kinds(handle.id)
    assert kinds[:3] == ["step_done", "approval_needed", "approval_decided"] and kinds[-1] == "finished"


async def test_self_approval_is_refused_unless_the_policy_allows_it(ts_env, task_queue, recording):
    _, notifier = recording
    policy = POLICY.model_copy(update={"approvers": ["alice", "bob"]})
    async with harness.running_worker(ts_env.client, task_queue, [GatedChange], [notifier.notify]):
        handle = await _start(ts_env, task_queue, _input(policy))
        gate_id = (await _wait_for_gate(handle)).gate.gate_id
        assert "self-approval is off" in await _refusal(handle, ApproveInput(gate_id=gate_id, approver="alice"))

        allowed = await _start(ts_env, task_queue, _input(policy.model_copy(update={"allow_self_approval": True})))
        allowed_gate = (await _wait_for_gate(allowed)).gate.gate_id
        await allowed.execute_update(GatedChange.approve, ApproveInput(gate_id=allowed_gate, approver="alice"))
        assert (await allowed.result()).status == "Succeeded"
        await _close(handle, gate_id)


async def test_two_distinct_approvers_one_from_each_required_group(ts_env, task_queue, recording):
    _, notifier = recording
    policy = ApprovalPolicy(
        groups={"platform": ["bob", "pat"], "security": ["carol"]},
        required_approvals=2,
        required_groups=["platform", "security"],
    )
    async with harness.running_worker(ts_env.client, task_queue, [GatedChange], [notifier.notify]):
        handle = await _start(ts_env, task_queue, _input(policy))
        gate_id = (await _wait_for_gate(handle)).gate.gate_id
        first = await handle.execute_update(GatedChange.approve, ApproveInput(gate_id=gate_id, approver="bob"))
        assert first.decision == "pending"
        assert "already approved" in await _refusal(handle, ApproveInput(gate_id=gate_id, approver="bob"))
        second = await handle.execute_update(GatedChange.approve, ApproveInput(gate_id=gate_id, approver="pat"))
        assert second.decision == "pending", "two platform approvals must not satisfy the security requirement"
        third = await handle.execute_update(GatedChange.approve, ApproveInput(gate_id=gate_id, approver="carol"))
        assert third.decision == "approved"
        assert (await handle.result()).status == "Succeeded"
        await harness.save_history(handle, "core-two_distinct_approvers_one_from_each_required_group")


async def test_binding_must_match_what_the_gate_approves(ts_env, task_queue, recording):
    _, notifier = recording
    async with harness.running_worker(ts_env.client, task_queue, [GatedChange], [notifier.notify]):
        handle = await _start(ts_env, task_queue, _input(binding="sha256:aaa"))
        gate_id = (await _wait_for_gate(handle)).gate.gate_id
        refusal = await _refusal(handle, ApproveInput(gate_id=gate_id, approver="bob", binding="sha256:bbb"))
        assert "approves sha256:aaa" in refusal
        await handle.execute_update(GatedChange.approve, ApproveInput(gate_id=gate_id, approver="bob", binding="sha256:aaa"))
        assert (await handle.result()).status == "Succeeded"


async def test_ui_signal_approvals_are_checked_and_refusals_recorded(ts_env, task_queue, recording):
    _, notifier = recording
    async with harness.running_worker(ts_env.client, task_queue, [GatedChange], [notifier.notify]):
        handle = await _start(ts_env, task_queue, _input())
        gate_id = (await _wait_for_gate(handle)).gate.gate_id
        await handle.signal(GatedChange.approve_signal, ApproveInput(gate_id=gate_id, approver="alice"))
        await handle.signal(GatedChange.approve_signal, ApproveInput(gate_id=gate_id, approver=""))
        # a signal's identity check is a local activity: the refusal lands a moment later
        state = await harness.poll(lambda: handle.query(GatedChange.status), lambda s: len(s.refused) == 2,
                                   "both signals refused")
        assert [r.reason for r in state.refused] == [
            "alice requested this run and cannot approve it (self-approval is off)",
            "the approver's identity is missing",
        ]
        assert state.gate is not None and state.gate.open
        await handle.signal(GatedChange.approve_signal, ApproveInput(gate_id=gate_id, approver="erin"))
        result = await handle.result()
        assert result.gates[0].approvals[0].via == "ui"

        no_ui = await _start(ts_env, task_queue, _input(POLICY.model_copy(update={"allow_ui_approval": False})))
        no_ui_gate = (await _wait_for_gate(no_ui)).gate.gate_id
        await no_ui.signal(GatedChange.approve_signal, ApproveInput(gate_id=no_ui_gate, approver="bob"))
        state = await no_ui.query(GatedChange.status)
        assert "does not accept approvals from the web UI" in state.refused[0].reason
        await _close(no_ui, no_ui_gate)


async def test_rejection_and_timeout_end_without_applying(ts_env, task_queue, recording):
    channel, notifier = recording
    policy = POLICY.model_copy(update={"timeout": timedelta(hours=6), "reminder_interval": timedelta(hours=2)})
    async with harness.running_worker(ts_env.client, task_queue, [GatedChange], [notifier.notify]):
        rejected = await _start(ts_env, task_queue, _input(policy))
        gate_id = (await _wait_for_gate(rejected)).gate.gate_id
        with pytest.raises(WorkflowUpdateFailedError):
            await rejected.execute_update(GatedChange.reject, RejectInput(gate_id=gate_id, approver="mallory", reason="no"))
        await rejected.execute_update(GatedChange.reject, RejectInput(gate_id=gate_id, approver="bob", reason="freeze"))
        result = await rejected.result()
        assert result.status == "Rejected" and "rejected by bob: freeze" in result.summary

        timed_out = await _start(ts_env, task_queue, _input(policy))
        result = await timed_out.result()  # time skips 6 hours
        assert result.status == "Rejected" and "timed out" in result.summary
        assert channel.kinds(timed_out.id).count("approval_reminder") == 2  # at 2 h and 4 h
        state = await timed_out.query(GatedChange.status)
        waited = state.gates[0].decided_at - state.gates[0].opened_at
        assert timedelta(hours=6) <= waited < timedelta(hours=6, seconds=1)


async def test_escalation_extends_the_gate_to_the_escalation_approvers(ts_env, task_queue, recording):
    channel, notifier = recording
    policy = POLICY.model_copy(
        update={"timeout": timedelta(hours=1), "on_timeout": "escalate", "escalate_to": ["oncall-lead"], "reminder_interval": None}
    )
    async with harness.running_worker(ts_env.client, task_queue, [GatedChange], [notifier.notify]):
        handle = await _start(ts_env, task_queue, _input(policy))
        gate_id = (await _wait_for_gate(handle)).gate.gate_id
        assert "not an approver" in await _refusal(handle, ApproveInput(gate_id=gate_id, approver="oncall-lead"))
        await harness.skip(ts_env, timedelta(minutes=61))
        state = await handle.query(GatedChange.status)
        assert state.gate is not None and state.gate.escalated and "oncall-lead" in state.gate.eligible
        await handle.execute_update(GatedChange.approve, ApproveInput(gate_id=gate_id, approver="oncall-lead"))
        assert (await handle.result()).status == "Succeeded"
    kinds = channel.kinds(handle.id)
    assert kinds.count("approval_needed") == 1 and kinds.count("approval_escalated") == 1


async def test_abort_while_waiting_closes_the_gate(ts_env, task_queue, recording):
    _, notifier = recording
    async with harness.running_worker(ts_env.client, task_queue, [GatedChange], [notifier.notify]):
        handle = await _start(ts_env, task_queue, _input())
        await _wait_for_gate(handle)
        await handle.execute_update(GatedChange.abort, AbortInput(requested_by="dave", reason="incident"))
        with pytest.raises(WorkflowUpdateFailedError):
            await handle.execute_update(GatedChange.abort, AbortInput(requested_by="erin", reason="again"))
        result = await handle.result()
        assert result.status == "Aborted" and "aborted by dave: incident" in result.summary
        state = await handle.query(GatedChange.status)
        assert state.status == "Aborted" and state.gates[0].decision == "aborted"
        assert state.actions[0].action == "abort" and state.actions[0].by == "dave"


# ------------------------------------------------------------------------------------ gates as objects
def _two_gates(policy: ApprovalPolicy = POLICY, **kw) -> TwoGatesInput:
    meta = RunbookMeta(runbook="two-gates", target="payments", requested_by="alice", approval=policy,
                       **({"history_limit": kw.pop("history_limit")} if "history_limit" in kw else {}))
    return TwoGatesInput(meta=meta, **kw)


async def _open_gates(handle: WorkflowHandle, count: int) -> list[str]:
    state = await harness.poll(lambda: handle.query(TwoGates.status), lambda s: len(s.open_gates) >= count,
                               f"the run holds {count} open gates")
    return [g.gate_id for g in state.open_gates]


async def _no_task_failures(handle: WorkflowHandle) -> None:
    history = await handle.fetch_history()
    failed = [e for e in history.events if e.HasField("workflow_task_failed_event_attributes")]
    assert not failed, failed[0].workflow_task_failed_event_attributes.failure.message


async def test_two_open_gates_are_decided_independently(ts_env, task_queue, recording):
    _, notifier = recording
    async with harness.running_worker(ts_env.client, task_queue, [TwoGates], [notifier.notify]):
        with ts_env.auto_time_skipping_disabled():
            handle = await ts_env.client.start_workflow(TwoGates.run, _two_gates(), id=f"two-{uuid.uuid4().hex[:8]}",
                                                        task_queue=task_queue)
            await harness.skip(ts_env, timedelta(minutes=2))
            first, second = await _open_gates(handle, 2)
            state = await handle.query(TwoGates.status)
            assert state.status == "WaitingForApproval" and state.gate.gate_id == first
            # the older gate is not stale because a newer one opened: each is approvable by its own id
            await handle.execute_update(TwoGates.approve, ApproveInput(gate_id=first, approver="bob"))
            state = await handle.query(TwoGates.status)
            assert [g.gate_id for g in state.open_gates] == [second] and state.status == "WaitingForApproval"
            stale = await _refusal(handle, ApproveInput(gate_id=first, approver="dave"))
            assert stale == f"gate {first} is already approved"
            await handle.execute_update(TwoGates.reject, RejectInput(gate_id=second, approver="dave", reason="no"))
        result = await handle.result()
    assert result.decisions == {first: "approved", second: "rejected"}
    assert result.status == "Succeeded"
    await _no_task_failures(handle)


async def test_an_orphaned_gate_times_out_by_itself_without_a_deadlock(ts_env, task_queue, recording):
    """The blue-green hang: a second gate opened while the first waits; the first times out on its own clock."""
    _, notifier = recording
    policy = POLICY.model_copy(update={"timeout": timedelta(hours=1), "reminder_interval": None})
    async with harness.running_worker(ts_env.client, task_queue, [TwoGates], [notifier.notify]):
        handle = await ts_env.client.start_workflow(TwoGates.run, _two_gates(policy), id=f"two-{uuid.uuid4().hex[:8]}",
                                                    task_queue=task_queue)
        result = await handle.result()  # time skips: both gates time out, each by itself
    assert set(result.decisions.values()) == {"timed_out"} and len(result.decisions) == 2
    await _no_task_failures(handle)


async def test_on_timeout_abort_aborts_the_run(ts_env, task_queue, recording):
    _, notifier = recording
    policy = POLICY.model_copy(update={"timeout": timedelta(hours=1), "on_timeout": "abort", "reminder_interval": None})
    async with harness.running_worker(ts_env.client, task_queue, [GatedChange], [notifier.notify]):
        handle = await _start(ts_env, task_queue, _input(policy))
        result = await handle.result()
    assert result.status == "Aborted" and "on_timeout: abort" in result.summary
    assert result.actions[0].action == "abort" and result.actions[0].by == "policy"


async def test_cancel_is_an_abort_and_completes_with_a_result(ts_env, task_queue, recording):
    channel, notifier = recording
    async with harness.running_worker(ts_env.client, task_queue, [GatedChange], [notifier.notify]):
        handle = await _start(ts_env, task_queue, _input())
        await _wait_for_gate(handle)
        await harness.cancel_settled(handle)  # not while the gate's approval_needed notification is under way
        result = await handle.result()
    assert result.status == "Aborted" and "cancelled" in result.summary
    assert result.gates[0].decision == "aborted"
    assert channel.kinds(handle.id)[-1] == "finished"


async def test_a_long_run_continues_as_new_and_keeps_its_audit_trail(ts_env, task_queue, recording):
    _, notifier = recording
    policy = POLICY.model_copy(update={"timeout": timedelta(hours=1), "reminder_interval": None})
    async with harness.running_worker(ts_env.client, task_queue, [TwoGates], [notifier.notify]):
        handle = await ts_env.client.start_workflow(
            TwoGates.run, _two_gates(policy, rounds=6, history_limit=100), id=f"two-{uuid.uuid4().hex[:8]}",
            task_queue=task_queue)
        result = await handle.result()
        state = await handle.query(TwoGates.status)
    assert result.rounds_done == 6 and len(result.decisions) == 12  # ids never repeat across continuations
    assert len(result.gates) == 12 and state.continued >= 1
    history = await handle.fetch_history()  # the last run's history only: it started from the carried state
    assert len(history.events) < 100 + 60  # the limit, plus at most one round past it
