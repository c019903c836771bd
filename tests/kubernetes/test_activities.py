"""Every Kubernetes activity through the real ``kubernetes`` client, over HTTP, against the fake API server."""

from __future__ import annotations

import time

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.kubernetes import KubernetesActivities
from core import errors
from core.kubernetes import (
    DeploymentApply,
    DeploymentRef,
    HttpRouteRef,
    HttpRouteWeightsInput,
    NamespaceRef,
    NamespaceSpec,
    ScaleInput,
    ServiceRef,
    ServiceSelectorInput,
    WaitRolloutInput,
)

NS = "shop"
BLUE = DeploymentRef(namespace=NS, name="web-blue")
GREEN = DeploymentRef(namespace=NS, name="web-green")


@pytest.fixture
def acts(kube) -> KubernetesActivities:
    fake, api = kube
    fake.put_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    return KubernetesActivities(lambda context: api)


@pytest.fixture
def env() -> ActivityEnvironment:
    return ActivityEnvironment()


def blue_apply(**kw) -> DeploymentApply:
    base = dict(ref=BLUE, image="shop/web:1.0", replicas=3, labels={"app": "web", "color": "blue"}, container_port=8080)
    return DeploymentApply(**{**base, **kw})


def raises(env, fn, arg, kind: str) -> ApplicationError:
    with pytest.raises(ApplicationError) as info:
        env.run(fn, arg)
    assert info.value.type == kind, info.value
    return info.value


# ---------------------------------------------------------------------------------------------- deployments
def test_apply_creates_then_is_idempotent_then_patches(kube, acts, env):
    fake, _ = kube
    missing = raises(env, acts.get_deployment, BLUE, errors.NOT_FOUND)
    assert "web-blue" in str(missing)

    created = env.run(acts.apply_deployment, blue_apply())
    assert (created.exists, created.replicas, created.image, created.generation) == (True, 3, "shop/web:1.0", 1)
    stored = fake.get("deployments", NS, "web-blue")
    container = stored["spec"]["template"]["spec"]["containers"][0]
    assert container == {"name": "app", "image": "shop/web:1.0", "ports": [{"containerPort": 8080, "protocol": "TCP"}]}
    assert stored["spec"]["selector"] == {"matchLabels": {"app": "web", "color": "blue"}}

    rv = stored["metadata"]["resourceVersion"]
    writes_before = len([r for r in fake.requests if r.method != "GET"])
    again = env.run(acts.apply_deployment, blue_apply())
    assert again.generation == 1  # no new rollout for an unchanged spec
    assert fake.get("deployments", NS, "web-blue")["metadata"]["resourceVersion"] == rv
    assert len([r for r in fake.requests if r.method != "GET"]) == writes_before  # and no write at all

    patched = env.run(acts.apply_deployment, blue_apply(image="shop/web:1.1", replicas=4))
    assert (patched.image, patched.replicas, patched.generation) == ("shop/web:1.1", 4, 2)
    patch = fake.calls("PATCH", "/deployments/web-blue")[-1]
    assert patch.content_type.startswith("application/strategic-merge-patch+json")
    assert patch.body["spec"]["template"]["spec"]["containers"] == [{"name": "app", "image": "shop/web:1.1"}]


def test_apply_keeps_fields_set_by_others_and_refuses_selector_change(kube, acts, env):
    fake, _ = kube
    env.run(acts.apply_deployment, blue_apply())
    # someone else adds an env var and a sidecar: our patch must keep them
    obj = fake.get("deployments", NS, "web-blue")
    obj["spec"]["template"]["spec"]["containers"][0]["env"] = [{"name": "MODE", "value": "prod"}]
    obj["spec"]["template"]["spec"]["containers"].append({"name": "proxy", "image": "envoy:1"})
    fake.objects[("deployments", NS, "web-blue")] = obj
    env.run(acts.apply_deployment, blue_apply(image="shop/web:2"))
    containers = fake.get("deployments", NS, "web-blue")["spec"]["template"]["spec"]["containers"]
    assert containers[0]["image"] == "shop/web:2" and containers[0]["env"] == [{"name": "MODE", "value": "prod"}]
    assert containers[1] == {"name": "proxy", "image": "envoy:1"}

    err = raises(env, acts.apply_deployment, blue_apply(labels={"app": "web", "color": "green"}), errors.INVALID_INPUT)
    assert "immutable" in str(err)
    raises(env, acts.apply_deployment, blue_apply(selector={"app": "other"}), errors.INVALID_INPUT)


