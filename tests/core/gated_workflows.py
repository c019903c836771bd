"""Workflows used only by the tests of the platform (gate, CLI, catalog): product code holds no placeholder."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from core.duration import Duration
    from core.runbook import RunbookInput, RunbookResult

from workflows.base import RunbookWorkflow, gate_stop


class GatedChangeInput(RunbookInput):
    service: str
    environment: str = "staging"
    change: str = "restart"
    hold: Duration = timedelta(minutes=10)
    binding: str | None = None


@workflow.defn
class GatedChange(RunbookWorkflow):
    """prepare -> approval gate -> apply; an abort or a rejection ends it without applying."""

    @workflow.init
    def __init__(self, input: GatedChangeInput) -> None:
        super().__init__(input.meta, input.carry)
        self.applied = False

    def status_details(self) -> dict:
        return {"applied": self.applied}

    @workflow.run
    async def run(self, input: GatedChangeInput) -> RunbookResult:
        self.begin()
        ending = await self.conduct(lambda: self._change(input))
        return await self.conclude(ending, lambda common: RunbookResult(**common))

    async def _change(self, input: GatedChangeInput) -> str:
        prepare = self.step_started("prepare")
        await self.step_done(prepare, f"{input.change} of {input.service} prepared")
        outcome = await self.request_approval(
            "apply", f"Apply {input.change} to {input.service}", "prepared and ready", binding=input.binding
        )
        if not outcome.approved:
            raise gate_stop(outcome, f"{input.change} not applied")
        apply = self.step_started("apply")
        try:
            await workflow.wait_condition(lambda: self.aborting, timeout=input.hold)
        except TimeoutError:
            pass
        if self.aborting:
            self.step_failed(apply, "aborted during apply", "compensated")
            self.check_abort("apply")
        self.applied = True
        await self.step_done(apply, f"{input.change} applied")
        return f"{input.change} of {input.service} applied"


WORKFLOWS = [GatedChange]
