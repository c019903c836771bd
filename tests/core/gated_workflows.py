"""Workflows used only by the tests of the platform (gate, CLI, catalog): product code holds no placeholder."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from core.duration import Duration
    from core.runbook import RunbookInput, RunbookResult

from workflows.base import RunbookWorkflow


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
        super().__init__(input.meta)
        self.applied = False

    def status_details(self) -> dict:
        return {"applied": self.applied}

    @workflow.run
    async def run(self, input: GatedChangeInput) -> RunbookResult:
        self.begin()
        prepare = self.step_started("prepare")
        await self.step_done(prepare, f"{input.change} of {input.service} prepared")
        outcome = await self.request_approval(
            "apply", f"Apply {input.change} to {input.service}", "prepared and ready", binding=input.binding
        )
        if self.aborting or outcome.decision == "aborted":
            await self.finish("Aborted", f"aborted: {self.abort_request.reason if self.abort_request else outcome.reason}")
            raise ApplicationError(f"aborted by {outcome.decided_by}", type="Aborted", non_retryable=True)
        if not outcome.approved:
            summary = f"not applied: approval {outcome.decision} ({outcome.reason})"
            await self.finish("Failed", summary)
            return RunbookResult(status="Failed", summary=summary, steps=self._steps, gates=self._closed_gates)
        apply = self.step_started("apply")
        try:
            await workflow.wait_condition(lambda: self.aborting, timeout=input.hold)
        except TimeoutError:
            pass
        if self.aborting:
            self.step_failed(apply, "aborted during apply", "compensated")
            await self.finish("Aborted", "aborted during apply")
            raise ApplicationError("aborted", type="Aborted", non_retryable=True)
        self.applied = True
        await self.step_done(apply, f"{input.change} applied")
        await self.finish("Succeeded", f"{input.change} of {input.service} applied")
        return RunbookResult(status="Succeeded", summary="applied", steps=self._steps, gates=self._closed_gates)


WORKFLOWS = [GatedChange]
