"""The `runbook` CLI driven end to end against the Temporal dev server, with workflows defined under tests/."""

from __future__ import annotations

import asyncio
import json
import shlex
import subprocess
import textwrap
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from starters.cli import app
from tests import harness
from tests.core.gated_workflows import GatedChange

CATALOG = {
    "groups.yaml": """
        groups:
          sre: [dave, erin]
    """,
    "gated-change.yaml": """
        name: gated-change
        description: Apply a change to a service after an SRE approves it.
        workflow: GatedChange
        target: "{service}"
        environment: "{environment}"
        concurrency_key: "change:{service}"
        parameters:
          service: {type: string, required: true, description: the service}
          environment: {type: string, default: staging}
          change: {type: string, default: restart, choices: [restart, resize]}
          hold: {type: duration, default: 1s}
        approval:
          approvers: [bob]
          groups: [sre]
          timeout: 1h
    """,
    "quick-change.yaml": """
        name: quick-change
        description: The same change with no approval.
        workflow: GatedChange
        target: "{service}"
        concurrency_key: "quick:{service}"
        parameters:
          service: {type: string, required: true}
          hold: {type: duration, default: 0s}
        approval:
          required_approvals: 0
    """,
}


@pytest.fixture
def cli_env(dev_env, tmp_path: Path, monkeypatch, task_queue):
    catalog = tmp_path / "runbooks"
    catalog.mkdir()
    for name, text in CATALOG.items():
        (catalog / name).write_text(textwrap.dedent(text))
    address = dev_env.client.service_client.config.target_host
    monkeypatch.setenv("TEMPORAL_ADDRESS", address)
    monkeypatch.setenv("RUNBOOK_CATALOG_DIR", str(catalog))
    monkeypatch.setenv("RUNBOOK_TASK_QUEUE", task_queue)
    monkeypatch.setenv("RUNBOOK_WORKFLOW_MODULES", '["tests.core.gated_workflows"]')
    monkeypatch.setenv("RUNBOOK_USER", "alice")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # no developer login leaks in: typed names
    return {"catalog": catalog, "address": address, "task_queue": task_queue}


async def runbook(*args: str, user: str | None = None):
    """Run the real command in a thread (it runs its own event loop, as from a shell); ``user``: the local user
    (RUNBOOK_USER), whose name a worker without OIDC takes, unverified, when nobody is logged in."""
    env = {"RUNBOOK_USER": user} if user else None
    result = await asyncio.to_thread(CliRunner().invoke, app, list(args), env=env)
    return result


def _json(result) -> dict | list:
    return json.loads(result.stdout)


def _service() -> str:
    return f"svc-{uuid.uuid4().hex[:6]}"


async def _wait_status(workflow_id: str, status: str) -> dict:
    for _ in range(100):
        result = await runbook("status", workflow_id, "--json")
        if result.exit_code == 0 and _json(result)["status"] == status:
            return _json(result)
        await asyncio.sleep(0.1)
    raise AssertionError(f"{workflow_id} never reached {status}: {result.output}")


async def test_catalog_list_and_validate(cli_env):
    listed = await runbook("catalog", "--json")
    assert listed.exit_code == 0, listed.output
    assert sorted(_json(listed)) == ["gated-change", "quick-change"]
    valid = await runbook("catalog", "validate", str(cli_env["catalog"]))
    assert valid.exit_code == 0 and "2 runbooks" in valid.output


async def test_broken_catalog_names_file_line_and_field_and_starts_nothing(cli_env):
    broken = cli_env["catalog"] / "gated-change.yaml"
    broken.write_text(broken.read_text().replace("service: {type: string,", "service: {type: strng,"))
    result = await runbook("catalog", "validate")
    assert result.exit_code == 2
    assert f"{broken}:9: parameters.service.type:" in result.stderr
    started = await runbook("start", "gated-change", "--set", "service=x")
    assert started.exit_code == 2 and "parameters.service.type" in started.stderr


