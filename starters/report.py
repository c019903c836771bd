"""`runbook report`: one self-contained HTML page of a run, finished or running, with pictures.

What it draws, by runbook:
- canary: the canary weight over time, and each metric's values against its threshold, failed samples marked;
- blue-green: the bake analysis's metrics against their thresholds (its http-health: the % of a tick's health requests
  that failed), failed samples marked;
- failover / failback: the RTO timeline (each step from outage confirmed to verified) against the RTO target;
- restore drill: RPO and RTO achieved against their targets, and each check;
- provisioning (and every other runbook): its steps on a timeline;
and for all of them the parameters (as YAML), the steps and the audit trail (gates and approvals, steering actions,
refused attempts).

Where the data comes from: the run's history (its input, every activity's input and result with the server's time,
its result) and, while the run is open and a worker answers, its ``status`` query (and the canary's ``canary``
query). Nothing is added to the workflows' state for the report. Charts are Plotly figures; plotly.js is embedded in
the page (no CDN, no network), so the file opens anywhere, offline, and can be attached to a message. The page embeds
plotly.js's "basic" bundle (scatter, bar and pie: every trace the report draws; 1.2 MB, starters/plotly-basic.min.js,
from npm's plotly.js-basic-dist-min, MIT) of the plotly.js version plotly.py was built for, not the full one plotly.py
ships (4.6 MB): a browser parses a quarter of the JavaScript to open a report.
"""

from __future__ import annotations

import functools
import html
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterable

import plotly.graph_objects as go
import plotly.io as pio
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHistory
from temporalio.converter import DataConverter
from temporalio.service import RPCError

from core.duration import format_duration, parse_duration
from starters.client import parameters_yaml as yaml_of

QUERY_TIMEOUT = timedelta(seconds=5)
FAILED_PHASES = ("Failed", "Error", "Inconclusive")


@dataclass
class Call:
    """One activity (or local activity) of the run: its type, input, result or failure, and the server's times."""

    activity: str
    input: Any = None
    result: Any = None
    failure: str | None = None
    scheduled_at: datetime | None = None
    finished_at: datetime | None = None


@dataclass
class RunData:
    workflow_id: str
    run_id: str
    workflow_type: str
    started_at: datetime
    closed_at: datetime | None = None
    last_event_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))  # "now" on the run's clock
    execution: str = "Running"  # Running, Completed, Failed, ...
    input: dict[str, Any] = field(default_factory=dict)
    result: dict[str, Any] | None = None
    status: dict[str, Any] | None = None  # the status query's answer, while a worker answers it
    canary: dict[str, Any] | None = None  # the canary query's answer
    calls: list[Call] = field(default_factory=list)

    @property
    def state(self) -> dict[str, Any]:
        """What the run says about itself: the live status, else the result (a finished run)."""
        if self.status is not None:
            return {**(self.result or {}), **(self.status.get("details") or {}), **self.status}
        return self.result or {}

    @property
    def runbook(self) -> str:
        return str(self.state.get("runbook") or (self.input.get("meta") or {}).get("runbook") or self.workflow_type)

    def results(self, activity: str) -> list[tuple[datetime, Any]]:
        return [(c.finished_at, c.result) for c in self.calls
                if c.activity == activity and c.result is not None and c.finished_at is not None]


# ----------------------------------------------------------------------------- reading a run
def _ts(proto_ts: Any) -> datetime:
    return proto_ts.ToDatetime().replace(tzinfo=timezone.utc)


async def _decode(converter: DataConverter, payloads: Any) -> Any:
    if not payloads:
        return None
    values = await converter.decode(list(payloads))
    return values[0] if len(values) == 1 else values


