"""How `runbook status` and `runbook watch` show a run: one reading of a ``status`` query, drawn two ways.

- ``rich_view(state, now)``: a Rich renderable for a terminal (static for ``status``, redrawn by ``watch``'s
  Live view): the plan with the current step highlighted, progress bars with the time left of the running step,
  the bake and each open gate's deadline, the canary weight, a measurements table (metric, value, threshold,
  verdict), the open gates with a copy-safe approve command, and the approvals, refusals and steering so far.
- ``plain_lines(state, now)`` and ``change_lines(previous, state, now)``: the same for a pipe or a log file, as
  plain lines that are never wrapped nor cut (a line is as long as its content), and, for ``watch``, one line per
  change as it happens.

Durations read like ``10m40s`` (``span``), instants as relative and absolute (``in 4m (14:32:10 UTC)``, ``moment``),
never raw ISO timestamps or microseconds; every printed command is shell-quoted (``approve_hint``). Only the
``status`` answer is read: nothing here imports a workflow module (the CLI stays fast).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from core.approval import GateView, audit_line
from core.duration import format_span, parse_duration
from core.runbook import RunbookStatus

# details keys that the sections below show in their own way (the rest is listed as it is)
_SHOWN = {
    "plan", "step_index", "steps", "step", "step_ends_at", "current_weight", "recent_measurements", "last_verdict",
    "bake_ends_at", "bake_verdict", "thresholds", "measurements_total", "phase", "paused", "promote_requested",
    "extended", "max_extension", "plan_hash", "stages",
}
_VERDICT_STYLE = {"Successful": "green", "Failed": "bold red", "Inconclusive": "yellow", "Error": "red"}
_SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
_STEP_STYLE = {"done": "green", "failed": "red", "running": "bold yellow", "skipped": "dim", "compensated": "magenta"}


# ----------------------------------------------------------------------------------------------- words
def span(value: timedelta | float) -> str:
    """A duration for people: whole seconds, largest units first (``10m40s``, ``2h5m``, ``3d1h``); under a second
    ``<1s``; negative with a ``-``. Never microseconds."""
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if 0 < abs(seconds) < 0.5:
        return "<1s"
    return ("-" if seconds <= -0.5 else "") + format_span(timedelta(seconds=abs(seconds)))


def moment(at: datetime, now: datetime) -> str:
    """An instant as relative and absolute: ``in 4m (14:32:10 UTC)``, ``3m12s ago (14:32:10 UTC)``; the date too
    when it is not today's."""
    at = _aware(at)
    delta = (at - now).total_seconds()
    when = at.strftime("%H:%M:%S UTC") if at.date() == now.date() else at.strftime("%Y-%m-%d %H:%M:%S UTC")
    if abs(delta) < 1:
        return f"now ({when})"
    return f"in {span(delta)} ({when})" if delta > 0 else f"{span(-delta)} ago ({when})"


def approve_hint(workflow_id: str, gate: GateView, several: bool = False) -> str:
    """The approve command for a gate, shell-quoted (the run's UI details show the same: ``GateView.approve_hint``)."""
    return gate.approve_hint(workflow_id, several)


def _aware(at: datetime) -> datetime:
    return at if at.tzinfo else at.replace(tzinfo=timezone.utc)


