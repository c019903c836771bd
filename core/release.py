"""The release runbook's data: stages, waves, checks, the error budget, the last-known-good ledger, and the view.

A release takes one version of a service through stages (development -> staging -> production); each stage runs
a child runbook already in the product (``canary`` = canary-ramp, ``blue-green`` = blue-green) once, or once per
**wave** (a region or cluster with its own router and metrics) with a bake between waves. Pure parts live here:
the error budget (``error_budget``), the ledger's reading (``ledger_view``) and the types the workflow, its
activities and the starters share. No client library is imported.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError, model_validator

from core.analysis import CloudWatchQuery, MetricQuery
from core.approval import ApprovalPolicy
from core.bluegreen import BlueGreenInput
from core.canary import CanaryRampInput, PlanStep
from core.duration import Duration
from core.runbook import RunbookInput, RunbookMeta, RunbookResult

Strategy = Literal["canary", "blue-green"]
# strategy -> (the child's runbook name, its workflow type)
STRATEGIES: dict[str, tuple[str, str]] = {
    "canary": ("canary-ramp", "CanaryRamp"),
    "blue-green": ("blue-green", "BlueGreenCutover"),
}
NAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
ONE_RUN = "all"  # the wave name of a stage without waves


class HttpCheckSpec(BaseModel):
    """A check step: an HTTP smoke request after a stage or a wave (``kind: http``, the default kind)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["http"] = "http"
    name: str = Field(min_length=1)
    url: str = Field(min_length=1, description="absolute URL; {version}, {service}, {stage} and {wave} expand")
    expect_status: int = Field(200, ge=100, le=599)
    expect_body: str | None = Field(None, description="text the body must contain; the same fields expand")
    attempts: int = Field(3, ge=1, le=50)
    interval: Duration = timedelta(seconds=5)
    timeout_seconds: float = Field(5, gt=0, le=300)

    @model_validator(mode="after")
    def _absolute(self) -> "HttpCheckSpec":
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"url must be an absolute http(s) URL, not {self.url!r}")
        return self


class JobCheckSpec(BaseModel):
    """A check step that runs a Kubernetes Job (batch/v1) to its end after a stage or a wave (``kind: job``): e2e,
    performance, security or load tests packaged as an image. The Job is named from the run, the stage, the wave
    and the check (a retry finds it, never a second); Complete passes, Failed (or not finished by ``timeout``)
    fails the check as a failed smoke does."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["job"]
    name: str = Field(pattern=NAME, max_length=40, description="also the start of the Job's name")
    image: str = Field(min_length=1, description="the test image; {version}, {service}, {stage} and {wave} expand")
    command: list[str] = Field(default_factory=list, description="the container's command (the image's entrypoint "
                                                                 "if empty); the same fields expand")
    args: list[str] = Field(default_factory=list, description="the container's args; the same fields expand")
    namespace: str = Field("default", pattern=NAME, description="where the Job runs")
    context: str | None = Field(None, min_length=1, description="the kubeconfig context (default: the worker's)")
    timeout: Duration = Field(timedelta(minutes=10), description="the Job's activeDeadlineSeconds; then it failed")
    backoff_limit: int = Field(0, ge=0, le=10, description="pod retries before the Job is Failed")
    poll_interval: Duration = Field(timedelta(seconds=5), description="how often the Job's status is read")

    @model_validator(mode="after")
    def _sane(self) -> "JobCheckSpec":
        if any(c.isspace() for c in self.image):
            raise ValueError(f"image must not contain blanks: {self.image!r}")
        if not timedelta(seconds=1) <= self.timeout <= timedelta(hours=24):
            raise ValueError("timeout must be between 1s and 24h")
        if not timedelta(seconds=0.1) <= self.poll_interval <= timedelta(minutes=5):
            raise ValueError("poll_interval must be between 0.1s and 5m")
        return self


def job_name(check: str, workflow_id: str, run_id: str, where: str) -> str:
    """A job check's Job name: the check's name and a digest of the run, the stage/wave and the check, so a retried
    activity (or a replayed workflow) finds the same Job and another run or wave never does (at most 51 characters,
    a DNS label)."""
    import hashlib

    digest = hashlib.sha256(f"{workflow_id}/{run_id}/{where}/{check}".encode()).hexdigest()[:10]
    return f"{check}-{digest}"


def _check_kind(value: Any) -> str:
    kind = value.get("kind", "http") if isinstance(value, dict) else getattr(value, "kind", "http")
    return str(kind)


# A check step of either kind: ``kind`` chooses (omitted: http); an unknown kind is refused naming ``kind``.
CheckSpec = Annotated[
    Union[Annotated[HttpCheckSpec, Tag("http")], Annotated[JobCheckSpec, Tag("job")]],
    Discriminator(_check_kind, custom_error_type="check_kind",
                  custom_error_message="kind must be http or job", custom_error_context={"discriminator": "kind"}),
]


class WaveSpec(BaseModel):
    """One production wave: a region or cluster, its own router (and metrics arguments), promoted on its own."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME)
    router: dict[str, Any] = Field(
        description="the wave's router: canary {kind: alb | httproute, ...}; blue-green {kind: alb | kubernetes, ...}"
    )
    parameters: dict[str, Any] = Field(default_factory=dict, description="the child's parameters for this wave only")
    args: dict[str, str] = Field(default_factory=dict, description="metric query arguments of this wave (region...)")
    checks: list[CheckSpec] = Field(default_factory=list, description="after the wave is promoted")

    @model_validator(mode="after")
    def _router(self) -> "WaveSpec":
        if not self.router:
            raise ValueError("router is empty: each wave needs its own router")
        if "kind" not in self.router:
            raise ValueError("router.kind is missing (alb, httproute or kubernetes)")
        return self


