"""rotate-secret's contract alone: bad input is named field by field."""

from __future__ import annotations

from core.rotation import RotateSecretInput, cn_allowed
from core.runbook import RunbookMeta


def test_blank_fields_are_named() -> None:
    problems = RotateSecretInput(meta=RunbookMeta(runbook="rotate-secret", target="x", requested_by="t")).problems()
    assert [p.split(":")[0] for p in problems] == ["role", "kv_path", "consumers", "server"]


def test_a_kubernetes_rollout_names_its_missing_fields_and_a_kv_rollout_refuses_them() -> None:
    from core.kubernetes import SecretRef, SecretRolloutState
    from core.rotation import rollout_problems

    base = dict(meta=RunbookMeta(runbook="rotate-secret", target="x", requested_by="t"), kind="api_key",
                kv_path="secret/apps/a/key", consumer_urls=["http://a/info"])
    assert [p.split(":")[0] for p in RotateSecretInput(**base, rollout="kubernetes").problems()] == ["secret", "deployments"]
    tls = RotateSecretInput(**{**base, "kind": "certificate", "role": "web", "common_name": "www.shop.test",
                               "endpoints": ["127.0.0.1:443"]}, rollout="kubernetes", secret=SecretRef(name="www-tls"))
    assert tls.problems() == [] and tls.secret_layout() == ("kubernetes.io/tls", {"tls.crt": "certificate",
                                                                                   "tls.key": "private_key"})
    assert RotateSecretInput(**base, deployments=["api"]).problems() == ["rollout: kv ignores deployments (set rollout: "
                                                                         "kubernetes)"]
    opaque = SecretRolloutState(secret_exists=True, secret_type="Opaque", missing_deployments=["api"])
    assert rollout_problems(tls, opaque) == ["secret: default/www-tls is of type Opaque; a certificate needs "
                                             "kubernetes.io/tls", "deployments: api not found in namespace default"]


def test_catalog_entry_plans_a_start(tmp_path):
    import shutil
    from pathlib import Path

    from core.catalog import Catalog
    from core.rotation import RotateSecretInput

    root = Path(__file__).resolve().parents[2] / "runbooks"
    for name in ("groups.yaml", "rotate-secret.yaml"):  # only ours: others' may be mid-edit
        shutil.copy(root / name, tmp_path / name)
    wf = {"RotateSecret": RotateSecretInput}
    catalog = Catalog.load(tmp_path, inputs=wf)
    plan = catalog.plan_start(
        "rotate-secret", {"role": "orders-app", "kv_path": "secret/apps/orders/db", "consumers": ["orders-api"],
                          "server": {"host": "orders-pg.internal", "vault_path": "secret/db/orders-admin"}},
        requested_by="dave", inputs=wf)
    assert plan.workflow_type == "RotateSecret" and plan.meta.target == "secret/apps/orders/db"
    assert isinstance(plan.input, RotateSecretInput) and plan.input.problems() == []
    assert plan.input.verify_timeout.total_seconds() == 300 and plan.meta.approval.required_approvals == 0
    k8s = catalog.plan_start(
        "rotate-secret", {"kind": "api_key", "kv_path": "secret/apps/orders/key", "consumer_urls": ["http://api/info"],
                          "rollout": "kubernetes", "secret": {"namespace": "shop", "name": "orders-key"},
                          "deployments": ["orders-api"]}, requested_by="dave", inputs=wf)
    assert isinstance(k8s.input, RotateSecretInput) and k8s.input.problems() == []
    assert k8s.input.secret is not None and (k8s.input.secret.namespace, k8s.input.secret.name) == ("shop", "orders-key")
    assert k8s.input.rollout_timeout.total_seconds() == 600


def test_cn_rules() -> None:
    assert cn_allowed("www.shop.test", ["shop.test"], subdomains=True, bare=False)
    assert not cn_allowed("shop.test", ["shop.test"], subdomains=True, bare=False)
    assert cn_allowed("shop.test", ["shop.test"], subdomains=False, bare=True)
    assert not cn_allowed("www.evilshop.test", ["shop.test"], subdomains=True, bare=True)


def test_certificate_fields_are_named() -> None:
    problems = RotateSecretInput(meta=RunbookMeta(runbook="rotate-secret", target="x", requested_by="t"),
                                 kind="certificate", role="web", kv_path="secret/x", endpoints=["host"]).problems()
    assert problems == ["common_name: blank (the certificate's CN)", "endpoints: 'host' is not host:port"]


def test_api_key_fields_are_named() -> None:
    problems = RotateSecretInput(meta=RunbookMeta(runbook="rotate-secret", target="x", requested_by="t"),
                                 kind="api_key", kv_path="secret/x", consumer_urls=["ftp://x"]).problems()
    assert problems == ["consumer_urls: 'ftp://x' is not an http(s) URL"]


def test_expiry_alerts_at_30_15_7_and_every_day_after() -> None:
    from core.rotation import expiry_alert

    assert [d for d in range(40, -2, -1) if expiry_alert(d) is not None] == [30, 15, 7, 6, 5, 4, 3, 2, 1, 0, -1]
