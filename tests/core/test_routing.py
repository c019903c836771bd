"""Severity routing: the stock table, the catalog's table (routing.yaml) and a runbook's own routes, validated
with errors naming file, line and field, and resolved into the run's meta."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from core.catalog import Catalog, CatalogError
from core.routing import DEFAULT_ROUTES, KINDS, SEVERITIES, Route, route, route_problems
from tests.core.test_catalog import INPUTS

RUNBOOK = """
name: gated-change
description: test
workflow: GatedChange
target: "{service}"
concurrency_key: "change:{service}"
parameters:
  service: {type: string, required: true}
approval:
  approvers: [bob]
"""


def _catalog(tmp_path: Path, runbook: str = RUNBOOK, routing: str | None = None) -> Path:
    (tmp_path / "gated.yaml").write_text(textwrap.dedent(runbook))
    if routing is not None:
        (tmp_path / "routing.yaml").write_text(textwrap.dedent(routing))
    return tmp_path


@pytest.mark.parametrize("kind, severity, channels", [
    ("alert", "warning", ["slack"]),                  # a sandbox TTL reminder
    ("approval_reminder", "info", ["slack"]),         # reminders: Slack only
    ("approval_needed", "warning", ["slack"]),
    ("rolled_back", "error", ["slack"]),              # a rollback that worked
    ("step_done", "info", ["slack"]),
    ("alert", "error", ["slack", "pagerduty"]),       # a failed restore drill
    ("alert", "critical", ["slack", "pagerduty"]),    # a Held failover
    ("failed", "critical", ["slack", "pagerduty"]),   # a rollback that failed
    ("finished", "critical", ["slack", "pagerduty"]),  # a run that ends Held
    ("approval_escalated", "critical", ["slack", "pagerduty"]),
])
def test_the_stock_table(kind, severity, channels):
    assert route(DEFAULT_ROUTES, kind, severity) == channels


def test_the_stock_table_routes_everything_and_every_route_can_match():
    assert route_problems(DEFAULT_ROUTES, complete=True) == []
    assert all(route(DEFAULT_ROUTES, k, s) for k in KINDS for s in SEVERITIES)


def test_the_catalog_table_replaces_the_stock_one_and_a_runbook_routes_first(tmp_path):
    runbook = RUNBOOK + "routing:\n  - {kinds: [alert], severities: [warning], channels: [slack, pagerduty]}\n"
    catalog = Catalog.load(_catalog(tmp_path, runbook, routing="""
        routes:
          - {severities: [critical], channels: [pagerduty]}
          - {channels: [slack]}
    """), inputs=INPUTS)
    meta = catalog.plan_start("gated-change", {"service": "payments"}, requested_by="alice", inputs=INPUTS).meta
    assert route(meta.routing, "alert", "warning") == ["slack", "pagerduty"]  # the runbook's route
    assert route(meta.routing, "alert", "critical") == ["pagerduty"]  # the catalog's table
    assert route(meta.routing, "approval_escalated", "critical") == ["pagerduty"]
    assert meta.routing[1:] == [Route(severities=["critical"], channels=["pagerduty"]), Route(channels=["slack"])]


def test_without_a_routing_file_the_stock_table_applies(tmp_path):
    catalog = Catalog.load(_catalog(tmp_path), inputs=INPUTS)
    meta = catalog.plan_start("gated-change", {"service": "payments"}, requested_by="alice", inputs=INPUTS).meta
    assert meta.routing == list(DEFAULT_ROUTES)


def _problems(tmp_path: Path, **kw) -> list[str]:
    with pytest.raises(CatalogError) as error:
        Catalog.load(_catalog(tmp_path, **kw), inputs=INPUTS)
    return error.value.problems


def test_a_bad_routing_table_is_refused_naming_file_line_and_field(tmp_path):
    problems = _problems(tmp_path, routing="""
        routes:
          - {kinds: [alert], severities: [urgent], channels: [slack]}
          - {kinds: [alarm], channels: [slack]}
          - {channels: [email]}
    """)
    path = tmp_path / "routing.yaml"
    assert any(p.startswith(f"{path}:3: routes.0.severities.0: Input should be") for p in problems), problems
    assert any(p.startswith(f"{path}:4: routes.1.kinds.0: Input should be") for p in problems), problems
    assert any(p.startswith(f"{path}:5: routes.2.channels.0: Input should be 'slack' or 'pagerduty'") for p in problems)


def test_a_table_that_leaves_events_unrouted_or_a_route_that_never_matches_is_refused(tmp_path):
    problems = _problems(tmp_path, routing="""
        routes:
          - {severities: [critical], channels: [slack, pagerduty]}
          - {kinds: [alert], severities: [critical], channels: [slack]}
          - {severities: [info, warning], channels: [slack]}
    """)
    path = tmp_path / "routing.yaml"
    assert f"{path}:4: routes.1: never matches: the routes before it take every event it names" in problems
    unrouted = [p for p in problems if p.startswith(f"{path}:2: routes: no route for ")]
    assert unrouted and "started at error" in unrouted[0] and "names no kinds" in unrouted[0]


def test_a_runbook_route_is_checked_where_it_is_written(tmp_path):
    runbook = RUNBOOK + textwrap.dedent("""
        routing:
          - {kinds: [alert], channels: [slack]}
          - {kinds: [alert], severities: [warning], channels: [pagerduty]}
          - {kinds: [finished], channels: [sms]}
    """)
    problems = _problems(tmp_path, runbook=runbook)
    path = tmp_path / "gated.yaml"
    assert any(p.startswith(f"{path}:") and "routing.2.channels.0" in p for p in problems), problems
    runbook = RUNBOOK + textwrap.dedent("""
        routing:
          - {kinds: [alert], channels: [slack]}
          - {kinds: [alert], severities: [warning], channels: [pagerduty]}
    """)
    problems = _problems(tmp_path, runbook=runbook)
    assert problems == [f"{path}:14: routing.1: never matches: the routes before it take every event it names"]


def test_a_route_repeating_a_value_is_refused():
    with pytest.raises(ValueError, match="slack listed twice"):
        Route(channels=["slack", "slack"])
