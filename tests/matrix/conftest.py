"""The failure matrix in pytest: one test per case, all cases played at once by one session fixture.

Cases are parametrised from ``baselines.json`` (the steps of each runbook's recorded fault-free run). The session
plays the fault-free runs again first: when a runbook's main path changed, ``test_baseline`` fails, rewrites the
file, and names the steps that are new (the next run covers them). The other selected cases then run concurrently
(``MATRIX_CONCURRENCY``, default 4) and each test judges its own case.

At the end the terminal summary prints ``matrix_cases N``, ``matrix_failures F``, ``matrix_wall_s S`` and one line
per failing case; the same table goes to ``.state/matrix-report.txt``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from tests.matrix.engine import Case, Outcome
from tests.matrix.judge import judge
from tests.matrix.runbooks import SCENARIOS
from tests.matrix.session import BASELINES, cases_from, load_baselines, open_runtime, played, run_cases, source_hash

REPORT = Path(__file__).resolve().parents[2] / ".state" / "matrix-report.txt"
_SELECTED = pytest.StashKey[list]()
_RUNBOOKS = pytest.StashKey[set]()  # the runbooks of the selected tests: only their fault-free runs are played
_STATE: dict[str, Any] = {"verdicts": {}, "started": None, "ended": None}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "matrix: the failure matrix (make chaos runs only these)")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "case" in metafunc.fixturenames:
        cases = [c for c in cases_from(load_baselines()) if c.kind != "baseline"]
        metafunc.parametrize("case", cases, ids=[c.id for c in cases])
    elif "runbook" in metafunc.fixturenames:
        metafunc.parametrize("runbook", played())


def pytest_collection_finish(session: pytest.Session) -> None:
    selected: list[Case] = []
    runbooks: set[str] = set()
    for item in session.items:
        callspec = getattr(item, "callspec", None)
        if callspec is not None and isinstance(callspec.params.get("case"), Case):
            selected.append(callspec.params["case"])
            runbooks.add(callspec.params["case"].runbook)
        elif callspec is not None and isinstance(callspec.params.get("runbook"), str):
            runbooks.add(callspec.params["runbook"])
    session.config.stash[_SELECTED] = selected
    session.config.stash[_RUNBOOKS] = runbooks


class Matrix:
    def __init__(self, baselines: dict[str, Outcome], outcomes: dict[str, Outcome], recorded: dict) -> None:
        self.baselines, self.outcomes, self.recorded = baselines, outcomes, recorded

    def verdict(self, case_id: str, out: Outcome) -> list[str]:
        problems = judge(out, self.baselines.get(out.case.runbook))
        _STATE["verdicts"][case_id] = (out, problems)
        return problems


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def matrix(request: pytest.FixtureRequest, postgres: str, openbao: tuple[str, str]) -> Matrix:
    selected: list[Case] = request.config.stash.get(_SELECTED, [])
    runbooks = [r for r in played() if r in request.config.stash.get(_RUNBOOKS, set())]
    recorded = load_baselines()
    _STATE["started"] = time.monotonic()
    async with open_runtime(pg_uri=postgres, vault=openbao) as rt:
        base = await run_cases([Case(r, "baseline") for r in runbooks], rt)
        baselines = {r: base[f"{r}-baseline"] for r in runbooks}
        fresh_steps = {r: o.steps for r, o in baselines.items()}
        if any(recorded.get("runbooks", {}).get(r, {}).get("steps") != s for r, s in fresh_steps.items()):
            kept = recorded.get("runbooks", {})  # the runbooks this scope did not play keep their recorded path
            fresh = {r: {"steps": o.steps, "status": o.status, "ending": o.ending} for r, o in baselines.items()}
            data = {"source_hash": source_hash(),  # in SCENARIOS order: baselines.json stays stable
                    "runbooks": {r: fresh.get(r, kept.get(r)) for r in SCENARIOS if r in fresh or r in kept}}
            BASELINES.write_text(json.dumps(data, indent=1) + "\n")
        outcomes = await run_cases(selected, rt)
    _STATE["ended"] = time.monotonic()
    return Matrix(baselines, outcomes, recorded)


def _summary() -> list[str]:
    """The failing cases (one line each, their first problem) then matrix_cases / matrix_failures / matrix_wall_s;
    writes every problem of every failing case to REPORT. Empty when no case ran in this process."""
    verdicts = _STATE["verdicts"]
    if not verdicts:
        return []
    failures = {cid: v for cid, v in verdicts.items() if v[1]}
    wall = (_STATE["ended"] or time.monotonic()) - (_STATE["started"] or time.monotonic())
    lines = [f"matrix_cases {len(verdicts)}", f"matrix_failures {len(failures)}", f"matrix_wall_s {wall:.1f}"]
    table = [f"{cid}: {problems[0][:220]}" + (f" (+{len(problems) - 1} more)" if len(problems) > 1 else "")
             for cid, (_, problems) in sorted(failures.items())]
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text("\n".join(lines + [""] + [
        f"{cid}\n" + "\n".join(f"    {p}" for p in problems) + f"\n    (run dir {out.dir})"
        for cid, (out, problems) in sorted(failures.items())
    ]) + "\n")
    return table + lines


def pytest_sessionfinish(session: pytest.Session) -> None:
    # Under pytest-xdist (make test) the matrix runs in one worker, whose terminal is not shown: hand the summary to
    # the controller, which prints it (tests/conftest.py).
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput["matrix_summary"] = _summary()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if hasattr(terminalreporter.config, "workeroutput"):
        return
    lines = _summary()
    if lines:
        terminalreporter.section("failure matrix")
        for line in lines:
            terminalreporter.write_line(line)
