"""Helpers of the provisioning workflow tests: a worker with the real activities (any of them replaceable by name),
inputs as the catalog builds them, and activities a test can hold while it aborts or cancels the run."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import typing
import uuid
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator, Callable

from temporalio import activity
from temporalio.client import WorkflowHandle
from temporalio.exceptions import CancelledError
from temporalio.testing import WorkflowEnvironment

from activities.aws import S3Activities
from activities.kubernetes import KubernetesActivities
from activities.terraform import TerraformActivities, TerraformAdapter
from activities.vault import VaultReader
from core.approval import ApproveInput
from core.provision import ProvisionEnvironmentInput, ProvisionEnvironmentResult
from core.runbook import RunbookStatus
from tests import aws_session, harness
from workflows.provision import ProvisionEnvironment

from .conftest import MODULES

REPO = Path(__file__).resolve().parents[2]
BUCKET = "env-records"


def activities(kube: Any, tf_root: Path, recording: Any) -> dict[str, Callable]:
    """The real activities of the runbook by their registered names."""
    tf = TerraformActivities(VaultReader.from_env() if os.environ.get("VAULT_ADDR") else None, tf_root)
    k8s = KubernetesActivities(lambda context: kube.api)
    s3 = S3Activities(aws_session.activity_clients())  # a new AwsClients() per test parsed S3's model again
    acts = [tf.check_module, tf.plan, tf.apply, tf.outputs, tf.state_version, tf.destroy, k8s.get_namespace,
            k8s.apply_namespace, k8s.delete_namespace, s3.s3_put_json, s3.s3_delete_object, recording[1].notify]
    return {activity_name(a): a for a in acts}


def activity_name(fn: Callable) -> str:
    defn = activity._Definition.from_callable(fn)
    assert defn is not None and defn.name
    return defn.name


@asynccontextmanager
async def worker(env: WorkflowEnvironment, task_queue: str, recording: Any, kube: Any, tf_root: Path,
                 replace: dict[str, Callable] | None = None) -> AsyncIterator[dict[str, Callable]]:
    acts = activities(kube, tf_root, recording)
    real = dict(acts)
    acts.update(replace or {})
    async with harness.running_worker(env.client, task_queue, [ProvisionEnvironment], list(acts.values())):
        yield real


def make_input(environment: str, tier: str, secret_ref: str | None = None, **extra: Any) -> ProvisionEnvironmentInput:
    catalog = harness.stock_catalog()
    params: dict[str, Any] = {"environment": environment, "tier": tier, "module": str(MODULES / "app"),
                              "record_bucket": BUCKET}
    if secret_ref:
        params["secrets"] = {"db_password": secret_ref}
    params.update({k: v for k, v in extra.items() if k in catalog.get("provision-environment").parameters})
    plan = catalog.plan_start("provision-environment", params, requested_by="zed",
                              inputs={"ProvisionEnvironment": ProvisionEnvironmentInput})
    data = plan.input.model_dump()
    for key, value in extra.items():
        if key == "meta":
            data["meta"].update(value)
        elif key not in params:
            data[key] = value
    return ProvisionEnvironmentInput.model_validate(data)


async def start(env: WorkflowEnvironment, task_queue: str, input: ProvisionEnvironmentInput) -> WorkflowHandle:
    return await env.client.start_workflow(ProvisionEnvironment.run, input, id=f"prov-{uuid.uuid4().hex[:8]}",
                                           task_queue=task_queue)


def latest(env: WorkflowEnvironment, handle: WorkflowHandle) -> WorkflowHandle:
    """The run now current (after continue-as-new), not the first one."""
    return env.client.get_workflow_handle(handle.id, result_type=handle._result_type)


async def status_when(handle: WorkflowHandle, predicate: Any, timeout: float = 30) -> RunbookStatus:
    deadline = asyncio.get_running_loop().time() + timeout
    reads = 0
    while True:
        status = await handle.query(ProvisionEnvironment.status)
        if predicate(status):
            return status
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not reached; status {status.status} {status.stage}")
        await harness.backoff(reads)
        reads += 1


async def approve(handle: WorkflowHandle, gate_id: str, who: str, binding: str | None) -> None:
    await handle.execute_update(ProvisionEnvironment.approve, ApproveInput(gate_id=gate_id, approver=who, binding=binding))


async def history_json(handle: WorkflowHandle) -> str:
    return json.dumps((await handle.fetch_history()).to_json_dict())


def record(key: str) -> dict | None:
    s3 = aws_session.client("s3")
    try:
        return json.loads(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())
    except s3.exceptions.NoSuchKey:
        return None
    except s3.exceptions.NoSuchBucket:
        return None


class Hold:
    """Wraps a real (synchronous) activity so that it waits, heartbeating, until the test releases it: the test can
    act while the step runs. ``entered`` is set when the activity starts; ``release()`` lets it go on."""

    def __init__(self, fn: Callable) -> None:
        self.entered = threading.Event()
        self._release = threading.Event()
        self.cancelled = False
        self._run = True
        hints = typing.get_type_hints(fn)

        def held(input: Any) -> Any:
            self.entered.set()
            while not self._release.wait(0.05):
                activity.heartbeat()
                if activity.is_cancelled():
                    self.cancelled = True
                    raise CancelledError("cancelled while held")
            if not self._run:
                raise CancelledError("dropped by the test")
            return fn(input)

        held.__annotations__ = {"input": next(v for k, v in hints.items() if k != "return"), "return": hints["return"]}
        self.fn = activity.defn(name=activity_name(fn))(held)

    def release(self, run: bool = True) -> None:
        """Let the activity go on: do its real work (``run``) or give up as if cancelled."""
        self._run = run
        self._release.set()

    async def started(self, timeout: float = 30) -> None:
        loop = asyncio.get_running_loop()
        if not await loop.run_in_executor(None, self.entered.wait, timeout):
            raise AssertionError("the held activity never started")


def workspaces(tf_root: Path, environment: str) -> list[str]:
    if not (tf_root / environment / ".terraform").is_dir():
        return []
    return TerraformAdapter(tf_root / environment).workspaces()


def assert_gone(result: ProvisionEnvironmentResult, kube: Any, tf_root: Path, environment: str) -> None:
    """Everything the run applied is gone, and the result says so."""
    assert result.destroyed and not result.not_undone, result.summary
    assert environment not in workspaces(tf_root, environment)
    assert kube.fake.get("namespaces", None, environment) is None
    assert record(f"environments/{environment}.json") is None
    assert any(c.startswith(f"workspace {environment} destroyed") for c in result.compensated), result.compensated
