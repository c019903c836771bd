"""The traffic layer: one interface, one router per kind, for every runbook that moves traffic between versions.

Workflow-side code (it runs in the workflow sandbox): routers call activities through ``activity.call`` (typed by
the method reference, one retry policy) and hold no state besides their config and what activities told them.
Every call is idempotent (absolute weights, absolute replica counts, a selector or forward action written whole),
so a replayed or retried step changes nothing twice; activities that change something are awaited until they have
really finished even when the workflow is cancelled, so a rollback never races a change still in flight.

``TrafficRouter`` has two halves, one per strategy, as Argo Rollouts' canary and blue-green share one controller:

- weighted (the canary ramp, ``AlbRouterSpec`` / ``HttpRouteRouterSpec``):
  ``resolve()`` READ-ONLY: names looked up, every object the ramp will touch checked (both target groups in the
  listener's forward action and no third one taking traffic; both Deployments and both backendRefs of the
  HTTPRoute rule); returns the canary's current share. ``read_weight()``; ``set_weight(w)`` sets the canary's
  share ABSOLUTELY (stable gets 100 - w), verified by read-back, capacity first where the router manages it;
  ``promote()`` (the new version at 100 %, the old one scaled down where the router can); ``rollback()`` (the
  canary's weight to 0 FIRST, then the canary scaled down);
- switched (the blue-green cutover, ``AlbRouterConfig`` / ``KubernetesRouterConfig``):
  ``discover(image)`` READ-ONLY: the live colour, every target validated before the first change;
  ``bring_up(image)``, ``wait_ready(deadline)``, ``switch(colour)`` (one call, verified), ``remove(colour)``,
  ``retire(colour)`` / ``unretire(colour, deadline)``, ``retire_by_hand(colour)`` (what a person does when
  retiring failed), ``snapshot()`` / ``restore()`` (what discovery learned, for a continued run).

A router is built from its own config only (``make_router``); asked for the other strategy's half it refuses with
``InvalidInput``. Implementations: ``alb.AlbRouter`` (a listener's forward action: weights, or the whole action
moved to one group) and ``kubernetes.KubernetesRouter`` (HTTPRoute backendRef weights, or the Service selector).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Protocol

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from pydantic import BaseModel

    from core.traffic import AlbRouterConfig, AlbRouterSpec, Discovery, HttpRouteRouterSpec, KubernetesRouterConfig

from workflows.traffic.alb import AlbRouter
from workflows.traffic.kubernetes import KubernetesRouter

RouterConfig = AlbRouterSpec | HttpRouteRouterSpec | AlbRouterConfig | KubernetesRouterConfig


class TrafficRouter(Protocol):
    kind: str

    @property
    def spec(self) -> BaseModel: ...
    def describe(self) -> str: ...

    # weighted (canary)
    async def resolve(self) -> int: ...
    async def read_weight(self) -> int: ...
    async def set_weight(self, weight: int) -> int: ...
    async def promote(self) -> None: ...
    async def rollback(self) -> None: ...

    # switched (blue-green)
    async def discover(self, image: str) -> Discovery: ...
    def snapshot(self) -> dict[str, Any]: ...
    def restore(self, state: dict[str, Any]) -> None: ...
    async def bring_up(self, image: str) -> None: ...
    async def wait_ready(self, deadline: timedelta) -> None: ...
    async def switch(self, colour: str) -> bool: ...
    async def remove(self, colour: str) -> None: ...
    async def retire(self, colour: str) -> None: ...
    async def unretire(self, colour: str, deadline: timedelta) -> str: ...
    def retire_by_hand(self, colour: str) -> str: ...


def make_router(spec: RouterConfig) -> TrafficRouter:
    """The router for ``spec``: an ALB router for an ALB spec or config, else the Kubernetes router."""
    if isinstance(spec, (AlbRouterSpec, AlbRouterConfig)):
        return AlbRouter(spec)
    return KubernetesRouter(spec)


__all__ = ["AlbRouter", "KubernetesRouter", "RouterConfig", "TrafficRouter", "make_router"]
