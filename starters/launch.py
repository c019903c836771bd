"""Starting and steering runbooks: the one place that talks to Temporal for the CLI, the gateway and schedules.

Planning (what to start, with which id and input) is ``core.catalog.Catalog.plan_start``; this module starts the
planned workflow with its search attributes and reports an already-running run for the same concurrency key
instead of starting a second one.
"""

from __future__ import annotations

from dataclasses import dataclass

from temporalio.client import Client, WorkflowHandle
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import WorkflowAlreadyStartedError

from core.catalog import StartPlan
from core.runbook import RunbookStatus
from workflows import search_attributes as sa


@dataclass
class StartOutcome:
    workflow_id: str
    run_id: str | None
    started: bool  # False: a run for the same key was already running; nothing new was started
    handle: WorkflowHandle


def search_attributes(plan: StartPlan) -> TypedSearchAttributes:
    meta = plan.meta
    return TypedSearchAttributes(
        [
            SearchAttributePair(sa.RUNBOOK_NAME, meta.runbook),
            SearchAttributePair(sa.RUNBOOK_TARGET, meta.target),
            SearchAttributePair(sa.RUNBOOK_ENVIRONMENT, meta.environment or "-"),
            SearchAttributePair(sa.RUNBOOK_REQUESTED_BY, meta.requested_by),
            SearchAttributePair(sa.RUNBOOK_STATUS, "Running"),
        ]
    )


def summary(plan: StartPlan) -> str:
    meta = plan.meta
    env = f" in {meta.environment}" if meta.environment else ""
    return f"{meta.runbook} on {meta.target}{env}, requested by {meta.requested_by} via {meta.source}"


def details(plan: StartPlan) -> str:
    rows = "\n".join(f"| `{k}` | `{v}` |" for k, v in sorted(plan.params.items()))
    return f"**Parameters**\n\n| parameter | value |\n|---|---|\n{rows}\n" if rows else "No parameters."


async def start_runbook(
    client: Client,
    plan: StartPlan,
    task_queue: str,
    *,
    reuse: WorkflowIDReusePolicy = WorkflowIDReusePolicy.ALLOW_DUPLICATE,
) -> StartOutcome:
    """Start the planned run. A running run with the same id is reported (``started=False``), never doubled.

    The id conflict policy FAIL makes the server the judge: of two racing starts (two CLI users, or a PagerDuty
    redelivery reaching two gateway replicas) exactly one starts; the other is told which run is already there.
    ``reuse=REJECT_DUPLICATE`` also refuses a finished run's id (one run per PagerDuty incident, ever).
    """
    try:
        handle = await client.start_workflow(
            plan.workflow_type,
            plan.input,
            id=plan.workflow_id,
            task_queue=task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
            id_reuse_policy=reuse,
            search_attributes=search_attributes(plan),
            static_summary=summary(plan),
            static_details=details(plan),
        )
    except WorkflowAlreadyStartedError as err:
        existing = client.get_workflow_handle(plan.workflow_id, run_id=err.run_id)
        return StartOutcome(plan.workflow_id, err.run_id, False, existing)
    return StartOutcome(plan.workflow_id, handle.first_execution_run_id, True, handle)


async def query_status(client: Client, workflow_id: str) -> RunbookStatus:
    handle = client.get_workflow_handle(workflow_id)
    return await handle.query("status", result_type=RunbookStatus)
