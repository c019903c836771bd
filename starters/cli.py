"""The `runbook` command line: start, follow, approve, steer and abort runbooks; run the worker and the local stack.

Exit codes: 0 done; 1 Temporal unreachable or an unexpected server error; 2 a problem the user can fix (unknown
runbook, bad parameter, refused approval or steering, a steering verb the run's runbook lacks, unknown run); 3 a
run followed with --wait ended without succeeding (rolled back, failed, aborted); 4 a run for the same target is
already running (nothing started).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import getpass
import json
import os
import shlex
import sys
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Callable, Coroutine, Optional

import typer
from pydantic import BaseModel

from core.config import Settings
from starters.fast_read import visibility_query
from starters.simulate import simulate_app
from starters.verbs import Steer, describe_verb
from workers.keyring import CodecKeyError

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table
    from temporalio.client import Client

    from core.catalog import Catalog, StartPlan
    from core.runbook import RunbookStatus
    from starters.client import DryRunOutcome, RunbookClient

# Commands import only what they use: `runbook status --json` needs neither Rich, the catalog nor any workflow
# module (bench/cli_speed.py measures it), so those are imported inside the commands that draw or plan; and the
# commands that never reach Temporal (login, simulate, calendar, catalog validate, codec-keys, --help) do not import
# its SDK either: the client, the connection and the approval inputs are imported by the commands that send.

EXIT_OK, EXIT_UNREACHABLE, EXIT_USAGE, EXIT_UNSUCCESSFUL, EXIT_ALREADY_RUNNING, EXIT_NEEDS_PERSON = 0, 1, 2, 3, 4, 5


def exit_code(status: str) -> int:
    """How a finished run's status (core.runbook.TERMINAL) becomes the exit code of --wait and watch: 0 Succeeded;
    3 ended safely but not as asked (RolledBack, Aborted, Rejected, Refused); 5 a person must act (Held, Failed)."""
    if status == "Succeeded":
        return EXIT_OK
    return EXIT_NEEDS_PERSON if status in ("Held", "Failed") else EXIT_UNSUCCESSFUL

app = typer.Typer(help="Durable runbook automation on Temporal.", no_args_is_help=True, add_completion=False)
catalog_app = typer.Typer(help="List and validate the runbook catalog.", invoke_without_command=True)
schedule_app = typer.Typer(help="Temporal Schedules that run runbooks (e.g. monthly restore drills).")
codec_keys_app = typer.Typer(help="The key file of the payload codec (RUNBOOK_CODEC_KEYS_FILE): create, rotate.")
app.add_typer(catalog_app, name="catalog")
app.add_typer(schedule_app, name="schedule")
app.add_typer(codec_keys_app, name="codec-keys")
app.add_typer(simulate_app, name="simulate")  # signed Slack / PagerDuty requests to the gateway

PIPE_WIDTH = 1000  # the width Rich lays tables out in when the output is not a terminal


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # a closed or bare stream
        return False


class _Console:
    """A Rich console made on first use (importing Rich costs a JSON-only command a third of its time)."""

    def __init__(self, **options: Any) -> None:
        self._options = options
        self._console: Console | None = None

    def rich(self) -> Console:
        if self._console is None:
            from rich.console import Console

            options = dict(self._options)
            stream = sys.stderr if options.get("stderr") else sys.stdout
            if "width" not in options and not _isatty(stream):
                # a pipe or a file gets complete lines: tables are never cut at $COLUMNS (80 in many shells and CI)
                options["width"] = PIPE_WIDTH
            self._console = Console(**options)
        return self._console

    def __getattr__(self, name: str) -> Any:
        return getattr(self.rich(), name)


out: Any = _Console(soft_wrap=True)  # ids, links and hashes must stay copyable: never wrap printed lines
err: Any = _Console(stderr=True, soft_wrap=True)


def _error(message: str) -> None:
    """``error: <message>`` on stderr; the message is text, not Rich markup (a validation error's ``[...]`` stays)."""
    from rich.markup import escape

    err.print(f"[red]error:[/red] {escape(message)}", highlight=False)


def _rich(console: Any) -> Console:
    """The Rich console itself, for what needs the real object (Live uses it as a context manager)."""
    return console.rich() if isinstance(console, _Console) else console


def _table(*columns: str, **options: Any) -> Table:
    from rich.table import Table

    return Table(*columns, **options)


def __getattr__(name: str) -> Any:
    if name == "approve_hint":  # the approve command people are shown (starters.render), as it was exported here
        from starters.render import approve_hint

        return approve_hint
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class UserError(Exception):
    """A problem the person can fix; printed as one line, exit code 2."""


# ----------------------------------------------------------------------------- shared plumbing
CatalogOpt = Annotated[
    Optional[Path], typer.Option("--catalog", envvar="RUNBOOK_CATALOG_DIR", help="catalog folder [default: runbooks]")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="print one JSON object")]
AddressOpt = Annotated[
    Optional[str], typer.Option("--address", help="Temporal frontend host:port [env TEMPORAL_ADDRESS]")
]
NamespaceOpt = Annotated[Optional[str], typer.Option("--namespace", help="Temporal namespace [env TEMPORAL_NAMESPACE]")]


def _identity(value: str | None) -> str:
    return value or os.environ.get("RUNBOOK_USER") or getpass.getuser()


