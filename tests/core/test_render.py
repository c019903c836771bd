"""What `runbook status` and `runbook watch` print (starters/render.py), from status answers built here: durations,
times, copy-safe commands, the plan ahead of a waiting run, and plain output that is complete at any width."""

from __future__ import annotations

import io
import re
import shlex
from datetime import datetime, timedelta, timezone

from rich.console import Console

from core.approval import ApprovalPolicy, GateView, check_approval
from core.duration import format_span
from core.runbook import RunbookStatus, StepRecord
from starters.render import change_lines, moment, plain_lines, rich_view, span

NOW = datetime(2026, 12, 1, 14, 28, 10, tzinfo=timezone.utc)
BINDING = "checkout: blue -> green (v2) via alb"


def canary_state(**details) -> RunbookStatus:
    started = NOW - timedelta(minutes=4)
    plan = ["step 1/3: set weight 25%", "step 2/3: analysis default for 10m", "step 3/3: set weight 100%"]
    measurements = [
        {"metric": "error-rate", "phase": "Successful", "value": 0.12, "at": (NOW - timedelta(seconds=50)).isoformat()},
        {"metric": "latency-p95", "phase": "Failed", "value": 812.5, "at": (NOW - timedelta(seconds=50)).isoformat()},
        {"metric": "cpu", "phase": "Inconclusive", "value": None, "at": (NOW - timedelta(seconds=50)).isoformat(),
         "message": "no datapoints in the window"},
    ]
    return RunbookStatus(
        workflow_id="canary:checkout", runbook="canary-ramp", target="checkout", requested_by="alice",
        status="Running", stage=plan[1],
        steps=[
            StepRecord(name="resolve", status="done", started_at=started - timedelta(seconds=3),
                       finished_at=started - timedelta(seconds=2, microseconds=894035), detail="alb demo-alb:80"),
            StepRecord(name=plan[0], status="done", started_at=started - timedelta(seconds=1),
                       finished_at=started - timedelta(microseconds=105965)),
            StepRecord(name=plan[1], started_at=started),
        ],
        details={
            "step_index": 1, "steps": 3, "step": "analysis default for 10m", "phase": "Progressing",
            "step_ends_at": (started + timedelta(minutes=10)).isoformat(), "current_weight": 25, "paused": False,
            "plan": plan, "measurements_total": 12, "recent_measurements": measurements,
            "thresholds": {"error-rate": "< 0.5", "latency-p95": "< 500", "cpu": "< 80"},
            "plan_hash": "sha256:0123456789abcdef", "router_note": "x" * 150, "bake_extended_seconds": 150.0,
            **details,
        },
    )


def gate(binding: str = BINDING) -> GateView:
    return GateView(gate_id="cutover-1", title="Switch checkout to green", summary="Switch checkout.\nPreview: ok.",
                    binding=binding, opened_at=NOW - timedelta(minutes=1), deadline=NOW + timedelta(hours=4),
                    eligible=["bob"], required_approvals=1)


def test_durations_read_as_people_write_them():
    assert span(timedelta(minutes=10, seconds=40)) == "10m40s"
    assert span(20.105965) == "20s" and format_span(timedelta(seconds=20.105965)) == "20s"
    assert span(0.2) == "<1s" and span(0) == "0s" and span(7322) == "2h2m2s" and span(-65) == "-1m5s"


def test_times_are_relative_and_absolute():
    assert moment(NOW + timedelta(minutes=4), NOW) == "in 4m (14:32:10 UTC)"
    assert moment(NOW - timedelta(seconds=192), NOW) == "3m12s ago (14:24:58 UTC)"
    assert moment(NOW + timedelta(days=2), NOW) == "in 2d (2026-12-03 14:28:10 UTC)"


def test_plain_canary_view_has_plan_bars_time_left_and_measurements_and_no_raw_times():
    lines = plain_lines(canary_state(), NOW)
    text = "\n".join(lines)
    assert "  > running     step 2/3: analysis default for 10m [4m so far]" in lines
    assert "    next        step 3/3: set weight 100%" in lines
    assert "canary weight: [########----------------------]  25%" in lines
    assert "this step: [############------------------]  40% 6m left, ends in 6m (14:34:10 UTC)" in lines
    assert "  50s ago (14:27:20 UTC)  latency-p95 = 812.5  threshold < 500  Failed" in lines
    assert "  50s ago (14:27:20 UTC)  cpu = no data (no datapoints in the window)  threshold < 80  Inconclusive" in lines
    assert "  router_note: " + "x" * 150 in lines  # complete, not cut at 80 or 120 columns
    assert "  bake_extended: 2m30s" in lines
    assert not re.search(r"\d{4}-\d\d-\d\dT\d\d:", text), "a raw ISO timestamp"
    assert not re.search(r"\d\.\d{4,}s", text), "a duration with microseconds"
    assert "resolve [<1s]: alb demo-alb:80" in text and "step 1/3: set weight 25% [1s]" in text  # 0.894 s