async def from_history(history: WorkflowHistory, converter: DataConverter) -> RunData:
    """Everything the report needs that the history holds (decoded with the run's data converter)."""
    first = history.events[0].workflow_execution_started_event_attributes
    data = RunData(workflow_id=history.workflow_id, run_id=first.original_execution_run_id,
                   workflow_type=first.workflow_type.name, started_at=_ts(history.events[0].event_time))
    data.input = await _decode(converter, first.input.payloads) or {}
    scheduled: dict[int, Call] = {}
    for event in history.events:
        at = data.last_event_at = _ts(event.event_time)
        kind = event.event_type
        if kind == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            attrs = event.activity_task_scheduled_event_attributes
            new = Call(attrs.activity_type.name, await _decode(converter, attrs.input.payloads), scheduled_at=at)
            scheduled[event.event_id] = new
            data.calls.append(new)
        elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            done = event.activity_task_completed_event_attributes
            if (call := scheduled.get(done.scheduled_event_id)) is not None:
                call.result, call.finished_at = await _decode(converter, done.result.payloads), at
        elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED:
            failed = event.activity_task_failed_event_attributes
            if (call := scheduled.get(failed.scheduled_event_id)) is not None:
                call.failure, call.finished_at = failed.failure.message, at
        elif kind == EventType.EVENT_TYPE_MARKER_RECORDED:
            marker = event.marker_recorded_event_attributes
            if marker.marker_name != "core_local_activity" or "data" not in marker.details:
                continue
            meta = await _decode(converter, marker.details["data"].payloads) or {}
            result = await _decode(converter, marker.details["result"].payloads) if "result" in marker.details else None
            data.calls.append(Call(meta.get("activity_type", "?"), result=result, scheduled_at=at, finished_at=at,
                                   failure=marker.failure.message if marker.HasField("failure") else None))
        elif kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED:
            data.execution, data.closed_at = "Completed", at
            data.result = await _decode(converter, event.workflow_execution_completed_event_attributes.result.payloads)
        elif kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED:
            failure = event.workflow_execution_failed_event_attributes.failure
            data.execution, data.closed_at = "Failed", at
            details = failure.application_failure_info.details.payloads  # RunFailed carries the run's result
            data.result = await _decode(converter, details) if details else {"status": "Failed", "summary": failure.message}
        elif kind in (EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TERMINATED, EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TIMED_OUT,
                      EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCELED, EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW):
            data.execution, data.closed_at = EventType.Name(kind).removeprefix("EVENT_TYPE_WORKFLOW_EXECUTION_").title(), at
    if not isinstance(data.result, dict):
        data.result = None
    return data


async def collect(client: Client, workflow_id: str, run_id: str | None = None) -> RunData:
    """A run's history, plus its live queries while it is open (a run whose worker is down is drawn from its
    history alone)."""
    handle = client.get_workflow_handle(workflow_id, run_id=run_id)
    history = await handle.fetch_history()
    data = await from_history(history, client.data_converter)
    described = await handle.describe()
    if described.status == WorkflowExecutionStatus.RUNNING:
        for name in ("status", "canary"):
            if name == "canary" and data.workflow_type != "CanaryRamp":
                continue
            try:
                answer = await handle.query(name, rpc_timeout=QUERY_TIMEOUT)
            except (RPCError, Exception):  # no worker, or a query this run does not have: the history suffices
                continue
            setattr(data, name, answer if isinstance(answer, dict) else None)
    return data


# ----------------------------------------------------------------------------- what the charts show
def _time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str) and value:
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    return None


def _seconds(value: Any) -> float | None:
    if value is None or value == "":
        return None
    try:
        return parse_duration(value).total_seconds()
    except ValueError:
        return None


def thresholds(value: Any) -> dict[str, dict[str, Any]]:
    """Every metric spec in the run's input (canary steps, blue-green bake analysis): name -> op, threshold, unit."""
    found: dict[str, dict[str, Any]] = {}
    if isinstance(value, dict):
        success = value.get("success")
        if isinstance(value.get("name"), str) and isinstance(success, dict) and "threshold" in success:
            found[value["name"]] = {"op": success.get("op", "<"), "threshold": success["threshold"],
                                    "unit": value.get("unit", "")}
        for item in value.values():
            found.update({k: v for k, v in thresholds(item).items() if k not in found})
    elif isinstance(value, list):
        for item in value:
            found.update({k: v for k, v in thresholds(item).items() if k not in found})
    return found


