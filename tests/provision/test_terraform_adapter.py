"""The python-terraform adapter against the real Terraform 1.0.3 binary: one test per known bug of
python-terraform 0.10.1 with Terraform 1.x (each shows the library's bug, then the adapter's working call)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from python_terraform import IsFlagged, Terraform, TerraformCommandError

from activities.terraform import ANSI, TerraformAdapter, TerraformFailed, default_terraform_bin

from .conftest import MODULES

pytestmark = pytest.mark.filterwarnings("ignore:The 'warn' method is deprecated:DeprecationWarning")

VARS = {"environment": "unit", "tier": "development"}


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    wd = tmp_path / "wd"
    shutil.copytree(MODULES / "app", wd)
    return wd


@pytest.fixture
def adapter(workdir: Path) -> TerraformAdapter:
    tf = TerraformAdapter(workdir)
    tf.init()
    tf.select_workspace("unit")
    return tf


def raw(workdir: Path) -> Terraform:
    return Terraform(working_dir=str(workdir), terraform_bin_path=default_terraform_bin())


def applied(adapter: TerraformAdapter, workdir: Path, variables: dict | None = None) -> None:
    assert adapter.plan(str(workdir / "p.tfplan"), variables or VARS)
    adapter.apply_plan(str(workdir / "p.tfplan"))


def test_bug1_destroy_force_flag(adapter: TerraformAdapter, workdir: Path) -> None:
    assert "-force" in raw(workdir).generate_cmd_string("destroy", force=IsFlagged)
    rc, _, err = raw(workdir).destroy(var=VARS)  # the library's default
    assert rc != 0 and "-force" in err
    applied(adapter, workdir)
    assert adapter.outputs()
    assert "Destroy complete!" in adapter.destroy(VARS)
    assert adapter.outputs() == {}


def test_bug2_apply_never_prompts(adapter: TerraformAdapter, workdir: Path) -> None:
    cmd = raw(workdir).generate_cmd_string("apply", **{"auto-approve": False})
    assert "-auto-approve=false" in cmd  # what apply() sends without skip_plan=True: Terraform would prompt
    assert adapter.plan(str(workdir / "p.tfplan"), VARS)
    # The adapter always passes skip_plan=True (-auto-approve) and gives Terraform stdin=/dev/null.
    assert "Apply complete!" in adapter.apply_plan(str(workdir / "p.tfplan"))


def test_bug3_named_output(adapter: TerraformAdapter, workdir: Path) -> None:
    applied(adapter, workdir)
    with pytest.raises(TypeError):
        raw(workdir).output("hostname")
    assert adapter.output("hostname") == "unit.development.example.internal"
    assert adapter.outputs()["database_url"]["sensitive"] is True


def test_bug4_detailed_exitcode(adapter: TerraformAdapter, workdir: Path) -> None:
    with pytest.raises(TerraformCommandError) as info:
        raw(workdir).plan(var=VARS, raise_on_error=True, out="x.tfplan")
    assert info.value.returncode == 2  # "changes", not an error
    assert adapter.plan(str(workdir / "p.tfplan"), VARS) is True
    adapter.apply_plan(str(workdir / "p.tfplan"))
    assert adapter.plan(str(workdir / "q.tfplan"), VARS) is False


def test_bug5_positional_directory(adapter: TerraformAdapter, workdir: Path, tmp_path: Path) -> None:
    elsewhere = Terraform(working_dir=str(tmp_path), terraform_bin_path=default_terraform_bin())
    rc, _, err = elsewhere.plan(str(workdir), var=VARS)
    assert rc == 1 and err
    # The adapter never passes a directory: the working dir is the process's cwd, whatever ours is.
    assert adapter.plan(str(workdir / "p.tfplan"), VARS) is True


def test_bug6_saved_plan_with_var_file(adapter: TerraformAdapter, workdir: Path) -> None:
    assert adapter.plan(str(workdir / "p.tfplan"), VARS)
    rc, out, err = raw(workdir).apply("p.tfplan", skip_plan=True)  # variables={} still becomes -var-file
    assert rc == 1 and "Can't set variables when applying a saved plan" in ANSI.sub("", err)
    assert "Apply complete!" in adapter.apply_plan(str(workdir / "p.tfplan"))


def test_bug7_synchronous_leaks(adapter: TerraformAdapter, workdir: Path) -> None:
    assert "-synchronous=false" in raw(workdir).generate_cmd_string("version", synchronous=False)
    rc, out, _ = adapter.tf.cmd("version", synchronous=False)
    assert rc == 0 and "Terraform v1.0.3" in out


def test_bug8_workspace_colours_and_state_path(adapter: TerraformAdapter, workdir: Path) -> None:
    rc, out, _ = raw(workdir).create_workspace("coloured")
    assert rc == 0 and "\x1b[" in out
    assert adapter.select_workspace("unit") is False
    assert set(adapter.workspaces()) == {"default", "unit", "coloured"}
    assert adapter.current_workspace() == "unit"
    applied(adapter, workdir)
    lib = raw(workdir)
    lib.read_state_file()
    assert lib.tfstate.native_data is None  # it looked for ./terraform.tfstate, not the workspace's state
    state = adapter.state()
    assert state["outputs"]["hostname"]["value"] == "unit.development.example.internal"
    assert (workdir / "terraform.tfstate.d" / "unit" / "terraform.tfstate").exists()


def test_secrets_reach_only_the_terraform_process(adapter: TerraformAdapter, workdir: Path) -> None:
    import os

    env = {"TF_VAR_db_password": "only-for-terraform"}
    assert adapter.plan(str(workdir / "p.tfplan"), VARS, env=env)
    adapter.apply_plan(str(workdir / "p.tfplan"))
    assert "TF_VAR_db_password" not in os.environ
    assert adapter.output("db_password_set") is True
    assert adapter.output("database_url").startswith("postgres://app:only-for-terraform@")


def test_terraform_error_text(workdir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(MODULES / "broken", broken)
    tf = TerraformAdapter(broken)
    tf.init()
    with pytest.raises(TerraformFailed) as info:
        tf.plan(str(broken / "p.tfplan"), VARS)
    assert "Output refers to sensitive values" in info.value.text and "\x1b[" not in info.value.text
