"""deploy/kubernetes: every overlay renders offline (`kubectl kustomize`) and its objects are what the deployment
relies on; the worker's RBAC is exactly the API calls activities/kubernetes.py makes (read from its source)."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from core.duration import parse_duration

ROOT = Path(__file__).resolve().parents[2]
KUSTOMIZE = ROOT / "deploy" / "kubernetes"
OVERLAYS = sorted(p.name for p in (KUSTOMIZE / "overlays").iterdir() if (p / "kustomization.yaml").exists())
ACTIVITIES = ROOT / "activities" / "kubernetes.py"


def render(path: Path) -> list[dict]:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl is needed to render the kustomize overlays (.ci/run installs it)"
    out = subprocess.run([kubectl, "kustomize", str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request) -> tuple[str, list[dict]]:
    return request.param, render(KUSTOMIZE / "overlays" / request.param)


def one(objects: list[dict], kind: str, name: str) -> dict:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"].startswith(name)]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def container(deployment: dict) -> dict:
    return deployment["spec"]["template"]["spec"]["containers"][0]


def config(objects: list[dict]) -> dict:
    return one(objects, "ConfigMap", "runbook-config")["data"]


# ---------------------------------------------------------------------------- RBAC from the code
def api_groups() -> dict[type, str]:
    """The client's API classes and their API groups (imported here: they load a second of models at collection)."""
    from kubernetes import client as k8s

    return {k8s.AppsV1Api: "apps", k8s.BatchV1Api: "batch", k8s.CoreV1Api: "", k8s.NetworkingV1Api: "networking.k8s.io"}


VERB = {"read": "get", "get": "get", "create": "create", "patch": "patch", "delete": "delete", "replace": "update",
        "list": "list"}
CALL = re.compile(r"^(read|get|create|patch|delete|replace|list)_(namespaced_)?(\w+?)$")


def _plural(resource: str) -> str:
    """The client's snake_case kind to the API's resource name (deployment_scale -> deployments/scale, pod_log ->
    pods/log)."""
    *kind, sub = resource.split("_") if resource.endswith(("_scale", "_status", "_log")) else (resource, None)
    name = "".join(kind if sub else [resource]).replace("_", "")
    name = name[:-1] + "ies" if name.endswith("y") else name + "s"
    return f"{name}/{sub}" if sub else name


def calls_in_code() -> set[tuple[str, str, str]]:
    """(apiGroup, resource, verb) for every Kubernetes client call in activities/kubernetes.py."""
    tree = ast.parse(ACTIVITIES.read_text())
    constants = {t.id: v.value for node in tree.body if isinstance(node, ast.Assign)
                 for t, v in zip(getattr(node.targets[0], "elts", node.targets), getattr(node.value, "elts", [node.value]), strict=True)
                 if isinstance(t, ast.Name) and isinstance(v, ast.Constant)}
    groups = api_groups()
    found: set[tuple[str, str, str]] = set()
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        method, args = node.func.attr, node.args
        if method == "partial" and args and isinstance(args[0], ast.Attribute):  # functools.partial(api.call, ...)
            method, args = args[0].attr, args[1:]
        if method.endswith("_custom_object"):
            group, plural = (constants[a.id] if isinstance(a, ast.Name) else a.value for a in (args[0], args[3]))
            found.add((group, plural, VERB[method.split("_")[0]]))
            continue
        apis = [api for api in groups if hasattr(api, method)]
        match = CALL.match(method)
        if not apis or not match:
            continue
        assert len(apis) == 1, f"{method} is on several APIs"
        found.add((groups[apis[0]], _plural(match.group(3)), VERB[match.group(1)]))
    return found


def test_the_parser_sees_every_kind_of_call():
    calls = calls_in_code()
    assert ("apps", "deployments/scale", "patch") in calls
    assert ("gateway.networking.k8s.io", "httproutes", "patch") in calls
    assert ("", "resourcequotas", "create") in calls and ("networking.k8s.io", "networkpolicies", "get") in calls
    assert ("", "namespaces", "delete") in calls


def test_worker_rbac_grants_exactly_what_the_activities_call(overlay):
    name, objects = overlay
    role = one(objects, "ClusterRole", "runbook-worker")
    granted = {(group, resource, verb) for rule in role["rules"] for group in rule["apiGroups"]
               for resource in rule["resources"] for verb in rule["verbs"]}
    assert granted == calls_in_code(), f"{name}: extra {granted - calls_in_code()}, missing {calls_in_code() - granted}"
    assert not any("*" in str(rule) for rule in role["rules"])
    binding = one(objects, "ClusterRoleBinding", "runbook-worker")
    namespace = one(objects, "Deployment", "runbook-worker")["metadata"]["namespace"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "runbook-worker", "namespace": namespace}]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    # only the worker holds a token
    web = one(objects, "ServiceAccount", "runbook-web")
    assert web["automountServiceAccountToken"] is False
    for deployment in ("runbook-gateway", "runbook-codec-server"):
        assert one(objects, "Deployment", deployment)["spec"]["template"]["spec"]["serviceAccountName"] == "runbook-web"