def test_waiting_run_shows_its_plan_its_deadline_and_a_copy_safe_approve_command():
    state = canary_state()
    state = state.model_copy(update={
        "status": "WaitingForApproval", "open_gates": [gate()], "gate": gate(),
        "details": {"plan": ["look", "fence", "promote", "dns", "verify"]},
        "steps": [StepRecord(name="look", status="done", started_at=NOW - timedelta(minutes=2),
                             finished_at=NOW - timedelta(minutes=1))],
    })
    lines = plain_lines(state, NOW)
    assert "  > waiting     approval: Switch checkout to green [1m so far]: gate cutover-1, 0/1 approvals" in lines
    assert [line.split()[-1] for line in lines if line.startswith("    next")] == ["fence", "promote", "dns", "verify"]
    assert any(line.startswith("gate cutover-1 deadline: [") and line.endswith("4h left, ends in 4h (18:28:10 UTC)")
               for line in lines)
    hint = next(line for line in lines if line.startswith("  approve: ")).removeprefix("  approve: ")
    assert shlex.split(hint) == ["runbook", "approve", "canary:checkout", "--expect", BINDING]


def test_the_refusal_without_expect_quotes_the_binding():
    view = gate("failover:shop:us-east-1->us-west-2")
    refusal = check_approval(ApprovalPolicy(approvers=["bob"]), view, gate_id="cutover-1", who="bob",
                             requested_by="alice", action="approve", via="cli")
    command = refusal.split("say so with ")[1].split(" (in a UI")[0]
    assert shlex.split(command) == ["--expect", "failover:shop:us-east-1->us-west-2"]


def test_piped_lines_are_complete_at_any_width():
    state = canary_state(long_note="y" * 200).model_copy(update={"open_gates": [gate()]})
    for line in plain_lines(state, NOW):
        assert "…" not in line and "..." not in line
    assert any(len(line) > 200 for line in plain_lines(state, NOW))


def test_watch_on_a_pipe_prints_what_changed_as_it_happens():
    before = canary_state()
    later = NOW + timedelta(minutes=1)
    newer = [*before.details["recent_measurements"],
             {"metric": "error-rate", "phase": "Failed", "value": 0.9, "at": later.isoformat()}]
    after = before.model_copy(update={"open_gates": [gate()], "gate": gate(),
                                      "details": {**before.details, "recent_measurements": newer, "current_weight": 50}})
    lines = change_lines(before, after, later)
    assert "14:29:10 canary weight 50%" in lines
    assert "14:29:10 measured error-rate = 0.9 (threshold < 0.5): Failed" in lines
    approve = next(line for line in lines if " approve: " in line).split(" approve: ")[1]
    assert shlex.split(approve)[-1] == BINDING
    assert not any("latency-p95" in line for line in lines)  # already shown
    assert change_lines(after, after, later) == []


def test_the_terminal_view_draws_bars_and_the_measurements_table():
    console = Console(file=io.StringIO(), width=100, force_terminal=True, color_system=None)
    console.print(rich_view(canary_state(), NOW))
    text = console.file.getvalue()
    assert "━" in text and "6m left, ends in 6m" in text
    for header in ("metric", "value", "threshold", "verdict"):
        assert header in text
    assert "latency-p95" in text and "< 500" in text and "▶" in text


def test_status_on_a_terminal_prints_the_approve_command_on_one_line_of_its_own():
    from starters import cli

    state = canary_state().model_copy(update={"open_gates": [gate()], "gate": gate()})
    console = Console(file=io.StringIO(), width=60, force_terminal=True, color_system=None, soft_wrap=True)
    saved, cli.out = cli.out, console
    try:
        cli._show(state)
    finally:
        cli.out = saved
    lines = console.file.getvalue().splitlines()
    assert "approve: runbook approve canary:checkout --expect 'checkout: blue -> green (v2) via alb'" in lines


def test_a_paused_step_shows_its_clock_standing_still():
    from core.runbook import ActionRecord

    paused = canary_state(paused=True).model_copy(update={
        "actions": [ActionRecord(at=NOW - timedelta(minutes=2), action="pause", by="bob", reason="look at logs")]})
    line = next(line for line in plain_lines(paused, NOW) if line.startswith("this step: "))
    # 2 of 10 minutes ran before the pause; 8 are left once resumed, however long the pause lasts
    assert line == "this step: [######------------------------]  20% paused 2m ago (14:26:10 UTC): 8m left once resumed"
    assert any(line.endswith("pause by bob: look at logs") for line in plain_lines(paused, NOW))


def test_a_run_waiting_out_a_change_freeze_shows_the_window_and_its_end():
    from core.calendar import Freeze

    freeze = Freeze(window="year-end", description="year-end change freeze", starts_at=NOW - timedelta(hours=2),
                    ends_at=NOW + timedelta(hours=3), break_glass=ApprovalPolicy(approvers=["dave"]))
    state = canary_state().model_copy(update={"status": "WaitingForWindow", "freeze": freeze,
                                              "stage": "set weight 25%: waiting for the end of the change freeze"})
    text = "\n".join(plain_lines(state, NOW))
    assert "status: WaitingForWindow" in text
    assert "freeze: change freeze 'year-end' (year-end change freeze) until 2026-12-01 17:28 UTC" in text
    assert "break-glass gate with a reason" in text
    assert re.search(r"freeze 'year-end' ends: .*3h left", text), text
