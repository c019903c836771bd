"""The failure matrix (issue 11, item 7): every runbook, every activity on its main path (derived from a recorded
fault-free run), killed / failed / aborted / cancelled at that step, and transient chaos over whole runs.

See docs/failure-matrix.md for what each case asserts and how to read a failure."""

from __future__ import annotations

import pytest

from tests.matrix.engine import Case

pytestmark = [pytest.mark.matrix, pytest.mark.timeout(1800)]


async def test_baseline(matrix, runbook: str) -> None:
    """The fault-free run succeeds, leaves the documented state, and its main path is the recorded one."""
    out = matrix.baselines[runbook]
    problems = matrix.verdict(f"{runbook}-baseline", out)
    recorded = matrix.recorded.get("runbooks", {}).get(runbook, {}).get("steps")
    if recorded != out.steps:
        new = [s for s in out.steps if s not in (recorded or [])]
        gone = [s for s in (recorded or []) if s not in out.steps]
        problems.append(f"the main path changed (baselines.json rewritten; run again to cover it): new {new}, gone {gone}")
    assert not problems, "\n".join(problems)


async def test_case(matrix, case: Case) -> None:
    out = matrix.outcomes[case.id]
    problems = matrix.verdict(case.id, out)
    assert not problems, "\n".join(problems) + f"\n(run dir {out.dir})"
