"""A workflow for benchmarks that waits until cancelled and answers the runbooks' ``status`` query as a run halfway
through would (its own module: the workflow sandbox cannot load a workflow defined in ``__main__``)."""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from core.runbook import RunbookStatus, StepRecord
    from workflows.contract import Runbook


@workflow.defn(name="BenchRunbook")
class BenchRunbook(Runbook):
    @workflow.init
    def __init__(self, target: str) -> None:
        self.target = target

    @workflow.run
    async def run(self, target: str) -> None:
        await workflow.wait_condition(lambda: False)

    @workflow.query
    def status(self) -> RunbookStatus:
        now = workflow.now()
        steps = [StepRecord(name=f"step-{i}", status="done", started_at=now, finished_at=now, detail="ok")
                 for i in range(8)]
        return RunbookStatus(workflow_id=workflow.info().workflow_id, runbook="bench", target=self.target,
                             requested_by="bench", status="Running", stage="baking", steps=steps,
                             details={"weight": 25, "plan": [f"step {i}" for i in range(8)]})
