"""The release's ``job`` check end to end on the time-skipping server: the product's Release with its CanaryRamp
children (stand-in ALBs and metrics, tests/release/stand_ins.py), the real PostgreSQL ledger, and the Kubernetes
fake (the real client over HTTP) playing the Job controller, which the test tells to complete or fail the Job."""

from __future__ import annotations

import uuid
from typing import Any, AsyncIterator

import pytest
import pytest_asyncio
from temporalio.testing import WorkflowEnvironment

from activities.kubernetes import KubernetesActivities
from activities.release_ledger import ReleaseLedgerActivities
from core.catalog import ParameterError
from core.release import LedgerQuery, job_name
from starters.render import stage_lines
from tests import harness
from tests.fakes.kubernetes import KubeHandle, kube_fake
from tests.release.stand_ins import Fleet
from tests.release.test_release import CATALOG, Releases, seed, single
from workflows.canary_ramp import CanaryRamp
from workflows.registry import inputs
from workflows.release import Release

SESSION_LOOP = pytest.mark.asyncio(loop_scope="session")  # not module-wide: one test here is sync
NS = "release-checks"


def e2e(**kw: Any) -> dict[str, Any]:
    return {"kind": "job", "name": "e2e", "image": "registry.local/e2e:{version}", "command": ["pytest"],
            "args": ["-q", "--base-url=https://{service}.{stage}.internal"], "namespace": NS,
            "poll_interval": "200ms", "timeout": "5m", **kw}


class JobReleases(Releases):
    def __init__(self, *args: Any, kube: KubeHandle) -> None:
        super().__init__(*args)
        self.kube = kube


@pytest_asyncio.fixture(loop_scope="session")
async def release(ts_env: WorkflowEnvironment, postgres: str, task_queue: str, recording) -> AsyncIterator[JobReleases]:
    fleet, ledger = Fleet(), ReleaseLedgerActivities(postgres)
    with kube_fake() as kube:
        kube.fake.put_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
        acts = [*fleet.activities(), ledger.ledger_read, ledger.ledger_record, recording[1].notify,
                KubernetesActivities(lambda context: kube.api).run_job]
        async with harness.running_worker(ts_env.client, task_queue, [Release, CanaryRamp], acts):
            yield JobReleases(ts_env, task_queue, fleet, ledger, kube=kube)


@SESSION_LOOP
async def test_a_job_check_that_completes_passes_the_stage_with_its_outcome_in_the_result(release: JobReleases) -> None:
    release.kube.fake.set_job(NS, "complete", after=3, log="collected 12 items\n12 passed in 3.1s")
    run = await release([single("staging", checks=[e2e()])])
    result = await run.result()
    assert result.status == "Succeeded", result.summary
    [check] = result.stages[0].checks
    name = job_name("e2e", run.handle.id, run.handle.result_run_id or "", "staging")
    assert check["passed"] and check["kind"] == "job" and check["where"] == "staging"
    assert check["job"]["condition"] == "Complete" and check["job"]["name"] == name
    assert check["job"]["log_tail"] == "collected 12 items\n12 passed in 3.1s"
    shown = stage_lines(result.model_dump(mode="json"))  # `runbook status` / `watch`
    assert f"  check e2e (job, after staging): passed  job {NS}/{name} Complete (CompletionsReached: Reached expected " \
        "number of succeeded pods)" in shown
    job = release.kube.fake.get("jobs", NS, name)
    assert job is not None
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "registry.local/e2e:v2"  # {version} expanded
    assert container["args"] == ["-q", f"--base-url=https://{result.service}.staging.internal"]
    assert job["metadata"]["annotations"]["runbook-automation/workflow-id"] == run.handle.id
    assert len(release.kube.fake.calls("POST", f"/namespaces/{NS}/jobs")) == 1
    assert release.ledger.ledger_read(LedgerQuery(service=result.service)).last_good == {"staging": "v2"}


@SESSION_LOOP
async def test_a_failed_job_check_stops_the_line_marks_the_version_bad_and_restores(release: JobReleases) -> None:
    service = f"svc-{uuid.uuid4().hex[:8]}"
    seed(release.ledger, service, "v1", environment="staging")
    release.kube.fake.set_job(NS, "failed", prefix="smoke-e2e", after=2,
                              log="\n".join(f"test_{n} PASSED" for n in range(30)) + "\ntest_checkout FAILED")
    run = await release([single("staging", checks=[e2e(name="smoke-e2e", backoff_limit=1)])], service=service)
    result = await run.result()
    assert result.status == "RolledBack", result.summary
    assert result.reason.startswith("stop the line: staging check smoke-e2e failed: job release-checks/smoke-e2e-")
    assert "Failed (BackoffLimitExceeded" in result.reason
    [check] = result.stages[0].checks
    assert not check["passed"] and check["job"]["reason"] == "BackoffLimitExceeded"
    tail = check["job"]["log_tail"].splitlines()
    assert len(tail) == 20 and tail[-1] == "test_checkout FAILED"  # bounded: the last 20 lines
    assert result.marked_bad and "v2" in release.ledger.ledger_read(LedgerQuery(service=service)).bad
    wave = result.stages[0].waves[0]
    assert wave.phase == "restored" and result.compensated[0].startswith("staging/all back on v1")


@SESSION_LOOP
async def test_a_job_check_that_cannot_run_stops_the_line_without_marking_the_version_bad(
        release: JobReleases) -> None:
    service = f"svc-{uuid.uuid4().hex[:8]}"
    seed(release.ledger, service, "v1", environment="staging")
    run = await release([single("staging", checks=[e2e(namespace="no-such-namespace")])], service=service)
    result = await run.result()
    assert result.status == "RolledBack", result.summary
    assert "could not run" in result.reason and "no-such-namespace" in result.reason
    assert not result.marked_bad
    assert "v2" not in release.ledger.ledger_read(LedgerQuery(service=service)).bad
    assert result.stages[0].waves[0].phase == "restored"  # the line stopped all the same: back on v1


def test_a_bad_job_spec_is_refused_naming_the_field() -> None:
    def refusal(check: dict[str, Any]) -> str:
        with pytest.raises(ParameterError) as err:
            CATALOG.plan_start("release", {"service": "shop", "version": "v2",
                                           "stages": [single("staging", checks=[check])]},
                               requested_by="dave", inputs=inputs())
        return str(err.value)

    assert "stages.0.checks.0.job.image" in refusal({"kind": "job", "name": "e2e"})
    assert "stages.0.checks.0.job.namespace" in refusal(e2e(namespace="Not_A_Label"))
    assert "timeout must be between 1s and 24h" in refusal(e2e(timeout="0s"))
    assert "stages.0.checks.0.job.backoff_limit" in refusal(e2e(backoff_limit=-1))
    assert "image must not contain blanks" in refusal(e2e(image="e2e v2"))
    assert "stages.0.checks.0" in refusal({"kind": "load", "name": "x"}) and "kind must be http or job" in refusal(
        {"kind": "load", "name": "x"})
