"""Argo's initialDelay, count and dry_run on the analysis loop, through a canary ramp on the time-skipping server."""

from __future__ import annotations

from datetime import timedelta

from temporalio.testing import WorkflowEnvironment

from core.analysis import AnalysisTemplate, Condition, MetricSpec, PrometheusQuery
from tests.canary.test_ramp import Rig, make_input, offsets
from workflows.canary_ramp import AnalysisStepSpec, CanaryRamp, PlanStep

M = timedelta(minutes=1)


def spec(name: str, cond: str, **kw) -> MetricSpec:
    return MetricSpec(name=name, query=PrometheusQuery(query=name), success=Condition.model_validate(cond), **kw)


async def test_initial_delay_count_and_a_dry_run_metric(ts_env: WorkflowEnvironment, task_queue: str) -> None:
    # error-rate waits 2 minutes, then measures 3 times a minute apart; cpu (dry run, always failing its
    # condition: HEALTHY cpu is 40) measures twice. Every metric took its count at +5 min: the analysis ends
    # there, not at its 30-minute deadline, and the dry-run failures never roll back.
    template = AnalysisTemplate(
        name="t",
        metrics=[
            spec("error-rate", "< 0.5", initial_delay=2 * M, count=3),
            spec("cpu", "< 10", count=2, dry_run=True),
        ],
    )
    plan = [PlanStep(set_weight=10), PlanStep(analysis=AnalysisStepSpec(template="t", duration=30 * M)), PlanStep(set_weight=50)]
    rig = Rig(ts_env, task_queue)
    async with rig.worker():
        handle = await rig.start(make_input(plan=plan, templates=[template]))
        result = await handle.result()
        view = await handle.query(CanaryRamp.canary)
    assert result.status == "Succeeded", result.reason
    assert rig.metrics.count == {"error-rate": 3, "cpu": 2}
    assert offsets(result)[:2] == [(10, timedelta(0)), (50, 5 * M)]
    verdict = view.last_verdict
    assert verdict is not None and verdict.phase == "Successful"
    cpu = next(v for v in verdict.metrics if v.metric == "cpu")
    assert cpu.dry_run and cpu.phase == "Failed" and cpu.failed == 2
