"""The fake API server itself speaks what the official client expects (so other folders can trust it)."""

from __future__ import annotations

import json

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException, NotFoundException

DEPLOYMENT = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "web", "namespace": "shop"},
    "spec": {
        "replicas": 2,
        "selector": {"matchLabels": {"app": "web"}},
        "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "app", "image": "web:1"}]}},
    },
}


@pytest.fixture
def apps(kube):
    fake, api = kube
    client.CoreV1Api(api).create_namespace({"metadata": {"name": "shop"}})
    return client.AppsV1Api(api)


def test_404_is_a_status_object(kube, apps):
    with pytest.raises(NotFoundException) as info:
        apps.read_namespaced_deployment("web", "shop")
    body = json.loads(info.value.body)
    assert body["kind"] == "Status" and body["reason"] == "NotFound" and body["code"] == 404


def test_create_conflict_resource_version_and_generation(kube, apps):
    created = apps.create_namespaced_deployment("shop", DEPLOYMENT)
    assert created.metadata.generation == 1 and created.status.ready_replicas == 2
    with pytest.raises(ApiException) as info:
        apps.create_namespaced_deployment("shop", DEPLOYMENT)
    assert info.value.status == 409 and json.loads(info.value.body)["reason"] == "AlreadyExists"

    rv = created.metadata.resource_version
    patched = apps.patch_namespaced_deployment("web", "shop", {"metadata": {"labels": {"team": "a"}}})
    assert int(patched.metadata.resource_version) > int(rv) and patched.metadata.generation == 1  # metadata only
    patched = apps.patch_namespaced_deployment("web", "shop", {"spec": {"replicas": 3}})
    assert patched.metadata.generation == 2 and patched.status.observed_generation == 2

    stale = dict(DEPLOYMENT, metadata={**DEPLOYMENT["metadata"], "resourceVersion": rv})
    with pytest.raises(ApiException) as info:
        apps.replace_namespaced_deployment("web", "shop", stale)
    assert info.value.status == 409 and json.loads(info.value.body)["reason"] == "Conflict"


def test_dry_run_changes_nothing(kube, apps):
    fake, _ = kube
    apps.create_namespaced_deployment("shop", DEPLOYMENT, dry_run="All")
    assert fake.get("deployments", "shop", "web") is None
    apps.create_namespaced_deployment("shop", DEPLOYMENT)
    answer = apps.patch_namespaced_deployment("web", "shop", {"spec": {"replicas": 9}}, dry_run="All")
    assert answer.spec.replicas == 9 and fake.get("deployments", "shop", "web")["spec"]["replicas"] == 2
    apps.delete_namespaced_deployment("web", "shop", dry_run="All")
    assert fake.get("deployments", "shop", "web") is not None


def test_patch_types_and_scale_subresource(kube, apps):
    fake, api = kube
    apps.create_namespaced_deployment("shop", DEPLOYMENT)
    # list body -> json-patch
    apps.patch_namespaced_deployment("web", "shop", [{"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": "web:2"}])
    assert fake.calls("PATCH")[-1].content_type.startswith("application/json-patch+json")
    assert fake.get("deployments", "shop", "web")["spec"]["template"]["spec"]["containers"][0]["image"] == "web:2"
    scale = apps.read_namespaced_deployment_scale("web", "shop")
    assert scale.spec.replicas == 2 and scale.status.selector == "app=web"
    apps.replace_namespaced_deployment_scale("web", "shop", {"metadata": {"name": "web"}, "spec": {"replicas": 5}})
    assert fake.get("deployments", "shop", "web")["spec"]["replicas"] == 5
    # custom objects: merge patch by default; strategic merge is refused as by a real server
    fake.put_object({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": {"name": "r", "namespace": "shop"}, "spec": {"hostnames": ["a"], "rules": []}})
    custom = client.CustomObjectsApi(api)
    custom.patch_namespaced_custom_object("gateway.networking.k8s.io", "v1", "shop", "httproutes", "r", {"spec": {"hostnames": None}})
    assert fake.get("httproutes", "shop", "r")["spec"] == {"rules": []}
    with pytest.raises(ApiException) as info:
        custom.patch_namespaced_custom_object(
            "gateway.networking.k8s.io", "v1", "shop", "httproutes", "r", {"spec": {}}, _content_type="application/strategic-merge-patch+json"
        )
    assert info.value.status == 415


def test_rollout_modes(kube, apps):
    fake, _ = kube
    fake.set_rollout("shop", "web", 2)
    apps.create_namespaced_deployment("shop", DEPLOYMENT)
    assert not apps.read_namespaced_deployment("web", "shop").status.ready_replicas
    assert apps.read_namespaced_deployment("web", "shop").status.ready_replicas == 2  # second read
    fake.set_rollout("shop", "web", "stuck")
    apps.patch_namespaced_deployment("web", "shop", {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "web:bad"}]}}}})
    for _ in range(3):
        status = apps.read_namespaced_deployment("web", "shop").status
        assert (status.updated_replicas, status.ready_replicas, status.replicas, status.unavailable_replicas) == (2, 2, 4, 2)


def test_namespace_delete_removes_its_objects(kube, apps):
    fake, api = kube
    apps.create_namespaced_deployment("shop", DEPLOYMENT)
    client.CoreV1Api(api).delete_namespace("shop")
    assert fake.objects == {}
    with pytest.raises(NotFoundException):
        apps.create_namespaced_deployment("shop", DEPLOYMENT)