def _settings(catalog: Path | None = None) -> Settings:
    overrides: dict[str, Any] = {}
    if catalog is not None:
        overrides["catalog_dir"] = catalog
    return Settings(**overrides)


def _inputs(settings: Settings) -> Mapping[str, Any]:
    """Workflow type -> its input model (the registry's, and a team's own runbooks'); no product workflow module is
    imported."""
    from workflows import registry

    try:
        return registry.inputs(settings.workflow_modules)
    except ImportError as error:
        raise UserError(f"RUNBOOK_WORKFLOW_MODULES: {error}") from None


def _load_catalog(settings: Settings) -> Catalog:
    from core.catalog import Catalog

    return Catalog.load(settings.catalog_dir, inputs=_inputs(settings))


def _loaded_errors(*names: str) -> tuple[Any, ...]:
    """The error classes ("module:Class") of the modules this command has imported: one it never imported cannot
    have raised them, and importing it only to name the class would cost every command its import."""
    found = []
    for name in names:
        module, _, attr = name.partition(":")
        if module in sys.modules:
            found.append(getattr(sys.modules[module], attr))
    return tuple(found)


def _run(coro_factory: Callable[[], Coroutine[Any, Any, int | None]]) -> None:
    """Run an async command; turn domain errors into one line and an exit code."""
    try:
        code = asyncio.run(coro_factory())
    except (UserError, CodecKeyError,
            *_loaded_errors("starters.client:RunbookClientError", "workers.connection:TemporalConfigError",
                            "core.catalog:ParameterError", "starters.schedules:ScheduleError")) as error:
        _error(f"{error}")
        raise typer.Exit(EXIT_USAGE) from None
    except _loaded_errors("core.catalog:CatalogError") as error:
        for problem in error.problems:
            _error(f"{problem}")
        raise typer.Exit(EXIT_USAGE) from None
    except _loaded_errors("workers.connection:TemporalUnreachable") as error:
        _error(f"cannot reach Temporal at {error.address} (set TEMPORAL_ADDRESS or --address)")
        raise typer.Exit(EXIT_UNREACHABLE) from None
    except _loaded_errors("temporalio.service:RPCError") as error:
        from temporalio.service import RPCStatusCode

        if error.status == RPCStatusCode.NOT_FOUND:
            _error(f"{error.message}")
            raise typer.Exit(EXIT_USAGE) from None
        if error.status == RPCStatusCode.UNAVAILABLE:
            _error(f"Temporal unavailable: {error.message}")
            raise typer.Exit(EXIT_UNREACHABLE) from None
        _error(f"Temporal refused the request: {error.message}")
        raise typer.Exit(EXIT_UNREACHABLE) from None
    raise typer.Exit(code or EXIT_OK)


