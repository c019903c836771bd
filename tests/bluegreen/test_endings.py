"""How a blue-green run ends (issue 11): refused before any change when a target is blank or unknown; Failed only
when compensation cannot undo (switch back, remove); and a long bake that continues as new without losing its cursor.
Abort and cancel at every step: abort_cases.py."""

from __future__ import annotations

from datetime import timedelta

import pytest
from temporalio.client import WorkflowFailureError, WorkflowUpdateFailedError

from core import errors
from core.analysis import AnalysisTemplate, CloudWatchQuery, MetricSpec
from tests import harness
from tests.bluegreen.conftest import NS, SERVICE, approve, deployment, make_input, selector, start, wait_for, worker
from tests.bluegreen.stand_ins import Measurer, workflow_task_failures
from workflows.blue_green import BlueGreenCutover, ExtendBakeInput

WRITES = ("POST", "PUT", "PATCH", "DELETE")


def kube_writes(fake) -> list:
    return [r for r in fake.requests if r.method in WRITES]


# ------------------------------------------------------------------------------------------------ refused
@pytest.mark.parametrize(
    "kubernetes, why",
    [
        ({"namespace": "   "}, "blank or padded name(s): kubernetes.namespace"),
        ({"namespace": NS, "service_name": ""}, "blank or padded name(s): kubernetes.service_name"),
        ({"namespace": NS, "service_name": "no-such-service"}, "not found"),
        ({"namespace": "no-such-namespace"}, "not found"),
        ({"namespace": NS, "colour_label": "tier"}, "must name the live colour"),
    ],
)
async def test_kubernetes_target_blank_or_unknown_is_refused(ts_env, task_queue, recording, kube, colours, kubernetes, why):
    async with worker(ts_env, task_queue, recording, kube) as client:
        handle = await start(client, task_queue, make_input(colours, kubernetes=kubernetes))
        result = await handle.result()
    assert result.status == "Refused" and why in result.reason and "nothing was changed" in result.reason
    assert not kube_writes(kube.fake) and not result.compensated and not result.not_undone
    assert [(s.name, s.status) for s in result.steps] == [("discover", "failed")]
    assert recording[0].events[-1].severity == "warning"  # not a page


async def test_live_deployment_missing_is_refused(ts_env, task_queue, recording, kube, colours):
    kube.fake.objects.pop(("deployments", NS, f"{SERVICE}-blue"))
    async with worker(ts_env, task_queue, recording, kube) as client:
        result = await (await start(client, task_queue, make_input(colours))).result()
    assert result.status == "Refused" and "shop-blue" in result.reason and "nothing was changed" in result.reason
    assert not kube_writes(kube.fake) and deployment(kube.fake, "green") is None


async def test_blank_image_or_preview_url_is_refused(ts_env, task_queue, recording, kube, colours):
    async with worker(ts_env, task_queue, recording, kube) as client:
        first = await (await start(client, task_queue, make_input(colours, image="  "))).result()
        urls = {"blue": colours["blue"].url, "green": " "}
        second = await (await start(client, task_queue, make_input(colours, preview_urls=urls))).result()
    assert first.status == "Refused" and "image" in first.reason
    assert second.status == "Refused" and "preview_urls.green" in second.reason
    assert not kube.fake.requests  # refused before reading anything


def alb_variant(alb, case: str) -> dict:
    groups = dict(alb.groups)
    base = {"listener_arn": alb.listener, "targets": [{"id": "10.0.1.20", "port": 8080}], "poll_seconds": 5}
    if case == "unknown-group-arn":
        groups["green"] = groups["green"].replace("shop-green", "shop-ghost").rsplit("/", 1)[0] + "/0123456789abcdef"
    elif case == "blank-group":
        groups["green"] = " "
    elif case == "unknown-listener":
        base["listener_arn"] = alb.listener.rsplit("/", 1)[0] + "/0123456789abcdef"
    elif case == "unknown-load-balancer":
        base = {"load_balancer": "no-such-alb", "port": 80}
        groups = {}
    elif case == "unknown-group-name":
        base = {"load_balancer": "shop-alb", "port": 80}
        groups = {"blue": "shop-blue", "green": "shop-purple"}
    return {**base, "target_groups": groups}


@pytest.mark.parametrize(
    "case", ["unknown-group-arn", "blank-group", "unknown-listener", "unknown-load-balancer", "unknown-group-name"]
)
async def test_alb_target_blank_or_unknown_is_refused(ts_env, task_queue, recording, alb, colours, case):
    before = (alb.weights(), alb.targets("blue"))
    async with worker(ts_env, task_queue, recording) as client:
        inp = make_input(colours, router="alb", alb=alb)
        inp = inp.model_copy(update={"alb": inp.alb.model_validate(alb_variant(alb, case))})
        result = await (await start(client, task_queue, inp)).result()
    assert result.status == "Refused" and "nothing was changed" in result.reason, result.reason
    assert (alb.weights(), alb.targets("blue")) == before and alb.targets("green") == []


