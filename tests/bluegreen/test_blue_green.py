"""The blue-green cutover end to end: time-skipping Temporal, the real Kubernetes activities against the
wire-format fake, the real ELB activities against moto, real HTTP checks against local servers as the colours."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from temporalio.client import WorkflowFailureError, WorkflowUpdateFailedError
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

from core.analysis import AnalysisTemplate
from core.approval import AbortInput, RejectInput
from tests import harness
from tests.bluegreen.conftest import (
    NS,
    approve,
    deployment,
    make_input,
    policy,
    selector,
    start,
    wait_for,
    worker,
)
from workflows.blue_green import BlueGreenCutover, ExtendBakeInput, PromoteNowInput


async def failure(handle) -> tuple[str, dict]:
    """A run that could not make things safe fails the workflow (RunFailed) with its result as details."""
    with pytest.raises(WorkflowFailureError) as err:
        await handle.result()
    cause = err.value.cause
    return cause.type, (cause.details[0] if cause.details else {})


def step(result, name: str):
    return next(s for s in result.steps if s.name == name)


# ------------------------------------------------------------------------------------------------ happy paths
async def test_kubernetes_happy_path(ts_env, task_queue, recording, kube, colours):
    fake = kube.fake
    async with worker(ts_env, task_queue, recording, kube) as client:
        handle = await start(client, task_queue, make_input(colours))
        status = await wait_for(handle, lambda s: s.gate is not None)
        assert status.gate.binding == "shop: blue -> green (shop:v2) via kubernetes"
        assert status.details["plan"] == ["discover", "bring-up", "preview-health", "preview-smoke", "approval", "switch",
                                          "bake", "scale-down"]  # what `runbook watch` shows ahead of the gate
        assert "health health: ok" in status.gate.summary and "smoke smoke: ok" in status.gate.summary
        assert selector(fake)["colour"] == "blue"  # nothing switched before the approval
        await approve(handle)
        result = await handle.result()
        await harness.save_history(handle, "bluegreen-kubernetes_happy_path")
    assert result.status == "Succeeded" and result.live_colour == "green" and result.switched
    assert selector(fake) == {"app": "shop", "colour": "green"}
    green = deployment(fake, "green")
    assert green["spec"]["replicas"] == 3
    container = green["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "shop:v2" and container["env"] == [{"name": "MODE", "value": "prod"}]
    assert green["spec"]["template"]["metadata"]["labels"] == {"app": "shop", "colour": "green"}
    assert deployment(fake, "blue")["spec"]["replicas"] == 0  # old colour scaled down, not deleted
    assert colours["green"].hits["/healthz"] >= 1 + 3 * 2  # preview + 3 bake ticks x 2 probes
    assert colours["blue"].hits["/healthz"] == 0  # previews and bake hit the new colour only
    assert [s.name for s in result.steps] == ["discover", "bring-up", "preview-health", "preview-smoke", "approval", "switch", "bake", "scale-down"]
    assert re.fullmatch(r"baked (\d+[hms])+ without breach", step(result, "bake").detail)  # never 3m0.105965s
    assert recording[0].kinds(handle.id)[-1] == "finished"


async def test_alb_happy_path(ts_env, task_queue, recording, alb, colours):
    alb.publish("shop:v2", error_rate=0.2, p99=0.4)
    async with worker(ts_env, task_queue, recording) as client:
        inp = make_input(colours, router="alb", alb=alb, bake_analysis=BlueGreenCutover_bake())
        handle = await start(client, task_queue, inp)
        await wait_for(handle, lambda s: s.gate is not None)
        assert alb.targets("green") == ["10.0.1.20", "10.0.2.20"]  # registered before the switch
        assert alb.weights() == {"blue": 1}
        await approve(handle)
        result = await handle.result()
        await harness.save_history(handle, "bluegreen-alb_happy_path")
    assert result.status == "Succeeded" and result.live_colour == "green"
    weights = alb.weights()
    assert weights["green"] > 0 and weights.get("blue", 0) == 0
    assert alb.targets("blue") == []  # old colour's targets deregistered at the end
    assert alb.targets("green") == ["10.0.1.20", "10.0.2.20"]
    assert result.bake_verdict is not None and result.bake_verdict.phase == "Successful"  # judged over the whole bake
    assert [m.metric for m in result.bake_verdict.metrics] == ["error-rate", "latency-p99", "http-health"]
    assert [m.successful for m in result.bake_verdict.metrics] == [3, 3, 3]  # one measurement a tick, 3 ticks


def BlueGreenCutover_bake() -> AnalysisTemplate:
    """The catalog entry's default bake template (the policy's rollback triggers live in runbooks/, not in code)."""
    entry = yaml.safe_load((Path(__file__).resolve().parents[2] / "runbooks" / "blue-green.yaml").read_text())
    return AnalysisTemplate.model_validate(entry["parameters"]["bake_analysis"]["default"])


async def test_scale_down_delay_is_honoured_in_virtual_time(ts_env, task_queue, recording, kube, colours):
    async with worker(ts_env, task_queue, recording, kube) as client:
        handle = await start(client, task_queue, make_input(colours, scale_down_delay="2h"))
        await approve(handle)
        result = await handle.result()
    scale_down = step(result, "scale-down")
    bake = step(result, "bake")
    assert scale_down.finished_at - scale_down.started_at >= timedelta(hours=2)
    assert bake.finished_at - bake.started_at >= timedelta(minutes=3)
    assert deployment(kube.fake, "blue")["spec"]["replicas"] == 0


async def test_already_live_changes_nothing(ts_env, task_queue, recording, kube, colours):
    async with worker(ts_env, task_queue, recording, kube) as client:
        handle = await start(client, task_queue, make_input(colours, image="shop:v1"))
        result = await handle.result()
    assert result.status == "Succeeded" and not result.switched and result.live_colour == "blue"
    assert deployment(kube.fake, "green") is None and selector(kube.fake)["colour"] == "blue"
    assert not kube.fake.calls("PATCH") and not kube.fake.calls("POST")


# ------------------------------------------------------------------------------------------------ before the switch
async def test_preview_health_failure_removes_new_colour(ts_env, task_queue, recording, kube, colours):
    colours["green"].routes["/healthz"] = (500, "db down")
    async with worker(ts_env, task_queue, recording, kube) as client:
        handle = await start(client, task_queue, make_input(colours))
        result = await handle.result()  # an ending, not a failure: the new colour was removed
    assert result.status == "RolledBack" and not result.switched and not result.not_undone
    assert "answered 500, expected 200" in result.reason and result.compensated == ["green removed"]
    assert colours["green"].hits["/healthz"] == 2  # check_attempts
    assert deployment(kube.fake, "green") is None  # removed
    assert deployment(kube.fake, "blue")["spec"]["replicas"] == 3 and selector(kube.fake)["colour"] == "blue"


async def test_smoke_failure_removes_new_colour(ts_env, task_queue, recording, kube, colours):
    colours["green"].version = "shop:v1"  # the new colour answers with the old version: wrong build
    async with worker(ts_env, task_queue, recording, kube) as client:
        handle = await start(client, task_queue, make_input(colours))
        result = await handle.result()
    assert result.status == "RolledBack" and "preview smoke checks failed" in result.reason
    assert "lacks 'shop:v2'" in result.summary
    assert deployment(kube.fake, "green") is None and selector(kube.fake)["colour"] == "blue"


async def test_approval_rejected(ts_env, task_queue, recording, kube, colours):
    async with worker(ts_env, task_queue, recording, kube) as client:
        handle = await start(client, task_queue, make_input(colours))
        status = await wait_for(handle, lambda s: s.gate is not None)
        await handle.execute_update(
            BlueGreenCutover.reject, RejectInput(gate_id=status.gate.gate_id, approver="alice", reason="not during the sale")
        )
        result = await handle.result()
    assert result.status == "Rejected" and "rejected by alice: not during the sale" in result.reason
    assert result.compensated == ["green removed"] and not result.switched
    assert deployment(kube.fake, "green") is None and selector(kube.fake)["colour"] == "blue"
    assert recording[0].events[-1].severity == "warning"  # a rejection is not a page


async def test_approval_timed_out(ts_env, task_queue, recording, kube, colours):
    async with worker(ts_env, task_queue, recording, kube) as client:
        handle = await start(client, task_queue, make_input(colours, approval=policy(timeout="4h")))
        result = await handle.result()  # nobody answers: 4 h pass in virtual time
    assert result.status == "Rejected" and "timed out" in result.reason
    assert result.gates[0].decision == "timed_out"
    assert deployment(kube.fake, "green") is None and selector(kube.fake)["colour"] == "blue"


async def test_new_colour_never_ready_hits_deadline_and_cleans_up(ts_env, task_queue, recording, kube, colours):
    kube.fake.set_rollout(NS, "shop-green", "stuck")
    inp = make_input(colours, progress_deadline="1s", kubernetes={"namespace": NS, "poll_seconds": 0.2})
    async with worker(ts_env, task_queue, recording, kube) as client:
        handle = await start(client, task_queue, inp)
        result = await handle.result()
    assert result.status == "RolledBack" and "not rolled out" in result.reason
    assert result.reason.startswith("bring-up failed")
    assert deployment(kube.fake, "green") is None
    assert deployment(kube.fake, "blue")["spec"]["replicas"] == 3 and selector(kube.fake)["colour"] == "blue"
    assert colours["green"].hits["/healthz"] == 0  # never previewed


# ------------------------------------------------------------------------------------------------ after the switch
async def test_breach_during_bake_switches_back_alb(ts_env, task_queue, recording, alb, colours):
    alb.publish("shop:v2", error_rate=4.0, p99=0.5)  # error rate 4 % > 1 %
    async with worker(ts_env, task_queue, recording) as client:
        inp = make_input(colours, router="alb", alb=alb, bake_analysis=BlueGreenCutover_bake())
        handle = await start(client, task_queue, inp)
        await approve(handle)
        result = await handle.result()  # a clean switch-back is a result (RolledBack), not a failure
        await harness.save_history(handle, "bluegreen-breach_during_bake_switches_back_alb")
    assert result.status == "RolledBack"
    assert result.switched_back and result.live_colour == "blue" and not result.not_undone
    assert result.compensated == ["traffic switched back to blue", "green removed"]
    assert "error-rate failed" in result.reason and "values: [4]" in result.reason
    weights = alb.weights()
    assert weights["blue"] > 0 and weights.get("green", 0) == 0
    assert alb.targets("green") == [] and alb.targets("blue") == ["10.0.1.10", "10.0.2.10"]
    names = [s.name for s in result.steps]
    assert names.index("switch-back") < names.index("remove-new-colour")
    assert recording[0].kinds(handle.id)[-1] == "finished"  # one final notification, severity by status
    assert recording[0].events[-1].severity == "error"


async def test_health_breach_during_bake_switches_back_kubernetes(ts_env, task_queue, recording, kube, colours):
    async with worker(ts_env, task_queue, recording, kube) as client:
        handle = await start(client, task_queue, make_input(colours))
        await approve(handle)
        await wait_for(handle, lambda s: s.details.get("phase") == "bake")
        colours["green"].routes["/healthz"] = (503, "overloaded")
        result = await handle.result()
    assert result.status == "RolledBack" and "http-health failed" in result.reason  # the first tick over the limit
    assert "2/2 requests failed" in result.reason and "answered 503" in result.reason, result.reason
    assert result.health_failures == 2 and result.health_probes >= 2
    assert selector(kube.fake)["colour"] == "blue"
    assert deployment(kube.fake, "green") is None and deployment(kube.fake, "blue")["spec"]["replicas"] == 3


@pytest.mark.parametrize("limit, status", [(5, "RolledBack"), (50, "Succeeded")])
async def test_health_failure_limit_is_the_share_of_a_ticks_requests(ts_env, task_queue, recording, kube, colours,
                                                                      limit, status):
    """One of a tick's two health requests fails (50 %): over the catalog's 5 % that tick switches back at once; a
    limit of 50 % tolerates it and the bake goes on. The limit is input data (the catalog's health_failure_limit)."""
    async with worker(ts_env, task_queue, recording, kube) as client:
        handle = await start(client, task_queue, make_input(colours, health_failure_limit=limit))
        await approve(handle)
        await wait_for(handle, lambda s: s.details.get("phase") == "bake")
        colours["green"].fail_first["/healthz"] = 1  # the first bake tick's first request answers 503
        result = await handle.result()
    assert result.status == status, result.reason
    assert result.health_failures == 1 and result.health_probes == (2 if status == "RolledBack" else 6)
    health = next(m for m in result.bake_verdict.metrics if m.metric == "http-health")
    assert health.values[0] == 50.0 and health.condition == f"<= {limit}"
    if status == "RolledBack":
        assert "http-health failed: condition <= 5 %" in result.reason and "1/2 requests failed" in result.reason
        assert selector(kube.fake)["colour"] == "blue"
    else:
        assert health.phase == "Successful" and selector(kube.fake)["colour"] == "green"


async def test_abort_during_bake_switches_back(ts_env, task_queue, recording, kube, colours):
    async with worker(ts_env, task_queue, recording, kube) as client:
        handle = await start(client, task_queue, make_input(colours, bake="1h"))
        await approve(handle)
        await wait_for(handle, lambda s: s.details.get("phase") == "bake")
        assert selector(kube.fake)["colour"] == "green"
        await handle.execute_update(BlueGreenCutover.abort, AbortInput(requested_by="carol", reason="customer complaints"))
        result = await handle.result()
    assert result.status == "Aborted" and "customer complaints" in result.summary
    assert result.switched_back and result.live_colour == "blue"
    assert selector(kube.fake)["colour"] == "blue" and deployment(kube.fake, "green") is None


async def test_cancel_behaves_like_abort(ts_env, task_queue, recording, kube, colours):
    async with worker(ts_env, task_queue, recording, kube) as client:
        handle = await start(client, task_queue, make_input(colours))
        await wait_for(handle, lambda s: s.gate is not None)
        await harness.cancel_settled(handle)  # not while the gate's approval_needed notification is under way
        result = await handle.result()  # cancel == abort: the run completes with status Aborted
    assert result.status == "Aborted" and "cancelled" in result.summary
    assert result.gates[0].decision == "aborted"
    assert deployment(kube.fake, "green") is None and selector(kube.fake)["colour"] == "blue"


async def test_promote_now_through_gate_and_extend_bake(ts_env, task_queue, recording, kube, colours):
    async with worker(ts_env, task_queue, recording, kube) as client:
        handle = await start(client, task_queue, make_input(colours, bake="1h"))
        await approve(handle)
        await wait_for(handle, lambda s: s.details.get("phase") == "bake")
        before = (await handle.query(BlueGreenCutover.status)).details["bake_ends_at"]
        await handle.execute_update(BlueGreenCutover.extend_bake, ExtendBakeInput(requested_by="carol", by="30m"))
        after = (await handle.query(BlueGreenCutover.status)).details["bake_ends_at"]
        assert after > before
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await handle.execute_update(BlueGreenCutover.extend_bake, ExtendBakeInput(requested_by="carol", by="2d"))
        assert "at most 1d" in str(refused.value.cause)
        await handle.execute_update(BlueGreenCutover.promote_now, PromoteNowInput(requested_by="carol", reason="metrics clean"))
        await approve(handle, "promote-now")
        result = await handle.result()
        await harness.save_history(handle, "bluegreen-promote_now_through_gate_and_extend_bake")
    assert result.status == "Succeeded" and result.live_colour == "green"
    bake = step(result, "bake")
    assert bake.finished_at - bake.started_at < timedelta(hours=1)
    assert "promoted early by alice" in bake.detail
    assert [g.gate_id for g in result.gates] == ["cutover-1", "promote-now-2"]
    assert deployment(kube.fake, "blue")["spec"]["replicas"] == 0


async def test_second_cutover_for_same_service_is_refused(ts_env, task_queue, recording, kube, colours):
    async with worker(ts_env, task_queue, recording, kube) as client:
        workflow_id = f"bluegreen:shop-{task_queue}"
        first = await start(client, task_queue, make_input(colours), workflow_id=workflow_id,
                            id_conflict_policy=WorkflowIDConflictPolicy.FAIL)
        await wait_for(first, lambda s: s.gate is not None)
        with pytest.raises(WorkflowAlreadyStartedError):
            await start(client, task_queue, make_input(colours, image="shop:v3"), workflow_id=workflow_id,
                        id_conflict_policy=WorkflowIDConflictPolicy.FAIL)
        await first.execute_update(BlueGreenCutover.abort, AbortInput(requested_by="bob", reason="test over"))
        result = await first.result()
    assert result.status == "Aborted"