async def _client(settings: Settings, address: str | None, namespace: str | None) -> Client:
    if address:
        os.environ["TEMPORAL_ADDRESS"] = address
    if namespace:
        os.environ["TEMPORAL_NAMESPACE"] = namespace
    from workers.connection import connect

    return await connect(settings)


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def _dump(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return json.loads(json.dumps(dataclasses.asdict(value), default=str))
    return value


def _parse_sets(values: list[str]) -> dict[str, str]:
    params: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--set {item!r}: write it as KEY=VALUE")
        params[key.strip()] = value
    return params


async def _runs(settings: Settings, address: str | None, namespace: str | None) -> RunbookClient:
    from starters.client import RunbookClient

    return RunbookClient(await _client(settings, address, namespace), settings.task_queue)


async def _status(client: Client, workflow_id: str) -> RunbookStatus:
    from starters.client import RunbookClient

    return await RunbookClient(client).status(workflow_id)


# ----------------------------------------------------------------------------- catalog
@catalog_app.callback()
def catalog_list(
    ctx: typer.Context,
    catalog: CatalogOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List the runbooks of the catalog."""
    if ctx.invoked_subcommand is not None:
        ctx.obj = catalog  # `runbook catalog --catalog DIR validate` validates DIR
        return

    async def body() -> int:
        cat = _load_catalog(_settings(catalog))
        if as_json:
            _print_json({name: spec.model_dump(mode="json") for name, spec in sorted(cat.runbooks.items())})
            return EXIT_OK
        table = _table(title="Runbook catalog")
        table.add_column("runbook", no_wrap=True)
        table.add_column("workflow", no_wrap=True)
        table.add_column("target", no_wrap=True)
        table.add_column("approval")
        table.add_column("description", min_width=20)
        for name, spec in sorted(cat.runbooks.items()):
            table.add_row(name, spec.workflow, spec.target, approval_rules(spec), spec.description.strip().splitlines()[0])
        out.print(table)
        return EXIT_OK

    _run(body)


def approval_rules(spec: Any) -> str:
    """A runbook's approval rules, one line each: the default, then each environment's own (a runbook whose policy
    depends on the environment shows them all, not only the default)."""

    def rule(approval: Any) -> str:
        if approval.required_approvals == 0:
            return "none"
        who = ", ".join([*approval.groups, *approval.approvers]) or "-"
        text = f"{approval.required_approvals} of {who}"
        return text + (f" (each of {', '.join(approval.required_groups)})" if approval.required_groups else "")

    if not spec.approval_by_environment:
        return rule(spec.approval)
    lines = [f"{env}: {rule(approval)}" for env, approval in spec.approval_by_environment.items()]
    return "\n".join([*lines, f"other: {rule(spec.approval)}"])


@app.command("calendar")
def calendar(
    catalog: CatalogOpt = None,
    at: Annotated[Optional[datetime], typer.Option("--at", help="judge this moment (UTC) instead of now")] = None,
    count: Annotated[int, typer.Option("--next", min=1, help="occurrences shown per window")] = 3,
    as_json: JsonOpt = False,
) -> None:
    """The change calendar (calendar.yaml): each freeze window, whether it is in force now, and its next times."""
    from core.calendar import as_of, upcoming

    async def body() -> int:
        cat = _load_catalog(_settings(catalog))
        moment = as_of(at) if at is not None else datetime.now(timezone.utc)
        found = upcoming(cat.calendar, moment, count)
        if as_json:
            _print_json({"at": moment.isoformat(), "timezone": cat.calendar.timezone, "windows": [
                {**window.model_dump(mode="json", exclude_none=True),
                 "break_glass_groups": sorted(cat.break_glass[window.name].groups) if window.name in cat.break_glass else [],
                 "occurrences": [o.model_dump(mode="json") for o in occurrences]}
                for window, occurrences in found]})
            return EXIT_OK
        if not found:
            out.print("the catalog has no change calendar (calendar.yaml): nothing is frozen")
            return EXIT_OK
        table = _table(title=f"Change calendar at {moment:%Y-%m-%d %H:%M} UTC")
        for column in ("window", "now", "freezes", "exempt", "break glass", "next (UTC)"):
            table.add_column(column, no_wrap=column in ("window", "now"))
        for window, occurrences in found:
            active = next((o for o in occurrences if o.active), None)
            now = f"FROZEN until {active.ends_at:%Y-%m-%d %H:%M}" if active else "open"
            scope = (", ".join(window.environments) or "every environment") + (
                f" / {', '.join(window.runbooks)}" if window.runbooks else "")
            policy = cat.break_glass.get(window.name)
            glass = ", ".join(sorted(policy.groups)) if policy else "none"
            times = "\n".join(f"{o.starts_at:%Y-%m-%d %H:%M} -> {o.ends_at:%Y-%m-%d %H:%M}" for o in occurrences
                              if not o.active) or "none"
            table.add_row(window.name, now, scope, ", ".join(window.exempt) or "-", glass, times)
        out.print(table)
        return EXIT_OK

    _run(body)


@catalog_app.command("validate")
def catalog_validate(
    ctx: typer.Context,
    path: Annotated[Optional[Path], typer.Argument(help="catalog folder [default: --catalog, or the configured catalog]")] = None,
) -> None:
    """Check every runbook file: YAML, fields, approval groups, parameters against the workflow's input."""

    async def body() -> int:
        settings = _settings(path or ctx.obj)
        cat = _load_catalog(settings)
        windows = f", {len(cat.calendar.windows)} freeze windows" if cat.calendar.windows else ""
        out.print(f"[green]ok[/green]: {len(cat.runbooks)} runbooks{windows} in {settings.catalog_dir}")
        return EXIT_OK

    _run(body)


# ----------------------------------------------------------------------------- start
@app.command()
def start(
    name: Annotated[str, typer.Argument(help="runbook name from the catalog")],
    set_: Annotated[list[str], typer.Option("--set", help="parameter KEY=VALUE (repeatable)")] = [],  # noqa: B006
    as_user: Annotated[Optional[str], typer.Option(
        "--as", help="who requests the run, recorded as an unverified label [env RUNBOOK_USER]")] = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="show what the run would change, read from the systems it would change; change nothing")] = False,
    wait: Annotated[bool, typer.Option("--wait", help="follow the run until it ends")] = False,
    as_json: JsonOpt = False,
    catalog: CatalogOpt = None,
    address: AddressOpt = None,
    namespace: NamespaceOpt = None,
) -> None:
    """Validate parameters against the catalog and start a runbook (one run per target at a time)."""

    async def body() -> int:
        settings = _settings(catalog)
        inputs = _inputs(settings)
        from core.catalog import Catalog

        cat = Catalog.load(settings.catalog_dir, inputs=inputs)
        from workers.connection import connect_config

        ns = namespace or connect_config(settings)["namespace"]
        plan = cat.plan_start(
            name,
            _parse_sets(set_),
            requested_by=_identity(as_user),
            inputs=inputs,
            source="cli",
            ui_base=settings.ui_url,
            namespace=ns,
        )
        runs = await _runs(settings, address, namespace)
        if dry_run:
            return await _dry_run(runs, plan, as_json)
        client = runs.temporal
        outcome = await runs.start(plan)
        link = plan.meta.ui_url  # built by plan_start from the same UI base and namespace
        if not outcome.started:
            if as_json:
                _print_json(
                    {"workflow_id": outcome.workflow_id, "run_id": outcome.run_id, "status": "AlreadyRunning",
                     "started": False, "result": None, "ui_url": link, "excluded": outcome.excluded}
                )
            else:
                err.print(
                    f"[yellow]already running[/yellow]: {outcome.workflow_id} (run {outcome.run_id}); "
                    + (f"{outcome.excluded} may not run beside it (single flight per service); " if outcome.excluded
                       else "")
                    + f"nothing new was started. Follow it: {shlex.join(['runbook', 'watch', outcome.workflow_id])}",
                    highlight=False,
                )
            return EXIT_ALREADY_RUNNING
        if not as_json:
            out.print(f"started [bold]{outcome.workflow_id}[/bold] (run {outcome.run_id})", highlight=False)
            out.print(f"web UI: {link}", highlight=False)
        if not wait:
            if as_json:
                _print_json(
                    {"workflow_id": outcome.workflow_id, "run_id": outcome.run_id, "status": "Running",
                     "started": True, "result": None, "ui_url": link}
                )
            return EXIT_OK
        if not as_json:
            await _watch(client, outcome.workflow_id)
        status, result = await _final(client, outcome.workflow_id, outcome.run_id)
        if as_json:
            _print_json(
                {"workflow_id": outcome.workflow_id, "run_id": outcome.run_id, "status": status, "started": True,
                 "result": result, "ui_url": link}
            )
        else:
            out.print(f"finished: [bold]{status}[/bold]", highlight=False)
            if isinstance(result, dict) and result.get("summary"):
                out.print(result["summary"], highlight=False)
            elif isinstance(result, str):
                out.print(result, highlight=False)
        return exit_code(status)

    _run(body)


