"""rotate-secret, kind certificate, end to end on the time-skipping server against OpenBao's real PKI engine: a TLS
client sees the new serial before the old certificate is revoked; an endpoint that never picks it up rolls back
(the old certificate served and unrevoked, the new one revoked); a CN outside the role's domains is refused."""

from __future__ import annotations

import uuid
from datetime import timedelta

import hvac
import pytest
import pytest_asyncio

from activities.http_checks import HttpCheckActivities, _served_serial
from activities.vault import SecretEngineActivities
from core.rotation import RotateSecretInput
from core.runbook import RunbookMeta
from tests import harness
from tests.rotation.stand_ins import PKI_MOUNT, TlsEndpoint, configure_pki
from workflows.rotate_secret import RotateSecret

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture
def site(vault: hvac.Client) -> str:
    """A KV path holding a first certificate for www.shop.test (as a deploy would have)."""
    configure_pki(vault)
    issued = vault.write_data(f"{PKI_MOUNT}/issue/web", data={"common_name": "www.shop.test"})["data"]
    path = f"sites/{uuid.uuid4().hex[:6]}/tls"
    vault.secrets.kv.v2.create_or_update_secret(path=path, mount_point="secret", secret={
        "certificate": issued["certificate"], "private_key": issued["private_key"], "serial": issued["serial_number"]})
    return f"secret/{path}"


def revoked(vault: hvac.Client, serial: str) -> bool:
    return int(vault.read(f"{PKI_MOUNT}/cert/{serial}")["data"].get("revocation_time") or 0) > 0


def acts(vault: hvac.Client, recording) -> list:
    engine = SecretEngineActivities(vault)
    return [engine.pki_rotation_target, engine.pki_issue_certificate, engine.pki_revoke_certificate,
            engine.kv_restore_version, HttpCheckActivities().tls_wait_serial, recording[1].notify]


def cert_input(path: str, endpoint: str, **kw) -> RotateSecretInput:
    return RotateSecretInput(
        meta=RunbookMeta(runbook="rotate-secret", target=path, environment="test", requested_by="tester"),
        kind="certificate", role="web", pki_mount=PKI_MOUNT, common_name="www.shop.test", kv_path=path,
        endpoints=[endpoint], **kw)


async def run(ts_env, task_queue, activities, input: RotateSecretInput):
    async with harness.running_worker(ts_env.client, task_queue, [RotateSecret], activities):
        handle = await ts_env.client.start_workflow(RotateSecret.run, input, id=f"rotate-cert-{uuid.uuid4().hex[:8]}",
                                                    task_queue=task_queue)
        result = await handle.result()
        await harness.save_history(handle, f"rotate_secret_certificate_{result.status.lower()}")
        return result, await handle.fetch_history()


def kv(vault: hvac.Client, path: str) -> dict:
    resp = vault.secrets.kv.v2.read_secret_version(path=path.removeprefix("secret/"), mount_point="secret",
                                                   raise_on_deleted_version=True)
    return {"version": resp["data"]["metadata"]["version"], **resp["data"]["data"]}


async def test_a_tls_client_sees_the_new_serial_and_the_old_one_is_revoked(ts_env, task_queue, recording, vault, site):
    old = kv(vault, site)
    with TlsEndpoint(vault, site) as tls:
        assert _served_serial(tls.endpoint) == old["serial"]
        result, history = await run(ts_env, task_queue, acts(vault, recording), cert_input(site, tls.endpoint))
        assert result.status == "Succeeded", result.summary
        rec = result.rotation
        assert rec.old_serial == old["serial"] and rec.new_serial not in ("", old["serial"])
        assert _served_serial(tls.endpoint) == rec.new_serial  # a TLS client sees the new serial
        assert revoked(vault, old["serial"]) and not revoked(vault, rec.new_serial)
        assert rec.revoked == [old["serial"]] and rec.new_not_after
        data = await harness.decoded_payload_bytes(history)
        assert rec.new_serial.encode() in data
        key_body = "".join(kv(vault, site)["private_key"].splitlines()[1:-1])[:64]
        assert key_body.encode() not in data and "".join(old["private_key"].splitlines()[1:-1])[:64].encode() not in data


