"""`runbook status` and `runbook list` load the Temporal client, the data converter and the run's status model, and
nothing a reading command does not use (issue 14: each command imports only what it needs; bench/cli_speed.py
measures the time). Run as the console script runs them, against the dev server, with a run in flight."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

from tests import harness
from tests.core.gated_workflows import GatedChange
from tests.core.test_cli import _notify, _service, cli_env, runbook  # noqa: F401 (cli_env: the fixture, used by name)

# What a reading command must not pay for: outside systems' clients, the activities and workflows that use them,
# the catalog (YAML) and the drawing (Rich, plotly). (The suite encrypts payloads, so the codec's cipher is used.)
HEAVY = ("boto3", "botocore", "psycopg", "hvac", "kubernetes", "slack_sdk", "httpx", "plotly", "opentelemetry",
         "activities", "workflows", "rich", "yaml", "core.catalog", "core.canary", "core.provision",
         "starters.render", "starters.report", "starters.gateway", "temporalio.worker")
# The declarations a client calls runs by (method references and search attribute keys), not workflow code.
DECLARATIONS = ("workflows", "workflows.contract", "workflows.search_attributes")

# The console script's `main`, with the module list written out just before it ends the process (main ends with
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
from starters.cli import main
main()
"""


def heavy(modules: list[str]) -> list[str]:
    return [m for m in modules if m not in DECLARATIONS and any(m == h or m.startswith(h + ".") for h in HEAVY)]


def _console(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    modules_file = tmp_path / "modules.txt"
    proc = subprocess.run([sys.executable, "-c", DRIVER, str(modules_file), *args], capture_output=True, text=True,
                          timeout=120)
    return proc, modules_file.read_text().split()


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

        proc, modules = await asyncio.to_thread(_console, tmp_path, "status", workflow_id, "--json")
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["workflow_id"] == workflow_id
        assert "temporalio.client" in modules and "core.runbook" in modules  # the real client and model were used
        assert heavy(modules) == [], heavy(modules)

        for _ in range(100):  # visibility is eventually consistent
            proc, modules = await asyncio.to_thread(_console, tmp_path, "list", "--target", service, "--json")
            assert proc.returncode == 0, proc.stderr
            if json.loads(proc.stdout):
                break
            await asyncio.sleep(0.1)
        assert [row["workflow_id"] for row in json.loads(proc.stdout)] == [workflow_id]
        assert heavy(modules) == []

        assert (await runbook("abort", workflow_id, "--reason", "test over")).exit_code == 0
