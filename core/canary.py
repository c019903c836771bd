"""The canary ramp's data: the plan (steps as data), router specs, input, result, query view and steering inputs.

Kept out of the workflow module so the workflow sandbox does not rebuild these pydantic models on every run, and so
starters (CLI, Slack) and the catalog can use them without importing workflow code. No client library here.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from core.analysis import AnalysisTemplate, AnalysisVerdict, Measurement, default_template, stock_templates
from core.duration import Duration, format_duration
from core.runbook import RunbookInput, RunbookResult
from core.traffic import AlbRouterSpec, HttpRouteRouterSpec, RouterSpec, canary_replicas  # noqa: F401 (re-exported)

RECENT_MEASUREMENTS = 40
DEFAULT_MAX_EXTENSION = timedelta(hours=24)

# A service names target groups (<service>-stable, at most 32 characters in all), Kubernetes objects and metric
# dimensions: letters, digits and inner hyphens. Surrounding whitespace is stripped first, so a blank name is refused.
ServiceName = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=25, pattern=r"^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?$")
]
NonBlank = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]


# --------------------------------------------------------------------------------------------------- the plan
class PauseSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    duration: Duration | None = Field(None, description="None: until a person approves through the gate")


class AnalysisStepSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    template: str = "default"
    duration: Duration


class PlanStep(BaseModel):
    """Exactly one of ``set_weight``, ``pause``, ``analysis``: ``{set_weight: 5}``, ``{pause: {duration: 10m}}``,
    ``{pause: {}}`` (until approved), ``{analysis: {template: default, duration: 10m}}``."""

    model_config = ConfigDict(extra="forbid")

    set_weight: int | None = Field(None, ge=0, le=100)
    pause: PauseSpec | None = None
    analysis: AnalysisStepSpec | None = None

    @model_validator(mode="after")
    def _one(self) -> "PlanStep":
        given = [k for k in ("set_weight", "pause", "analysis") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"a plan step is exactly one of set_weight, pause, analysis (got {given or 'none'})")
        return self

    def describe(self) -> str:
        if self.set_weight is not None:
            return f"set weight {self.set_weight}%"
        if self.pause is not None:
            return f"pause {format_duration(self.pause.duration)}" if self.pause.duration else "pause until approved"
        assert self.analysis is not None
        return f"analysis {self.analysis.template} for {format_duration(self.analysis.duration)}"


def default_plan() -> list[PlanStep]:
    """The deployment policy: 5 % for 10 minutes, 25 % for 20, 50 % for 30, then 100 %, analysing every minute."""
    steps: list[PlanStep] = []
    for weight, minutes in ((5, 10), (25, 20), (50, 30)):
        steps.append(PlanStep(set_weight=weight))
        steps.append(PlanStep(analysis=AnalysisStepSpec(template="default", duration=timedelta(minutes=minutes))))
    steps.append(PlanStep(set_weight=100))
    return steps


def plan_hash(plan: list[PlanStep], templates: list[AnalysisTemplate]) -> str:
    body = json.dumps(
        {"plan": [s.model_dump(mode="json", exclude_none=True) for s in plan], "templates": [t.model_dump(mode="json") for t in templates]},
        sort_keys=True,
    )
    return "sha256:" + hashlib.sha256(body.encode()).hexdigest()[:16]


# --------------------------------------------------------------------------------------------------- input/result
class CanaryRampInput(RunbookInput):
    service: ServiceName = Field(description="letters, digits and hyphens; router names default to <service>-stable/-canary")
    version: NonBlank = Field(description="the canary's version (metric dimension / label)")
    stable_version: NonBlank = "stable"
    router: RouterSpec
    plan: list[PlanStep] = Field(default_factory=default_plan, min_length=1)
    templates: list[AnalysisTemplate] = Field(default_factory=lambda: [default_template()])
    args: dict[str, str] = Field(default_factory=dict, description="extra analysis arguments for query templates")
    decision_timeout: Duration = Field(timedelta(minutes=30), description="deadline of the continue-or-roll-back gate")
    environment: str = Field("", description="informational (meta.environment decides the policy); an analysis argument")
    max_extension: Duration = Field(
        DEFAULT_MAX_EXTENSION, description="cap on the total time `extend` may add over the whole run (catalog default 24h)"
    )

    @model_validator(mode="after")
    def _router_names(self) -> "CanaryRampInput":
        """Fill the router's names from the service by convention: <service>-stable / <service>-canary."""
        svc, r = self.service, self.router
        if isinstance(r, AlbRouterSpec):
            r.stable_target_group = r.stable_target_group or f"{svc}-stable"
            r.canary_target_group = r.canary_target_group or f"{svc}-canary"
        else:
            r.route = r.route or svc
            r.stable_service = r.stable_service or f"{svc}-stable"
            r.canary_service = r.canary_service or f"{svc}-canary"
            r.stable_deployment = r.stable_deployment or r.stable_service
            r.canary_deployment = r.canary_deployment or r.canary_service
        return self

    @model_validator(mode="after")
    def _templates_exist(self) -> "CanaryRampInput":
        names = {t.name for t in self.templates}
        wanted = sorted({s.analysis.template for s in self.plan if s.analysis and s.analysis.template not in names})
        if not wanted:
            return self
        stock = stock_templates()
        self.templates += [stock[n] for n in wanted if n in stock]  # named stock templates join the input
        missing = [n for n in wanted if n not in stock]
        if missing:
            raise ValueError(
                f"plan uses unknown analysis template(s) {', '.join(missing)} (have {', '.join(sorted(names))}; "
                f"stock: {', '.join(sorted(stock))})"
            )
        return self


class WeightChange(BaseModel):
    at: datetime
    weight: int
    step: int = Field(description="plan step index; -1 for rollback/promotion outside the plan")
    why: str = ""


class CanaryView(BaseModel):
    """The ``canary`` query: where the ramp is and what it measured."""

    step_index: int
    steps: int
    step: str
    step_ends_at: datetime | None = None
    current_weight: int
    plan_hash: str
    paused: bool
    promote_requested: bool
    phase: str
    last_verdict: AnalysisVerdict | None = None
    measurements_total: int = 0
    recent_measurements: list[Measurement] = Field(default_factory=list)
    weights: list[WeightChange] = Field(default_factory=list)
    extended: timedelta = Field(timedelta(0), description="total time added by `extend` so far")
    max_extension: timedelta = DEFAULT_MAX_EXTENSION


class CanaryRampResult(RunbookResult):
    service: str
    version: str
    plan_hash: str
    final_weight: int
    weights: list[WeightChange] = Field(default_factory=list)
    failed_step: int | None = None
    failed_step_name: str | None = None
    failed_criterion: str | None = Field(None, description="metric and condition that failed, e.g. 'error-rate < 0.5'")
    measured_values: list[float | None] = Field(default_factory=list)
    verdict: AnalysisVerdict | None = None
    measurements_total: int = 0


class SteerInput(BaseModel):
    by: str = Field(min_length=1)
    reason: str = ""


class ExtendInput(SteerInput):
    duration: Duration


