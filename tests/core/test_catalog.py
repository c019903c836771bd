"""The catalog: validation with file/line/field errors, parameter coercion, start planning, and the product's own
runbooks validated against the workflows' inputs."""

from __future__ import annotations

import textwrap
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from core.approval import ApprovalPolicy, GateView, check_approval
from core.catalog import Catalog, CatalogError, ParameterError
from core.duration import format_duration, parse_duration
from tests.core.gated_workflows import GatedChangeInput
from workflows import registry

REPO = Path(__file__).resolve().parents[2]
INPUTS = {"GatedChange": GatedChangeInput}

GOOD = """
name: gated-change
description: test
workflow: GatedChange
target: "{service}"
environment: "{environment}"
concurrency_key: "change:{service}"
parameters:
  service: {type: string, required: true}
  environment: {type: string, default: staging}
  hold: {type: duration, default: 5m}
approval:
  groups: [sre]
approval_by_environment:
  production:
    required_groups: [sre, security]
    required_approvals: 2
  development:
    required_approvals: 0
"""


def _catalog(tmp_path: Path, text: str = GOOD, groups: str = "groups: {sre: [dave], security: [carol]}") -> Path:
    (tmp_path / "groups.yaml").write_text(groups)
    (tmp_path / "gated.yaml").write_text(textwrap.dedent(text))
    return tmp_path


def test_the_product_catalog_is_valid_against_the_registered_workflows():
    catalog = Catalog.load(REPO / "runbooks", inputs=registry.inputs())
    assert catalog.runbooks, "the product ships runbooks"
    for name, spec in catalog.runbooks.items():
        assert spec.workflow in registry.inputs(), name


def test_plan_start_builds_id_target_policy_per_environment(tmp_path):
    catalog = Catalog.load(_catalog(tmp_path), inputs=INPUTS)
    plan = catalog.plan_start(
        "gated-change", {"service": "payments", "environment": "production", "hold": "1h"},
        requested_by="alice", inputs=INPUTS, ui_base="http://ui:8233",
    )
    assert plan.workflow_id == "change:payments" and plan.workflow_type == "GatedChange"
    assert plan.meta.target == "payments" and plan.meta.environment == "production"
    assert plan.meta.approval.required_groups == ["sre", "security"]
    assert plan.meta.approval.groups == {"sre": ["dave"], "security": ["carol"]}
    assert plan.input.hold == timedelta(hours=1)
    assert plan.meta.ui_url == "http://ui:8233/namespaces/default/workflows/change:payments"
    dev = catalog.plan_start("gated-change", {"service": "x", "environment": "development"}, requested_by="a", inputs=INPUTS)
    assert dev.meta.approval.required_approvals == 0


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda t: t.replace("{type: duration, default: 5m}", "{type: duration, default: soon}"), "gated.yaml:11: parameters.hold:"),
        (lambda t: t.replace("concurrency_key: \"change:{service}\"", "concurrency_key: \"change:{svc}\""), "gated.yaml:7: concurrency_key: uses {svc}"),
        (lambda t: t.replace("  groups: [sre]", "  groups: [sre, nobody]"), "gated.yaml:12: approval: unknown approver group(s) nobody"),
        (lambda t: t.replace("description: test\n", ""), "gated.yaml:2: description: Field required"),
        (lambda t: t.replace("workflow: GatedChange", "workflow: Nope"), "gated.yaml:4: workflow: unknown workflow type 'Nope'"),
        (lambda t: t + "\ncolour: red\n", "gated.yaml:21: colour: Extra inputs are not permitted"),
        (lambda t: t.replace("  service: {type: string, required: true}", "  service: {type: string, required: true\n"), "gated.yaml:11: invalid YAML"),
        (lambda t: t.replace("  hold:", "  colour: {type: string}\n  hold:"), "gated.yaml:11: parameters.colour: not an input of workflow GatedChange"),
    ],
)
def test_errors_name_file_line_and_field(tmp_path, mutate, expected):
    folder = _catalog(tmp_path, mutate(GOOD))
    with pytest.raises(CatalogError) as error:
        Catalog.load(folder, inputs=INPUTS)
    assert any(expected in problem for problem in error.value.problems), error.value.problems


def test_parameter_coercion_and_errors(tmp_path):
    catalog = Catalog.load(_catalog(tmp_path), inputs=INPUTS)
    with pytest.raises(ParameterError, match="missing required parameter 'service'"):
        catalog.plan_start("gated-change", {}, requested_by="a", inputs=INPUTS)
    with pytest.raises(ParameterError, match="parameter 'hold'"):
        catalog.plan_start("gated-change", {"service": "x", "hold": "-"}, requested_by="a", inputs=INPUTS)
    with pytest.raises(ParameterError, match="identity is missing"):
        catalog.plan_start("gated-change", {"service": "x"}, requested_by="", inputs=INPUTS)
    with pytest.raises(ParameterError, match="unknown runbook"):
        catalog.get("nope")