def measurements(data: RunData) -> list[dict[str, Any]]:
    """Every metric measurement of the run, stamped with the server's time of the result (as the workflow does)."""
    out: list[dict[str, Any]] = []
    for call in data.calls:
        if call.activity not in ("measure_metric", "measure_metrics") or call.finished_at is None:
            continue
        if call.failure is not None:
            continue
        items = call.result if isinstance(call.result, list) else [call.result]
        out += [{**m, "at": call.finished_at} for m in items if isinstance(m, dict) and "metric" in m]
    return out


def weights(data: RunData) -> list[tuple[datetime, int, str]]:
    """The canary's weight changes: the canary query (live) or the result (finished)."""
    source = (data.canary or {}).get("weights") or (data.result or {}).get("weights") or []
    return [(t, int(w["weight"]), w.get("why", "")) for w in source if (t := _time(w.get("at"))) is not None]


def steps(data: RunData) -> list[dict[str, Any]]:
    return list(data.state.get("steps") or [])


def timeline(data: RunData) -> list[dict[str, Any]]:
    """The steps and the approval gates (a wait for people is part of the time a procedure takes), by start."""
    gates = list(data.state.get("gates") or []) + list(data.state.get("open_gates") or [])
    seen: set[str] = set()
    rows = list(steps(data))
    for gate in gates:
        if gate["gate_id"] in seen:
            continue
        seen.add(gate["gate_id"])
        decision = gate.get("decision") or "waiting"
        rows.append({"name": f"gate {gate['gate_id']}", "started_at": gate.get("opened_at"),
                     "finished_at": gate.get("decided_at"), "detail": gate.get("title", ""),
                     "status": "done" if decision == "approved" else ("running" if decision == "waiting" else "failed")})
    started = [(at, r) for r in rows if (at := _time(r.get("started_at"))) is not None]
    return [r for _, r in sorted(started, key=lambda pair: pair[0])]


# ----------------------------------------------------------------------------- figures
def _layout(fig: go.Figure, title: str, **kw: Any) -> go.Figure:
    kw.setdefault("height", 320)
    fig.update_layout(title=title, template="plotly_white", margin=dict(l=60, r=20, t=50, b=40),
                      legend=dict(orientation="h", y=-0.2), **kw)
    return fig


def weight_figure(data: RunData) -> go.Figure | None:
    changes = weights(data)
    if not changes:
        return None
    end = data.closed_at or data.last_event_at
    xs = [t for t, _, _ in changes] + [max(end, changes[-1][0])]
    ys = [w for _, w, _ in changes] + [changes[-1][1]]
    text = [why for _, _, why in changes] + ["now" if data.closed_at is None else "end"]
    fig = go.Figure(go.Scatter(x=xs, y=ys, name="canary weight %", mode="lines+markers", line_shape="hv",
                               text=text, hovertemplate="%{y}%% %{text}<extra></extra>"))
    return _layout(fig, "Canary weight", yaxis=dict(title="% of traffic", range=[0, 105]))


def metric_figures(data: RunData) -> list[tuple[str, go.Figure]]:
    # the run's input names its templates; the measurements' inputs name metrics the workflow built (blue-green's
    # http-health, from health_checks and health_failure_limit)
    limits = thresholds([data.input, *(c.input for c in data.calls if c.activity in ("measure_metric", "measure_metrics"))])
    by_metric: dict[str, list[dict[str, Any]]] = {}
    for m in measurements(data):
        by_metric.setdefault(m["metric"], []).append(m)
    figures = []
    for name, samples in by_metric.items():
        fig = go.Figure()
        fig.add_trace(go.Scatter(x=[m["at"] for m in samples], y=[m.get("value") for m in samples], name=name,
                                 mode="lines+markers", text=[m.get("message", "") for m in samples]))
        if any(m.get("baseline") is not None for m in samples):  # a compared metric: stable over the same windows
            fig.add_trace(go.Scatter(x=[m["at"] for m in samples], y=[m.get("baseline") for m in samples], name="stable",
                                     mode="lines+markers", line=dict(color="#2ca02c")))
        bad = [m for m in samples if m.get("phase") in FAILED_PHASES]
        if bad:
            fig.add_trace(go.Scatter(x=[m["at"] for m in bad], y=[m.get("value") if m.get("value") is not None else 0
                                                                  for m in bad],
                                     name="failed samples", mode="markers", text=[m.get("phase") for m in bad],
                                     marker=dict(color="#d62728", size=12, symbol="x")))
        limit = limits.get(name)
        title = name
        if limit is not None:
            xs = [samples[0]["at"], samples[-1]["at"]]
            fig.add_trace(go.Scatter(x=xs, y=[limit["threshold"]] * 2, mode="lines", line=dict(dash="dash", color="#888"),
                                     name=f"threshold ({limit['op']} {limit['threshold']:g}{limit['unit'] and ' ' + limit['unit']})"))
            title = f"{name}: success when value {limit['op']} {limit['threshold']:g} {limit['unit']}".rstrip()
        figures.append((name, _layout(fig, title, yaxis=dict(title=limit["unit"] if limit else ""))))
    return figures