def test_apply_copies_the_template_of_the_live_colour(kube, acts, env):
    fake, _ = kube
    env.run(acts.apply_deployment, blue_apply())
    obj = fake.get("deployments", NS, "web-blue")
    obj["spec"]["template"]["spec"]["containers"][0]["env"] = [{"name": "DB", "value": "primary"}]
    obj["spec"]["template"]["spec"]["serviceAccountName"] = "web"
    fake.objects[("deployments", NS, "web-blue")] = obj

    green = env.run(
        acts.apply_deployment,
        DeploymentApply(
            ref=GREEN, image="shop/web:2.0", replicas=3, labels={"app": "web", "color": "green"}, template_from=BLUE
        ),
    )
    assert (green.image, green.labels, green.selector["color"]) == ("shop/web:2.0", {"app": "web", "color": "green"}, "green")
    template = fake.get("deployments", NS, "web-green")["spec"]["template"]
    assert template["spec"]["serviceAccountName"] == "web"
    assert template["spec"]["containers"][0]["env"] == [{"name": "DB", "value": "primary"}]
    # the source is untouched
    assert fake.get("deployments", NS, "web-blue")["spec"]["template"]["spec"]["containers"][0]["image"] == "shop/web:1.0"
    raises(
        env,
        acts.apply_deployment,
        DeploymentApply(ref=GREEN, image="x", replicas=1, labels={"app": "web"}, template_from=DeploymentRef(namespace=NS, name="nope")),
        errors.NOT_FOUND,
    )


def test_scale_is_absolute_and_idempotent(kube, acts, env):
    fake, _ = kube
    env.run(acts.apply_deployment, blue_apply())
    state = env.run(acts.scale_deployment, ScaleInput(ref=BLUE, replicas=6))
    assert (state.replicas, state.ready_replicas) == (6, 6)
    assert fake.calls("PATCH", "/deployments/web-blue/scale")[-1].body == {"spec": {"replicas": 6}}
    scale_calls = len(fake.calls("PATCH", "/scale"))
    assert env.run(acts.scale_deployment, ScaleInput(ref=BLUE, replicas=6)).replicas == 6
    assert len(fake.calls("PATCH", "/scale")) == scale_calls  # no-op when equal
    assert env.run(acts.scale_deployment, ScaleInput(ref=BLUE, replicas=0)).replicas == 0

    raises(env, acts.scale_deployment, ScaleInput(ref=GREEN, replicas=1), errors.NOT_FOUND)
    assert env.run(acts.scale_deployment, ScaleInput(ref=GREEN, replicas=1, ignore_missing=True)).exists is False


def test_delete_is_idempotent(kube, acts, env):
    env.run(acts.apply_deployment, blue_apply())
    assert env.run(acts.delete_deployment, BLUE).model_dump() == {"deleted": True, "existed": True}
    assert env.run(acts.delete_deployment, BLUE).model_dump() == {"deleted": False, "existed": False}
    assert kube.fake.get("deployments", NS, "web-blue") is None


# ---------------------------------------------------------------------------------------------- rollout wait
def test_wait_rollout_succeeds_after_some_polls_and_heartbeats(kube, acts, env):
    fake, _ = kube
    fake.set_rollout(NS, "web-blue", 3)
    env.run(acts.apply_deployment, blue_apply())
    beats: list = []
    env.on_heartbeat = lambda *details: beats.append(details)
    state = env.run(acts.wait_rollout, WaitRolloutInput(ref=BLUE, deadline_seconds=10, poll_seconds=0.01))
    assert state.rolled_out and state.ready_replicas == 3
    assert len(beats) >= 1
    started = beats[0][0]
    assert all(b[0] == started for b in beats)  # the start time travels unchanged in every heartbeat


def test_wait_rollout_stuck_raises_deadline_exceeded(kube, acts, env):
    fake, _ = kube
    env.run(acts.apply_deployment, blue_apply())  # ready
    fake.set_rollout(NS, "web-blue", "stuck")
    env.run(acts.apply_deployment, blue_apply(image="shop/web:broken"))
    beats: list = []
    env.on_heartbeat = lambda *details: beats.append(details)
    t0 = time.monotonic()
    err = raises(env, acts.wait_rollout, WaitRolloutInput(ref=BLUE, deadline_seconds=0.3, poll_seconds=0.05), errors.DEADLINE_EXCEEDED)
    assert err.non_retryable
    assert 0.25 <= time.monotonic() - t0 < 3
    assert len(beats) >= 3
    assert "web-blue" in str(err) and "3 updated" in str(err)


