"""Blue-green cutover's contract: its input (the router's section, the preview and smoke checks, the bake and its
analysis) and its result.

Shared types, no client library: the workflow (workflows/blue_green.py), the release that starts it as a child, the
dry run, starters and tests build and read them without importing a workflow, and the sandbox passes them through
instead of rebuilding them for every run and replay.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from core.analysis import AnalysisTemplate, AnalysisVerdict
from core.duration import Duration
from core.runbook import RunbookInput, RunbookResult
from core.traffic import COLOURS, AlbRouterConfig, KubernetesRouterConfig

# the bake's HTTP health metric (built from health_checks): the % of a tick's requests to the new colour that failed
HEALTH_METRIC = "http-health"


# --------------------------------------------------------------------------------------------------- types
class PreviewCheck(BaseModel):
    """An HTTP check against one colour: ``path`` is appended to the colour's base URL."""

    model_config = ConfigDict(extra="forbid")

    name: str
    path: str = "/"
    expect_status: int = 200
    expect_body: str | None = Field(None, description="text the body must contain; {version} and {colour} expand")
    timeout_seconds: float = 5


class BlueGreenInput(RunbookInput):
    service: str = Field(min_length=1, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    image: str = Field(min_length=1, description="the new version (container image, or a version label for ALB)")
    environment: str = Field("production", description="chooses the approval policy in the catalog")
    router: Literal["kubernetes", "alb"] = "kubernetes"
    kubernetes: KubernetesRouterConfig | None = None
    alb: AlbRouterConfig | None = None
    preview_urls: dict[str, str] = Field(description="base URL of each colour, reaching that colour only")
    health_checks: list[PreviewCheck] = Field(default_factory=lambda: [PreviewCheck(name="health", path="/healthz")])
    smoke_checks: list[PreviewCheck] = Field(default_factory=list)
    check_attempts: int = Field(3, ge=1, le=50)
    check_interval: Duration = timedelta(seconds=2)
    pre_analysis: AnalysisTemplate | None = Field(None, description="pre-promotion analysis; None = skip")
    pre_analysis_duration: Duration = timedelta(minutes=2)
    bake: Duration = timedelta(minutes=10)
    bake_interval: Duration = timedelta(minutes=1)
    bake_analysis: AnalysisTemplate | None = Field(
        None, description="post-promotion analysis, its metrics measured every bake_interval; None = HTTP health "
        "only (the catalog's entry gives the policy's)"
    )
    bake_probes: int = Field(4, ge=1, le=100, description="requests per health check in one bake tick")
    health_failure_limit: float = Field(
        5.0, ge=0, le=100, description="bake: the http-health metric fails a tick in which more than this % of its "
        "requests failed, and the first such tick switches back (the catalog's entry gives the policy's)",
    )
    scale_down_delay: Duration = timedelta(seconds=30)
    progress_deadline: Duration = timedelta(minutes=10)
    max_bake_extension: Duration = timedelta(hours=24)
    preapproved: str | None = Field(
        None, description="the cutover was approved outside this run (a release's stage gate, or its stop-the-line "
        "rollback): who and where; the cutover gate is then not opened (the bake's own gates still are)",
    )

    @model_validator(mode="after")
    def _consistent(self) -> "BlueGreenInput":
        if self.router == "kubernetes":
            k8s = self.kubernetes or KubernetesRouterConfig()
            self.kubernetes = k8s.model_copy(update={
                "service_name": self.service if k8s.service_name is None else k8s.service_name,
                "deployments": self.service if k8s.deployments is None else k8s.deployments,
            })
        if self.router == "alb":
            if self.alb is None:
                raise ValueError("router alb needs the alb section (listener and the target group of each colour)")
            groups = {c: f"{self.service}-{c}" for c in COLOURS} if not self.alb.target_groups else self.alb.target_groups
            self.alb = self.alb.model_copy(update={"target_groups": groups})
            absent = [c for c in COLOURS if c not in self.alb.target_groups]
            if absent:
                raise ValueError(f"alb.target_groups needs a target group per colour (missing: {', '.join(absent)})")
        missing = [c for c in COLOURS if c not in self.preview_urls]
        if missing:
            raise ValueError(f"preview_urls needs a URL for each colour (missing: {', '.join(missing)})")
        if self.bake_interval <= timedelta(0):
            raise ValueError("bake_interval must be positive")
        if not self.health_checks and self.bake_analysis is None:
            raise ValueError("health_checks is empty and there is no bake_analysis: the bake would judge nothing")
        if self.health_checks and self.bake_analysis and HEALTH_METRIC in [m.name for m in self.bake_analysis.metrics]:
            raise ValueError(f"bake_analysis: the metric name {HEALTH_METRIC} is the bake's own HTTP health metric "
                             "(built from health_checks and health_failure_limit); name yours otherwise")
        return self


class BlueGreenResult(RunbookResult):
    service: str
    router: str
    live_colour: str | None = Field(None, description="the colour serving traffic at the end")
    previous_colour: str | None = None
    new_colour: str | None = None
    image: str
    switched: bool = False
    switched_back: bool = False
    preview: list[dict[str, Any]] = Field(default_factory=list)
    bake_verdict: AnalysisVerdict | None = None
    health_probes: int = 0
    health_failures: int = 0