async def test_an_endpoint_that_keeps_the_old_certificate_rolls_back(ts_env, task_queue, recording, vault, site):
    old = kv(vault, site)
    with TlsEndpoint(vault, site) as tls:
        tls.frozen.set()
        result, _ = await run(ts_env, task_queue, acts(vault, recording),
                              cert_input(site, tls.endpoint, verify_timeout=timedelta(seconds=2)))
        assert result.status == "RolledBack", result.summary
        rec = result.rotation
        assert kv(vault, site)["serial"] == old["serial"] and rec.restored_version == old["version"] + 2
        assert not revoked(vault, old["serial"]) and revoked(vault, rec.new_serial)
        assert _served_serial(tls.endpoint) == old["serial"]


async def test_a_cn_outside_the_allowed_domains_is_refused(ts_env, task_queue, recording, vault, site):
    before = kv(vault, site)["version"]
    input = cert_input(site, "127.0.0.1:1").model_copy(update={"common_name": "www.evil.example"})
    result, _ = await run(ts_env, task_queue, acts(vault, recording), input)
    assert result.status == "Refused" and result.reason.startswith("common_name: www.evil.example"), result.reason
    assert kv(vault, site)["version"] == before



async def test_dry_run_names_the_serial_it_would_revoke(ts_env, vault, site) -> None:
    from tests.dryrun.test_dry_run import dry_runner

    old = kv(vault, site)
    inp = cert_input(site, "127.0.0.1:1")
    async with dry_runner(ts_env, [SecretEngineActivities(vault).pki_rotation_target]) as dry:
        outcome = await dry("RotateSecret", inp)
        refused = await dry("RotateSecret", inp.model_copy(update={"common_name": "evil.example"}))
    assert outcome.plan.outcome == "WouldChange"
    assert [(c.step, c.target, c.before) for c in outcome.plan.changes] == [
        ("issue new certificate", site, f"v{old['version']}"),
        ("revoke old certificate", f"pki serial {old['serial']}", "valid")]
    assert refused.plan.outcome == "WouldRefuse" and refused.plan.refusal.startswith("common_name:")
    assert kv(vault, site)["version"] == old["version"]


def seed_expiring(vault: hvac.Client, ttl: str) -> str:
    configure_pki(vault)
    issued = vault.write_data(f"{PKI_MOUNT}/issue/web", data={"common_name": "www.shop.test", "ttl": ttl})["data"]
    path = f"sites/{uuid.uuid4().hex[:6]}/tls"
    vault.secrets.kv.v2.create_or_update_secret(path=path, mount_point="secret", secret={
        "certificate": issued["certificate"], "private_key": issued["private_key"], "serial": issued["serial_number"]})
    return f"secret/{path}"


@pytest_asyncio.fixture(loop_scope="session")
async def fresh_env():
    """A time-skipping server of its own: its clock starts at the real now, as the certificates' expiry does (the
    module's server has skipped ahead over other tests' timers)."""
    env = await harness.start_time_skipping()
    async with env:
        yield env


async def test_expiry_scan_renews_within_30_days_and_alerts_at_15(fresh_env, task_queue, recording, vault):
    ts_env = fresh_env
    path = seed_expiring(vault, "372h")  # 15.5 days left
    old = kv(vault, path)
    with TlsEndpoint(vault, path) as tls:
        result, _ = await run(ts_env, task_queue, acts(vault, recording),
                              cert_input(path, tls.endpoint, renew_within=timedelta(days=30)))
        assert result.status == "Succeeded" and result.rotation.new_serial != old["serial"], result.summary
        assert _served_serial(tls.endpoint) == result.rotation.new_serial
    alerts = [e for e in recording[0].events if e.kind == "alert"]
    assert [a.title for a in alerts] == ["Certificate www.shop.test expires in 15 day(s)"]


async def test_expiry_scan_leaves_a_certificate_with_60_days(fresh_env, task_queue, recording, vault):
    ts_env = fresh_env
    path = seed_expiring(vault, "1440h")
    old = kv(vault, path)
    result, _ = await run(ts_env, task_queue, acts(vault, recording),
                          cert_input(path, "127.0.0.1:1", renew_within=timedelta(days=30)))
    assert result.status == "Succeeded" and "nothing to do" in result.reason and "59 days" in result.reason, result.reason
    assert kv(vault, path)["version"] == old["version"] and not revoked(vault, old["serial"])
    assert not [e for e in recording[0].events if e.kind == "alert"]