def test_wait_rollout_deadline_counts_from_the_first_attempt(kube, acts):
    """A retried attempt finds the first attempt's start time in its heartbeat details: the clock does not restart."""
    import dataclasses

    fake, _ = kube
    fake.set_default_rollout("stuck")
    env = ActivityEnvironment()
    KubernetesActivities  # noqa: B018
    env.info = dataclasses.replace(env.info, heartbeat_details=[time.time() - 100], attempt=2)
    fake.put_object(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web-blue", "namespace": NS},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "a", "image": "i"}]}},
            },
        }
    )
    t0 = time.monotonic()
    err = raises(env, acts.wait_rollout, WaitRolloutInput(ref=BLUE, deadline_seconds=60, poll_seconds=5), errors.DEADLINE_EXCEEDED)
    assert time.monotonic() - t0 < 1  # already past the deadline: fails on the first poll
    assert "after 100s" in str(err)


def test_wait_rollout_missing_deployment_is_not_found(acts, env):
    raises(env, acts.wait_rollout, WaitRolloutInput(ref=GREEN, deadline_seconds=1, poll_seconds=0.01), errors.NOT_FOUND)


# ---------------------------------------------------------------------------------------------- services
def seed_service(fake, selector: dict) -> ServiceRef:
    fake.put_object(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web", "namespace": NS},
            "spec": {"selector": selector, "ports": [{"port": 80, "targetPort": 8080}]},
        }
    )
    return ServiceRef(namespace=NS, name="web")


def test_service_selector_switch_reads_back(kube, acts, env):
    fake, _ = kube
    ref = seed_service(fake, {"app": "web", "color": "blue", "track": "old"})
    assert env.run(acts.get_service_selector, ref).selector == {"app": "web", "color": "blue", "track": "old"}
    result = env.run(acts.set_service_selector, ServiceSelectorInput(ref=ref, selector={"app": "web", "color": "green"}))
    assert result.changed and result.previous["color"] == "blue" and result.current == {"app": "web", "color": "green"}
    assert fake.get("services", NS, "web")["spec"]["selector"] == {"app": "web", "color": "green"}
    patches = fake.calls("PATCH", "/services/web")
    assert len(patches) == 1  # one PATCH
    assert patches[0].body == {"spec": {"selector": {"track": None, "app": "web", "color": "green"}}}
    assert fake.get("services", NS, "web")["spec"]["ports"] == [{"port": 80, "targetPort": 8080}]

    again = env.run(acts.set_service_selector, ServiceSelectorInput(ref=ref, selector={"app": "web", "color": "green"}))
    assert not again.changed and len(fake.calls("PATCH", "/services/web")) == 1


def test_service_selector_verification_failure(kube, acts, env):
    """A mutating webhook (simulated: the fake answers the PATCH but stores nothing) makes the read-back differ."""
    fake, _ = kube
    ref = seed_service(fake, {"app": "web", "color": "blue"})
    original = fake._update

    def ignore_selector(key, current, new, dry_run, status_only):
        new["spec"]["selector"] = dict(current["spec"]["selector"])
        return original(key, current, new, dry_run, status_only)

    fake._update = ignore_selector
    try:
        err = raises(env, acts.set_service_selector, ServiceSelectorInput(ref=ref, selector={"app": "web", "color": "green"}), errors.VERIFICATION_FAILED)
    finally:
        del fake._update
    assert "color" in str(err)
    raises(env, acts.set_service_selector, ServiceSelectorInput(ref=ServiceRef(namespace=NS, name="nope"), selector={"a": "b"}), errors.NOT_FOUND)


# ---------------------------------------------------------------------------------------------- HTTPRoute
def seed_route(fake) -> HttpRouteRef:
    fake.put_object(
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": {"name": "web", "namespace": NS},
            "spec": {
                "parentRefs": [{"name": "public-gw", "namespace": "gateways"}],
                "hostnames": ["shop.example.com"],
                "rules": [
                    {"matches": [{"path": {"type": "PathPrefix", "value": "/api"}}], "backendRefs": [{"name": "api", "port": 80}]},
                    {
                        "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                        "backendRefs": [{"name": "web-stable", "port": 80, "weight": 100}, {"name": "web-canary", "port": 80}],
                    },
                ],
            },
        }
    )
    return HttpRouteRef(namespace=NS, name="web", rule_index=1)


