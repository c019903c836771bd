"""The workflow sandbox of every worker, replayer and test worker: workflow modules compiled once per process, and
the shared-types layer passed through.

Temporal's sandbox imports a workflow's module afresh for every run and every replay, so module-level state cannot
leak between runs. Python then reads the module's bytecode from ``__pycache__``, or compiles its source when there
is none, which is every time where no bytecode is written (``PYTHONDONTWRITEBYTECODE``, as in this project's
environments and image, or an editable install): measured on a loaded 2-core machine, 40 ms a run for
``workflows/canary_ramp.py`` and 200 ms for ``workflows/failover.py``, more than the rest of a short run. A code
object is immutable and executing it twice is what importing twice does, so the worker keeps each workflow
module's compiled code in memory; the sandbox still executes the module fresh for each run.

The contracts (``core``: inputs, results, shared types) and the activity modules are passed through: one copy per
process, never rebuilt per run (a pydantic model costs milliseconds to build), whether or not a workflow module
imports them inside ``workflow.unsafe.imports_passed_through()``.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys
from collections.abc import Iterable, Sequence
from types import CodeType, ModuleType

from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

PASSED_THROUGH = ("core", "activities")


class _CompiledOnce(importlib.machinery.SourceFileLoader):
    """A source loader that compiles a file once per process (again only when the file changes)."""

    _code: dict[tuple[str, int], CodeType] = {}

    def get_code(self, fullname: str) -> CodeType:
        key = (self.path, os.stat(self.path).st_mtime_ns)
        code = self._code.get(key)
        if code is None:
            found = super().get_code(fullname)
            if found is None:
                raise ImportError(f"no code for {fullname}", name=fullname)
            code = self._code[key] = found
        return code


class _WorkflowModules(importlib.abc.MetaPathFinder):
    """Finds the named modules as the path finder does, with a loader that compiles each once."""

    def __init__(self) -> None:
        self.names: set[str] = set()

    def find_spec(self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if fullname not in self.names:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        if spec is None or type(spec.loader) is not importlib.machinery.SourceFileLoader:
            return spec
        spec.loader = _CompiledOnce(fullname, spec.loader.path)
        return spec


_FINDER = _WorkflowModules()


def compile_once(modules: Iterable[str]) -> None:
    """Compile these modules (and their packages) once per process when the sandbox imports them."""
    for name in modules:
        parts = name.split(".")
        _FINDER.names.update(".".join(parts[: i + 1]) for i in range(len(parts)))
    if _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)


def workflow_runner(workflows: Iterable[type]) -> SandboxedWorkflowRunner:
    """The sandbox for these workflow classes: their modules compiled once, the contracts passed through."""
    compile_once(cls.__module__ for cls in workflows)
    return SandboxedWorkflowRunner(restrictions=SandboxRestrictions.default.with_passthrough_modules(*PASSED_THROUGH))
