"""core/ is the leaf of the layering (starters -> workflows -> activities -> core): importing any of its modules,
the catalog and the runbooks' contracts included, pulls in no workflow, activity, starter or worker module, no
outside system's client and no Temporal worker. Each module is imported alone in a process of its own, so one
module's imports cannot hide another's: a child forked from a zygote that has loaded only the third-party libraries
core builds on (pydantic, yaml; about 80 % of a fresh interpreter's import time). The zygote loads no project
module, and every module of the child, the zygote's included, is checked: what it preloaded can hide nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CORE = sorted(p.stem for p in (ROOT / "core").glob("*.py") if p.stem != "__init__")
UPWARD = ("workflows", "activities", "starters", "workers", "boto3", "botocore", "psycopg", "hvac", "kubernetes",
          "slack_sdk", "pdpyras", "python_terraform", "temporalio.worker", "temporalio.client")
PROJECT = ("core", "workflows", "activities", "starters", "workers", "runbooks", "tests")
# One line in per module to import, one JSON line out: the sorted sys.modules of a child that imported it, or its error.
ZYGOTE = """
import importlib, json, os, sys, traceback
import pydantic, pydantic_settings, yaml, zoneinfo
class _Warm(pydantic.BaseModel):
    x: int = 0
_Warm.model_validate({"x": 1})
print(json.dumps(sorted(sys.modules)), flush=True)
for line in sys.stdin:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            importlib.import_module(line.strip())
            answer = {"modules": sorted(sys.modules)}
        except BaseException:
            answer = {"error": traceback.format_exc()}
        with os.fdopen(w, "w") as out:
            out.write(json.dumps(answer))
        os._exit(0)
    os.close(w)
    with os.fdopen(r) as child:
        answer = child.read()
    os.waitpid(pid, 0)
    print(answer, flush=True)
"""


def upward(modules: list[str]) -> list[str]:
    return [m for m in modules if any(m == u or m.startswith(u + ".") for u in UPWARD)]


class Zygote:
    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", ZYGOTE], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, cwd=ROOT)
        assert self.proc.stdout is not None
        self.preloaded: list[str] = json.loads(self.proc.stdout.readline())

    def modules_after_import(self, module: str) -> list[str]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(module + "\n")
        self.proc.stdin.flush()
        answer = json.loads(self.proc.stdout.readline())
        assert "error" not in answer, answer["error"]
        return answer["modules"]

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(30)


@pytest.fixture(scope="module")
def zygote() -> Iterator[Zygote]:
    z = Zygote()
    try:
        yield z
    finally:
        z.close()


def test_upward_names_whole_packages_only():
    assert upward(["workflows.failover", "workflowsx", "boto3", "core.failover", "temporalio.worker._workflow",
                   "temporalio.common"]) == ["workflows.failover", "boto3", "temporalio.worker._workflow"]


def test_core_has_the_runbooks_contracts():
    assert {"buttons", "catalog", "canary", "bluegreen", "failover", "restore", "provision", "release", "rotation", "runbook"} <= set(CORE)


def test_the_zygote_preloads_no_project_module_and_nothing_above_core(zygote: Zygote):
    assert "pydantic" in zygote.preloaded and "yaml" in zygote.preloaded
    assert [m for m in zygote.preloaded if m.split(".")[0] in PROJECT] == []
    assert upward(zygote.preloaded) == []


@pytest.mark.parametrize("module", CORE)
def test_a_core_module_imports_nothing_above_core(zygote: Zygote, module: str):
    modules = zygote.modules_after_import(f"core.{module}")
    assert f"core.{module}" in modules
    assert upward(modules) == []


def test_the_registry_gives_the_catalog_its_input_models_without_importing_a_workflow():
    """The starters' path (workflows.registry.inputs() into Catalog.load): the registry lists each runbook's input
    model from core, so validating the stock catalog imports no workflow module and no client library."""
    code = ("import json, sys; from core.catalog import Catalog; from workflows import registry; "
            "Catalog.load('runbooks', inputs=registry.inputs()); print(json.dumps(sorted(sys.modules)))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert [m for m in upward(json.loads(proc.stdout)) if m not in ("workflows", "workflows.registry")] == []
