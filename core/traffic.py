"""The traffic layer's data: what each router routes, as the runbooks' inputs give it (workflows/traffic/ acts on it).

One ALB description (``AlbListener``: a listener, or one of its rules, named by ARN or by load balancer and port)
under both runbooks' ALB configs, and one Kubernetes namespace/context under both Kubernetes configs:

- the canary ramp's ``AlbRouterSpec`` / ``HttpRouteRouterSpec``: a weighted split between a stable and a canary
  target group / HTTPRoute backendRef (and the Deployments behind them);
- the blue-green cutover's ``AlbRouterConfig`` / ``KubernetesRouterConfig``: one target group / Deployment per
  colour, the listener's default action / the Service's selector naming the live one.

No client library here: workflows, the catalog and the command line import it alike.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator

from core.aws import AlbTarget

COLOURS = ("blue", "green")


def other_colour(colour: str) -> str:
    return COLOURS[1 - COLOURS.index(colour)]


class AlbListener(BaseModel):
    """An ALB listener (or one of its rules), by ARN or by load balancer name and port (looked up once, read-only,
    through the ``alb_find_listener`` activity)."""

    model_config = ConfigDict(extra="forbid")

    listener_arn: str | None = None
    load_balancer: str | None = Field(None, description="load balancer name, with port, instead of listener_arn")
    port: int | None = None
    rule_arn: str | None = None
    region: str | None = None

    @model_validator(mode="after")
    def _where(self) -> "AlbListener":
        if not self.listener_arn and not (self.load_balancer and self.port):
            raise ValueError("an ALB router needs listener_arn, or load_balancer and port")
        return self


class AlbRouterSpec(AlbListener):
    """The canary's ALB: the listener's weighted forward action between the stable and canary target groups.

    Name it by ARNs (``listener_arn``, target group ARNs), or by names (``load_balancer`` + ``port``, target group
    names): names are looked up once, read-only, through the ``alb_find_listener`` activity.
    """

    kind: Literal["alb"] = "alb"
    stable_target_group: str | None = Field(None, description="ARN or name; default <service>-stable")
    canary_target_group: str | None = Field(None, description="ARN or name; default <service>-canary")

    @model_validator(mode="after")
    def _distinct(self) -> "AlbRouterSpec":
        if self.stable_target_group and self.stable_target_group == self.canary_target_group:
            raise ValueError("stable and canary target groups must differ")
        return self

    @property
    def resolved(self) -> bool:
        return bool(self.listener_arn) and all(
            (tg or "").startswith("arn:") for tg in (self.stable_target_group, self.canary_target_group)
        )


class AlbRouterConfig(AlbListener):
    """The blue-green cutover's ALB: one target group per colour; the listener's forward action sends everything
    to the live colour's group."""

    target_groups: dict[str, str] = Field(
        default_factory=dict, description="colour -> target group ARN or name (default <service>-<colour>)"
    )
    targets: list[AlbTarget] = Field(
        default_factory=list, description="the new colour's targets to register; none = the groups are fed elsewhere"
    )
    poll_seconds: float = Field(10, gt=0, description="target health polling while the new colour comes up")


class HttpRouteRouterSpec(BaseModel):
    """A Gateway API HTTPRoute rule splitting traffic between two Services, and the two Deployments behind them.
    Names default to the service's: route <service>, Services and Deployments <service>-stable / <service>-canary."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["httproute"] = "httproute"
    context: str | None = None
    namespace: str = "default"
    route: str | None = Field(None, description="HTTPRoute name")
    rule_index: int = Field(0, ge=0)
    stable_service: str | None = None
    canary_service: str | None = None
    stable_deployment: str | None = None
    canary_deployment: str | None = None


class KubernetesRouterConfig(BaseModel):
    """The blue-green cutover's Kubernetes objects: Deployments ``<deployments>-<colour>`` labelled
    ``<colour_label>=<colour>``, and the Service whose selector names the live colour."""

    model_config = ConfigDict(extra="forbid")

    context: str | None = None
    namespace: str = "default"
    service_name: str | None = Field(None, description="the Service that routes traffic; default: the service name")
    deployments: str | None = Field(None, description="Deployments are <deployments>-<colour>; default: the service name")
    colour_label: str = "colour"
    container_name: str = "app"
    container_port: int | None = None
    poll_seconds: float = Field(5, gt=0)


RouterSpec = Annotated[Union[AlbRouterSpec, HttpRouteRouterSpec], Field(discriminator="kind")]


class Discovery(BaseModel):
    """What a blue-green router's read-only discovery found: the live colour, the new one, and whether the new
    version already serves."""

    live: str
    new: str
    already_live: bool = False


def canary_replicas(stable_replicas: int, weight: int) -> int:
    """Replicas the canary needs to take ``weight`` % of the stable's load: ceil, at least 1 while weight > 0."""
    if weight <= 0:
        return 0
    return max(1, math.ceil(stable_replicas * weight / 100))
