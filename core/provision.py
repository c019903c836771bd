"""Environment provisioning: the Terraform activities' inputs and results and the runbook's parameters.

No client library is imported here: workflows, activities and the starters all share these types. Secrets are
always *references* (``vault path#key``), resolved inside the Terraform activity; no value of a secret appears in
any of these models.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from core.duration import Duration, format_duration
from core.runbook import RunbookInput, RunbookResult

# Failure type of the apply activity when the saved plan no longer applies to the current state: the workflow
# must plan again and take the new plan through the approval gate. (Kept here, not in core.errors, because only
# provisioning raises it.)
PLAN_STALE = "PlanStale"
# the label on everything a provision run creates (its namespace): the dry run and the workflow read it alike
MANAGED_BY = {"app.kubernetes.io/managed-by": "runbook-automation"}

Tier = Literal["development", "staging", "production", "sandbox"]
NAME_PATTERN = r"^[a-z][a-z0-9-]{0,61}[a-z0-9]$"
WORKSPACE_PATTERN = r"^[A-Za-z0-9_-]+$"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TerraformTarget(_Model):
    """Which module, in which working directory and workspace, with which (non-secret) inputs."""

    environment: str = Field(pattern=NAME_PATTERN, description="names the working dir under the Terraform root")
    workspace: str = Field(pattern=WORKSPACE_PATTERN, description="one Terraform workspace per environment")
    module: str = Field(min_length=1, description="module source folder (relative to the worker's cwd or absolute)")
    variables: dict[str, Any] = Field(default_factory=dict, description="non-secret Terraform variables")
    secrets: dict[str, str] = Field(
        default_factory=dict,
        description='Terraform variable name -> Vault KV v2 reference "path#key"; passed as TF_VAR_<name>',
    )
    backend_config: dict[str, str] = Field(default_factory=dict, description="terraform init -backend-config")

    @field_validator("secrets")
    @classmethod
    def _names(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if not name.replace("_", "a").isalnum():
                raise ValueError(f"{name!r} is not a Terraform variable name")
        return value


class PlanInput(_Model):
    target: TerraformTarget
    destroy: bool = False


class PlanSummary(_Model):
    """What a saved plan would do; safe to show (no variable or output values)."""

    has_changes: bool
    plan_hash: str = Field("", description='"sha256:<hex>" of the saved plan file; empty when nothing changes')
    add: int = 0
    change: int = 0
    destroy: int = 0
    addresses: list[str] = Field(default_factory=list, description="resource addresses with their action")
    output_changes: dict[str, str] = Field(default_factory=dict, description="output name -> create/update/delete")
    workspace: str = ""
    terraform_version: str = ""
    prior_lineage: str = Field("", description="lineage of the state the plan was made against (empty: no state)")
    prior_serial: int = Field(0, description="serial of the state the plan was made against (0: no state)")
    prior_empty: bool = Field(
        False, description="the workspace had no state when planned: what an apply of this plan makes, this run made"
    )

    def text(self) -> str:
        lines = [f"Plan {self.plan_hash[:19] or '(none)'} in workspace {self.workspace}: "
                 f"{self.add} to add, {self.change} to change, {self.destroy} to destroy"]
        lines += [f"  {a}" for a in self.addresses[:30]]
        if len(self.addresses) > 30:
            lines.append(f"  ... and {len(self.addresses) - 30} more")
        if self.output_changes:
            lines.append("Outputs: " + ", ".join(f"{k} ({v})" for k, v in sorted(self.output_changes.items())))
        return "\n".join(lines)


class ApplyInput(_Model):
    target: TerraformTarget
    plan_hash: str = Field(pattern=r"^sha256:[0-9a-f]{64}$")


class ApplyResult(_Model):
    outcome: Literal["applied", "already_applied"]
    detail: str = ""


class OutputsInput(_Model):
    target: TerraformTarget


class OutputsResult(_Model):
    values: dict[str, Any] = Field(default_factory=dict, description="non-sensitive outputs")
    sensitive: list[str] = Field(default_factory=list, description="names of sensitive outputs (values withheld)")


class ModuleCheckInput(_Model):
    module: str


class ModuleCheck(_Model):
    """Read-only: does the module folder exist on the worker (with *.tf files)?"""

    found: bool
    detail: str = ""


class StateInput(_Model):
    target: TerraformTarget


class StateVersion(_Model):
    """Read-only: which state the workspace holds now (compared with a plan's prior state: did an apply write?)."""

    exists: bool = Field(description="the working dir and the workspace exist")
    lineage: str = ""
    serial: int = 0


class DestroyInput(_Model):
    target: TerraformTarget
    delete_workspace: bool = True


class DestroyResult(_Model):
    destroyed: bool
    detail: str = ""


# ------------------------------------------------------------------------------------------- the runbook
class NamespaceSettings(_Model):
    """The environment's Kubernetes namespace and its guardrails (defaults: the platform's policy)."""

    enabled: bool = Field(
        True,
        description="false: no Kubernetes namespace (a stack without a cluster, e.g. the local stack); the step is "
        "recorded as skipped with the reason",
    )
    context: str | None = None
    name: str | None = Field(None, description="defaults to the environment name")
    labels: dict[str, str] = Field(default_factory=dict)
    resource_quota: dict[str, str] = Field(
        default_factory=lambda: {"requests.cpu": "4", "requests.memory": "8Gi", "limits.cpu": "8",
                                 "limits.memory": "16Gi", "pods": "50"}
    )
    limit_range: dict[str, dict[str, str]] = Field(
        default_factory=lambda: {"default": {"cpu": "500m", "memory": "512Mi"},
                                 "defaultRequest": {"cpu": "100m", "memory": "128Mi"}}
    )
    default_deny: bool = True


class ProvisionEnvironmentInput(RunbookInput):
    # Names are checked by the run itself (``input_problems``: Refused, nothing changed), not by the model: a model
    # that rejected them would fail the workflow task for ever instead of ending the run.
    environment: str = Field(description=f"environment name, {NAME_PATTERN}")
    tier: Tier
    module: str = "terraform/modules/demo-environment"
    variables: dict[str, Any] = Field(default_factory=dict)
    secrets: dict[str, str] = Field(default_factory=dict, description='TF variable -> Vault "path#key"')
    workspace: str | None = Field(None, description=f"defaults to the environment name; {WORKSPACE_PATTERN}")
    backend_config: dict[str, str] = Field(default_factory=dict)
    namespace: NamespaceSettings = Field(default_factory=NamespaceSettings)
    record_bucket: str = "runbook-environments"
    record_prefix: str = "environments/"
    ttl: Duration | None = Field(None, description="sandboxes: destroy after this long (required for sandbox)")
    reminder_before: Duration = timedelta(hours=1)
    max_ttl: Duration = Field(timedelta(days=14), description="upper bound of the TTL and of any extension")
    max_replans: int = Field(2, ge=0, description="how often a stale plan is planned again before giving up")
    apply_attempts: int = Field(5, ge=1, description="attempts of terraform apply on transient errors (lock, network)")

    def problems(self) -> list[str]:
        return input_problems(self)

    def target(self) -> TerraformTarget:
        return TerraformTarget(
            environment=self.environment,
            workspace=self.workspace or self.environment,
            module=self.module,
            variables={"environment": self.environment, "tier": self.tier, **self.variables},
            secrets=self.secrets,
            backend_config=self.backend_config,
        )


def input_problems(input: ProvisionEnvironmentInput) -> list[str]:
    """Why the run must be refused before it changes anything (empty: the input is usable). Pure; the module folder
    itself is checked by a read-only activity on the worker."""
    problems: list[str] = []
    env = input.environment
    if not env.strip():
        problems.append("the environment name is blank")
    elif not re.match(NAME_PATTERN, env):
        problems.append(f"environment {env!r} is not a valid name (lower-case letters, digits and '-', 2-63 "
                        "characters, starting with a letter)")
    if input.workspace is not None and not re.match(WORKSPACE_PATTERN, input.workspace):
        problems.append(f"workspace {input.workspace!r} is not a valid Terraform workspace name "
                        "(letters, digits, '_' and '-')")
    if not input.module.strip():
        problems.append("the module folder is blank")
    if input.namespace.name is not None and not re.match(NAME_PATTERN, input.namespace.name):
        problems.append(f"namespace {input.namespace.name!r} is not a valid Kubernetes namespace name")
    for name in input.secrets:
        if not name.replace("_", "a").isalnum():
            problems.append(f"secret {name!r} is not a Terraform variable name")
    if not input.record_bucket.strip():
        problems.append("the record bucket is blank")
    if input.tier == "sandbox":
        if input.ttl is None or input.ttl <= timedelta(0):
            problems.append("a sandbox needs a positive ttl (e.g. 8h)")
        elif input.ttl > input.max_ttl:
            problems.append(f"ttl {format_duration(input.ttl)} exceeds the maximum {format_duration(input.max_ttl)}")
    return problems


class ExtendInput(_Model):
    by: Duration
    requested_by: str = Field(min_length=1)
    reason: str = ""


class DestroyNowInput(_Model):
    requested_by: str = Field(min_length=1)
    reason: str = Field(min_length=1)


class EnvironmentRecord(_Model):
    """The JSON document kept in S3 for each environment."""

    environment: str
    tier: Tier
    workspace: str
    module: str
    namespace: str | None = Field(None, description="None when the namespace step was skipped (namespace.enabled false)")
    outputs: dict[str, Any] = Field(default_factory=dict)
    sensitive_outputs: list[str] = Field(default_factory=list)
    plan_hash: str
    approved_by: list[str] = Field(default_factory=list)
    approved_at: datetime | None = None
    provisioned_at: datetime
    requested_by: str
    workflow_id: str
    expires_at: datetime | None = None


class ProvisionEnvironmentResult(RunbookResult):
    environment: str
    plan: PlanSummary | None = None
    outputs: dict[str, Any] = Field(default_factory=dict)
    record_key: str | None = None
    namespace: str | None = None
    destroyed: bool = False
    expired_at: datetime | None = None
    left_in_place: list[str] = Field(
        default_factory=list,
        description="what this run changed and deliberately kept (an environment that existed before it): see Held",
    )


class SandboxCursor(_Model):
    """What a live sandbox hands to its continuation (continue-as-new): enough to extend, remind and tear down."""

    plan: PlanSummary | None = None
    outputs: dict[str, Any] = Field(default_factory=dict)
    sensitive: list[str] = Field(default_factory=list)
    namespace: str | None = None
    namespace_existed: bool | None = None
    record_key: str | None = None
    provisioned_at: datetime | None = None
    expires_at: datetime
    reminded_for: datetime | None = None


class SandboxExpiry(_Model):
    """Answer of the ``extend`` update."""

    expires_at: datetime
    extended_by: str = ""
