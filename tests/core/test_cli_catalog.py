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


CALENDAR = """\
timezone: Europe/Berlin
break_glass: {groups: [sre], timeout: 4h}
windows:
  - name: year-end
    description: year-end change freeze
    start: 2026-12-23T00:00
    end: 2027-01-04T00:00
    rrule: FREQ=YEARLY
    environments: [production]
    exempt: [env-change]
"""


def test_calendar_shows_each_window_now_and_next(catalogs):
    """`runbook calendar` (issue 13): the window in force at --at with its end, and the next occurrences."""
    import json

    good, _ = catalogs
    (good / "calendar.yaml").write_text(CALENDAR)
    frozen = runbook("calendar", "--catalog", str(good), "--at", "2026-12-25T10:00")
    assert frozen.exit_code == 0, frozen.output
    assert "year-end" in frozen.stdout and "FROZEN until 2027-01-03 23:00" in frozen.stdout  # Berlin: UTC+1
    assert "production" in frozen.stdout and "env-change" in frozen.stdout and "sre" in frozen.stdout
    assert "2027-12-22 23:00 -> 2028-01-03 23:00" in frozen.stdout  # the next year's occurrence
    open_ = runbook("calendar", "--catalog", str(good), "--at", "2026-12-01T00:00", "--next", "1", "--json")
    assert open_.exit_code == 0, open_.output
    window = json.loads(open_.stdout)["windows"][0]
    assert window["name"] == "year-end" and window["break_glass_groups"] == ["sre"]
    assert [(o["starts_at"], o["active"]) for o in window["occurrences"]] == [("2026-12-22T23:00:00Z", False)]


def test_calendar_of_a_catalog_without_one_freezes_nothing(catalogs):
    good, _ = catalogs
    shown = runbook("calendar", "--catalog", str(good))
    assert shown.exit_code == 0 and "nothing is frozen" in shown.stdout, shown.output


def test_validate_refuses_a_bad_calendar_naming_file_line_and_field(catalogs):
    """Through the CLI, as an operator runs it: exit 2 and file:line: field for each bad calendar (issue 13)."""
    good, _ = catalogs
    for change, expected in [
        (("FREQ=YEARLY", "FREQ=SOMETIMES"), "calendar.yaml:8: windows.0.rrule: cannot parse the RRULE 'FREQ=SOMETIMES'"),
        (("Europe/Berlin", "Mars/Olympus"), "calendar.yaml:1: timezone: unknown time zone 'Mars/Olympus'"),
        (("end: 2027-01-04T00:00", "end: 2026-12-01T00:00"), "calendar.yaml:7: windows.0.end: the window ends before it starts"),
        (("exempt: [env-change]", "exempt: [env-change]\n  - {name: again, start: 2026-12-24T00:00, duration: 1d, "
                                  "environments: [production]}"), "calendar.yaml:11: windows.1: 'again' overlaps 'year-end'"),
    ]:
        (good / "calendar.yaml").write_text(CALENDAR.replace(*change))
        refused = runbook("catalog", "validate", str(good), columns="300")
        assert refused.exit_code == 2, refused.output
        assert expected in " ".join(refused.stderr.split()), refused.stderr
    (good / "calendar.yaml").write_text(CALENDAR)
    ok = runbook("catalog", "validate", str(good))
    assert ok.exit_code == 0 and "1 freeze windows" in ok.stdout, ok.output
