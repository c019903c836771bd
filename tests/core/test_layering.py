"""core/ is the leaf of the layering (starters -> workflows -> activities -> core): importing any of its modules,
the catalog and the runbooks' contracts included, pulls in no workflow, activity, starter or worker module, no
outside system's client and no Temporal worker. Each module is imported alone in a fresh interpreter, so one
module's imports cannot hide another's."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CORE = sorted(p.stem for p in (ROOT / "core").glob("*.py") if p.stem != "__init__")
UPWARD = ("workflows", "activities", "starters", "workers", "boto3", "botocore", "psycopg", "hvac", "kubernetes",
          "slack_sdk", "pdpyras", "python_terraform", "temporalio.worker", "temporalio.client")
PROBE = "import importlib, json, sys; importlib.import_module(sys.argv[1]); print(json.dumps(sorted(sys.modules)))"


def upward(modules: list[str]) -> list[str]:
    return [m for m in modules if any(m == u or m.startswith(u + ".") for u in UPWARD)]


def test_upward_names_whole_packages_only():
    assert upward(["workflows.failover", "workflowsx", "boto3", "core.failover", "temporalio.worker._workflow",
                   "temporalio.common"]) == ["workflows.failover", "boto3", "temporalio.worker._workflow"]


def test_core_has_the_runbooks_contracts():
    assert {"buttons", "catalog", "canary", "bluegreen", "failover", "restore", "provision", "release", "rotation", "runbook"} <= set(CORE)


@pytest.mark.parametrize("module", CORE)
def test_a_core_module_imports_nothing_above_core(module: str):
    proc = subprocess.run([sys.executable, "-c", PROBE, f"core.{module}"], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert upward(json.loads(proc.stdout)) == []


def test_the_registry_gives_the_catalog_its_input_models_without_importing_a_workflow():
    """The starters' path (workflows.registry.inputs() into Catalog.load): the registry lists each runbook's input
    model from core, so validating the stock catalog imports no workflow module and no client library."""
    code = ("import json, sys; from core.catalog import Catalog; from workflows import registry; "
            "Catalog.load('runbooks', inputs=registry.inputs()); print(json.dumps(sorted(sys.modules)))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert [m for m in upward(json.loads(proc.stdout)) if m not in ("workflows", "workflows.registry")] == []