def _instant(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return _aware(value)
    if isinstance(value, str) and len(value) >= 19 and value[4:5] == "-" and value[10:11] == "T":
        try:
            return _aware(datetime.fromisoformat(value.replace("Z", "+00:00")))
        except ValueError:
            return None
    return None


def _duration(value: Any) -> timedelta | None:
    """A duration from a details value: seconds, ``10m``, or ISO 8601 as pydantic writes a timedelta (``PT1M``)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        return parse_duration(value)
    except ValueError:
        return None


def _number(value: Any) -> str:
    if value is None:
        return "no data"
    if isinstance(value, float):
        if math.isnan(value):
            return "no data"
        return f"{value:.4g}"
    return str(value)


def _shown(value: Any, now: datetime) -> str:
    """A details value, complete, as people read it: instants as moments, lists and mappings unpacked."""
    at = _instant(value)
    if at is not None:
        return moment(at, now)
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        return "; ".join(_shown(v, now) for v in value) or "none"
    if isinstance(value, dict):
        return ", ".join(f"{k} {_shown(v, now)}" for k, v in value.items()) or "none"
    if isinstance(value, float):
        return _number(value)
    return str(value)


# ----------------------------------------------------------------------------------------------- reading
@dataclass
class PlanRow:
    name: str
    status: str  # a StepRecord status, "waiting" (an open gate) or "next"
    took: str
    detail: str
    current: bool


@dataclass
class Timer:
    label: str
    start: datetime
    end: datetime
    paused_at: datetime | None = None  # the clock stands still from then until resumed (the end then moves on)

    @property
    def paused(self) -> bool:
        return self.paused_at is not None

    def fraction(self, now: datetime) -> float:
        now = self.paused_at or now
        total = (self.end - self.start).total_seconds()
        return 1.0 if total <= 0 else min(max((now - self.start).total_seconds() / total, 0.0), 1.0)

    def left(self, now: datetime) -> str:
        if self.paused_at is not None:
            return f"paused {moment(self.paused_at, now)}: {span(self.end - self.paused_at)} left once resumed"
        if now >= self.end:
            return f"due {moment(self.end, now)}"
        return f"{span(self.end - now)} left, ends {moment(self.end, now)}"


@dataclass
class MeasurementRow:
    at: datetime | None
    metric: str
    value: str
    threshold: str
    verdict: str


def plan_rows(state: RunbookStatus, now: datetime) -> list[PlanRow]:
    """The steps so far, an open gate as the step the run waits at, then the runbook's announced plan still ahead."""
    rows: list[PlanRow] = []
    running = [s for s in state.steps if s.status == "running"]
    current = running[-1] if running else None
    for step in state.steps:
        end = step.finished_at or now
        took = span(end - _aware(step.started_at)) + ("" if step.finished_at else " so far")
        rows.append(PlanRow(step.name, step.status, took, step.detail, step is current and not state.open_gates))
    for gate in state.open_gates:
        rows.append(PlanRow(f"approval: {gate.title}", "waiting", span(now - _aware(gate.opened_at)) + " so far",
                            f"gate {gate.gate_id}, {len(gate.approvals)}/{gate.required_approvals} approvals", True))
    seen = {s.name for s in state.steps}
    ahead = [name for name in state.details.get("plan") or [] if isinstance(name, str) and name not in seen]
    if state.status not in ("Succeeded", "RolledBack", "Aborted", "Rejected", "Refused", "Held", "Failed"):
        rows += [PlanRow(name, "next", "", "", False) for name in ahead]
    return rows


def timers(state: RunbookStatus, now: datetime) -> list[Timer]:
    """What runs against a clock: the running timed step (a canary step, a bake) and every open gate's deadline."""
    found: list[Timer] = []
    details = state.details
    running = [s for s in state.steps if s.status == "running"]
    for key, label in (("step_ends_at", "this step"), ("bake_ends_at", "bake")):
        end = _instant(details.get(key))
        if end is None or not running or (label == "bake" and running[-1].name != "bake"):
            continue
        paused_at = None
        if details.get("paused"):
            pauses = [a.at for a in state.actions if a.action == "pause"]
            paused_at = _aware(pauses[-1]) if pauses else now
        found.append(Timer(label, _aware(running[-1].started_at), end, paused_at))
    for gate in state.open_gates:
        found.append(Timer(f"gate {gate.gate_id} deadline", _aware(gate.opened_at), _aware(gate.deadline)))
    if state.freeze is not None:
        found.append(Timer(f"freeze {state.freeze.window!r} ends", _aware(state.freeze.starts_at),
                           _aware(state.freeze.ends_at)))
    return found


def thresholds(details: dict[str, Any]) -> dict[str, str]:
    found: dict[str, str] = {}
    for key in ("last_verdict", "bake_verdict"):
        verdict = details.get(key)
        if isinstance(verdict, dict):
            for metric in verdict.get("metrics") or []:
                if isinstance(metric, dict) and metric.get("metric") and metric.get("condition"):
                    found[metric["metric"]] = str(metric["condition"])
    declared = details.get("thresholds")
    if isinstance(declared, dict):
        found.update({str(k): str(v) for k, v in declared.items()})
    return found


def measurement_rows(state: RunbookStatus) -> list[MeasurementRow]:
    limits = thresholds(state.details)
    rows = []
    for m in state.details.get("recent_measurements") or []:
        if not isinstance(m, dict):
            continue
        metric = str(m.get("metric", "?"))
        value = _number(m.get("value"))
        if m.get("message") and m.get("phase") in ("Error", "Inconclusive"):
            value += f" ({m['message']})"
        rows.append(MeasurementRow(_instant(m.get("at")), metric, value, limits.get(metric, ""), str(m.get("phase", ""))))
    return rows


def _weight(details: dict[str, Any]) -> int | None:
    weight = details.get("current_weight")
    return weight if isinstance(weight, int) else None


def head_rows(state: RunbookStatus, now: datetime) -> list[tuple[str, str]]:
    rows = [
        ("runbook", f"{state.runbook} on {state.target}" + (f" ({state.environment})" if state.environment else "")),
        ("status", f"{state.status}: {state.stage}"),
        ("requested by", state.requested_by),
    ]
    if state.freeze is not None:
        glass = "break glass: approve the break-glass gate with a reason" if state.freeze.break_glass else \
            "no break-glass approval in this window"
        rows.append(("freeze", f"{state.freeze.line()}; {glass}"))
    if state.steps:
        rows.append(("started", moment(_aware(state.steps[0].started_at), now)))
    details = state.details
    if isinstance(details.get("step_index"), int) and isinstance(details.get("steps"), int):
        where = f"step {min(details['step_index'] + 1, details['steps'])} of {details['steps']}: {details.get('step', '')}"
        if details.get("phase"):
            where += f" ({details['phase']})"
        rows.append(("plan", where))
    extended, cap = _duration(details.get("extended")), _duration(details.get("max_extension"))
    if extended:
        rows.append(("extended", f"{span(extended)}" + (f" of at most {span(cap)}" if cap is not None else "")))
    if state.continued:
        rows.append(("continued", f"{state.continued} time(s) as new"))
    return rows


def event_lines(state: RunbookStatus, now: datetime) -> list[str]:
    """Approvals, decisions, refusals and steering, oldest first."""
    events: list[tuple[datetime, str]] = []
    for gate in [*state.gates, *state.open_gates]:
        for a in gate.approvals:
            events.append((_aware(a.at), f"gate {gate.gate_id}: {audit_line(a)}"))
        if gate.decided_at is not None and gate.decision != "pending":
            by = f" by {gate.decided_by}" if gate.decided_by else ""
            events.append((_aware(gate.decided_at), f"gate {gate.gate_id} {gate.decision}{by}" +
                           (f": {gate.reason}" if gate.reason else "")))
    for r in state.refused:
        events.append((_aware(r.at), f"refused {r.action} of gate {r.gate_id} by {r.who or '?'} via {r.via}: {r.reason}"))
    for act in state.actions:
        note = f" ({act.note})" if act.note else ""
        refused = "" if act.accepted else " [not applied]"
        events.append((_aware(act.at), f"{act.action} by {act.by}" + (f": {act.reason}" if act.reason else "") + note + refused))
    events.sort(key=lambda e: e[0])
    return [f"{moment(at, now)} {text}" for at, text in events]


def gate_lines(state: RunbookStatus, gate: GateView, now: datetime) -> list[str]:
    who = ", ".join([*gate.eligible, *(f"members of {g}" for g in gate.eligible_groups)]) or "nobody"
    lines = [f"{gate.title} (gate {gate.gate_id})"]
    lines += [line for line in gate.summary.splitlines() if line.strip()]
    if gate.binding:
        lines.append(f"approves: {gate.binding}")
    lines.append(f"approvers: {who}; {len(gate.approvals)}/{gate.required_approvals} approvals"
                 + (f"; required groups {', '.join(gate.required_groups)}" if gate.required_groups else ""))
    lines.append(f"opened {moment(_aware(gate.opened_at), now)}; deadline {moment(_aware(gate.deadline), now)}")
    lines += [audit_line(a) for a in gate.approvals]
    return lines


def stage_lines(details: dict[str, Any]) -> list[str]:
    """A release's stages and waves (``details.stages``): each stage's phase, each wave's phase, child run and its
    ending, each check's outcome; empty for other runbooks."""
    lines = []
    for stage in details.get("stages") or []:
        if not isinstance(stage, dict):
            continue
        gate = f", gate {stage['gate_id']}" if stage.get("gate_id") else ""
        lines.append(f"{stage.get('name')} ({stage.get('environment')}, {stage.get('strategy')}): "
                     f"{stage.get('phase')}{gate}")
        for wave in stage.get("waves") or []:
            child = wave.get("child_workflow_id") or "-"
            ending = f" {wave['child_status']}" if wave.get("child_status") else ""
            restore = f", restore {wave['restore_workflow_id']}" if wave.get("restore_workflow_id") else ""
            lines.append(f"  {wave.get('wave')}: {wave.get('phase')}  {child}{ending}{restore}")
        for check in stage.get("checks") or []:  # the check step's outcomes (an HTTP smoke, a Kubernetes Job)
            verdict = "passed" if check.get("passed") else "failed"
            lines.append(f"  check {check.get('name')} ({check.get('kind')}, after {check.get('where')}): {verdict}  "
                         f"{check.get('summary', '')}")
    return lines


def other_details(state: RunbookStatus, now: datetime) -> list[tuple[str, str]]:
    """The runbook's other details, complete; a number of seconds (``bake_extended_seconds``) as a duration."""
    rows = []
    for key, value in state.details.items():
        if key in _SHOWN:
            continue
        if key.endswith("_seconds") and isinstance(value, (int, float)) and not isinstance(value, bool):
            rows.append((key.removesuffix("_seconds"), span(value)))
        else:
            rows.append((key, _shown(value, now)))
    return rows


def _bar(fraction: float, width: int = 30) -> str:
    filled = int(round(fraction * width))
    return "[" + "#" * filled + "-" * (width - filled) + f"] {fraction * 100:3.0f}%"


# ----------------------------------------------------------------------------------------------- plain
def plain_lines(state: RunbookStatus, now: datetime) -> list[str]:
    """The whole view as plain lines: nothing wrapped, nothing cut, no colour (for pipes and logs)."""
    lines = [f"{k}: {v}" for k, v in head_rows(state, now)]
    weight = _weight(state.details)
    if weight is not None:
        lines.append(f"canary weight: {_bar(weight / 100)}")
    rows = plan_rows(state, now)
    if rows:
        lines.append("steps:")
        for row in rows:
            mark = ">" if row.current else " "
            lines.append(f"  {mark} {row.status:<11} {row.name}" + (f" [{row.took}]" if row.took else "")
                         + (f": {row.detail}" if row.detail else ""))
    for timer in timers(state, now):
        lines.append(f"{timer.label}: {_bar(timer.fraction(now))} {timer.left(now)}")
    measured = measurement_rows(state)
    if measured:
        total = state.details.get("measurements_total")
        lines.append("measurements" + (f" (last {len(measured)} of {total})" if total else "") + ":")
        for m in measured:
            at = moment(m.at, now) if m.at else "-"
            lines.append(f"  {at}  {m.metric} = {m.value}  threshold {m.threshold or '-'}  {m.verdict}")
    several = len(state.open_gates) > 1
    for gate in state.open_gates:
        lines.append("waiting for approval: " + "\n  ".join(gate_lines(state, gate, now)))
        lines.append(f"  approve: {approve_hint(state.workflow_id, gate, several)}")
    events = event_lines(state, now)
    if events:
        lines.append("audit trail:")
        lines += [f"  {e}" for e in events[-10:]]
    for failure in state.notification_failures[-3:]:
        lines.append(f"notification failed: {failure}")
    stages = stage_lines(state.details)
    if stages:
        lines.append("stages:")
        lines += [f"  {line}" for line in stages]
    extra = other_details(state, now)
    if extra:
        lines.append("details:")
        lines += [f"  {k}: {v}" for k, v in extra]
    return "\n".join(lines).splitlines()


def change_lines(previous: RunbookStatus | None, state: RunbookStatus, now: datetime) -> list[str]:
    """What changed between two answers, one plain line each (for ``watch`` on a pipe); the first answer in full."""
    if previous is None:
        return plain_lines(state, now)
    stamp = now.strftime("%H:%M:%S")
    lines = []
    if (previous.status, previous.stage) != (state.status, state.stage):
        lines.append(f"{stamp} {state.status}: {state.stage}")
    before = {(s.name, s.started_at): s.status for s in previous.steps}
    for step in state.steps:
        if before.get((step.name, step.started_at)) != step.status:
            took = f" after {span((step.finished_at or now) - _aware(step.started_at))}" if step.finished_at else ""
            lines.append(f"{stamp} step {step.name}: {step.status}{took}" + (f": {step.detail}" if step.detail else ""))
    old_weight, weight = _weight(previous.details), _weight(state.details)
    if weight is not None and weight != old_weight:
        lines.append(f"{stamp} canary weight {weight}%")
    old_timers = {(t.label, t.end) for t in timers(previous, now)}
    for timer in timers(state, now):
        if (timer.label, timer.end) not in old_timers:
            lines.append(f"{stamp} {timer.label}: {timer.left(now)}")
    seen = {(m.metric, m.at) for m in measurement_rows(previous)}
    for m in measurement_rows(state):
        if (m.metric, m.at) not in seen:
            lines.append(f"{stamp} measured {m.metric} = {m.value} (threshold {m.threshold or '-'}): {m.verdict}")
    opened = {g.gate_id for g in previous.open_gates}
    several = len(state.open_gates) > 1
    for gate in state.open_gates:
        if gate.gate_id not in opened:
            lines.append(f"{stamp} waiting for approval: " + "; ".join(gate_lines(state, gate, now)))
            lines.append(f"{stamp} approve: {approve_hint(state.workflow_id, gate, several)}")
    old_events = set(event_lines(previous, now))
    lines += [f"{stamp} {e}" for e in event_lines(state, now) if e not in old_events]
    return lines


# ----------------------------------------------------------------------------------------------- rich
def approve_commands(state: RunbookStatus) -> list[str]:
    """The shell-quoted approve command of each open gate."""
    several = len(state.open_gates) > 1
    return [approve_hint(state.workflow_id, gate, several) for gate in state.open_gates]


def rich_view(state: RunbookStatus, now: datetime, *, commands: bool = True, live: bool = False) -> RenderableType:
    """The whole view for a terminal. ``commands=False``: without the approve commands in the gate panels, for a
    caller that prints them after the view on lines of their own (a panel wraps a long command: bad to copy).
    ``live``: the current step's status turns like a spinner (it moves at every redraw, even through a long step
    with no clock of its own)."""
    head = Table.grid(padding=(0, 2))
    for key, value in head_rows(state, now):
        head.add_row(Text(key, style="bold"), Text(value))
    parts: list[RenderableType] = [head]

    clocks = Table.grid(padding=(0, 1))
    weight = _weight(state.details)
    if weight is not None:
        clocks.add_row(Text("canary weight", style="bold"), ProgressBar(total=100, completed=weight, width=30),
                       Text(f"{weight}%"))
    for timer in timers(state, now):
        left_style = "yellow" if timer.paused else ""  # "": Text's default, no style
        clocks.add_row(Text(timer.label, style="bold"),
                       ProgressBar(total=1000, completed=int(timer.fraction(now) * 1000), width=30, pulse=timer.paused),
                       Text(f"{timer.fraction(now) * 100:.0f}%  {timer.left(now)}", style=left_style))
    if clocks.row_count:
        parts.append(clocks)

    rows = plan_rows(state, now)
    if rows:
        steps = Table(title="plan", title_justify="left", expand=False)
        steps.add_column("", no_wrap=True)
        steps.add_column("step")
        steps.add_column("status", no_wrap=True)
        steps.add_column("took", no_wrap=True)
        steps.add_column("detail", overflow="fold")
        for row in rows:
            style = "reverse" if row.current else ("dim" if row.status == "next" else None)
            status = row.status + (f" {_SPINNER[int(now.timestamp() * 4) % len(_SPINNER)]}" if live and row.current else "")
            steps.add_row("▶" if row.current else "", row.name,
                          Text(status, style=_STEP_STYLE.get(row.status, "yellow")), row.took, row.detail, style=style)
        parts.append(steps)

    measured = measurement_rows(state)
    if measured:
        total = state.details.get("measurements_total")
        table = Table(title="measurements" + (f" (last {len(measured)} of {total})" if total else ""),
                      title_justify="left", expand=False)
        for column in ("at", "metric", "value", "threshold", "verdict"):
            table.add_column(column, overflow="fold")
        for m in measured:
            table.add_row(moment(m.at, now) if m.at else "-", m.metric, m.value, m.threshold or "-",
                          Text(m.verdict, style=_VERDICT_STYLE.get(m.verdict, "")))
        parts.append(table)

    several = len(state.open_gates) > 1
    for gate in state.open_gates:
        body = Text("\n".join(gate_lines(state, gate, now)))
        if commands:
            body.append("\napprove: ", style="bold")
            body.append(approve_hint(state.workflow_id, gate, several))
        parts.append(Panel(body, title="waiting for approval", title_align="left", border_style="yellow", expand=False))

    events = event_lines(state, now)
    if events:
        parts.append(Text("audit trail", style="bold"))
        parts += [Text("  " + e, overflow="fold") for e in events[-8:]]
    for failure in state.notification_failures[-3:]:
        parts.append(Text(f"notification failed: {failure}", style="red"))
    stages = stage_lines(state.details)
    if stages:
        parts.append(Panel(Text("\n".join(stages), overflow="fold"), title="stages", title_align="left", expand=False))
    extra = other_details(state, now)
    if extra:
        grid = Table.grid(padding=(0, 2))
        for key, value in extra:
            grid.add_row(Text(key, style="bold"), Text(value, overflow="fold"))
        parts.append(Panel(grid, title="details", title_align="left", expand=False))
    return Group(*parts)

