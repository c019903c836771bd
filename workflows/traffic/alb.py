"""The one ALB router: a listener's (or one rule's) forward action over target groups, by role.

- weighted (the canary ramp, ``AlbRouterSpec``): the forward action splits traffic between the stable and canary
  target groups (``alb_get_weights`` / ``alb_set_weights``, verified by read-back). ALB weights are relative: we
  always write percentages that sum to 100. Capacity is not managed (target groups are fed by whatever registers
  targets);
- switched (the blue-green cutover, ``AlbRouterConfig``): one target group per colour; switching moves the whole
  forward action to one group (``alb_switch_target_group``, verified); the new colour's ``targets`` are registered
  in its group, retiring deregisters the old group's targets and ``unretire`` registers them again. Without
  ``targets`` nothing is registered or deregistered (an Auto Scaling group, the local demo, feeds the groups).

Target groups and the listener are given by ARN or by name (``load_balancer`` + ``port``, target group names):
names become ARNs once, read-only, through ``alb_find_listener`` (the answer is in history, so a replay is
deterministic). Blank or padded names, or one group for two roles, are refused before anything is read.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.aws import ElbActivities
    from core import errors
    from core.aws import (
        AlbLookup,
        AlbLookupInput,
        AlbSetWeightsInput,
        AlbSwitchInput,
        AlbTarget,
        AlbTargetGroupRef,
        AlbTargetsInput,
        AlbTrafficRef,
    )
    from core.traffic import AlbRouterConfig, AlbRouterSpec, Discovery, other_colour

from workflows.traffic.activity import call
from workflows.traffic.checks import blank, check_weight, invalid, names, share


class AlbRouter:
    kind = "alb"

    def __init__(self, spec: AlbRouterSpec | AlbRouterConfig) -> None:
        if isinstance(spec, AlbRouterSpec):
            names(spec, "stable_target_group", "canary_target_group")
        self._spec = spec  # _resolve replaces it with one where names are ARNs
        self._weight: int | None = None  # weighted: the last weight written and verified by this run
        self.new: str | None = None  # switched: the colour discovery found not live
        self.retired: list[AlbTarget] = []  # switched: the old colour's targets that retire deregistered

    @property
    def spec(self) -> AlbRouterSpec | AlbRouterConfig:
        return self._spec

    def describe(self) -> str:
        if self._spec.load_balancer and not self._spec.listener_arn:
            return f"ALB {self._spec.load_balancer}:{self._spec.port}"
        return f"ALB {self._spec.rule_arn or self._spec.listener_arn}"

    def where(self) -> str:
        return self._spec.listener_arn or f"{self._spec.load_balancer}:{self._spec.port}"

    # ------------------------------------------------------------------ roles, names and ARNs
    def _groups(self) -> dict[str, str]:
        """Role -> target group (name or ARN): stable/canary for a weighted spec, the colours for a switched one."""
        spec = self._spec
        if isinstance(spec, AlbRouterSpec):
            stable, canary = spec.stable_target_group, spec.canary_target_group
            assert stable and canary  # the constructor refused a spec without both
            return {"stable": stable, "canary": canary}
        return dict(spec.target_groups)

    def group(self, role: str) -> str:
        return self._groups()[role]

    @property
    def ref(self) -> AlbTrafficRef:
        assert self._spec.listener_arn is not None, "resolved first"
        return AlbTrafficRef(listener_arn=self._spec.listener_arn, rule_arn=self._spec.rule_arn, region=self._spec.region)

    async def _resolve(self) -> None:
        """Turn names into ARNs once (read-only lookup; the answer is in history, so replay is deterministic)."""
        spec, groups = self._spec, self._groups()
        prefix = "alb." if isinstance(spec, AlbRouterConfig) else "router."
        blank({f"{prefix}listener_arn": spec.listener_arn, f"{prefix}load_balancer": spec.load_balancer,
               f"{prefix}rule_arn": spec.rule_arn, f"{prefix}region": spec.region,
               **{f"{prefix}target_groups.{role}": tg for role, tg in groups.items()}})
        if len(set(groups.values())) != len(groups):
            raise invalid(f"{prefix}target_groups names one target group for two roles: {groups}")
        unnamed = [tg for tg in groups.values() if not tg.startswith("arn:")]
        if spec.listener_arn and not unnamed:
            return
        if not spec.load_balancer or not spec.port:
            raise invalid("target groups given by name need load_balancer and port to look them up")
        found: AlbLookup = await call(
            ElbActivities.alb_find_listener,
            AlbLookupInput(load_balancer=spec.load_balancer, port=spec.port, target_groups=unnamed, region=spec.region),
        )
        missing = [n for n in unnamed if n not in found.target_groups]
        if missing:
            raise ApplicationError(f"target group(s) not found: {', '.join(missing)}", type=errors.NOT_FOUND, non_retryable=True)
        arns = {role: tg if tg.startswith("arn:") else found.target_groups[tg] for role, tg in groups.items()}
        listener = spec.listener_arn or found.listener_arn
        if isinstance(spec, AlbRouterSpec):
            self._spec = spec.model_copy(update={"listener_arn": listener, "stable_target_group": arns["stable"],
                                                 "canary_target_group": arns["canary"]})
        else:
            self._spec = spec.model_copy(update={"listener_arn": listener, "target_groups": arns})

    async def _weights(self) -> dict[str, int]:
        return (await call(ElbActivities.alb_get_weights, self.ref)).weights

    # ------------------------------------------------------------------ weighted (canary)
    def _pair(self) -> tuple[str, str]:
        groups = self._groups()
        if set(groups) != {"stable", "canary"}:
            raise invalid(f"{self.describe()} routes by colour: weights need a stable and a canary target group")
        return groups["stable"], groups["canary"]

    async def resolve(self) -> int:
        """Read-only: both groups in the forward action and no third one taking traffic; the canary's share."""
        await self._resolve()
        weights, (stable, canary) = await self._weights(), self._pair()
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
            raise invalid(f"{where} also sends traffic to {', '.join(sorted(others))}: a ramp between stable and canary would take it away")
        return share(weights, canary)

    async def read_weight(self) -> int:
        await self._resolve()
        return share(await self._weights(), self._pair()[1])

    async def set_weight(self, weight: int) -> int:
        check_weight(weight)
        await self._resolve()
        stable, canary = self._pair()
        result = await call(
            ElbActivities.alb_set_weights,
            AlbSetWeightsInput(ref=self.ref, weights={stable: 100 - weight, canary: weight}),
            changes=True,
        )
        got = share(result.weights, canary)
        if got != weight:
            raise ApplicationError(
                f"{self.describe()}: canary weight reads back as {got} %, wanted {weight} %",
                type=errors.VERIFICATION_FAILED,
                non_retryable=True,
            )
        self._weight = got
        return got

    async def promote(self) -> None:
        if self._weight != 100:  # the plan usually ends with set_weight 100 already
            await self.set_weight(100)

    async def rollback(self) -> None:
        await self.set_weight(0)

    # ------------------------------------------------------------------ switched (blue-green)
    def _colours(self) -> AlbRouterConfig:
        spec = self._spec
        if not isinstance(spec, AlbRouterConfig):
            raise invalid(f"{self.describe()} splits stable and canary: switching needs a target group per colour")
        return spec

    def _health_ref(self, colour: str) -> AlbTargetGroupRef:
        return AlbTargetGroupRef(target_group_arn=self.group(colour), region=self._spec.region)

    def _targets(self, colour: str, targets: list[AlbTarget]) -> AlbTargetsInput:
        return AlbTargetsInput(target_group_arn=self.group(colour), targets=targets, region=self._spec.region)

    async def discover(self, image: str) -> Discovery:
        """Read-only: all traffic on exactly one colour's group (the live one), the other colour's group exists."""
        self._colours()
        await self._resolve()
        weights = await self._weights()
        serving = [arn for arn, w in weights.items() if w > 0]
        colour_of = {arn: c for c, arn in self._groups().items()}
        if len(serving) != 1 or serving[0] not in colour_of:
            raise invalid(
                f"listener {self.where()} forwards to {weights}: a blue-green cutover needs all traffic on "
                "exactly one colour's target group (finish or roll back any canary first)"
            )
        live = colour_of[serving[0]]
        self.new = other_colour(live)
        await call(ElbActivities.alb_target_health, self._health_ref(self.new))  # an unknown ARN is NotFound
        return Discovery(live=live, new=self.new)

    def snapshot(self) -> dict[str, Any]:
        return {"cfg": self._spec.model_dump(mode="json"), "new": self.new}

    def restore(self, state: dict[str, Any]) -> None:
        if state.get("cfg"):
            self._spec = type(self._spec).model_validate(state["cfg"])
        self.new = state.get("new")

    async def bring_up(self, image: str) -> None:
        cfg = self._colours()
        assert self.new is not None
        if cfg.targets:
            await call(ElbActivities.alb_register_targets, self._targets(self.new, cfg.targets), changes=True)

    async def wait_ready(self, deadline: timedelta, colour: str | None = None, targets: list[AlbTarget] | None = None) -> None:
        """Poll target health with durable timers until every target (default: the new colour's) is healthy or the
        deadline passes."""
        cfg = self._colours()
        colour = colour or self.new
        assert colour is not None
        wanted = {t.id for t in (cfg.targets if targets is None else targets)}
        ends = workflow.now() + deadline
        while True:
            health = await call(ElbActivities.alb_target_health, self._health_ref(colour))
            states = {t.id: t.state for t in health.targets if t.id in wanted}
            if len(states) == len(wanted) and all(s == "healthy" for s in states.values()):
                return
            if workflow.now() >= ends:
                raise ApplicationError(
                    f"targets of {colour} not healthy within {deadline}: {states}",
                    type=errors.DEADLINE_EXCEEDED,
                    non_retryable=True,
                )
            await workflow.sleep(min(cfg.poll_seconds, max((ends - workflow.now()).total_seconds(), 1)),
                                 summary=f"{colour} targets not healthy yet ({len(states)}/{len(wanted)} seen): poll again")

    async def switch(self, colour: str) -> bool:
        result = await call(
            ElbActivities.alb_switch_target_group, AlbSwitchInput(ref=self.ref, target_group_arn=self.group(colour)), changes=True
        )
        return result.changed

    async def remove(self, colour: str) -> None:
        cfg = self._colours()
        if cfg.targets:
            await call(ElbActivities.alb_deregister_targets, self._targets(colour, cfg.targets), changes=True)

    async def retire(self, colour: str) -> None:
        if not self._colours().targets:  # the groups are fed elsewhere: the old colour's capacity is not ours to remove
            return
        health = await call(ElbActivities.alb_target_health, self._health_ref(colour))
        targets = [AlbTarget(id=t.id, port=t.port) for t in health.targets if t.state != "draining"]
        if targets:
            self.retired = targets
            await call(ElbActivities.alb_deregister_targets, self._targets(colour, targets), changes=True)

    async def unretire(self, colour: str, deadline: timedelta) -> str:
        if not self.retired:
            return f"no target of {colour} was deregistered"
        await call(ElbActivities.alb_register_targets, self._targets(colour, self.retired), changes=True)
        await self.wait_ready(deadline, colour, self.retired)
        return f"{len(self.retired)} target(s) of {colour} registered again, healthy"

    def retire_by_hand(self, colour: str) -> str:
        if not self._colours().targets:
            return f"retire {colour}'s capacity where it is managed (its target group is fed elsewhere)"
        return (f"deregister {colour}'s targets from target group {self.group(colour)} by hand "
                f"(aws elbv2 deregister-targets --target-group-arn {self.group(colour)} --targets ...)")
