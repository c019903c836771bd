"""The runbooks' own metrics, emitted from workflow code through ``workflow.metric_meter()``.

The SDK drops metric calls while a workflow replays, so each value is recorded once per real event however often
a history is replayed (a worker restart, a cache eviction): replay-safe and deterministic. The worker's runtime
exports them on its Prometheus endpoint beside the SDK's ``temporal_*`` metrics; the meter adds ``namespace``,
``task_queue`` and ``workflow_type`` to every series.

``METRICS`` is the list of exported names: the Grafana dashboard (deploy/grafana) may query only these (a test
checks it), and ``HISTOGRAM_BUCKETS`` are the buckets the worker's runtime uses for the two histograms.
Label values are bounded: runbook names, outcomes (the seven statuses), step kinds (see ``step_kind``), gate
decisions and policy actions, and the runs' targets for the last-value gauges.
"""

from __future__ import annotations

import re
from datetime import timedelta

from temporalio import workflow

RUNS_STARTED = "runbook_runs_started_total"
RUNS_ENDED = "runbook_runs_ended_total"
ROLLBACKS = "runbook_rollbacks_total"
APPROVAL_WAIT = "runbook_approval_wait_seconds"
STEP_DURATION = "runbook_step_duration_seconds"
CANARY_WEIGHT = "runbook_canary_weight_percent"
GATE_TIMEOUTS = "runbook_gate_timeouts_total"
GATE_ESCALATIONS = "runbook_gate_escalations_total"
FAILOVER_RTO = "runbook_failover_rto_seconds"
RESTORE_RPO = "runbook_restore_rpo_seconds"
RESTORE_RTO = "runbook_restore_rto_seconds"

METRICS = [RUNS_STARTED, RUNS_ENDED, ROLLBACKS, APPROVAL_WAIT, STEP_DURATION, CANARY_WEIGHT, GATE_TIMEOUTS,
           GATE_ESCALATIONS, FAILOVER_RTO, RESTORE_RPO, RESTORE_RTO]

HISTOGRAM_BUCKETS: dict[str, list[float]] = {
    # people: half a minute to a day
    APPROVAL_WAIT: [30, 60, 300, 900, 1800, 3600, 7200, 14400, 43200, 86400],
    # steps: an API call to a long bake
    STEP_DURATION: [0.5, 1, 5, 15, 30, 60, 300, 900, 1800, 3600, 7200, 21600],
}

_STEP_PREFIX = re.compile(r"^step \d+/\d+:\s*")
_WORD = re.compile(r"[a-z][a-z-]*")


def step_kind(name: str) -> str:
    """A step's kind for the duration label: its name without numbers or targets, at most two words
    ("step 2/7: set weight 25 %" -> "set weight", "restore" -> "restore", "wait for instance" -> "wait for")."""
    words = _WORD.findall(_STEP_PREFIX.sub("", name.lower()))
    return " ".join(words[:2]) or "step"


def _seconds(value: timedelta | float | None) -> float | None:
    if value is None:
        return None
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


class RunbookMetrics:
    """The metrics of one run; every method is safe to call from workflow code (and a no-op in replay)."""

    def __init__(self, runbook: str, target: str) -> None:
        self.runbook = runbook
        self.target = target

    @staticmethod
    def _meter():
        return workflow.metric_meter()

    def run_started(self) -> None:
        self._meter().create_counter(RUNS_STARTED, "runbook runs started").add(1, {"runbook": self.runbook})

    def run_ended(self, outcome: str, *, criterion: str | None = None) -> None:
        meter = self._meter()
        meter.create_counter(RUNS_ENDED, "runbook runs ended, by outcome").add(
            1, {"runbook": self.runbook, "outcome": outcome})
        if outcome == "RolledBack":
            meter.create_counter(ROLLBACKS, "runs that rolled back, by the criterion that failed").add(
                1, {"runbook": self.runbook, "criterion": criterion or "step failed"})

    @staticmethod
    def criterion_of(result: object) -> str | None:
        """The criterion a rolled-back run failed: the canary's ``failed_criterion``, else the deciding metric of a
        failed analysis verdict (blue-green's ``bake_verdict``, its pre-promotion analysis or its bake)."""
        if criterion := getattr(result, "failed_criterion", None):
            return str(criterion)
        verdict = getattr(result, "bake_verdict", None)
        metric = getattr(verdict, "metric", None)
        if not metric or getattr(verdict, "phase", None) == "Successful":
            return None
        condition = getattr(verdict, "condition", None)
        return f"{metric} {condition}" if condition else str(metric)

    def step_finished(self, name: str, duration: timedelta) -> None:
        self._meter().create_histogram_float(STEP_DURATION, "duration of a runbook step", "s").record(
            max(duration.total_seconds(), 0.0), {"runbook": self.runbook, "step": step_kind(name)})

    def gate_closed(self, decision: str, waited: timedelta) -> None:
        self._meter().create_histogram_float(APPROVAL_WAIT, "time from a gate's opening to its decision", "s").record(
            max(waited.total_seconds(), 0.0), {"runbook": self.runbook, "decision": decision})

    def gate_timed_out(self, action: str) -> None:
        self._meter().create_counter(GATE_TIMEOUTS, "gates that reached their timeout, by the policy's action").add(
            1, {"runbook": self.runbook, "action": action})

    def gate_escalated(self) -> None:
        self._meter().create_counter(GATE_ESCALATIONS, "gates escalated after their timeout").add(
            1, {"runbook": self.runbook})

    def canary_weight(self, service: str, weight: float) -> None:
        self._meter().create_gauge_float(CANARY_WEIGHT, "the canary's current share of traffic", "%").set(
            float(weight), {"service": service})

    def failover_rto(self, seconds: timedelta | float | None) -> None:
        self._last(FAILOVER_RTO, "recovery time achieved by the last failover of a target", seconds)

    def restore_objectives(self, rpo: timedelta | float | None, rto: timedelta | float | None) -> None:
        self._last(RESTORE_RPO, "data loss window of the last restore drill of a target", rpo)
        self._last(RESTORE_RTO, "restore time of the last restore drill of a target", rto)

    def _last(self, name: str, description: str, value: timedelta | float | None) -> None:
        seconds = _seconds(value)
        if seconds is not None:
            self._meter().create_gauge_float(name, description, "s").set(seconds, {"target": self.target})

    def from_result(self, result: object) -> None:
        """The last-value gauges a run's result carries (failover RTO, restore RPO/RTO, the canary's final weight)."""
        if (rto := getattr(result, "rto_seconds", None)) is not None:
            self.failover_rto(rto)
        report = getattr(result, "report", None)
        if report is not None and hasattr(report, "rpo_achieved"):
            self.restore_objectives(report.rpo_achieved, getattr(report, "rto_achieved", None))
        weight, service = getattr(result, "final_weight", None), getattr(result, "service", None)
        if weight is not None and service:
            self.canary_weight(service, weight)
