"""Workflow code stays deterministic without the sandbox's per-run module proxies.

The worker passes the workflow modules through the sandbox (workers/sandbox.py): one copy per process, shared by
every run, with the real ``datetime``, ``os`` and ``random`` in their globals. So the rules the proxies used to
enforce for the workflow modules (and never enforced for the building blocks they pass through, ``workflows.base``
and the rest) are read here from the source of everything under ``workflows/``: no wall clock, randomness,
environment, files, threads, sockets or outside system's client; no state shared between runs (module ``global``
assignments, mutable class attributes).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"
# modules whose use in workflow code is non-deterministic or I/O (activities do these things)
FORBIDDEN_MODULES = {"random", "secrets", "time", "os", "uuid", "threading", "subprocess", "socket", "multiprocessing",
                     "concurrent", "urllib", "http", "requests", "httpx", "boto3", "botocore", "hvac", "kubernetes",
                     "psycopg", "slack_sdk", "pdpyras", "python_terraform"}
CLOCK_READS = {"now", "utcnow", "today", "fromtimestamp", "utcfromtimestamp"}  # on datetime/date: workflow.now()
FORBIDDEN_BUILTINS = {"open", "input", "breakpoint"}
MUTABLE = (ast.List, ast.Dict, ast.Set, ast.ListComp, ast.DictComp, ast.SetComp)


def problems(source: str, name: str = "<source>") -> list[str]:
    """What in this module's source breaks determinism or shares state between runs, one line each."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source, name)):
        where = f"{name}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Import):
            found += [f"{where}: imports {a.name}" for a in node.names if a.name.split(".")[0] in FORBIDDEN_MODULES]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] in FORBIDDEN_MODULES:
                found.append(f"{where}: imports from {node.module}")
        elif isinstance(node, ast.Call):
            fn = node.func
            if isinstance(fn, ast.Name) and fn.id in FORBIDDEN_BUILTINS:
                found.append(f"{where}: calls {fn.id}()")
            elif isinstance(fn, ast.Attribute):
                owner = ast.unparse(fn.value)  # datetime, datetime.datetime, asyncio
                if owner.split(".")[-1] in ("datetime", "date") and fn.attr in CLOCK_READS:
                    found.append(f"{where}: reads the wall clock ({owner}.{fn.attr}); use workflow.now()")
                elif owner == "asyncio" and fn.attr == "wait":
                    found.append(f"{where}: asyncio.wait; use workflow.wait")
        elif isinstance(node, ast.Global):
            found.append(f"{where}: assigns the module global(s) {', '.join(node.names)}: shared by every run")
        elif isinstance(node, ast.ClassDef):
            for stmt in node.body:
                value = stmt.value if isinstance(stmt, (ast.Assign, ast.AnnAssign)) else None
                mutable = isinstance(value, MUTABLE) or (
                    isinstance(value, ast.Call) and isinstance(value.func, ast.Name)
                    and value.func.id in ("list", "dict", "set", "defaultdict", "deque"))
                if mutable:
                    found.append(f"{name}:{stmt.lineno}: a mutable class attribute in {node.name}: shared by every run")
    return found


MODULES = sorted(WORKFLOWS.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(WORKFLOWS)))
def test_workflow_module_is_deterministic_and_keeps_no_state(path: Path) -> None:
    assert problems(path.read_text(), str(path.relative_to(WORKFLOWS.parent))) == []


def test_the_check_finds_each_kind_of_problem() -> None:
    source = """
import random
from uuid import uuid4
from datetime import datetime

COUNT = 0

class Flow:
    seen: list[str] = []
    cache = dict()
    LIMIT = 3

    async def run(self):
        global COUNT
        COUNT += 1
        await asyncio.wait([])
        return open("x").read(), datetime.now(), datetime.datetime.utcnow()
"""
    found = problems(source)
    for expected in ("imports random", "imports from uuid", "mutable class attribute in Flow", "assigns the module global",
                     "asyncio.wait", "calls open()", "(datetime.now)", "(datetime.datetime.utcnow)"):
        assert any(expected in line for line in found), (expected, found)
    assert len(found) == 9  # the two mutable attributes, and nothing for LIMIT
    assert problems("from temporalio import workflow\nnow = workflow.now()\n") == []
