"""The ``k8s_run_job`` activity (a release's ``job`` check) against the Kubernetes fake through the real client: a
Job created once under its deterministic name (a retried attempt finds it), waited on until Complete or Failed, the
tail of its pod's log in the outcome, deleted when the wait is cancelled."""

from __future__ import annotations

import threading
import time
from typing import Iterator

import pytest
from temporalio.exceptions import ApplicationError, CancelledError
from temporalio.testing import ActivityEnvironment

from activities.kubernetes import KubernetesActivities
from core.kubernetes import LOG_TAIL_LINES, JobRunInput
from tests.fakes.kubernetes import KubeHandle, kube_fake

NS = "checks"


@pytest.fixture
def kube() -> Iterator[KubeHandle]:
    with kube_fake() as handle:
        handle.fake.put_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
        yield handle


def job(name: str = "e2e-0123456789", backoff_limit: int = 0) -> JobRunInput:
    return JobRunInput(namespace=NS, name=name, image="e2e:v2", command=["pytest"], args=["-q", "suite/"],
                       poll_seconds=0.05, deadline_seconds=30, backoff_limit=backoff_limit)


def test_a_job_that_completes_passes_and_a_retry_finds_it_instead_of_creating_a_second(kube: KubeHandle) -> None:
    kube.fake.set_job(NS, "complete", after=3, log="collected 4 items\n4 passed in 1.2s")
    acts = KubernetesActivities(lambda context: kube.api)
    outcome = ActivityEnvironment().run(acts.run_job, job())
    assert outcome.succeeded and outcome.condition == "Complete" and outcome.created
    assert outcome.log_tail == "collected 4 items\n4 passed in 1.2s"
    assert outcome.pod is not None and outcome.pod.startswith("e2e-0123456789-")
    live = kube.fake.get("jobs", NS, "e2e-0123456789")
    assert live is not None
    container = live["spec"]["template"]["spec"]["containers"][0]
    assert (container["image"], container["command"], container["args"]) == ("e2e:v2", ["pytest"], ["-q", "suite/"])
    assert live["spec"]["backoffLimit"] == 0 and live["spec"]["activeDeadlineSeconds"] == 30
    assert live["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    again = ActivityEnvironment().run(acts.run_job, job())  # a retried attempt: the same name
    assert again.succeeded and not again.created
    assert len(kube.fake.calls("POST", "/jobs")) == 1


def test_a_failed_job_fails_with_its_reason_and_a_bounded_log_tail(kube: KubeHandle) -> None:
    kube.fake.set_job(NS, "failed", after=1, log="\n".join(f"step {i}: ok" for i in range(50)) + "\nAssertionError")
    outcome = ActivityEnvironment().run(KubernetesActivities(lambda context: kube.api).run_job, job(backoff_limit=2))
    assert not outcome.succeeded and outcome.condition == "Failed" and outcome.reason == "BackoffLimitExceeded"
    lines = outcome.log_tail.splitlines()
    assert len(lines) == LOG_TAIL_LINES and lines[-1] == "AssertionError"
    assert "job checks/e2e-0123456789 Failed (BackoffLimitExceeded" in outcome.summary()


def test_a_name_taken_by_another_job_is_refused(kube: KubeHandle) -> None:
    acts = KubernetesActivities(lambda context: kube.api)
    ActivityEnvironment().run(acts.run_job, job())
    with pytest.raises(ApplicationError) as err:
        ActivityEnvironment().run(acts.run_job, job().model_copy(update={"image": "other:v1"}))
    assert err.value.type == "InvalidInput" and "not this check's Job" in err.value.message


def test_a_cancelled_wait_deletes_the_job_and_its_pod(kube: KubeHandle) -> None:
    kube.fake.set_job(NS, "running")
    env = ActivityEnvironment()

    def cancel_once_created() -> None:  # the cancel arrives while the Job runs (a loaded machine may be slow to create it)
        deadline = time.monotonic() + 30
        while kube.fake.get("jobs", NS, "e2e-0123456789") is None and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.2)
        env.cancel()

    threading.Thread(target=cancel_once_created, daemon=True).start()
    # the test environment raises the cancel into the thread; a worker without that raiser lets the wait return
    with pytest.raises((ApplicationError, CancelledError)):
        env.run(KubernetesActivities(lambda context: kube.api).run_job, job())
    assert kube.fake.get("jobs", NS, "e2e-0123456789") is None
    assert not [key for key in kube.fake.objects if key[0] == "pods"]


def test_a_job_in_a_namespace_that_does_not_exist_is_not_found(kube: KubeHandle) -> None:
    with pytest.raises(ApplicationError) as err:
        ActivityEnvironment().run(KubernetesActivities(lambda context: kube.api).run_job,
                                  job().model_copy(update={"namespace": "nowhere"}))
    assert err.value.type == "NotFound" and "nowhere" in err.value.message