# ---------------------------------------------------------------------------- the objects
def test_every_overlay_has_the_expected_objects_from_one_image(overlay):
    name, objects = overlay
    kinds = {(o["kind"], re.sub(r"-[a-z0-9]{10}$", "", o["metadata"]["name"])) for o in objects}
    assert {("Deployment", "runbook-worker"), ("Deployment", "runbook-gateway"), ("Deployment", "runbook-codec-server"),
            ("Service", "runbook-gateway"), ("Service", "runbook-codec-server"), ("Service", "runbook-worker-metrics"),
            ("Ingress", "runbook-gateway"), ("PodDisruptionBudget", "runbook-worker"), ("ServiceMonitor", "runbook-worker"),
            ("ServiceAccount", "runbook-worker"), ("ConfigMap", "runbook-config"),
            ("PersistentVolumeClaim", "runbook-terraform")} <= kinds
    namespaces = {o["metadata"].get("namespace") for o in objects if o["kind"] not in ("ClusterRole", "ClusterRoleBinding", "Namespace")}
    assert len(namespaces) == 1 and None not in namespaces
    images = {container(o)["image"] for o in objects if o["kind"] == "Deployment"}
    assert len(images) == 1
    image = images.pop()
    assert image.startswith("ghcr.io/example/runbook-automation:") and not image.endswith(":latest"), image
    args = {o["metadata"]["name"]: container(o)["args"] for o in objects if o["kind"] == "Deployment"}
    assert args == {"runbook-worker": ["runbook", "worker"], "runbook-gateway": ["runbook", "gateway"],
                    "runbook-codec-server": ["runbook", "codec-server"]}


def test_worker_probes_shutdown_and_disruption_budget(overlay):
    name, objects = overlay
    worker = one(objects, "Deployment", "runbook-worker")
    pod = worker["spec"]["template"]["spec"]
    c = container(worker)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    data = config(objects)
    assert ports == {"metrics": int(data["RUNBOOK_METRICS_PORT"]), "health": int(data["RUNBOOK_HEALTH_PORT"])}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "health"}
    assert c["startupProbe"]["httpGet"]["path"] == "/readyz"
    # the kubelet waits longer than the worker's own graceful shutdown before it kills the pod
    grace = parse_duration(data["RUNBOOK_GRACEFUL_SHUTDOWN_TIMEOUT"])
    assert timedelta(seconds=pod["terminationGracePeriodSeconds"]) >= grace + timedelta(seconds=10)
    pdb = one(objects, "PodDisruptionBudget", "runbook-worker")
    assert pdb["spec"]["selector"]["matchLabels"] == worker["spec"]["selector"]["matchLabels"]
    assert pdb["spec"].get("maxUnavailable") == 1
    assert worker["spec"]["replicas"] >= 1
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 10001
    # every replica shares the Terraform root
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert mounts["terraform"] == data["RUNBOOK_TERRAFORM_ROOT"]
    volume = next(v for v in pod["volumes"] if v["name"] == "terraform")
    pvc = one(objects, "PersistentVolumeClaim", "runbook-terraform")
    assert volume["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
    if worker["spec"]["replicas"] > 1:
        assert pvc["spec"]["accessModes"] == ["ReadWriteMany"], f"{name}: replicas need a shared volume"


def test_gateway_service_ingress_and_codec_server(overlay):
    _, objects = overlay
    gateway = one(objects, "Deployment", "runbook-gateway")
    assert container(gateway)["readinessProbe"]["httpGet"]["path"] == "/healthz"
    service = one(objects, "Service", "runbook-gateway")
    assert service["spec"]["selector"] == gateway["spec"]["selector"]["matchLabels"]
    ingress = one(objects, "Ingress", "runbook-gateway")
    paths = {p["path"]: p["backend"]["service"]["name"] for p in ingress["spec"]["rules"][0]["http"]["paths"]}
    assert paths == {"/slack": "runbook-gateway", "/pagerduty": "runbook-gateway"}
    codec = one(objects, "Deployment", "runbook-codec-server")
    assert container(codec)["readinessProbe"]["httpGet"]["path"] == "/healthz"
    monitor = one(objects, "ServiceMonitor", "runbook-worker")
    metrics = one(objects, "Service", "runbook-worker-metrics")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= metrics["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == metrics["spec"]["ports"][0]["name"] == "metrics"


SECRET_KEYS = re.compile(r"(TOKEN|SECRET|PASSWORD|API_KEY|ROUTING_KEY|ACCESS_KEY)", re.I)


def test_configuration_in_a_configmap_and_secrets_only_by_reference(overlay):
    name, objects = overlay
    assert not [o for o in objects if o["kind"] == "Secret"], f"{name} carries a Secret"
    data = config(objects)
    assert not [k for k in data if SECRET_KEYS.search(k)], f"{name}: secret-looking keys in the ConfigMap"
    assert data["RUNBOOK_CODEC_VAULT_PATH"]  # the codec keys come from Vault, not from a manifest
    for deployment in (o for o in objects if o["kind"] == "Deployment"):
        c = container(deployment)
        refs = {next(iter(ref)): next(iter(ref.values()))["name"] for ref in c["envFrom"]}
        assert refs["configMapRef"] == one(objects, "ConfigMap", "runbook-config")["metadata"]["name"]
        assert refs["secretRef"] == "runbook-secrets"
        for env in c.get("env", []):
            assert not SECRET_KEYS.search(env["name"]) or "valueFrom" in env, env


def test_overlays_differ_where_they_should():
    dev, prod = (render(KUSTOMIZE / "overlays" / name) for name in ("dev", "production"))
    assert one(dev, "Deployment", "runbook-worker")["spec"]["replicas"] == 1
    assert one(prod, "Deployment", "runbook-worker")["spec"]["replicas"] >= 3
    assert config(prod)["TEMPORAL_ADDRESS"].endswith(".tmprl.cloud:7233")
    assert one(prod, "Ingress", "runbook-gateway")["spec"]["tls"]
    assert one(dev, "Deployment", "runbook-worker")["metadata"]["namespace"] == "runbooks-dev"