def test_identifiers_over_temporals_limits_or_blank_are_refused_before_starting(tmp_path):
    catalog = Catalog.load(_catalog(tmp_path), inputs=INPUTS)
    with pytest.raises(ParameterError, match="workflow id is 1007 bytes, over Temporal's limit of 1000"):
        catalog.plan_start("gated-change", {"service": "s" * 1000}, requested_by="a", inputs=INPUTS)
    with pytest.raises(ParameterError, match="blank or has surrounding spaces"):
        catalog.plan_start("gated-change", {"service": "   "}, requested_by="a", inputs=INPUTS)
    assert catalog.plan_start("gated-change", {"service": "s" * 900}, requested_by="a", inputs=INPUTS)


def test_secret_parameters_are_refused(tmp_path):
    text = GOOD.replace("  hold: {type: duration, default: 5m}", "  hold: {type: duration, default: 5m}\n  password: {secret: true}")
    with pytest.raises(CatalogError, match="parameters cannot be secrets"):
        Catalog.load(_catalog(tmp_path, text))


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("10m", 600), ("1h30m", 5400), ("2d", 172800), ("PT10M", 600), (45, 45), ("0.5s", 0.5)])
def test_durations(text, seconds):
    assert parse_duration(text).total_seconds() == seconds
    assert parse_duration(format_duration(parse_duration(text))) == parse_duration(text)


def test_large_fractional_durations_round_trip():
    value = parse_duration(946082000.25)
    assert format_duration(value) == "946082000.25s" and parse_duration(format_duration(value)) == value


@pytest.mark.parametrize("text", ["", "10 minutes", "m", "1h-2m", True, -5])
def test_bad_durations(text):
    with pytest.raises(ValueError):
        parse_duration(text)


def test_approval_rules_as_pure_functions():
    policy = ApprovalPolicy(approvers=["bob"], groups={"sre": ["dave"]})
    from datetime import datetime, timezone

    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    gate = GateView(gate_id="g-1", title="t", opened_at=now, deadline=now, eligible=sorted(policy.eligible()))
    check = lambda **kw: check_approval(policy, gate, requested_by="alice", action="approve", via="update", **kw)  # noqa: E731
    assert check(gate_id="g-1", who="bob") is None
    assert check(gate_id="g-1", who="dave") is None
    assert "not an approver" in check(gate_id="g-1", who="zed")
    assert "stale gate" in check(gate_id="g-0", who="bob")
    assert check_approval(policy, None, gate_id="g-1", who="bob", requested_by="a", action="approve", via="update") == "no approval is pending"
    with pytest.raises(ValueError, match="undefined groups"):
        ApprovalPolicy(required_groups=["ghosts"])
    with pytest.raises(ValueError, match="escalate_to"):
        ApprovalPolicy(on_timeout="escalate")


def test_malformed_yaml_values_and_cross_parameter_rules_give_one_clear_line(tmp_path):
    (tmp_path / "groups.yaml").write_text("groups: {}")
    (tmp_path / "gated.yaml").write_text(textwrap.dedent(GOOD).replace("approval:\n  groups: [sre]\n", "approval:\n  approvers: [bob]\n")
                                         .split("approval_by_environment:")[0]
                                         .replace("  hold: {type: duration, default: 5m}", "  hold: {type: duration, default: 5m}\n  binding: {type: object}"))
    catalog = Catalog.load(tmp_path, inputs=INPUTS)
    with pytest.raises(ParameterError) as error:
        catalog.plan_start("gated-change", {"service": "x", "binding": "[{a: 1}, {b: 2}"}, requested_by="a", inputs=INPUTS)
    assert str(error.value).startswith("gated-change: parameter 'binding' is not valid YAML")


def test_groups_file_maps_idp_groups_people_and_aliases_and_names_the_line_of_a_bad_entry(tmp_path):
    groups = textwrap.dedent("""\
        groups:
          sre: {idp_groups: [oncall], people: [dave]}
          security: [carol]
        people:
          dave: [slack:U0DAVE]
        vouchers:
          runbook-gateway: [slack]
    """)
    catalog = Catalog.load(_catalog(tmp_path, groups=groups), inputs=INPUTS)
    policy = catalog.plan_start("gated-change", {"service": "p", "environment": "production"}, requested_by="slack:U0DAVE",
                                inputs=INPUTS).meta.approval
    assert policy.idp_groups == {"sre": ["oncall"]} and policy.groups["security"] == ["carol"]
    assert policy.admits("erin", ["oncall"]) and not policy.admits("erin", ["other"])  # membership from the token
    assert policy.people.person("slack:U0DAVE") == "dave" and "dave" not in policy.eligible(requested_by="slack:U0DAVE")
    gate = GateView(gate_id="g-1", title="t", opened_at=datetime.now(timezone.utc), deadline=datetime.now(timezone.utc))
    assert "dave requested this run" in check_approval(policy, gate, gate_id="g-1", who="dave", requested_by="slack:U0DAVE",
                                                       action="approve", via="cli")

    bad = groups.replace("dave: [slack:U0DAVE]", "dave: [slack:U0DAVE, U0NOPREFIX]\n  erin: [slack:U0DAVE]")
    with pytest.raises(CatalogError) as error:
        Catalog.load(_catalog(tmp_path, groups=bad), inputs=INPUTS)
    problems = "\n".join(error.value.problems)
    assert f"{tmp_path / 'groups.yaml'}:5: people.dave.1: String should match pattern" in problems
