"""rotate-secret, kind database, end to end on the time-skipping server against real OpenBao (its database engine)
and the real PostgreSQL: the old user keeps working until the consumers are verified on the new one and is gone
after; a failed verification or an abort leaves the old credential in place; no password ever reaches the history."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import hvac
import pytest
from temporalio.client import WorkflowHandle

from activities.database import DatabaseActivities
from activities.vault import SecretEngineActivities, VaultReader
from core.approval import AbortInput
from core.restore import PgServer
from core.rotation import RotateSecretInput, RotateSecretResult
from core.runbook import RunbookMeta, RunbookStatus
from tests import harness
from tests.rotation.stand_ins import Consumer, can_login, role_exists
from workflows.rotate_secret import RotateSecret

pytestmark = pytest.mark.asyncio(loop_scope="session")


def activities(vault: hvac.Client, recording) -> list:
    engine = SecretEngineActivities(vault)
    db = DatabaseActivities(None, VaultReader(vault))
    return [engine.db_rotation_target, engine.db_issue_credential, engine.kv_restore_version, engine.vault_revoke_lease,
            db.pg_wait_consumers, recording[1].notify]


def rotation_input(role: str, kv_path: str, server: PgServer, consumers: list[str], **kw) -> RotateSecretInput:
    return RotateSecretInput(
        meta=RunbookMeta(runbook="rotate-secret", target=kv_path, environment="test", requested_by="tester"),
        kind="database", role=role, kv_path=kv_path, consumers=consumers, server=server, **kw)


def kv(vault: hvac.Client, path: str, version: int | None = None) -> dict:
    resp = vault.secrets.kv.v2.read_secret_version(path=path.removeprefix("secret/"), mount_point="secret",
                                                   version=version, raise_on_deleted_version=True)
    return {"version": resp["data"]["metadata"]["version"], **resp["data"]["data"]}


async def run(ts_env, task_queue, acts, input: RotateSecretInput, during=None) -> tuple[RotateSecretResult, WorkflowHandle, RunbookStatus]:
    """Run to the end: the result, the handle, and the status query answered after the end (while the worker runs)."""
    async with harness.running_worker(ts_env.client, task_queue, [RotateSecret], acts):
        handle = await ts_env.client.start_workflow(RotateSecret.run, input, id=f"rotate-{uuid.uuid4().hex[:8]}",
                                                    task_queue=task_queue)
        if during is not None:
            await during(handle)
        result = await handle.result()
        status = await handle.query(RotateSecret.status)
        await harness.save_history(handle, f"rotate_secret_{result.status.lower()}")
        return result, handle, status


async def test_rotation_keeps_the_old_user_until_verified_then_revokes_it(ts_env, task_queue, recording, vault, db_engine, seeded):
    role, path = seeded
    old = kv(vault, path)
    with Consumer(vault, db_engine, path) as app:
        assert app.user == old["username"]
        result, handle, status = await run(ts_env, task_queue, activities(vault, recording),
                                   rotation_input(role, path, db_engine, [app.name]))
        assert result.status == "Succeeded", result.summary
        new = kv(vault, path)
        rec = result.rotation
        assert (rec.old_version, rec.new_version) == (old["version"], new["version"]) and new["version"] == old["version"] + 1
        assert (rec.old_username, rec.new_username) == (old["username"], new["username"]) != (old["username"],) * 2
        assert rec.revoked == [old["lease_id"]] and rec.new_lease_id == new["lease_id"]
        # dual validity: when the consumer switched, its connection as the old user still answered
        assert app.switches == [(old["username"], new["username"], True)], app.errors
        assert app.user == new["username"]
        # after: the old user is gone, the new one works
        assert not role_exists(db_engine, old["username"]) and not can_login(db_engine, old["username"], old["password"])
        assert can_login(db_engine, new["username"], new["password"])
        # no password anywhere in the history (decoded), nor in the status query
        history = await harness.decoded_payload_bytes(await handle.fetch_history())
        assert new["username"].encode() in history  # the search does see the history's contents
        for secret in {old["password"], new["password"], *app.passwords}:
            assert secret.encode() not in history
        assert status.details["rotation"]["new_version"] == new["version"]
        assert all(s not in status.model_dump_json() for s in app.passwords)
        assert [s.name for s in result.steps] == ["validate", "issue new credential", "verify consumers",
                                                  "revoke old credential"]


async def test_failed_verification_rolls_back_and_leaves_the_old_credential(ts_env, task_queue, recording, vault, db_engine, seeded):
    role, path = seeded
    old = kv(vault, path)
    with Consumer(vault, db_engine, path) as app:
        app.frozen.set()  # a consumer that never picks up the new credential
        result, _, _ = await run(ts_env, task_queue, activities(vault, recording),
                              rotation_input(role, path, db_engine, [app.name], verify_timeout=timedelta(seconds=2)))
        assert result.status == "RolledBack", result.summary
        assert "verify consumers" in result.reason and app.name in result.reason
        rec = result.rotation
        newest = kv(vault, path)
        assert rec.restored_version == newest["version"] == old["version"] + 2  # the old credential written back
        assert newest["username"] == old["username"] and newest["password"] == old["password"]
        assert rec.revoked == [rec.new_lease_id]
        assert role_exists(db_engine, old["username"]) and can_login(db_engine, old["username"], old["password"])
        assert not role_exists(db_engine, rec.new_username)
        assert app.user == old["username"] and app.switches == []


async def test_abort_during_verification_rolls_back(ts_env, task_queue, recording, vault, db_engine, seeded):
    role, path = seeded
    old = kv(vault, path)
    with Consumer(vault, db_engine, path) as app:
        app.frozen.set()

        async def abort_when_verifying(handle: WorkflowHandle) -> None:
            for _ in range(300):
                status = await handle.query(RotateSecret.status)
                if status.stage == "verify consumers" or any(s.name == "verify consumers" for s in status.steps):
                    break
                await asyncio.sleep(0.1)
            await handle.execute_update(RotateSecret.abort, AbortInput(requested_by="tester", reason="wrong window"))

        result, _, _ = await run(ts_env, task_queue, activities(vault, recording),
                              rotation_input(role, path, db_engine, [app.name]), during=abort_when_verifying)
        assert result.status == "Aborted", result.summary
        newest = kv(vault, path)
        assert newest["username"] == old["username"]
        assert can_login(db_engine, old["username"], old["password"])
        assert not role_exists(db_engine, result.rotation.new_username)


@pytest.mark.parametrize("field", ["role", "kv_path"])
async def test_missing_role_or_path_is_refused_before_any_change(ts_env, task_queue, recording, vault, db_engine, seeded, field):
    role, path = seeded
    before = kv(vault, path)["version"]
    bad = {"role": "no-such-role"} if field == "role" else {"kv_path": "secret/apps/no-such/db"}
    input = rotation_input(role, path, db_engine, ["app"]).model_copy(update=bad)
    result, _, _ = await run(ts_env, task_queue, activities(vault, recording), input)
    assert result.status == "Refused" and result.reason.startswith(f"{field}:"), result.reason
    assert "nothing was changed" in result.reason
    assert kv(vault, path)["version"] == before



async def test_dry_run_names_the_versions_and_changes_nothing(ts_env, vault, db_engine, seeded) -> None:
    from tests.dryrun.test_dry_run import dry_runner

    role, path = seeded
    old = kv(vault, path)
    engine = SecretEngineActivities(vault)
    inp = rotation_input(role, path, db_engine, ["orders-api"])
    async with dry_runner(ts_env, [engine.db_rotation_target]) as dry:
        outcome = await dry("RotateSecret", inp)
        refused = await dry("RotateSecret", inp.model_copy(update={"role": "no-such-role"}))
    plan = outcome.plan
    assert plan.outcome == "WouldChange", plan
    assert [(c.step, c.target, c.before) for c in plan.changes][1:] == [
        ("issue new credential", path, f"v{old['version']}"),
        ("revoke old credential", f"lease {old['lease_id']}", f"user {old['username']} valid")]
    assert kv(vault, path)["version"] == old["version"]  # nothing written
    assert refused.plan.outcome == "WouldRefuse" and refused.plan.refusal.startswith("role:")