async def _dry_run(runs: RunbookClient, plan: StartPlan, as_json: bool) -> int:
    """``start --dry-run``: the worker's read-only plan of the run as a table (or JSON). Exit 0 a plan; 3 the run
    would be refused; 4 a run for the same key is already going (as a real start); 1 a system could not be read."""
    from starters.client import DryRunFailed

    try:
        outcome = await runs.dry_run(plan)
    except DryRunFailed as failed:
        _error(f"{failed}")
        return EXIT_UNREACHABLE
    if as_json:
        _print_json(outcome.as_json())
    elif outcome.status == "AlreadyRunning":
        beside = f"{outcome.excluded} may not run beside it (single flight per service); " if outcome.excluded else ""
        err.print(f"[yellow]already running[/yellow]: {outcome.workflow_id} (run {outcome.running_run_id}); {beside}a "
                  f"start would start nothing. Follow it: {shlex.join(['runbook', 'watch', outcome.workflow_id])}",
                  highlight=False)
    else:
        _print_dry_run(outcome)
    if outcome.status == "AlreadyRunning":
        return EXIT_ALREADY_RUNNING
    return EXIT_UNSUCCESSFUL if outcome.plan.outcome == "WouldRefuse" else EXIT_OK


def _print_dry_run(outcome: DryRunOutcome) -> None:
    from rich.markup import escape

    p = outcome.plan
    out.print(f"[bold]dry run[/bold] of {p.runbook} ({p.workflow_type}) as {p.workflow_id}: nothing was changed, "
              "nothing started", highlight=False)
    out.print(f"{p.outcome}: {escape(p.summary)}", highlight=False)
    if p.reads:
        table = _table("system", "read now", "value", title="As found")
        for r in p.reads:
            table.add_row(r.system, escape(r.what), escape(r.value))
        out.print(table)
    if p.changes:
        table = _table("#", "step", "system", "target", "before", "after", title="Would change, in order")
        for i, c in enumerate(p.changes, start=1):
            table.add_row(str(i), c.step, c.system, escape(c.target), escape(c.before), escape(c.after))
        out.print(table)
    for title, lines in (("Procedure", p.procedure), ("Rollback", p.rollback), ("Approval", p.approval),
                         ("Freeze", [p.freeze.text()])):
        if lines:
            out.print(f"[bold]{title}[/bold]")
            for line in lines:
                out.print(f"  {escape(line)}", highlight=False)


async def _final(client: Client, workflow_id: str, run_id: str | None) -> tuple[str, Any]:
    from starters.client import RunbookClient

    return await RunbookClient(client).result(workflow_id, run_id)


# ----------------------------------------------------------------------------- list / status / watch
@app.command("list")
def list_(
    runbook: Annotated[Optional[str], typer.Option("--runbook", help="only this runbook")] = None,
    target: Annotated[Optional[str], typer.Option("--target", help="only runs against this target")] = None,
    status: Annotated[Optional[str], typer.Option("--status", help="Running, WaitingForApproval, Succeeded, ...")] = None,
    limit: Annotated[int, typer.Option("--limit")] = 50,
    as_json: JsonOpt = False,
    address: AddressOpt = None,
    namespace: NamespaceOpt = None,
) -> None:
    """List runbook runs (a visibility query on the Runbook* search attributes)."""

    async def body() -> int:
        settings = _settings()
        runs = await _runs(settings, address, namespace)
        query = visibility_query(runbook=runbook, target=target, status=status)
        rows = [row async for row in runs.runs(query, limit=limit)]
        if as_json:
            _print_json(rows)
            return EXIT_OK
        table = _table()
        for name in ("workflow id", "runbook", "target", "status", "requested by", "started"):
            table.add_column(name, no_wrap=True)
        for row in rows:
            table.add_row(row["workflow_id"], row["runbook"], row["target"], row["status"], row["requested_by"],
                          (row["started"] or "")[:19])
        out.print(table)
        return EXIT_OK

    _run(body)


