"""VaultReader against a real OpenBao dev server: token auth, AppRole, KV v2 paths, typed failures."""

from __future__ import annotations

import hvac
import pytest
from temporalio.exceptions import ApplicationError

from activities.vault import VaultReader
from core import errors


@pytest.fixture(scope="module")
def root(openbao: tuple[str, str]) -> hvac.Client:
    addr, token = openbao
    client = hvac.Client(url=addr, token=token)
    client.secrets.kv.v2.create_or_update_secret(path="tests/vault/db", secret={"username": "app", "password": "s3cr3t-pw"},
                                                 mount_point="secret")
    client.secrets.kv.v2.create_or_update_secret(path="tests/vault/single", secret={"token": "tok-123"}, mount_point="secret")
    return client


def test_token_auth_reads_kv_v2_with_and_without_mount_prefix(root: hvac.Client, openbao: tuple[str, str]) -> None:
    addr, token = openbao
    reader = VaultReader.from_env({"VAULT_ADDR": addr, "VAULT_TOKEN": token})
    assert reader.read_kv("tests/vault/db") == {"username": "app", "password": "s3cr3t-pw"}
    assert reader.read_kv("secret/tests/vault/db")["password"] == "s3cr3t-pw"
    assert reader.read_kv("secret/data/tests/vault/db")["username"] == "app"
    assert reader.read_many({"db_password": "tests/vault/db#password", "api": "tests/vault/single"}) == {
        "db_password": "s3cr3t-pw", "api": "tok-123"}


def test_missing_and_deleted_secrets_are_not_found(root: hvac.Client, openbao: tuple[str, str]) -> None:
    addr, token = openbao
    reader = VaultReader.from_env({"VAULT_ADDR": addr, "VAULT_TOKEN": token})
    with pytest.raises(ApplicationError) as info:
        reader.read_kv("tests/vault/nope")
    assert info.value.type == errors.NOT_FOUND and info.value.non_retryable
    root.secrets.kv.v2.create_or_update_secret(path="tests/vault/gone", secret={"a": "1"}, mount_point="secret")
    root.secrets.kv.v2.delete_latest_version_of_secret(path="tests/vault/gone", mount_point="secret")
    with pytest.raises(ApplicationError) as info:
        reader.read_kv("tests/vault/gone")
    assert info.value.type == errors.NOT_FOUND
    with pytest.raises(ApplicationError) as info:
        reader.read_many({"x": "tests/vault/db"})  # two keys, no #key
    assert info.value.type == errors.INVALID_INPUT


def test_approle_login_and_denied_policy(root: hvac.Client, openbao: tuple[str, str]) -> None:
    addr, _ = openbao
    if "approle/" not in root.sys.list_auth_methods()["data"]:
        root.sys.enable_auth_method("approle")
    root.sys.create_or_update_policy("tests-vault-read", 'path "secret/data/tests/vault/db" { capabilities = ["read"] }')
    root.auth.approle.create_or_update_approle("tests-vault", token_policies=["tests-vault-read"], token_ttl="5m")
    role_id = root.auth.approle.read_role_id("tests-vault")["data"]["role_id"]
    secret_id = root.auth.approle.generate_secret_id("tests-vault")["data"]["secret_id"]
    reader = VaultReader.from_env({"VAULT_ADDR": addr, "VAULT_ROLE_ID": role_id, "VAULT_SECRET_ID": secret_id})
    assert reader.read_kv("tests/vault/db")["password"] == "s3cr3t-pw"
    with pytest.raises(ApplicationError) as info:
        reader.read_kv("tests/vault/single")
    assert info.value.type == errors.ACCESS_DENIED
    with pytest.raises(ApplicationError) as info:
        VaultReader.from_env({"VAULT_ADDR": addr, "VAULT_ROLE_ID": role_id, "VAULT_SECRET_ID": "wrong"})
    assert info.value.type == errors.ACCESS_DENIED


def test_missing_configuration_is_invalid_input() -> None:
    with pytest.raises(ApplicationError) as info:
        VaultReader.from_env({})
    assert info.value.type == errors.INVALID_INPUT
    with pytest.raises(ApplicationError) as info:
        VaultReader.from_env({"VAULT_ADDR": "http://127.0.0.1:1"})
    assert info.value.type == errors.INVALID_INPUT


def test_unreachable_vault_is_transient() -> None:
    reader = VaultReader.from_env({"VAULT_ADDR": "http://127.0.0.1:1", "VAULT_TOKEN": "x"})
    with pytest.raises(ApplicationError) as info:
        reader.read_kv("anything")
    assert info.value.type == errors.TRANSIENT and not info.value.non_retryable
