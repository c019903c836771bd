"""What the Temporal web UI shows of a run (issue 14 item 5), read back from the server as the UI reads it:
a summary on every activity and timer of the history, the open gate's summary and how to approve it in the current
details, and the parameters as YAML in the static details."""

from __future__ import annotations

from datetime import timedelta

from temporalio.api.enums.v1 import EventType
from temporalio.worker import Replayer

from core.approval import ApproveInput
from core.catalog import StartPlan
from starters.client import details
from tests import harness
from tests.canary.test_ramp import Rig, make_input
from workflows.canary_ramp import CanaryRamp, PauseSpec, PlanStep
from workflows.summaries import SummaryInterceptor, summarize


async def _details(handle) -> str:
    metadata = await handle.query("__temporal_workflow_metadata")  # the UI's User Metadata tab
    return metadata.current_details


async def test_every_activity_and_timer_has_a_summary_and_the_gate_says_how_to_approve(ts_env, task_queue) -> None:
    rig = Rig(ts_env, task_queue)
    plan = [PlanStep(set_weight=10), PlanStep(pause=PauseSpec(duration=timedelta(minutes=5))), PlanStep(pause=PauseSpec()),
            PlanStep(set_weight=100)]
    async with rig.worker():
        handle = await rig.start(make_input(plan=plan))
        await harness.skip(ts_env, timedelta(minutes=6))  # past the timed pause, to the gate
        state = await harness.poll(lambda: handle.query(CanaryRamp.status), lambda s: s.gate is not None, "a gate opens")
        gate = state.gate
        assert gate is not None
        shown = await _details(handle)
        # the gate: what it asks, its summary, and how to approve it from the CLI and from this UI
        assert f"Waiting for approval of *{gate.title}* (gate `{gate.gate_id}`) by bob" in shown
        assert gate.summary and gate.summary in shown
        assert f"To approve: `runbook approve {handle.id}`" in shown
        assert f"`runbook approve {handle.id} --gate {gate.gate_id} --print-signal`" in shown
        assert "Send a Signal, name `approve_signal`" in shown
        await handle.execute_update(CanaryRamp.approve, ApproveInput(gate_id=gate.gate_id, approver="bob"))
        assert (await handle.result()).status == "Succeeded"
        assert "To approve" not in await _details(handle)
        history = await handle.fetch_history()

    activities, timers = [], []
    for event in history.events:
        summary = None
        if event.user_metadata.HasField("summary"):  # encrypted like every payload: the UI reads it via the codec
            [summary] = await harness.DATA_CONVERTER.decode([event.user_metadata.summary])
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            activities.append((event.activity_task_scheduled_event_attributes.activity_type.name, summary))
        elif event.event_type == EventType.EVENT_TYPE_TIMER_STARTED:
            timers.append(summary)
    assert activities and all(s for _, s in activities), activities
    # each summary names the activity and what it acts on
    weights = [s for name, s in activities if name == "alb_set_weights"]
    assert weights[0].startswith("alb set weights: weights ") and "=10" in weights[0] and "=90" in weights[0]
    assert any(s.startswith("notify: kind approval_needed, title ") for _, s in activities)
    assert timers and all(timers), timers
    assert any(t.startswith("step 2: pause at 10 % until ") for t in timers), timers
    # summaries are user metadata only: the history replays with and without the interceptor
    await Replayer(workflows=[CanaryRamp], data_converter=harness.DATA_CONVERTER).replay_workflow(history)
    await Replayer(workflows=[CanaryRamp], data_converter=harness.DATA_CONVERTER,
                   interceptors=[SummaryInterceptor()]).replay_workflow(history)


def test_summaries_are_short_and_skip_secrets() -> None:
    text = summarize("vault_read", [{"path": "secret/db", "token": "s3cr3t", "identifier": "orders-db"}])
    assert text == "vault read: identifier orders-db, path secret/db"
    arn = "arn:aws:elasticloadbalancing:us-east-1:123:targetgroup/shop-blue/abc"
    assert summarize("alb_target_health", [{"target_group_arn": arn}]) == "alb target health: target_group_arn shop-blue/abc"
    assert len(summarize("x", [{f"field{i}": "y" * 100 for i in range(5)}])) == 200  # one line, cut


def test_parameters_show_as_yaml_in_the_static_details() -> None:
    inp = make_input()
    plan = StartPlan(runbook="canary-ramp", workflow_id="w", workflow_type="CanaryRamp", input=inp, meta=inp.meta,
                     params={"service": "checkout", "alb": {"load_balancer": "demo-alb", "port": 80},
                             "bake": timedelta(seconds=20)})
    shown = details(plan)
    assert "```yaml\nalb:\n  load_balancer: demo-alb\n  port: 80\nbake: 20s\nservice: checkout\n```" in shown
    assert "{'" not in shown  # no Python reprs