def test_httproute_weights_are_absolute_and_keep_other_fields(kube, acts, env):
    fake, _ = kube
    ref = seed_route(fake)
    assert env.run(acts.get_httproute_weights, ref).weights == {"web-stable": 100, "web-canary": 1}  # omitted = 1
    result = env.run(acts.set_httproute_weights, HttpRouteWeightsInput(ref=ref, weights={"web-stable": 75, "web-canary": 25}))
    assert result.changed and result.weights == {"web-stable": 75, "web-canary": 25}
    route = fake.get("httproutes", NS, "web")
    assert route["spec"]["rules"][1]["backendRefs"] == [
        {"name": "web-stable", "port": 80, "weight": 75},
        {"name": "web-canary", "port": 80, "weight": 25},
    ]
    assert route["spec"]["rules"][0] == {"matches": [{"path": {"type": "PathPrefix", "value": "/api"}}], "backendRefs": [{"name": "api", "port": 80}]}
    assert route["spec"]["parentRefs"] and route["spec"]["hostnames"] == ["shop.example.com"]
    patch = fake.calls("PATCH", "/httproutes/web")[-1]
    assert patch.content_type.startswith("application/json-patch+json")

    writes = len(fake.calls("PATCH"))
    again = env.run(acts.set_httproute_weights, HttpRouteWeightsInput(ref=ref, weights={"web-stable": 75, "web-canary": 25}))
    assert not again.changed and len(fake.calls("PATCH")) == writes


def test_httproute_reordered_backends_are_reread(kube, acts, env):
    """The test op of the JSON patch catches a concurrent reorder; the activity re-reads and patches the right index."""
    fake, _ = kube
    ref = seed_route(fake)
    original = fake.handle
    swapped = []

    def reorder_once(method, path, query, content_type, body):
        if method == "PATCH" and not swapped:
            swapped.append(True)
            route = fake.objects[("httproutes", NS, "web")]
            route["spec"]["rules"][1]["backendRefs"].reverse()
        return original(method, path, query, content_type, body)

    fake.handle = reorder_once
    try:
        result = env.run(acts.set_httproute_weights, HttpRouteWeightsInput(ref=ref, weights={"web-stable": 10, "web-canary": 90}))
    finally:
        del fake.handle
    assert result.weights == {"web-canary": 90, "web-stable": 10}
    assert len(fake.calls("PATCH")) == 2


def test_httproute_bad_input(kube, acts, env):
    fake, _ = kube
    ref = seed_route(fake)
    raises(env, acts.set_httproute_weights, HttpRouteWeightsInput(ref=ref, weights={"web-green": 100}), errors.INVALID_INPUT)
    raises(env, acts.set_httproute_weights, HttpRouteWeightsInput(ref=ref, weights={"web-stable": -1}), errors.INVALID_INPUT)
    raises(env, acts.set_httproute_weights, HttpRouteWeightsInput(ref=ref, weights={"web-stable": 0, "web-canary": 0}), errors.INVALID_INPUT)
    raises(env, acts.get_httproute_weights, ref.model_copy(update={"rule_index": 5}), errors.INVALID_INPUT)
    raises(env, acts.get_httproute_weights, ref.model_copy(update={"name": "nope"}), errors.NOT_FOUND)


# ---------------------------------------------------------------------------------------------- namespaces
def team_spec(**kw) -> NamespaceSpec:
    base = dict(
        name="team-a",
        labels={"team": "a", "env": "staging"},
        resource_quota={"requests.cpu": "4", "requests.memory": "8Gi", "pods": "20"},
        limit_range={"default": {"cpu": "500m", "memory": "512Mi"}, "defaultRequest": {"cpu": "100m", "memory": "128Mi"}},
    )
    return NamespaceSpec(**{**base, **kw})


