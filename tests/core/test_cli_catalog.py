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


@pytest.fixture(autouse=True)
def fresh_consoles(monkeypatch) -> None:
    """The CLI makes its consoles on first use, once per process: each test gets its own, as a command would."""
    from starters import cli

    monkeypatch.setattr(cli.out, "_console", None)
    monkeypatch.setattr(cli.err, "_console", None)


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


def runbook(*args: str, columns: str = "200"):
    return CliRunner().invoke(app, list(args), env={"COLUMNS": columns})


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


def test_an_error_is_printed_as_text_not_markup(monkeypatch):
    """The console took `[...]` in an error for Rich markup and swallowed it (seen with a routing table's errors)."""
    import io

    from rich.console import Console

    from starters import cli

    buf = io.StringIO()
    monkeypatch.setattr(cli, "err", Console(file=buf, width=200, color_system=None))
    cli._error("routing.yaml:3: routes[0].kinds: [approval_needed] listed twice [type=value_error]")
    assert buf.getvalue() == "error: routing.yaml:3: routes[0].kinds: [approval_needed] listed twice [type=value_error]\n"


def test_piped_catalog_table_is_complete_whatever_COLUMNS_says(catalogs):
    """Piped output is never cut at $COLUMNS (80 in CI and in pytest-xdist's workers)."""
    good, _ = catalogs
    listed = runbook("catalog", "--catalog", str(good), columns="80")
    assert listed.exit_code == 0 and "production: 2 of platform, security (each of platform, security)" in listed.stdout, \
        listed.stdout
