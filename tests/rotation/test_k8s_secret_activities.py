"""The Kubernetes activities of the rotate-secret rollout alone (ActivityEnvironment), against real OpenBao and the
Kubernetes fake through the real client: the Secret written from a Vault version is idempotent (a retry changes
nothing), refuses a type change and a missing KV field; a restart with the same restartedAt is a no-op."""

from __future__ import annotations

import base64
import uuid
from typing import Iterator

import hvac
import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.kubernetes import KubernetesActivities
from activities.vault import VaultReader
from core import errors
from core.kubernetes import RESTARTED_AT, DeploymentRef, RestartInput, SecretFromVault, SecretRef, SecretRolloutTarget
from tests.fakes.kubernetes import KubeHandle, kube_fake

NS = "shop"


@pytest.fixture
def kube() -> Iterator[KubeHandle]:
    with kube_fake() as handle:
        handle.fake.put_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
        yield handle


@pytest.fixture
def path(vault: hvac.Client) -> str:
    sub = f"apps/{uuid.uuid4().hex[:6]}/db"
    vault.secrets.kv.v2.create_or_update_secret(path=sub, mount_point="secret", secret={"username": "u1", "password": "p1"})
    vault.secrets.kv.v2.create_or_update_secret(path=sub, mount_point="secret", secret={"username": "u2", "password": "p2"})
    return f"secret/{sub}"


def write(path: str, version: int, name: str = "db", type: str = "Opaque", keys: dict | None = None) -> SecretFromVault:
    return SecretFromVault(ref=SecretRef(namespace=NS, name=name), source_path=path, source_version=version,
                           keys=keys or {"username": "username", "password": "password"}, type=type)


def decoded(kube: KubeHandle, name: str = "db") -> dict[str, str]:
    obj = kube.fake.get("secrets", NS, name) or {}
    return {k: base64.b64decode(v).decode() for k, v in (obj.get("data") or {}).items()}


def test_the_secret_is_written_from_the_version_named_and_a_retry_changes_nothing(vault, kube, path):
    acts = KubernetesActivities(lambda context: kube.api, VaultReader(vault))
    env = ActivityEnvironment()
    first = env.run(acts.write_secret_from_vault, write(path, 1))
    assert first.created and first.changed and decoded(kube) == {"username": "u1", "password": "p1"}
    again = env.run(acts.write_secret_from_vault, write(path, 1))
    assert not again.changed and len(kube.fake.ledger) == 1  # the retry wrote nothing
    second = env.run(acts.write_secret_from_vault, write(path, 2))
    assert second.changed and not second.created and second.source == f"{path} v2"
    assert decoded(kube) == {"username": "u2", "password": "p2"}
    live = kube.fake.get("secrets", NS, "db")
    assert live is not None and live["metadata"]["annotations"]["runbook-automation/source"] == f"{path} v2"
    state = env.run(acts.secret_rollout_target, SecretRolloutTarget(secret=SecretRef(namespace=NS, name="db"),
                                                                      deployments=["absent-app"]))
    assert (state.secret_exists, state.secret_type, state.source) == (True, "Opaque", f"{path} v2")
    assert state.missing_deployments == ["absent-app"]


def test_a_type_change_or_a_missing_field_is_refused(vault, kube, path):
    acts = KubernetesActivities(lambda context: kube.api, VaultReader(vault))
    env = ActivityEnvironment()
    env.run(acts.write_secret_from_vault, write(path, 1))
    with pytest.raises(ApplicationError) as err:
        env.run(acts.write_secret_from_vault, write(path, 2, type="kubernetes.io/tls",
                                                    keys={"tls.crt": "username", "tls.key": "password"}))
    assert err.value.type == errors.INVALID_INPUT and "type" in err.value.message
    with pytest.raises(ApplicationError) as err:
        env.run(acts.write_secret_from_vault, write(path, 2, keys={"api_key": "api_key"}))
    assert err.value.type == errors.INVALID_INPUT and "api_key" in err.value.message and "p2" not in err.value.message
    assert decoded(kube) == {"username": "u1", "password": "p1"}
    without_vault = KubernetesActivities(lambda context: kube.api)
    with pytest.raises(ApplicationError, match="VAULT_ADDR"):
        env.run(without_vault.write_secret_from_vault, write(path, 2))


def test_a_restart_with_the_same_value_starts_no_second_rollout(kube):
    labels = {"app": "api"}
    kube.fake.put_object({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "api", "namespace": NS},
                          "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": {
                              "metadata": {"labels": labels}, "spec": {"containers": [{"name": "a", "image": "i"}]}}}})
    acts = KubernetesActivities(lambda context: kube.api)
    env = ActivityEnvironment()
    ref = DeploymentRef(namespace=NS, name="api")
    first = env.run(acts.restart_deployment, RestartInput(ref=ref, restarted_at="2026-12-01T21:00:00.000000Z"))
    again = env.run(acts.restart_deployment, RestartInput(ref=ref, restarted_at="2026-12-01T21:00:00.000000Z"))
    assert first.generation == again.generation == 2  # one new generation: one rollout
    live = kube.fake.get("deployments", NS, "api")
    assert live is not None and live["spec"]["template"]["metadata"]["annotations"][RESTARTED_AT].startswith("2026-12-01")
    later = env.run(acts.restart_deployment, RestartInput(ref=ref, restarted_at="2026-12-01T21:05:00.000000Z"))
    assert later.generation == 3
    with pytest.raises(ApplicationError) as err:
        env.run(acts.restart_deployment, RestartInput(ref=DeploymentRef(namespace=NS, name="gone"), restarted_at="x"))
    assert err.value.type == errors.NOT_FOUND
