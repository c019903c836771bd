"""``RunbookDryRun``: what a runbook would change, read from the systems it would change, changing nothing.

A short-lived workflow on the runbooks' task queue: it runs only READ-ONLY activities (so the worker's credentials
are used and nothing with secrets runs in the CLI or the gateway) and answers a ``core.dry_run.DryRunPlan``. It is
not a runbook (no gates, no notifications, no Runbook* search attributes) and changes no runbook's command
sequence: each planner below reuses the runbook's own read-only pieces (the routers' ``resolve``/``discover``, the
failover's ``db_state`` and ``dns_records``, the restore's ``scratch_name``) and activities.

- canary: the router's current weights and target groups (or HTTPRoute backendRefs and Deployments), each step's
  weight change, the analysis queries rendered, the rollback;
- blue-green: the live colour, the colour brought up, the switch (listener forward action or Service selector) before
  and after, the bake and what rolls back;
- failover / failback: DNS records, database roles and parameter groups, replica lag, compute counts, and the ordered
  changes with before/after values;
- provision: the Terraform plan summary per resource address (``terraform_plan_preview``: a scratch copy, no
  workspace created, no state written), the namespace and the record;
- restore drill: the backup it would pick (key, age, size), the scratch target, the checks.

A target the real run would refuse (mis-wired, absent) is ``outcome: WouldRefuse`` with the reason; a system that
cannot be read fails this workflow with ``DryRunUnreadable`` naming the system and what could not be read.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Awaitable, Callable

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.aws import ElbActivities, RdsActivities, Route53Activities, S3Activities
    from activities.calendar import CalendarActivities
    from activities.kubernetes import KubernetesActivities
    from activities.terraform import TerraformActivities
    from activities.vault import SecretEngineActivities
    from core import errors
    from core.analysis import AnalysisTemplate, alb_args
    from core.aws import (
        AlbTargetGroupRef,
        RdsInstanceRef,
        RdsSnapshotQuery,
        RecordSet,
        Route53QueryInput,
        S3BucketRef,
        S3LatestQuery,
    )
    from core.bluegreen import BlueGreenInput
    from core.calendar import FreezeQuery, FreezeState
    from core.canary import CanaryRampInput
    from core.dry_run import (
        DRY_RUN_UNREADABLE,
        Change,
        DryRunInput,
        DryRunPlan,
        FreezeCheck,
        Reading,
        approval_lines,
        query_text,
    )
    from core.duration import format_duration, format_span
    from core.failover import (
        DbState,
        RegionFailbackInput,
        RegionFailoverInput,
        RegionSide,
        db_state,
        dns_records,
        failback_problems,
        failover_problems,
    )
    from core.kubernetes import DeploymentRef, HttpRouteRef, NamespaceRef, SecretRolloutTarget
    from core.provision import MANAGED_BY, ModuleCheckInput, PlanInput, ProvisionEnvironmentInput, input_problems
    from core.release import ReleaseInput, child_input, waves_of
    from core.restore import RestoreDrillInput, scratch_name, targets_for
    from core.rotation import (
        ApiKeyTarget,
        DbRotationTarget,
        PkiRotationTarget,
        RotateSecretInput,
        rollout_problems,
    )
    from core.runbook import RunbookInput
    from core.traffic import (
        COLOURS,
        AlbRouterConfig,
        AlbRouterSpec,
        HttpRouteRouterSpec,
        KubernetesRouterConfig,
        canary_replicas,
    )
    from workflows.base import cause_of, error_type
    from workflows.traffic import AlbRouter, KubernetesRouter, make_router

READ_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_attempts=3,
                         non_retryable_error_types=errors.NON_RETRYABLE)
# What a read can say about a target a person named: it is not there or not usable: the real run would refuse.
REFUSING = (errors.NOT_FOUND, errors.INVALID_INPUT, errors.ACCESS_DENIED)


class WouldRefuse(Exception):
    """The real run would end Refused ("nothing was changed") for this reason."""


class Unreadable(Exception):
    def __init__(self, system: str, what: str, cause: str) -> None:
        super().__init__(f"{system}: could not read {what}: {cause}")


async def read(system: str, what: str, method: Any, arg: Any, *, missing_ok: bool = False) -> Any:
    """One read-only activity; a refusal-type failure is ``WouldRefuse``, anything else ``Unreadable``;
    ``missing_ok``: an object that is not there (NotFound) is None."""
    try:
        return await workflow.execute_activity_method(
            method, arg, start_to_close_timeout=timedelta(minutes=2), retry_policy=READ_RETRY)
    except ActivityError as err:
        if missing_ok and error_type(err) == errors.NOT_FOUND:
            return None
        if error_type(err) in REFUSING:
            raise WouldRefuse(f"{system}: {what}: {cause_of(err)}") from None
        raise Unreadable(system, what, cause_of(err)) from None


async def guarded(system: str, what: str, awaitable: Awaitable[Any]) -> Any:
    """A runbook's own read-only step (a router's resolve/discover), its failures sorted as ``read`` does."""
    try:
        return await awaitable
    except ApplicationError as err:  # raised by the router's checks in workflow code: a target the run refuses
        raise WouldRefuse(f"{system}: {err.message}") from None
    except ActivityError as err:
        if error_type(err) in REFUSING:
            raise WouldRefuse(f"{system}: {what}: {cause_of(err)}") from None
        raise Unreadable(system, what, cause_of(err)) from None


def analysis_lines(template: AnalysisTemplate, args: dict[str, str], prefix: str = "") -> list[str]:
    return [f"{prefix}{m.name}: {query_text(m.query, args)} -> success when {m.criterion()}" for m in template.metrics]


# ----------------------------------------------------------------------------------------------- canary
async def plan_canary(inp: CanaryRampInput, plan: DryRunPlan) -> None:
    router = make_router(inp.router)
    where = router.describe()
    system = "ALB" if isinstance(router, AlbRouter) else "Kubernetes"
    share = await guarded(system, f"{where} (router)", router.resolve())
    stable_replicas = 0
    rspec = router.spec  # after resolve: an ALB spec's names are ARNs
    if isinstance(router, AlbRouter):
        spec = rspec
        assert isinstance(spec, AlbRouterSpec)
        weights = (await read("ALB", f"{where} weights", ElbActivities.alb_get_weights, router.ref)).weights
        plan.reads.append(Reading(system="ALB", what="listener", value=spec.listener_arn or "-"))
        for tg, w in sorted(weights.items()):
            role = "stable" if tg == spec.stable_target_group else "canary" if tg == spec.canary_target_group else "other"
            plan.reads.append(Reading(system="ALB", what=f"{role} target group weight", value=f"{tg}: {w}"))
        args = alb_args(spec.listener_arn, spec.stable_target_group, spec.canary_target_group)
    else:
        assert isinstance(rspec, HttpRouteRouterSpec)
        route = await read("Kubernetes", f"{where} weights", KubernetesActivities.get_httproute_weights,
                           HttpRouteRef(context=rspec.context, namespace=rspec.namespace, name=rspec.route or "",
                                        rule_index=rspec.rule_index))
        for svc, w in sorted(route.weights.items()):
            plan.reads.append(Reading(system="Kubernetes", what=f"{where} backendRef weight", value=f"{svc}: {w}"))
        for role, name in (("stable", rspec.stable_deployment), ("canary", rspec.canary_deployment)):
            ref = DeploymentRef(context=rspec.context, namespace=rspec.namespace, name=name or "")
            state = await read("Kubernetes", f"Deployment {rspec.namespace}/{name}", KubernetesActivities.get_deployment, ref)
            plan.reads.append(Reading(system="Kubernetes", what=f"{role} Deployment {rspec.namespace}/{name}",
                                      value=f"{state.replicas} replicas, image {state.image or '-'}"))
            if role == "stable":
                stable_replicas = state.replicas
        args = {}
    plan.reads.append(Reading(system=system, what="canary share now", value=f"{share}%"))
    args = {"service": inp.service, "version": inp.version, "stable_version": inp.stable_version,
            "environment": inp.meta.environment, **args, **inp.args}
    templates = {t.name: t for t in inp.templates}
    weight, gates = share, ["promote (when someone asks to promote early)",
                            f"analysis-decision (an Inconclusive analysis; no decision in {format_duration(inp.decision_timeout)} rolls back)"]
    for i, step in enumerate(inp.plan, start=1):
        name = f"step {i}/{len(inp.plan)}"
        plan.procedure.append(f"{name}: {step.describe()}")
        if step.set_weight is not None:
            new = step.set_weight
            if isinstance(rspec, HttpRouteRouterSpec):
                before_r = canary_replicas(stable_replicas, weight) if weight else 0
                after_r = canary_replicas(stable_replicas, new)
                if after_r != before_r:
                    plan.changes.append(Change(step=name, system="Kubernetes",
                                               target=f"Deployment {rspec.namespace}/{rspec.canary_deployment}",
                                               before=f"{before_r} replicas", after=f"{after_r} replicas"))
            plan.changes.append(Change(step=name, system=system, target=where, before=f"canary {weight}% / stable {100 - weight}%",
                                       after=f"canary {new}% / stable {100 - new}%"))
            weight = new
        elif step.pause is not None and step.pause.duration is None:
            gates.append(f"continue at {name} (pause until approved; rejected or timed out rolls back)")
        elif step.analysis is not None:
            template = templates[step.analysis.template]
            plan.procedure += analysis_lines(template, args, prefix="    ")
    if weight == 100 and isinstance(rspec, HttpRouteRouterSpec):
        plan.changes.append(Change(step="promote", system="Kubernetes", target=f"Deployment {rspec.namespace}/{rspec.stable_deployment}",
                                   before=f"{stable_replicas} replicas", after="0 replicas"))
    plan.rollback = [f"{where}: canary weight to 0% (stable 100%)"]
    if isinstance(rspec, HttpRouteRouterSpec):
        plan.rollback.append(f"Deployment {rspec.namespace}/{rspec.canary_deployment} scaled to 0")
    plan.approval = approval_lines(inp.meta.approval, gates)
    plan.summary = f"canary {inp.service} {inp.version}: {share}% -> {weight}% in {len(inp.plan)} steps on {where}"


# ----------------------------------------------------------------------------------------------- blue-green
async def plan_blue_green(inp: BlueGreenInput, plan: DryRunPlan) -> None:
    system = "Kubernetes" if inp.router == "kubernetes" else "ALB"
    config = inp.kubernetes if inp.router == "kubernetes" else inp.alb
    assert config is not None  # BlueGreenInput fills the chosen router's section or refuses
    router = make_router(config)
    found = await guarded(system, "the live colour", router.discover(inp.image))
    live, new = found.live, found.new
    plan.reads.append(Reading(system=system, what="live colour", value=live))
    steps = ["discover", f"bring up {new} with {inp.image}"]
    if isinstance(router, KubernetesRouter):
        cfg, state = router.spec, router.live_state
        assert isinstance(cfg, KubernetesRouterConfig) and state is not None
        svc = f"Service {cfg.namespace}/{router.service_ref.name}"
        plan.reads.append(Reading(system=system, what=f"{svc} selector", value=_kv(router.selector)))
        plan.reads.append(Reading(system=system, what=f"Deployment {router.ref(live).name}",
                                  value=f"{state.replicas} replicas, image {state.image or '-'}"))
        other = await read(system, f"Deployment {router.ref(new).name}", KubernetesActivities.get_deployment,
                           router.ref(new), missing_ok=True)
        exists = other is not None and other.exists
        plan.reads.append(Reading(system=system, what=f"Deployment {router.ref(new).name}",
                                  value=f"{other.replicas} replicas, image {other.image or '-'}" if exists else "absent"))
        if found.already_live:
            _nothing(plan, f"{inp.image} is already live on {live}")
            return
        plan.changes.append(Change(step="bring-up", system=system, target=f"Deployment {router.ref(new).name}",
                                   before=(f"{other.replicas} replicas, image {other.image}" if exists else "absent"),
                                   after=f"{state.replicas} replicas, image {inp.image}"))
        selector = dict(router.selector)
        plan.changes.append(Change(step="switch", system=system, target=f"{svc} selector", before=_kv(selector),
                                   after=_kv({**selector, cfg.colour_label: new})))
        plan.changes.append(Change(step="scale-down", system=system, target=f"Deployment {router.ref(live).name}",
                                   before=f"{state.replicas} replicas", after="0 replicas"))
        plan.rollback = [f"{svc} selector back to {cfg.colour_label}={live}", f"Deployment {router.ref(new).name} removed"]
    else:
        assert isinstance(router, AlbRouter)
        acfg = router.spec
        assert isinstance(acfg, AlbRouterConfig)
        weights = (await read(system, f"listener {router.where()}", ElbActivities.alb_get_weights, router.ref)).weights
        plan.reads.append(Reading(system=system, what="listener", value=router.where()))
        for colour in COLOURS:
            tg = router.group(colour)
            health = await read(system, f"target group {tg}", ElbActivities.alb_target_health,
                                AlbTargetGroupRef(target_group_arn=tg, region=acfg.region))
            states = ", ".join(f"{t.id}:{t.state}" for t in health.targets) or "no targets"
            plan.reads.append(Reading(system=system, what=f"{colour} target group", value=f"{tg} (weight {weights.get(tg, 0)}; {states})"))
        if acfg.targets:
            plan.changes.append(Change(step="bring-up", system=system, target=f"target group {router.group(new)}",
                                       before="-", after="register " + ", ".join(f"{t.id}:{t.port or '-'}" for t in acfg.targets)))
        plan.changes.append(Change(step="switch", system=system, target=f"listener {router.where()} forward action",
                                   before=f"{live} ({router.group(live)})", after=f"{new} ({router.group(new)})"))
        if acfg.targets:
            plan.changes.append(Change(step="scale-down", system=system, target=f"target group {router.group(live)}",
                                       before="its targets registered", after="its targets deregistered"))
        plan.rollback = [f"listener {router.where()} forwards to {live} again"]
    steps += [*(["preview health checks: " + ", ".join(c.name for c in inp.health_checks)] if inp.health_checks else []),
              *(["preview smoke checks: " + ", ".join(c.name for c in inp.smoke_checks)] if inp.smoke_checks else [])]
    args = {"service": inp.service, "version": inp.image, "colour": new, "environment": inp.meta.environment}
    if inp.pre_analysis is not None:
        steps.append(f"pre-promotion analysis for {format_duration(inp.pre_analysis_duration)}")
        steps += analysis_lines(inp.pre_analysis, args, prefix="    ")
    steps += ["approval (cutover gate)", f"switch {live} -> {new}",
              f"bake {format_duration(inp.bake)}, every {format_duration(inp.bake_interval)}: http-health ("
              f"{inp.bake_probes} request(s) per health check of {new}; a tick with more than "
              f"{inp.health_failure_limit:g} % failed switches back)" + (", analysis:" if inp.bake_analysis else "")]
    if inp.bake_analysis is not None:
        steps += analysis_lines(inp.bake_analysis, args, prefix="    ")
    steps.append(f"scale down {live} after {format_duration(inp.scale_down_delay)}")
    plan.procedure = steps
    plan.rollback.insert(0, "rolls back when: a preview check fails, the pre-promotion analysis fails, the bake's "
                            "analysis fails (its http-health among the metrics), or an abort before scale-down")
    plan.approval = approval_lines(inp.meta.approval, ["cutover (before the switch)", "promote (to end the bake early)"])
    plan.summary = f"{inp.service}: {live} -> {new} ({inp.image}) via {inp.router}"


def _kv(mapping: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(mapping.items())) or "-"


def _nothing(plan: DryRunPlan, why: str) -> None:
    plan.outcome = "NothingToChange"
    plan.summary = f"{why}: the run would change nothing"


# ----------------------------------------------------------------------------------------------- failover / failback
async def _db(identifier: str, region: str) -> DbState:
    inst = await read("RDS", f"database {region}/{identifier}", RdsActivities.rds_describe_instance,
                      RdsInstanceRef(identifier=identifier, region=region))
    return db_state(inst, region)


def _db_text(db: DbState) -> str:
    if db.role == "absent":
        return "absent"
    role = f"replica of {db.source}" if db.role == "replica" else "primary"
    return f"{role}; parameter groups {', '.join(db.parameter_groups) or '-'}; {db.status}"


async def _lag(db: DbState) -> str:
    if db.role != "replica":
        return "-"
    lag = await read("RDS", f"replica lag of {db.key}", RdsActivities.rds_replica_lag,
                     RdsInstanceRef(identifier=db.identifier, region=db.region))
    return "unknown" if lag.lag_seconds is None else f"{lag.lag_seconds:g}s"


async def _replicas(side: RegionSide) -> int | None:
    if side.deployment is None:
        return None
    ref = DeploymentRef(context=side.k8s_context, namespace=side.namespace, name=side.deployment)
    state = await read("Kubernetes", f"Deployment {side.region}/{side.namespace}/{side.deployment}",
                       KubernetesActivities.get_deployment, ref, missing_ok=True)
    if state is None or not state.exists:
        raise WouldRefuse(f"Kubernetes: Deployment {side.namespace}/{side.deployment} in {side.region} not found")
    return int(state.replicas)


async def _records(inp: RegionFailoverInput | RegionFailbackInput) -> list[RecordSet]:
    dns = inp.dns
    found = await read("Route53", f"{dns.record_type} {dns.record_name} in zone {dns.zone_id}",
                       Route53Activities.route53_get_records,
                       Route53QueryInput(zone_id=dns.zone_id, name=dns.record_name, type=dns.record_type))
    if not found.records:
        raise WouldRefuse(f"Route53: no {dns.record_type} record {dns.record_name} in zone {dns.zone_id}")
    return sorted(found.records, key=lambda r: str(r.set_identifier))


def _record_text(record: RecordSet | None) -> str:
    if record is None:
        return "absent"
    extra = f" weight {record.weight}" if record.weight is not None else f" {record.failover}" if record.failover else ""
    return f"{', '.join(record.values)}{extra} ttl {record.ttl}"


def _dns_changes(plan: DryRunPlan, inp: RegionFailoverInput | RegionFailbackInput, current: list[RecordSet],
                 active: RegionSide, standby: RegionSide) -> None:
    now = {r.set_identifier: r for r in current}
    for record in dns_records(inp.dns, active, standby):
        before = now.get(record.set_identifier)
        if before is None or _record_text(before) != _record_text(record):
            plan.changes.append(Change(step="dns", system="Route53", target=f"{record.name} ({record.set_identifier})",
                                       before=_record_text(before), after=_record_text(record)))


def _fence(plan: DryRunPlan, side: RegionSide, db: DbState, replicas: int | None) -> None:
    if replicas is not None:
        plan.changes.append(Change(step="fence", system="Kubernetes", target=f"Deployment {side.region}/{side.deployment}",
                                   before=f"{replicas} replicas", after="0 replicas"))
    after = (f"parameter group {side.read_only_parameter_group} (writes blocked)" if side.read_only_parameter_group
             else "stopped")
    plan.changes.append(Change(step="fence", system="RDS", target=f"database {db.key}",
                               before=f"parameter groups {', '.join(db.parameter_groups) or '-'}", after=after))


async def _read_sides(plan: DryRunPlan, inp: RegionFailoverInput | RegionFailbackInput,
                      sides: list[RegionSide]) -> tuple[list[RecordSet], dict[str, int | None]]:
    records = await _records(inp)
    for r in records:
        plan.reads.append(Reading(system="Route53", what=f"{r.name} ({r.set_identifier})", value=_record_text(r)))
    compute: dict[str, int | None] = {}
    for side in sides:
        compute[side.region] = await _replicas(side)
        if compute[side.region] is not None:
            plan.reads.append(Reading(system="Kubernetes", what=f"Deployment {side.region}/{side.namespace}/{side.deployment}",
                                      value=f"{compute[side.region]} replicas"))
    return records, compute


async def plan_failover(inp: RegionFailoverInput, plan: DryRunPlan) -> None:
    p, d = inp.primary, inp.dr
    primary, dr = await _db(p.database, p.region), await _db(d.database, d.region)
    for db in (primary, dr):
        plan.reads.append(Reading(system="RDS", what=f"database {db.key}", value=_db_text(db)))
    plan.reads.append(Reading(system="RDS", what=f"replica lag of {dr.key}", value=await _lag(dr)))
    records, compute = await _read_sides(plan, inp, [p, d])
    failback_db = inp.failback_replica or f"{p.database}-failback"
    extras = [await _db(failback_db, p.region)] if inp.mode == "drill" else []
    problems = failover_problems(primary, dr, inp.mode, extras)
    if problems:
        raise WouldRefuse("; ".join(problems))
    if inp.mode == "real":
        plan.procedure.append(f"confirm the outage: {inp.confirm_probes} failed probes of {p.health_url}, every "
                              f"{format_duration(inp.confirm_interval)}, within {format_duration(inp.confirm_window)} "
                              "(a healthy primary ends the run: no failover needed)")
    _fence(plan, p, primary, compute[p.region])
    plan.changes.append(Change(step="promote", system="RDS", target=f"database {dr.key}", before=_db_text(dr),
                               after="primary (promoted, writable)"))
    if compute[d.region] is not None:
        plan.changes.append(Change(step="scale", system="Kubernetes", target=f"Deployment {d.region}/{d.deployment}",
                                   before=f"{compute[d.region]} replicas", after=f"{d.replicas} replicas"))
    _dns_changes(plan, inp, records, d, p)
    plan.procedure += ["approval", f"fence {p.region}", f"promote {dr.key}", f"scale {d.region}", "dns",
                       f"verify {d.health_url}: {inp.verify_passes} passing probes (of {inp.verify_attempts})"]
    if inp.mode == "drill":
        plan.procedure.append(f"failback (child run): replica {p.region}/{failback_db} of {dr.key}, catch up, "
                              f"promote, DNS back; then restore the as-found state and compare")
        plan.rollback = ["a drill goes home: failback, then every database, record and Deployment back to the values read above"]
    else:
        plan.rollback = ["before DNS moved: the fence is lifted and compute given back",
                         "after DNS moved: never shifted back automatically (Held, a person decides)"]
    plan.approval = approval_lines(inp.meta.approval, [f"failover of {inp.service} ({inp.mode})"])
    plan.summary = f"{inp.mode} failover of {inp.service}: {p.region} -> {d.region}, RTO target {format_duration(inp.rto_target)}"


async def plan_failback(inp: RegionFailbackInput, plan: DryRunPlan) -> None:
    back, current = inp.original, inp.current
    serving, replica = await _db(current.database, current.region), await _db(inp.replica, back.region)
    for db in (serving, replica):
        plan.reads.append(Reading(system="RDS", what=f"database {db.key}", value=_db_text(db)))
    if replica.role == "replica":
        plan.reads.append(Reading(system="RDS", what=f"replica lag of {replica.key}", value=await _lag(replica)))
    records, compute = await _read_sides(plan, inp, [back, current])
    problems = failback_problems(serving, replica)
    if problems:
        raise WouldRefuse("; ".join(problems))
    if replica.role == "absent":
        plan.changes.append(Change(step="replica", system="RDS", target=f"database {replica.key}", before="absent",
                                   after=f"read replica of {serving.key}"))
    plan.procedure += [f"catch up: replica lag <= {inp.max_replica_lag_seconds:g}s within {format_duration(inp.catch_up_timeout)}",
                       "approval", f"fence {current.region}", f"promote {replica.key}", f"scale {back.region}", "dns",
                       f"verify {back.health_url}", f"{current.region} back to standby"]
    _fence(plan, current, serving, compute[current.region])
    plan.changes.append(Change(step="promote", system="RDS", target=f"database {replica.key}",
                               before="read replica" if replica.role == "replica" else "(created above)",
                               after="primary (promoted, writable)"))
    if compute[back.region] is not None:
        plan.changes.append(Change(step="scale", system="Kubernetes", target=f"Deployment {back.region}/{back.deployment}",
                                   before=f"{compute[back.region]} replicas", after=f"{back.replicas} replicas"))
    _dns_changes(plan, inp, records, back, current)
    if compute[current.region] is not None:
        plan.changes.append(Change(step="standby", system="Kubernetes", target=f"Deployment {current.region}/{current.deployment}",
                                   before="0 replicas (fenced)", after=f"{current.standby_replicas} replicas"))
    plan.rollback = ["before DNS moved: the fence is lifted, compute given back, the replica it created removed",
                     "after DNS moved: never shifted back automatically (Held)"]
    plan.approval = approval_lines(inp.meta.approval, [f"failback of {inp.service}"])
    plan.summary = f"failback of {inp.service}: {current.region} -> {back.region} via replica {replica.key}"


# ----------------------------------------------------------------------------------------------- provision
async def plan_provision(inp: ProvisionEnvironmentInput, plan: DryRunPlan) -> None:
    problems = input_problems(inp)
    if problems:
        raise WouldRefuse("; ".join(problems))
    target = inp.target()
    check = await read("Terraform", f"module {inp.module}", TerraformActivities.check_module, ModuleCheckInput(module=inp.module))
    if not check.found:
        raise WouldRefuse(f"Terraform: {check.detail}")
    summary = await read("Terraform", f"plan of {inp.module} in workspace {target.workspace}",
                         TerraformActivities.plan_preview, PlanInput(target=target))
    plan.reads.append(Reading(system="Terraform", what=f"workspace {target.workspace}",
                              value=(f"state serial {summary.prior_serial}" if not summary.prior_empty else "no state yet")))
    plan.reads.append(Reading(system="Terraform", what="plan",
                              value=f"{summary.add} to add, {summary.change} to change, {summary.destroy} to destroy"))
    for address in summary.addresses:
        name, _, actions = address.rpartition(" (")
        actions = actions.rstrip(")")
        before = "absent" if actions == "create" else "present"
        after = {"create": "created", "update": "updated in place", "delete": "destroyed"}.get(actions, f"replaced ({actions})")
        plan.changes.append(Change(step="apply", system="Terraform", target=name, before=before, after=after))
    for output, action in sorted(summary.output_changes.items()):
        plan.changes.append(Change(step="apply", system="Terraform", target=f"output {output}", before="-", after=action))
    if not summary.has_changes:
        _nothing(plan, f"{inp.environment}: the infrastructure matches the configuration")
        return
    ns = inp.namespace
    if ns.enabled:
        name = ns.name or inp.environment
        found = await read("Kubernetes", f"namespace {name}", KubernetesActivities.get_namespace,
                           NamespaceRef(context=ns.context, name=name))
        plan.reads.append(Reading(system="Kubernetes", what=f"namespace {name}", value="exists" if found.exists else "absent"))
        objects = ["Namespace", *(["ResourceQuota"] if ns.resource_quota else []),
                   *(["LimitRange"] if ns.limit_range else []), *(["NetworkPolicy default-deny"] if ns.default_deny else [])]
        labels = {**MANAGED_BY, "runbook/environment": inp.environment, "runbook/tier": inp.tier, **ns.labels}
        plan.changes.append(Change(step="namespace", system="Kubernetes", target=f"namespace {name}",
                                   before="exists" if found.exists else "absent",
                                   after=f"{', '.join(objects)}; labels {_kv(labels)}"))
    key = f"{inp.record_prefix}{inp.environment}.json"
    plan.changes.append(Change(step="record", system="S3", target=f"s3://{inp.record_bucket}/{key}", before="-",
                               after="environment record (outputs, plan hash, approvers)"))
    plan.procedure = ["resolve", "plan", "approval (bound to the plan's hash)", "apply that plan", "outputs",
                      *(["namespace"] if ns.enabled else []), "record"]
    if inp.tier == "sandbox" and inp.ttl is not None:
        plan.procedure.append(f"live {format_duration(inp.ttl)}, then terraform destroy (extend up to {format_duration(inp.max_ttl)})")
    plan.rollback = ["what this run created goes: terraform destroy (sandbox, or a workspace that had no state), the "
                     "namespace if it did not exist, the record; an environment that existed is never destroyed (Held)"]
    plan.approval = approval_lines(inp.meta.approval, [f"apply-plan ({inp.tier}, bound to the plan's hash)"])
    outputs = f", {len(summary.output_changes)} output(s) changed" if summary.output_changes else ""
    plan.summary = (f"{inp.environment} ({inp.tier}): {summary.add} to add, {summary.change} to change, "
                    f"{summary.destroy} to destroy{outputs}")


# ----------------------------------------------------------------------------------------------- restore drill
async def plan_restore(inp: RestoreDrillInput, plan: DryRunPlan) -> None:
    now = workflow.now()
    rpo, rto = targets_for(inp.tier, inp.rpo_target, inp.rto_target)
    if inp.kind == "pg_dump":
        bucket = inp.dump_bucket or ""
        exists = await read("S3", f"bucket s3://{bucket}", S3Activities.s3_bucket_exists, S3BucketRef(bucket=bucket))
        if not exists.exists:
            raise WouldRefuse(f"S3: backup bucket s3://{bucket} does not exist")
        info = await read("S3", f"newest object under s3://{bucket}/{inp.dump_key or inp.dump_prefix}",
                          S3Activities.s3_latest_object, S3LatestQuery(bucket=bucket, prefix=inp.dump_key or inp.dump_prefix))
        if inp.dump_key and info.key != inp.dump_key:
            raise WouldRefuse(f"S3: the pinned dump s3://{bucket}/{inp.dump_key} does not exist")
        age = now - info.last_modified
        plan.reads.append(Reading(system="S3", what="backup", value=f"s3://{bucket}/{info.key}"))
        plan.reads.append(Reading(system="S3", what="backup age / size",
                                  value=f"{format_span(age)} (RPO target {format_duration(rpo)}); {info.size} bytes"))
        server = inp.restore_server
        assert server is not None
        scratch = scratch_name(plan.workflow_id, kind="database")
        plan.changes.append(Change(step="restore", system="PostgreSQL", target=f"database {scratch} on {server.host}:{server.port}",
                                   before="absent", after=f"restored from s3://{bucket}/{info.key}, checked, then dropped"))
    else:
        if inp.snapshot_identifier is None:
            src = await read("RDS", f"source instance {inp.source_instance}", RdsActivities.rds_describe_instance,
                             RdsInstanceRef(identifier=inp.source_instance or "", region=inp.region))
            if not src.exists:
                raise WouldRefuse(f"RDS: source instance {inp.source_instance} does not exist in {inp.region}")
        snap = await read("RDS", f"snapshots of {inp.source_instance}", RdsActivities.rds_latest_snapshot,
                          RdsSnapshotQuery(instance_identifier=inp.source_instance or "", region=inp.region,
                                           snapshot_identifier=inp.snapshot_identifier, kinds=list(inp.snapshot_kinds)))
        plan.reads.append(Reading(system="RDS", what="backup", value=f"snapshot {snap.identifier} ({snap.kind})"))
        plan.reads.append(Reading(system="RDS", what="backup age",
                                  value=f"{format_span(now - snap.created_at)} (RPO target {format_duration(rpo)})"))
        scratch = scratch_name(plan.workflow_id, kind="rds")
        plan.changes.append(Change(step="restore", system="RDS", target=f"instance {scratch} in {inp.region}", before="absent",
                                   after=f"restored from {snap.identifier}, checked, then deleted"))
    key = f"{inp.report_prefix}{inp.database}/<start time>-{plan.workflow_id}.json"
    plan.changes.append(Change(step="report", system="S3", target=f"s3://{inp.report_bucket}/{key}", before="-",
                               after="the drill's report"))
    plan.procedure = ["validate", "locate backup", "restore to the scratch target",
                      *(f"check {c.name or c.kind} ({c.kind})" for c in inp.checks),
                      f"judge: RPO <= {format_duration(rpo)}, RTO <= {format_duration(rto)}", "clean up", "report"]
    plan.rollback = ["the scratch target is removed at every ending"]
    plan.approval = approval_lines(inp.meta.approval, [])
    plan.summary = f"restore drill of {inp.database} ({inp.kind}) into scratch {scratch}"


async def plan_release(inp: ReleaseInput, plan: DryRunPlan) -> None:
    """The release: the ledger (a version marked bad would be refused), then each stage's and wave's child run
    planned by that child's own planner (its reads and changes, named by stage and wave)."""
    from activities.release_ledger import ReleaseLedgerActivities
    from core.release import LedgerQuery

    problems = inp.problems()
    if problems:
        raise WouldRefuse("; ".join(problems))
    view = await read("PostgreSQL", "the release ledger", ReleaseLedgerActivities.ledger_read,
                      LedgerQuery(service=inp.service))
    known = ", ".join(f"{env} {v}" for env, v in sorted(view.last_good.items())) or "none yet"
    plan.reads.append(Reading(system="PostgreSQL", what="last known good", value=known))
    why = view.bad.get(inp.version)
    if why is not None and not inp.override_bad_version:
        raise WouldRefuse(f"version: {inp.version} is marked bad ({why})")
    gates = [f"override-bad-version ({why})"] if why is not None else []
    plan.procedure = ["validate", "last-known-good"]
    for stage in inp.stages:
        policy = inp.meta.approval_by_environment.get(stage.environment, inp.meta.approval)
        if policy.required_approvals:
            gates.append(f"promote-{stage.name}: " + approval_lines(policy, [])[0])
        plan.procedure.append(f"{stage.name}: approval")
        for n, wave in enumerate(waves_of(stage)):
            where = f"{stage.name}/{wave.name if wave else 'all'}"
            if n and stage.bake:
                plan.procedure.append(f"{where}: bake {format_duration(stage.bake)}")
            if stage.error_budget:
                plan.procedure.append(f"{where}: error budget (objective {inp.slo.objective} % over "
                                      f"{format_duration(inp.slo.window)}; spent: a break-glass approval)")
            child = child_input(inp, stage, wave, inp.version, inp.meta, policy, preapproved="the stage's gate")
            sub = DryRunPlan(runbook=child.meta.runbook, workflow_type=stage.strategy, workflow_id=where,
                             target=inp.service, environment=stage.environment)
            if isinstance(child, CanaryRampInput):
                await plan_canary(child, sub)
            else:
                assert isinstance(child, BlueGreenInput)
                await plan_blue_green(child, sub)
            plan.reads += [r.model_copy(update={"what": f"{where}: {r.what}"}) for r in sub.reads]
            plan.changes += [c.model_copy(update={"step": f"{where}: {c.step}"}) for c in sub.changes]
            plan.procedure.append(f"{where}: {stage.strategy} ({sub.summary})" if sub.summary else
                                  f"{where}: {stage.strategy}")
            if wave is not None and wave.checks:
                await plan_release_checks(inp, stage, wave.checks, where, wave.name, plan)
        if stage.checks:
            await plan_release_checks(inp, stage, stage.checks, stage.name, "", plan)
    plan.approval = approval_lines(inp.meta.approval, []) if not gates else [f"gate {g}" for g in gates]
    plan.rollback = [
        "a wave's child undoes its own wave when it rolls back or is aborted",
        "stop the line: the version is marked bad; the stage's promoted waves go back to "
        + (f"the last known good ({known})" if view.last_good else "the last known good, of which there is none: "
           "they would stay on the new version (Failed)"),
    ]
    plan.summary = f"release {inp.service} {inp.version} through " + " -> ".join(s.name for s in inp.stages)


