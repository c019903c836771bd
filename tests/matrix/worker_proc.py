"""The matrix's worker processes: a zygote imports everything once and forks one worker child per request.

``python -m tests.matrix.worker_proc`` reads JSON lines ``{"config": PATH}`` on stdin and answers ``pid N`` per
line on stdout. Each child is a Temporal worker for every runbook workflow with the REAL activities wired to one
case's stand-ins (its moto account, its Kubernetes fakes, its Terraform root, OpenBao, PostgreSQL) and the fault
interceptor of :mod:`tests.matrix.faults`. The zygote creates no Temporal runtime, client or thread before it
forks (the SDK's Rust runtime has threads); each child creates its own.

The children run workflows without the sandbox: validating six workflow classes in a fresh process costs about
1.5 s, more than a whole case. Determinism is still checked where the matrix needs it (a killed run is replayed by
its replacement worker, with no workflow cache); the sandbox's restrictions are covered by the rest of the suite.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import re
import signal
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

# Imported once in the zygote, inherited by every child.
import boto3  # noqa: F401
import kubernetes.client  # noqa: F401
from temporalio.client import Client
from temporalio.worker import UnsandboxedWorkflowRunner, Worker
from temporalio.worker._worker import load_default_build_id

from activities.aws import AwsClients, ElbActivities, RdsActivities, Route53Activities, S3Activities
from activities.calendar import CalendarActivities
from activities.database import DatabaseActivities, default_pg_bin_dir
from activities.http_checks import HttpCheckActivities
from activities.kubernetes import KubernetesActivities
from activities.metrics import MetricsActivities
from activities.notify import NotificationActivities, RecordingChannel
from activities.release_ledger import ReleaseLedgerActivities
from activities.terraform import TerraformActivities
from activities.vault import SecretEngineActivities, VaultReader
from tests.harness import DATA_CONVERTER, TEST_KEYRING
from tests.matrix.faults import FaultInterceptor, FaultPlan
from workflows.registry import WORKFLOWS

WARM_SESSION = boto3.Session()
WARM_SERVICES = ("elbv2", "route53", "rds", "s3", "cloudwatch")
CLIENTS: list[AwsClients] = []  # the child's AWS clients (its case's credentials), set by build_activities


def _cloudwatch(region: str | None) -> Any:
    return CLIENTS[0].client("cloudwatch", region)


# Built once in the zygote: their HTTP clients' TLS contexts (the CA bundle loaded) cost about 0.1 s per worker. A
# fork inherits them with no connection open; each child's requests then use its own copy.
HTTP_CHECKS = HttpCheckActivities()
METRICS = MetricsActivities(cloudwatch=_cloudwatch)


def warm() -> None:
    """Load the service models once in the zygote (children inherit them). Explicit dummy credentials, so the
    session resolves none: each child resolves its own case's from its environment. Compute the worker's build id
    too (the SDK memoizes it): it hashes the code of every imported module, about 1 s of CPU, in every worker that
    does not inherit it."""
    load_default_build_id()
    # the codec's cipher: every payload a worker sees is encrypted, and the keyring imports cryptography and builds
    # its AES-GCM object on first use (about 15 ms of CPU per worker otherwise)
    TEST_KEYRING.open(*TEST_KEYRING.seal(b"warm"))
    for service in WARM_SERVICES:
        WARM_SESSION.client(service, region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x",
                            endpoint_url="http://127.0.0.1:9")
    # the kubernetes client imports its API classes and (pydantic) models lazily, seconds on first use
    from kubernetes import client as k8s

    api = k8s.ApiClient(k8s.Configuration())
    # its API methods validate their arguments with pydantic, each building its validator on its first call (about
    # 5 ms of CPU each, in every worker): build those the Kubernetes activities name, with an argument none takes
    from pydantic import ValidationError

    named = set(re.findall(r"\b(?:create|read|patch|replace|delete|list)_namespace\w*",
                           inspect.getsource(sys.modules[KubernetesActivities.__module__])))
    for name in ("AppsV1Api", "BatchV1Api", "CoreV1Api", "CustomObjectsApi", "NetworkingV1Api"):
        group = getattr(k8s, name)(api)
        for method in sorted(named):
            if hasattr(group, method):
                try:
                    getattr(group, method)(_matrix_warm_up=True)
                except ValidationError:
                    pass
    for model in ("V1Deployment", "V1DeploymentList", "V1Scale", "V1Service", "V1Namespace", "V1ResourceQuota",
                  "V1LimitRange", "V1NetworkPolicy", "V1Status", "V1ServiceList", "V1NamespaceList"):
        try:
            api._ApiClient__deserialize(_SAMPLE if model == "V1Deployment" else {}, model)  # noqa: SLF001
        except Exception:  # noqa: BLE001 - only the imports matter here
            pass


_SAMPLE = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "w", "namespace": "n"},
           "spec": {"replicas": 1, "selector": {"matchLabels": {"a": "b"}},
                    "template": {"metadata": {"labels": {"a": "b"}},
                                 "spec": {"containers": [{"name": "c", "image": "i", "env": [{"name": "E", "value": "v"}],
                                                          "ports": [{"containerPort": 80}]}]}}},
           "status": {"replicas": 1, "readyReplicas": 1, "conditions": [{"type": "Available", "status": "True"}]}}


def build_activities(config: dict) -> list[Callable]:
    """Every product activity, wired to the case's stand-ins (boto3 reads the AWS_* variables set from config)."""
    from kubernetes import client as k8s_client

    apis: dict[str | None, Any] = {}
    for context, url in config.get("kube", {}).items():
        configuration = k8s_client.Configuration()
        configuration.host = url
        configuration.retries = 0
        apis[context] = k8s_client.ApiClient(configuration)
    default = next(iter(apis.values()), None)

    def api_for(context: str | None) -> Any:
        return apis.get(context, default)

    vault = VaultReader.from_env() if os.environ.get("VAULT_ADDR") else None
    clients = AwsClients(session=WARM_SESSION)
    CLIENTS[:] = [clients]
    instances = [
        NotificationActivities([RecordingChannel(Path(config["dir"]) / "events.jsonl")]),
        CalendarActivities(None),  # no change calendar: nothing is frozen
        KubernetesActivities(api_for, vault),  # k8s_write_secret_from_vault reads the KV version it writes
        HTTP_CHECKS,
        TerraformActivities(vault, config.get("tf_root") or "/tmp/matrix-tf"),
        METRICS,
        DatabaseActivities(_FirstUse(lambda: clients.client("s3")), vault, default_pg_bin_dir()),
        ReleaseLedgerActivities(os.environ.get("RUNBOOK_RELEASE_LEDGER_DSN")),
        SecretEngineActivities(vault.client if vault is not None else None),
        *(cls(clients) for cls in (ElbActivities, Route53Activities, RdsActivities, S3Activities)),
    ]
    return [method for obj in instances for method in activity_methods(obj)]


