"""`runbook status ID --json` and `runbook list --json` answer through the SDK's client core alone
(starters/fast_read.py): no `temporalio` package, pydantic nor Typer, and the same answer, errors and exit codes as
the full command, which answers everything else and imports only what it uses (issue 14: each command imports only
what it needs; bench/cli_speed.py measures the time). Run as the console script runs them, against the dev server,
with a run in flight and the suite's encrypted payloads."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from starters import fast_read
from tests import harness
from tests.core.gated_workflows import GatedChange
from tests.core.test_cli import _notify, _service, cli_env, runbook  # noqa: F401 (cli_env: the fixture, used by name)
from workers.keyring import KeyRing

# What a reading command must not pay for: outside systems' clients, the activities and workflows that use them,
# the catalog (YAML) and the drawing (Rich, plotly). (The suite encrypts payloads, so the codec's cipher is used.)
HEAVY = ("boto3", "botocore", "psycopg", "hvac", "kubernetes", "slack_sdk", "httpx", "plotly", "opentelemetry",
         "activities", "workflows", "rich", "yaml", "core.catalog", "core.canary", "core.provision",
         "starters.render", "starters.report", "starters.gateway", "temporalio.worker")
# The declarations a client calls runs by (method references and search attribute keys), not workflow code.
DECLARATIONS = ("workflows", "workflows.contract", "workflows.search_attributes")
# What `status ID --json` does without: the SDK's Python packages (their import is most of the full command's time),
# the models and the command-line framework.
FULL_COMMAND = ("temporalio", "pydantic", "pydantic_core", "typer", "click", "starters.cli", "starters.client",
                "core")

# The console script's `main` (pyproject.toml's [project.scripts]), with the module list written out just before it ends the process (main ends with
# os._exit once its output is flushed, so an atexit hook would never run).
DRIVER = """
import os, sys
modules_file, args = sys.argv[1], sys.argv[2:]
exit_now = os._exit
def report_and_exit(code):
    with open(modules_file, "w") as f:
        f.write("\\n".join(sorted(sys.modules)))
    exit_now(code)