async def plan_release_checks(inp: ReleaseInput, stage: Any, checks: list[Any], where: str, wave: str,
                              plan: DryRunPlan) -> None:
    """A release's check step in the procedure; a job check is a change (the Job it would create, read-only: its
    namespace must exist, or the release would stop the line there)."""
    from core.release import JobCheckSpec, expand

    fields = {"version": inp.version, "service": inp.service, "stage": stage.name, "wave": wave}
    shown = []
    for index, check in enumerate(checks):
        if not isinstance(check, JobCheckSpec):
            shown.append(f"{check.name} (http {expand(check.url, fields)})")
            continue
        image = expand(check.image, fields)
        command = " ".join(expand(c, fields) for c in [*check.command, *check.args]) or "(the image's entrypoint)"
        shown.append(f"{check.name} (job {image} in {check.namespace}, up to {format_duration(check.timeout)})")
        state = await read("Kubernetes", f"namespace {check.namespace}", KubernetesActivities.get_namespace,
                           NamespaceRef(context=check.context, name=check.namespace))
        plan.reads.append(Reading(system="Kubernetes", what=f"{where}: namespace {check.namespace}",
                                  value="exists" if state.exists else "absent"))
        if not state.exists:
            raise WouldRefuse(f"{where}: check {check.name}: namespace {check.namespace} does not exist (the job "
                              f"check's checks.{index}.namespace): its Job could not run")
        plan.changes.append(Change(step=f"{where}: checks", system="Kubernetes",
                                   target=f"Job {check.namespace}/{check.name}-<run digest>", before="absent",
                                   after=f"image {image}, {command}; backoffLimit {check.backoff_limit}, deadline "
                                         f"{format_duration(check.timeout)}; Complete passes, Failed stops the line"))
    plan.procedure.append(f"{where}: checks " + ", ".join(shown))