async def test_start_refuses_duplicate_lists_by_target_and_shows_status(cli_env, dev_env):
    service = _service()
    async with harness.running_worker(dev_env.client, cli_env["task_queue"], [GatedChange], [_notify()]):
        first = await runbook("start", "gated-change", "--set", f"service={service}", "--json")
        assert first.exit_code == 0, first.output
        body = _json(first)
        assert body["workflow_id"] == f"change:{service}" and body["status"] == "Running" and body["run_id"]
        assert body["ui_url"] == f"http://localhost:8233/namespaces/default/workflows/change:{service}"

        second = await runbook("start", "gated-change", "--set", f"service={service}", "--json")
        assert second.exit_code == 4
        assert _json(second)["status"] == "AlreadyRunning" and _json(second)["run_id"] == body["run_id"]

        state = await _wait_status(body["workflow_id"], "WaitingForApproval")
        assert state["gate"]["eligible"] == ["bob", "dave", "erin"] and state["requested_by"] == "alice"

        other = _service()
        assert (await runbook("start", "quick-change", "--set", f"service={other}")).exit_code == 0
        for _ in range(100):
            rows = _json(await runbook("list", "--target", service, "--json"))
            if rows:
                break
            await asyncio.sleep(0.1)
        assert [r["workflow_id"] for r in rows] == [f"change:{service}"]
        assert rows[0]["runbook"] == "gated-change" and rows[0]["environment"] == "staging"
        waiting = _json(await runbook("list", "--runbook", "gated-change", "--status", "WaitingForApproval", "--json"))
        assert f"change:{service}" in [r["workflow_id"] for r in waiting]

        human = await runbook("status", body["workflow_id"])
        assert "waiting for approval" in human.stdout and "gated-change on " + service in human.stdout
        await runbook("reject", body["workflow_id"], "--reason", "cleanup", user="bob")


async def test_approvals_refused_then_accepted(cli_env, dev_env):
    service = _service()
    async with harness.running_worker(dev_env.client, cli_env["task_queue"], [GatedChange], [_notify()]):
        wf = _json(await runbook("start", "gated-change", "--set", f"service={service}", "--json"))["workflow_id"]
        await _wait_status(wf, "WaitingForApproval")

        unlisted = await runbook("approve", wf, user="mallory")
        assert unlisted.exit_code == 2 and "refused: mallory is not an approver" in unlisted.stderr
        self_approval = await runbook("approve", wf, user="alice")
        assert self_approval.exit_code == 2
        stale = await runbook("approve", wf, "--gate", "apply-0", user="bob")
        assert stale.exit_code == 2 and "stale gate" in stale.stderr
        # refusals by Update leave no trace in the run; the gate is still open
        assert (await _wait_status(wf, "WaitingForApproval"))["gate"]["approvals"] == []

        ok = await runbook("approve", wf, "--reason", "looks right", user="bob")
        assert ok.exit_code == 0 and "gate approved" in ok.stdout
        watched = await runbook("watch", wf, "--interval", "0.1")
        assert watched.exit_code == 0 and "Succeeded" in watched.stdout
        final = _json(await runbook("status", wf, "--json"))
        assert final["gates"][0]["decided_by"] == "bob" and final["details"] == {"applied": True}


async def test_reject_and_abort_end_the_run(cli_env, dev_env):
    rejected, aborted = _service(), _service()
    async with harness.running_worker(dev_env.client, cli_env["task_queue"], [GatedChange], [_notify()]):
        r = _json(await runbook("start", "gated-change", "--set", f"service={rejected}", "--json"))["workflow_id"]
        a = _json(await runbook("start", "gated-change", "--set", f"service={aborted}", "--json"))["workflow_id"]
        await _wait_status(r, "WaitingForApproval")
        no_reason = await runbook("reject", r, "--reason", " ", user="bob")
        assert no_reason.exit_code == 2
        assert (await runbook("reject", r, "--reason", "change freeze", user="erin")).exit_code == 0
        watched = await runbook("watch", r, "--interval", "0.1")
        assert watched.exit_code == 3 and "finished: Rejected" in watched.stdout

        await _wait_status(a, "WaitingForApproval")
        result = await runbook("abort", a, "--reason", "wrong service", "--as", "dave")
        assert result.exit_code == 0 and "abort requested by dave" in result.stdout
        state = await _wait_status(a, "Aborted")
        assert state["actions"][0]["by"] == "dave" and state["gates"][0]["decision"] == "aborted"