@app.command()
def status(
    workflow_id: Annotated[str, typer.Argument(help="the run's workflow id")],
    as_json: JsonOpt = False,
    address: AddressOpt = None,
    namespace: NamespaceOpt = None,
) -> None:
    """Show a run's state: stage, steps, the open approval gate, refusals, steering actions."""

    async def body() -> int:
        client = await _client(_settings(), address, namespace)
        state = await _status(client, workflow_id)
        if as_json:
            _print_json(state.model_dump(mode="json"))
        else:
            _show(state)
        return EXIT_OK

    _run(body)


def _show(state: RunbookStatus) -> None:
    """One run's state, drawn by starters/render.py: Rich on a terminal, complete plain lines elsewhere."""
    from starters import render

    if out.is_terminal:
        out.print(render.rich_view(state, _now(), commands=False))
        for command in render.approve_commands(state):  # one line each, never wrapped: safe to copy
            out.print(f"approve: {command}", markup=False, highlight=False, soft_wrap=True)
    else:
        sys.stdout.write("".join(line + "\n" for line in render.plain_lines(state, _now())))


def _now() -> datetime:
    return datetime.now(timezone.utc)


@app.command()
def watch(
    workflow_id: Annotated[str, typer.Argument(help="the run's workflow id")],
    interval: Annotated[float, typer.Option("--interval", help="seconds between refreshes")] = 1.0,
    address: AddressOpt = None,
    namespace: NamespaceOpt = None,
) -> None:
    """Follow a run live (steps, waits, approvals) until it ends."""

    async def body() -> int:
        client = await _client(_settings(), address, namespace)
        await _watch(client, workflow_id, interval)
        status, _ = await _final(client, workflow_id, None)
        out.print(f"finished: [bold]{status}[/bold]")
        return exit_code(status)

    _run(body)


async def _watch(client: Client, workflow_id: str, interval: float = 1.0) -> None:
    """A Live view on a terminal, redrawn four times a second (bars and time left move between queries); elsewhere
    (a pipe, a log file) the whole view once, then one plain line per change as it happens."""
    from rich.live import Live
    from temporalio.client import WorkflowExecutionStatus
    from temporalio.service import RPCError

    from starters import render

    handle = client.get_workflow_handle(workflow_id)
    state = await _status(client, workflow_id)
    shown: list[RunbookStatus] = [state]
    live = (Live(get_renderable=lambda: render.rich_view(shown[0], _now(), live=True), console=_rich(out), refresh_per_second=4)
            if out.is_terminal else None)
    previous: RunbookStatus | None = None
    with live if live is not None else contextlib.nullcontext():
        while True:
            described = await handle.describe()
            try:
                shown[0] = state = await _status(client, workflow_id)
            except RPCError:
                pass  # no worker answering right now; keep following
            if live is None:
                sys.stdout.write("".join(line + "\n" for line in render.change_lines(previous, state, _now())))
                sys.stdout.flush()
                previous = state
            if described.status != WorkflowExecutionStatus.RUNNING:
                break
            await asyncio.sleep(interval)
        if live is not None:
            live.refresh()


# ----------------------------------------------------------------------------- approvals and steering
def _approval_identity() -> tuple[str | None, str]:
    """(ID token, who) for one approval: a fresh token of whoever ran `runbook login`; without a login, no token
    and the local user name, which only a worker without OIDC accepts (recorded as unverified)."""
    from starters.login import LoginError, approval_token

    try:
        found = approval_token()
    except LoginError as error:
        raise UserError(str(error)) from None
    if found is not None:
        return found
    name = _identity(None)
    err.print(f"[yellow]not logged in[/yellow]: sending the unverified name {name!r}; a worker that checks identities "
              "refuses it (run `runbook login`)", highlight=False)
    return None, name


async def _open_gate(client: Client, workflow_id: str, gate: str | None) -> str:
    if gate:
        return gate
    state = await _status(client, workflow_id)
    if not state.open_gates:
        raise UserError(f"{workflow_id} is not waiting for an approval (status {state.status}: {state.stage})")
    if len(state.open_gates) > 1:
        listed = "; ".join(f"{g.gate_id} ({g.title})" for g in state.open_gates)
        raise UserError(f"{workflow_id} has {len(state.open_gates)} open gates: say which with --gate: {listed}")
    return state.open_gates[0].gate_id


@app.command()
def approve(
    workflow_id: Annotated[str, typer.Argument(help="the run's workflow id")],
    reason: Annotated[str, typer.Option("--reason")] = "",
    expect: Annotated[Optional[str], typer.Option("--expect", help="what you approve, e.g. a plan hash")] = None,
    gate: Annotated[Optional[str], typer.Option("--gate", help="gate id [default: the open gate]")] = None,
    print_signal: Annotated[bool, typer.Option(
        "--print-signal", help="print the JSON to paste into the web UI's Send a Signal (approve_signal) instead")] = False,
    address: AddressOpt = None,
    namespace: NamespaceOpt = None,
) -> None:
    """Approve the open approval gate of a run as the person logged in (`runbook login`); the worker verifies your ID
    token and the policy decides whether your approval counts."""

    async def body() -> int:
        client = await _client(_settings(), address, namespace)
        if print_signal:
            return await _print_signal(client, workflow_id, gate, reason, expect)
        gate_id = await _open_gate(client, workflow_id, gate)
        token, who = _approval_identity()
        from core.approval import ApproveInput
        from starters.client import RunbookClient

        view = await RunbookClient(client).approve(
            workflow_id, ApproveInput(gate_id=gate_id, approver=who, reason=reason, binding=expect, token=token))
        out.print(f"approved gate {gate_id} of {workflow_id} ({len(view.approvals)}/{view.required_approvals} approvals; "
                  f"gate {view.decision})")
        return EXIT_OK

    _run(body)


