"""Inputs and results of the Kubernetes activities (``activities/kubernetes.py``).

Plain pydantic models, no client import, so workflows can use them inside the sandbox. Every input names the
kubeconfig ``context`` (None = the worker's current context / in-cluster config) and the ``namespace``.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ----------------------------------------------------------------------------- deployments
class DeploymentRef(_Model):
    context: str | None = None
    namespace: str = "default"
    name: str


class DeploymentState(_Model):
    exists: bool
    name: str = ""
    namespace: str = ""
    replicas: int = 0
    ready_replicas: int = 0
    updated_replicas: int = 0
    available_replicas: int = 0
    total_replicas: int = Field(0, description="status.replicas: pods of every revision (old ones until replaced)")
    image: str | None = None
    labels: dict[str, str] = Field(default_factory=dict, description="pod template labels")
    selector: dict[str, str] = Field(default_factory=dict, description="spec.selector.matchLabels")
    generation: int = 0
    observed_generation: int = 0

    @property
    def rolled_out(self) -> bool:
        """As ``kubectl rollout status``: the latest spec observed, every replica updated, ready and available, no old pod left."""
        return (
            self.exists
            and self.observed_generation >= self.generation
            and self.updated_replicas == self.ready_replicas == self.available_replicas == self.replicas
            and self.total_replicas == self.replicas
        )


class DeploymentApply(_Model):
    ref: DeploymentRef
    image: str
    replicas: int = Field(ge=0)
    labels: dict[str, str] = Field(default_factory=dict, description="pod template labels (and deployment labels)")
    selector: dict[str, str] = Field(default_factory=dict, description="matchLabels; defaults to labels")
    container_name: str = "app"
    container_port: int | None = None
    template_from: DeploymentRef | None = Field(
        None, description="copy the pod template of this deployment (e.g. the live colour), replacing image and labels"
    )


class ScaleInput(_Model):
    ref: DeploymentRef
    replicas: int = Field(ge=0)
    ignore_missing: bool = False


class WaitRolloutInput(_Model):
    ref: DeploymentRef
    deadline_seconds: float = Field(600, gt=0)
    poll_seconds: float = Field(5, gt=0)


class DeleteResult(_Model):
    deleted: bool
    existed: bool


# ----------------------------------------------------------------------------- services
class ServiceRef(_Model):
    context: str | None = None
    namespace: str = "default"
    name: str


class ServiceSelector(_Model):
    selector: dict[str, str] = Field(default_factory=dict)


class ServiceSelectorInput(_Model):
    ref: ServiceRef
    selector: dict[str, str] = Field(
        description="the full wanted selector; keys of the current selector that are absent here are removed"
    )


class ServiceSelectorResult(_Model):
    previous: dict[str, str]
    current: dict[str, str]
    changed: bool


# ----------------------------------------------------------------------------- Gateway API HTTPRoute
class HttpRouteRef(_Model):
    context: str | None = None
    namespace: str = "default"
    name: str
    rule_index: int = Field(0, ge=0)


class HttpRouteWeights(_Model):
    weights: dict[str, int] = Field(default_factory=dict, description="backend Service name -> weight")
    changed: bool = False


class HttpRouteWeightsInput(_Model):
    ref: HttpRouteRef
    weights: dict[str, int] = Field(description="absolute weight per backendRef name of the rule")


# ----------------------------------------------------------------------------- namespaces
class NamespaceRef(_Model):
    context: str | None = None
    name: str


class NamespaceState(_Model):
    """Read-only answer of ``k8s_get_namespace``."""

    exists: bool
    labels: dict[str, str] = Field(default_factory=dict)


class NamespaceSpec(_Model):
    context: str | None = None
    name: str
    labels: dict[str, str] = Field(default_factory=dict)
    resource_quota: dict[str, str] = Field(
        default_factory=dict, description='ResourceQuota "runbook-quota" spec.hard, e.g. {"requests.cpu": "4"}'
    )
    limit_range: dict[str, dict[str, str]] = Field(
        default_factory=dict,
        description='LimitRange "runbook-limits" container item: {"default": {...}, "defaultRequest": {...}}',
    )
    default_deny: bool = True


class NamespaceResult(_Model):
    created: bool
    objects: list[str] = Field(default_factory=list, description='"Kind/name" of every object created or updated')


# ----------------------------------------------------------------------------- batch/v1 Jobs
LOG_TAIL_LINES = 20
LOG_TAIL_CHARS = 2000


class JobRunInput(_Model):
    """A Job to run to its end (``k8s_run_job``): created under ``name`` unless it exists (a retried attempt finds
    the Job its earlier attempt created), then waited on until Complete or Failed."""

    context: str | None = None
    namespace: str = "default"
    name: str = Field(description="deterministic: the caller derives it from the run, stage and check")
    image: str
    command: list[str] = Field(default_factory=list)
    args: list[str] = Field(default_factory=list)
    backoff_limit: int = Field(0, ge=0)
    deadline_seconds: float = Field(600, gt=0, description="the Job's activeDeadlineSeconds; the wait ends after it")
    poll_seconds: float = Field(5, gt=0)
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class JobOutcome(_Model):
    """How a Job ended: ``succeeded`` (condition Complete) or not (Failed, or not finished by the deadline)."""

    name: str
    namespace: str
    succeeded: bool
    condition: str = Field(description="Complete, Failed, or NotFinished (the wait's deadline passed first)")
    reason: str = ""
    message: str = ""
    created: bool = Field(description="this attempt created the Job (False: an earlier attempt had)")
    pod: str | None = None
    log_tail: str = Field("", description=f"the last {LOG_TAIL_LINES} lines of its pod's log, at most "
                                          f"{LOG_TAIL_CHARS} characters")

    def summary(self) -> str:
        why = f" ({self.reason}{': ' + self.message if self.message else ''})" if self.reason or self.message else ""
        return f"job {self.namespace}/{self.name} {self.condition}{why}"


# ----------------------------------------------------------------------------- core/v1 Secrets (rotate-secret)
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"  # what ``kubectl rollout restart`` sets on the pod template
SECRET_SOURCE = "runbook-automation/source"  # on a Secret written from Vault: "<kv path> v<version>"


class SecretRef(_Model):
    context: str | None = None
    namespace: str = "default"
    name: str


class SecretFromVault(_Model):
    """Write the Secret ``ref`` from one version of a Vault KV v2 secret: Secret key -> KV field (``keys``). Only
    the reference travels; the activity reads the values itself, so they never enter a workflow."""

    ref: SecretRef
    source_path: str
    source_version: int = Field(ge=1)
    keys: dict[str, str] = Field(description="Secret data key -> KV field, e.g. {'tls.crt': 'certificate'}")
    type: str = Field("Opaque", description="the Secret's type (kubernetes.io/tls for a certificate); immutable")


class SecretWritten(_Model):
    ref: SecretRef
    source: str = Field(description="the Vault version its data came from: '<kv path> v<version>'")
    created: bool = False
    changed: bool = Field(description="False: the Secret already held that data (a retry)")


class SecretRolloutTarget(_Model):
    """Read-only: the Secret the consumers mount and their Deployments (in the Secret's namespace and context)."""

    secret: SecretRef
    deployments: list[str] = Field(default_factory=list)


class SecretRolloutState(_Model):
    secret_exists: bool
    secret_type: str = ""
    source: str = Field("", description="the Vault version it was last written from by a rotation, if any")
    missing_deployments: list[str] = Field(default_factory=list)


class RestartInput(_Model):
    """A rolling restart as ``kubectl rollout restart`` does it: the pod template's restartedAt annotation set to
    ``restarted_at``. The caller derives it from its run, so a retry sets the same value and changes nothing."""

    ref: DeploymentRef
    restarted_at: str