async def plan_rotate(inp: RotateSecretInput, plan: DryRunPlan) -> None:
    """rotate-secret: the kind's reads and changes, then (rollout kubernetes) the Secret the consumers mount and the
    rolling restarts of their Deployments, read as the run's validate step reads them."""
    await plan_rotate_kind(inp, plan)
    if inp.rollout != "kubernetes" or inp.secret is None:
        return
    ref = inp.secret
    where = f"{ref.namespace}/{ref.name}"
    deployments = [d.strip() for d in inp.deployments if d.strip()]
    state = await read("Kubernetes", f"secret {where} and deployments {', '.join(deployments) or '(none)'}",
                       KubernetesActivities.secret_rollout_target, SecretRolloutTarget(secret=ref, deployments=deployments))
    why = rollout_problems(inp, state)
    if why:
        raise WouldRefuse("; ".join(why))
    plan.reads.append(Reading(system="Kubernetes", what=f"secret {where}",
                              value=f"{state.secret_type}, written from {state.source or '(not by a rotation)'}"))
    plan.changes.append(Change(step="roll out", system="Kubernetes", target=f"secret {where}",
                               before=state.source or "the current material",
                               after=f"the new version of {inp.kv_path} ({', '.join(inp.secret_layout()[1])})"))
    plan.changes += [Change(step="roll out", system="Kubernetes", target=f"deployment {ref.namespace}/{name}",
                            before="running", after="rolling restart (restartedAt), readiness waited") for name in deployments]
    verify = next((i for i, line in enumerate(plan.procedure) if line.startswith("verify")), len(plan.procedure))
    plan.procedure.insert(verify, f"roll out: secret {where} from the new version"
                                  + (f", then restart {', '.join(deployments)} and wait until ready" if deployments else "")
                                  + "; a roll back writes the old version into it and restarts again")


