"""The one Kubernetes router: Deployments of the two versions, and what splits traffic between them.

- weighted (the canary ramp, ``HttpRouteRouterSpec``): a Gateway API HTTPRoute rule's backendRefs weights between
  the stable and canary Services (``k8s_set_httproute_weights``, verified by read-back), and the canary Deployment
  scaled to match its share: ``ceil(stable_replicas * w / 100)``, at least 1 while w > 0, 0 after a rollback.
  Scale-up happens BEFORE a weight increase, scale-down AFTER a weight decrease, so traffic never outruns capacity.
  On promotion the canary is scaled to the stable's replica count, takes 100 %, and the stable Deployment is
  scaled to 0;
- switched (the blue-green cutover, ``KubernetesRouterConfig``): one Deployment per colour,
  ``<deployments>-<colour>``, labelled ``<colour_label>=<colour>``; the Service's selector names the live colour.
  The new colour is created from the live colour's pod template with the new image and the live replicas;
  switching rewrites the selector (read back by the activity); retiring scales the old colour to 0 and
  ``unretire`` scales it back to the replicas found.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.kubernetes import KubernetesActivities
    from core import errors
    from core.kubernetes import (
        DeploymentApply,
        DeploymentRef,
        DeploymentState,
        HttpRouteRef,
        HttpRouteWeightsInput,
        ScaleInput,
        ServiceRef,
        ServiceSelectorInput,
        WaitRolloutInput,
    )
    from core.traffic import (
        COLOURS,
        Discovery,
        HttpRouteRouterSpec,
        KubernetesRouterConfig,
        canary_replicas,
        other_colour,
    )

from workflows.traffic.activity import call
from workflows.traffic.checks import blank, check_weight, invalid, names, share


class KubernetesRouter:
    def __init__(self, spec: HttpRouteRouterSpec | KubernetesRouterConfig) -> None:
        self._spec = spec
        self.kind: str = spec.kind if isinstance(spec, HttpRouteRouterSpec) else "kubernetes"
        if isinstance(spec, HttpRouteRouterSpec):
            route, self._stable_service, self._canary_service, self._stable_deployment, self._canary_deployment = names(
                spec, "route", "stable_service", "canary_service", "stable_deployment", "canary_deployment"
            )
            self._route: HttpRouteRef | None = HttpRouteRef(
                context=spec.context, namespace=spec.namespace, name=route, rule_index=spec.rule_index
            )
        else:
            if spec.service_name is None or spec.deployments is None:  # BlueGreenInput fills them from the service
                raise invalid("the Kubernetes router needs service_name and deployments")
            self._route = None
        self.selector: dict[str, str] = {}  # switched: the Service's selector as discovered
        self.live_state: DeploymentState | None = None  # switched: the live colour's Deployment as discovered

    @property
    def spec(self) -> HttpRouteRouterSpec | KubernetesRouterConfig:
        return self._spec

    def describe(self) -> str:
        spec = self._spec
        if isinstance(spec, HttpRouteRouterSpec):
            return f"HTTPRoute {spec.namespace}/{spec.route}"
        return f"Service {spec.namespace}/{spec.service_name}"

    # ------------------------------------------------------------------ Deployments (both ways)
    def _deployment(self, name: str) -> DeploymentRef:
        return DeploymentRef(context=self._spec.context, namespace=self._spec.namespace, name=name)

    async def _existing(self, role: str, name: str) -> DeploymentState:
        state = await call(KubernetesActivities.get_deployment, self._deployment(name))
        if not state.exists:
            raise ApplicationError(
                f"{role} Deployment {self._spec.namespace}/{name} not found", type=errors.NOT_FOUND, non_retryable=True
            )
        return state

    async def _scale(self, name: str, replicas: int, *, ignore_missing: bool = False) -> None:
        await call(
            KubernetesActivities.scale_deployment,
            ScaleInput(ref=self._deployment(name), replicas=replicas, ignore_missing=ignore_missing),
            changes=True,
        )

    # ------------------------------------------------------------------ weighted (canary): HTTPRoute weights
    @property
    def route_ref(self) -> HttpRouteRef:
        """The HTTPRoute rule (weighted only)."""
        return self._httproute()

    def _httproute(self) -> HttpRouteRef:
        if self._route is None:
            raise invalid(f"{self.describe()} switches by selector: weights need an HTTPRoute")
        return self._route

    async def resolve(self) -> int:
        """Read-only: both Deployments exist and both Services are backendRefs of the rule; the canary's share."""
        route = self._httproute()
        await self._existing("stable", self._stable_deployment)
        await self._existing("canary", self._canary_deployment)
        current = await call(KubernetesActivities.get_httproute_weights, route)
        missing = [s for s in (self._stable_service, self._canary_service) if s not in current.weights]
        if missing:
            raise ApplicationError(
                f"{self.describe()} rule {route.rule_index} has no backendRef {', '.join(missing)} "
                f"(has {', '.join(sorted(current.weights)) or 'none'})",
                type=errors.NOT_FOUND,
                non_retryable=True,
            )
        return share(current.weights, self._canary_service)

    async def _weights(self, weight: int) -> int:
        wanted = {self._stable_service: 100 - weight, self._canary_service: weight}
        result = await call(
            KubernetesActivities.set_httproute_weights, HttpRouteWeightsInput(ref=self._httproute(), weights=wanted), changes=True
        )
        got = share(result.weights, self._canary_service)
        if got != weight:
            raise ApplicationError(
                f"{self.describe()}: canary weight reads back as {got} %, wanted {weight} %",
                type=errors.VERIFICATION_FAILED,
                non_retryable=True,
            )
        return got

    async def read_weight(self) -> int:
        current = await call(KubernetesActivities.get_httproute_weights, self._httproute())
        return share(current.weights, self._canary_service)

    async def set_weight(self, weight: int) -> int:
        check_weight(weight)
        self._httproute()
        replicas = canary_replicas((await self._existing("stable", self._stable_deployment)).replicas, weight)
        previous = await self.read_weight()
        if weight >= previous:  # capacity first, then traffic
            await self._scale(self._canary_deployment, replicas)
            return await self._weights(weight)
        got = await self._weights(weight)  # traffic first, then capacity
        await self._scale(self._canary_deployment, replicas)
        return got

    async def promote(self) -> None:
        self._httproute()
        stable = (await self._existing("stable", self._stable_deployment)).replicas
        await self._scale(self._canary_deployment, max(stable, 1))
        await self._weights(100)
        await self._scale(self._stable_deployment, 0)

    async def rollback(self) -> None:
        await self._weights(0)
        await self._scale(self._canary_deployment, 0)

    # ------------------------------------------------------------------ switched (blue-green): Service selector
    def _colours(self) -> KubernetesRouterConfig:
        spec = self._spec
        if not isinstance(spec, KubernetesRouterConfig):
            raise invalid(f"{self.describe()} splits stable and canary: switching needs a Deployment per colour")
        return spec

    def ref(self, colour: str) -> DeploymentRef:
        return self._deployment(f"{self._colours().deployments}-{colour}")

    @property
    def service_ref(self) -> ServiceRef:
        cfg = self._colours()
        assert cfg.service_name is not None  # the constructor refused a config without it
        return ServiceRef(context=cfg.context, namespace=cfg.namespace, name=cfg.service_name)

    async def discover(self, image: str) -> Discovery:
        """Read-only: the selector names the live colour, whose Deployment has replicas to match."""
        cfg = self._colours()
        blank({"kubernetes.namespace": cfg.namespace, "kubernetes.service_name": cfg.service_name,
               "kubernetes.colour_label": cfg.colour_label, "kubernetes.container_name": cfg.container_name,
               "kubernetes.context": cfg.context})
        found = await call(KubernetesActivities.get_service_selector, self.service_ref)
        self.selector = dict(found.selector)
        live = self.selector.get(cfg.colour_label)
        if live not in COLOURS:
            raise invalid(
                f"service {cfg.namespace}/{self.service_ref.name} selects {self.selector}: its {cfg.colour_label!r} label "
                f"must name the live colour ({' or '.join(COLOURS)})"
            )
        state = await call(KubernetesActivities.get_deployment, self.ref(live))
        if state.replicas < 1:
            raise invalid(f"the live colour's deployment {self.ref(live).name} has no replicas to match")
        self.live_state = state
        return Discovery(live=live, new=other_colour(live), already_live=state.image == image)

    def snapshot(self) -> dict[str, Any]:
        return {"selector": dict(self.selector),
                "live_state": self.live_state.model_dump(mode="json") if self.live_state else None}

    def restore(self, state: dict[str, Any]) -> None:
        self.selector = dict(state.get("selector") or {})
        live = state.get("live_state")
        self.live_state = DeploymentState.model_validate(live) if live else None

    async def bring_up(self, image: str) -> None:
        cfg, live = self._colours(), self.live_state
        assert live is not None
        label = cfg.colour_label
        new = other_colour(self.selector[label])
        await call(
            KubernetesActivities.apply_deployment,
            DeploymentApply(
                ref=self.ref(new),
                image=image,
                replicas=live.replicas,
                labels={**live.labels, label: new},
                selector={**live.selector, label: new},
                container_name=cfg.container_name,
                container_port=cfg.container_port,
                template_from=self.ref(self.selector[label]),
            ),
            changes=True,
        )

    async def wait_ready(self, deadline: timedelta, colour: str | None = None) -> None:
        cfg = self._colours()
        colour = colour or other_colour(self.selector[cfg.colour_label])
        await call(
            KubernetesActivities.wait_rollout,
            WaitRolloutInput(ref=self.ref(colour), deadline_seconds=deadline.total_seconds(), poll_seconds=cfg.poll_seconds),
            timeout=deadline + timedelta(minutes=2),
            heartbeat=timedelta(seconds=max(30.0, 3 * cfg.poll_seconds)),
        )

    async def switch(self, colour: str) -> bool:
        wanted = {**self.selector, self._colours().colour_label: colour}
        result = await call(
            KubernetesActivities.set_service_selector, ServiceSelectorInput(ref=self.service_ref, selector=wanted), changes=True
        )
        return result.changed

    async def remove(self, colour: str) -> None:
        await call(KubernetesActivities.delete_deployment, self.ref(colour), changes=True)

    async def retire(self, colour: str) -> None:
        await self._scale(self.ref(colour).name, 0, ignore_missing=True)

    async def unretire(self, colour: str, deadline: timedelta) -> str:
        assert self.live_state is not None
        replicas = self.live_state.replicas
        await self._scale(self.ref(colour).name, replicas)
        await self.wait_ready(deadline, colour)
        return f"{self.ref(colour).name} back to {replicas} replica(s), ready"

    def retire_by_hand(self, colour: str) -> str:
        ref = self.ref(colour)
        context = f" --context {ref.context}" if ref.context else ""
        return (f"scale deployment {ref.namespace}/{ref.name} to 0 by hand "
                f"(kubectl{context} -n {ref.namespace} scale deployment {ref.name} --replicas=0)")
