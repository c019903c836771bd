"""ProvisionEnvironment end to end in virtual time: real Terraform on provider-free modules, OpenBao secrets,
the Kubernetes wire-format fake, moto S3, the real activities; only notifications are recorded in memory."""

from __future__ import annotations

import fcntl
import json
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import hvac
import pytest
from temporalio.client import WorkflowUpdateFailedError
from temporalio.testing import WorkflowEnvironment

from activities.terraform import TerraformAdapter
from core.provision import DestroyNowInput, ExtendInput, ProvisionEnvironmentResult
from tests import harness
from workflows.provision import ProvisionEnvironment

from .conftest import MODULES
from .helpers import approve, history_json, make_input, record, start, status_when, worker

SECRET = "pw-" + uuid.uuid4().hex


@pytest.fixture
def secret(openbao: tuple[str, str]) -> str:
    addr, token = openbao
    hvac.Client(url=addr, token=token).secrets.kv.v2.create_or_update_secret(
        path="provision/db", secret={"password": SECRET}, mount_point="secret")
    return "provision/db#password"


async def test_new_development_environment_then_no_change_plan(
    ts_env: WorkflowEnvironment, task_queue: str, recording: Any, kube: Any, aws: str, tf_root: Path, secret: str
) -> None:
    async with worker(ts_env, task_queue, recording, kube, tf_root):
        handle = await start(ts_env, task_queue, make_input("dev-one", "development", secret))
        result = await handle.result()
        assert result.status == "Succeeded"
        assert result.outputs["hostname"] == "dev-one.development.example.internal"
        assert result.outputs["db_password_set"] is True  # the Vault secret reached Terraform
        assert result.plan and result.plan.plan_hash.startswith("sha256:")
        assert set(result.plan.output_changes) >= {"hostname", "database_url"}
        # namespace guardrails through the official client, on the wire-format fake
        ns = kube.fake.get("namespaces", None, "dev-one")
        assert ns["metadata"]["labels"]["runbook/tier"] == "development"
        assert kube.fake.get("resourcequotas", "dev-one", "runbook-quota")["spec"]["hard"]["pods"] == "50"
        assert kube.fake.get("limitranges", "dev-one", "runbook-limits") is not None
        assert kube.fake.get("networkpolicies", "dev-one", "default-deny") is not None
        doc = record("environments/dev-one.json")
        assert doc and doc["outputs"]["hostname"] == result.outputs["hostname"] and doc["tier"] == "development"
        assert doc["sensitive_outputs"] == ["database_url"] and doc["plan_hash"] == result.plan.plan_hash
        assert SECRET not in await history_json(handle)
        assert SECRET not in json.dumps([e.model_dump(mode="json") for e in recording[0].events])

        again = await start(ts_env, task_queue, make_input("dev-one", "development", secret))
        second = await again.result()
        assert second.status == "Succeeded" and "no changes" in second.summary
        assert second.plan and not second.plan.has_changes and second.record_key is None
        assert SECRET not in await history_json(again)


async def test_production_needs_two_distinct_approvers_from_both_groups(
    ts_env: WorkflowEnvironment, task_queue: str, recording: Any, kube: Any, aws: str, tf_root: Path, secret: str
) -> None:
    async with worker(ts_env, task_queue, recording, kube, tf_root):
        handle = await start(ts_env, task_queue, make_input("pay-prod", "production", secret))
        status = await status_when(handle, lambda s: s.gate is not None)
        gate = status.gate
        assert gate and gate.binding and gate.binding.startswith("sha256:")
        assert gate.required_groups == ["platform-team", "security-team"]
        with pytest.raises(WorkflowUpdateFailedError):  # an approval of another plan
            await approve(handle, gate.gate_id, "alice", "sha256:" + "0" * 64)
        await approve(handle, gate.gate_id, "alice", gate.binding)
        with pytest.raises(WorkflowUpdateFailedError):  # the same person twice
            await approve(handle, gate.gate_id, "alice", gate.binding)
        await approve(handle, gate.gate_id, "bob", gate.binding)  # two approvals, but both platform-team
        status = await handle.query(ProvisionEnvironment.status)
        assert status.gate is not None and status.status == "WaitingForApproval"
        await approve(handle, gate.gate_id, "carol", gate.binding)  # security-team
        result = await handle.result()
        await harness.save_history(handle, "provision-production_needs_two_distinct_approvers_from_both_groups")
        assert result.status == "Succeeded"
        doc = record("environments/pay-prod.json")
        assert doc and doc["approved_by"] == ["alice", "bob", "carol"]
        assert SECRET not in await history_json(handle)


