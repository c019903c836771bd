"""The issue activities of rotate-secret alone (ActivityEnvironment), against real OpenBao: a retry of the same
rotation (a worker lost after the KV write, or the roll-back asking what the issue wrote) finds the version it wrote
and answers it again, issuing nothing: no second user or lease, certificate or KV version. Another rotation's issue
on the same path does issue, after the version the first one wrote."""

from __future__ import annotations

import secrets
import uuid

import hvac
from temporalio.testing import ActivityEnvironment

from activities.vault import SecretEngineActivities
from core.restore import PgServer
from core.rotation import ApiKeyIssueInput, DbCredentialInput, KvRef, PkiIssueInput, fingerprint_of
from tests.rotation.stand_ins import MOUNT, PKI_MOUNT, configure_pki


def kv_version(vault: hvac.Client, path: str) -> int:
    meta = vault.secrets.kv.v2.read_secret_metadata(path=path.removeprefix("secret/"), mount_point="secret")
    return int(meta["data"]["current_version"])


def leases(vault: hvac.Client, role: str) -> set[str]:
    return set(vault.sys.list_leases(prefix=f"{MOUNT}/creds/{role}/")["data"]["keys"])


def certificates(vault: hvac.Client) -> set[str]:
    return set(vault.list(f"{PKI_MOUNT}/certs")["data"]["keys"])


def test_a_retried_database_issue_answers_the_user_it_wrote(vault: hvac.Client, db_engine: PgServer,
                                                            seeded: tuple[str, str]) -> None:
    role, path = seeded
    engine, env = SecretEngineActivities(vault), ActivityEnvironment()
    old = vault.secrets.kv.v2.read_secret_version(path=path.removeprefix("secret/"), mount_point="secret",
                                                  raise_on_deleted_version=True)["data"]
    issue = DbCredentialInput(mount=MOUNT, role=role, kv_path=path, rotation_id=f"rotate-{uuid.uuid4().hex[:8]}")
    first = env.run(engine.db_issue_credential, issue)
    assert first.previous == KvRef(path=path, version=old["metadata"]["version"])
    assert (first.previous_username, first.previous_lease_id) == (old["data"]["username"], old["data"]["lease_id"])
    assert first.kv.version == first.previous.version + 1 and first.username != first.previous_username
    issued = leases(vault, role)

    again = env.run(engine.db_issue_credential, issue)
    assert again == first
    assert kv_version(vault, path) == first.kv.version and leases(vault, role) == issued  # nothing issued again

    other = env.run(engine.db_issue_credential, issue.model_copy(update={"rotation_id": "another-rotation"}))
    assert other.previous == first.kv and other.previous_username == first.username
    assert other.kv.version == first.kv.version + 1 and len(leases(vault, role)) == len(issued) + 1


def test_a_retried_certificate_issue_answers_the_serial_it_wrote(vault: hvac.Client) -> None:
    configure_pki(vault)
    engine, env = SecretEngineActivities(vault), ActivityEnvironment()
    cn = f"retry-{uuid.uuid4().hex[:6]}.shop.test"
    seed = vault.write_data(f"{PKI_MOUNT}/issue/web", data={"common_name": cn})["data"]
    sub = f"sites/{uuid.uuid4().hex[:6]}/tls"
    vault.secrets.kv.v2.create_or_update_secret(path=sub, mount_point="secret", secret={
        "certificate": seed["certificate"], "private_key": seed["private_key"], "serial": seed["serial_number"]})
    path = f"secret/{sub}"
    issue = PkiIssueInput(mount=PKI_MOUNT, role="web", common_name=cn, kv_path=path,
                          rotation_id=f"rotate-{uuid.uuid4().hex[:8]}")
    first = env.run(engine.pki_issue_certificate, issue)
    assert first.previous == KvRef(path=path, version=1) and first.previous_serial == seed["serial_number"]
    assert first.kv.version == 2 and first.serial not in ("", seed["serial_number"]) and first.not_after
    issued = certificates(vault)

    again = env.run(engine.pki_issue_certificate, issue)
    assert again == first
    assert kv_version(vault, path) == 2 and certificates(vault) == issued  # nothing issued again

    other = env.run(engine.pki_issue_certificate, issue.model_copy(update={"rotation_id": "another-rotation"}))
    assert other.previous == first.kv and other.previous_serial == first.serial
    assert other.kv.version == 3 and certificates(vault) - issued == {other.serial}


def test_a_retried_api_key_issue_answers_the_version_it_wrote(vault: hvac.Client) -> None:
    engine, env = SecretEngineActivities(vault), ActivityEnvironment()
    sub = f"apps/{uuid.uuid4().hex[:6]}/api"
    key = secrets.token_urlsafe(32)
    # written by hand without its fingerprint: the first issue and its retry both name the old key by its hash
    vault.secrets.kv.v2.create_or_update_secret(path=sub, mount_point="secret", secret={"api_key": key, "owner": "ops"})
    path = f"secret/{sub}"
    issue = ApiKeyIssueInput(kv_path=path, rotation_id=f"rotate-{uuid.uuid4().hex[:8]}")
    first = env.run(engine.apikey_issue, issue)
    assert first.previous == KvRef(path=path, version=1) and first.previous_fingerprint == fingerprint_of(key)
    assert first.kv.version == 2 and first.fingerprint not in ("", fingerprint_of(key))

    again = env.run(engine.apikey_issue, issue)
    assert again == first
    assert kv_version(vault, path) == 2  # no second key written

    other = env.run(engine.apikey_issue, issue.model_copy(update={"rotation_id": "another-rotation"}))
    assert other.previous == first.kv and other.previous_fingerprint == first.fingerprint
    assert other.kv.version == 3 and other.fingerprint != first.fingerprint
    newest = vault.secrets.kv.v2.read_secret_version(path=sub, mount_point="secret",
                                                     raise_on_deleted_version=True)["data"]["data"]
    assert newest["owner"] == "ops" and fingerprint_of(newest["api_key"]) == other.fingerprint

