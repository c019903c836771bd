"""The two blue-green routers: how a colour is brought up, switched to, removed and retired.

Workflow-side code (it runs in the workflow sandbox): each method calls activities by method reference through the
``call`` function the workflow hands in, so retries and timeouts stay in one place.

- ``KubernetesRouter``: one Deployment per colour, ``<service>-<colour>``, labelled ``<colour_label>=<colour>``;
  the Service's selector names the live colour. The new colour is created from the live colour's pod template with
  the new image and the live replicas; switching rewrites the selector (read back by the activity).
- ``AlbRouter``: one target group per colour; the listener's (or rule's) forward action sends everything to the
  live colour's group. The new colour's targets are registered in its group; switching moves the forward action
  to the new group (verified by the activity); retiring deregisters the old group's targets.

``unretire`` undoes ``retire`` for an abort that arrives while the old colour is being retired (its replicas as
found / its deregistered targets registered again, then waited for until ready), so that traffic can go back to
it; ``retire_by_hand`` says what a person does when retiring failed and the run ends Held. Like the canary's ALB
  router, it takes ARNs or names (``load_balancer`` + ``port``, target group names, default
  ``<service>-blue`` / ``<service>-green``): names are resolved once, read-only, through ``alb_find_listener``
  (the answer is in history, so replays are deterministic). Without ``targets`` nothing is registered or
  deregistered: the target groups are fed by something else (an Auto Scaling group, the local demo services).

``discover`` is read-only and validates every target before the first change: a blank or unknown name, a Service
whose selector names no colour, a live Deployment with no replicas, a listener that forwards elsewhere or a target
group that does not exist raise ``InvalidInput`` / ``NotFound``, which the workflow turns into ``Refused``
("nothing was changed"). ``snapshot``/``restore`` hand what discovery learned to a continued run (continue-as-new).
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Protocol

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from pydantic import BaseModel, ConfigDict, Field, model_validator

    from activities.aws import ElbActivities
    from activities.kubernetes import KubernetesActivities
    from core import errors
    from core.aws import (
        AlbLookup,
        AlbLookupInput,
        AlbSwitchInput,
        AlbTarget,
        AlbTargetGroupRef,
        AlbTargetsInput,
        AlbTrafficRef,
    )
    from core.kubernetes import (
        DeploymentApply,
        DeploymentRef,
        DeploymentState,
        ScaleInput,
        ServiceRef,
        ServiceSelectorInput,
        WaitRolloutInput,
    )

if TYPE_CHECKING:
    from workflows.blue_green import BlueGreenInput

COLOURS = ("blue", "green")

Call = Callable[..., Awaitable[Any]]


class KubernetesRouterConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    context: str | None = None
    namespace: str = "default"
    service_name: str | None = Field(None, description="the Service that routes traffic; default: the service name")
    colour_label: str = "colour"
    container_name: str = "app"
    container_port: int | None = None
    poll_seconds: float = Field(5, gt=0)


class AlbRouterConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    listener_arn: str | None = None
    load_balancer: str | None = Field(None, description="load balancer name, with port, instead of listener_arn")
    port: int | None = None
    rule_arn: str | None = None
    region: str | None = None
    target_groups: dict[str, str] = Field(
        default_factory=dict, description="colour -> target group ARN or name (default <service>-<colour>)"
    )
    targets: list[AlbTarget] = Field(
        default_factory=list, description="the new colour's targets to register; none = the groups are fed elsewhere"
    )
    poll_seconds: float = Field(10, gt=0, description="target health polling while the new colour comes up")

    @model_validator(mode="after")
    def _where(self) -> "AlbRouterConfig":
        if not self.listener_arn and not (self.load_balancer and self.port):
            raise ValueError("an ALB router needs listener_arn, or load_balancer and port")
        return self


class Discovery(BaseModel):
    live: str
    new: str
    already_live: bool = False


class Router(Protocol):
    async def discover(self) -> Discovery: ...
    def snapshot(self) -> dict[str, Any]: ...
    def restore(self, state: dict[str, Any]) -> None: ...
    async def bring_up(self) -> None: ...
    async def wait_ready(self, deadline: timedelta) -> None: ...
    async def switch(self, colour: str) -> bool: ...
    async def remove(self, colour: str) -> None: ...
    async def retire(self, colour: str) -> None: ...
    async def unretire(self, colour: str, deadline: timedelta) -> str: ...
    def retire_by_hand(self, colour: str) -> str: ...


def _other(colour: str) -> str:
    return COLOURS[1 - COLOURS.index(colour)]


def _invalid(message: str) -> ApplicationError:
    return ApplicationError(message, type=errors.INVALID_INPUT, non_retryable=True)


def _blank(fields: dict[str, str | None]) -> None:
    """Names that are given but blank (or padded with spaces) are refused before anything is read or changed."""
    bad = [name for name, value in fields.items() if value is not None and (not value.strip() or value != value.strip())]
    if bad:
        raise _invalid(f"blank or padded name(s): {', '.join(bad)}")


class KubernetesRouter:
    def __init__(self, input: "BlueGreenInput", call: Call) -> None:
        assert input.kubernetes is not None
        self.cfg = input.kubernetes
        self.service = input.service
        self.image = input.image
        self.call = call
        self.selector: dict[str, str] = {}
        self.live_state: DeploymentState | None = None

    def ref(self, colour: str) -> DeploymentRef:
        return DeploymentRef(context=self.cfg.context, namespace=self.cfg.namespace, name=f"{self.service}-{colour}")

    @property
    def service_ref(self) -> ServiceRef:
        return ServiceRef(context=self.cfg.context, namespace=self.cfg.namespace, name=self.cfg.service_name or self.service)

    async def discover(self) -> Discovery:
        cfg = self.cfg
        _blank({"kubernetes.namespace": cfg.namespace, "kubernetes.service_name": cfg.service_name,
                "kubernetes.colour_label": cfg.colour_label, "kubernetes.container_name": cfg.container_name,
                "kubernetes.context": cfg.context})
        found = await self.call(KubernetesActivities.get_service_selector, self.service_ref)
        self.selector = dict(found.selector)
        label = self.cfg.colour_label
        live = self.selector.get(label)
        if live not in COLOURS:
            raise _invalid(
                f"service {self.cfg.namespace}/{self.service_ref.name} selects {self.selector}: its {label!r} label "
                f"must name the live colour ({' or '.join(COLOURS)})"
            )
        state = await self.call(KubernetesActivities.get_deployment, self.ref(live))
        if state.replicas < 1:
            raise _invalid(f"the live colour's deployment {self.ref(live).name} has no replicas to match")
        self.live_state = state
        return Discovery(live=live, new=_other(live), already_live=state.image == self.image)

    def snapshot(self) -> dict[str, Any]:
        return {"selector": dict(self.selector),
                "live_state": self.live_state.model_dump(mode="json") if self.live_state else None}

    def restore(self, state: dict[str, Any]) -> None:
        self.selector = dict(state.get("selector") or {})
        live = state.get("live_state")
        self.live_state = DeploymentState.model_validate(live) if live else None

    async def bring_up(self) -> None:
        live = self.live_state
        assert live is not None
        label = self.cfg.colour_label
        new = _other(self.selector[label])
        await self.call(
            KubernetesActivities.apply_deployment,
            DeploymentApply(
                ref=self.ref(new),
                image=self.image,
                replicas=live.replicas,
                labels={**live.labels, label: new},
                selector={**live.selector, label: new},
                container_name=self.cfg.container_name,
                container_port=self.cfg.container_port,
                template_from=self.ref(self.selector[label]),
            ),
        )

    async def wait_ready(self, deadline: timedelta, colour: str | None = None) -> None:
        colour = colour or _other(self.selector[self.cfg.colour_label])
        poll = self.cfg.poll_seconds
        await self.call(
            KubernetesActivities.wait_rollout,
            WaitRolloutInput(ref=self.ref(colour), deadline_seconds=deadline.total_seconds(), poll_seconds=poll),
            timeout=deadline + timedelta(minutes=2),
            heartbeat=timedelta(seconds=max(30.0, 3 * poll)),
        )

    async def switch(self, colour: str) -> bool:
        wanted = {**self.selector, self.cfg.colour_label: colour}
        result = await self.call(
            KubernetesActivities.set_service_selector, ServiceSelectorInput(ref=self.service_ref, selector=wanted)
        )
        return result.changed

    async def remove(self, colour: str) -> None:
        await self.call(KubernetesActivities.delete_deployment, self.ref(colour))

    async def retire(self, colour: str) -> None:
        await self.call(KubernetesActivities.scale_deployment, ScaleInput(ref=self.ref(colour), replicas=0, ignore_missing=True))

    async def unretire(self, colour: str, deadline: timedelta) -> str:
        assert self.live_state is not None
        replicas = self.live_state.replicas
        await self.call(KubernetesActivities.scale_deployment, ScaleInput(ref=self.ref(colour), replicas=replicas))
        await self.wait_ready(deadline, colour)
        return f"{self.ref(colour).name} back to {replicas} replica(s), ready"

    def retire_by_hand(self, colour: str) -> str:
        ref = self.ref(colour)
        context = f" --context {ref.context}" if ref.context else ""
        return (f"scale deployment {ref.namespace}/{ref.name} to 0 by hand "
                f"(kubectl{context} -n {ref.namespace} scale deployment {ref.name} --replicas=0)")


class AlbRouter:
    def __init__(self, input: "BlueGreenInput", call: Call) -> None:
        assert input.alb is not None
        self.cfg = input.alb
        self.call = call
        self.new: str | None = None
        self.retired: list[AlbTarget] = []  # the old colour's targets that retire deregistered (unretire's list)

    @property
    def traffic(self) -> AlbTrafficRef:
        assert self.cfg.listener_arn is not None, "resolved in discover"
        return AlbTrafficRef(listener_arn=self.cfg.listener_arn, rule_arn=self.cfg.rule_arn, region=self.cfg.region)

    def group(self, colour: str) -> str:
        return self.cfg.target_groups[colour]

    async def _resolve(self) -> None:
        """Turn names into ARNs once (read-only lookup), as the canary's ALB router does."""
        cfg = self.cfg
        _blank({"alb.listener_arn": cfg.listener_arn, "alb.load_balancer": cfg.load_balancer,
                "alb.rule_arn": cfg.rule_arn, "alb.region": cfg.region,
                **{f"alb.target_groups.{c}": tg for c, tg in cfg.target_groups.items()}})
        if len(set(cfg.target_groups.values())) != len(cfg.target_groups):
            raise _invalid(f"alb.target_groups names one target group for both colours: {cfg.target_groups}")
        names = [tg for tg in cfg.target_groups.values() if not tg.startswith("arn:")]
        if cfg.listener_arn and not names:
            return
        if not cfg.load_balancer or not cfg.port:
            raise _invalid("target groups given by name need load_balancer and port to look them up")
        found: AlbLookup = await self.call(
            ElbActivities.alb_find_listener,
            AlbLookupInput(load_balancer=cfg.load_balancer, port=cfg.port, target_groups=names, region=cfg.region),
        )
        missing = [n for n in names if n not in found.target_groups]
        if missing:
            raise ApplicationError(f"target group(s) not found: {', '.join(missing)}", type=errors.NOT_FOUND, non_retryable=True)
        self.cfg = cfg.model_copy(
            update={
                "listener_arn": cfg.listener_arn or found.listener_arn,
                "target_groups": {c: tg if tg.startswith("arn:") else found.target_groups[tg] for c, tg in cfg.target_groups.items()},
            }
        )

    def where(self) -> str:
        return self.cfg.listener_arn or f"{self.cfg.load_balancer}:{self.cfg.port}"

    async def discover(self) -> Discovery:
        await self._resolve()
        weights = (await self.call(ElbActivities.alb_get_weights, self.traffic)).weights
        serving = [arn for arn, w in weights.items() if w > 0]
        colour_of = {arn: c for c, arn in self.cfg.target_groups.items()}
        if len(serving) != 1 or serving[0] not in colour_of:
            raise _invalid(
                f"listener {self.where()} forwards to {weights}: a blue-green cutover needs all traffic on "
                "exactly one colour's target group (finish or roll back any canary first)"
            )
        live = colour_of[serving[0]]
        self.new = _other(live)
        # the new colour's target group must exist too (read-only; an unknown ARN is NotFound)
        await self.call(ElbActivities.alb_target_health, AlbTargetGroupRef(target_group_arn=self.group(self.new), region=self.cfg.region))
        return Discovery(live=live, new=self.new)

    def snapshot(self) -> dict[str, Any]:
        return {"cfg": self.cfg.model_dump(mode="json"), "new": self.new}

    def restore(self, state: dict[str, Any]) -> None:
        if state.get("cfg"):
            self.cfg = AlbRouterConfig.model_validate(state["cfg"])
        self.new = state.get("new")

    async def bring_up(self) -> None:
        assert self.new is not None
        if not self.cfg.targets:
            return
        await self.call(
            ElbActivities.alb_register_targets,
            AlbTargetsInput(target_group_arn=self.group(self.new), targets=self.cfg.targets, region=self.cfg.region),
        )

    async def wait_ready(self, deadline: timedelta, colour: str | None = None, targets: list[AlbTarget] | None = None) -> None:
        """Poll target health with durable timers until every target (default: the new colour's) is healthy or the
        deadline passes."""
        colour = colour or self.new
        assert colour is not None
        wanted = {t.id for t in (self.cfg.targets if targets is None else targets)}
        ends = workflow.now() + deadline
        while True:
            health = await self.call(
                ElbActivities.alb_target_health, AlbTargetGroupRef(target_group_arn=self.group(colour), region=self.cfg.region)
            )
            states = {t.id: t.state for t in health.targets if t.id in wanted}
            if len(states) == len(wanted) and all(s == "healthy" for s in states.values()):
                return
            if workflow.now() >= ends:
                raise ApplicationError(
                    f"targets of {colour} not healthy within {deadline}: {states}",
                    type=errors.DEADLINE_EXCEEDED,
                    non_retryable=True,
                )
            await workflow.sleep(min(self.cfg.poll_seconds, max((ends - workflow.now()).total_seconds(), 1)),
                                 summary=f"{colour} targets not healthy yet ({len(states)}/{len(wanted)} seen): poll again")

    async def switch(self, colour: str) -> bool:
        result = await self.call(
            ElbActivities.alb_switch_target_group, AlbSwitchInput(ref=self.traffic, target_group_arn=self.group(colour))
        )
        return result.changed

    async def remove(self, colour: str) -> None:
        if not self.cfg.targets:
            return
        await self.call(
            ElbActivities.alb_deregister_targets,
            AlbTargetsInput(target_group_arn=self.group(colour), targets=self.cfg.targets, region=self.cfg.region),
        )

    async def retire(self, colour: str) -> None:
        if not self.cfg.targets:  # the groups are fed elsewhere: the old colour's capacity is not ours to remove
            return
        group = self.group(colour)
        health = await self.call(ElbActivities.alb_target_health, AlbTargetGroupRef(target_group_arn=group, region=self.cfg.region))
        targets = [AlbTarget(id=t.id, port=t.port) for t in health.targets if t.state != "draining"]
        if targets:
            self.retired = targets
            await self.call(
                ElbActivities.alb_deregister_targets,
                AlbTargetsInput(target_group_arn=group, targets=targets, region=self.cfg.region),
            )

    async def unretire(self, colour: str, deadline: timedelta) -> str:
        if not self.retired:
            return f"no target of {colour} was deregistered"
        await self.call(
            ElbActivities.alb_register_targets,
            AlbTargetsInput(target_group_arn=self.group(colour), targets=self.retired, region=self.cfg.region),
        )
        await self.wait_ready(deadline, colour, self.retired)
        return f"{len(self.retired)} target(s) of {colour} registered again, healthy"

    def retire_by_hand(self, colour: str) -> str:
        if not self.cfg.targets:
            return f"retire {colour}'s capacity where it is managed (its target group is fed elsewhere)"
        return (f"deregister {colour}'s targets from target group {self.group(colour)} by hand "
                f"(aws elbv2 deregister-targets --target-group-arn {self.group(colour)} --targets ...)")


def make_router(input: "BlueGreenInput", call: Call) -> Router:
    if input.router == "kubernetes":
        return KubernetesRouter(input, call)
    return AlbRouter(input, call)