async def test_stale_plan_is_replanned_and_its_approval_refused(
    ts_env: WorkflowEnvironment, task_queue: str, recording: Any, kube: Any, aws: str, tf_root: Path
) -> None:
    async with worker(ts_env, task_queue, recording, kube, tf_root):
        handle = await start(ts_env, task_queue, make_input("stg-a", "staging"))
        first = (await status_when(handle, lambda s: s.gate is not None)).gate
        assert first is not None
        # Meanwhile someone else applies another change to the same workspace: the saved plan is now stale.
        other = TerraformAdapter(tf_root / "stg-a")
        other.select_workspace("stg-a")
        assert other.plan(str(tf_root / "other.tfplan"), {"environment": "stg-a", "tier": "staging", "replicas": 7})
        other.apply_plan(str(tf_root / "other.tfplan"))
        await approve(handle, first.gate_id, "alice", first.binding)
        second = (await status_when(handle, lambda s: s.gate is not None and s.gate.gate_id != first.gate_id)).gate
        assert second is not None and second.binding != first.binding
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await approve(handle, second.gate_id, "alice", first.binding)  # the stale plan's hash
        assert f"this gate approves {second.binding}" in str(refused.value.cause)
        await approve(handle, second.gate_id, "alice", second.binding)
        result = await handle.result()
        assert result.status == "Succeeded" and result.outputs["replicas"] == 2
        assert [s.name for s in result.steps].count("plan") == 2
        assert any(s.name == "apply" and s.status == "failed" and "stale" in s.detail for s in result.steps)