class StageSpec(BaseModel):
    """One environment of the release."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME)
    environment: str = Field("", description="chooses the approval policy; default: the stage's name")
    strategy: Strategy
    parameters: dict[str, Any] = Field(
        default_factory=dict, description="the child runbook's parameters (not service, version or image)"
    )
    waves: list[WaveSpec] = Field(default_factory=list, description="empty: one run with the stage's parameters")
    bake: Duration = Field(timedelta(0), description="wait between two waves (the promoted wave keeps serving)")
    checks: list[CheckSpec] = Field(default_factory=list, description="after the stage's last wave")
    error_budget: bool = Field(False, description="gate the stage and each of its waves on the error budget")
    rollback_promoted: bool = Field(
        True, description="stop the line: a wave that rolls back (or an abort) also rolls back the promoted waves"
    )

    @model_validator(mode="after")
    def _defaults(self) -> "StageSpec":
        if not self.environment:
            self.environment = self.name
        names = [w.name for w in self.waves]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"waves: names must be unique ({', '.join(twice)} given twice)")
        for key in ("service", "version", "image", "meta"):
            if key in self.parameters:
                raise ValueError(f"parameters.{key}: set by the release itself, not per stage")
        return self


def default_availability() -> CloudWatchQuery:
    return CloudWatchQuery(
        namespace="Demo/Service", metric_name="Availability", dimensions={"Service": "{{service}}"},
        statistic="Average", period_seconds=86400, window=timedelta(days=30),
    )


class SloSpec(BaseModel):
    """The service's availability objective (the platform's: 99.9 % over 30 days, 43.2 minutes a month)."""

    model_config = ConfigDict(extra="forbid")

    objective: float = Field(99.9, gt=0, lt=100, description="percent")
    window: Duration = timedelta(days=30)
    availability: MetricQuery = Field(
        default_factory=default_availability,
        description="a query whose value is the availability in percent over the window ({{service}}, "
        "{{environment}}, {{wave}} and the wave's args expand)",
    )


class BudgetCheck(BaseModel):
    """One error-budget gate: what was measured, what it left, and whether it blocked (and who broke the glass)."""

    where: str
    at: datetime
    objective: float
    window_seconds: float
    availability: float | None = None
    remaining_percent: float | None = Field(None, description="the budget left, percent of the window's budget")
    blocked: bool
    reason: str
    break_glass: list[str] = Field(default_factory=list, description="who approved going on with a spent budget")
    gate_id: str | None = None


def error_budget(availability: float | None, objective: float) -> tuple[float | None, bool, str]:
    """(budget remaining in percent, blocked, why). A spent budget (or none measured) blocks the release.

    The budget is the unavailability the objective allows (100 - objective percent of the window); what the
    window's availability leaves of it is ``1 - (100 - availability) / (100 - objective)``."""
    if availability is None:
        return None, True, "availability could not be measured: the budget cannot be told, so it blocks"
    allowed = 100.0 - objective
    remaining = 100.0 * (1.0 - (100.0 - availability) / allowed)
    if remaining <= 0:
        return remaining, True, (f"error budget spent: availability {availability:.3f} % < objective {objective} % "
                                 f"({-remaining:.0f} % over budget)")
    return remaining, False, f"availability {availability:.3f} %, {remaining:.0f} % of the error budget left"


