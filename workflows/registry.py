"""Every runbook workflow of the product, for the worker to register and the starters to validate input against.

``RUNBOOKS`` lists each runbook workflow as an explicit entry: its workflow type name, its input model (a contract
in ``core``) and where its class lives ("module:Class"). Importing this module imports no workflow: the starters
plan a start (``Catalog.plan_start``) with ``inputs()`` alone, so ``runbook start``, the gateway and schedules never
import a workflow module (each pulls in boto3, psycopg or hvac through its activities); the worker imports the
classes with ``load()``, which checks that each class's run method takes the entry's input model. Add a runbook with
one line here. A team's own runbooks come from the modules named in ``RUNBOOK_WORKFLOW_MODULES``, each exporting
``RUNBOOKS``, a list of ``Entry`` (their ``workflow`` may be the class itself).

The name is stated, not read from the class: the SDK has no public reader of a workflow class's type name, so
tests/core/test_contract.py checks each entry's name against the SDK's definition (private API, tests only).
"""

from __future__ import annotations

import importlib
import inspect
import typing
from dataclasses import dataclass

from core.bluegreen import BlueGreenInput
from core.canary import CanaryRampInput
from core.failover import RegionFailbackInput, RegionFailoverInput
from core.provision import ProvisionEnvironmentInput
from core.release import ReleaseInput
from core.restore import RestoreDrillInput
from core.rotation import RotateSecretInput
from core.runbook import RunbookInput


@dataclass(frozen=True)
class Entry:
    """One runbook workflow: its type name (as its ``@workflow.defn`` names it), its input model and its class, or
    where the class lives ("module:Class", imported only by ``load``)."""

    name: str
    input: type[RunbookInput]
    workflow: type | str

    def load(self) -> type:
        """The workflow class, imported; TypeError when its run method does not take this entry's input model."""
        cls = _import(self.workflow) if isinstance(self.workflow, str) else self.workflow
        if run_input(cls) is not self.input:
            raise TypeError(f"runbook {self.name}: {cls.__name__}.run does not take {self.input.__name__}")
        return cls


RUNBOOKS: tuple[Entry, ...] = (
    Entry("BlueGreenCutover", BlueGreenInput, "workflows.blue_green:BlueGreenCutover"),
    Entry("ProvisionEnvironment", ProvisionEnvironmentInput, "workflows.provision:ProvisionEnvironment"),
    Entry("RegionFailover", RegionFailoverInput, "workflows.failover:RegionFailover"),
    Entry("RegionFailback", RegionFailbackInput, "workflows.failover:RegionFailback"),
    Entry("CanaryRamp", CanaryRampInput, "workflows.canary_ramp:CanaryRamp"),
    Entry("RestoreDrill", RestoreDrillInput, "workflows.restore_drill:RestoreDrill"),
    Entry("Release", ReleaseInput, "workflows.release:Release"),
    Entry("RotateSecret", RotateSecretInput, "workflows.rotate_secret:RotateSecret"),
)

# Workflows a worker runs that are not runbooks (no catalog entry, no steering contract): the dry run.
HELPER_WORKFLOWS: tuple[str, ...] = ("workflows.dry_run:RunbookDryRun",)


def entries(modules: list[str] | tuple[str, ...] = ()) -> list[Entry]:
    """The product's runbooks, then those exported as ``RUNBOOKS`` by each of ``modules`` (imported now)."""
    found = list(RUNBOOKS)
    for name in modules:
        exported = getattr(importlib.import_module(name), "RUNBOOKS", None)
        if not (isinstance(exported, list) and all(isinstance(e, Entry) for e in exported)):
            raise ImportError(f"workflow module {name} has no RUNBOOKS list of workflows.registry.Entry")
        found.extend(exported)
    return found


def inputs(modules: list[str] | tuple[str, ...] = ()) -> dict[str, type[RunbookInput]]:
    """Workflow type name -> input model, for the catalog; no product workflow module is imported."""
    return {e.name: e.input for e in entries(modules)}


def load(modules: list[str] | tuple[str, ...] = ()) -> list[type]:
    """Every workflow class, imported: the product's runbooks, its helpers (the dry run) and those of ``modules``
    (what a worker registers)."""
    return list(dict.fromkeys([*(e.load() for e in entries(modules)), *map(_import, HELPER_WORKFLOWS)]))


def run_input(workflow_class: type) -> type | None:
    """The model a workflow class's run method takes, read from its type hints; None unless it takes exactly one."""
    run = getattr(workflow_class, "run", None)
    params = [p for p in inspect.signature(run).parameters if p != "self"] if callable(run) else []
    return typing.get_type_hints(run).get(params[0]) if len(params) == 1 else None


def _import(where: str) -> type:
    module, _, attr = where.partition(":")
    cls = getattr(importlib.import_module(module), attr)
    if not isinstance(cls, type):
        raise TypeError(f"{where} is not a class")
    return cls


def __getattr__(name: str) -> list[type]:
    if name == "WORKFLOWS":  # every product runbook workflow class, imported (tests and the failure matrix's worker)
        return [e.load() for e in RUNBOOKS]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