async def plan_rotate_kind(inp: RotateSecretInput, plan: DryRunPlan) -> None:
    """rotate-secret, per kind: the role and the consumers' KV path read as the run's validate step reads them."""
    problems = inp.problems()
    if problems:
        raise WouldRefuse("; ".join(problems))
    if inp.kind == "certificate":
        await plan_rotate_certificate(inp, plan)
        return
    if inp.kind == "api_key":
        key = await read("Vault", inp.kv_path, SecretEngineActivities.apikey_rotation_target, ApiKeyTarget(kv_path=inp.kv_path))
        if not key.kv_version:
            raise WouldRefuse(f"kv_path: {inp.kv_path} does not exist (the consumers' current key)")
        plan.reads.append(Reading(system="Vault", what=f"{inp.kv_path} now", value=f"v{key.kv_version} ({key.fingerprint})"))
        plan.changes += [
            Change(step="issue new key", system="Vault", target=inp.kv_path, before=f"v{key.kv_version}",
                   after=f"v{key.kv_version + 1}: a new key (v{key.kv_version} still readable)"),
            Change(step="destroy old version", system="Vault", target=f"{inp.kv_path} v{key.kv_version}",
                   before="readable", after=f"destroyed, {format_duration(inp.grace_period)} after the consumers are verified"),
        ]
        plan.procedure += [f"verify consumers: {', '.join(inp.consumer_urls)} report the new key's fingerprint, within "
                           f"{format_duration(inp.verify_timeout)}; else roll back (old version written back, new destroyed)",
                           f"grace period {format_duration(inp.grace_period)}", "destroy old version"]
        plan.summary = f"rotate the API key in {inp.kv_path} from v{key.kv_version} to v{key.kv_version + 1}"
        return
    state = await read("Vault", f"role {inp.mount}/roles/{inp.role} and {inp.kv_path}", SecretEngineActivities.db_rotation_target,
                       DbRotationTarget(mount=inp.mount, role=inp.role, kv_path=inp.kv_path))
    if not state.role_exists:
        raise WouldRefuse(f"role: {inp.mount}/roles/{inp.role} does not exist")
    if not state.kv_version:
        raise WouldRefuse(f"kv_path: {inp.kv_path} does not exist (the consumers' current credential)")
    old = f"v{state.kv_version} (user {state.kv_username or '?'}, lease {state.kv_lease_id or 'none'})"
    plan.reads.append(Reading(system="Vault", what=f"{inp.kv_path} now", value=old))
    plan.changes += [
        Change(step="issue new credential", system="Vault", target=f"{inp.mount}/creds/{inp.role}", before="-",
               after="a new database user and lease"),
        Change(step="issue new credential", system="Vault", target=inp.kv_path, before=f"v{state.kv_version}",
               after=f"v{state.kv_version + 1}: the new user (the old one still valid)"),
        Change(step="revoke old credential", system="Vault", target=f"lease {state.kv_lease_id or '(none)'}",
               before=f"user {state.kv_username or '?'} valid", after="revoked: the user dropped"),
    ]
    plan.procedure += [
        "validate: the engine's role and the KV path exist",
        f"issue new credential: {inp.kv_path} v{state.kv_version + 1}",
        f"verify consumers: {', '.join(inp.consumers)} connected as the new user only (pg_stat_activity), "
        f"within {format_duration(inp.verify_timeout)}; else roll back (old credential written back, new lease revoked)",
        "revoke old credential",
    ]
    plan.summary = f"rotate {inp.kv_path} from v{state.kv_version} to v{state.kv_version + 1}"


