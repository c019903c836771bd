"""A production stage of blue-green waves, as the catalog's default: the product's BlueGreenCutover children on the
Kubernetes fake (one namespace per wave, the real Kubernetes client) with the colours as real HTTP servers, the real
PostgreSQL ledger, and the catalog's production approval (two people, one of each group) given once to the release."""

from __future__ import annotations

import copy
import uuid
from typing import Any

import pytest

from activities.release_ledger import ReleaseLedgerActivities
from core.release import LedgerEntry, LedgerQuery
from tests import harness
from tests.bluegreen.conftest import NS, SERVICE, activities, seed_kubernetes
from tests.bluegreen.servers import ColourServer
from tests.fakes.kubernetes import kube_fake
from tests.release.stand_ins import Fleet
from tests.release.test_release import CATALOG, Run
from workflows.blue_green import BlueGreenCutover
from workflows.registry import inputs
from workflows.release import Release

pytestmark = pytest.mark.asyncio(loop_scope="session")
WAVES = ("shop-eu", "shop-us")


def seed_waves(fake: Any) -> None:
    """The blue-green seed (Service on blue, Deployment shop-blue with shop:v1) once per wave's namespace."""
    seed_kubernetes(fake)
    for ns in WAVES:
        fake.put_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        for plural in ("services", "deployments"):
            for name in (SERVICE, f"{SERVICE}-blue"):
                obj = fake.get(plural, NS, name)
                if obj is not None:
                    clone = copy.deepcopy(obj)
                    clone["metadata"] = {k: v for k, v in clone["metadata"].items()
                                         if k in ("name", "labels", "annotations")} | {"namespace": ns}
                    clone.pop("status", None)
                    fake.put_object(clone)


async def release(ts_env: Any, postgres: str, task_queue: str, recording: Any, kube: Any, colours: dict[str, str],
                  tag: str, us: dict[str, Any] | None = None) -> tuple[Any, Any]:
    """Release shop:v2-<tag> (shop:v1-<tag> seeded good: each test's own versions in the shared ledger) through the
    two waves; ``us``: that wave's own parameters. Returns the result and the handle."""
    service = SERVICE
    ledger = ReleaseLedgerActivities(postgres)
    ledger.ledger_record(LedgerEntry(service=service, environment="production", version=f"shop:v1-{tag}", verdict="good",
                                     workflow_id=f"seed-{uuid.uuid4().hex[:6]}"))
    stage = {
        "name": "production", "strategy": "blue-green", "bake": "10m",
        "parameters": {"check_attempts": 2, "check_interval": "0s", "bake": "3m", "bake_interval": "1m",
                       "bake_probes": 2, "bake_analysis": None, "scale_down_delay": "30s", "preview_urls": colours,
                       "kubernetes": {"service_name": SERVICE}},
        "waves": [{"name": wave, "router": {"kind": "kubernetes", "namespace": wave, "service_name": SERVICE},
                   "parameters": (us or {}) if wave == "shop-us" else {}} for wave in WAVES],
    }
    plan = CATALOG.plan_start("release", {"service": service, "version": f"shop:v2-{tag}", "stages": [stage]},
                              requested_by="dave", inputs=inputs())
    acts = [*activities(recording, kube), ledger.ledger_read, ledger.ledger_record]
    async with harness.running_worker(ts_env.client, task_queue, [Release, BlueGreenCutover], acts):
        with ts_env.auto_time_skipping_disabled():
            handle = await ts_env.client.start_workflow(Release.run, plan.input, id=plan.workflow_id,
                                                        task_queue=task_queue)
        run = Run(ts_env, handle, Fleet(), ledger)
        gate = await run.gate("promote-production")
        assert [kube.fake.get("services", ns, SERVICE)["spec"]["selector"]["colour"] for ns in WAVES] == \
            ["blue", "blue"]  # nothing switched before the approval
        await run.approve(gate, "bob", "carol")
        return await run.result(), handle


def colour_of(kube: Any, ns: str) -> tuple[str, str]:
    """The live colour of a wave's Service and the image that colour runs."""
    live = kube.fake.get("services", ns, SERVICE)["spec"]["selector"]["colour"]
    deployment = kube.fake.get("deployments", ns, f"{SERVICE}-{live}")
    return live, deployment["spec"]["template"]["spec"]["containers"][0]["image"]


async def test_production_waves_of_blue_green_cutovers_approved_once(ts_env, postgres: str, task_queue: str,
                                                                     recording) -> None:
    tag = uuid.uuid4().hex[:6]
    with kube_fake() as kube, ColourServer("blue", "shop:v1") as blue, ColourServer("green", "shop:v2") as green:
        seed_waves(kube.fake)
        result, handle = await release(ts_env, postgres, task_queue, recording, kube,
                                       {"blue": blue.url, "green": green.url}, tag)
        assert result.status == "Succeeded", result.summary
        for ns in WAVES:  # each wave's Service on green, which runs the new image; blue retired
            assert colour_of(kube, ns) == ("green", f"shop:v2-{tag}"), ns
            assert kube.fake.get("deployments", ns, f"{SERVICE}-blue")["spec"]["replicas"] == 0
        # the children asked nobody again: their cutover gate was the release's
        for wave in result.stages[0].waves:
            child = await ts_env.client.get_workflow_handle(wave.child_workflow_id).result()
            assert child["status"] == "Succeeded" and child["gates"] == []
            approval = next(s for s in child["steps"] if s["name"] == "approval")
            assert approval["detail"].startswith(f"approved outside this run: release {handle.id}, gate "
                                                 "promote-production (bob, carol)")
        ledger = ReleaseLedgerActivities(postgres)
        assert ledger.ledger_read(LedgerQuery(service=SERVICE)).last_good["production"] == f"shop:v2-{tag}"


