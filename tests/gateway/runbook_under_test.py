"""A small runbook workflow for the gateway's end-to-end tests: steps, one approval gate, a final summary."""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from core.runbook import RunbookInput, RunbookResult
    from workflows.base import RunbookWorkflow, gate_stop


class GatewayDrillInput(RunbookInput):
    service: str
    incident_title: str = ""


@workflow.defn(name="GatewayDrill")
class GatewayDrill(RunbookWorkflow):
    @workflow.init
    def __init__(self, input: GatewayDrillInput) -> None:
        super().__init__(input.meta, input.carry)

    @workflow.run
    async def run(self, input: GatewayDrillInput) -> RunbookResult:
        self.begin()
        await self.notify("started", f"{self.meta.runbook} started", input.incident_title)
        ending = await self.conduct(lambda: self._drill(input))
        return await self.conclude(ending, lambda common: RunbookResult(**common))

    async def _drill(self, input: GatewayDrillInput) -> str:
        step = self.step_started("snapshot")
        await self.step_done(step, f"snapshot of {input.service} taken")
        outcome = await self.request_approval("restore", "Restore into scratch", f"restore {input.service}")
        if not outcome.approved:
            raise gate_stop(outcome, "restore not approved")
        for name in ("restore", "verify"):
            step = self.step_started(name)
            await self.step_done(step, f"{name} ok")
        return "restore verified"
