"""What a matrix case must show, as a list of problems (empty = the case passes).

The convention (issue 11): every run COMPLETES with a result whose ``status`` is one of Succeeded, RolledBack,
Aborted, Rejected, Refused, Held, except Failed, which fails the workflow with ApplicationError(type="RunFailed")
whose details[0] is the result. Cancel == abort. The expected status per fault:

- baseline, kill, chaos: Succeeded (a crash or transient faults change nothing about the outcome);
- fail (a non-retryable error at step k): RolledBack or Refused; Failed for a drill, or when the failed step was a
  clean-up and the result names what was not undone (the safe state is then not compared); Succeeded only when the
  run absorbed the fault by design (a probe among several) and made exactly the baseline's changes;
- abort, cancel (while at step k): Aborted.

A runbook may declare per-step exceptions as data (``Scenario.rules`` in runbooks.py, one ``StepRule`` per step and
fault kind, documented in the runbook's docs): the outcome and safe state it names replace the general ones.

The infrastructure ends in the safe state: as found at the start for any run that did not succeed (and for a
successful drill or sandbox, which must be invisible afterwards), as the fault-free run left it for any other
successful run. The change ledger: a successful kill/chaos run makes exactly the baseline's effective changes; any
other run makes a prefix of them, then only changes that the baseline makes later (in the baseline's order) or
that put a resource back as it was found, or as it was before the run's latest change of it (the compensation of
a later stage, e.g. a drill's failback giving the DR database its writes back).
"""

from __future__ import annotations

from typing import Any

from tests.matrix.engine import TERMINAL, Outcome
from tests.matrix.runbooks import SCENARIOS

EXPECTED = {
    "baseline": {"Succeeded"},
    "kill": {"Succeeded"},
    "chaos": {"Succeeded"},
    "fail": {"RolledBack", "Refused"},
    "abort": {"Aborted"},
    "cancel": {"Aborted"},
}


def expected_statuses(kind: str, drill: bool) -> set[str]:
    allowed = set(EXPECTED[kind])
    if kind == "fail" and drill:
        allowed.add("Failed")
    return allowed


def _short(value: Any, limit: int = 160) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _diff(expected: dict, actual: dict, keep: Any) -> list[str]:
    keys = sorted(k for k in set(expected) | set(actual) if keep(k))
    return [f"{k}: expected {_short(expected.get(k))}, found {_short(actual.get(k))}"
            for k in keys if expected.get(k) != actual.get(k)]


def _pairs(ledger: list[dict]) -> list[tuple[str, str]]:
    return [(e["key"], repr(e["value"])) for e in ledger]


def normalised(out: Outcome) -> Outcome:
    """The outcome with the case's own names (moto account, workflow id) replaced by ``<case>``, so that its
    snapshots and ledger compare with another case's."""
    import copy
    import json

    def fix(text: str) -> str:
        for token in out.tokens:
            text = text.replace(token, "<case>")
        return text

    def fix_snap(snap: dict) -> dict:
        return {fix(k): json.loads(fix(json.dumps(v))) for k, v in snap.items()}

    clone = copy.copy(out)
    clone.initial, clone.final = fix_snap(out.initial), fix_snap(out.final)
    clone.ledger = [dict(e, key=fix(e["key"]), value=json.loads(fix(json.dumps(e["value"])))) for e in out.ledger]
    return clone


