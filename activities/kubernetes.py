"""Kubernetes activities: deployments, service selectors, Gateway API HTTPRoute weights, namespace guardrails, and
batch/v1 Jobs run to their end (a release's ``job`` check).

``KubernetesActivities(api_client_for)`` receives a function from a kubeconfig context name (None = current
context, or in-cluster config) to a ``kubernetes.client.ApiClient``; the worker builds it (see
``api_client_factory``), tests hand in one pointed at the fake API server in ``tests/fakes/kubernetes.py``.

Every activity is synchronous (the official client blocks), idempotent (absolute replicas, weights and selectors;
create-or-patch) and reads back what it wrote. ``ApiException``s become typed ``ApplicationError``s:
404 -> NOT_FOUND, 401/403 -> ACCESS_DENIED, 422/400 -> INVALID_INPUT, 5xx/429/connection -> TRANSIENT (retried),
409 -> re-read and try again a few times, then TRANSIENT.
"""

from __future__ import annotations

import copy
import functools
import logging
import threading
import time
from typing import Any, Callable, TypeVar, overload

from temporalio import activity
from temporalio.exceptions import ApplicationError, CancelledError

from core import errors
from core.kubernetes import (
    LOG_TAIL_CHARS,
    LOG_TAIL_LINES,
    RESTARTED_AT,
    SECRET_SOURCE,
    DeleteResult,
    DeploymentApply,
    DeploymentRef,
    DeploymentState,
    HttpRouteRef,
    HttpRouteWeights,
    HttpRouteWeightsInput,
    JobOutcome,
    JobRunInput,
    NamespaceRef,
    NamespaceResult,
    NamespaceSpec,
    NamespaceState,
    RestartInput,
    ScaleInput,
    SecretFromVault,
    SecretRef,
    SecretRolloutState,
    SecretRolloutTarget,
    SecretWritten,
    ServiceRef,
    ServiceSelector,
    ServiceSelectorInput,
    ServiceSelectorResult,
    WaitRolloutInput,
)

log = logging.getLogger(__name__)

GATEWAY_GROUP, GATEWAY_VERSION, HTTPROUTES = "gateway.networking.k8s.io", "v1", "httproutes"
QUOTA_NAME, LIMITS_NAME, DENY_NAME = "runbook-quota", "runbook-limits", "default-deny"
MANAGED_BY = {"app.kubernetes.io/managed-by": "runbook-automation"}
FIELD_MANAGER = "runbook-automation"
MAX_WEIGHT = 1_000_000  # Gateway API backendRef weight limit
CONFLICT_ATTEMPTS = 5
JOB_TTL_SECONDS = 86400  # a finished check Job is left a day for people to read, then the cluster removes it

T = TypeVar("T")


def api_client_factory() -> Callable[[str | None], Any]:
    """The production factory: in-cluster config inside a pod, otherwise KUBECONFIG per context (cached)."""
    import os

    from kubernetes import client, config

    cache: dict[str | None, Any] = {}
    lock = threading.Lock()
    in_cluster = bool(os.environ.get("KUBERNETES_SERVICE_HOST")) and not os.environ.get("KUBECONFIG")

    def for_context(context: str | None) -> Any:
        with lock:
            if context not in cache:
                if in_cluster and context is None:
                    configuration = client.Configuration()
                    config.load_incluster_config(client_configuration=configuration)
                    cache[context] = client.ApiClient(configuration)
                else:
                    cache[context] = config.new_client_from_config(context=context)
            return cache[context]

    return for_context


