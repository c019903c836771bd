"""rotate-secret, kind api_key, end to end on the time-skipping server against real OpenBao (KV v2 versions): the old
version stays readable until the consumers report the new key's fingerprint and the grace period has passed, and is
destroyed after; a consumer that keeps the old key rolls back; no key ever reaches the history."""

from __future__ import annotations

import secrets
import uuid
from datetime import timedelta

import hvac
import pytest

from activities.http_checks import HttpCheckActivities
from activities.vault import SecretEngineActivities
from core.rotation import RotateSecretInput, fingerprint_of
from core.runbook import RunbookMeta
from tests import harness
from tests.rotation.stand_ins import KeyConsumer
from workflows.rotate_secret import RotateSecret

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture
def key_path(vault: hvac.Client) -> str:
    path = f"apps/{uuid.uuid4().hex[:6]}/api"
    key = secrets.token_urlsafe(32)
    vault.secrets.kv.v2.create_or_update_secret(path=path, mount_point="secret",
                                                secret={"api_key": key, "fingerprint": fingerprint_of(key)})
    return f"secret/{path}"


def acts(vault: hvac.Client, recording) -> list:
    engine = SecretEngineActivities(vault)
    return [engine.apikey_rotation_target, engine.apikey_issue, engine.kv_restore_version, engine.kv_destroy_version,
            HttpCheckActivities().http_check_suite, recording[1].notify]


def key_input(path: str, urls: list[str], **kw) -> RotateSecretInput:
    return RotateSecretInput(
        meta=RunbookMeta(runbook="rotate-secret", target=path, environment="test", requested_by="tester"),
        kind="api_key", kv_path=path, consumer_urls=urls, **kw)


def versions(vault: hvac.Client, path: str) -> dict[int, dict]:
    meta = vault.secrets.kv.v2.read_secret_metadata(path=path.removeprefix("secret/"), mount_point="secret")["data"]
    return {int(v): d for v, d in meta["versions"].items()}


def latest(vault: hvac.Client, path: str) -> dict:
    return vault.secrets.kv.v2.read_secret_version(path=path.removeprefix("secret/"), mount_point="secret",
                                                   raise_on_deleted_version=True)["data"]["data"]


async def run(ts_env, task_queue, activities, input: RotateSecretInput):
    async with harness.running_worker(ts_env.client, task_queue, [RotateSecret], activities):
        handle = await ts_env.client.start_workflow(RotateSecret.run, input, id=f"rotate-key-{uuid.uuid4().hex[:8]}",
                                                    task_queue=task_queue)
        result = await handle.result()
        await harness.save_history(handle, f"rotate_secret_api_key_{result.status.lower()}")
        return result, await handle.fetch_history()


async def test_the_old_key_is_destroyed_after_the_consumers_and_the_grace_period(ts_env, task_queue, recording, vault, key_path):
    old = latest(vault, key_path)
    with KeyConsumer(vault, key_path) as app:
        result, history = await run(ts_env, task_queue, acts(vault, recording),
                                    key_input(key_path, [app.url], grace_period=timedelta(hours=2)))
        assert result.status == "Succeeded", result.summary
        rec = result.rotation
        assert rec.old_fingerprint == old["fingerprint"] and rec.new_fingerprint == app.fingerprint != old["fingerprint"]
        assert versions(vault, key_path)[rec.old_version]["destroyed"] and rec.destroyed_versions == [rec.old_version]
        assert not versions(vault, key_path)[rec.new_version]["destroyed"]
        assert [s.name for s in result.steps] == ["validate", "issue new key", "verify consumers", "grace period",
                                                  "destroy old version"]
        data = await harness.decoded_payload_bytes(history)
        assert rec.new_fingerprint.encode() in data
        assert app.keys and all(k.encode() not in data for k in app.keys)


async def test_a_consumer_on_the_old_key_rolls_back(ts_env, task_queue, recording, vault, key_path):
    old = latest(vault, key_path)
    with KeyConsumer(vault, key_path) as app:
        app.frozen.set()
        result, _ = await run(ts_env, task_queue, acts(vault, recording),
                              key_input(key_path, [app.url], verify_timeout=timedelta(seconds=2)))
        assert result.status == "RolledBack", result.summary
        rec = result.rotation
        assert latest(vault, key_path)["api_key"] == old["api_key"]
        assert versions(vault, key_path)[rec.new_version]["destroyed"]
        assert not versions(vault, key_path)[rec.old_version]["destroyed"]


async def test_a_missing_path_is_refused(ts_env, task_queue, recording, vault):
    result, _ = await run(ts_env, task_queue, acts(vault, recording), key_input("secret/apps/none/api", ["http://x/"]))
    assert result.status == "Refused" and result.reason.startswith("kv_path:"), result.reason


async def test_dry_run_names_the_version_it_would_destroy(ts_env, vault, key_path) -> None:
    from tests.dryrun.test_dry_run import dry_runner

    before = versions(vault, key_path)
    async with dry_runner(ts_env, [SecretEngineActivities(vault).apikey_rotation_target]) as dry:
        outcome = await dry("RotateSecret", key_input(key_path, ["http://127.0.0.1:1/"]))
    assert outcome.plan.outcome == "WouldChange"
    assert [(c.step, c.target, c.before) for c in outcome.plan.changes] == [
        ("issue new key", key_path, "v1"), ("destroy old version", f"{key_path} v1", "readable")]
    assert versions(vault, key_path) == before