def timeline_figure(data: RunData, title: str, target_s: float | None = None,
                    target_name: str = "target") -> go.Figure | None:
    """The steps and gates as bars from the run's first step, in seconds; a dashed line at the target when given."""
    records = timeline(data)
    if not records:
        return None
    begun = [_time(s["started_at"]) or data.started_at for s in records]
    t0, now = min(begun), data.closed_at or data.last_event_at
    starts = [(b - t0).total_seconds() for b in begun]
    ends = [max((_time(s.get("finished_at")) or now) - t0, b - t0).total_seconds() for s, b in zip(records, begun, strict=True)]
    colours = {"done": "#2ca02c", "failed": "#d62728", "running": "#1f77b4", "skipped": "#aaa", "compensated": "#ff7f0e"}
    labels = [f"{i + 1}. {s['name']}" for i, s in enumerate(records)]
    fig = go.Figure(go.Bar(
        y=labels, x=[max(e - s, 0.001) for s, e in zip(starts, ends, strict=True)], base=starts, orientation="h",
        name="steps", marker_color=[colours.get(s.get("status", ""), "#1f77b4") for s in records],
        text=[f"{s.get('status')}: {format_duration(timedelta(seconds=round(e - b)))}" for s, b, e in
              zip(records, starts, ends, strict=True)],
        hovertext=[s.get("detail", "") for s in records]))
    if target_s is not None:
        fig.add_trace(go.Scatter(x=[target_s, target_s], y=[labels[0], labels[-1]], mode="lines", name=target_name,
                                 line=dict(color="#d62728", dash="dash", width=2)))
    height = max(240, 40 * len(records) + 120)
    return _layout(fig, title, height=height, xaxis=dict(title="seconds since the first step"),
                   yaxis=dict(autorange="reversed"))


def rto_seconds(data: RunData) -> tuple[float | None, float | None]:
    state = data.state
    achieved = state.get("rto_seconds")
    if achieved is None and data.closed_at is None and state.get("elapsed"):
        achieved = _seconds(state.get("elapsed"))
    target = state.get("rto_target_seconds")
    if target is None:
        target = _seconds(state.get("rto_target")) or _seconds((data.input.get("rto_target")))
    return achieved, target


def restore_figure(data: RunData) -> go.Figure | None:
    report = (data.result or {}).get("report") or {}
    state = data.state
    rows = []
    for what in ("rpo", "rto"):
        achieved = _seconds(report.get(f"{what}_achieved", state.get(f"{what}_achieved")))
        target = _seconds(report.get(f"{what}_target", data.input.get(f"{what}_target")))
        rows.append((what.upper(), achieved, target))
    if all(a is None and t is None for _, a, t in rows):
        return None
    fig = go.Figure()
    fig.add_trace(go.Bar(x=[r[0] for r in rows], y=[r[1] or 0 for r in rows], name="achieved",
                         text=[format_duration(timedelta(seconds=r[1])) if r[1] is not None else "not yet" for r in rows]))
    fig.add_trace(go.Bar(x=[r[0] for r in rows], y=[r[2] or 0 for r in rows], name="target",
                         text=[format_duration(timedelta(seconds=r[2])) if r[2] is not None else "-" for r in rows]))
    return _layout(fig, "Restore drill: RPO and RTO against target", barmode="group",
                   yaxis=dict(title="seconds", type="log"))


