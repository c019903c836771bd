"""`runbook catalog` and `runbook catalog validate` (no server needed): the folder asked for is the one validated,
and a runbook whose approval depends on the environment shows every environment's rule."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from starters.cli import app

GROUPS = "groups: {sre: [dave, erin], platform: [frank], security: [carol]}\n"
CHANGE = """
    name: env-change
    description: A change whose approval depends on the environment.
    workflow: GatedChange
    target: "{service}"
    environment: "{environment}"
    concurrency_key: "env-change:{service}"
    parameters:
      service: {type: string, required: true}
      environment: {type: string, default: staging}
    approval:
      groups: [sre]
    approval_by_environment:
      production:
        groups: [platform, security]
        required_groups: [platform, security]
        required_approvals: 2
      development:
        required_approvals: 0
"""


@pytest.fixture
def catalogs(tmp_path: Path, monkeypatch) -> tuple[Path, Path]:
    good, bad = tmp_path / "good", tmp_path / "bad"
    for folder in (good, bad):
        folder.mkdir()
        (folder / "groups.yaml").write_text(GROUPS)
    (good / "env-change.yaml").write_text(textwrap.dedent(CHANGE))
    (bad / "broken.yaml").write_text(textwrap.dedent(CHANGE).replace("workflow: GatedChange", "workflow: NoSuchFlow"))
    monkeypatch.setenv("RUNBOOK_WORKFLOW_MODULES", '["tests.core.gated_workflows"]')
    monkeypatch.delenv("RUNBOOK_CATALOG_DIR", raising=False)
    return good, bad


def runbook(*args: str):
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})


def test_validate_checks_the_folder_given_with_catalog_option(catalogs):
    good, bad = catalogs
    ok = runbook("catalog", "--catalog", str(good), "validate")
    assert ok.exit_code == 0 and f"1 runbooks in {good}" in ok.stdout, ok.output
    broken = runbook("catalog", "--catalog", str(bad), "validate")
    assert broken.exit_code == 2, broken.output
    assert "broken.yaml" in broken.stderr and "unknown workflow type 'NoSuchFlow'" in broken.stderr
    positional = runbook("catalog", "validate", str(bad))
    assert positional.exit_code == 2 and "broken.yaml" in positional.stderr


def test_catalog_lists_every_environments_approval_rule(catalogs):
    good, _ = catalogs
    listed = runbook("catalog", "--catalog", str(good))
    assert listed.exit_code == 0, listed.output
    assert "production: 2 of platform, security (each of platform, security)" in listed.stdout
    assert "development: none" in listed.stdout
    assert "other: 1 of sre" in listed.stdout