async def plan_rotate_certificate(inp: RotateSecretInput, plan: DryRunPlan) -> None:
    target = PkiRotationTarget(mount=inp.pki_mount, role=inp.role, common_name=inp.common_name, kv_path=inp.kv_path)
    state = await read("Vault", f"PKI role {inp.pki_mount}/roles/{inp.role} and {inp.kv_path}",
                       SecretEngineActivities.pki_rotation_target, target)
    if not state.role_exists:
        raise WouldRefuse(f"role: {inp.pki_mount}/roles/{inp.role} does not exist")
    if not state.cn_allowed:
        raise WouldRefuse(f"common_name: {inp.common_name} is outside the role's allowed domains "
                          f"{', '.join(state.allowed_domains) or '(none)'}")
    if not state.kv_version:
        raise WouldRefuse(f"kv_path: {inp.kv_path} does not exist (the endpoint's current certificate)")
    plan.reads.append(Reading(system="Vault", what=f"{inp.kv_path} now",
                              value=f"v{state.kv_version} (serial {state.kv_serial or '?'})"))
    plan.changes += [
        Change(step="issue new certificate", system="Vault", target=f"{inp.kv_path}", before=f"v{state.kv_version}",
               after=f"v{state.kv_version + 1}: a new certificate for {inp.common_name} (the old one still valid)"),
        Change(step="revoke old certificate", system="Vault", target=f"{inp.pki_mount} serial {state.kv_serial or '(none)'}",
               before="valid", after="revoked"),
    ]
    plan.procedure += [
        f"validate: role {inp.role} exists and allows {inp.common_name}",
        f"issue new certificate: {inp.kv_path} v{state.kv_version + 1}",
        f"verify endpoints: {', '.join(inp.endpoints)} present the new serial in a TLS handshake, within "
        f"{format_duration(inp.verify_timeout)}; else roll back (old certificate written back, new one revoked)",
        "revoke old certificate",
    ]
    plan.summary = f"rotate the certificate in {inp.kv_path} from v{state.kv_version} to v{state.kv_version + 1}"


