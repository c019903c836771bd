"""Traffic routers for progressive delivery: one interface, two implementations that call activities.

``TrafficRouter`` is what a workflow (canary ramp, and anything else that shifts traffic) needs:

- ``resolve()``      -> READ-ONLY: look the names up and check every object the ramp will touch exists and is
  wired as expected (both target groups in the listener's forward action and no third one taking traffic; both
  Deployments and both backendRefs of the HTTPRoute rule); returns the canary's current share. Raises a typed
  ``ApplicationError`` (NotFound / InvalidInput) or lets the read activity's failure through: the runbook then
  refuses to start changing anything;
- ``read_weight()``  -> the canary's current share, 0..100;
- ``set_weight(w)``  -> set the canary's share to ``w`` % ABSOLUTELY (stable gets 100 - w), read it back and
  verify; a router that manages capacity first scales the canary to take that share;
- ``promote()``      -> the new version takes 100 % and the old one is scaled down (where the router can);
- ``rollback()``     -> the canary's weight goes to 0 FIRST, then the canary is scaled down.

Every call is idempotent (absolute weights, absolute replica counts), so a replayed or retried step changes
nothing twice. Activities that change something are awaited until they have really finished even when the workflow
is cancelled (``WAIT_CANCELLATION_COMPLETED``), so a rollback never races a weight change still in flight. Routers hold no state of their own besides their spec and what activities told them.

Implementations:
- ``AlbRouter``: the weighted forward action of an ALB listener (or one listener rule) between the stable and
  canary target groups (activities ``alb_get_weights`` / ``alb_set_weights``; the activity verifies by read-back).
  ALB weights are relative: we always write percentages that sum to 100. Capacity is not managed (target groups
  are fed by whatever registers targets).
- ``HttpRouteRouter``: a Gateway API HTTPRoute rule's backendRefs weights between the stable and canary Services
  (``k8s_set_httproute_weights``), and the canary Deployment scaled to match its share
  (``k8s_scale_deployment``): ``ceil(stable_replicas * w / 100)``, at least 1 while w > 0, 0 after a rollback.
  Scale-up happens BEFORE a weight increase, scale-down AFTER a weight decrease, so traffic never outruns
  capacity. On promotion the canary is scaled to the stable's replica count, takes 100 %, and the stable
  Deployment is scaled to 0 (the old version scaled down).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Callable, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError
from temporalio.workflow import ActivityCancellationType

with workflow.unsafe.imports_passed_through():
    from pydantic import BaseModel

    from activities.aws import ElbActivities
    from activities.kubernetes import KubernetesActivities
    from core import errors
    from core.aws import AlbLookup, AlbLookupInput, AlbSetWeightsInput, AlbTrafficRef, AlbWeights
    from core.canary import AlbRouterSpec, HttpRouteRouterSpec, RouterSpec, canary_replicas  # noqa: F401 (re-exported)
    from core.kubernetes import (
        DeploymentRef,
        DeploymentState,
        HttpRouteRef,
        HttpRouteWeights,
        HttpRouteWeightsInput,
        ScaleInput,
    )

ROUTER_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=6,
    non_retryable_error_types=errors.NON_RETRYABLE,
)
ROUTER_TIMEOUT = timedelta(seconds=60)


ArgT = TypeVar("ArgT", bound=BaseModel)
ResultT = TypeVar("ResultT")


async def _call(method: Callable[[Any, ArgT], ResultT], arg: ArgT, *, changes: bool = False) -> ResultT:
    """One router activity. ``changes``: it writes, so a cancellation waits for it to finish (no race with the
    rollback that follows); reads are simply abandoned."""
    return await workflow.execute_activity_method(
        method,
        arg,
        start_to_close_timeout=ROUTER_TIMEOUT,
        retry_policy=ROUTER_RETRY,
        cancellation_type=ActivityCancellationType.WAIT_CANCELLATION_COMPLETED if changes else ActivityCancellationType.TRY_CANCEL,
    )


class TrafficRouter:
    """The interface (see the module docstring)."""

    kind: str = ""
    spec: AlbRouterSpec | HttpRouteRouterSpec  # what it routes, as given (an ALB router's names become ARNs)

    def describe(self) -> str:
        raise NotImplementedError

    async def resolve(self) -> int:
        raise NotImplementedError

    async def read_weight(self) -> int:
        raise NotImplementedError

    async def set_weight(self, weight: int) -> int:
        raise NotImplementedError

    async def promote(self) -> None:
        raise NotImplementedError

    async def rollback(self) -> None:
        raise NotImplementedError


def _names(spec: BaseModel, *fields: str) -> list[str]:
    """The values of the spec's name ``fields``, all of which must be filled (CanaryRampInput fills them from the
    service)."""
    values = [getattr(spec, field) for field in fields]
    missing = [field for field, value in zip(fields, values, strict=True) if not value]
    if missing:
        raise ApplicationError(f"router spec is missing {', '.join(missing)}", type=errors.INVALID_INPUT, non_retryable=True)
    return values


def _check(weight: int) -> None:
    if not 0 <= weight <= 100:
        raise ApplicationError(f"canary weight must be 0..100, not {weight}", type=errors.INVALID_INPUT, non_retryable=True)


class AlbRouter(TrafficRouter):
    kind = "alb"
    spec: AlbRouterSpec

    def __init__(self, spec: AlbRouterSpec) -> None:
        _names(spec, "stable_target_group", "canary_target_group")
        self.spec = spec  # _resolve replaces it with one where names are ARNs
        self._weight: int | None = None  # last weight written and verified by this run

    def describe(self) -> str:
        if self.spec.load_balancer and not self.spec.listener_arn:
            return f"ALB {self.spec.load_balancer}:{self.spec.port}"
        return f"ALB {self.spec.rule_arn or self.spec.listener_arn}"

    @property
    def _groups(self) -> tuple[str, str]:
        """(stable, canary) target groups, names or ARNs: the constructor refused a spec without both."""
        stable, canary = self.spec.stable_target_group, self.spec.canary_target_group
        assert stable and canary
        return stable, canary

    @property
    def ref(self) -> AlbTrafficRef:
        assert self.spec.listener_arn is not None
        return AlbTrafficRef(listener_arn=self.spec.listener_arn, rule_arn=self.spec.rule_arn, region=self.spec.region)

    async def _resolve(self) -> None:
        """Turn names into ARNs once (read-only lookup; the answer is in history, so replay is deterministic)."""
        if self.spec.resolved:
            return
        spec, (stable, canary) = self.spec, self._groups
        names = [tg for tg in (stable, canary) if not tg.startswith("arn:")]
        if spec.listener_arn and not names:
            return
        if not spec.load_balancer or not spec.port:
            raise ApplicationError(
                "target groups given by name need load_balancer and port to look them up",
                type=errors.INVALID_INPUT,
                non_retryable=True,
            )
        found: AlbLookup = await _call(
            ElbActivities.alb_find_listener,
            AlbLookupInput(load_balancer=spec.load_balancer, port=spec.port, target_groups=names, region=spec.region),
        )
        missing = [n for n in names if n not in found.target_groups]
        if missing:
            raise ApplicationError(f"target group(s) not found: {', '.join(missing)}", type=errors.NOT_FOUND, non_retryable=True)

        def arn(tg: str) -> str:
            return tg if tg.startswith("arn:") else found.target_groups[tg]

        self.spec = spec.model_copy(
            update={
                "listener_arn": spec.listener_arn or found.listener_arn,
                "stable_target_group": arn(stable),
                "canary_target_group": arn(canary),
            }
        )

    async def resolve(self) -> int:
        await self._resolve()
        current: AlbWeights = await _call(ElbActivities.alb_get_weights, self.ref)
        weights, (stable, canary) = current.weights, self._groups
        where = self.describe()
        for role, tg in (("stable", stable), ("canary", canary)):
            if tg not in weights:
                raise ApplicationError(
                    f"{where} does not forward to the {role} target group {tg} (it forwards to "
                    f"{', '.join(sorted(weights)) or 'nothing'}); attach both groups, the canary at weight 0, first",
                    type=errors.NOT_FOUND,
                    non_retryable=True,
                )
        others = {tg: w for tg, w in weights.items() if tg not in (stable, canary) and w > 0}
        if others:
            raise ApplicationError(
                f"{where} also sends traffic to {', '.join(sorted(others))}: a ramp between stable and canary would take it away",
                type=errors.INVALID_INPUT,
                non_retryable=True,
            )
        return self._canary_share(weights)

    async def read_weight(self) -> int:
        await self._resolve()
        current: AlbWeights = await _call(ElbActivities.alb_get_weights, self.ref)
        return self._canary_share(current.weights)

    async def set_weight(self, weight: int) -> int:
        _check(weight)
        await self._resolve()
        stable, canary = self._groups
        wanted = {stable: 100 - weight, canary: weight}
        result: AlbWeights = await _call(ElbActivities.alb_set_weights, AlbSetWeightsInput(ref=self.ref, weights=wanted), changes=True)
        got = self._canary_share(result.weights)
        if got != weight:
            raise ApplicationError(
                f"{self.describe()}: canary weight reads back as {got} %, wanted {weight} %",
                type=errors.VERIFICATION_FAILED,
                non_retryable=True,
            )
        self._weight = got
        return got

    def _canary_share(self, weights: dict[str, int]) -> int:
        total = sum(weights.values())
        return 0 if total == 0 else round(100 * weights.get(self._groups[1], 0) / total)

    async def promote(self) -> None:
        if self._weight != 100:  # the plan usually ends with set_weight 100 already
            await self.set_weight(100)

    async def rollback(self) -> None:
        await self.set_weight(0)


class HttpRouteRouter(TrafficRouter):
    kind = "httproute"
    spec: HttpRouteRouterSpec

    def __init__(self, spec: HttpRouteRouterSpec) -> None:
        route, self._stable_service, self._canary_service, self._stable_deployment, self._canary_deployment = _names(
            spec, "route", "stable_service", "canary_service", "stable_deployment", "canary_deployment"
        )
        self.spec = spec
        self.ref = HttpRouteRef(context=spec.context, namespace=spec.namespace, name=route, rule_index=spec.rule_index)

    def describe(self) -> str:
        return f"HTTPRoute {self.spec.namespace}/{self.spec.route}"

    def _deployment(self, name: str) -> DeploymentRef:
        return DeploymentRef(context=self.spec.context, namespace=self.spec.namespace, name=name)

    async def _existing(self, role: str, name: str) -> DeploymentState:
        state: DeploymentState = await _call(KubernetesActivities.get_deployment, self._deployment(name))
        if not state.exists:
            raise ApplicationError(
                f"{role} Deployment {self.spec.namespace}/{name} not found", type=errors.NOT_FOUND, non_retryable=True
            )
        return state

    async def _stable_replicas(self) -> int:
        return (await self._existing("stable", self._stable_deployment)).replicas

    async def resolve(self) -> int:
        await self._existing("stable", self._stable_deployment)
        await self._existing("canary", self._canary_deployment)
        current: HttpRouteWeights = await _call(KubernetesActivities.get_httproute_weights, self.ref)
        missing = [s for s in (self._stable_service, self._canary_service) if s not in current.weights]
        if missing:
            raise ApplicationError(
                f"{self.describe()} rule {self.spec.rule_index} has no backendRef {', '.join(missing)} "
                f"(has {', '.join(sorted(current.weights)) or 'none'})",
                type=errors.NOT_FOUND,
                non_retryable=True,
            )
        return self._canary_share(current.weights)

    async def _scale(self, name: str, replicas: int) -> None:
        await _call(KubernetesActivities.scale_deployment, ScaleInput(ref=self._deployment(name), replicas=replicas), changes=True)

    async def _weights(self, weight: int) -> int:
        wanted = {self._stable_service: 100 - weight, self._canary_service: weight}
        result: HttpRouteWeights = await _call(
            KubernetesActivities.set_httproute_weights, HttpRouteWeightsInput(ref=self.ref, weights=wanted), changes=True
        )
        got = self._canary_share(result.weights)
        if got != weight:
            raise ApplicationError(
                f"{self.describe()}: canary weight reads back as {got} %, wanted {weight} %",
                type=errors.VERIFICATION_FAILED,
                non_retryable=True,
            )
        return got

    def _canary_share(self, weights: dict[str, int]) -> int:
        total = sum(weights.values())
        return 0 if total == 0 else round(100 * weights.get(self._canary_service, 0) / total)

    async def read_weight(self) -> int:
        current: HttpRouteWeights = await _call(KubernetesActivities.get_httproute_weights, self.ref)
        return self._canary_share(current.weights)

    async def set_weight(self, weight: int) -> int:
        _check(weight)
        replicas = canary_replicas(await self._stable_replicas(), weight)
        previous = await self.read_weight()
        if weight >= previous:  # capacity first, then traffic
            await self._scale(self._canary_deployment, replicas)
            return await self._weights(weight)
        got = await self._weights(weight)  # traffic first, then capacity
        await self._scale(self._canary_deployment, replicas)
        return got

    async def promote(self) -> None:
        stable = await self._stable_replicas()
        await self._scale(self._canary_deployment, max(stable, 1))
        await self._weights(100)
        await self._scale(self._stable_deployment, 0)

    async def rollback(self) -> None:
        await self._weights(0)
        await self._scale(self._canary_deployment, 0)


def make_router(spec: AlbRouterSpec | HttpRouteRouterSpec) -> TrafficRouter:
    """The router for ``spec``; every name must be filled (CanaryRampInput fills them from the service)."""
    return AlbRouter(spec) if isinstance(spec, AlbRouterSpec) else HttpRouteRouter(spec)