def checks_figure(data: RunData) -> go.Figure | None:
    report = (data.result or {}).get("report") or {}
    checks = report.get("checks") or data.state.get("checks") or []
    if not checks:
        return None
    fig = go.Figure(go.Bar(
        x=[1] * len(checks), y=[c["name"] for c in checks], orientation="h", name="checks",
        marker_color=["#2ca02c" if c.get("passed") else "#d62728" for c in checks],
        text=[("passed: " if c.get("passed") else "FAILED: ") + str(c.get("detail", "")) for c in checks],
        textposition="inside", insidetextanchor="start"))
    passed = sum(1 for c in checks if c.get("passed"))
    return _layout(fig, f"Restore checks: {passed}/{len(checks)} passed", height=max(200, 36 * len(checks) + 100),
                   xaxis=dict(visible=False, range=[0, 1]), yaxis=dict(autorange="reversed"))


def figures(data: RunData) -> list[tuple[str, go.Figure]]:
    """The run's charts, by runbook kind, as (id, figure)."""
    kind = data.workflow_type
    out: list[tuple[str, go.Figure | None]] = []
    if kind == "CanaryRamp":
        out.append(("chart-weight", weight_figure(data)))
        out += [(f"chart-metric-{name}", fig) for name, fig in metric_figures(data)]
    elif kind == "BlueGreenCutover":  # the bake's metrics, its HTTP health among them
        out += [(f"chart-metric-{name}", fig) for name, fig in metric_figures(data)]
    elif kind in ("RegionFailover", "RegionFailback"):
        achieved, target = rto_seconds(data)
        said = f"RTO {format_duration(timedelta(seconds=round(achieved)))}" if achieved is not None else "RTO not yet"
        aim = f" against target {format_duration(timedelta(seconds=target))}" if target is not None else ""
        out.append(("chart-timeline", timeline_figure(data, f"RTO timeline: {said}{aim}", target, "RTO target")))
    elif kind == "RestoreDrill":
        out += [("chart-rpo-rto", restore_figure(data)), ("chart-checks", checks_figure(data))]
    if kind not in ("RegionFailover", "RegionFailback"):
        out.append(("chart-steps", timeline_figure(data, "Steps")))
    return [(div_id, fig) for div_id, fig in out if fig is not None]


# ----------------------------------------------------------------------------- the page
def parameters_yaml(data: RunData) -> str:
    """The run's parameters as YAML (the input without the runbook plumbing), written as the web UI's details are."""
    params = {k: v for k, v in data.input.items() if k not in ("meta", "carry") and v is not None}
    return yaml_of(params)


def audit_trail(data: RunData) -> list[tuple[str, str, str]]:
    """(time, what, detail) of every decision people took on the run, oldest first."""
    state = data.state
    rows: list[tuple[str, str, str]] = []
    gates = list(state.get("gates") or []) + list(state.get("open_gates") or [])
    for gate in gates:
        rows.append((gate.get("opened_at", ""), f"gate {gate['gate_id']} opened",
                     f"{gate.get('title', '')}: {gate.get('summary', '')}".strip(": ")))
        for a in gate.get("approvals") or []:
            how = "" if a.get("verified") else " (UNVERIFIED: typed name)"
            rows.append((a.get("at", ""), f"approved by {a.get('approver')}{how}",
                         f"gate {gate['gate_id']} via {a.get('via')}: {a.get('reason', '')}".rstrip(": ")))
        if gate.get("decision") and gate.get("decision") != "approved" or (gate.get("decided_at") and not gate.get("approvals")):
            rows.append((gate.get("decided_at") or "", f"gate {gate['gate_id']} {gate.get('decision')}",
                         f"by {gate.get('decided_by') or '-'}: {gate.get('reason', '')}"))
    for act in state.get("actions") or []:
        rows.append((act.get("at", ""), f"{act.get('action')} by {act.get('by')}"
                     + ("" if act.get("accepted", True) else " (refused)"),
                     " ".join(filter(None, [act.get("reason"), act.get("note")]))))
    for ref in state.get("refused") or []:
        rows.append((ref.get("at", ""), f"refused {ref.get('action')} by {ref.get('who') or '?'} via {ref.get('via')}",
                     ref.get("reason", "")))
    return sorted(rows, key=lambda r: str(r[0]))