# ----------------------------------------------------------------------------------------------- the workflow
Planner = Callable[[Any, DryRunPlan], Awaitable[None]]
PLANNERS: dict[str, tuple[type[RunbookInput], Planner]] = {
    "CanaryRamp": (CanaryRampInput, plan_canary),
    "BlueGreenCutover": (BlueGreenInput, plan_blue_green),
    "RegionFailover": (RegionFailoverInput, plan_failover),
    "RegionFailback": (RegionFailbackInput, plan_failback),
    "ProvisionEnvironment": (ProvisionEnvironmentInput, plan_provision),
    "RestoreDrill": (RestoreDrillInput, plan_restore),
    "Release": (ReleaseInput, plan_release),
    "RotateSecret": (RotateSecretInput, plan_rotate),
}


async def freeze_check(inp: RunbookInput) -> FreezeCheck:
    """Whether a change freeze (runbooks/calendar.yaml) applies to this runbook in its environment now, read by the
    same local activity a run calls before each change (``check_freeze``)."""
    meta = inp.meta
    kind = inp.mode if isinstance(inp, RegionFailoverInput) else ""  # as RegionFailover.freeze_kind says
    try:
        state: FreezeState = await workflow.execute_local_activity_method(
            CalendarActivities.check_freeze,
            FreezeQuery(runbook=meta.runbook, environment=meta.environment, kind=kind, at=workflow.now()),
            start_to_close_timeout=timedelta(seconds=30), retry_policy=READ_RETRY)
    except (ActivityError, ApplicationError) as err:
        raise Unreadable("change calendar", "runbooks/calendar.yaml", cause_of(err)) from None
    freeze = state.freeze
    if freeze is None:
        return FreezeCheck(checked=True, detail="no freeze window applies now")
    then = "the run would be refused" if meta.freeze == "refuse" else "the run would wait until it ends"
    glass = " (or a break-glass approval)" if freeze.break_glass is not None and meta.freeze != "refuse" else ""
    return FreezeCheck(checked=True, frozen=True, window=freeze.window, ends_at=freeze.ends_at,
                       detail=f"{freeze.line()}: {then}{glass}")


