"""Every runbook workflow of the product, for the worker to register and the starters to validate input against.

Append a runbook's workflow class to ``WORKFLOWS``; its input model is read from its run method.
"""

from __future__ import annotations

import importlib

from temporalio import workflow

from core.runbook import RunbookInput

WORKFLOWS: list[type] = []


def input_model(workflow_class: type) -> type[RunbookInput]:
    """The input model of a runbook workflow's run method: a RunbookInput (meta, carry and ``problems()``)."""
    definition = workflow._Definition.must_from_class(workflow_class)
    arg_types = definition.arg_types or []
    if len(arg_types) != 1 or not (isinstance(arg_types[0], type) and issubclass(arg_types[0], RunbookInput)):
        raise TypeError(f"{definition.name}: a runbook's run method takes exactly one RunbookInput model")
    return arg_types[0]


def by_name(classes: list[type]) -> dict[str, type]:
    """Workflow type name -> class."""
    return {workflow._Definition.must_from_class(cls).name or cls.__name__: cls for cls in classes}


def load(modules: list[str]) -> list[type]:
    """The product's workflows plus those exported as ``WORKFLOWS`` by each of ``modules``."""
    extra: list[type] = []
    for name in modules:
        module = importlib.import_module(name)
        found = getattr(module, "WORKFLOWS", None)
        if not isinstance(found, list):
            raise ImportError(f"workflow module {name} has no WORKFLOWS list")
        extra.extend(found)
    return [*WORKFLOWS, *[cls for cls in extra if cls not in WORKFLOWS]]


# ---- runbook workflows (each team appends its own line)
from workflows.blue_green import BlueGreenCutover  # noqa: E402

WORKFLOWS.append(BlueGreenCutover)

from workflows.provision import ProvisionEnvironment  # noqa: E402

WORKFLOWS.append(ProvisionEnvironment)

from workflows.failover import RegionFailback, RegionFailover  # noqa: E402

WORKFLOWS.extend([RegionFailover, RegionFailback])

from workflows.canary_ramp import CanaryRamp  # noqa: E402

WORKFLOWS.append(CanaryRamp)

from workflows.restore_drill import RestoreDrill  # noqa: E402

WORKFLOWS.append(RestoreDrill)
