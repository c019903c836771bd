"""A live sandbox keeps its history bounded: it continues as new while it waits for its TTL, carrying its expiry,
reminder, outputs, namespace, record and plan, and its teardown still works after. (Its own module, so its own
time-skipping server: a run another test cancelled mid-activity can keep the V1 test server from skipping time.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from temporalio.testing import WorkflowEnvironment

from core.provision import ExtendInput, ProvisionEnvironmentResult
from tests import harness
from workflows.provision import ProvisionEnvironment

from .helpers import assert_gone, latest, make_input, start, status_when, worker


async def test_live_sandbox_continues_as_new_and_keeps_its_ttl_reminder_and_teardown(
    ts_env: WorkflowEnvironment, task_queue: str, recording: Any, kube: Any, aws: str, tf_root: Path
) -> None:
    input = make_input("sb-long", "sandbox", ttl="8h", max_ttl="1d", meta={"history_limit": 100})
    async with worker(ts_env, task_queue, recording, kube, tf_root):
        first = await start(ts_env, task_queue, input)
        handle = latest(ts_env, first)
        status = await status_when(handle, lambda s: s.details.get("phase") == "live")
        extends = 0
        while status.continued < 2:  # each extend adds history; the run continues as new whenever it is due
            answer = await handle.execute_update(ProvisionEnvironment.extend, ExtendInput(by="10m", requested_by="zed"))
            extends += 1
            assert extends <= 40, "the run never continued as new twice"
            await harness.settled(handle)  # the update may set off a continuation: no query may race it
            status = await handle.query(ProvisionEnvironment.status)
        assert status.details["phase"] == "live" and status.details["namespace"] == "sb-long"
        assert status.details["record_key"] == "environments/sb-long.json"
        assert status.details["outputs"]["hostname"] == "sb-long.sandbox.example.internal"
        assert status.details["expires_at"] == answer.expires_at.isoformat()  # the extended expiry carried over
        assert [a.action for a in status.actions].count("extend") == extends  # and the audit trail
        result: ProvisionEnvironmentResult = await first.result()  # the virtual hours pass here (following the runs)
    assert result.status == "Succeeded" and "TTL expired" in result.reason, result.summary
    assert_gone(result, kube, tf_root, "sb-long")
    assert result.expired_at is not None and abs((result.expired_at - answer.expires_at).total_seconds()) < 60
    assert [e.kind for e in recording[0].events].count("alert") == 1  # one reminder, for the final expiry
    assert [e.kind for e in recording[0].events].count("finished") == 1  # one ending, whatever the runs