def test_namespace_guardrails_created_and_idempotent(kube, acts, env):
    fake, _ = kube
    result = env.run(acts.apply_namespace, team_spec())
    assert result.created
    assert result.objects == ["Namespace/team-a", "ResourceQuota/runbook-quota", "LimitRange/runbook-limits", "NetworkPolicy/default-deny"]
    ns = fake.get("namespaces", None, "team-a")
    assert ns["metadata"]["labels"]["team"] == "a" and ns["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "runbook-automation"
    assert fake.get("resourcequotas", "team-a", "runbook-quota")["spec"]["hard"] == {"requests.cpu": "4", "requests.memory": "8Gi", "pods": "20"}
    assert fake.get("limitranges", "team-a", "runbook-limits")["spec"]["limits"] == [
        {"type": "Container", "default": {"cpu": "500m", "memory": "512Mi"}, "defaultRequest": {"cpu": "100m", "memory": "128Mi"}}
    ]
    policy = fake.get("networkpolicies", "team-a", "default-deny")["spec"]
    assert policy == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}

    writes = len([r for r in fake.requests if r.method != "GET"])
    again = env.run(acts.apply_namespace, team_spec())
    assert not again.created and again.objects == []
    assert len([r for r in fake.requests if r.method != "GET"]) == writes


def test_namespace_drift_is_repaired(kube, acts, env):
    fake, _ = kube
    env.run(acts.apply_namespace, team_spec())
    # drift: someone opens the deny-all policy and raises the quota
    policy = fake.objects[("networkpolicies", "team-a", "default-deny")]
    policy["spec"]["ingress"] = [{"from": [{"namespaceSelector": {}}]}]
    fake.objects[("resourcequotas", "team-a", "runbook-quota")]["spec"]["hard"]["requests.cpu"] = "64"
    fake.objects[("resourcequotas", "team-a", "runbook-quota")]["spec"]["hard"]["services"] = "99"
    result = env.run(acts.apply_namespace, team_spec(resource_quota={"requests.cpu": "8"}))
    assert result.objects == ["ResourceQuota/runbook-quota", "NetworkPolicy/default-deny"]
    assert fake.get("resourcequotas", "team-a", "runbook-quota")["spec"]["hard"] == {"requests.cpu": "8"}
    assert "ingress" not in fake.get("networkpolicies", "team-a", "default-deny")["spec"]


def test_namespace_delete(kube, acts, env):
    fake, _ = kube
    env.run(acts.apply_namespace, team_spec())
    assert env.run(acts.delete_namespace, NamespaceRef(name="team-a")).model_dump() == {"deleted": True, "existed": True}
    assert fake.get("namespaces", None, "team-a") is None and fake.get("resourcequotas", "team-a", "runbook-quota") is None
    assert env.run(acts.delete_namespace, NamespaceRef(name="team-a")).model_dump() == {"deleted": False, "existed": False}


# ---------------------------------------------------------------------------------------------- error mapping
@pytest.mark.parametrize(
    "code, kind, retryable",
    [(403, errors.ACCESS_DENIED, False), (401, errors.ACCESS_DENIED, False), (500, errors.TRANSIENT, True), (503, errors.TRANSIENT, True), (422, errors.INVALID_INPUT, False)],
)
def test_api_errors_become_typed_application_errors(kube, acts, env, code, kind, retryable):
    fake, _ = kube
    fake.fail_next("GET", "/deployments/web-blue", code)
    err = raises(env, acts.get_deployment, BLUE, kind)
    assert err.non_retryable is (not retryable)


def test_conflict_on_create_is_resolved_by_rereading(kube, acts, env):
    """Someone else creates the deployment between our read and our POST: the 409 leads to a re-read and a patch."""
    fake, _ = kube
    fake.fail_next("POST", "/deployments", 409)
    state = env.run(acts.apply_deployment, blue_apply())
    # the injected 409 left nothing behind, so the second turn creates it
    assert state.exists and len(fake.calls("POST", "/deployments")) == 2


def test_unreachable_api_server_is_transient(env):
    from kubernetes import client

    configuration = client.Configuration()
    configuration.host = "http://127.0.0.1:9"  # discard port: connection refused
    configuration.retries = 0
    acts = KubernetesActivities(lambda context: client.ApiClient(configuration))
    err = raises(env, acts.get_deployment, BLUE, errors.TRANSIENT)
    assert not err.non_retryable and "cannot reach" in str(err)


def test_context_selects_the_cluster(kube, env):
    """The context name picks the ApiClient: two clusters, two fakes."""
    from tests.fakes.kubernetes import kube_fake

    fake, api = kube
    with kube_fake() as (dr_fake, dr_api):
        acts = KubernetesActivities(lambda context: {"primary": api, "dr": dr_api}[context])
        for f in (fake, dr_fake):
            f.put_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
        env.run(acts.apply_deployment, blue_apply(ref=BLUE.model_copy(update={"context": "dr"}), replicas=0))
        assert dr_fake.get("deployments", NS, "web-blue") is not None
        assert fake.get("deployments", NS, "web-blue") is None
