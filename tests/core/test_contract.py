"""The declarations clients call (workflows.contract) are what the workflows implement, name for name and type for
type; and a client needs no workflow module to call them."""

from __future__ import annotations

import inspect
import subprocess
import sys
import typing
from datetime import timedelta

import pytest
from temporalio import workflow

from workflows import registry, steering


def _declared(cls: type) -> dict[str, tuple[str, object]]:
    """Handler name -> (kind, function) for every query, update and signal declared on ``cls`` and its bases."""
    found: dict[str, tuple[str, object]] = {}
    for _, member in inspect.getmembers(cls):
        if hasattr(member, "__temporal_query_definition"):
            found[member.__temporal_query_definition.name] = ("query", member)
        elif hasattr(member, "__temporal_signal_definition"):
            found[member.__temporal_signal_definition.name] = ("signal", member)
        elif isinstance(member, workflow.UpdateMethodMultiParam):
            found[member._defn.name] = ("update", member._defn.fn)
    return found


def _arg_and_result(fn: object) -> tuple[list[object], object]:
    hints = typing.get_type_hints(fn)
    params = [p for p in inspect.signature(fn).parameters if p != "self"]
    return [hints.get(p) for p in params], hints.get("return")


@pytest.mark.parametrize("entry", registry.RUNBOOKS, ids=lambda e: e.name)
def test_every_workflow_implements_its_contract(entry: registry.Entry) -> None:
    cls = entry.load()  # its run method takes the entry's input model, or TypeError
    name = entry.name
    # the registry states each type name; the SDK has no public reader of a class's, so this test uses the private one
    assert workflow._Definition.must_from_class(cls).name == name, f"{cls.__name__} is not registered as {name}"
    expected = steering.contract_for(name)
    assert issubclass(cls, expected), f"{name} must inherit {expected.__name__}"
    have = _declared(cls)
    for handler, (kind, stub) in _declared(expected).items():
        assert handler in have, f"{name} does not implement {kind} {handler}"
        have_kind, fn = have[handler]
        assert have_kind == kind
        assert fn is not stub, f"{name}.{handler} is the contract's stub, not an implementation"
        assert _arg_and_result(fn) == _arg_and_result(stub), f"{name}.{handler}: types differ from the contract"


def test_contract_names_only_registered_workflow_types() -> None:
    assert set(steering.CONTRACTS) <= set(registry.inputs())


def test_a_registry_entry_whose_workflow_takes_another_input_is_refused() -> None:
    from core.canary import CanaryRampInput

    wrong = registry.Entry("BlueGreenCutover", CanaryRampInput, "workflows.blue_green:BlueGreenCutover")
    with pytest.raises(TypeError, match="BlueGreenCutover.run does not take CanaryRampInput"):
        wrong.load()


def test_a_team_module_without_runbooks_is_refused_by_name() -> None:
    assert [e.name for e in registry.entries(["tests.core.gated_workflows"])][-2:] == ["GatedChange", "TwoGates"]
    with pytest.raises(ImportError, match="tests.core.test_contract has no RUNBOOKS list"):
        registry.inputs(["tests.core.test_contract"])


HEAVY = ("boto3", "botocore", "psycopg", "hvac", "activities", "slack_sdk", "rich", "yaml", "cryptography", "httpx",
         "core.catalog", "core.canary", "core.provision", "workflows.steering", "workflows.registry")


@pytest.mark.parametrize("module", ["starters.client", "starters.cli"])
def test_reading_a_run_imports_no_workflow_module_nor_what_it_does_not_use(module: str) -> None:
    """`runbook status` and `runbook list` (bench/cli_speed.py) load the client and the CLI and nothing of this."""
    code = (f"import sys, {module}; "
            f"print(sorted(m for m in sys.modules if m.startswith({HEAVY!r}) "
            "or m.startswith('workflows.') and m not in ('workflows.contract', 'workflows.search_attributes')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_each_steering_verb_reaches_the_update_its_runbook_spells() -> None:
    """The CLI's and Slack's verbs, per runbook: which update each sends and with what input."""
    from starters.client import Steer, steering, verbs_for

    assert verbs_for("CanaryRamp") == ["pause", "resume", "promote", "extend"]
    assert verbs_for("BlueGreenCutover") == ["promote", "extend"]
    assert verbs_for("ProvisionEnvironment") == ["extend", "destroy-now"]
    assert verbs_for("RegionFailover") == verbs_for("RegionFailback") == ["reverify"]
    assert verbs_for("RestoreDrill") == []
    request = Steer(by="dave", reason="why", duration="15m")
    sent = {(verb, contract.__name__): build(request) for verb, table in steering().items()
            for contract, build in table.items()}
    names = {key: update._defn.name for key, (update, _) in sent.items()}
    assert names[("promote", "BlueGreenSteering")] == "promote_now"
    assert names[("extend", "BlueGreenSteering")] == "extend_bake"
    assert names[("destroy-now", "ProvisionSteering")] == "destroy_now"
    _, bake = sent[("extend", "BlueGreenSteering")]
    _, ttl = sent[("extend", "ProvisionSteering")]
    _, step = sent[("extend", "CanarySteering")]
    assert bake.by == ttl.by == step.duration == timedelta(minutes=15)
    assert (bake.requested_by, ttl.requested_by, step.by) == ("dave", "dave", "dave")
