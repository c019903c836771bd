"""A runbook workflow for the routing and escalation tests: a change that compensation undoes, alerts, a gate."""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from core.runbook import RunbookInput, RunbookResult
    from workflows.base import Ending, RunbookWorkflow, gate_stop


class NoticedChangeInput(RunbookInput):
    alerts: list[tuple[str, str]] = []  # (severity, title), sent after the change is prepared
    recover: bool = False  # say "recovered" after the alerts
    gate: bool = True


@workflow.defn
class NoticedChange(RunbookWorkflow):
    """prepare (a change; compensation undoes it) -> alerts -> approval gate -> apply."""

    @workflow.init
    def __init__(self, input: NoticedChangeInput) -> None:
        super().__init__(input.meta, input.carry)
        self.prepared = False

    @workflow.run
    async def run(self, input: NoticedChangeInput) -> RunbookResult:
        self.begin()
        ending = await self.conduct(lambda: self._change(input), self._undo)
        return await self.conclude(ending, lambda common: RunbookResult(**common))

    async def _change(self, input: NoticedChangeInput) -> str:
        rec = self.step_started("prepare")
        self.prepared = True
        await self.step_done(rec, "prepared")
        for severity, title in input.alerts:
            await self.notify("alert", title, severity=severity)
        if input.recover:
            await self.notify("recovered", "healthy again")
        if input.gate:
            outcome = await self.request_approval("apply", "Apply the change")
            if not outcome.approved:
                raise gate_stop(outcome, "change not applied")
        self.check_abort("apply")
        return "applied"

    async def _undo(self, ending: Ending) -> None:
        if self.prepared:
            self.prepared = False
            ending.compensated.append("prepare undone")
