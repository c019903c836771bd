"""A small Kubernetes API server that speaks the real REST JSON, for tests of code using the official client.

It is not a cluster: there is no controller, scheduler or admission chain. It stores objects, bumps
``resourceVersion`` and ``metadata.generation``, answers 404/409/422 with ``Status`` objects, honours
``dryRun=All``, applies the three patch types the official client sends (strategic merge for dict bodies on
built-in kinds, JSON merge patch for custom objects, JSON patch for list bodies), and plays a Deployment
controller whose rollout progress the test controls:

- ``"ready"`` (default): status is ready at once (ready = updated = available = spec.replicas,
  observedGeneration = generation);
- ``"stuck"``: the controller observes the spec but no new pod ever becomes ready;
- an integer N: ready after N reads of the deployment (GET, list or /scale) since the last spec change.

Served kinds: apps/v1 Deployments (+ /scale, /status), core/v1 Namespaces, Services, Secrets, ResourceQuotas, LimitRanges,
Pods (+ /log, as text), networking.k8s.io/v1 NetworkPolicies, gateway.networking.k8s.io/v1 HTTPRoutes
(CustomObjectsApi paths), batch/v1 Jobs. Lists honour an equality ``labelSelector`` (``a=b,c=d``).

It also plays the Job controller: a created Job gets one pod (labels ``job-name`` and ``batch.kubernetes.io/job-name``,
as the real controller sets them) and finishes as the test decides with ``fake.set_job(namespace, outcome, ...)``:
``"complete"`` or ``"failed"`` after N reads of the Job (the real status: ``succeeded``/``failed`` counts, the
``Complete`` or ``Failed`` condition with reason ``BackoffLimitExceeded``), or ``"running"`` for ever; the pod's
log is the text the test gives. Deleting a Job deletes its pods (background propagation, instantly).

Use ``kube_fake()`` (context manager) from any test folder; ``fake.url``, ``fake.objects`` (inspection),
``fake.requests`` (log), ``fake.set_rollout(...)``, ``fake.fail_next(...)`` (error injection).

``fake.ledger`` is the ordered list of EFFECTIVE writes: one entry ``{"op", "key", "value", "t"}`` per object whose
user-visible state (``fake.state()``: everything but server-managed metadata and status) a write request changed,
with the object's new state (None once deleted). A retried write that changes nothing leaves no entry.
"""

from __future__ import annotations

import contextlib
import copy
import json
import re
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator, NamedTuple
from urllib.parse import parse_qs, urlsplit

# plural -> (api prefix, kind, namespaced)
KINDS: dict[str, tuple[str, str, bool]] = {
    "namespaces": ("/api/v1", "Namespace", False),
    "services": ("/api/v1", "Service", True),
    "secrets": ("/api/v1", "Secret", True),
    "resourcequotas": ("/api/v1", "ResourceQuota", True),
    "limitranges": ("/api/v1", "LimitRange", True),
    "deployments": ("/apis/apps/v1", "Deployment", True),
    "pods": ("/api/v1", "Pod", True),
    "jobs": ("/apis/batch/v1", "Job", True),
    "networkpolicies": ("/apis/networking.k8s.io/v1", "NetworkPolicy", True),
    "httproutes": ("/apis/gateway.networking.k8s.io/v1", "HTTPRoute", True),
}
API_VERSION = {
    "/api/v1": "v1",
    "/apis/apps/v1": "apps/v1",
    "/apis/batch/v1": "batch/v1",
    "/apis/networking.k8s.io/v1": "networking.k8s.io/v1",
    "/apis/gateway.networking.k8s.io/v1": "gateway.networking.k8s.io/v1",
}
# strategic-merge-patch list merge keys (the subset of the Kubernetes schema this fake needs)
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "ports": "containerPort",
    "imagePullSecrets": "name",
}

_PATH = re.compile(
    r"^(?P<prefix>/api/v1|/apis/[^/]+/v1)"
    r"(?:/namespaces/(?P<ns>[^/]+))?"
    r"/(?P<plural>[a-z]+)"
    r"(?:/(?P<name>[^/]+))?"
    r"(?:/(?P<sub>scale|status|log))?$"
)


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str, details: dict | None = None) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details or {}

    def status(self) -> dict:
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "details": self.details,
            "code": self.code,
        }


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    content_type: str
    body: Any


@dataclass
class _Rollout:
    mode: str | int = "ready"
    polls: int = 0