async def _print_signal(client: Client, workflow_id: str, gate: str | None, reason: str, expect: str | None) -> int:
    """The approve_signal payload for the web UI: the gate, what it approves (its binding, as the run shows it, or
    --expect), and a fresh ID token of the person logged in."""
    state = await _status(client, workflow_id)
    gate_id = await _open_gate(client, workflow_id, gate)
    view = next((g for g in state.open_gates if g.gate_id == gate_id), None)
    token, who = _approval_identity()
    if token is None:
        raise UserError("--print-signal needs a login for the token the UI approval carries: run `runbook login`")
    payload: dict[str, Any] = {"gate_id": gate_id, "reason": reason or "approved in the web UI", "token": token}
    binding = expect or (view.binding if view else None)
    if binding:
        payload["binding"] = binding
    err.print(f"web UI: More Actions -> Send a Signal, name approve_signal, data (valid a few minutes, once, as {who}):",
              highlight=False)
    sys.stdout.write(json.dumps(payload) + "\n")
    return EXIT_OK


@app.command()
def reject(
    workflow_id: Annotated[str, typer.Argument(help="the run's workflow id")],
    reason: Annotated[str, typer.Option("--reason", help="why (required)")],
    gate: Annotated[Optional[str], typer.Option("--gate", help="gate id [default: the open gate]")] = None,
    address: AddressOpt = None,
    namespace: NamespaceOpt = None,
) -> None:
    """Reject the open approval gate of a run as the person logged in (`runbook login`)."""

    async def body() -> int:
        if not reason.strip():
            raise UserError("--reason must say why")
        client = await _client(_settings(), address, namespace)
        gate_id = await _open_gate(client, workflow_id, gate)
        token, who = _approval_identity()
        from core.approval import RejectInput
        from starters.client import RunbookClient

        await RunbookClient(client).reject(
            workflow_id, RejectInput(gate_id=gate_id, approver=who, reason=reason, token=token))
        out.print(f"rejected gate {gate_id} of {workflow_id}")
        return EXIT_OK

    _run(body)


@app.command()
def login(
    user: Annotated[Optional[str], typer.Argument(help="your Vault/OpenBao user name [env RUNBOOK_USER]")] = None,
    password_stdin: Annotated[bool, typer.Option("--password-stdin", help="read the password from stdin")] = False,
    token_stdin: Annotated[bool, typer.Option("--token-stdin", help="read an ID token from stdin (any OIDC provider)")] = False,
    token_command: Annotated[Optional[str], typer.Option(
        "--token-command", help="a command that prints an ID token (any OIDC provider); run again for each approval")] = None,
    vault_addr: Annotated[Optional[str], typer.Option("--vault-addr", envvar="VAULT_ADDR", help="Vault/OpenBao address")] = None,
    role: Annotated[Optional[str], typer.Option("--role", help="the OIDC role to read [env RUNBOOK_OIDC_VAULT_ROLE]")] = None,
) -> None:
    """Log in for approvals: Vault/OpenBao userpass (your own password; the Vault token is cached, each approval gets
    a fresh ID token), or an ID token from stdin or a command for any OpenID Connect provider. Cached 0600 under
    $XDG_CACHE_HOME/runbook."""
    from starters import login as auth

    try:
        if token_stdin or token_command:
            if token_stdin and token_command:
                raise auth.LoginError("give --token-stdin or --token-command, not both")
            done = auth.login_command(token_command) if token_command else auth.login_token(sys.stdin.read())
        else:
            if not vault_addr:
                raise auth.LoginError("no Vault address: set VAULT_ADDR or --vault-addr (or use --token-stdin/--token-command)")
            name = _identity(user)
            password = sys.stdin.readline().rstrip("\n") if password_stdin else getpass.getpass(f"password for {name}: ")
            if not password:
                raise auth.LoginError("no password given")
            done = auth.login_vault(vault_addr, name, password, role or _settings().oidc_vault_role)
    except auth.LoginError as error:
        _error(f"{error}")
        raise typer.Exit(EXIT_USAGE) from None
    until = f" until {_utc(done.expires_at)}" if done.expires_at else ""
    out.print(f"logged in as {done.user} ({done.kind}){until}; approvals now carry your ID token", highlight=False)


@app.command()
def logout() -> None:
    """Forget the cached login."""
    from starters import login as auth

    out.print("logged out" if auth.logout() else "not logged in")


