"""How a provision-environment run ends, on every path a person or a fault can take it down: refused before any
change, rejected at the gate, a failure after apply (the sandbox leak), an abort or a cancel at every step, a
teardown that fails (a live sandbox that continues as new: test_sandbox_history.py). Real Terraform, the
Kubernetes fake, moto S3."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest
from temporalio import activity
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from activities.terraform import TerraformAdapter
from core import errors
from core.approval import AbortInput, RejectInput
from core.aws import S3ObjectRef, S3PutJsonInput
from core.catalog import ParameterError
from core.kubernetes import DeleteResult, NamespaceRef
from core.provision import (
    DestroyNowInput,
    ModuleCheck,
    ModuleCheckInput,
    ProvisionEnvironmentInput,
    ProvisionEnvironmentResult,
)
from tests import harness
from workflows.provision import ProvisionEnvironment

from .conftest import MODULES
from .helpers import Hold, activities, assert_gone, make_input, record, start, status_when, worker, workspaces


@activity.defn(name="s3_put_json")
def record_denied(input: S3PutJsonInput) -> S3ObjectRef:
    raise ApplicationError(f"writing s3://{input.bucket}/{input.key}: AccessDenied", type=errors.ACCESS_DENIED,
                           non_retryable=True)


@activity.defn(name="k8s_delete_namespace")
def namespace_delete_denied(ref: NamespaceRef) -> DeleteResult:
    raise ApplicationError(f"delete namespace {ref.name}: access denied (403)", type=errors.ACCESS_DENIED,
                           non_retryable=True)


@activity.defn(name="terraform_check_module")
def module_unreadable(input: ModuleCheckInput) -> ModuleCheck:
    raise ApplicationError(f"{input.module}: permission denied", type=errors.ACCESS_DENIED, non_retryable=True)


def scheduled(history: Any) -> list[str]:
    return [e.activity_task_scheduled_event_attributes.activity_type.name for e in history.events
            if e.HasField("activity_task_scheduled_event_attributes")]


# ------------------------------------------------------------------------------------------------ the sandbox leak
async def test_sandbox_namespace_failure_after_apply_tears_down_what_was_applied(
    ts_env: WorkflowEnvironment, task_queue: str, recording: Any, kube: Any, aws: str, tf_root: Path
) -> None:
    """The named bug: the namespace step fails after terraform apply (here: the namespace is created, its quota is
    refused). Before, the run failed and the sandbox leaked, with no TTL left to destroy it."""
    kube.fake.fail_next("POST", "resourcequotas", 403)
    async with worker(ts_env, task_queue, recording, kube, tf_root):
        handle = await start(ts_env, task_queue, make_input("sb-leak", "sandbox", ttl="8h"))
        result: ProvisionEnvironmentResult = await handle.result()
    assert result.status == "RolledBack", result.summary
    assert "namespace failed" in result.reason and "access denied" in result.reason
    assert_gone(result, kube, tf_root, "sb-leak")
    assert "namespace sb-leak deleted" in result.compensated  # it was created by this run, half-way
    assert result.record_key is None  # the record was never written, so nothing to delete
    assert [s.name for s in result.steps][-2:] == ["destroy", "delete namespace"]


async def test_sandbox_record_failure_after_apply_tears_down_what_was_applied(
    ts_env: WorkflowEnvironment, task_queue: str, recording: Any, kube: Any, aws: str, tf_root: Path
) -> None:
    async with worker(ts_env, task_queue, recording, kube, tf_root, {"s3_put_json": record_denied}):
        handle = await start(ts_env, task_queue, make_input("sb-rec", "sandbox", ttl="8h"))
        result: ProvisionEnvironmentResult = await handle.result()
    assert result.status == "RolledBack" and "record failed" in result.reason, result.summary
    assert_gone(result, kube, tf_root, "sb-rec")
    assert {"namespace sb-rec deleted", "record s3://env-records/environments/sb-rec.json deleted"} <= set(
        result.compensated)


async def test_new_environment_of_another_tier_is_torn_down_after_a_failure(
    ts_env: WorkflowEnvironment, task_queue: str, recording: Any, kube: Any, aws: str, tf_root: Path
) -> None:
    """A development environment that did not exist before this run (the plan was made against an empty workspace):
    what this run created goes, as for a sandbox."""
    async with worker(ts_env, task_queue, recording, kube, tf_root, {"s3_put_json": record_denied}):
        result: ProvisionEnvironmentResult = await (
            await start(ts_env, task_queue, make_input("dev-new", "development"))).result()
    assert result.status == "RolledBack", result.summary
    assert result.plan is not None and result.plan.prior_empty
    assert_gone(result, kube, tf_root, "dev-new")


async def test_existing_environment_is_held_not_destroyed_after_a_failure(
    ts_env: WorkflowEnvironment, task_queue: str, recording: Any, kube: Any, aws: str, tf_root: Path
) -> None:
    """An environment that existed before this run is never destroyed by it: Held, naming what is in place."""
    async with worker(ts_env, task_queue, recording, kube, tf_root):
        first = await (await start(ts_env, task_queue, make_input("dev-old", "development"))).result()
        assert first.status == "Succeeded"
    recording[0].events.clear()
    async with worker(ts_env, task_queue, recording, kube, tf_root, {"s3_put_json": record_denied}):
        handle = await start(ts_env, task_queue, make_input("dev-old", "development", variables={"replicas": 3}))
        result: ProvisionEnvironmentResult = await handle.result()
    assert result.status == "Held", result.summary
    assert result.plan is not None and not result.plan.prior_empty
    assert not result.destroyed and not result.compensated and not result.not_undone
    assert result.left_in_place[0].startswith("workspace dev-old: plan sha256:")
    assert "namespace dev-old (updated)" in result.left_in_place
    assert "nothing was destroyed" in result.summary
    assert TerraformAdapter(tf_root / "dev-old").output("replicas") == 3  # the update stays
    assert kube.fake.get("namespaces", None, "dev-old") is not None
    assert record("environments/dev-old.json") is not None  # the first run's record
    assert "destroy" not in [s.name for s in result.steps]
    assert [e.severity for e in recording[0].events if e.kind == "finished"] == ["critical"]


# ------------------------------------------------------------------------------------------------ refused / rejected
@pytest.mark.parametrize(
    ("environment", "extra", "why"),
    [
        ("   ", {}, "environment name is blank"),
        ("Bad_Name", {}, "is not a valid name"),
        ("dev-ws", {"workspace": "bad/ws"}, "not a valid Terraform workspace name"),
        ("dev-mod", {"module": str(MODULES / "no-such-module")}, "does not exist"),
        ("dev-blank-mod", {"module": " "}, "module folder is blank"),
        ("sb-nottl", {"tier": "sandbox"}, "a sandbox needs a positive ttl"),
        ("sb-long", {"tier": "sandbox", "ttl": "30d"}, "exceeds the maximum"),
    ],
)
async def test_invalid_input_or_missing_module_is_refused_before_any_change(
    ts_env: WorkflowEnvironment, task_queue: str, recording: Any, kube: Any, aws: str, tf_root: Path,
    environment: str, extra: dict, why: str
) -> None:
    extra = dict(extra)
    tier = extra.pop("tier", "development")
    async with worker(ts_env, task_queue, recording, kube, tf_root):
        # as an API client would start it (the CLI refuses some of these itself): the run must refuse them too
        base = make_input("dev-ok", "development").model_dump()
        input = ProvisionEnvironmentInput.model_validate({**base, "environment": environment, "tier": tier, **extra})
        handle = await start(ts_env, task_queue, input)
        result: ProvisionEnvironmentResult = await handle.result()
        history = await handle.fetch_history()
    assert result.status == "Refused", result.summary
    assert why in result.reason and "nothing was changed" in result.reason
    assert not {"terraform_plan", "terraform_apply"} & set(scheduled(history))
    assert not tf_root.exists() or not any(tf_root.iterdir())
    assert [e.severity for e in recording[0].events if e.kind == "finished"] == ["warning"]
    # a start through the catalog (CLI, Slack, schedules) is refused at once (exit 2) when the parameter goes
    # through the catalog and the check needs no worker (the module folder is looked up on the worker)
    if environment not in ("dev-ws", "dev-mod"):
        with pytest.raises(ParameterError, match="blank" if not environment.strip() else why):
            make_input(environment, tier, **extra)


async def test_a_module_the_worker_cannot_read_is_refused(
    ts_env: WorkflowEnvironment, task_queue: str, recording: Any, kube: Any, aws: str, tf_root: Path
) -> None:
    async with worker(ts_env, task_queue, recording, kube, tf_root, {"terraform_check_module": module_unreadable}):
        result: ProvisionEnvironmentResult = await (
            await start(ts_env, task_queue, make_input("dev-perm", "development"))).result()
    assert result.status == "Refused" and "permission denied" in result.reason, result.summary
    assert "nothing was changed" in result.reason and not tf_root.exists()


async def test_rejected_or_timed_out_plan_is_rejected_and_nothing_applied(
    ts_env: WorkflowEnvironment, task_queue: str, recording: Any, kube: Any, aws: str, tf_root: Path
) -> None:
    async with worker(ts_env, task_queue, recording, kube, tf_root):
        handle = await start(ts_env, task_queue, make_input("stg-rej", "staging"))
        gate = (await status_when(handle, lambda s: s.gate is not None)).gate
        assert gate is not None
        await handle.execute_update(ProvisionEnvironment.reject,
                                    RejectInput(gate_id=gate.gate_id, approver="alice", reason="wrong size"))
        rejected: ProvisionEnvironmentResult = await handle.result()
        timed_out: ProvisionEnvironmentResult = await (
            await start(ts_env, task_queue, make_input("stg-late", "staging"))).result()  # 8 virtual hours
    for result, word in ((rejected, "rejected by alice: wrong size"), (timed_out, "timed out")):
        assert result.status == "Rejected", result.summary
        assert word in result.reason and "nothing was changed" in result.reason
        assert "apply" not in [s.name for s in result.steps] and not result.compensated
    assert TerraformAdapter(tf_root / "stg-rej").outputs() == {}  # nothing was applied


# ------------------------------------------------------------------------------------------------ abort and cancel
HELD = {"resolve": "terraform_check_module", "plan": "terraform_plan", "apply": "terraform_apply", "outputs": "terraform_outputs",
        "namespace": "k8s_apply_namespace", "record": "s3_put_json"}
BEFORE_APPLY = {"resolve", "plan", "approval"}
# A read (plan, outputs) is cut short; a change (apply, namespace, record) is finished, then undone.
RUNS_ON = {"resolve": False, "plan": False, "outputs": False, "apply": True, "namespace": True, "record": True}


@pytest.mark.parametrize(
    ("step", "how"),
    [("resolve", "abort"), ("plan", "abort"), ("approval", "abort"), ("apply", "abort"), ("outputs", "abort"), ("namespace", "abort"),
     ("record", "abort"), ("live", "abort"),
     ("plan", "cancel"), ("approval", "cancel"), ("apply", "cancel"), ("namespace", "cancel"), ("live", "cancel")],
)
async def test_abort_or_cancel_at_every_step(
    ts_env: WorkflowEnvironment, task_queue: str, recording: Any, kube: Any, aws: str, tf_root: Path,
    step: str, how: str
) -> None:
    env_name = f"sb-{how[:2]}-{step}"
    if step == "approval":  # a sandbox needs no approval: a staging environment waits at the gate
        input = make_input(env_name, "staging")
    else:
        input = make_input(env_name, "sandbox", ttl="8h")
    reals = activities(kube, tf_root, recording)
    hold = Hold(reals[HELD[step]]) if step in HELD else None
    replace: dict[str, Callable] = {HELD[step]: hold.fn} if hold else {}
    async with worker(ts_env, task_queue, recording, kube, tf_root, replace):
        handle = await start(ts_env, task_queue, input)
        if hold:
            await hold.started()
            await status_when(handle, lambda s: s.stage == step)
        elif step == "approval":
            await status_when(handle, lambda s: s.gate is not None)
        else:
            await status_when(handle, lambda s: s.details.get("phase") == "live")
        if how == "abort":
            await handle.execute_update(ProvisionEnvironment.abort, AbortInput(requested_by="zed", reason="stop"))
        elif hold:  # a held read completes only after the cancel was processed; a held change is never cancelled
            await handle.cancel()
        else:  # at the gate or live: a notification under way might complete while the cancel is processed
            await harness.cancel_settled(handle)
        if hold:
            # a change goes on to its end; a read was cut short and its activity cancelled
            await status_when(handle, lambda s: RUNS_ON[step] or s.status in ("Aborted", "RollingBack"))
            hold.release(run=RUNS_ON[step])
        result: ProvisionEnvironmentResult = await handle.result()
    assert result.status == "Aborted", result.summary
    if how == "cancel":
        assert "cancelled" in result.reason
    else:
        assert "aborted" in result.reason and "by zed: stop" in result.reason
    names = [s.name for s in result.steps]
    if step in BEFORE_APPLY:
        assert "nothing was changed" in result.reason and not result.compensated
        assert "apply" not in names and "destroy" not in names
        assert kube.fake.get("namespaces", None, env_name) is None
        return
    assert_gone(result, kube, tf_root, env_name)
    assert next(s for s in result.steps if s.name == "apply").status == "done"  # apply was never cut short
    if step in ("namespace", "record", "live"):
        assert f"namespace {env_name} deleted" in result.compensated
    if step in ("record", "live"):
        assert f"record s3://env-records/environments/{env_name}.json deleted" in result.compensated
    assert [e.severity for e in recording[0].events if e.kind == "finished"] == ["warning"]


@pytest.mark.parametrize("how", ["abort", "cancel"])
async def test_abort_or_cancel_during_teardown_still_finishes_it_and_ends_aborted(
    ts_env: WorkflowEnvironment, task_queue: str, recording: Any, kube: Any, aws: str, tf_root: Path, how: str
) -> None:
    hold = Hold(activities(kube, tf_root, recording)["terraform_destroy"])
    async with worker(ts_env, task_queue, recording, kube, tf_root, {"terraform_destroy": hold.fn}):
        handle = await start(ts_env, task_queue, make_input(f"sb-td-{how}", "sandbox", ttl="8h"))
        await status_when(handle, lambda s: s.details.get("phase") == "live")
        await handle.execute_update(ProvisionEnvironment.destroy_now, DestroyNowInput(requested_by="zed", reason="done"))
        await hold.started()
        if how == "abort":
            await handle.execute_update(ProvisionEnvironment.abort, AbortInput(requested_by="zed", reason="stop"))
        else:
            await handle.cancel()
        hold.release()
        result: ProvisionEnvironmentResult = await handle.result()
    assert result.status == "Aborted" and "destroy-now by zed" in result.reason, result.summary
    assert "during the teardown, which finished all the same" in result.reason
    assert_gone(result, kube, tf_root, f"sb-td-{how}")
    who = "zed" if how == "abort" else "temporal"  # a cancel is recorded as an abort by temporal
    assert any(a.action == "abort" and a.by == who for a in result.actions)
    assert f"aborted by {who} during the teardown" in result.reason


# ------------------------------------------------------------------------------------------------ teardown failure
async def test_teardown_that_cannot_delete_the_namespace_fails_the_run_naming_it(
    ts_env: WorkflowEnvironment, task_queue: str, recording: Any, kube: Any, aws: str, tf_root: Path
) -> None:
    async with worker(ts_env, task_queue, recording, kube, tf_root, {"k8s_delete_namespace": namespace_delete_denied}):
        handle = await start(ts_env, task_queue, make_input("sb-stuck", "sandbox", ttl="8h"))
        await status_when(handle, lambda s: s.details.get("phase") == "live")
        await handle.execute_update(ProvisionEnvironment.destroy_now, DestroyNowInput(requested_by="zed", reason="done"))
        with pytest.raises(WorkflowFailureError) as info:
            await handle.result()
    cause = info.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == errors.RUN_FAILED
    result = ProvisionEnvironmentResult.model_validate(cause.details[0])
    assert result.status == "Failed" and result.destroyed
    assert result.not_undone == ["namespace sb-stuck: delete failed: delete namespace sb-stuck: access denied (403)"]
    assert "NOT UNDONE" in result.summary
    assert kube.fake.get("namespaces", None, "sb-stuck") is not None
    assert "sb-stuck" not in workspaces(tf_root, "sb-stuck") and record("environments/sb-stuck.json") is None
    assert [e.severity for e in recording[0].events if e.kind == "failed"] == ["critical"]