async def test_apply_failure_reports_terraforms_error_and_that_nothing_was_written(
    ts_env: WorkflowEnvironment, task_queue: str, recording: Any, kube: Any, aws: str, tf_root: Path
) -> None:
    async with worker(ts_env, task_queue, recording, kube, tf_root):
        await (await start(ts_env, task_queue, make_input("stg-b", "development"))).result()  # state exists
        handle = await start(ts_env, task_queue, make_input("stg-b", "staging", variables={"replicas": 5},
                                                            apply_attempts=2))
        gate = (await status_when(handle, lambda s: s.gate is not None)).gate
        assert gate is not None
        state = tf_root / "stg-b" / "terraform.tfstate.d" / "stg-b" / "terraform.tfstate"
        with open(state, "r+") as held:  # another Terraform run holds the state lock
            fcntl.lockf(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
            await approve(handle, gate.gate_id, "alice", gate.binding)
            result: ProvisionEnvironmentResult = await handle.result()
        # The apply failed; the state shows it wrote nothing: a clean RolledBack, not a page, nothing destroyed.
        assert result.status == "RolledBack", result.summary
        assert "Error acquiring the state lock" in result.reason and "nothing was changed" in result.reason
        assert not result.destroyed and not result.not_undone and not result.left_in_place
        assert [s.name for s in result.steps][-2:] == ["apply", "check state"]
        assert TerraformAdapter(tf_root / "stg-b").output("replicas") == 2  # the existing environment untouched


async def test_configuration_error_is_refused_and_not_retried(
    ts_env: WorkflowEnvironment, task_queue: str, recording: Any, kube: Any, aws: str, tf_root: Path
) -> None:
    async with worker(ts_env, task_queue, recording, kube, tf_root):
        input = make_input("dev-broken", "development", module=str(MODULES / "broken"))
        handle = await start(ts_env, task_queue, input)
        result: ProvisionEnvironmentResult = await handle.result()
        assert result.status == "Refused" and "nothing was changed" in result.summary
        assert "Output refers to sensitive values" in result.reason
        history = await handle.fetch_history()
        attempts = [e.activity_task_started_event_attributes.attempt for e in history.events
                    if e.HasField("activity_task_started_event_attributes")]
        scheduled = [e.activity_task_scheduled_event_attributes.activity_type.name for e in history.events
                     if e.HasField("activity_task_scheduled_event_attributes")]
        assert "terraform_plan" in scheduled and "terraform_apply" not in scheduled
        assert max(attempts) == 1  # InvalidInput is not retried
        finished = [e for e in recording[0].events if e.kind in ("finished", "failed")]
        assert [e.severity for e in finished] == ["warning"]  # a refusal is not a page


async def test_sandbox_ttl_reminder_extension_and_expiry(
    ts_env: WorkflowEnvironment, task_queue: str, recording: Any, kube: Any, aws: str, tf_root: Path, secret: str
) -> None:
    async with worker(ts_env, task_queue, recording, kube, tf_root):
        handle = await start(ts_env, task_queue, make_input("sb-one", "sandbox", secret, ttl="8h", max_ttl="1d"))
        status = await status_when(handle, lambda s: s.details.get("phase") == "live")
        assert kube.fake.get("namespaces", None, "sb-one") is not None
        assert record("environments/sb-one.json") is not None
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await handle.execute_update(ProvisionEnvironment.extend, ExtendInput(by="0s", requested_by="zed"))
        assert "positive" in str(refused.value.cause)
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await handle.execute_update(ProvisionEnvironment.extend, ExtendInput(by="2d", requested_by="zed"))
        assert "at most" in str(refused.value.cause)
        answer = await handle.execute_update(ProvisionEnvironment.extend, ExtendInput(by="4h", requested_by="zed"))
        assert status.details["expires_at"] < answer.expires_at.isoformat()
        result: ProvisionEnvironmentResult = await handle.result()  # 12 virtual hours pass here
        assert result.status == "Succeeded" and result.destroyed and "TTL expired" in result.summary
        assert result.expired_at is not None
        lived = result.expired_at - next(s.finished_at for s in result.steps if s.name == "record")
        assert timedelta(hours=11, minutes=59) < lived < timedelta(hours=12, minutes=1)
        assert [e.kind for e in recording[0].events].count("alert") == 1  # one reminder, for the extended expiry
        assert kube.fake.get("namespaces", None, "sb-one") is None
        assert record("environments/sb-one.json") is None
        assert "sb-one" not in TerraformAdapter(tf_root / "sb-one").workspaces()
        assert SECRET not in await history_json(handle)


async def test_sandbox_destroy_now(
    ts_env: WorkflowEnvironment, task_queue: str, recording: Any, kube: Any, aws: str, tf_root: Path
) -> None:
    async with worker(ts_env, task_queue, recording, kube, tf_root):
        handle = await start(ts_env, task_queue, make_input("sb-two", "sandbox", ttl="8h"))
        await status_when(handle, lambda s: s.details.get("phase") == "live")
        await handle.execute_update(ProvisionEnvironment.destroy_now, DestroyNowInput(requested_by="zed", reason="done"))
        result = await handle.result()
        await harness.save_history(handle, "provision-sandbox_destroy_now")
        assert result.destroyed and "destroy-now by zed" in result.summary
        assert kube.fake.get("namespaces", None, "sb-two") is None
        assert record("environments/sb-two.json") is None
        assert not [e for e in recording[0].events if e.kind == "alert"]  # destroyed before any reminder
