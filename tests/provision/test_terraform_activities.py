"""TerraformActivities alone (ActivityEnvironment): retry after a crash never applies twice, typed failures
carry Terraform's own text (lock: retryable; configuration: not), a tampered plan is refused."""

from __future__ import annotations

import fcntl
import shutil
from pathlib import Path

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.terraform import TerraformActivities, TerraformFailed, classify
from core import errors
from core.provision import (
    PLAN_STALE,
    ApplyInput,
    DestroyInput,
    ModuleCheckInput,
    OutputsInput,
    PlanInput,
    StateInput,
    TerraformTarget,
)

from .conftest import MODULES


def target(name: str, module: str = "app", **variables: object) -> TerraformTarget:
    return TerraformTarget(environment=name, workspace=name, module=str(MODULES / module),
                           variables={"environment": name, "tier": "development", **variables})


@pytest.fixture
def run() -> ActivityEnvironment:
    return ActivityEnvironment()


def test_apply_retried_after_a_crash_does_not_apply_twice(run: ActivityEnvironment, tf_root: Path) -> None:
    acts = TerraformActivities(None, tf_root)
    t = target("crash")
    plan = run.run(acts.plan, PlanInput(target=t))
    assert plan.has_changes and (tf_root / "crash" / "plans" / f"{plan.plan_hash[7:]}.tfplan").exists()
    assert run.run(acts.apply, ApplyInput(target=t, plan_hash=plan.plan_hash)).outcome == "applied"
    # The worker died before the result was recorded: Temporal retries the same apply.
    assert run.run(acts.apply, ApplyInput(target=t, plan_hash=plan.plan_hash)).outcome == "already_applied"
    assert run.run(acts.outputs, OutputsInput(target=t)).values["hostname"] == "crash.development.example.internal"
    assert not run.run(acts.plan, PlanInput(target=t)).has_changes