def _table(header: Iterable[str], rows: Iterable[Iterable[Any]], css: str = "") -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{css}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _short(value: Any) -> str:
    t = _time(value)
    return f"{t:%Y-%m-%d %H:%M:%S} UTC" if t else str(value or "")


CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;width:100%;font-size:.9em}td,th{border:1px solid #ddd;padding:4px 6px;text-align:left;
vertical-align:top}th{background:#f5f5f5}pre{background:#f7f7f7;padding:8px;overflow:auto;font-size:.85em}
.status{font-weight:bold}.Succeeded{color:#2ca02c}.RolledBack,.Failed,.Held{color:#d62728}.chart{margin:1em 0}"""


PLOTLY_JS = Path(__file__).with_name("plotly-basic.min.js")


@functools.cache
def plotly_js() -> str:
    """plotly.js's basic bundle (scatter, bar, pie), read once per process."""
    return PLOTLY_JS.read_text(encoding="utf-8")


def render(data: RunData, *, generated_at: datetime | None = None) -> str:
    """The HTML page: everything embedded (plotly.js, the data), nothing fetched when it opens."""
    state = data.state
    status = str(state.get("status") or data.execution)
    generated = generated_at or datetime.now(timezone.utc)
    charts = [pio.to_html(fig, include_plotlyjs=False, full_html=False, div_id=div_id,
                          config={"displaylogo": False, "responsive": True})
              for div_id, fig in figures(data)]
    facts = [
        ("runbook", data.runbook), ("target", state.get("target") or (data.input.get("meta") or {}).get("target", "")),
        ("workflow id", data.workflow_id), ("run id", data.run_id), ("status", status),
        ("stage", state.get("stage", "")), ("requested by", (data.input.get("meta") or {}).get("requested_by", "")),
        ("started", _short(data.started_at)), ("ended", _short(data.closed_at) if data.closed_at else "still running"),
        ("summary", state.get("summary") or state.get("reason") or ""),
    ]
    step_rows = [(s.get("name"), s.get("status"), _short(s.get("started_at")), _short(s.get("finished_at")),
                  s.get("detail", "")) for s in steps(data)]
    audit = audit_trail(data)
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        f"<title>{html.escape(data.runbook)} {html.escape(data.workflow_id)}: {html.escape(status)}</title>",
        f"<style>{CSS}</style><script>{plotly_js()}</script></head><body>",
        f"<h1>{html.escape(data.runbook)} on {html.escape(str(facts[1][1]))}: "
        f'<span class="status {html.escape(status)}">{html.escape(status)}</span></h1>',
        _table(("run", ""), facts, "facts"),
        "<h2>Charts</h2>" if charts else "",
        *[f'<div class="chart">{c}</div>' for c in charts],
        "<h2>Steps</h2>",
        _table(("step", "status", "started", "finished", "detail"), step_rows) if step_rows else "<p>No step yet.</p>",
        "<h2>Audit trail</h2>",
        _table(("when", "what", "detail"), [(_short(t), w, d) for t, w, d in audit]) if audit
        else "<p>No approval, steering action or refusal.</p>",
        "<h2>Parameters</h2>",
        f"<pre>{html.escape(parameters_yaml(data))}</pre>",
        f"<p><small>Generated {generated:%Y-%m-%d %H:%M:%S} UTC by <code>runbook report</code> from the run's "
        "history{}.</small></p>".format(" and its live status" if data.status else ""),
        "</body></html>",
    ]
    return "\n".join(parts)


async def write_report(client: Client, workflow_id: str, path: str | None = None) -> tuple[str, RunData]:
    """Collect and render a run's report into ``path`` (default ``report-<workflow id>.html``); returns the path."""
    data = await collect(client, workflow_id)
    target = path or "report-" + "".join(c if c.isalnum() or c in "-_." else "_" for c in workflow_id) + ".html"
    with open(target, "w", encoding="utf-8") as fh:
        fh.write(render(data))
    return target, data