class KubernetesActivities:
    def __init__(self, api_client_for: Callable[[str | None], Any], vault: Any = None) -> None:
        """``vault``: a ``VaultReader`` (activities/vault.py) for ``k8s_write_secret_from_vault``; None: that
        activity refuses (VAULT_ADDR unset on the worker)."""
        self._api_client_for = api_client_for
        self._vault = vault

    # ------------------------------------------------------------------ clients
    def _apps(self, context: str | None):
        from kubernetes import client

        return client.AppsV1Api(self._api_client_for(context))

    def _core(self, context: str | None):
        from kubernetes import client

        return client.CoreV1Api(self._api_client_for(context))

    def _networking(self, context: str | None):
        from kubernetes import client

        return client.NetworkingV1Api(self._api_client_for(context))

    def _batch(self, context: str | None):
        from kubernetes import client

        return client.BatchV1Api(self._api_client_for(context))

    def _custom(self, context: str | None):
        from kubernetes import client

        return client.CustomObjectsApi(self._api_client_for(context))

    def _to_dict(self, context: str | None, obj: Any) -> dict:
        if isinstance(obj, dict):
            return obj
        return self._api_client_for(context).sanitize_for_serialization(obj)

    # ------------------------------------------------------------------ deployments
    @activity.defn(name="k8s_get_deployment")
    def get_deployment(self, ref: DeploymentRef) -> DeploymentState:
        raw = self._read_deployment(ref)
        return _state(ref, raw)

    @activity.defn(name="k8s_apply_deployment")
    def apply_deployment(self, req: DeploymentApply) -> DeploymentState:
        ref = req.ref
        apps = self._apps(ref.context)
        selector = req.selector or req.labels
        if not selector:
            raise ApplicationError(
                f"deployment {_where(ref)}: give labels or a selector", type=errors.INVALID_INPUT, non_retryable=True
            )
        if any(req.labels.get(k) != v for k, v in selector.items()):
            raise ApplicationError(
                f"deployment {_where(ref)}: selector {selector} does not match the pod labels {req.labels}",
                type=errors.INVALID_INPUT,
                non_retryable=True,
            )
        template = self._template(req, selector)
        for _ in range(CONFLICT_ATTEMPTS):
            current = self._read_deployment(ref, missing_ok=True)
            if current is None:
                body = {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "metadata": {"name": ref.name, "namespace": ref.namespace, "labels": {**req.labels}},
                    "spec": {"replicas": req.replicas, "selector": {"matchLabels": selector}, "template": template},
                }
                try:
                    created = _call(
                        f"create deployment {_where(ref)}",
                        functools.partial(apps.create_namespaced_deployment, ref.namespace, body, field_manager=FIELD_MANAGER),
                        conflict_ok=True,
                    )
                except _Conflict:
                    continue  # someone created it meanwhile: patch it on the next turn
                log.info("created deployment %s (%s)", _where(ref), req.image)
                return _state(ref, self._to_dict(ref.context, created))
            live_selector = ((current.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
            if live_selector != selector:
                raise ApplicationError(
                    f"deployment {_where(ref)} has selector {live_selector}, wanted {selector}: a selector is "
                    "immutable; delete the deployment or use another name",
                    type=errors.INVALID_INPUT,
                    non_retryable=True,
                )
            patch = _deployment_patch(current, req, template)
            if patch is None:
                return _state(ref, current)  # already as wanted: no new generation, no rollout
            try:
                patched = _call(
                    f"patch deployment {_where(ref)}",
                    functools.partial(apps.patch_namespaced_deployment, ref.name, ref.namespace, patch,
                                      field_manager=FIELD_MANAGER),
                    conflict_ok=True,
                )
            except _Conflict:
                continue
            return _state(ref, self._to_dict(ref.context, patched))
        raise ApplicationError(
            f"deployment {_where(ref)} kept changing under us ({CONFLICT_ATTEMPTS} conflicts)", type=errors.TRANSIENT
        )

    def _template(self, req: DeploymentApply, selector: dict[str, str]) -> dict:
        """The wanted pod template: our own, or a copy of another deployment's with image and labels replaced."""
        if req.template_from is None:
            container: dict[str, Any] = {"name": req.container_name, "image": req.image}
            if req.container_port is not None:
                container["ports"] = [{"containerPort": req.container_port, "protocol": "TCP"}]
            return {"metadata": {"labels": dict(req.labels)}, "spec": {"containers": [container]}}
        source = self._read_deployment(req.template_from)
        template = copy.deepcopy((source.get("spec") or {}).get("template") or {})
        template.setdefault("metadata", {})["labels"] = dict(req.labels)
        containers = template.setdefault("spec", {}).get("containers") or []
        target = next((c for c in containers if c.get("name") == req.container_name), None)
        if target is None:
            if len(containers) != 1:
                names = [c.get("name") for c in containers]
                raise ApplicationError(
                    f"deployment {_where(req.template_from)} has no container {req.container_name!r} (has {names})",
                    type=errors.INVALID_INPUT,
                    non_retryable=True,
                )
            target = containers[0]
        target["image"] = req.image
        if req.container_port is not None:
            target["ports"] = [{"containerPort": req.container_port, "protocol": "TCP"}]
        return template

    @activity.defn(name="k8s_scale_deployment")
    def scale_deployment(self, req: ScaleInput) -> DeploymentState:
        ref = req.ref
        current = self._read_deployment(ref, missing_ok=req.ignore_missing)
        if current is None:
            return DeploymentState(exists=False, name=ref.name, namespace=ref.namespace)
        if int((current.get("spec") or {}).get("replicas", 1)) == req.replicas:
            return _state(ref, current)
        apps = self._apps(ref.context)
        try:
            _call(
                f"scale deployment {_where(ref)} to {req.replicas}",
                lambda: apps.patch_namespaced_deployment_scale(
                    ref.name, ref.namespace, {"spec": {"replicas": req.replicas}}, field_manager=FIELD_MANAGER
                ),
            )
        except ApplicationError as err:
            if err.type == errors.NOT_FOUND and req.ignore_missing:
                return DeploymentState(exists=False, name=ref.name, namespace=ref.namespace)
            raise
        return _state(ref, self._read_deployment(ref))

    @activity.defn(name="k8s_wait_rollout")
    def wait_rollout(self, req: WaitRolloutInput) -> DeploymentState:
        """Poll until the rollout is complete; the deadline counts from the first attempt (kept in heartbeats)."""
        details = activity.info().heartbeat_details
        started = float(details[0]) if details else time.time()
        polls = 0
        while True:
            state = _state(req.ref, self._read_deployment(req.ref))
            polls += 1
            if state.rolled_out:
                return state
            elapsed = time.time() - started
            activity.heartbeat(started, state.model_dump(include={"replicas", "ready_replicas", "updated_replicas"}))
            if elapsed >= req.deadline_seconds:
                raise ApplicationError(
                    f"deployment {_where(req.ref)} not rolled out after {elapsed:.0f}s "
                    f"(deadline {req.deadline_seconds:.0f}s): {state.ready_replicas}/{state.replicas} ready, "
                    f"{state.updated_replicas} updated, {state.available_replicas} available, observed generation "
                    f"{state.observed_generation}/{state.generation}",
                    type=errors.DEADLINE_EXCEEDED,
                    non_retryable=True,
                )
            wait = min(req.poll_seconds, max(req.deadline_seconds - elapsed, 0.0))
            activity.wait_for_cancelled_sync(wait)  # returns None: ask whether it was a cancellation
            if activity.is_cancelled():
                activity.logger.info("rollout wait for %s cancelled after %d polls", _where(req.ref), polls)
                raise ApplicationError("cancelled", type="Cancelled", non_retryable=True)

    @activity.defn(name="k8s_delete_deployment")
    def delete_deployment(self, ref: DeploymentRef) -> DeleteResult:
        apps = self._apps(ref.context)
        try:
            _call(f"delete deployment {_where(ref)}", lambda: apps.delete_namespaced_deployment(ref.name, ref.namespace))
        except ApplicationError as err:
            if err.type == errors.NOT_FOUND:
                return DeleteResult(deleted=False, existed=False)
            raise
        return DeleteResult(deleted=True, existed=True)

    @overload
    def _read_deployment(self, ref: DeploymentRef) -> dict: ...
    @overload
    def _read_deployment(self, ref: DeploymentRef, missing_ok: bool) -> dict | None: ...
    def _read_deployment(self, ref: DeploymentRef, missing_ok: bool = False) -> dict | None:
        apps = self._apps(ref.context)
        try:
            raw = _call(f"read deployment {_where(ref)}", lambda: apps.read_namespaced_deployment(ref.name, ref.namespace))
        except ApplicationError as err:
            if missing_ok and err.type == errors.NOT_FOUND:
                return None
            raise
        return self._to_dict(ref.context, raw)

    @activity.defn(name="k8s_restart_deployment")
    def restart_deployment(self, req: RestartInput) -> DeploymentState:
        """A rolling restart (``kubectl rollout restart``): the pod template's restartedAt annotation set to the
        caller's value; already that value (a retry): nothing written, no new rollout."""
        ref = req.ref
        current = self._read_deployment(ref)
        annotations = ((((current.get("spec") or {}).get("template") or {}).get("metadata") or {})
                       .get("annotations") or {})
        if annotations.get(RESTARTED_AT) == req.restarted_at:
            return _state(ref, current)
        apps = self._apps(ref.context)
        patch = {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: req.restarted_at}}}}}
        patched = _call(f"restart deployment {_where(ref)}", functools.partial(
            apps.patch_namespaced_deployment, ref.name, ref.namespace, patch, field_manager=FIELD_MANAGER))
        return _state(ref, self._to_dict(ref.context, patched))

    # ------------------------------------------------------------------ secrets (rotate-secret)
    @activity.defn(name="k8s_secret_rollout_target")
    def secret_rollout_target(self, req: SecretRolloutTarget) -> SecretRolloutState:
        """Read-only: does the Secret exist (its type, the Vault version it was written from), which of the
        consumer Deployments do not exist."""
        live = self._read_secret(req.secret)
        missing = [name for name in req.deployments if self._read_deployment(
            DeploymentRef(context=req.secret.context, namespace=req.secret.namespace, name=name), missing_ok=True) is None]
        if live is None:
            return SecretRolloutState(secret_exists=False, missing_deployments=missing)
        return SecretRolloutState(secret_exists=True, secret_type=live.get("type") or "Opaque",
                                  source=((live.get("metadata") or {}).get("annotations") or {}).get(SECRET_SOURCE, ""),
                                  missing_deployments=missing)

    @activity.defn(name="k8s_write_secret_from_vault")
    def write_secret_from_vault(self, req: SecretFromVault) -> SecretWritten:
        """Write the Secret from one Vault KV version: created if missing, replaced (optimistic concurrency on its
        resourceVersion) if its data differ, untouched if equal (idempotent).

        The one Kubernetes activity that reads Vault: it is handed a Vault *reference* (path and version) and
        resolves it here, as Terraform's activities resolve their variables, so that the secret value goes from
        Vault into the Secret without ever passing through a workflow's input, result or history. It answers with
        the reference only."""
        import base64

        if self._vault is None:
            raise ApplicationError("cannot write a Secret from Vault: VAULT_ADDR is not set on this worker",
                                   type=errors.INVALID_INPUT, non_retryable=True)
        values = self._vault.read_kv(req.source_path, version=req.source_version)
        absent = sorted(field for field in req.keys.values() if not values.get(field))
        if absent:
            raise ApplicationError(f"Vault {req.source_path} v{req.source_version} has no {', '.join(absent)} (keys: "
                                   f"{sorted(values)})", type=errors.INVALID_INPUT, non_retryable=True)
        data = {key: base64.b64encode(values[field].encode()).decode() for key, field in req.keys.items()}
        source = f"{req.source_path} v{req.source_version}"
        ref, core = req.ref, self._core(req.ref.context)
        for _ in range(CONFLICT_ATTEMPTS):
            live = self._read_secret(ref)
            if live is None:
                body = {"apiVersion": "v1", "kind": "Secret", "type": req.type, "data": data,
                        "metadata": {"name": ref.name, "namespace": ref.namespace, "labels": dict(MANAGED_BY),
                                     "annotations": {SECRET_SOURCE: source}}}
                try:
                    _call(f"create secret {_where(ref)}", functools.partial(
                        core.create_namespaced_secret, ref.namespace, body, field_manager=FIELD_MANAGER), conflict_ok=True)
                except _Conflict:
                    continue
                return SecretWritten(ref=ref, source=source, created=True, changed=True)
            if (live.get("type") or "Opaque") != req.type:
                raise ApplicationError(f"secret {_where(ref)} is of type {live.get('type')}, not {req.type} (a type "
                                       "cannot change: recreate it)", type=errors.INVALID_INPUT, non_retryable=True)
            annotations = (live.get("metadata") or {}).get("annotations") or {}
            if live.get("data") == data and annotations.get(SECRET_SOURCE) == source:
                return SecretWritten(ref=ref, source=source, changed=False)
            replacement: dict[str, Any] = copy.deepcopy(live)
            replacement["data"] = data
            replacement.pop("stringData", None)
            replacement["metadata"].setdefault("annotations", {})[SECRET_SOURCE] = source
            try:
                _call(f"replace secret {_where(ref)}", functools.partial(
                    core.replace_namespaced_secret, ref.name, ref.namespace, replacement, field_manager=FIELD_MANAGER),
                    conflict_ok=True)
            except _Conflict:
                continue  # changed under us: read again
            return SecretWritten(ref=ref, source=source, changed=True)
        raise ApplicationError(f"secret {_where(ref)} kept changing under us ({CONFLICT_ATTEMPTS} conflicts)",
                               type=errors.TRANSIENT)

    def _read_secret(self, ref: SecretRef) -> dict | None:
        core = self._core(ref.context)
        try:
            return self._to_dict(ref.context, _call(f"read secret {_where(ref)}",
                                                    lambda: core.read_namespaced_secret(ref.name, ref.namespace)))
        except ApplicationError as err:
            if err.type == errors.NOT_FOUND:
                return None
            raise

    # ------------------------------------------------------------------ services
    @activity.defn(name="k8s_get_service_selector")
    def get_service_selector(self, ref: ServiceRef) -> ServiceSelector:
        return ServiceSelector(selector=self._read_selector(ref))

    @activity.defn(name="k8s_set_service_selector")
    def set_service_selector(self, req: ServiceSelectorInput) -> ServiceSelectorResult:
        ref = req.ref
        if not req.selector:
            raise ApplicationError(
                f"service {_where(ref)}: an empty selector would select nothing we manage; refusing",
                type=errors.INVALID_INPUT,
                non_retryable=True,
            )
        previous = self._read_selector(ref)
        if previous == req.selector:
            return ServiceSelectorResult(previous=previous, current=previous, changed=False)
        # one strategic-merge PATCH: new values set, keys we no longer want removed (null)
        patch_selector: dict[str, Any] = {k: None for k in previous if k not in req.selector}
        patch_selector.update(req.selector)
        core = self._core(ref.context)
        _call(
            f"switch the selector of service {_where(ref)}",
            lambda: core.patch_namespaced_service(
                ref.name, ref.namespace, {"spec": {"selector": patch_selector}}, field_manager=FIELD_MANAGER
            ),
        )
        current = self._read_selector(ref)
        if current != req.selector:
            raise ApplicationError(
                f"service {_where(ref)} selector reads back {current}, wanted {req.selector}",
                type=errors.VERIFICATION_FAILED,
                non_retryable=True,
            )
        return ServiceSelectorResult(previous=previous, current=current, changed=True)

    def _read_selector(self, ref: ServiceRef) -> dict[str, str]:
        core = self._core(ref.context)
        raw = self._to_dict(
            ref.context, _call(f"read service {_where(ref)}", lambda: core.read_namespaced_service(ref.name, ref.namespace))
        )
        return dict((raw.get("spec") or {}).get("selector") or {})

    # ------------------------------------------------------------------ Gateway API HTTPRoute
    @activity.defn(name="k8s_get_httproute_weights")
    def get_httproute_weights(self, ref: HttpRouteRef) -> HttpRouteWeights:
        route = self._read_route(ref)
        return HttpRouteWeights(weights=_weights(_route_rule(ref, route)))

    @activity.defn(name="k8s_set_httproute_weights")
    def set_httproute_weights(self, req: HttpRouteWeightsInput) -> HttpRouteWeights:
        ref = req.ref
        for name, weight in req.weights.items():
            if not 0 <= weight <= MAX_WEIGHT:
                raise ApplicationError(
                    f"HTTPRoute {_where(ref)}: weight {weight} for {name} is outside 0..{MAX_WEIGHT}",
                    type=errors.INVALID_INPUT,
                    non_retryable=True,
                )
        if req.weights and sum(req.weights.values()) == 0:
            raise ApplicationError(
                f"HTTPRoute {_where(ref)}: all weights 0 would drop every request", type=errors.INVALID_INPUT, non_retryable=True
            )
        custom = self._custom(ref.context)
        for _ in range(CONFLICT_ATTEMPTS):
            route = self._read_route(ref)
            refs = _route_rule(ref, route).get("backendRefs") or []
            names = [r.get("name") for r in refs]
            unknown = sorted(set(req.weights) - set(names))
            if unknown:
                raise ApplicationError(
                    f"HTTPRoute {_where(ref)} rule {ref.rule_index} has no backendRef {unknown} (has {names})",
                    type=errors.INVALID_INPUT,
                    non_retryable=True,
                )
            ops: list[dict] = []
            for index, backend in enumerate(refs):
                name = backend.get("name")
                if name in req.weights and backend.get("weight", 1) != req.weights[name]:
                    base = f"/spec/rules/{ref.rule_index}/backendRefs/{index}"
                    # the test op pins the backend at that index: a concurrent reorder fails the patch, not us
                    ops.append({"op": "test", "path": f"{base}/name", "value": name})
                    ops.append({"op": "add", "path": f"{base}/weight", "value": req.weights[name]})
            if not ops:
                return HttpRouteWeights(weights=_weights(_route_rule(ref, route)), changed=False)
            try:
                _call(
                    f"set weights on HTTPRoute {_where(ref)}",
                    functools.partial(
                        custom.patch_namespaced_custom_object,
                        GATEWAY_GROUP,
                        GATEWAY_VERSION,
                        ref.namespace,
                        HTTPROUTES,
                        ref.name,
                        ops,
                        field_manager=FIELD_MANAGER,
                        _content_type="application/json-patch+json",
                    ),
                    conflict_ok=True,
                    test_failed_is_conflict=True,
                )
            except _Conflict:
                continue
            current = _weights(_route_rule(ref, self._read_route(ref)))
            if any(current.get(name) != weight for name, weight in req.weights.items()):
                raise ApplicationError(
                    f"HTTPRoute {_where(ref)} weights read back {current}, wanted {req.weights}",
                    type=errors.VERIFICATION_FAILED,
                    non_retryable=True,
                )
            return HttpRouteWeights(weights=current, changed=True)
        raise ApplicationError(
            f"HTTPRoute {_where(ref)} kept changing under us ({CONFLICT_ATTEMPTS} conflicts)", type=errors.TRANSIENT
        )

    def _read_route(self, ref: HttpRouteRef) -> dict:
        custom = self._custom(ref.context)
        return self._to_dict(
            ref.context,
            _call(
                f"read HTTPRoute {_where(ref)}",
                lambda: custom.get_namespaced_custom_object(GATEWAY_GROUP, GATEWAY_VERSION, ref.namespace, HTTPROUTES, ref.name),
            ),
        )

    # ------------------------------------------------------------------ batch/v1 Jobs
    @activity.defn(name="k8s_run_job")
    def run_job(self, req: JobRunInput) -> JobOutcome:
        """Create the Job unless it exists (its name is deterministic: a retried attempt finds the one an earlier
        attempt created, never a second), then poll it, heartbeating, until its Complete or Failed condition, or
        until its deadline has passed (NotFinished). The outcome carries the tail of its pod's log. Cancelled, the
        Job is deleted (with its pods) so nothing keeps running for a check nobody waits for."""
        try:
            return self._run_job(req)
        except CancelledError:  # raised into the thread wherever it is (a worker set up to do so, or tests)
            self._delete_job(req)
            raise

    def _run_job(self, req: JobRunInput) -> JobOutcome:
        where = f"{req.namespace}/{req.name}"
        details = activity.info().heartbeat_details
        started = float(details[0]) if details else time.time()
        live, created = self._ensure_job(req)
        grace = 30.0  # the cluster enforces activeDeadlineSeconds; the wait gives it this long to say Failed
        while True:
            condition, reason, message = _job_condition(live)
            if condition is not None:
                pod, tail = self._job_log(req)
                return JobOutcome(name=req.name, namespace=req.namespace, succeeded=condition == "Complete",
                                  condition=condition, reason=reason, message=message, created=created, pod=pod,
                                  log_tail=tail)
            elapsed = time.time() - started
            status = live.get("status") or {}
            activity.heartbeat(started, {k: status.get(k) for k in ("active", "succeeded", "failed")})
            if elapsed >= req.deadline_seconds + grace:
                pod, tail = self._job_log(req)
                return JobOutcome(name=req.name, namespace=req.namespace, succeeded=False, condition="NotFinished",
                                  reason="DeadlineExceeded",
                                  message=f"not finished {elapsed:.0f}s after the wait began (deadline "
                                          f"{req.deadline_seconds:.0f}s)", created=created, pod=pod, log_tail=tail)
            activity.wait_for_cancelled_sync(min(req.poll_seconds, max(req.deadline_seconds + grace - elapsed, 0.0)))
            if activity.is_cancelled():
                self._delete_job(req)
                raise ApplicationError(f"job {where}: cancelled; the Job was deleted", type="Cancelled",
                                       non_retryable=True)
            again = self._read_job(req)
            if again is None:
                raise ApplicationError(f"job {where} disappeared while it ran (deleted by someone else)",
                                       type=errors.NOT_FOUND, non_retryable=True)
            live = again

    def _ensure_job(self, req: JobRunInput) -> tuple[dict, bool]:
        where = f"{req.namespace}/{req.name}"
        batch = self._batch(req.context)
        labels = {**req.labels, **MANAGED_BY}
        container: dict[str, Any] = {"name": "check", "image": req.image}
        if req.command:
            container["command"] = list(req.command)
        if req.args:
            container["args"] = list(req.args)
        body = {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": req.name, "namespace": req.namespace, "labels": labels,
                         "annotations": dict(req.annotations)},
            "spec": {
                "backoffLimit": req.backoff_limit,
                "activeDeadlineSeconds": max(1, int(req.deadline_seconds + 0.999)),
                "ttlSecondsAfterFinished": JOB_TTL_SECONDS,
                "template": {"metadata": {"labels": labels},
                             "spec": {"restartPolicy": "Never", "containers": [container]}},
            },
        }
        for _ in range(CONFLICT_ATTEMPTS):
            live = self._read_job(req)
            if live is not None:
                containers = (((live.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers") or []
                images = [c.get("image") for c in containers]
                if images != [req.image]:
                    raise ApplicationError(
                        f"job {where} exists with image(s) {images}, not {req.image}: not this check's Job; "
                        "delete it or rename the check", type=errors.INVALID_INPUT, non_retryable=True)
                return live, False
            try:
                created = _call(f"create job {where}",
                                functools.partial(batch.create_namespaced_job, req.namespace, body,
                                                  field_manager=FIELD_MANAGER),
                                conflict_ok=True)
            except _Conflict:
                continue  # an earlier attempt's create landed meanwhile: read it on the next turn
            log.info("created job %s (%s)", where, req.image)
            return self._to_dict(req.context, created), True
        raise ApplicationError(f"job {where} kept changing under us", type=errors.TRANSIENT)

    def _read_job(self, req: JobRunInput) -> dict | None:
        batch = self._batch(req.context)
        try:
            raw = _call(f"read job {req.namespace}/{req.name}",
                        lambda: batch.read_namespaced_job(req.name, req.namespace))
        except ApplicationError as err:
            if err.type == errors.NOT_FOUND:
                return None
            raise
        return self._to_dict(req.context, raw)

    def _delete_job(self, req: JobRunInput) -> None:
        batch = self._batch(req.context)
        try:
            _call(f"delete job {req.namespace}/{req.name}",
                  lambda: batch.delete_namespaced_job(req.name, req.namespace, propagation_policy="Background"))
        except ApplicationError as err:
            if err.type != errors.NOT_FOUND:
                log.warning("job %s/%s not deleted after a cancel: %s", req.namespace, req.name, err)

    def _job_log(self, req: JobRunInput) -> tuple[str | None, str]:
        """The newest pod of the Job and the tail of its log; a log that cannot be read is said so, not an error."""
        core = self._core(req.context)
        try:
            pods = self._to_dict(req.context, _call(
                f"list pods of job {req.namespace}/{req.name}",
                lambda: core.list_namespaced_pod(req.namespace, label_selector=f"job-name={req.name}")))
            items = sorted(pods.get("items") or [],
                           key=lambda p: ((p.get("metadata") or {}).get("creationTimestamp") or "",
                                          (p.get("metadata") or {}).get("name") or ""))
            if not items:
                return None, ""
            pod = items[-1]["metadata"]["name"]
            text = _call(f"read the log of pod {req.namespace}/{pod}",
                         lambda: core.read_namespaced_pod_log(pod, req.namespace, tail_lines=LOG_TAIL_LINES))
        except ApplicationError as err:
            return None, f"(log not readable: {err.message})"
        lines = str(text or "").splitlines()[-LOG_TAIL_LINES:]
        return pod, "\n".join(lines)[-LOG_TAIL_CHARS:]

    # ------------------------------------------------------------------ namespaces
    @activity.defn(name="k8s_apply_namespace")
    def apply_namespace(self, spec: NamespaceSpec) -> NamespaceResult:
        core, net, ctx = self._core(spec.context), self._networking(spec.context), spec.context
        ns = spec.name
        labels = {**spec.labels, **MANAGED_BY}
        objects: list[str] = []
        created = self._upsert(
            ctx,
            f"namespace {ns}",
            read=lambda: core.read_namespace(ns),
            create=lambda: core.create_namespace({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": labels}}),
            patch=lambda: core.patch_namespace(ns, {"metadata": {"labels": labels}}, field_manager=FIELD_MANAGER),
            wanted=lambda live: all((live.get("metadata", {}).get("labels") or {}).get(k) == v for k, v in labels.items()),
            changed=objects,
            label=f"Namespace/{ns}",
        )
        if spec.resource_quota:
            body = {
                "apiVersion": "v1",
                "kind": "ResourceQuota",
                "metadata": {"name": QUOTA_NAME, "namespace": ns, "labels": MANAGED_BY},
                "spec": {"hard": dict(spec.resource_quota)},
            }
            self._upsert(
                ctx,
                f"resource quota {ns}/{QUOTA_NAME}",
                read=lambda: core.read_namespaced_resource_quota(QUOTA_NAME, ns),
                create=lambda: core.create_namespaced_resource_quota(ns, body),
                # $patch: replace on hard so limits removed from the spec go away too
                patch=lambda: core.patch_namespaced_resource_quota(
                    QUOTA_NAME, ns, {"spec": {"hard": {"$patch": "replace", **spec.resource_quota}}}, field_manager=FIELD_MANAGER
                ),
                wanted=lambda live: _quantities_equal((live.get("spec") or {}).get("hard") or {}, spec.resource_quota),
                changed=objects,
                label=f"ResourceQuota/{QUOTA_NAME}",
            )
        if spec.limit_range:
            item = {"type": "Container", **{k: dict(v) for k, v in spec.limit_range.items()}}
            body = {
                "apiVersion": "v1",
                "kind": "LimitRange",
                "metadata": {"name": LIMITS_NAME, "namespace": ns, "labels": MANAGED_BY},
                "spec": {"limits": [item]},
            }
            self._upsert(
                ctx,
                f"limit range {ns}/{LIMITS_NAME}",
                read=lambda: core.read_namespaced_limit_range(LIMITS_NAME, ns),
                create=lambda: core.create_namespaced_limit_range(ns, body),
                patch=lambda: core.patch_namespaced_limit_range(
                    LIMITS_NAME, ns, {"spec": {"limits": [item]}}, field_manager=FIELD_MANAGER
                ),
                wanted=lambda live: _limits_equal((live.get("spec") or {}).get("limits") or [], item),
                changed=objects,
                label=f"LimitRange/{LIMITS_NAME}",
            )
        if spec.default_deny:
            policy_spec = {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
            body = {
                "apiVersion": "networking.k8s.io/v1",
                "kind": "NetworkPolicy",
                "metadata": {"name": DENY_NAME, "namespace": ns, "labels": MANAGED_BY},
                "spec": policy_spec,
            }
            self._upsert(
                ctx,
                f"network policy {ns}/{DENY_NAME}",
                read=lambda: net.read_namespaced_network_policy(DENY_NAME, ns),
                create=lambda: net.create_namespaced_network_policy(ns, body),
                # drop any ingress/egress allow rules someone added to the deny-all policy
                patch=lambda: net.patch_namespaced_network_policy(
                    DENY_NAME, ns, {"spec": {**policy_spec, "ingress": None, "egress": None}}, field_manager=FIELD_MANAGER
                ),
                wanted=lambda live: _deny_all((live.get("spec") or {})),
                changed=objects,
                label=f"NetworkPolicy/{DENY_NAME}",
            )
        return NamespaceResult(created=created, objects=objects)

    @activity.defn(name="k8s_get_namespace")
    def get_namespace(self, ref: NamespaceRef) -> NamespaceState:
        """Read-only: does the namespace exist (and its labels)."""
        core = self._core(ref.context)
        try:
            live = self._to_dict(ref.context, _call(f"read namespace {_where(ref)}", lambda: core.read_namespace(ref.name)))
        except ApplicationError as err:
            if err.type == errors.NOT_FOUND:
                return NamespaceState(exists=False)
            raise
        return NamespaceState(exists=True, labels=(live.get("metadata") or {}).get("labels") or {})

    @activity.defn(name="k8s_delete_namespace")
    def delete_namespace(self, ref: NamespaceRef) -> DeleteResult:
        core = self._core(ref.context)
        try:
            _call(f"delete namespace {ref.name}", lambda: core.delete_namespace(ref.name))
        except ApplicationError as err:
            if err.type == errors.NOT_FOUND:
                return DeleteResult(deleted=False, existed=False)
            raise
        return DeleteResult(deleted=True, existed=True)

    def _upsert(
        self,
        context: str | None,
        what: str,
        *,
        read: Callable[[], Any],
        create: Callable[[], Any],
        patch: Callable[[], Any],
        wanted: Callable[[dict], bool],
        changed: list[str],
        label: str,
    ) -> bool:
        """Create if missing, patch if different, nothing if already so. Returns True when created."""
        for _ in range(CONFLICT_ATTEMPTS):
            try:
                live = self._to_dict(context, _call(f"read {what}", read))
            except ApplicationError as err:
                if err.type != errors.NOT_FOUND:
                    raise
                try:
                    _call(f"create {what}", create, conflict_ok=True)
                except _Conflict:
                    continue  # created meanwhile: compare and patch
                changed.append(label)
                return True
            if not wanted(live):
                _call(f"update {what}", patch)
                changed.append(label)
            return False
        raise ApplicationError(f"{what} kept changing under us", type=errors.TRANSIENT)


# ---------------------------------------------------------------------- helpers (pure)
class _Conflict(Exception):
    pass


def _where(ref: Any) -> str:
    ctx = f"{ref.context}:" if getattr(ref, "context", None) else ""
    ns = getattr(ref, "namespace", None)
    return f"{ctx}{ns}/{ref.name}" if ns else f"{ctx}{ref.name}"


def _call(what: str, fn: Callable[[], T], *, conflict_ok: bool = False, test_failed_is_conflict: bool = False) -> T:
    """Run one API call, turning client failures into typed ApplicationErrors (or _Conflict when asked)."""
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError as Urllib3Error

    try:
        return fn()
    except ApiException as err:
        status = int(err.status or 0)
        message = _status_message(err)
        if status == 409 and conflict_ok:
            raise _Conflict(message) from None
        if status == 422 and test_failed_is_conflict and "test operation failed" in message:
            raise _Conflict(message) from None
        if status == 404:
            raise ApplicationError(f"{what}: not found ({message})", type=errors.NOT_FOUND, non_retryable=True) from None
        if status in (401, 403):
            raise ApplicationError(
                f"{what}: access denied ({status}: {message}); check the worker's kubeconfig / RBAC",
                type=errors.ACCESS_DENIED,
                non_retryable=True,
            ) from None
        if status in (400, 415, 422):
            raise ApplicationError(f"{what}: rejected as invalid ({message})", type=errors.INVALID_INPUT, non_retryable=True) from None
        if status == 409:
            raise ApplicationError(f"{what}: conflict ({message})", type=errors.TRANSIENT) from None
        raise ApplicationError(f"{what}: API server answered {status} ({message})", type=errors.TRANSIENT) from None
    except (Urllib3Error, OSError) as err:
        raise ApplicationError(f"{what}: cannot reach the API server ({type(err).__name__}: {err})", type=errors.TRANSIENT) from None


def _status_message(err: Any) -> str:
    import json

    try:
        body = json.loads(err.body or "")
        return str(body.get("message") or err.reason)
    except (ValueError, AttributeError, TypeError):
        return str(err.reason or err.status)


def _state(ref: DeploymentRef, raw: dict) -> DeploymentState:
    meta, spec, status = raw.get("metadata") or {}, raw.get("spec") or {}, raw.get("status") or {}
    template = spec.get("template") or {}
    containers = (template.get("spec") or {}).get("containers") or []
    return DeploymentState(
        exists=True,
        name=meta.get("name", ref.name),
        namespace=meta.get("namespace", ref.namespace),
        replicas=int(spec.get("replicas", 1) if spec.get("replicas") is not None else 1),
        ready_replicas=int(status.get("readyReplicas") or 0),
        updated_replicas=int(status.get("updatedReplicas") or 0),
        available_replicas=int(status.get("availableReplicas") or 0),
        total_replicas=int(status.get("replicas") or 0),
        image=containers[0].get("image") if containers else None,
        labels=dict((template.get("metadata") or {}).get("labels") or {}),
        selector=dict((spec.get("selector") or {}).get("matchLabels") or {}),
        generation=int(meta.get("generation") or 0),
        observed_generation=int(status.get("observedGeneration") or 0),
    )


def _deployment_patch(current: dict, req: DeploymentApply, template: dict) -> dict | None:
    """The strategic-merge patch that brings ``current`` to the wanted state, or None when it is already so."""
    spec = current.get("spec") or {}
    live_template = spec.get("template") or {}
    live_labels = (live_template.get("metadata") or {}).get("labels") or {}
    live_containers = {c.get("name"): c for c in (live_template.get("spec") or {}).get("containers") or []}
    wanted_containers = (template.get("spec") or {}).get("containers") or []
    wanted_labels = (template.get("metadata") or {}).get("labels") or {}
    live_meta_labels = (current.get("metadata") or {}).get("labels") or {}

    patch: dict[str, Any] = {}
    if int(spec.get("replicas", 1)) != req.replicas:
        patch.setdefault("spec", {})["replicas"] = req.replicas
    if live_labels != wanted_labels:
        labels_patch: dict[str, Any] = {k: None for k in live_labels if k not in wanted_labels}
        labels_patch.update(wanted_labels)
        patch.setdefault("spec", {}).setdefault("template", {})["metadata"] = {"labels": labels_patch}
    if any(live_meta_labels.get(k) != v for k, v in req.labels.items()):
        patch["metadata"] = {"labels": dict(req.labels)}
    container_patches = []
    for wanted in wanted_containers:
        live = live_containers.get(wanted.get("name"))
        if live is None:
            container_patches.append(wanted)
            continue
        diff = {"name": wanted["name"]}
        if live.get("image") != wanted.get("image"):
            diff["image"] = wanted["image"]
        if "ports" in wanted and [p.get("containerPort") for p in live.get("ports") or []] != [
            p.get("containerPort") for p in wanted["ports"]
        ]:
            diff["ports"] = wanted["ports"]
        if len(diff) > 1:
            container_patches.append(diff)
    if container_patches:
        patch.setdefault("spec", {}).setdefault("template", {}).setdefault("spec", {})["containers"] = container_patches
    return patch or None


def _job_condition(job: dict) -> tuple[str | None, str, str]:
    """(Complete | Failed | None while it runs, reason, message) from the Job's status conditions."""
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("type") in ("Complete", "Failed") and condition.get("status") == "True":
            return condition["type"], str(condition.get("reason") or ""), str(condition.get("message") or "")
    return None, "", ""


def _route_rule(ref: HttpRouteRef, route: dict) -> dict:
    rules = (route.get("spec") or {}).get("rules") or []
    if ref.rule_index >= len(rules):
        raise ApplicationError(
            f"HTTPRoute {_where(ref)} has {len(rules)} rule(s); rule {ref.rule_index} does not exist",
            type=errors.INVALID_INPUT,
            non_retryable=True,
        )
    return rules[ref.rule_index]


def _weights(rule: dict) -> dict[str, int]:
    # Gateway API: an omitted weight means 1
    return {r.get("name"): int(r.get("weight", 1)) for r in rule.get("backendRefs") or []}


def _quantities_equal(live: dict, wanted: dict) -> bool:
    return {k: str(v) for k, v in live.items()} == {k: str(v) for k, v in wanted.items()}


def _limits_equal(live: list, item: dict) -> bool:
    return len(live) == 1 and {k: v for k, v in live[0].items() if v is not None} == item


def _deny_all(spec: dict) -> bool:
    return (
        spec.get("podSelector") in ({}, None)
        and sorted(spec.get("policyTypes") or []) == ["Egress", "Ingress"]
        and not spec.get("ingress")
        and not spec.get("egress")
    )