os._exit = report_and_exit
sys.argv = ["runbook", *args]
from starters.fast_read import main
main()
"""


def _within(modules: list[str], packages: tuple[str, ...]) -> list[str]:
    return [m for m in modules if any(m == p or m.startswith(p + ".") for p in packages)]


def heavy(modules: list[str]) -> list[str]:
    return [m for m in _within(modules, HEAVY) if m not in DECLARATIONS]


def _console(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """The command as the console script runs it, in a folder of its own (a .env file where the suite runs would
    send `status --json` to the full command)."""
    modules_file = tmp_path / "modules.txt"
    modules_file.unlink(missing_ok=True)
    proc = subprocess.run([sys.executable, "-c", DRIVER, str(modules_file), *args], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    return proc, modules_file.read_text().split()


def test_only_status_and_list_json_take_the_fast_path():
    assert fast_read.parse(["status", "run-1", "--json"]) == fast_read.Request("status", "run-1")
    assert fast_read.parse(["status", "--json", "run-1", "--address", "h:1", "--namespace=ns"]) == \
        fast_read.Request("status", "run-1", "h:1", "ns")
    assert fast_read.parse(["list", "--json", "--target", "t", "--status=Running", "--runbook", "r", "--limit", "7"]) \
        == fast_read.Request("list", target="t", status="Running", runbook="r", limit=7)
    for argv in (["status", "run-1"], ["status", "--json"], ["status", "a", "b", "--json"], ["list"],
                 ["list", "x", "--json"], ["list", "--json", "--limit", "0"], ["list", "--json", "--limit", "many"],
                 ["status", "run-1", "--json", "--target", "t"], ["status", "run-1", "--json", "--help"],
                 ["status", "run-1", "--json", "--address"], ["start", "--json"], []):
        assert fast_read.parse(argv) is None, argv


def test_visibility_query_quotes_values():
    assert fast_read.visibility_query() == "RunbookName IS NOT NULL"
    assert fast_read.visibility_query(target='a"b\\', status="Running") == \
        'RunbookName IS NOT NULL AND RunbookTarget = "a\\"b\\\\" AND RunbookStatus = "Running"'


def _plain(value: object) -> object:
    if isinstance(value, fast_read._Obj):
        return {k: _plain(v) for k, v in value.values.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    return value


@pytest.mark.parametrize("raw", [
    {}, {"address": "t.example:7233", "namespace": "ns"}, {"api_key": "k"},
    {"api_key": "k", "tls": {"disabled": True, "disable_host_verification": False}},
    {"tls": {"disabled": False, "server_name": "sni.example", "disable_host_verification": False}},
    {"grpc_meta": {"x-team": "ops"}, "namespace": ""},
    {"tls": {"disabled": None, "server_name": "sni.example", "disable_host_verification": False}},
])
def test_connection_is_the_sdks_own(raw):
    """What fast_read hands the bridge is what the SDK's envconfig and ConnectConfig make of the same profile, with
    the SDK's client defaults (an SDK upgrade that changes them fails here, not in a person's terminal)."""
    from temporalio.envconfig import ClientConfigProfile
    from temporalio.runtime import LoggingConfig
    from temporalio.service import ConnectConfig, __version__

    connect = {"target_host": "localhost:7233", "namespace": "default",
               **ClientConfigProfile.from_dict(raw).to_client_connect_config()}  # workers.connection's defaults
    address, namespace, config = fast_read.client_config(raw, __version__)
    assert (address, namespace) == (connect.pop("target_host"), connect.pop("namespace"))
    assert _plain(config) == _plain(ConnectConfig(target_host=address, **connect)._to_bridge_config())
    assert fast_read.LOG_FILTER == LoggingConfig.default.filter.formatted()


def test_tls_certificates_go_to_the_full_command():
    with pytest.raises(fast_read.Fallback):
        fast_read.client_config({"tls": {"server_ca_cert": {"path": "/ca.pem"}}}, "1")


def test_protobuf_fields_round_trip():
    request = fast_read.query_request("ns", "wf-\u00e9" * 40, "status")  # a length over 127 takes a 2-byte varint
    assert [number for number, _ in fast_read._fields(request)] == [1, 2, 3]
    assert fast_read._one(request, 1) == b"ns"
    assert fast_read._one(fast_read._one(request, 2), 1).decode() == "wf-\u00e9" * 40
    assert fast_read._one(fast_read._one(request, 3), 1) == b"status"


def test_heavy_names_whole_packages_only():
    assert heavy(["workflows.canary_ramp", "workflows.contract", "boto3", "botocore.session", "rich.console",
                  "core.catalog", "yamlish", "core.runbook", "temporalio.client", "temporalio.worker._workflow"]) == [
        "workflows.canary_ramp", "boto3", "botocore.session", "rich.console", "core.catalog",
        "temporalio.worker._workflow"]


async def test_status_and_list_import_no_outside_client_nor_workflow(cli_env, dev_env, tmp_path):  # noqa: F811
    service = _service()
    async with harness.running_worker(dev_env.client, cli_env["task_queue"], [GatedChange], [_notify()]):
        started = await runbook("start", "gated-change", "--set", f"service={service}", "--json")
        assert started.exit_code == 0, started.output
        workflow_id = json.loads(started.stdout)["workflow_id"]
        full = await harness.poll(lambda: runbook("status", workflow_id, "--json"),  # a run that holds still
                                  lambda result: result.exit_code == 0 and json.loads(result.stdout)["gate"],
                                  "the run waiting at its gate")

        proc, modules = await asyncio.to_thread(_console, tmp_path, "status", workflow_id, "--json")
        assert proc.returncode == 0, proc.stderr
        assert "workers.keyring" in modules  # fast_read answered (decrypting the answer), the full command never loaded
        assert _within(modules, FULL_COMMAND) == [] and heavy(modules) == [], _within(modules, FULL_COMMAND + HEAVY)
        assert proc.stdout == full.stdout  # the answer the full command prints, to the byte
        assert json.loads(proc.stdout)["workflow_id"] == workflow_id

        other_keys = KeyRing.generate("other").write(tmp_path / "other-keys.json")  # the answer is under the suite's
        with pytest.MonkeyPatch.context() as env:
            env.setenv("RUNBOOK_CODEC_KEYS_FILE", str(other_keys))
            proc, modules = await asyncio.to_thread(_console, tmp_path, "status", workflow_id, "--json")
            full_refusal = await runbook("status", workflow_id, "--json")
        assert "starters.cli" not in modules
        assert (proc.returncode, proc.stderr) == (full_refusal.exit_code, full_refusal.stderr), full_refusal.output
        assert proc.returncode == 2 and "unknown codec key id" in proc.stderr

        (tmp_path / ".env").write_text("RUNBOOK_UI_URL=http://ui.example\n")  # settings only the full command reads
        proc, modules = await asyncio.to_thread(_console, tmp_path, "status", workflow_id, "--json")
        (tmp_path / ".env").unlink()
        assert (proc.returncode, proc.stdout) == (0, full.stdout) and "starters.cli" in modules, proc.stderr

        proc, modules = await asyncio.to_thread(_console, tmp_path, "status", "no-such-run", "--json")
        full = await runbook("status", "no-such-run", "--json")
        assert (proc.returncode, proc.stderr) == (full.exit_code, full.stderr) == (2, "error: no runbook run with id "
                                                                                       "'no-such-run'\n")
        assert "temporalio" not in modules

        proc, modules = await asyncio.to_thread(_console, tmp_path, "status", workflow_id)  # the drawn view
        assert proc.returncode == 0, proc.stderr
        assert workflow_id in proc.stdout and "typer" in modules  # the full command drew it
        assert [m for m in heavy(modules) if not m.startswith(("rich", "starters.render"))] == [], heavy(modules)

        async def both_lists():  # visibility is eventually consistent, and the run's status attribute changes
            fast = await asyncio.to_thread(_console, tmp_path, "list", "--target", service, "--json")
            return fast, await runbook("list", "--target", service, "--json")

        (proc, modules), full = await harness.poll(
            both_lists, lambda got: got[0][0].returncode == 0 and got[0][0].stdout == got[1].stdout
            and json.loads(got[1].stdout), "runbook list --json: the same rows both ways")
        assert [row["workflow_id"] for row in json.loads(proc.stdout)] == [workflow_id]
        assert _within(modules, FULL_COMMAND) == [] and heavy(modules) == [], _within(modules, FULL_COMMAND + HEAVY)

        assert (await runbook("abort", workflow_id, "--reason", "test over")).exit_code == 0


async def test_a_profile_beyond_the_fast_path_gets_the_full_commands_answer(cli_env, tmp_path, monkeypatch):  # noqa: F811
    """A CA certificate is more than fast_read reads: it hands over after loading the client core, and the full
    command (which loads the SDK's own copy of it) answers, here that the plain-text dev server is no TLS server."""
    monkeypatch.setenv("TEMPORAL_TLS_SERVER_CA_CERT_DATA", "not a certificate")
    proc, modules = await asyncio.to_thread(_console, tmp_path, "status", "any-run", "--json")
    full = await runbook("status", "any-run", "--json")
    assert "starters.cli" in modules and "temporalio.client" in modules
    assert (proc.returncode, proc.stderr) == (full.exit_code, full.stderr) == (
        1, f"error: cannot reach Temporal at {cli_env['address']} (set TEMPORAL_ADDRESS or --address)\n")


async def test_an_unknown_profile_is_one_line_naming_it(cli_env, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setenv("TEMPORAL_PROFILE", "no-such-profile")
    for args in (("status", "any-run", "--json"), ("list", "--json")):
        proc, modules = await asyncio.to_thread(_console, tmp_path, *args)
        assert "starters.cli" in modules  # fast_read handed the SDK's refusal to the full command
        assert (proc.returncode, proc.stderr) == (2, "error: Temporal environment configuration (TEMPORAL_PROFILE, "
                                                     "TEMPORAL_CONFIG_FILE): Profile 'no-such-profile' not found\n")


def _jwt(claims: dict[str, object]) -> str:
    import base64

    def part(data: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none'})}.{part(claims)}.sig"


def test_commands_that_never_reach_temporal_import_no_sdk(tmp_path, monkeypatch):
    """`login`, `simulate`, `calendar`, `catalog validate`, `codec-keys` and the help pages talk to no Temporal
    server, so they import no `temporalio` (the client alone was ~0.9 s of a 2.3 s `import starters.cli` under
    load) nor any outside system's client; each runs as the console script runs it and reads sys.modules at exit."""
    root = Path(__file__).resolve().parents[2]
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("RUNBOOK_CATALOG_DIR", str(root / "runbooks"))
    token = tmp_path / "token"
    token.write_text(_jwt({"preferred_username": "alice", "exp": 4102444800}))
    keys = tmp_path / "keys.json"
    commands = [("--help",), ("login", "--help"), ("login", "--token-command", f"cat {token}"), ("logout",),
                ("simulate", "--help"), ("simulate", "slack", "--help"), ("calendar",), ("catalog", "validate"),
                ("codec-keys", "init", str(keys)), ("codec-keys", "rotate", str(keys), "--id", "k2"),
                ("approve", "--help"), ("start", "--help")]
    for args in commands:
        proc, modules = _console(tmp_path, *args)
        assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
        assert "starters.cli" in modules, args  # the full command answered, not fast_read
        assert _within(modules, ("temporalio", "starters.client", "workers.connection", "workers.codec")) == [], \
            (args, _within(modules, ("temporalio", "starters.client", "workers.connection", "workers.codec")))
        assert _within(modules, ("boto3", "botocore", "psycopg", "hvac", "kubernetes", "slack_sdk")) == [], args
    assert "logged in as alice" in _console(tmp_path, "login", "--token-command", f"cat {token}")[0].stdout
    assert json.loads(keys.read_text())  # init then rotate wrote the key file