async def test_ui_style_signal_approval_with_plain_json(cli_env, dev_env):
    """The web UI's "Send a Signal" sends plain JSON with no identity; the temporal CLI sends the same payload."""
    service = _service()
    async with harness.running_worker(dev_env.client, cli_env["task_queue"], [GatedChange], [_notify()]):
        wf = _json(await runbook("start", "gated-change", "--set", f"service={service}", "--json"))["workflow_id"]
        gate = (await _wait_status(wf, "WaitingForApproval"))["gate"]["gate_id"]

        def ui_signal(payload: dict) -> None:
            subprocess.run(
                [harness.binary("temporal"), "workflow", "signal", "--address", cli_env["address"],
                 "--workflow-id", wf, "--name", "approve_signal", "--input", json.dumps(payload)],
                check=True, capture_output=True, timeout=30,
            )

        await asyncio.to_thread(ui_signal, {"gate_id": gate, "approver": "mallory"})
        for _ in range(100):
            state = _json(await runbook("status", wf, "--json"))
            if state["refused"]:
                break
            await asyncio.sleep(0.1)
        assert state["refused"][0]["who"] == "mallory" and state["refused"][0]["via"] == "ui"
        await asyncio.to_thread(ui_signal, {"gate_id": gate, "approver": "erin", "reason": "from the UI"})
        final = await _wait_status(wf, "Succeeded")
        assert final["gates"][0]["approvals"][0]["via"] == "ui"