# ------------------------------------------------------------------------------------------------ not undone
async def test_switch_back_failure_is_not_undone_and_fails_the_run(ts_env, task_queue, recording, kube, colours):
    async with worker(ts_env, task_queue, recording, kube) as client:
        handle = await start(client, task_queue, make_input(colours, bake="1h"))
        await approve(handle)
        await wait_for(handle, lambda s: s.details.get("phase") == "bake")
        kube.fake.fail_next("PATCH", f"services/{SERVICE}", 403, times=5)  # the switch back is refused
        colours["green"].routes["/healthz"] = (503, "overloaded")  # breach at the next tick
        with pytest.raises(WorkflowFailureError) as failed:
            await handle.result()
        assert await workflow_task_failures(handle) == []
    cause = failed.value.cause
    assert cause.type == errors.RUN_FAILED
    result = cause.details[0]
    assert result["status"] == "Failed" and result["switched"] and not result["switched_back"]
    assert "traffic may still be on green" in result["not_undone"][0]
    assert "NOT UNDONE" in result["summary"]
    assert selector(kube.fake)["colour"] == "green"
    assert deployment(kube.fake, "green") is not None  # never remove the colour that may be serving
    assert recording[0].events[-1].severity == "critical"


async def test_remove_failure_is_not_undone(ts_env, task_queue, recording, kube, colours):
    colours["green"].routes["/healthz"] = (500, "db down")
    kube.fake.fail_next("DELETE", f"deployments/{SERVICE}-green", 403, times=5)
    async with worker(ts_env, task_queue, recording, kube) as client:
        handle = await start(client, task_queue, make_input(colours))
        with pytest.raises(WorkflowFailureError) as failed:
            await handle.result()
    result = failed.value.cause.details[0]
    assert result["status"] == "Failed" and "could not be removed" in result["not_undone"][0]
    assert selector(kube.fake)["colour"] == "blue"


# ------------------------------------------------------------------------------------------------ held
async def test_retire_failure_after_a_clean_bake_holds_the_release(ts_env, task_queue, recording, kube, colours):
    """Retiring the old colour fails after a clean bake: a healthy release is not rolled back for it. Held: green
    stays live, blue still runs as found, and the summary says exactly what to do by hand."""
    kube.fake.fail_next("PATCH", f"deployments/{SERVICE}-blue/scale", 403, times=5)
    async with worker(ts_env, task_queue, recording, kube) as client:
        handle = await start(client, task_queue, make_input(colours, bake="2m", scale_down_delay="1s"))
        await approve(handle)
        result = await handle.result()
        assert await workflow_task_failures(handle) == []
    assert result.status == "Held", result.summary
    assert f"kubectl -n {NS} scale deployment {SERVICE}-blue --replicas=0" in result.reason
    assert result.live_colour == "green" and result.switched and not result.switched_back
    assert not result.compensated and not result.not_undone
    assert selector(kube.fake)["colour"] == "green" and deployment(kube.fake, "green") is not None
    assert deployment(kube.fake, "blue")["spec"]["replicas"] == 3  # still running, as found
    assert recording[0].events[-1].severity == "warning"


# ------------------------------------------------------------------------------------------------ bounded history
async def test_long_bake_continues_as_new_and_keeps_its_cursor(ts_env, task_queue, recording, kube, colours):
    measurer = Measurer()
    template = AnalysisTemplate(
        name="bake", metrics=[MetricSpec(name="error-rate", query=CloudWatchQuery(namespace="N", metric_name="M"),
                                         success="<= 1", failure_limit=0)]
    )
    inp = make_input(colours, bake="40m", bake_analysis=template, max_bake_extension="30m")
    inp.meta.history_limit = 100
    async with worker(ts_env, task_queue, recording, kube, {"measure_metrics": measurer.activity}) as client:
        handle = await start(client, task_queue, inp)
        await approve(handle)
        # the bake's first tick continues as new (history_limit): no query may race it (harness.settled)
        await harness.settled(handle, continued=True)
        await wait_for(handle, lambda s: s.details.get("phase") == "bake")
        await handle.execute_update(BlueGreenCutover.extend_bake, ExtendBakeInput(requested_by="carol", by="20m"))
        await harness.skip(ts_env, timedelta(minutes=20))  # several continuations
        status = await wait_for(handle, lambda s: s.continued >= 1, settle=True)
        assert status.details["phase"] == "bake" and status.details["bake_extended_seconds"] == 1200
        with pytest.raises(WorkflowUpdateFailedError) as refused:  # the extension total was carried over
            await handle.execute_update(BlueGreenCutover.extend_bake, ExtendBakeInput(requested_by="carol", by="15m"))
        assert "at most 30m" in str(refused.value.cause)
        result = await handle.result()
        final = await handle.query(BlueGreenCutover.status)
        assert await workflow_task_failures(handle) == []
    assert result.status == "Succeeded" and result.live_colour == "green"
    assert final.continued >= 3
    ticks = 60  # 40 m + 20 m of bake, one tick a minute (the tick due at the end included)
    assert measurer.calls in (ticks, ticks + 1)
    assert result.health_probes == 2 * measurer.calls  # probe counts carried across every continuation
    # the analysis's schedule and verdict were carried (a continuation keeps each metric's last good measurement)
    assert result.bake_verdict.phase == "Successful" and result.bake_verdict.metrics[0].successful >= 1
    assert [s.name for s in result.steps].count("bake") == 1
    assert [s.name for s in result.steps] == ["discover", "bring-up", "preview-health", "preview-smoke", "approval",
                                              "switch", "bake", "scale-down"]
    assert [a.action for a in result.actions].count("extend_bake") == 1
    assert [g.gate_id for g in result.gates] == ["cutover-1"]
    assert deployment(kube.fake, "blue")["spec"]["replicas"] == 0