@workflow.defn
class RunbookDryRun:
    @workflow.run
    async def run(self, req: DryRunInput) -> DryRunPlan:
        model, planner = PLANNERS.get(req.workflow_type, (RunbookInput, None))
        inp = model.model_validate(req.input) if planner is not None else RunbookInput.model_validate(
            {"meta": req.input.get("meta"), "carry": req.input.get("carry")})
        meta = inp.meta
        plan = DryRunPlan(runbook=meta.runbook, workflow_type=req.workflow_type, workflow_id=req.workflow_id,
                          target=meta.target, environment=meta.environment)
        if planner is None:  # a team's own runbook (RUNBOOK_WORKFLOW_MODULES) without a plan phase here
            plan.outcome = "NotPlanned"
            plan.summary = f"{req.workflow_type} has no dry run: what it would change is not known"
            plan.approval = approval_lines(meta.approval, [])
            plan.freeze = await self._freeze(inp)
            return plan
        try:
            await planner(inp, plan)
        except WouldRefuse as refusal:
            plan.outcome, plan.refusal = "WouldRefuse", str(refusal)
            plan.summary = f"the run would be refused: {refusal}; nothing would be changed"
            plan.changes = []
        except Unreadable as err:
            raise ApplicationError(str(err), type=DRY_RUN_UNREADABLE, non_retryable=True) from None
        if plan.outcome == "WouldChange" and not plan.changes:
            plan.outcome = "NothingToChange"
        plan.freeze = await self._freeze(inp)
        if plan.freeze.frozen and meta.freeze == "refuse" and plan.outcome == "WouldChange":
            plan.outcome, plan.refusal = "WouldRefuse", plan.freeze.text()
            plan.summary = f"the run would be refused: {plan.refusal}"
        return plan

    @staticmethod
    async def _freeze(inp: RunbookInput) -> FreezeCheck:
        try:
            return await freeze_check(inp)
        except Unreadable as err:
            raise ApplicationError(str(err), type=DRY_RUN_UNREADABLE, non_retryable=True) from None