async def test_start_wait_json_reports_the_result(cli_env, dev_env):
    async with harness.running_worker(dev_env.client, cli_env["task_queue"], [GatedChange], [_notify()]):
        result = await runbook("start", "quick-change", "--set", f"service={_service()}", "--wait", "--json")
        assert result.exit_code == 0, result.output
        body = _json(result)
        assert body["status"] == "Succeeded" and body["result"]["summary"].endswith("applied") and body["run_id"]
        assert body["result"]["status"] == "Succeeded" and body["result"]["not_undone"] == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["start", "no-such-runbook"], "unknown runbook 'no-such-runbook'"),
        (["start", "gated-change"], "missing required parameter 'service'"),
        (["start", "gated-change", "--set", "service=a", "--set", "hold=soon"], "parameter 'hold'"),
        (["start", "gated-change", "--set", "service=a", "--set", "change=delete"], "must be one of restart, resize"),
        (["start", "gated-change", "--set", "service=a", "--set", "colour=red"], "unknown parameter 'colour'"),
        (["start", "gated-change", "--set", "service"], "write it as KEY=VALUE"),
    ],
)
async def test_user_errors_exit_2_with_one_line(cli_env, args, message):
    result = await runbook(*args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr and "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1


async def test_dry_run_starts_nothing_and_unreachable_temporal_exits_1(cli_env, dev_env, monkeypatch):
    from workflows.dry_run import RunbookDryRun

    service = _service()
    async with harness.running_worker(dev_env.client, cli_env["task_queue"], [RunbookDryRun], []):
        dry = await runbook("start", "gated-change", "--set", f"service={service}", "--dry-run", "--json")
        table = await runbook("start", "gated-change", "--set", f"service={service}", "--dry-run")
    assert dry.exit_code == 0, dry.output
    plan = _json(dry)["plan"]  # GatedChange has no plan phase: who approves and the freeze, all the same
    assert _json(dry)["status"] == "DryRun" and plan["outcome"] == "NotPlanned"
    assert plan["approval"] == ["1 approval(s) from group sre, bob; no self-approval; timeout 1h -> reject"]
    assert table.exit_code == 0 and "nothing started" in table.stdout and "group sre, bob" in table.stdout
    assert _json(await runbook("list", "--target", service, "--json")) == []
    async with harness.running_worker(dev_env.client, cli_env["task_queue"], [RunbookDryRun, GatedChange], [_notify()]):
        started = await runbook("start", "gated-change", "--set", f"service={service}")  # it waits at its gate
        again = await runbook("start", "gated-change", "--set", f"service={service}", "--dry-run", "--json")
        await runbook("abort", f"change:{service}", "--reason", "test over")
    assert started.exit_code == 0, started.output
    assert again.exit_code == 4 and _json(again)["status"] == "AlreadyRunning" and _json(again)["plan"] is None

    port = harness.free_port()
    monkeypatch.setenv("TEMPORAL_ADDRESS", f"127.0.0.1:{port}")
    result = await runbook("start", "gated-change", "--set", f"service={service}")
    assert result.exit_code == 1 and f"127.0.0.1:{port}" in result.stderr and "Traceback" not in result.output


async def test_dry_run_that_cannot_read_a_system_names_it_and_exits_1(cli_env, dev_env, tmp_path):
    """Issue 13's bad input: a dry run that cannot read what it must says which system and what, exits non-zero,
    and starts nothing. Here the worker's change calendar cannot be read (its catalog holds an inverted window)."""
    from activities.calendar import CalendarActivities
    from workflows.dry_run import RunbookDryRun

    broken = tmp_path / "worker-catalog"
    broken.mkdir()
    (broken / "groups.yaml").write_text("groups: {sre: [dave]}\n")
    (broken / "calendar.yaml").write_text("windows:\n  - {name: w, start: 2020-01-01T00:00, end: 2019-01-01T00:00}\n")
    service = _service()
    async with harness.running_worker(dev_env.client, cli_env["task_queue"], [RunbookDryRun],
                                      [CalendarActivities(broken).check_freeze]):
        failed = await runbook("start", "gated-change", "--set", f"service={service}", "--dry-run")
        as_json = await runbook("start", "gated-change", "--set", f"service={service}", "--dry-run", "--json")
    for result in (failed, as_json):
        assert result.exit_code == 1, result.output
        stderr = " ".join(result.stderr.split())
        assert "change calendar: could not read runbooks/calendar.yaml:" in stderr and "nothing was started" in stderr
        assert "Traceback" not in result.output
    assert _json(await runbook("list", "--target", service, "--json")) == []


def _notify():
    from activities.notify import NotificationActivities, RecordingChannel

    return NotificationActivities([RecordingChannel()]).notify


async def test_schedule_create_list_delete(cli_env):
    service = _service()
    created = await runbook("schedule", "create", "gated-change", "--cron", "0 3 1 * *", "--set", f"service={service}")
    assert created.exit_code == 0, created.output
    sid = f"gated-change-{service}"
    duplicate = await runbook("schedule", "create", "gated-change", "--cron", "0 3 1 * *", "--set", f"service={service}")
    assert duplicate.exit_code == 2 and "already exists" in duplicate.stderr
    bad = await runbook("schedule", "create", "gated-change", "--cron", "monthly", "--set", f"service={service}", "--id", "x")
    assert bad.exit_code == 2 and "not a cron expression" in bad.stderr
    for _ in range(100):
        rows = _json(await runbook("schedule", "list", "--json"))
        if any(r["schedule_id"] == sid for r in rows):
            break
        await asyncio.sleep(0.1)
    row = next(r for r in rows if r["schedule_id"] == sid)
    assert row["runbook"] == "gated-change" and row["cron"] == "0 3 1 * *" and row["next_runs"]
    assert (await runbook("schedule", "delete", sid)).exit_code == 0


def test_approve_hint_is_copy_safe_and_exit_codes_follow_the_status():
    from datetime import datetime, timezone

    from core.approval import GateView
    from starters.cli import approve_hint, exit_code

    now = datetime(2026, 12, 1, tzinfo=timezone.utc)
    gate = GateView(gate_id="failover-1", title="t", binding="failover:shop:us-east-1->us-west-2", opened_at=now, deadline=now)
    hint = approve_hint("region-failover:shop", gate, several=True)
    # a shell reads it back as the same words: no redirect of '>' into a file named us-west-2
    assert shlex.split(hint) == ["runbook", "approve", "region-failover:shop", "--gate", "failover-1",
                                 "--expect", "failover:shop:us-east-1->us-west-2"]
    assert [exit_code(s) for s in ("Succeeded", "RolledBack", "Aborted", "Rejected", "Refused", "Held", "Failed")] == \
        [0, 3, 3, 3, 3, 5, 5]
