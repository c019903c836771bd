"""The engine's own writes to a run's search attributes (issue 17 item 6): a run started as the starters start it
(every Runbook* attribute set, starters.client.search_attributes) upserts none of them again; RunbookStatus is
upserted only when it changes; and the only other upsert is the one patch marker's TemporalChangeVersion."""

from __future__ import annotations

import json
import uuid

from temporalio.api.enums.v1 import EventType
from temporalio.testing import WorkflowEnvironment

from core.approval import ApproveInput
from core.canary import PauseSpec, PlanStep
from core.catalog import StartPlan
from starters.client import search_attributes
from tests.canary.test_ramp import Rig, gate_open, make_input
from workflows import search_attributes as sa
from workflows.canary_ramp import CanaryRamp


async def test_a_run_started_with_its_attributes_upserts_only_status_changes(ts_env: WorkflowEnvironment,
                                                                               task_queue: str) -> None:
    inp = make_input(plan=[PlanStep(set_weight=20), PlanStep(pause=PauseSpec()), PlanStep(set_weight=100)])
    plan = StartPlan("canary-ramp", "CanaryRamp", f"canary-{uuid.uuid4().hex[:8]}", inp, inp.meta)
    rig = Rig(ts_env, task_queue)
    async with rig.worker():
        handle = await ts_env.client.start_workflow(CanaryRamp.run, inp, id=plan.workflow_id, task_queue=task_queue,
                                                    search_attributes=search_attributes(plan))
        gate = await gate_open(handle)  # the pause waits for a person: WaitingForApproval, then Running again
        await handle.execute_update(CanaryRamp.approve, ApproveInput(gate_id=gate, approver="bob"))
        result = await handle.result()
    assert result.status == "Succeeded"

    upserts = [event.upsert_workflow_search_attributes_event_attributes.search_attributes.indexed_fields
               for event in (await handle.fetch_history()).events
               if event.event_type == EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES]
    keys = [sorted(fields) for fields in upserts]
    assert keys.count(["TemporalChangeVersion"]) <= 1  # the change calendar's patch, deprecated
    statuses = [json.loads(fields[sa.RUNBOOK_STATUS.name].data) for fields in upserts if sa.RUNBOOK_STATUS.name in fields]
    assert all(k in (["TemporalChangeVersion"], [sa.RUNBOOK_STATUS.name]) for k in keys), keys
    assert statuses == ["WaitingForApproval", "Running", "Succeeded"]  # from "Running", set at start; each a change