def _utc(epoch: float) -> str:
    import datetime as _dt

    return _dt.datetime.fromtimestamp(epoch, tz=_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


@app.command()
def abort(
    workflow_id: Annotated[str, typer.Argument(help="the run's workflow id")],
    reason: Annotated[str, typer.Option("--reason", help="why (required)")],
    as_user: Annotated[Optional[str], typer.Option("--as", help="who aborts [env RUNBOOK_USER]")] = None,
    address: AddressOpt = None,
    namespace: NamespaceOpt = None,
) -> None:
    """Abort a run: it rolls back or cleans up by its own compensation, then ends as Aborted."""

    async def body() -> int:
        if not reason.strip():
            raise UserError("--reason must say why")
        runs = await _runs(_settings(), address, namespace)
        from core.approval import AbortInput

        message = await runs.abort(workflow_id, AbortInput(requested_by=_identity(as_user), reason=reason))
        out.print(message, highlight=False)
        return EXIT_OK

    _run(body)


# ----------------------------------------------------------------------------- steering verbs
AsOpt = Annotated[Optional[str], typer.Option(
    "--as", help="who steers, recorded as an unverified label [env RUNBOOK_USER]")]
ReasonOpt = Annotated[str, typer.Option("--reason", help="why (recorded on the run)")]
IdArg = Annotated[str, typer.Argument(help="the run's workflow id")]


def _steer(verb: str, workflow_id: str, request: Steer, address: str | None, namespace: str | None) -> None:
    """Send one steering verb through the RunbookClient; the run's validator accepts it or refuses it (exit 2)."""

    async def body() -> int:
        runs = await _runs(_settings(), address, namespace)
        steered = await runs.steer(workflow_id, verb, request)
        out.print(f"{workflow_id}: {steered.message}", highlight=False)
        return EXIT_OK

    _run(body)


@app.command(help=f"Pause a run: {describe_verb('pause')} (it holds its weight until resumed).")
def pause(workflow_id: IdArg, reason: ReasonOpt = "", as_user: AsOpt = None, address: AddressOpt = None,
          namespace: NamespaceOpt = None) -> None:
    _steer("pause", workflow_id, Steer(_identity(as_user), reason), address, namespace)


@app.command(help=f"Resume a run: {describe_verb('resume')}.")
def resume(workflow_id: IdArg, reason: ReasonOpt = "", as_user: AsOpt = None, address: AddressOpt = None,
           namespace: NamespaceOpt = None) -> None:
    _steer("resume", workflow_id, Steer(_identity(as_user), reason), address, namespace)


@app.command(help=f"Promote a run: {describe_verb('promote')}.")
def promote(workflow_id: IdArg, reason: ReasonOpt = "", as_user: AsOpt = None, address: AddressOpt = None,
            namespace: NamespaceOpt = None) -> None:
    _steer("promote", workflow_id, Steer(_identity(as_user), reason), address, namespace)


@app.command(help=f"Extend a run: {describe_verb('extend')}; DURATION like 10m, 2h, 1d.")
def extend(workflow_id: IdArg, duration: Annotated[str, typer.Argument(help="how much longer, e.g. 10m")],
           reason: ReasonOpt = "", as_user: AsOpt = None, address: AddressOpt = None,
           namespace: NamespaceOpt = None) -> None:
    _steer("extend", workflow_id, Steer(_identity(as_user), reason, duration), address, namespace)


@app.command("destroy-now", help=f"Destroy now: {describe_verb('destroy-now')} (--reason required).")
def destroy_now(workflow_id: IdArg, reason: Annotated[str, typer.Option("--reason", help="why (required)")],
                as_user: AsOpt = None, address: AddressOpt = None, namespace: NamespaceOpt = None) -> None:
    if not reason.strip():
        _error("--reason must say why")
        raise typer.Exit(EXIT_USAGE)
    _steer("destroy-now", workflow_id, Steer(_identity(as_user), reason), address, namespace)


@app.command(help=f"Re-verify a run: {describe_verb('reverify')}.")
def reverify(workflow_id: IdArg, reason: ReasonOpt = "", as_user: AsOpt = None, address: AddressOpt = None,
             namespace: NamespaceOpt = None) -> None:
    _steer("reverify", workflow_id, Steer(_identity(as_user), reason), address, namespace)


# ----------------------------------------------------------------------------- schedules
@schedule_app.command("create")
def schedule_create(
    name: Annotated[str, typer.Argument(help="runbook name from the catalog")],
    cron: Annotated[str, typer.Option("--cron", help="cron expression, e.g. '0 3 1 * *'")],
    set_: Annotated[list[str], typer.Option("--set", help="parameter KEY=VALUE (repeatable)")] = [],  # noqa: B006
    schedule_id: Annotated[Optional[str], typer.Option("--id", help="schedule id [default: NAME-TARGET]")] = None,
    as_user: Annotated[Optional[str], typer.Option("--as", help="requester recorded on each run")] = None,
    catalog: CatalogOpt = None,
    address: AddressOpt = None,
    namespace: NamespaceOpt = None,
) -> None:
    """Create a Temporal Schedule that starts a runbook (overlap policy: skip)."""

    async def body() -> int:
        from starters import schedules

        settings = _settings(catalog)
        inputs = _inputs(settings)
        from core.catalog import Catalog

        cat = Catalog.load(settings.catalog_dir, inputs=inputs)
        plan = cat.plan_start(
            name, _parse_sets(set_), requested_by=_identity(as_user), inputs=inputs, source="schedule",
            ui_base=settings.ui_url,
        )
        client = await _client(settings, address, namespace)
        sid = schedule_id or f"{name}-{plan.meta.target}".replace(":", "-").replace("/", "-")
        await schedules.create_schedule(client, plan, sid, cron, settings.task_queue)
        out.print(f"schedule [bold]{sid}[/bold] created: {name} at '{cron}' (overlap: skip)")
        return EXIT_OK

    _run(body)


@schedule_app.command("list")
def schedule_list(as_json: JsonOpt = False, address: AddressOpt = None, namespace: NamespaceOpt = None) -> None:
    """List runbook schedules."""

    async def body() -> int:
        from starters import schedules

        client = await _client(_settings(), address, namespace)
        rows = await schedules.list_schedules(client)
        if as_json:
            _print_json([_dump(r) for r in rows])
            return EXIT_OK
        table = _table("schedule", "runbook", "cron", "next run", "paused")
        for row in rows:
            next_run = f"{row.next_runs[0]:%Y-%m-%d %H:%M} UTC" if row.next_runs else "-"
            table.add_row(row.schedule_id, row.runbook, row.cron, next_run, "yes" if row.paused else "")
        out.print(table)
        return EXIT_OK

    _run(body)


@schedule_app.command("delete")
def schedule_delete(
    schedule_id: Annotated[str, typer.Argument(help="schedule id")],
    address: AddressOpt = None,
    namespace: NamespaceOpt = None,
) -> None:
    """Delete a runbook schedule (runs already started go on)."""

    async def body() -> int:
        from starters import schedules

        client = await _client(_settings(), address, namespace)
        await schedules.delete_schedule(client, schedule_id)
        out.print(f"schedule {schedule_id} deleted")
        return EXIT_OK

    _run(body)


# ----------------------------------------------------------------------------- report
@app.command()
def report(
    workflow_id: Annotated[str, typer.Argument(help="the run's workflow id")],
    output: Annotated[Optional[Path], typer.Option("-o", "--output", help="file [default: report-<id>.html]")] = None,
    address: AddressOpt = None,
    namespace: NamespaceOpt = None,
) -> None:
    """Write a self-contained HTML report of a run (finished or running): charts, steps, audit trail."""
    from starters.report import write_report  # plotly: only this command pays for importing it

    async def body() -> int:
        client = await _client(_settings(), address, namespace)
        path, _ = await write_report(client, workflow_id, str(output) if output else None)
        out.print(f"report written to {path}", highlight=False)
        return EXIT_OK

    _run(body)


# ----------------------------------------------------------------------------- processes
@app.command()
def worker() -> None:
    """Run a worker: every runbook workflow and activity, on the configured task queue."""
    from workers.main import run_worker

    _run(lambda: run_worker(Settings()))


@app.command()
def gateway() -> None:
    """Run the Slack and PagerDuty gateway (an ASGI app served by uvicorn)."""
    from starters.gateway import serve

    serve(Settings())


@app.command("codec-server")
def codec_server() -> None:
    """Serve Temporal's remote codec protocol (POST /encode, /decode) for the web UI and the temporal CLI."""
    from starters.codec_server import serve

    try:
        serve(Settings())
    except (CodecKeyError, ValueError) as error:
        _error(f"{error}")
        raise typer.Exit(EXIT_USAGE) from None


KeyFileArg = Annotated[Path, typer.Argument(help="the key file [env RUNBOOK_CODEC_KEYS_FILE]", envvar="RUNBOOK_CODEC_KEYS_FILE")]


@codec_keys_app.command("init")
def codec_keys_init(path: KeyFileArg, key_id: Annotated[str, typer.Option("--id", help="the first key's id")] = "k1") -> None:
    """Create a key file (mode 0600) with one new random AES-256 key."""
    from workers.keyring import KeyRing

    if path.exists():
        _error(f"{path} exists: rotate it instead")
        raise typer.Exit(EXIT_USAGE)
    KeyRing.generate(key_id).write(path)
    out.print(f"{path}: key {key_id} (newest)")


@codec_keys_app.command("rotate")
def codec_keys_rotate(path: KeyFileArg, key_id: Annotated[str, typer.Option("--id", help="the new key's id")]) -> None:
    """Add a new random key and make it the newest: new data is encrypted under it, the old keys still decrypt.
    Restart workers, starters and the codec server to pick it up; keep old keys while any history holds their data."""
    from workers.keyring import KeyRing

    try:
        ring = KeyRing.from_file(path).rotated(key_id)
    except CodecKeyError as error:
        _error(f"{error}")
        raise typer.Exit(EXIT_USAGE) from None
    ring.write(path)
    out.print(f"{path}: keys {', '.join(ring.keys)}; newest {ring.newest}")


@app.command()
def dev(
    state_dir: Annotated[Path, typer.Option("--state-dir", help="where the local stack keeps its data")] = Path(".state"),
) -> None:
    """Run the whole local stack in the foreground (what `make dev` runs). Ctrl-C stops it."""
    from starters.dev import run_dev

    raise typer.Exit(run_dev(Settings(), state_dir=state_dir))


def main() -> None:
    """The console script. Ends with os._exit once output is flushed: the Temporal SDK's runtime threads can abort
    interpreter finalisation (PyGILState_Release, exit 134) after the command's work is done, which would turn a
    good exit code into a crash for scripts."""
    try:
        app()
        code: object = 0
    except SystemExit as stop:
        code = stop.code
    if not isinstance(code, int):
        if code is not None:
            print(code, file=sys.stderr)
        code = 0 if code is None else 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