def judge(out: Outcome, baseline: Outcome | None) -> list[str]:
    out = normalised(out)
    baseline = normalised(baseline) if baseline is not None else None
    case = out.case
    scenario = SCENARIOS[case.runbook]()
    problems = list(out.problems)
    if problems and any(p.startswith("harness error") for p in problems):
        return problems
    if not out.reached:
        problems.append(f"step {case.step} was never reached (the run took another path than the baseline's)")
    # 1. the ending convention and the documented outcome
    if out.ending == "completed":
        if out.status not in TERMINAL or out.status == "Failed":
            problems.append(f"completed with status {out.status!r}: not a terminal status of the convention "
                            f"(Failed must fail the run with RunFailed)")
    elif out.ending == "failed RunFailed":
        if out.status != "Failed":
            problems.append(f"RunFailed whose result has status {out.status!r}, not Failed")
    else:
        problems.append(f"ends {out.ending}: the convention is a result with a status, or RunFailed "
                        f"({_short(out.reason, 200)})")
    rule = scenario.rule(case.kind, case.step)
    allowed = set(rule.outcome) if rule else expected_statuses(case.kind, scenario.drill)
    result = out.result or {}
    admitted = out.status == "Failed" and bool(result.get("not_undone"))
    absorbed = (case.kind == "fail" and out.status == "Succeeded" and baseline is not None
                and not ledger_problems(out, baseline, True, scenario.safe_key, exact=True))
    if case.kind == "fail" and admitted and not rule:
        allowed = allowed | {"Failed"}  # the failed step was itself a clean-up: the run says what it left
    if absorbed and not rule:
        allowed = allowed | {"Succeeded"}  # the step may fail by design (a probe among several): nothing differs
    if out.status not in allowed:
        problems.append(f"outcome {out.status or out.ending!r}, expected {' or '.join(sorted(allowed))}"
                        f" ({_short(out.reason, 200)})")
    # 2. no workflow task failed (UNHANDLED_COMMAND is Temporal's own way to show a workflow the events that arrived
    #    while it completed, e.g. a cancel request: not a failure of the workflow's code)
    for failure in [f for f in out.workflow_task_failures if "UNHANDLED_COMMAND" not in f][:3]:
        problems.append(f"workflow task failed: {failure}")
    # 3. the safe state
    keep = scenario.safe_key
    succeeded = out.status == "Succeeded"
    if rule and out.status in rule.outcome:
        expected, what = _rule_state(rule, out, baseline)
        if rule.safe == "named" and not result.get("left_in_place"):
            problems.append(f"{out.status} must name the state it leaves for a person (left_in_place): it names none")
    elif admitted and case.kind == "fail":
        expected, what = out.final, ""  # not safe, and the run says so: nothing more to compare
    elif not succeeded or scenario.success_is_initial:
        expected, what = out.initial, "as found at the start"
    else:
        expected, what = (baseline.final if baseline else out.final), "as the fault-free run left it"
    diff = _diff(expected, out.final, keep)
    if diff:
        problems.append(f"not in the safe state ({what}): " + "; ".join(diff[:6])
                        + (f"; and {len(diff) - 6} more" if len(diff) > 6 else ""))
    # 4. the change ledger: at most once, in order
    if baseline is not None and case.kind != "baseline":
        problems += ledger_problems(out, baseline, succeeded, keep)
    return problems


def _rule_state(rule: Any, out: Outcome, baseline: Outcome | None) -> tuple[dict, str]:
    """The safe state a step's rule names: as found, or as the fault-free run left it except some keys as found."""
    if rule.safe == "named":  # left for a person, and named by the run (checked above): nothing to compare
        return out.final, ""
    if rule.safe == "as found" or baseline is None:
        return out.initial, "as found at the start"
    expected = {k: v for k, v in baseline.final.items() if not k.startswith(rule.as_found)}
    expected.update({k: v for k, v in out.initial.items() if k.startswith(rule.as_found)})
    kept = f", except {', '.join(rule.as_found)} as found" if rule.as_found else ""
    return expected, f"as the fault-free run left it{kept}: {rule.why}"


def ledger_problems(out: Outcome, baseline: Outcome, succeeded: bool, keep: Any = lambda key: True,
                    exact: bool = False) -> list[str]:
    got = _pairs([e for e in out.ledger if keep(e["key"])])
    base = _pairs([e for e in baseline.ledger if keep(e["key"])])
    if exact or (out.case.kind in ("kill", "chaos") and succeeded):
        if got == base:
            serial = {k: v for k, v in out.final.items() if k.startswith("tfserial:")}
            expected = {k: v for k, v in baseline.final.items() if k.startswith("tfserial:")}
            return [] if serial == expected else [f"Terraform state written another number of times: {serial} vs {expected}"]
        for i, (a, b) in enumerate(zip(got, base, strict=False)):
            if a != b:
                return [f"ledger differs from the fault-free run at change {i}: {_short(a)} instead of {_short(b)}"]
        longer, which = (got, "extra") if len(got) > len(base) else (base, "missing")
        return [f"ledger has {which} changes after {min(len(got), len(base))}: {_short(longer[min(len(got), len(base)):][:3])}"]
    initial = {k: repr(v) for k, v in out.initial.items()}
    j = 0
    while j < len(got) and j < len(base) and got[j] == base[j]:
        j += 1
    p = j
    values: dict[str, list[str]] = {}  # per resource, the values this run gave it (as found first)
    for n, entry in enumerate(got):
        key, value = entry
        seen = values.setdefault(key, [initial.get(key, "None")])
        undo = len(seen) >= 2 and value == seen[-2]
        seen.append(value)
        if n < j:
            continue
        if value == initial.get(key, "None") or undo:
            continue  # compensation: the resource put back as it was found, or as it was before its latest change
        later = [i for i in range(p, len(base)) if base[i] == entry]
        if later:
            p = later[0] + 1  # a change of the baseline's path (going on, or its own way back), in order
            continue
        if entry in base:
            return [f"change applied again or out of order (the baseline made it earlier): {_short(entry)}"]
        return [f"change that is neither on the baseline's path nor a compensation: {_short(entry)}"]
    return []
