"""Every recorded history under tests/replay/histories/ replays against today's workflow code.

A history is recorded by a runbook's test calling ``harness.save_history(handle, name)`` at its end with
RUNBOOK_RECORD_HISTORIES=1. A change that would break running workflows (a reordered step, a new activity or
timer without ``workflow.patched``) fails here with a non-determinism error naming the history.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest
from temporalio import workflow
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from core.config import Settings
from tests import harness
from tests.replay.workflows_under_test import ReplayProbe, ReplayProbeChanged, probe
from workers.main import product_workflows
from workers.sandbox import workflow_runner

TESTS = Path(__file__).resolve().parents[1]
HISTORIES = sorted(harness.HISTORIES.glob("*.json"))


def _test_workflow_modules() -> list[str]:
    """Test modules defining workflows (the end-to-end tests' own runbooks), except this folder's probes."""
    found = []
    for path in sorted(TESTS.rglob("*.py")):
        if path.name == "conftest.py" or path.parent == Path(__file__).parent:
            continue
        if "@workflow.defn" in path.read_text(errors="ignore"):
            found.append(".".join(path.relative_to(TESTS.parent).with_suffix("").parts))
    return found


def all_workflows() -> list[type]:
    """The product's workflows plus every test workflow, one class per workflow type name (product first)."""
    by_name: dict[str, type] = {}
    candidates = list(product_workflows(Settings()))
    for module_name in _test_workflow_modules():
        module = importlib.import_module(module_name)
        candidates += [v for v in vars(module).values() if isinstance(v, type) and workflow._Definition.from_class(v)]
    for cls in candidates:
        by_name.setdefault(workflow._Definition.must_from_class(cls).name, cls)
    return list(by_name.values())


def load(path: Path) -> WorkflowHistory:
    data = json.loads(path.read_text())
    return WorkflowHistory.from_json(data.pop("workflowId", path.stem), data)


@pytest.mark.skipif(not HISTORIES, reason="no recorded histories in tests/replay/histories yet "
                    "(record them with RUNBOOK_RECORD_HISTORIES=1 .venv/bin/pytest)")
@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_recorded_history_replays(path: Path):
    workflows = all_workflows()
    replayer = Replayer(workflows=workflows, workflow_runner=workflow_runner(workflows), data_converter=harness.DATA_CONVERTER)
    await replayer.replay_workflow(load(path))


async def test_replay_catches_a_non_deterministic_change(ts_env, task_queue, tmp_path, monkeypatch):
    """The mechanism itself: record a history through save_history, replay it against the same and a changed
    workflow."""
    async with harness.running_worker(ts_env.client, task_queue, [ReplayProbe], [probe]):
        handle = await ts_env.client.start_workflow(ReplayProbe.run, 2, id=f"probe-{task_queue}", task_queue=task_queue)
        assert await handle.result() == ["done s0", "done s1"]

    monkeypatch.setattr(harness, "HISTORIES", tmp_path)
    monkeypatch.delenv("RUNBOOK_RECORD_HISTORIES", raising=False)
    assert await harness.save_history(handle, "probe") is None  # not recording: nothing written
    monkeypatch.setenv("RUNBOOK_RECORD_HISTORIES", "1")
    path = await harness.save_history(handle, "probe")
    assert path == tmp_path / "probe.json"

    history = load(path)
    await Replayer(workflows=[ReplayProbe], data_converter=harness.DATA_CONVERTER).replay_workflow(history)
    with pytest.raises(workflow.NondeterminismError):
        await Replayer(workflows=[ReplayProbeChanged], data_converter=harness.DATA_CONVERTER).replay_workflow(history)


async def test_histories_replay_whether_recorded_encrypted_or_in_clear(ts_env, task_queue):
    """Tests record histories through the encrypting harness; histories recorded before payload encryption are in
    clear text. The Replayer (the harness's converter) reads both."""
    async with harness.running_worker(ts_env.client, task_queue, [ReplayProbe], [probe]):
        handle = await ts_env.client.start_workflow(ReplayProbe.run, 2, id=f"probe-{task_queue}", task_queue=task_queue)
        await handle.result()
    encrypted = await handle.fetch_history()
    payloads = list(harness.history_payloads(encrypted))
    assert payloads and all(p.metadata["encoding"] == b"binary/encrypted" for p in payloads)

    clear = WorkflowHistory.from_json(encrypted.workflow_id, json.loads(encrypted.to_json()))
    clear_payloads = list(harness.history_payloads(clear))
    for payload, decoded in zip(clear_payloads, await harness.DATA_CONVERTER.payload_codec.decode(clear_payloads), strict=True):
        payload.CopyFrom(decoded)
    assert all(p.metadata["encoding"] == b"json/plain" for p in harness.history_payloads(clear))

    for history in (encrypted, clear):
        await Replayer(workflows=[ReplayProbe], data_converter=harness.DATA_CONVERTER).replay_workflow(history)


def test_every_test_workflow_module_loads():
    """The replay test can see every workflow type a recorded history may name."""
    names = {workflow._Definition.must_from_class(cls).name for cls in all_workflows()}
    assert "PlatformFanOut" in names  # a test workflow from tests/platform
