"""Temporal Schedules for runbooks (monthly restore drills and the like): no outside cron needed.

A schedule starts the workflow of a planned runbook (``Catalog.plan_start``: type, id, validated input) on a cron
expression. Overlap policy is SKIP: a drill still running when the next one is due is not doubled. Each run's
workflow id is the plan's id plus the scheduled time (Temporal appends it), so runs never collide and each run's
scratch resources (named from the workflow id) are its own.

The runbook name, its parameters and the cron text are kept in the schedule's memo, so ``list_schedules`` can
show them as they were given.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleListActionStartWorkflow,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleState,
)
from temporalio.service import RPCError, RPCStatusCode

from core.catalog import StartPlan
from starters.client import search_attributes


class ScheduleError(ValueError):
    """A schedule problem a person can fix; the message says what."""


@dataclass
class ScheduleInfo:
    schedule_id: str
    runbook: str = ""
    workflow_type: str = ""
    cron: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    paused: bool = False
    next_runs: list[datetime] = field(default_factory=list)
    recent_workflow_ids: list[str] = field(default_factory=list)
    note: str = ""


async def create_schedule(
    client: Client,
    plan: StartPlan,
    schedule_id: str,
    cron: str,
    task_queue: str,
    *,
    note: str = "",
    catchup_window: timedelta = timedelta(hours=1),
) -> ScheduleInfo:
    """Create a schedule that starts ``plan``'s workflow on ``cron`` (5-field cron, UTC). Skips overlapping runs."""
    if not cron or len(cron.split()) not in (5, 6, 7) and not cron.startswith("@"):
        raise ScheduleError(f"{cron!r} is not a cron expression (e.g. '0 3 1 * *' for 03:00 UTC on the 1st)")
    meta = plan.meta.model_copy(update={"source": "schedule"})
    workflow_input = plan.input.model_copy(update={"meta": meta})
    attrs = search_attributes(plan)
    schedule = Schedule(
        action=ScheduleActionStartWorkflow(
            plan.workflow_type,
            workflow_input,
            id=plan.workflow_id,
            task_queue=task_queue,
            typed_search_attributes=attrs,
        ),
        spec=ScheduleSpec(cron_expressions=[cron]),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP, catchup_window=catchup_window),
        state=ScheduleState(note=note or f"runbook {plan.runbook} scheduled by {meta.requested_by}"),
    )
    memo = {"runbook": plan.runbook, "cron": cron, "params": _jsonable(plan.params), "requested_by": meta.requested_by}
    try:
        await client.create_schedule(schedule_id, schedule, memo=memo)
    except ScheduleAlreadyRunningError:
        raise ScheduleError(f"schedule {schedule_id!r} already exists (delete it first, or choose another id)") from None
    except RPCError as err:
        if err.status == RPCStatusCode.INVALID_ARGUMENT:
            raise ScheduleError(f"the server refused schedule {schedule_id!r}: {err.message}") from None
        raise
    return ScheduleInfo(schedule_id, plan.runbook, plan.workflow_type, cron, dict(memo["params"]), note=note)


async def list_schedules(client: Client) -> list[ScheduleInfo]:
    """Every schedule of the namespace with its runbook, cron and next runs (the list is eventually consistent)."""
    out: list[ScheduleInfo] = []
    async for entry in await client.list_schedules():
        memo = await entry.memo()
        info = ScheduleInfo(
            schedule_id=entry.id,
            runbook=str(memo.get("runbook", "")),
            cron=str(memo.get("cron", "")),
            params=dict(memo.get("params") or {}),
        )
        if entry.schedule is not None:
            action = entry.schedule.action
            if isinstance(action, ScheduleListActionStartWorkflow):
                info.workflow_type = action.workflow
            info.paused = entry.schedule.state.paused
            info.note = entry.schedule.state.note or ""
        if entry.info is not None:
            info.next_runs = list(entry.info.next_action_times)
            info.recent_workflow_ids = [
                getattr(r.action, "workflow_id", "") for r in entry.info.recent_actions
            ]
        out.append(info)
    return sorted(out, key=lambda s: s.schedule_id)


async def delete_schedule(client: Client, schedule_id: str) -> None:
    """Delete a schedule; running drills it started continue (and clean up after themselves)."""
    try:
        await client.get_schedule_handle(schedule_id).delete()
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            raise ScheduleError(f"no schedule {schedule_id!r}") from None
        raise


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)