@dataclass
class _JobPlan:
    """What the Job controller does with a Job: finish ``outcome`` after ``after`` reads; the pod's ``log``."""

    outcome: str = "complete"
    after: int = 1
    log: str = ""
    reads: int = 0


@dataclass
class _Injected:
    method: str
    path_contains: str
    code: int
    times: int


class KubeFake:
    def __init__(self) -> None:
        # (plural, namespace or "", name) -> object
        self.objects: dict[tuple[str, str, str], dict] = {}
        self.requests: list[Request] = []
        self.ledger: list[dict] = []
        self._rv = 1000
        self._lock = threading.RLock()
        self._rollouts: dict[tuple[str, str], _Rollout] = {}
        self._default_rollout: str | int = "ready"
        self._job_plans: dict[tuple[str, str], _JobPlan] = {}  # (namespace, name prefix) -> the plan for its Jobs
        self._jobs: dict[tuple[str, str], _JobPlan] = {}  # (namespace, name) -> the plan of that Job
        self._injected: list[_Injected] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    # ------------------------------------------------------------------ test controls
    def start(self) -> "KubeFake":
        fake = self

        class Handler(_Handler):
            pass

        Handler.fake = fake
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        host, port = self._server.server_address[:2]
        self.url = f"http://{host}:{port}"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name="kube-fake", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def api_client(self):
        """A ``kubernetes.client.ApiClient`` pointed at this fake."""
        from kubernetes import client

        configuration = client.Configuration()
        configuration.host = self.url
        configuration.retries = 0  # fail fast in tests: retries are the workflow's business
        return client.ApiClient(configuration)

    def reset(self) -> None:
        with self._lock:
            self.objects.clear()
            self.requests.clear()
            self.ledger.clear()
            self._rollouts.clear()
            self._job_plans.clear()
            self._jobs.clear()
            self._injected.clear()
            self._default_rollout = "ready"

    def set_rollout(self, namespace: str, name: str, mode: str | int) -> None:
        """``"ready"``, ``"stuck"`` or N (ready after N reads). Resets the read counter."""
        if not (mode in ("ready", "stuck") or isinstance(mode, int)):
            raise ValueError("mode must be 'ready', 'stuck' or an int")
        with self._lock:
            self._rollouts[(namespace, name)] = _Rollout(mode)

    def set_job(self, namespace: str, outcome: str, *, prefix: str = "", after: int = 1, log: str = "") -> None:
        """Jobs created in ``namespace`` (whose name starts with ``prefix``) finish ``"complete"`` or ``"failed"``
        after ``after`` reads (0: at once), or stay ``"running"``; their pod's log is ``log``. Without a plan a Job
        completes after one read with an empty log."""
        if outcome not in ("complete", "failed", "running") or after < 0:
            raise ValueError("outcome must be complete, failed or running; after >= 0")
        with self._lock:
            self._job_plans[(namespace, prefix)] = _JobPlan(outcome, after, log)

    def set_default_rollout(self, mode: str | int) -> None:
        self._default_rollout = mode

    def fail_next(self, method: str, path_contains: str, code: int, times: int = 1) -> None:
        """Answer the next ``times`` matching requests with ``code`` (e.g. 500, 403, 409) before touching state."""
        with self._lock:
            self._injected.append(_Injected(method.upper(), path_contains, code, times))

    def get(self, plural: str, namespace: str | None, name: str) -> dict | None:
        with self._lock:
            obj = self.objects.get((plural, namespace or "", name))
            return copy.deepcopy(obj) if obj is not None else None

    def put_object(self, obj: dict) -> dict:
        """Seed an object directly (as if created by someone else)."""
        plural = next(p for p, (_, kind, _) in KINDS.items() if kind == obj["kind"])
        ns = obj["metadata"].get("namespace", "") if KINDS[plural][2] else ""
        with self._lock:
            stored = self._store_new(plural, ns, copy.deepcopy(obj))
            return copy.deepcopy(stored)

    def calls(self, method: str | None = None, path_contains: str = "") -> list[Request]:
        return [
            r for r in self.requests if (method is None or r.method == method) and path_contains in r.path
        ]

    def state(self) -> dict[str, dict]:
        """Every object's user-visible state, keyed ``plural/namespace/name``: no server-managed metadata, no status."""
        with self._lock:
            return {f"{plural}/{ns}/{name}": _visible(obj) for (plural, ns, name), obj in sorted(self.objects.items())}

    # ------------------------------------------------------------------ the API
    def handle(self, method: str, path: str, query: dict, content_type: str, body: Any) -> tuple[int, Any]:
        if method == "GET" or "All" in query.get("dryRun", []):
            return self._handle(method, path, query, content_type, body)
        with self._lock:
            before = self.state()
            answer = self._handle(method, path, query, content_type, body)
            after = self.state()
            for key in sorted(set(before) | set(after)):
                if before.get(key) != after.get(key):
                    self.ledger.append({"op": f"{method} {path}", "key": key, "value": after.get(key), "t": time.time()})
            return answer

    def _handle(self, method: str, path: str, query: dict, content_type: str, body: Any) -> tuple[int, Any]:
        with self._lock:
            self.requests.append(Request(method, path, query, content_type, copy.deepcopy(body)))
            for inj in self._injected:
                if inj.times > 0 and inj.method == method and inj.path_contains in path:
                    inj.times -= 1
                    reasons = {401: "Unauthorized", 403: "Forbidden", 409: "Conflict", 422: "Invalid", 429: "TooManyRequests"}
                    raise ApiError(inj.code, reasons.get(inj.code, "InternalError"), f"injected {inj.code}")
            match = _PATH.match(path)
            if not match or match["plural"] not in KINDS:
                raise ApiError(404, "NotFound", f"the server could not find the requested resource ({path})")
            prefix, ns, plural, name, sub = match["prefix"], match["ns"] or "", match["plural"], match["name"], match["sub"]
            api_prefix, kind, namespaced = KINDS[plural]
            if prefix != api_prefix:
                raise ApiError(404, "NotFound", f"the server could not find the requested resource ({path})")
            if plural == "namespaces":
                ns = ""
            elif not ns:
                raise ApiError(404, "NotFound", f"{plural} are namespaced: {path}")
            dry_run = "All" in query.get("dryRun", [])
            if sub == "scale" and plural != "deployments" or sub == "status" and plural != "deployments":
                raise ApiError(404, "NotFound", f"no subresource {sub} for {plural}")
            if name is None:
                if method == "GET":
                    return 200, self._list(plural, ns, api_prefix, kind, query.get("labelSelector", [""])[0])
                if method == "POST":
                    return 201, self._create(plural, ns, kind, api_prefix, body, dry_run)
                raise ApiError(405, "MethodNotAllowed", f"{method} not allowed on a collection")
            key = (plural, ns, name)
            if sub == "log":
                if plural != "pods" or method != "GET":
                    raise ApiError(404, "NotFound", f"no subresource log for {plural}")
                return 200, self._pod_log(self._must(key, kind), query)
            if method == "GET":
                obj = self._must(key, kind)
                if plural == "deployments":
                    self._observe(obj, read=True)
                if plural == "jobs":
                    self._job_read(obj)
                return 200, (self._scale(obj) if sub == "scale" else copy.deepcopy(obj))
            if method == "DELETE":
                obj = self._must(key, kind)
                if not dry_run:
                    self._delete(key)
                return 200, copy.deepcopy(obj)
            if method in ("PUT", "PATCH"):
                current = self._must(key, kind)
                if sub == "scale":
                    new = self._apply_scale(current, method, content_type, body)
                elif sub == "status":
                    new = copy.deepcopy(current)
                    patched = body if method == "PUT" else _patch(current, content_type, body, plural)
                    new["status"] = copy.deepcopy(patched.get("status", {}))
                else:
                    if method == "PUT":
                        new = copy.deepcopy(body)
                        sent_rv = (new.get("metadata") or {}).get("resourceVersion")
                        if sent_rv and sent_rv != current["metadata"]["resourceVersion"]:
                            raise ApiError(
                                409,
                                "Conflict",
                                f'Operation cannot be fulfilled on {plural} "{name}": the object has been modified; '
                                "please apply your changes to the latest version and try again",
                                {"name": name, "kind": plural},
                            )
                        if "status" in current:
                            new["status"] = copy.deepcopy(current["status"])
                    else:
                        new = _patch(current, content_type, body, plural)
                stored = self._update(key, current, new, dry_run, status_only=(sub == "status"))
                return 200, (self._scale(stored) if sub == "scale" else copy.deepcopy(stored))
            raise ApiError(405, "MethodNotAllowed", f"{method} not allowed")

    # ------------------------------------------------------------------ storage
    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    def _must(self, key: tuple[str, str, str], kind: str) -> dict:
        obj = self.objects.get(key)
        if obj is None:
            group = KINDS[key[0]][0].removeprefix("/apis/").removeprefix("/api/v1").removesuffix("/v1")
            resource = f"{key[0]}.{group}" if group else key[0]
            raise ApiError(404, "NotFound", f'{resource} "{key[2]}" not found', {"name": key[2], "kind": key[0]})
        if key[1] and ("namespaces", "", key[1]) not in self.objects:
            pass  # objects seeded without their namespace are fine for a fake
        return obj

    def _list(self, plural: str, ns: str, api_prefix: str, kind: str, selector: str = "") -> dict:
        wanted = dict(part.split("=", 1) for part in selector.split(",") if "=" in part)
        items = []
        for (p, n, _), obj in sorted(list(self.objects.items())):
            labels = (obj.get("metadata") or {}).get("labels") or {}
            if p == plural and (not ns or n == ns) and all(labels.get(k) == v for k, v in wanted.items()):
                if plural == "deployments":
                    self._observe(obj, read=True)
                if plural == "jobs":
                    self._job_read(obj)
                items.append(copy.deepcopy(obj))
        return {
            "kind": f"{kind}List",
            "apiVersion": API_VERSION[api_prefix],
            "metadata": {"resourceVersion": str(self._rv)},
            "items": items,
        }

    def _create(self, plural: str, ns: str, kind: str, api_prefix: str, body: Any, dry_run: bool) -> dict:
        if not isinstance(body, dict):
            raise ApiError(400, "BadRequest", "the body must be an object")
        obj = copy.deepcopy(body)
        obj.setdefault("kind", kind)
        obj.setdefault("apiVersion", API_VERSION[api_prefix])
        meta = obj.setdefault("metadata", {})
        name = meta.get("name")
        if not name:
            raise ApiError(422, "Invalid", f"{kind}.metadata.name: Required value", {"kind": plural})
        body_ns = meta.get("namespace")
        if ns and body_ns and body_ns != ns:
            raise ApiError(400, "BadRequest", "the namespace of the provided object does not match the request")
        if (plural, ns, name) in self.objects:
            raise ApiError(409, "AlreadyExists", f'{plural} "{name}" already exists', {"name": name, "kind": plural})
        if ns and ("namespaces", "", ns) not in self.objects and plural != "namespaces":
            raise ApiError(404, "NotFound", f'namespaces "{ns}" not found', {"name": ns, "kind": "namespaces"})
        self._validate(plural, obj)
        if dry_run:
            preview = copy.deepcopy(obj)
            preview["metadata"].update(namespace=ns or None, resourceVersion="", generation=1)
            return preview
        return copy.deepcopy(self._store_new(plural, ns, obj))

    def _store_new(self, plural: str, ns: str, obj: dict) -> dict:
        meta = obj.setdefault("metadata", {})
        if ns:
            meta["namespace"] = ns
        else:
            meta.pop("namespace", None)
        meta["uid"] = str(uuid.uuid4())
        meta["resourceVersion"] = self._next_rv()
        meta["generation"] = 1
        meta["creationTimestamp"] = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        if plural == "namespaces":
            meta.setdefault("labels", {})["kubernetes.io/metadata.name"] = meta["name"]
            obj["status"] = {"phase": "Active"}
        if plural == "deployments":
            obj.setdefault("status", {})
            self._rollouts.setdefault((ns, meta["name"]), _Rollout(self._default_rollout))
            self._rollouts[(ns, meta["name"])].polls = 0
            self._observe(obj, read=False)
        self.objects[(plural, ns, meta["name"])] = obj
        if plural == "jobs":
            self._job_started(obj)
        return obj

    def _update(self, key: tuple[str, str, str], current: dict, new: dict, dry_run: bool, status_only: bool) -> dict:
        plural = key[0]
        meta = new.setdefault("metadata", {})
        old_meta = current["metadata"]
        if meta.get("name", key[2]) != key[2]:
            raise ApiError(400, "BadRequest", "the name of the object does not match the name on the URL")
        for fixed in ("name", "uid", "creationTimestamp", "namespace"):
            if fixed in old_meta:
                meta[fixed] = old_meta[fixed]
        new.setdefault("kind", current.get("kind"))
        new.setdefault("apiVersion", current.get("apiVersion"))
        self._validate(plural, new)
        if plural == "deployments":
            old_sel = (current.get("spec") or {}).get("selector")
            if (new.get("spec") or {}).get("selector") != old_sel:
                raise ApiError(
                    422,
                    "Invalid",
                    f'Deployment.apps "{key[2]}" is invalid: spec.selector: Invalid value: field is immutable',
                    {"name": key[2], "kind": "Deployment", "causes": [{"field": "spec.selector"}]},
                )
        if plural == "secrets" and (new.get("type") or "Opaque") != (current.get("type") or "Opaque"):
            raise ApiError(422, "Invalid", f'Secret "{key[2]}" is invalid: type: Invalid value: "{new.get("type")}": '
                                           "field is immutable", {"name": key[2], "kind": "Secret"})
        spec_changed = not status_only and new.get("spec") != current.get("spec")
        meta["generation"] = old_meta.get("generation", 1) + (1 if spec_changed else 0)
        unchanged = {k: v for k, v in new.items() if k != "metadata"} == {
            k: v for k, v in current.items() if k != "metadata"
        } and {k: v for k, v in meta.items() if k != "resourceVersion"} == {
            k: v for k, v in old_meta.items() if k != "resourceVersion"
        }
        meta["resourceVersion"] = old_meta["resourceVersion"] if unchanged else str(self._rv + 1)
        if dry_run:
            return new
        if not unchanged:
            self._next_rv()
        if plural == "deployments" and spec_changed:
            rollout = self._rollouts.setdefault((key[1], key[2]), _Rollout(self._default_rollout))
            rollout.polls = 0
            self._observe(new, read=False)
        self.objects[key] = new
        return new

    def _delete(self, key: tuple[str, str, str]) -> None:
        del self.objects[key]
        if key[0] == "namespaces":  # the namespace controller, instantly
            for other in [k for k in self.objects if k[1] == key[2]]:
                del self.objects[other]
        if key[0] == "deployments":
            self._rollouts.pop((key[1], key[2]), None)
        if key[0] == "jobs":  # background propagation: the Job's pods go with it
            self._jobs.pop((key[1], key[2]), None)
            for other in [k for k, obj in self.objects.items() if k[0] == "pods" and k[1] == key[1]
                          and ((obj.get("metadata") or {}).get("labels") or {}).get("job-name") == key[2]]:
                del self.objects[other]

    def _validate(self, plural: str, obj: dict) -> None:
        spec = obj.get("spec") or {}
        if plural == "deployments":
            labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
            match = (spec.get("selector") or {}).get("matchLabels") or {}
            if not match:
                raise ApiError(422, "Invalid", "Deployment.apps: spec.selector: Required value", {"kind": "Deployment"})
            if any(labels.get(k) != v for k, v in match.items()):
                raise ApiError(
                    422,
                    "Invalid",
                    "Deployment.apps: spec.template.metadata.labels: Invalid value: "
                    "`selector` does not match template `labels`",
                    {"kind": "Deployment"},
                )
            if not (spec.get("template") or {}).get("spec", {}).get("containers"):
                raise ApiError(422, "Invalid", "Deployment.apps: spec.template.spec.containers: Required value")
            if int(spec.get("replicas", 1)) < 0:
                raise ApiError(422, "Invalid", "Deployment.apps: spec.replicas: must be greater than or equal to 0")
        if plural == "jobs":
            pod = (spec.get("template") or {}).get("spec") or {}
            if not pod.get("containers"):
                raise ApiError(422, "Invalid", "Job.batch: spec.template.spec.containers: Required value")
            if pod.get("restartPolicy") not in ("Never", "OnFailure"):
                raise ApiError(422, "Invalid", 'Job.batch: spec.template.spec.restartPolicy: Unsupported value: '
                                               f'"{pod.get("restartPolicy")}": supported values: "OnFailure", "Never"')
        if plural == "secrets":
            _secret_data(obj)
        if plural == "httproutes":
            for rule in spec.get("rules") or []:
                for ref in rule.get("backendRefs") or []:
                    weight = ref.get("weight", 1)
                    if not isinstance(weight, int) or not 0 <= weight <= 1_000_000:
                        raise ApiError(422, "Invalid", f"HTTPRoute: backendRefs.weight: Invalid value: {weight}")

    # ------------------------------------------------------------------ Job controller
    def _job_started(self, job: dict) -> None:
        meta = job["metadata"]
        ns, name = meta["namespace"], meta["name"]
        plan = next((p for (n, prefix), p in sorted(self._job_plans.items(), key=lambda kv: -len(kv[0][1]))
                     if n == ns and name.startswith(prefix)), _JobPlan())
        self._jobs[(ns, name)] = _JobPlan(plan.outcome, plan.after, plan.log)
        now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        job["status"] = {"startTime": now, "active": 1}
        template = (job.get("spec") or {}).get("template") or {}
        pod = {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"{name}-{uuid.uuid4().hex[:5]}", "namespace": ns,
                         "labels": {**((template.get("metadata") or {}).get("labels") or {}), "job-name": name,
                                    "batch.kubernetes.io/job-name": name, "controller-uid": meta["uid"]}},
            "spec": copy.deepcopy(template.get("spec") or {}),
            "status": {"phase": "Running"},
        }
        stored = self._store_new("pods", ns, pod)
        stored["status"] = {"phase": "Running"}
        if self._jobs[(ns, name)].after == 0:
            self._job_finish(job)

    def _job_read(self, job: dict) -> None:
        meta = job["metadata"]
        plan = self._jobs.get((meta.get("namespace", ""), meta["name"]))
        if plan is None or any(c.get("type") in ("Complete", "Failed") for c in (job.get("status") or {}).get("conditions") or []):
            return
        plan.reads += 1
        if plan.reads >= plan.after:
            self._job_finish(job)

    def _job_finish(self, job: dict) -> None:
        meta = job["metadata"]
        ns, name = meta["namespace"], meta["name"]
        plan = self._jobs[(ns, name)]
        if plan.outcome == "running":
            return
        now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        status = job.setdefault("status", {})
        status.pop("active", None)
        if plan.outcome == "complete":
            status.update(succeeded=1, completionTime=now, conditions=[
                {"type": "SuccessCriteriaMet", "status": "True", "reason": "CompletionsReached",
                 "message": "Reached expected number of succeeded pods", "lastTransitionTime": now},
                {"type": "Complete", "status": "True", "reason": "CompletionsReached",
                 "message": "Reached expected number of succeeded pods", "lastTransitionTime": now},
            ])
        else:
            status.update(failed=int((job.get("spec") or {}).get("backoffLimit", 6)) + 1, conditions=[
                {"type": "FailureTarget", "status": "True", "reason": "BackoffLimitExceeded",
                 "message": "Job has reached the specified backoff limit", "lastTransitionTime": now},
                {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                 "message": "Job has reached the specified backoff limit", "lastTransitionTime": now},
            ])
        for (plural, pod_ns, _), pod in self.objects.items():
            if plural == "pods" and pod_ns == ns and pod["metadata"].get("labels", {}).get("job-name") == name:
                pod["status"] = {"phase": "Succeeded" if plan.outcome == "complete" else "Failed"}

    def _pod_log(self, pod: dict, query: dict) -> str:
        name = ((pod.get("metadata") or {}).get("labels") or {}).get("job-name")
        plan = self._jobs.get((pod["metadata"].get("namespace", ""), name or ""))
        lines = (plan.log if plan else "").splitlines()
        tail = query.get("tailLines")
        if tail:
            lines = lines[-int(tail[0]):]
        return "".join(line + "\n" for line in lines)

    # ------------------------------------------------------------------ deployment controller
    def _observe(self, obj: dict, read: bool) -> None:
        meta = obj["metadata"]
        rollout = self._rollouts.setdefault((meta.get("namespace", ""), meta["name"]), _Rollout(self._default_rollout))
        if read:
            rollout.polls += 1
        replicas = int((obj.get("spec") or {}).get("replicas", 1))
        generation = meta.get("generation", 1)
        mode = rollout.mode
        ready = mode == "ready" or (isinstance(mode, int) and rollout.polls >= mode)
        status = obj.setdefault("status", {})
        previous_ready = min(int(status.get("readyReplicas", 0) or 0), replicas)
        status["observedGeneration"] = generation
        status["replicas"] = replicas
        if ready:
            status.update(readyReplicas=replicas, updatedReplicas=replicas, availableReplicas=replicas)
            status.pop("unavailableReplicas", None)
            status["conditions"] = [
                {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
                {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"},
            ]
        else:  # the new ReplicaSet's pods never become ready; the old pods (if any) keep serving beside them
            status.update(
                replicas=replicas + previous_ready,
                updatedReplicas=replicas,
                readyReplicas=previous_ready,
                availableReplicas=previous_ready,
                unavailableReplicas=replicas,
            )
            status["conditions"] = [
                {"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated"},
            ]
        for k in ("replicas", "readyReplicas", "availableReplicas", "updatedReplicas", "unavailableReplicas"):
            if status.get(k) == 0:
                status.pop(k)  # the real API omits zero counts

    def _scale(self, obj: dict) -> dict:
        spec, meta = obj.get("spec") or {}, obj["metadata"]
        match = (spec.get("selector") or {}).get("matchLabels") or {}
        return {
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": {
                "name": meta["name"],
                "namespace": meta.get("namespace"),
                "uid": meta.get("uid"),
                "resourceVersion": meta["resourceVersion"],
                "creationTimestamp": meta.get("creationTimestamp"),
            },
            "spec": {"replicas": int(spec.get("replicas", 1))},
            "status": {
                "replicas": int((obj.get("status") or {}).get("replicas", 0)),
                "selector": ",".join(f"{k}={v}" for k, v in sorted(match.items())),
            },
        }

    def _apply_scale(self, current: dict, method: str, content_type: str, body: Any) -> dict:
        scale = self._scale(current)
        new_scale = body if method == "PUT" else _patch(scale, content_type, body, "scale")
        replicas = (new_scale.get("spec") or {}).get("replicas")
        if not isinstance(replicas, int) or replicas < 0:
            raise ApiError(422, "Invalid", f"Scale.autoscaling: spec.replicas: Invalid value: {replicas!r}")
        new = copy.deepcopy(current)
        new.setdefault("spec", {})["replicas"] = replicas
        return new


def _secret_data(obj: dict) -> None:
    """As the API server stores a Secret: ``stringData`` merged into ``data`` (base64), values checked as base64,
    the type defaulted to Opaque and a kubernetes.io/tls Secret required to hold tls.crt and tls.key."""
    import base64
    import binascii

    data = obj.setdefault("data", {}) or {}
    for key, value in (obj.pop("stringData", None) or {}).items():
        data[key] = base64.b64encode(str(value).encode()).decode()
    obj["data"] = data
    for key, value in data.items():
        try:
            base64.b64decode(str(value), validate=True)
        except (binascii.Error, ValueError):
            raise ApiError(422, "Invalid", f"Secret: data[{key}]: Invalid value: not base64") from None
    obj.setdefault("type", "Opaque")
    if obj["type"] == "kubernetes.io/tls":
        for key in ("tls.crt", "tls.key"):
            if key not in data:
                raise ApiError(422, "Invalid", f"Secret: data[{key}]: Required value")


# ---------------------------------------------------------------------- patches
_SERVER_META = ("uid", "resourceVersion", "generation", "creationTimestamp", "managedFields")


def _visible(obj: dict) -> dict:
    out = {k: copy.deepcopy(v) for k, v in obj.items() if k != "status"}
    out["metadata"] = {k: v for k, v in (obj.get("metadata") or {}).items() if k not in _SERVER_META}
    return out


def _patch(current: dict, content_type: str, body: Any, plural: str) -> dict:
    ctype = content_type.split(";")[0].strip()
    if ctype == "application/json-patch+json":
        if not isinstance(body, list):
            raise ApiError(400, "BadRequest", "a JSON patch must be a list of operations")
        return _json_patch(current, body)
    if not isinstance(body, dict):
        raise ApiError(400, "BadRequest", "a merge patch must be an object")
    if ctype == "application/merge-patch+json":
        return _merge_patch(current, body)
    if ctype == "application/strategic-merge-patch+json":
        if plural == "httproutes":
            raise ApiError(
                415,
                "UnsupportedMediaType",
                "strategic merge patch is not supported for custom resources: use a JSON merge patch or JSON patch",
            )
        return _strategic_merge(current, body)
    raise ApiError(415, "UnsupportedMediaType", f"the body of the request was in an unknown format: {ctype}")


def _merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge_patch(result.get(key), value)
    return result


def _strategic_merge(target: Any, patch: Any, key: str | None = None) -> Any:
    if isinstance(patch, dict):
        if patch.get("$patch") == "replace":
            return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
        result = copy.deepcopy(target) if isinstance(target, dict) else {}
        for k, value in patch.items():
            if k.startswith("$"):
                continue
            if value is None:
                result.pop(k, None)
            else:
                result[k] = _strategic_merge(result.get(k), value, k)
        return result
    if isinstance(patch, list) and key in MERGE_KEYS and isinstance(target, list):
        merge_key = MERGE_KEYS[key]
        result = copy.deepcopy(target)
        for item in patch:
            if not isinstance(item, dict) or merge_key not in item:
                raise ApiError(422, "Invalid", f"strategic merge: every item of {key} needs {merge_key}")
            index = next((i for i, old in enumerate(result) if old.get(merge_key) == item[merge_key]), None)
            if item.get("$patch") == "delete":
                if index is not None:
                    result.pop(index)
            elif index is None:
                result.append(_strategic_merge({}, item))
            else:
                result[index] = _strategic_merge(result[index], item)
        return result
    return copy.deepcopy(patch)


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise ApiError(422, "Invalid", f"JSON pointer {path!r} must start with /")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _walk(doc: Any, parts: list[str], path: str) -> Any:
    for part in parts:
        if isinstance(doc, dict) and part in doc:
            doc = doc[part]
        elif isinstance(doc, list) and part.isdigit() and int(part) < len(doc):
            doc = doc[int(part)]
        else:
            raise ApiError(422, "Invalid", f"JSON patch: path {path!r} does not exist")
    return doc


def _json_patch(current: dict, ops: list) -> dict:
    doc = copy.deepcopy(current)
    for op in ops:
        kind, path = op.get("op"), op.get("path", "")
        parts = _pointer(path)
        if not parts:
            raise ApiError(422, "Invalid", "JSON patch on the whole document is not supported")
        parent = _walk(doc, parts[:-1], path)
        last = parts[-1]
        if kind == "test":
            if _walk(doc, parts, path) != op.get("value"):
                raise ApiError(422, "Invalid", f"JSON patch: test operation failed at {path}")
        elif kind in ("add", "replace"):
            value = copy.deepcopy(op.get("value"))
            if isinstance(parent, list):
                if last == "-" and kind == "add":
                    parent.append(value)
                elif last.isdigit() and int(last) <= len(parent) - (kind == "replace"):
                    if kind == "add":
                        parent.insert(int(last), value)
                    else:
                        parent[int(last)] = value
                else:
                    raise ApiError(422, "Invalid", f"JSON patch: bad list index at {path}")
            elif isinstance(parent, dict):
                if kind == "replace" and last not in parent:
                    raise ApiError(422, "Invalid", f"JSON patch: replace of a missing key at {path}")
                parent[last] = value
            else:
                raise ApiError(422, "Invalid", f"JSON patch: {path} is not in an object or list")
        elif kind == "remove":
            _walk(doc, parts, path)
            if isinstance(parent, list):
                parent.pop(int(last))
            else:
                parent.pop(last)
        else:
            raise ApiError(422, "Invalid", f"JSON patch: unsupported op {kind!r}")
    return doc


# ---------------------------------------------------------------------- HTTP
class _Handler(BaseHTTPRequestHandler):
    fake: KubeFake
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # header and body go out in two writes: avoid the 40 ms delayed-ACK stall

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        return

    def _serve(self) -> None:
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        content_type = self.headers.get("Content-Type") or ""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            self._send(400, ApiError(400, "BadRequest", "the body is not JSON").status())
            return
        try:
            code, answer = self.fake.handle(self.command, parts.path, parse_qs(parts.query), content_type, body)
        except ApiError as err:
            code, answer = err.code, err.status()
        except Exception as err:  # a bug in the fake: say so loudly
            code, answer = 500, ApiError(500, "InternalError", f"fake: {type(err).__name__}: {err}").status()
        self._send(code, answer)

    def _send(self, code: int, answer: dict | str) -> None:
        text = isinstance(answer, str)  # a pod's log is plain text
        data = answer.encode() if text else json.dumps(answer).encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain" if text else "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve


class KubeHandle(NamedTuple):
    fake: KubeFake
    api: Any  # kubernetes.client.ApiClient


@contextlib.contextmanager
def kube_fake() -> Iterator[KubeHandle]:
    """Start a fake API server; yield (fake, ApiClient pointed at it)."""
    fake = KubeFake().start()
    api = fake.api_client()
    try:
        yield KubeHandle(fake, api)
    finally:
        api.close()
        fake.stop()
