"""Every runbook workflow of the product, for the worker to register and the starters to validate input against.

``RUNBOOK_WORKFLOWS`` maps each workflow type name to where its class lives ("module:Class"); a class is imported
only when something asks for it, so a command that starts one runbook imports one workflow module, and one that
only reads runs (``runbook status``, ``runbook list``) imports none (each pulls in boto3, psycopg or hvac through
its activities). Add a runbook with one line here; its input model is read from its run method
(``core.catalog.input_model``).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping

RUNBOOK_WORKFLOWS: dict[str, str] = {
    "BlueGreenCutover": "workflows.blue_green:BlueGreenCutover",
    "ProvisionEnvironment": "workflows.provision:ProvisionEnvironment",
    "RegionFailover": "workflows.failover:RegionFailover",
    "RegionFailback": "workflows.failover:RegionFailback",
    "CanaryRamp": "workflows.canary_ramp:CanaryRamp",
    "RestoreDrill": "workflows.restore_drill:RestoreDrill",
    "Release": "workflows.release:Release",
    "RotateSecret": "workflows.rotate_secret:RotateSecret",
}


class Workflows(Mapping[str, type]):
    """Workflow type name -> class, each class imported on first use."""

    def __init__(self, where: Mapping[str, str], loaded: Mapping[str, type] | None = None) -> None:
        self._where = dict(where)
        self._loaded: dict[str, type] = dict(loaded or {})

    def __getitem__(self, name: str) -> type:
        if name not in self._loaded:
            module, _, attr = self._where[name].partition(":")  # KeyError: not a known workflow type
            self._loaded[name] = getattr(importlib.import_module(module), attr)
        return self._loaded[name]

    def __iter__(self) -> Iterator[str]:
        return iter(dict.fromkeys([*self._where, *self._loaded]))

    def __len__(self) -> int:
        return len(set(self._where) | set(self._loaded))


# Workflows a worker runs that are not runbooks (no catalog entry, no steering contract): the dry run.
HELPER_WORKFLOWS: dict[str, str] = {
    "RunbookDryRun": "workflows.dry_run:RunbookDryRun",
}


def workflows(modules: list[str] | tuple[str, ...] = ()) -> Workflows:
    """The product's workflows (imported when used) plus those exported as ``WORKFLOWS`` by each of ``modules``
    (a team's own runbooks; imported now, named by their workflow type)."""
    return Workflows(RUNBOOK_WORKFLOWS, by_name(_exported(modules)))


def load(modules: list[str] | tuple[str, ...] = ()) -> list[type]:
    """Every workflow class, imported: the product's runbooks, its helpers (the dry run) and those of ``modules``
    (what a worker registers)."""
    return list(dict.fromkeys([*workflows(modules).values(), *Workflows(HELPER_WORKFLOWS).values()]))


def by_name(classes: list[type]) -> dict[str, type]:
    """Workflow type name -> class, for classes given as a list (a team's ``WORKFLOWS``, a test's workflows)."""
    from temporalio import workflow

    return {workflow._Definition.must_from_class(cls).name or cls.__name__: cls for cls in classes}


def _exported(modules: list[str] | tuple[str, ...]) -> list[type]:
    found: list[type] = []
    for name in modules:
        module = importlib.import_module(name)
        exported = getattr(module, "WORKFLOWS", None)
        if not isinstance(exported, list):
            raise ImportError(f"workflow module {name} has no WORKFLOWS list")
        found.extend(exported)
    return found


def __getattr__(name: str) -> list[type]:
    if name == "WORKFLOWS":  # every product runbook workflow class, imported (tests and the failure matrix's worker)
        return list(dict.fromkeys(workflows().values()))
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
