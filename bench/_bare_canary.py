"""The bare workflow of ``bench/engine_throughput.py``: the activities and timers a canary run with the bench's short
plan issues, in the same order and with the same inputs and options, and none of the runbook machinery (no gates,
queries' state, steps, search attributes, patches, metrics or details). Imported by module name, so the sandbox
can load it (a workflow in ``__main__`` cannot be)."""

from __future__ import annotations

from datetime import timedelta
from typing import TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from pydantic import BaseModel

    from core.analysis import MeasureBatchInput, alb_args
    from core.aws import AlbSetWeightsInput, AlbTrafficRef, AlbWeights
    from core.calendar import FreezeQuery, FreezeState
    from core.canary import AlbRouterSpec, CanaryRampInput
    from core.events import NotifyResult, RunbookEvent
    from core.routing import EventKind

RETRY = RetryPolicy(maximum_attempts=6)
T = TypeVar("T")


async def _call(name: str, arg: BaseModel, result_type: type[T]) -> T:
    return await workflow.execute_activity(name, arg, result_type=result_type,
                                           start_to_close_timeout=timedelta(seconds=60), retry_policy=RETRY)


@workflow.defn(name="BenchBareCanary")
class BareCanary:
    @workflow.run
    async def run(self, input: CanaryRampInput) -> int:
        info, meta = workflow.info(), input.meta
        assert isinstance(input.router, AlbRouterSpec) and input.router.listener_arn
        router = input.router
        ref = AlbTrafficRef(listener_arn=router.listener_arn, rule_arn=router.rule_arn, region=router.region)

        def event(kind: EventKind, title: str) -> RunbookEvent:
            return RunbookEvent(kind=kind, workflow_id=info.workflow_id, run_id=info.run_id, runbook=meta.runbook,
                                target=meta.target, title=title)

        async def check_freeze() -> FreezeState:  # before every change, as every runbook asks the change calendar
            query = FreezeQuery(runbook=meta.runbook, environment=meta.environment, at=workflow.now())
            return await workflow.execute_local_activity("check_freeze", query, result_type=FreezeState,
                                                         start_to_close_timeout=timedelta(seconds=30))

        async def set_weight(weight: int) -> AlbWeights:
            await check_freeze()
            weights = {str(router.stable_target_group): 100 - weight, str(router.canary_target_group): weight}
            return await _call("alb_set_weights", AlbSetWeightsInput(ref=ref, weights=weights), AlbWeights)

        await _call("notify", event("started", "bare: starting"), NotifyResult)
        await _call("alb_get_weights", ref, AlbWeights)
        measured = 0
        templates = {t.name: t for t in input.templates}
        args = {"service": input.service, "version": input.version, "stable_version": input.stable_version,
                "environment": meta.environment,
                **alb_args(router.listener_arn, router.stable_target_group, router.canary_target_group), **input.args}
        for step in input.plan:
            if step.set_weight is not None:
                await set_weight(step.set_weight)
            elif step.analysis is not None:
                metrics = templates[step.analysis.template].metrics  # one interval and count for all (the bench's)
                interval, count = metrics[0].interval, metrics[0].count or 1
                for _ in range(count):
                    await workflow.sleep(interval)
                    results = await workflow.execute_local_activity(
                        "measure_metrics", MeasureBatchInput(metrics=metrics, args=args), result_type=list,
                        start_to_close_timeout=timedelta(seconds=30),
                    )
                    measured += len(results)
        await check_freeze()  # the promotion is a change too
        await _call("notify", event("finished", "bare: done"), NotifyResult)
        return measured