def test_state_lock_is_transient_with_terraforms_text(run: ActivityEnvironment, tf_root: Path) -> None:
    acts = TerraformActivities(None, tf_root)
    t = target("locked")
    run.run(acts.apply, ApplyInput(target=t, plan_hash=run.run(acts.plan, PlanInput(target=t)).plan_hash))
    t2 = target("locked", replicas=4)
    plan = run.run(acts.plan, PlanInput(target=t2))
    with open(tf_root / "locked" / "terraform.tfstate.d" / "locked" / "terraform.tfstate", "r+") as held:
        fcntl.lockf(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(ApplicationError) as info:
            run.run(acts.apply, ApplyInput(target=t2, plan_hash=plan.plan_hash))
    assert info.value.type == errors.TRANSIENT and not info.value.non_retryable
    assert "Error acquiring the state lock" in info.value.message
    assert run.run(acts.apply, ApplyInput(target=t2, plan_hash=plan.plan_hash)).outcome == "applied"


def test_configuration_error_is_invalid_input(run: ActivityEnvironment, tf_root: Path) -> None:
    acts = TerraformActivities(None, tf_root)
    with pytest.raises(ApplicationError) as info:
        run.run(acts.plan, PlanInput(target=target("broken", "broken")))
    assert info.value.type == errors.INVALID_INPUT and info.value.non_retryable
    assert "Output refers to sensitive values" in info.value.message
    with pytest.raises(ApplicationError) as info:
        run.run(acts.plan, PlanInput(target=target("nomodule", "does-not-exist")))
    assert info.value.type == errors.INVALID_INPUT


def test_tampered_or_missing_plan_is_stale(run: ActivityEnvironment, tf_root: Path) -> None:
    acts = TerraformActivities(None, tf_root)
    t = target("tamper")
    plan = run.run(acts.plan, PlanInput(target=t))
    path = tf_root / "tamper" / "plans" / f"{plan.plan_hash[7:]}.tfplan"
    path.write_bytes(path.read_bytes() + b"x")
    with pytest.raises(ApplicationError) as info:
        run.run(acts.apply, ApplyInput(target=t, plan_hash=plan.plan_hash))
    assert info.value.type == PLAN_STALE
    with pytest.raises(ApplicationError) as info:
        run.run(acts.apply, ApplyInput(target=t, plan_hash="sha256:" + "1" * 64))
    assert info.value.type == PLAN_STALE and "plan again" in info.value.message


def test_destroy_is_idempotent(run: ActivityEnvironment, tf_root: Path) -> None:
    acts = TerraformActivities(None, tf_root)
    t = target("gone")
    run.run(acts.apply, ApplyInput(target=t, plan_hash=run.run(acts.plan, PlanInput(target=t)).plan_hash))
    assert run.run(acts.destroy, DestroyInput(target=t)).destroyed
    assert run.run(acts.destroy, DestroyInput(target=t)).destroyed


def test_init_runs_again_only_when_the_module_changed(run: ActivityEnvironment, tf_root: Path, tmp_path: Path) -> None:
    """The working dir is initialised once per content of the module: a second plan or a destroy of the same module
    skips ``terraform init`` (the slowest command); a module that gained a child module is initialised again, or
    its plan would fail ("Module not installed")."""
    module = tmp_path / "app"
    shutil.copytree(MODULES / "app", module)
    acts = TerraformActivities(None, tf_root)
    t = target("reinit").model_copy(update={"module": str(module)})
    run.run(acts.apply, ApplyInput(target=t, plan_hash=run.run(acts.plan, PlanInput(target=t)).plan_hash))
    mark = tf_root / "reinit" / ".terraform" / "runbook-init.sha256"
    first = mark.stat().st_mtime_ns
    assert not run.run(acts.plan, PlanInput(target=t)).has_changes
    assert mark.stat().st_mtime_ns == first  # not initialised again
    (module / "child").mkdir()
    (module / "child" / "main.tf").write_text('output "zone" { value = "internal" }\n')
    (module / "child.tf").write_text('module "child" { source = "./child" }\noutput "zone" { value = module.child.zone }\n')
    changed = run.run(acts.plan, PlanInput(target=t))
    assert changed.output_changes == {"zone": "create"}
    assert mark.stat().st_mtime_ns != first
    assert run.run(acts.destroy, DestroyInput(target=t)).destroyed


def test_module_check_is_read_only_and_says_what_is_missing(run: ActivityEnvironment, tf_root: Path,
                                                            tmp_path: Path) -> None:
    acts = TerraformActivities(None, tf_root)
    assert run.run(acts.check_module, ModuleCheckInput(module=str(MODULES / "app"))).found
    missing = run.run(acts.check_module, ModuleCheckInput(module=str(MODULES / "does-not-exist")))
    assert not missing.found and "does not exist" in missing.detail
    (tmp_path / "empty").mkdir()
    empty = run.run(acts.check_module, ModuleCheckInput(module=str(tmp_path / "empty")))
    assert not empty.found and "no *.tf files" in empty.detail
    assert not tf_root.exists()  # nothing written


def test_plan_records_its_prior_state_and_state_version_tells_whether_an_apply_wrote(
    run: ActivityEnvironment, tf_root: Path
) -> None:
    acts = TerraformActivities(None, tf_root)
    t = target("prior")
    assert not run.run(acts.state_version, StateInput(target=t)).exists  # no working dir yet
    fresh = run.run(acts.plan, PlanInput(target=t))
    assert fresh.prior_empty and (fresh.prior_lineage, fresh.prior_serial) == ("", 0)
    before = run.run(acts.state_version, StateInput(target=t))
    assert before.exists and (before.lineage, before.serial) == ("", 0)  # the apply has not written yet
    run.run(acts.apply, ApplyInput(target=t, plan_hash=fresh.plan_hash))
    after = run.run(acts.state_version, StateInput(target=t))
    assert after.lineage and after.serial >= 1
    update = run.run(acts.plan, PlanInput(target=target("prior", replicas=3)))
    assert not update.prior_empty and (update.prior_lineage, update.prior_serial) == (after.lineage, after.serial)


@pytest.mark.parametrize("text, kind", [
    ("Error: Failed to get existing workspaces: RequestError: send request failed\ndial tcp 10.0.0.1:443: i/o timeout",
     errors.TRANSIENT),
    ("Error: error loading state: connection refused", errors.TRANSIENT),
    ("Error: Saved plan is stale", PLAN_STALE),
    ('Error: Reference to undeclared input variable "x"', errors.INVALID_INPUT),
])
def test_classification(text: str, kind: str) -> None:
    err = classify(TerraformFailed("plan", 1, text + " hunter2"), {"TF_VAR_p": "hunter2"})
    assert err.type == kind and "hunter2" not in err.message and text.splitlines()[0] in err.message


def test_get_namespace_reads_without_writing(kube) -> None:
    from activities.kubernetes import KubernetesActivities
    from core.kubernetes import NamespaceRef, NamespaceSpec

    k8s = KubernetesActivities(lambda context: kube.api)
    env = ActivityEnvironment()
    assert not env.run(k8s.get_namespace, NamespaceRef(name="ns-read")).exists
    env.run(k8s.apply_namespace, NamespaceSpec(name="ns-read", labels={"team": "a"}))
    writes = len(kube.fake.calls("POST")) + len(kube.fake.calls("PATCH")) + len(kube.fake.calls("DELETE"))
    assert writes >= 1  # the fake counts writes
    state = env.run(k8s.get_namespace, NamespaceRef(name="ns-read"))
    assert state.exists and state.labels["team"] == "a"
    assert len(kube.fake.calls("POST")) + len(kube.fake.calls("PATCH")) + len(kube.fake.calls("DELETE")) == writes
