"""`/runbook start ... --dry-run` in Slack renders a planned runbook's plan (what it read, each change with its
before and after, rollback, approval, freeze) and a dry run that could not read a system as a warning naming it
(issue 13). The end-to-end gateway test covers a runbook without a planner (NotPlanned) only; here the plan comes
from a stub of the worker's answer, so no server is needed."""

from __future__ import annotations

from types import SimpleNamespace

from core.dry_run import Change, DryRunPlan, FreezeCheck, Reading
from starters.client import DryRunFailed, DryRunOutcome
from starters.gateway import SlackCommands


class _Runs:
    def __init__(self, answer: DryRunOutcome | Exception) -> None:
        self.answer = answer

    async def dry_run(self, plan) -> DryRunOutcome:
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def _commands(answer: DryRunOutcome | Exception) -> SlackCommands:
    return SlackCommands(SimpleNamespace(runs=_Runs(answer)))  # type: ignore[arg-type]  # only .runs is used


PLAN = DryRunPlan(
    runbook="blue-green", workflow_type="BlueGreenCutover", workflow_id="bluegreen:shop", target="shop",
    summary="shop: blue -> green (shop:v2) via kubernetes",
    reads=[Reading(system="Kubernetes", what="live colour", value="blue")],
    changes=[Change(step="switch", system="Kubernetes", target="Service shop-prod/shop selector",
                    before="app=shop,colour=blue", after="app=shop,colour=green")],
    rollback=["Service shop-prod/shop selector back to colour=blue"],
    approval=["1 approval(s) from alice; no self-approval; timeout 1h -> reject"],
    freeze=FreezeCheck(checked=True, detail="no freeze window applies now"),
)


async def test_a_planned_runbook_shows_what_it_read_and_each_change_before_and_after() -> None:
    text = await _commands(DryRunOutcome("bluegreen:shop", "DryRun", plan=PLAN))._dry_run(plan=None)
    assert text.startswith(":mag: *dry run* of blue-green as `bluegreen:shop` (nothing changed): *WouldChange*: shop:")
    assert "• Kubernetes live colour: blue" in text
    assert "1. [switch] Kubernetes Service shop-prod/shop selector: app=shop,colour=blue → app=shop,colour=green" in text
    for line in ("*Rollback*", "• Service shop-prod/shop selector back to colour=blue", "*Approval*",
                 "*Freeze*", "• no freeze window applies now"):
        assert line in text.splitlines(), text


async def test_an_unreadable_system_is_named_and_an_already_running_run_is_said() -> None:
    failed = DryRunFailed("Kubernetes: could not read Deployment us-west-2/shop/web: 503; nothing was started")
    assert await _commands(failed)._dry_run(plan=None) == (
        ":warning: Kubernetes: could not read Deployment us-west-2/shop/web: 503; nothing was started")
    running = DryRunOutcome("bluegreen:shop", "AlreadyRunning", running_run_id="r1")
    assert "is already running; a start would start nothing" in await _commands(running)._dry_run(plan=None)
