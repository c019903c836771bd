"""rotate-secret with ``rollout: kubernetes``, end to end on the time-skipping server against real OpenBao (database and
PKI engines), the real PostgreSQL and the Kubernetes fake (the real client over its REST JSON): the new material is
written into the Secret the consumers mount and their Deployments are restarted (readiness waited) before the
verification; a failed verification writes the old material back into the Secret and restarts them again; a
certificate lands in a kubernetes.io/tls Secret that the TLS endpoint serves. No secret value in the history."""

from __future__ import annotations

import base64
import uuid
from datetime import timedelta
from typing import Iterator

import hvac
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import ApplicationError

from activities.database import DatabaseActivities
from activities.http_checks import HttpCheckActivities, _served_serial
from activities.kubernetes import KubernetesActivities
from activities.vault import SecretEngineActivities, VaultReader
from core import errors
from core.kubernetes import SecretRef
from core.restore import PgServer
from core.rotation import RotateSecretInput, RotateSecretResult, serial_of
from core.runbook import RunbookMeta
from tests import harness
from tests.fakes.kubernetes import KubeHandle, kube_fake
from tests.rotation.stand_ins import (
    PKI_MOUNT,
    PodConsumer,
    PodKeyConsumer,
    SecretTlsEndpoint,
    can_login,
    configure_pki,
    restarted_at,
    role_exists,
    secret_data,
)
from workflows.rotate_secret import RotateSecret

pytestmark = pytest.mark.asyncio(loop_scope="session")
NS, SECRET, APP = "shop", "orders-db", "orders-api"


@pytest.fixture
def kube() -> Iterator[KubeHandle]:
    with kube_fake() as handle:
        handle.fake.put_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
        yield handle


