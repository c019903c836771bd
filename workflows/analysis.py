"""The analysis loop: a building block for workflows (canary ramp, blue-green), not a workflow itself.

Usage, inside a workflow::

    run = AnalysisRun(template, args={"service": "checkout", "version": "v2"},
                      deadline=lambda: self.step_end,          # re-read at every wake-up: extend just moves it
                      hold=lambda: self.paused,                # while True the run does not end (measuring goes on)
                      stop=lambda: self.aborting or self.promote_requested,   # return at once, phase "Running"
                      on_measurement=self.remember)            # called with every Measurement (for queries)
    verdict = await run.run()          # AnalysisVerdict: Successful | Failed | Inconclusive | Error | Running(stopped)
    if verdict.phase in ("Inconclusive", "Error") and a_person_says_continue:
        run.acknowledge()              # forget the counts so far (measurements stay in run.measurements)
        verdict = await run.run()      # and carry on until the (possibly moved) deadline

Semantics:
- every metric is measured on its own interval, first ``initial_delay`` + one interval after the run starts
  (``measure_at_start``: right after ``initial_delay``, as Argo does; blue-green's pre-promotion analysis) (a
  metric with a ``count`` stops after that many measurements; when every metric has taken its count the run
  ends, as Argo's does), through the
  ``measure_metrics`` activity (all metrics due at a tick in one local activity; ``measure_metric`` per metric,
  in parallel, for remote activities). A tick due at the deadline is still taken,
  so a 10-minute analysis at 1 minute takes 10 measurements per metric and ends exactly at the deadline;
- after each tick ``core.analysis.assess`` (pure) judges all measurements since the last ``acknowledge()``; a
  decisive verdict (Failed, Error, Inconclusive) returns at once; otherwise the run ends with the final
  verdict when the deadline passes and ``hold()`` is False;
- an activity that fails outright (worker lost, timeout) counts as an ``Error`` measurement;
- ``deadline``, ``hold`` and ``stop`` are callables read at every wake-up; the loop also wakes as soon as any of
  them changes, so steering handlers only change workflow state;
- continue-as-new: ``checkpoint()`` (a JSON-able dict) is what a continuation passes back as ``resume=`` to go on
  where this run stands: the next due times, and the measurements that can still change a verdict (every failed and
  inconclusive one, each metric's last successful one and the errors after it), so the limits hold across
  continuations and the carried state stays bounded. ``quiet_stop`` is like ``stop`` but read only between ticks
  and wake-ups (never inside a wait condition): for checks such as "is the history long", cheap to skip.
The loop is deterministic: workflow time only, no I/O of its own.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Callable

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.metrics import MetricsActivities
    from core.analysis import (
        AnalysisTemplate,
        AnalysisVerdict,
        HttpHealthQuery,
        MeasureBatchInput,
        MeasureInput,
        Measurement,
        MetricSpec,
        assess,
    )

MEASURE_RETRY = RetryPolicy(initial_interval=timedelta(seconds=2), backoff_coefficient=2, maximum_attempts=3)
MEASURE_TIMEOUT = timedelta(seconds=30)
# Local analysis measures a tick's metrics in one activity (``measure_metrics``). The patch that introduced it
# (measure-metrics-batch, 2026-11-22) is gone: every recorded history was re-recorded without its marker on
# 2026-12-01, and no run from before it is open (a deprecated patch still costs each run a marker and an upsert).


class AnalysisRun:
    def __init__(
        self,
        template: AnalysisTemplate,
        *,
        args: dict[str, str],
        deadline: Callable[[], datetime],
        hold: Callable[[], bool] = lambda: False,
        stop: Callable[[], bool] = lambda: False,
        on_measurement: Callable[[Measurement], None] | None = None,
        task_queue: str | None = None,
        local: bool = True,
        resume: dict | None = None,
        quiet_stop: Callable[[], bool] = lambda: False,
        measure_at_start: bool = False,
        batch_activity: bool = False,
    ) -> None:
        self.template = template
        self.args = dict(args)
        self._deadline = deadline
        self._hold = hold
        self._stop = stop
        self._quiet_stop = quiet_stop
        self._on_measurement = on_measurement
        self._task_queue = task_queue
        self._local = local
        # a tick's metrics in one regular activity instead of a local one: a cancel or an abort reaches a held
        # measurement at once (a local activity keeps its workflow task open until the task's next heartbeat, and
        # the time-skipping test server never delivers the cancel then); blue-green's pre-promotion analysis
        self._batch_activity = batch_activity
        self.measurements: list[Measurement] = []
        self._counted_from = 0
        start = workflow.now()
        first = timedelta(0) if measure_at_start else None  # Argo's way: the first measurement after initial_delay
        self._next_due: dict[str, datetime] = {
            m.name: start + m.initial_delay + (m.interval if first is None else first) for m in template.metrics
        }
        self._taken: dict[str, int] = {}  # measurements taken per metric with a ``count``
        self.verdict = AnalysisVerdict(phase="Running", reason=f"{template.name}: not measured yet")
        if resume:
            self.measurements = [Measurement.model_validate(m) for m in resume.get("measurements", [])]
            self._taken = dict(resume.get("taken") or {})
            for name, due in (resume.get("next_due") or {}).items():
                if name in self._next_due:
                    self._next_due[name] = datetime.fromisoformat(due)

    def checkpoint(self) -> dict:
        """What a continuation (continue-as-new) needs to go on measuring and judging as if it were this run."""
        keep: list[Measurement] = []
        for spec in self.template.metrics:
            mine = [m for m in self.counted() if m.metric == spec.name]
            last_ok = max((i for i, m in enumerate(mine) if m.phase == "Successful"), default=-1)
            keep += [
                m for i, m in enumerate(mine)
                if m.phase in ("Failed", "Inconclusive") or i == last_ok or (m.phase == "Error" and i > last_ok)
            ]
        keep.sort(key=lambda m: m.at)
        state = {
            "measurements": [m.model_dump(mode="json") for m in keep],
            "next_due": {name: due.isoformat() for name, due in self._next_due.items()},
        }
        if self._taken:
            state["taken"] = dict(self._taken)
        return state

    def _measuring(self) -> list[MetricSpec]:
        """The metrics still to be measured: all but those that took their ``count``."""
        return [m for m in self.template.metrics if m.count is None or self._taken.get(m.name, 0) < m.count]

    def acknowledge(self) -> None:
        """A person decided to continue: count limits afresh from here; measurements are kept."""
        self._counted_from = len(self.measurements)
        self.verdict = AnalysisVerdict(phase="Running", reason=f"{self.template.name}: continued by a person")

    def counted(self) -> list[Measurement]:
        return self.measurements[self._counted_from :]

    async def run(self) -> AnalysisVerdict:
        while True:
            if self._stop() or self._quiet_stop():
                return self.verdict
            now = workflow.now()
            measuring = self._measuring()
            due = [m for m in measuring if self._next_due[m.name] <= now]
            if due:
                await self._tick(due)
                self.verdict = assess(self.template, self.counted(), complete=False)
                if self.verdict.phase not in ("Running", "Successful"):
                    return self.verdict
                continue
            deadline, held = self._deadline(), self._hold()
            if (now >= deadline or not measuring) and not held:  # every metric took its count: done (Argo)
                self.verdict = assess(self.template, self.counted(), complete=True)
                return self.verdict
            wake = min((self._next_due[m.name] for m in measuring), default=deadline)
            if not held:
                wake = min(wake, deadline)

            def woken(deadline: datetime = deadline, held: bool = held) -> bool:
                return self._stop() or self._deadline() != deadline or self._hold() != held

            if held and not measuring:  # every metric took its count, and a person holds the run: wait for them
                await workflow.wait_condition(woken)
                continue
            what = "analysis ends" if not held and wake == deadline else "next measurement"
            try:
                await workflow.wait_condition(woken, timeout=max(wake - now, timedelta(milliseconds=1)),
                                              timeout_summary=f"{self.template.name}: {what} at {wake:%H:%M:%S} UTC")
            except asyncio.TimeoutError:
                pass

    async def _tick(self, due: list[MetricSpec]) -> None:
        started = workflow.now()
        if self._batch_activity or self._local:
            results = await self._measure_batch(due)
        else:  # remote activities
            results = await asyncio.gather(*(self._measure(spec) for spec in due))
        # the batch activity answers one measurement per metric; a short answer must not fail the workflow task
        for spec, measurement in zip(due, results, strict=False):
            following = self._next_due[spec.name] + spec.interval
            # after a long hold (a person deciding) do not burst through the missed ticks
            self._next_due[spec.name] = following if following > started else started + spec.interval
            self.measurements.append(measurement)
            if spec.count is not None:
                self._taken[spec.name] = self._taken.get(spec.name, 0) + 1
            if self._on_measurement is not None:
                self._on_measurement(measurement)

    async def _measure_batch(self, due: list[MetricSpec]) -> list[Measurement]:
        timeout = _timeout(due)
        try:
            if self._batch_activity:
                results = await workflow.execute_activity_method(
                    MetricsActivities.measure_metrics,
                    MeasureBatchInput(metrics=due, args=self.args),
                    start_to_close_timeout=timeout,
                    retry_policy=MEASURE_RETRY,
                )
            else:
                results = await workflow.execute_local_activity_method(
                    MetricsActivities.measure_metrics,
                    MeasureBatchInput(metrics=due, args=self.args),
                    start_to_close_timeout=timeout,
                    retry_policy=MEASURE_RETRY,
                )
        except ActivityError as err:
            cause = err.cause or err
            now = workflow.now()
            return [Measurement(metric=s.name, phase="Error", at=now, message=f"measurement failed: {cause}") for s in due]
        now = workflow.now()  # the workflow's clock stamps the measurements: ordering and queries stay deterministic
        return [result.model_copy(update={"at": now}) for result in results]

    async def _measure(self, spec: MetricSpec) -> Measurement:
        """One metric through a remote activity (on ``task_queue``), measured in parallel with the others due."""
        try:
            result = await workflow.execute_activity_method(
                MetricsActivities.measure_metric,
                MeasureInput(metric=spec, args=self.args),
                start_to_close_timeout=_timeout([spec]),
                retry_policy=MEASURE_RETRY,
                task_queue=self._task_queue,
            )
        except ActivityError as err:
            cause = err.cause or err
            return Measurement(metric=spec.name, phase="Error", at=workflow.now(), message=f"measurement failed: {cause}")
        # the workflow's clock stamps the measurement: ordering and queries stay deterministic
        return result.model_copy(update={"at": workflow.now()})


def _timeout(specs: list[MetricSpec]) -> timedelta:
    """A measurement's time: HTTP health metrics send their requests in turn and may take each one's timeout."""
    return MEASURE_TIMEOUT + sum((s.query.worst_case() for s in specs if isinstance(s.query, HttpHealthQuery)), timedelta(0))
