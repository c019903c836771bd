"""A runbook for the metrics, tracing and logging tests: steps, one approval gate, and an ending chosen by its input,
with the result fields real runbooks report (a failed criterion, a failover RTO, a restore report, a canary weight)."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from pydantic import BaseModel

    from core.duration import Duration
    from core.runbook import RunbookInput, RunbookResult
    from workflows.base import RunbookWorkflow, Stop, gate_stop


class MetricsDrillInput(RunbookInput):
    service: str
    roll_back: bool = False


class DrillReport(BaseModel):
    rpo_achieved: Duration | None = None
    rto_achieved: Duration | None = None


class MetricsDrillResult(RunbookResult):
    service: str
    final_weight: int = 0
    failed_criterion: str | None = None
    rto_seconds: float | None = None
    report: DrillReport | None = None


@workflow.defn(name="MetricsDrill")
class MetricsDrill(RunbookWorkflow):
    @workflow.init
    def __init__(self, input: MetricsDrillInput) -> None:
        super().__init__(input.meta, input.carry)
        self.weight = 0

    @workflow.run
    async def run(self, input: MetricsDrillInput) -> MetricsDrillResult:
        self.begin()
        ending = await self.conduct(lambda: self._drill(input))
        rolled_back = ending.status == "RolledBack"
        return await self.conclude(ending, lambda common: MetricsDrillResult(
            **common, service=input.service, final_weight=0 if rolled_back else self.weight,
            failed_criterion="error_rate < 0.005" if rolled_back else None,
            rto_seconds=None if rolled_back else 42.0,
            report=None if rolled_back else DrillReport(rpo_achieved=timedelta(minutes=3), rto_achieved=timedelta(seconds=90)),
        ))

    async def _drill(self, input: MetricsDrillInput) -> str:
        step = self.step_started("step 1/2: set weight 25 %")
        await workflow.execute_activity("drill_step", input.service, start_to_close_timeout=timedelta(seconds=10))
        self.weight = 25
        self.metrics.canary_weight(input.service, 25)
        await self.step_done(step, "canary at 25 %", notify=False)
        outcome = await self.request_approval("promote", "Promote the canary", f"promote {input.service}")
        if not outcome.approved:
            raise gate_stop(outcome, "promotion")
        if input.roll_back:
            raise Stop("RolledBack", "analysis failed: error_rate 0.02 >= 0.005")
        step = self.step_started("step 2/2: set weight 100 %")
        self.weight = 100
        await self.step_done(step, "canary at 100 %", notify=False)
        return "promoted"