# ------------------------------------------------------------------------------------------ the ledger
Verdict = Literal["good", "bad"]


class LedgerEntry(BaseModel):
    """One verdict on a version in an environment, written once per (release run, environment, verdict)."""

    model_config = ConfigDict(extra="forbid")

    service: str
    environment: str
    version: str
    verdict: Verdict
    workflow_id: str = Field(description="the release run that judged it (the idempotency key with the rest)")
    reason: str = ""


class LedgerRow(LedgerEntry):
    at: datetime


class LedgerQuery(BaseModel):
    service: str


class LedgerView(BaseModel):
    """Per environment the last version that finished healthy (never one marked bad), and the versions marked bad."""

    service: str
    last_good: dict[str, str] = Field(default_factory=dict, description="environment -> version")
    bad: dict[str, str] = Field(default_factory=dict, description="version -> why, and by which run")


def ledger_view(service: str, rows: list[LedgerRow]) -> LedgerView:
    """The ledger read: a version marked bad anywhere is never anyone's last known good."""
    ordered = sorted(rows, key=lambda r: r.at)
    bad = {r.version: f"{r.reason or 'marked bad'} ({r.environment}, {r.workflow_id})" for r in ordered
           if r.verdict == "bad"}
    last_good: dict[str, str] = {}
    for row in ordered:
        if row.verdict == "good" and row.version not in bad:
            last_good[row.environment] = row.version
    return LedgerView(service=service, last_good=last_good, bad=bad)


# ------------------------------------------------------------------------------------------ the view
WavePhase = Literal["pending", "budget", "running", "promoted", "failed", "rolled-back", "restoring", "restored",
                    "not-restored"]


class WaveView(BaseModel):
    stage: str
    wave: str
    phase: WavePhase = "pending"
    child_workflow_id: str | None = None
    child_status: str | None = None
    summary: str = ""
    restore_workflow_id: str | None = Field(None, description="the run that took this wave back to last known good")
    started_at: datetime | None = None
    finished_at: datetime | None = None


class StageView(BaseModel):
    name: str
    environment: str
    strategy: Strategy
    phase: Literal["pending", "approval", "running", "checks", "done", "failed", "skipped"] = "pending"
    waves: list[WaveView] = Field(default_factory=list)
    checks: list[dict[str, Any]] = Field(default_factory=list)
    gate_id: str | None = None


# --------------------------------------------------------------------------------------------------- the contract
class ReleaseInput(RunbookInput):
    service: str = Field(min_length=1, pattern=NAME)
    version: str = Field(min_length=1, description="the version to release (canary version / blue-green image)")
    stages: list[StageSpec] = Field(min_length=1)
    slo: SloSpec = Field(default_factory=SloSpec)
    override_bad_version: bool = Field(
        False, description="a version marked bad by a run is refused; true: ask for an approval to release it anyway"
    )

    def problems(self) -> list[str]:
        problems: list[str] = []
        if self.version != self.version.strip():
            problems.append("version: blank or padded")
        names = [s.name for s in self.stages]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            problems.append(f"stages: names must be unique ({', '.join(twice)} given twice)")
        for index, stage in enumerate(self.stages):
            for wave in waves_of(stage):
                where = f"stages.{index}" + (f".waves.{stage.waves.index(wave)}" if wave is not None else "")
                try:
                    child_input(self, stage, wave, self.version, self.meta, ApprovalPolicy(required_approvals=0))
                except ValidationError as err:
                    first = err.errors()[0]
                    field = ".".join(str(p) for p in first["loc"])
                    message = first["msg"].removeprefix("Value error, ")
                    problems.append(f"{where} ({stage.name} {stage.strategy}): parameter "
                                    f"{field + ': ' if field else ''}{message}")
        return problems


