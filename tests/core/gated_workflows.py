"""Workflows used only by the tests of the platform (gate, CLI, catalog): product code holds no placeholder."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from core.duration import Duration
    from core.runbook import RunbookInput, RunbookResult

from workflows.base import RunbookWorkflow, gate_stop
from workflows.registry import Entry


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


class TwoGatesInput(RunbookInput):
    second_after: Duration = timedelta(minutes=1)
    rounds: int = 1


class TwoGatesResult(RunbookResult):
    decisions: dict[str, str] = {}
    rounds_done: int = 0


@workflow.defn
class TwoGates(RunbookWorkflow):
    """Opens a ``first`` gate, and while it is open a ``second``; each holder waits for its own gate only. With
    ``rounds`` > 1 it does it again, continuing as new when the history is due (meta.history_limit)."""

    @workflow.init
    def __init__(self, input: TwoGatesInput) -> None:
        super().__init__(input.meta, input.carry)
        self.decisions: dict[str, str] = dict(self.carried_state.get("decisions", {}))
        self.round = int(self.carried_state.get("round", 0))

    @workflow.run
    async def run(self, input: TwoGatesInput) -> TwoGatesResult:
        self.begin()
        ending = await self.conduct(lambda: self._rounds(input))
        return await self.conclude(
            ending, lambda common: TwoGatesResult(**common, decisions=self.decisions, rounds_done=self.round)
        )

    async def _rounds(self, input: TwoGatesInput) -> str:
        while self.round < input.rounds:
            if self.continue_as_new_due():
                workflow.continue_as_new(input.model_copy(update={
                    "carry": self.carry(state={"decisions": self.decisions, "round": self.round})}))
            first = self.open_gate("first", "First decision")
            waiting = asyncio.ensure_future(first.wait())
            await workflow.sleep(input.second_after)
            if first.open:
                second = await self.request_approval("second", "Second decision")
                self.decisions[second.gate_id] = second.decision
            outcome = await waiting
            self.decisions[outcome.gate_id] = outcome.decision
            self.round += 1
            self.check_abort()
        return f"{len(self.decisions)} decisions"


# the runbooks of this module, as a team exports its own (RUNBOOK_WORKFLOW_MODULES)
RUNBOOKS = [Entry("GatedChange", GatedChangeInput, GatedChange), Entry("TwoGates", TwoGatesInput, TwoGates)]