class _FirstUse:
    """A client made when first used: the database activities' S3 client (the one the S3 activities use, from the
    same AwsClients) serves only the restore drill's runs, and creating one costs about 13 ms of CPU per worker."""

    def __init__(self, make: Callable[[], Any]) -> None:
        self._make = make

    def __getattr__(self, name: str) -> Any:
        return getattr(self._make(), name)


def activity_methods(obj: Any) -> list[Callable]:
    """Every activity an activity class defines (so a new activity needs no change here)."""
    found = []
    for name in dir(type(obj)):
        if name.startswith("__"):
            continue
        attr = getattr(type(obj), name, None)
        if callable(attr) and hasattr(attr, "__temporal_activity_definition"):
            found.append(getattr(obj, name))
    return found


async def run_worker(config: dict) -> None:
    plan = FaultPlan.load(config["plan"])
    client = await Client.connect(config["address"], namespace=config.get("namespace", "default"),
                                  data_converter=DATA_CONVERTER)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    kw: dict[str, Any] = {}
    if config.get("no_cache"):
        # the worker that will be killed: no sticky cache, and one poll of each kind (a killed process's pending
        # polls stay open on the server and swallow the next task, which then waits for its timeout)
        kw.update(max_cached_workflows=0, max_concurrent_workflow_task_polls=1, max_concurrent_activity_task_polls=1)
    with ThreadPoolExecutor(max_workers=16) as pool:
        worker = Worker(client, task_queue=config["task_queue"], workflows=list(WORKFLOWS),
                        activities=build_activities(config), activity_executor=pool,
                        interceptors=[FaultInterceptor(plan)], workflow_runner=UnsandboxedWorkflowRunner(), **kw)
        async with worker:
            (Path(config["dir"]) / f"worker-{os.getpid()}.up").write_text("")
            await stop.wait()


def child(config_path: str) -> None:
    config = json.loads(Path(config_path).read_text())
    log = open(Path(config["dir"]) / f"worker-{os.getpid()}.log", "ab", buffering=0)
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)
    os.environ.update(config.get("env", {}))
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    import faulthandler

    faulthandler.register(signal.SIGUSR1, file=log, all_threads=True)  # kill -USR1 <pid>: where is it stuck?
    try:
        asyncio.run(run_worker(config))
        code = 0
    except BaseException:  # noqa: BLE001 - reported in the log, the process ends either way
        import traceback

        traceback.print_exc()
        code = 1
    os._exit(code)


def _reap(*_: Any) -> None:
    """Wait for every child that ended: reaped by a wait (not auto-reaped by ignoring SIGCHLD), a child's CPU time
    counts in the zygote's, and so in the test process's (``time``, ``getrusage(RUSAGE_CHILDREN)``)."""
    while True:
        try:
            pid, _status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def zygote() -> None:
    warm()
    signal.signal(signal.SIGCHLD, _reap)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            child(request["config"])
        sys.stdout.write(f"pid {pid}\n")
        sys.stdout.flush()


if __name__ == "__main__":
    zygote()