class ReleaseResult(RunbookResult):
    service: str
    version: str
    stages: list[StageView] = Field(default_factory=list)
    budget: list[BudgetCheck] = Field(default_factory=list)
    last_known_good: dict[str, str] = Field(default_factory=dict, description="environment -> version, at the end")
    marked_bad: bool = Field(False, description="this run marked the version bad")


def waves_of(stage: StageSpec) -> list[WaveSpec | None]:
    return list(stage.waves) if stage.waves else [None]


def child_parameters(input: ReleaseInput, stage: StageSpec, wave: WaveSpec | None, version: str) -> dict[str, Any]:
    """The child runbook's parameters: the stage's, the wave's laid over them, then the release's own."""
    fields = {"service": input.service, "version": version, "stage": stage.name, "wave": wave.name if wave else ONE_RUN}
    params: dict[str, Any] = expand_all({**stage.parameters, **(wave.parameters if wave else {})}, fields)
    params["service"] = input.service
    if stage.strategy == "canary":
        params["version"] = version
        params.setdefault("environment", stage.environment)
        if wave is not None:
            params["router"] = dict(wave.router)
            params["args"] = {**params.get("args", {}), **wave.args}
    else:
        params["image"] = version
        params["environment"] = stage.environment
        if wave is not None:
            router = dict(wave.router)
            kind = router.pop("kind")
            params["router"] = kind
            params[kind] = router
    return params


def child_input(input: ReleaseInput, stage: StageSpec, wave: WaveSpec | None, version: str, meta: RunbookMeta,
                policy: ApprovalPolicy, *, preapproved: str = "", restore: bool = False) -> RunbookInput:
    runbook, _ = STRATEGIES[stage.strategy]
    child_meta = meta.model_copy(update={
        "runbook": runbook, "environment": stage.environment, "approval": policy, "approval_by_environment": {},
        "ui_url": None,
    })
    params = child_parameters(input, stage, wave, version)
    if stage.strategy == "canary":
        ramp = CanaryRampInput.model_validate({**params, "meta": child_meta})
        return canary_restore(ramp, input.version) if restore else ramp
    return BlueGreenInput.model_validate({**params, "meta": child_meta, "preapproved": preapproved or None})


# a canary router's two sides, whose roles a restore swaps
SIDES = {"alb": [("stable_target_group", "canary_target_group")],
         "httproute": [("stable_service", "canary_service"), ("stable_deployment", "canary_deployment")]}


def canary_restore(ramp: CanaryRampInput, released: str) -> CanaryRampInput:
    """A promoted canary wave taken back to the last known good (``ramp.version``). canary-ramp moves traffic (and,
    on an HTTPRoute, replicas) between two sides that are deployed elsewhere; it never changes an image. So the last
    known good is not re-deployed anywhere: it still runs on the side the wave ramped away from, the stable side,
    which served before this wave. The restore is a canary-ramp with the sides' roles swapped, straight to 100 %:
    all traffic back on the stable target group (HTTPRoute: the stable Deployment scaled back up first, the canary's
    scaled down after), the released version's side at 0 %. It labels that side ``released`` (its stable_version)."""
    router = ramp.router.model_dump()
    for stable, canary in SIDES[router["kind"]]:
        router[stable], router[canary] = router[canary], router[stable]
    return CanaryRampInput.model_validate({**ramp.model_dump(exclude={"router", "plan", "stable_version", "meta"}),
                                           "router": router, "plan": [PlanStep(set_weight=100)],
                                           "stable_version": released, "meta": ramp.meta})


def expand(text: str, fields: dict[str, str]) -> str:
    """``{service}``, ``{version}``, ``{stage}`` and ``{wave}`` (the keys of ``fields``) expanded in ``text``."""
    for key, value in fields.items():
        text = text.replace("{" + key + "}", value)
    return text


def expand_all(value: Any, fields: dict[str, str]) -> Any:
    """``{service}``, ``{version}``, ``{stage}`` and ``{wave}`` expanded in every string of a child's parameters."""
    if isinstance(value, str):
        return expand(value, fields)
    if isinstance(value, dict):
        return {k: expand_all(v, fields) for k, v in value.items()}
    if isinstance(value, list):
        return [expand_all(v, fields) for v in value]
    return value