async def test_a_failing_blue_green_wave_stops_the_line_and_cuts_the_promoted_wave_back(
        ts_env, postgres: str, task_queue: str, recording) -> None:
    tag = uuid.uuid4().hex[:6]
    with kube_fake() as kube, ColourServer("blue", "shop:v1") as blue, ColourServer("green", "shop:v2") as green:
        seed_waves(kube.fake)
        result, _ = await release(ts_env, postgres, task_queue, recording, kube, {"blue": blue.url, "green": green.url},
                                  tag, us={"health_checks": [{"name": "health", "path": "/us-health"}]})
        assert result.status == "RolledBack", result.summary
        eu, us = result.stages[0].waves
        assert us.child_status == "RolledBack" and colour_of(kube, "shop-us") == ("blue", "shop:v1")  # never switched
        assert kube.fake.get("deployments", "shop-us", f"{SERVICE}-green") is None  # its child removed it
        # eu was promoted to shop:v2 on green, then cut back to the last known good, shop:v1, on blue
        assert eu.phase == "restored" and colour_of(kube, "shop-eu") == ("blue", f"shop:v1-{tag}")
        restore = await ts_env.client.get_workflow_handle(eu.restore_workflow_id).result()
        assert restore["status"] == "Succeeded" and restore["image"] == f"shop:v1-{tag}"
        view = ReleaseLedgerActivities(postgres).ledger_read(LedgerQuery(service=SERVICE))
        assert f"shop:v2-{tag}" in view.bad and view.last_good["production"] == f"shop:v1-{tag}"


async def test_the_dry_run_plans_every_wave_through_its_childs_planner_and_changes_nothing(
        ts_env, aws, postgres: str) -> None:
    from tests.dryrun.test_dry_run import dry_runner, read_only_activities

    tag = uuid.uuid4().hex[:6]
    ledger = ReleaseLedgerActivities(postgres)
    ledger.ledger_record(LedgerEntry(service=SERVICE, environment="production", version=f"shop:v1-{tag}",
                                     verdict="good", workflow_id=f"seed-{tag}"))
    ledger.ledger_record(LedgerEntry(service=SERVICE, environment="production", version=f"shop:v9-{tag}",
                                     verdict="bad", workflow_id=f"seed-{tag}", reason="rolled back"))
    stage = {"name": "production", "strategy": "blue-green", "bake": "10m", "error_budget": True,
             "parameters": {"preview_urls": {"blue": "http://127.0.0.1:1/blue", "green": "http://127.0.0.1:1/green"}},
             "waves": [{"name": wave, "router": {"kind": "kubernetes", "namespace": wave}} for wave in WAVES],
             "checks": [{"kind": "job", "name": "e2e", "image": "e2e:{version}", "args": ["--suite", "{stage}"],
                         "namespace": "shop-eu"}]}
    with kube_fake() as kube:
        seed_waves(kube.fake)
        before = kube.fake.state()
        acts = [*read_only_activities(lambda context: kube.api), ledger.ledger_read]
        async with dry_runner(ts_env, acts) as dry:
            plan = CATALOG.plan_start("release", {"service": SERVICE, "version": f"shop:v2-{tag}", "stages": [stage]},
                                      requested_by="dave", inputs=inputs())
            outcome = await dry("Release", plan.input, plan.workflow_id)
            bad = CATALOG.plan_start("release", {"service": SERVICE, "version": f"shop:v9-{tag}", "stages": [stage]},
                                     requested_by="dave", inputs=inputs())
            refused = await dry("Release", bad.input, bad.workflow_id)
            nowhere = {**stage, "checks": [{**stage["checks"][0], "namespace": "nowhere"}]}
            no_ns = CATALOG.plan_start("release", {"service": SERVICE, "version": f"shop:v2-{tag}", "stages": [nowhere]},
                                       requested_by="dave", inputs=inputs())
            no_namespace = await dry("Release", no_ns.input, no_ns.workflow_id)
        assert kube.fake.state() == before
    dry_plan = outcome.plan
    assert dry_plan.outcome == "WouldChange", dry_plan.summary
    steps = {c.step.split(":", 1)[0] for c in dry_plan.changes}
    assert steps == {"production/shop-eu", "production/shop-us", "production"}  # the waves, then the stage's check
    assert any(c.target.startswith("Service shop-us/shop") or "shop-us" in c.target for c in dry_plan.changes)
    assert any(r.what == "last known good" and f"production shop:v1-{tag}" in r.value for r in dry_plan.reads)
    assert "production/shop-us: bake 10m" in dry_plan.procedure
    assert any(line.startswith("gate promote-production: 2 approval(s)") for line in dry_plan.approval)
    assert refused.plan.outcome == "WouldRefuse" and f"shop:v9-{tag} is marked bad" in (refused.plan.refusal or "")
    # the job check: the Job it would create (after the waves), its namespace read
    job = next(c for c in dry_plan.changes if c.step == "production: checks")
    assert job.target == "Job shop-eu/e2e-<run digest>" and job.before == "absent"
    assert job.after.startswith(f"image e2e:shop:v2-{tag}, --suite production;")
    assert dry_plan.changes[-1] == job
    assert any(r.what == "production: namespace shop-eu" and r.value == "exists" for r in dry_plan.reads)
    assert "production: checks e2e (job e2e:shop:v2-" in " ".join(dry_plan.procedure)
    assert no_namespace.plan.outcome == "WouldRefuse"
    assert "namespace nowhere does not exist" in (no_namespace.plan.refusal or "")