def put_secret(kube: KubeHandle, name: str, data: dict[str, str], type: str = "Opaque") -> None:
    kube.fake.put_object({"apiVersion": "v1", "kind": "Secret", "type": type, "metadata": {"name": name, "namespace": NS},
                          "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}})


def put_deployment(kube: KubeHandle, name: str) -> None:
    labels = {"app": name}
    kube.fake.put_object({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": NS},
                          "spec": {"replicas": 2, "selector": {"matchLabels": labels}, "template": {
                              "metadata": {"labels": labels},
                              "spec": {"containers": [{"name": "app", "image": "orders:v1"}]}}}})


def kv(vault: hvac.Client, path: str) -> dict:
    resp = vault.secrets.kv.v2.read_secret_version(path=path.removeprefix("secret/"), mount_point="secret",
                                                   raise_on_deleted_version=True)
    return {"version": resp["data"]["metadata"]["version"], **resp["data"]["data"]}


def k8s_acts(kube: KubeHandle, vault: hvac.Client) -> list:
    k8s = KubernetesActivities(lambda context: kube.api, VaultReader(vault))
    return [k8s.secret_rollout_target, k8s.write_secret_from_vault, k8s.restart_deployment, k8s.wait_rollout]


def db_acts(kube: KubeHandle, vault: hvac.Client, recording) -> list:
    engine = SecretEngineActivities(vault)
    return [engine.db_rotation_target, engine.db_issue_credential, engine.kv_restore_version, engine.vault_revoke_lease,
            DatabaseActivities(None, VaultReader(vault)).pg_wait_consumers, recording[1].notify, *k8s_acts(kube, vault)]


def db_input(role: str, path: str, server: PgServer, **kw) -> RotateSecretInput:
    return RotateSecretInput(
        meta=RunbookMeta(runbook="rotate-secret", target=path, environment="test", requested_by="tester"),
        kind="database", role=role, kv_path=path, consumers=[APP], server=server, rollout="kubernetes",
        secret=SecretRef(namespace=NS, name=SECRET), deployments=[APP], **kw)


async def run(ts_env, task_queue, acts: list, input: RotateSecretInput, record_as: str = ""):
    async with harness.running_worker(ts_env.client, task_queue, [RotateSecret], acts):
        handle = await ts_env.client.start_workflow(RotateSecret.run, input, id=f"rotate-k8s-{uuid.uuid4().hex[:8]}",
                                                    task_queue=task_queue)
        result: RotateSecretResult = await handle.result()
        if record_as:
            await harness.save_history(handle, f"rotate_secret_{record_as}_{result.status.lower()}")
        return result, await harness.decoded_payload_bytes(await handle.fetch_history())


def effective_writes(kube: KubeHandle) -> list[str]:
    """The fake's ledger as ``kind/name`` in order (one entry per write that changed something)."""
    return [entry["key"].split("/")[0] + "/" + entry["key"].split("/")[-1] for entry in kube.fake.ledger]


async def test_secret_rollout_restarts_the_consumers_then_revokes_the_old_user(
        ts_env, task_queue, recording, vault, db_engine, seeded, kube):
    role, path = seeded
    old = kv(vault, path)
    put_secret(kube, SECRET, {"username": old["username"], "password": old["password"]})
    put_deployment(kube, APP)
    kube.fake.set_rollout(NS, APP, 3)  # the new pods become ready after a few polls
    with PodConsumer(vault, db_engine, kube.fake, NS, APP, SECRET) as app:
        assert app.user == old["username"]
        result, history = await run(ts_env, task_queue, db_acts(kube, vault, recording),
                                    db_input(role, path, db_engine), record_as="kubernetes")
        assert result.status == "Succeeded", result.summary
        new = kv(vault, path)
        rec = result.rotation
        assert secret_data(kube.fake, NS, SECRET) == {"username": new["username"], "password": new["password"]}
        assert rec.secret_source == f"{path} v{new['version']}" and len(rec.restarts) == 1
        assert restarted_at(kube.fake, NS, APP) == rec.restarts[0]
        assert effective_writes(kube) == [f"secrets/{SECRET}", f"deployments/{APP}"]  # the Secret, then the restart
        # the restarted pods connected as the new user while the old one still answered; after: the old user gone
        assert app.switches == [(old["username"], new["username"], True)], app.errors
        assert not role_exists(db_engine, old["username"]) and can_login(db_engine, new["username"], new["password"])
        assert [s.name for s in result.steps] == ["validate", "issue new credential", "roll out", "verify consumers",
                                                  "revoke old credential"]
        for secret in {old["password"], new["password"], *app.passwords}:
            assert secret.encode() not in history
        assert new["username"].encode() in history


async def test_failed_verification_puts_the_old_credential_back_into_the_secret_and_restarts_again(
        ts_env, task_queue, recording, vault, db_engine, seeded, kube):
    role, path = seeded
    old = kv(vault, path)
    put_secret(kube, SECRET, {"username": old["username"], "password": old["password"]})
    put_deployment(kube, APP)
    with PodConsumer(vault, db_engine, kube.fake, NS, APP, SECRET) as app:
        app.frozen.set()  # restarted pods that keep the old credential: the verification fails
        result, history = await run(ts_env, task_queue, db_acts(kube, vault, recording),
                                    db_input(role, path, db_engine, verify_timeout=timedelta(seconds=2)),
                                    record_as="kubernetes")
        assert result.status == "RolledBack", result.summary
        rec = result.rotation
        assert secret_data(kube.fake, NS, SECRET) == {"username": old["username"], "password": old["password"]}
        assert rec.secret_source == f"{path} v{rec.restored_version}" and rec.restored_version == old["version"] + 2
        assert len(rec.restarts) == 2 and rec.restarts[0] != rec.restarts[1]
        assert restarted_at(kube.fake, NS, APP) == rec.restarts[1]
        # new material in, restart; old material back, restart again (and only then the new lease revoked)
        assert effective_writes(kube) == [f"secrets/{SECRET}", f"deployments/{APP}"] * 2
        assert rec.revoked == [rec.new_lease_id] and not role_exists(db_engine, rec.new_username)
        assert can_login(db_engine, old["username"], old["password"])
        assert [s.name for s in result.steps][-1] == "roll back to old credential"
        assert "restarted" in result.steps[-1].detail
        assert old["password"].encode() not in history


@pytest.mark.parametrize("bad, field", [({"deployments": [APP, "no-such-app"]}, "deployments:"),
                                        ({"secret": SecretRef(namespace=NS, name="no-such-secret")}, "secret:")])
async def test_a_missing_deployment_or_secret_is_refused_before_any_change(
        ts_env, task_queue, recording, vault, db_engine, seeded, kube, bad, field):
    role, path = seeded
    old = kv(vault, path)
    put_secret(kube, SECRET, {"username": old["username"], "password": old["password"]})
    put_deployment(kube, APP)
    result, _ = await run(ts_env, task_queue, db_acts(kube, vault, recording),
                          db_input(role, path, db_engine).model_copy(update=bad))
    assert result.status == "Refused" and result.reason.startswith(field), result.reason
    assert "no-such" in result.reason and "nothing was changed" in result.reason
    assert kv(vault, path)["version"] == old["version"] and kube.fake.ledger == []


async def test_a_certificate_lands_in_the_tls_secret_that_the_endpoint_serves(ts_env, task_queue, recording, vault, kube):
    configure_pki(vault)
    issued = vault.write_data(f"{PKI_MOUNT}/issue/web", data={"common_name": "www.shop.test"})["data"]
    path = f"sites/{uuid.uuid4().hex[:6]}/tls"
    vault.secrets.kv.v2.create_or_update_secret(path=path, mount_point="secret", secret={
        "certificate": issued["certificate"], "private_key": issued["private_key"], "serial": issued["serial_number"]})
    put_secret(kube, "www-tls", {"tls.crt": issued["certificate"], "tls.key": issued["private_key"]}, "kubernetes.io/tls")
    engine = SecretEngineActivities(vault)
    acts = [engine.pki_rotation_target, engine.pki_issue_certificate, engine.pki_revoke_certificate,
            engine.kv_restore_version, HttpCheckActivities().tls_wait_serial, recording[1].notify, *k8s_acts(kube, vault)]
    with SecretTlsEndpoint(vault, kube.fake, NS, "www-tls") as tls:
        assert _served_serial(tls.endpoint) == issued["serial_number"]
        result, history = await run(ts_env, task_queue, acts, RotateSecretInput(
            meta=RunbookMeta(runbook="rotate-secret", target=path, environment="test", requested_by="tester"),
            kind="certificate", role="web", pki_mount=PKI_MOUNT, common_name="www.shop.test", kv_path=f"secret/{path}",
            endpoints=[tls.endpoint], rollout="kubernetes", secret=SecretRef(namespace=NS, name="www-tls")),
            record_as="kubernetes_certificate")
        assert result.status == "Succeeded", result.summary
        rec = result.rotation
        live = kube.fake.get("secrets", NS, "www-tls")
        assert live is not None and live["type"] == "kubernetes.io/tls"
        crt = x509.load_pem_x509_certificate(secret_data(kube.fake, NS, "www-tls")["tls.crt"].encode())
        assert serial_of(crt.public_bytes(Encoding.DER)) == rec.new_serial != issued["serial_number"]  # the TLS Secret holds the new serial
        assert _served_serial(tls.endpoint) == rec.new_serial and rec.revoked == [issued["serial_number"]]
        assert rec.restarts == []  # no deployments: the endpoint reloads the Secret itself
        assert secret_data(kube.fake, NS, "www-tls")["tls.key"].encode() not in history


async def test_dry_run_lists_the_secret_and_the_restarts_and_refuses_a_missing_deployment(ts_env, vault, db_engine,
                                                                                          seeded, kube) -> None:
    from tests.dryrun.test_dry_run import dry_runner

    role, path = seeded
    old = kv(vault, path)
    put_secret(kube, SECRET, {"username": old["username"], "password": old["password"]})
    put_deployment(kube, APP)
    inp = db_input(role, path, db_engine)
    async with dry_runner(ts_env, [SecretEngineActivities(vault).db_rotation_target, *k8s_acts(kube, vault)]) as dry:
        outcome = await dry("RotateSecret", inp)
        refused = await dry("RotateSecret", inp.model_copy(update={"deployments": ["no-such-app"]}))
    plan = outcome.plan
    assert plan.outcome == "WouldChange", plan
    assert [(c.step, c.target) for c in plan.changes][-2:] == [("roll out", f"secret {NS}/{SECRET}"),
                                                              ("roll out", f"deployment {NS}/{APP}")]
    assert any(line.startswith("roll out:") for line in plan.procedure)
    assert refused.plan.outcome == "WouldRefuse" and refused.plan.refusal.startswith("deployments: no-such-app")
    assert kube.fake.ledger == [] and kv(vault, path)["version"] == old["version"]  # nothing written


async def test_an_api_key_reaches_the_restarted_pods_through_the_secret(ts_env, task_queue, recording, vault, kube):
    from core.rotation import fingerprint_of

    path = f"apps/{uuid.uuid4().hex[:6]}/key"
    vault.secrets.kv.v2.create_or_update_secret(path=path, mount_point="secret", secret={"api_key": "first-key-0123"})
    put_secret(kube, "orders-key", {"api_key": "first-key-0123"})
    put_deployment(kube, APP)
    engine = SecretEngineActivities(vault)
    acts = [engine.apikey_rotation_target, engine.apikey_issue, engine.kv_restore_version, engine.kv_destroy_version,
            HttpCheckActivities().http_check_suite, recording[1].notify, *k8s_acts(kube, vault)]
    with PodKeyConsumer(vault, kube.fake, NS, APP, "orders-key") as app:
        assert app.fingerprint == fingerprint_of("first-key-0123")
        result, history = await run(ts_env, task_queue, acts, RotateSecretInput(
            meta=RunbookMeta(runbook="rotate-secret", target=path, environment="test", requested_by="tester"),
            kind="api_key", kv_path=f"secret/{path}", consumer_urls=[app.url], grace_period=timedelta(minutes=5),
            rollout="kubernetes", secret=SecretRef(namespace=NS, name="orders-key"), deployments=[APP]))
        assert result.status == "Succeeded", result.summary
        rec = result.rotation
        new_key = secret_data(kube.fake, NS, "orders-key")["api_key"]
        assert fingerprint_of(new_key) == rec.new_fingerprint == app.fingerprint != fingerprint_of("first-key-0123")
        assert len(rec.restarts) == 1 and rec.destroyed_versions == [1]
        for key in app.keys:
            assert key.encode() not in history


async def test_a_rollout_that_never_becomes_ready_never_revokes_what_the_pods_may_use(
        ts_env, task_queue, recording, vault, db_engine, seeded, kube):
    """Stuck pods (never ready): the old credential goes back into KV and the Secret and the Deployment is restarted
    again; that restart does not become ready either, so the new lease is NOT revoked (a pod may run on it): the
    run ends Failed and says what was not undone."""
    role, path = seeded
    old = kv(vault, path)
    put_secret(kube, SECRET, {"username": old["username"], "password": old["password"]})
    put_deployment(kube, APP)
    kube.fake.set_rollout(NS, APP, "stuck")
    with pytest.raises(WorkflowFailureError) as failed:
        await run(ts_env, task_queue, db_acts(kube, vault, recording),
                  db_input(role, path, db_engine, rollout_timeout=timedelta(seconds=1)))
    cause = failed.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == errors.RUN_FAILED
    result = cause.details[0]
    rec = result["rotation"]
    assert result["status"] == "Failed" and "roll out" in result["reason"]
    assert secret_data(kube.fake, NS, SECRET) == {"username": old["username"], "password": old["password"]}
    assert len(rec["restarts"]) == 2 and kv(vault, path)["username"] == old["username"]
    assert rec["revoked"] == [] and role_exists(db_engine, rec["new_username"]) and role_exists(db_engine, old["username"])
    assert any("not rolled out" in line for line in result["not_undone"]), result["not_undone"]
