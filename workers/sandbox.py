"""The workflow sandbox of every worker, replayer and test worker: the workflow modules and the shared-types layer
passed through, so that a run executes no module afresh.

Temporal's sandbox imports a workflow's module afresh for every run and every replay, so that module-level state
cannot leak between runs, and hands the module proxies of ``datetime``, ``random``, ``os`` and the like that refuse
non-deterministic calls. The price is paid per run: executing the module again applies ``@workflow.defn`` again,
which walks every member of the class and its bases and inspects every handler's signature, and every access to a
proxied module afterwards goes through the proxy. For the canary (a class with the runbook base's and the steering's
handlers) that was most of what a run cost the worker beyond the same activities and timers in a bare workflow
(``bench/engine_throughput.py``: worker CPU 188 vs 167 ms a run with the module executed per run, 167 vs 162 passed
through, both at load 13). The building blocks the workflow modules import (``workflows.base``, ``analysis``,
``gate``, ``traffic``...) were passed through already.

So the workflow modules themselves are passed through too: one copy per process. What the sandbox gave them per run
is kept otherwise: a workflow module holds no state at module level but constants, each run gets its own instance,
and ``tests/core/test_determinism.py`` reads every workflow module for the calls the proxies used to refuse
(wall clock, randomness, environment, files, threads), in the building blocks too, which the sandbox never checked.
The sandbox still runs each activation with its restricted builtins and import hook, and the recorded histories
(tests/replay) replay against the code.

The contracts (``core``: inputs, results, shared types) and the activity modules are passed through as before: a
pydantic model costs milliseconds to build.
"""

from __future__ import annotations

from collections.abc import Iterable

from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

# the product's workflow package whole, its __init__ too: a workflow module passed through alone left the sandbox to
# import the package afresh during an activation ("Module workflows was imported after initial workflow load")
PASSED_THROUGH = ("core", "activities", "workflows")


def workflow_runner(workflows: Iterable[type]) -> SandboxedWorkflowRunner:
    """The sandbox for these workflow classes: their modules (the product's and any team's) and the contracts
    passed through."""
    modules = sorted({cls.__module__ for cls in workflows})
    return SandboxedWorkflowRunner(
        restrictions=SandboxRestrictions.default.with_passthrough_modules(*PASSED_THROUGH, *modules))
