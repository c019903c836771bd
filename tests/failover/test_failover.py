"""Regional failover and failback, end to end on the time-skipping server: moto in two regions, two Kubernetes
fakes, local health endpoints, the real activities."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

from temporalio import activity
from temporalio.exceptions import ApplicationError

from core import errors
from core.approval import AbortInput, ApproveInput
from tests import aws_session, harness
from tests.failover.conftest import EAST, WEST, meta, report_lag
from workflows.base import IncidentResolvedInput
from workflows.failover import (
    RegionFailback,
    RegionFailbackInput,
    RegionFailover,
    RegionFailoverInput,
)

WORKFLOWS = [RegionFailover, RegionFailback]


def failover_input(regions, mode: str = "drill", **kw) -> RegionFailoverInput:
    base = dict(
        meta=meta(),
        service="shop",
        mode=mode,
        primary=regions.side(EAST),
        dr=regions.side(WEST),
        dns=regions.dns(),
        verify_interval=timedelta(seconds=30),
        confirm_interval=timedelta(seconds=30),
    )
    return RegionFailoverInput(**{**base, **kw})


async def run(env, task_queue, activities, wf_input, workflow=RegionFailover):
    async with harness.running_worker(env.client, task_queue, WORKFLOWS, activities):
        return await env.client.execute_workflow(
            workflow.run, wf_input, id=f"failover-{uuid.uuid4().hex[:8]}", task_queue=task_queue,
            execution_timeout=timedelta(days=3),
        )


def alerts(recording) -> list:
    channel, _ = recording
    return [e for e in channel.events if e.kind == "alert"]


async def test_drill_fails_over_and_back_and_is_invisible_afterwards(ts_env, task_queue, regions, recording):
    """Named bug: after the drill's failback the record was back, but orders-east kept the read-only parameter group,
    orders-west was promoted and read-only, and orders-east-failback was the writable primary."""
    before = regions.everything()
    report_lag("orders-east-failback", EAST, 2.0)  # the failback replica has caught up
    result = await run(ts_env, task_queue, regions.activities, failover_input(regions))

    assert result.status == "Succeeded" and result.outcome == "drill_done", result.summary
    assert [s.name for s in result.steps] == ["look", "fence", "promote", "scale", "dns", "verify", "failback", "restore"]
    assert any("read-only" in f for f in result.fenced) and any("scaled to 0" in f for f in result.fenced)
    assert result.rto_met and result.rto_seconds is not None
    # automatic failback (child workflow): new replica in the original region, promoted, DNS back, DR to standby
    back = result.failback
    assert back is not None and back.status == "Succeeded" and back.outcome == "failed_back", back
    assert [s.name for s in back.steps] == ["look", "replica", "fence", "promote", "scale", "dns", "verify", "standby"]
    # ... then the drill put everything back as it found it, and proved it
    assert regions.everything() == before
    east = regions.everything()["databases"]
    assert east[f"{EAST}/orders-east"]["parameter_groups"] != ["read-only"]
    assert east[f"{WEST}/orders-west"]["source"].endswith(":db:orders-east")
    assert east[f"{EAST}/orders-east-failback"] is None
    assert result.as_found is not None and result.after is not None and result.differences == []
    assert result.after.model_dump() == result.as_found.model_dump()
    # the original primary, fenced for the whole drill, is the primary again: never a replica, no tag of ours
    assert east[f"{EAST}/orders-east"]["source"] is None and east[f"{EAST}/orders-east"]["runbook_tags"] == {}
    assert any("failback database deleted" in c for c in result.compensated), result.compensated
    assert any("orders-west re-created" in c for c in result.compensated), result.compensated
    assert regions.replicas(EAST) == 4 and regions.replicas(WEST) == 0
    assert not alerts(recording)


async def test_real_failover_confirms_outage_and_measures_rto(ts_env, task_queue, regions, recording):
    regions.east_health.status = 503
    result = await run(ts_env, task_queue, regions.activities, failover_input(regions, mode="real"))

    assert result.outcome == "failed_over" and result.failback is None
    assert [s.name for s in result.steps] == ["look", "confirm", "fence", "promote", "scale", "dns", "verify"]
    assert len(result.evidence) == 3 and all("FAILED" in e for e in result.evidence)
    # virtual clock: 3 probes 30 s apart (60 s), then 2 verifying probes 30 s apart (30 s); activities take ms
    assert 90 <= result.rto_seconds < 120, result.rto_seconds
    assert result.rto_met and result.rto_target_seconds == 900
    assert regions.records()["PRIMARY"] == "web.us-west-2.example.com"
    assert regions.replicas(WEST) == 4 and regions.replicas(EAST) == 0
    channel, _ = recording
    report = [e for e in channel.events if e.kind == "step_done" and "failed over" in e.title]
    assert result.status == "Succeeded" and result.dns_shifted
    assert report and "met" in report[0].fields["RTO"] and report[0].incident_id == "PINC1"
    assert "step promote" in report[0].fields


async def test_rto_target_missed_is_reported(ts_env, task_queue, regions):
    regions.east_health.status = 503
    result = await run(
        ts_env, task_queue, regions.activities,
        failover_input(regions, mode="real", rto_target=timedelta(minutes=1)),
    )
    assert result.outcome == "failed_over" and result.rto_met is False and "MISSED" in result.summary


async def test_flapping_primary_does_not_fail_over(ts_env, task_queue, regions):
    regions.east_health.script = [503, 200] * 50
    result = await run(
        ts_env, task_queue, regions.activities,
        failover_input(regions, mode="real", confirm_window=timedelta(minutes=5)),
    )
    assert result.status == "Succeeded" and result.outcome == "no_failover_needed", result
    assert "not confirmed" in result.summary
    assert regions.records()["PRIMARY"] == "web.us-east-1.example.com"
    assert regions.replicas(EAST) == 4 and regions.replicas(WEST) == 0
    assert regions.west_k8s.calls("PATCH") == []


async def test_recovered_primary_ends_with_no_failover(ts_env, task_queue, regions):
    regions.east_health.script = [503]  # a blip, then healthy
    result = await run(ts_env, task_queue, regions.activities, failover_input(regions, mode="real"))
    assert result.outcome == "no_failover_needed" and "3 probes in a row" in result.summary


async def test_incident_resolved_while_confirming_stops(ts_env, task_queue, regions):
    regions.east_health.status = 503
    async with harness.running_worker(ts_env.client, task_queue, WORKFLOWS, regions.activities):
        handle = await ts_env.client.start_workflow(
            RegionFailover.run, failover_input(regions, mode="real", confirm_probes=5), id=f"fo-{uuid.uuid4().hex[:6]}",
            task_queue=task_queue,
        )
        for _ in range(600):
            if regions.east_health.hits >= 1:
                break
            await asyncio.sleep(0.05)
        await handle.signal(RegionFailover.incident_resolved, IncidentResolvedInput(incident_id="PINC1"))
        result = await handle.result()
        await harness.save_history(handle, "failover-incident_resolved_while_confirming_stops")
    assert result.outcome == "no_failover_needed" and "resolved" in result.summary
    assert regions.replicas(WEST) == 0


async def test_approval_timeout_changes_nothing(ts_env, task_queue, regions, recording):
    before = regions.everything()
    wf_input = failover_input(regions, meta=meta(approvers=["alice"], timeout=timedelta(minutes=30)))
    result = await run(ts_env, task_queue, regions.activities, wf_input)
    assert result.status == "Rejected" and "timed out" in result.summary and "nothing was changed" in result.summary
    assert result.outcome == "not_approved" and result.fenced == [] and not result.dns_shifted
    assert regions.everything() == before
    assert regions.replicas(EAST) == 4 and regions.replicas(WEST) == 0
    assert regions.records()["PRIMARY"] == "web.us-east-1.example.com"
    assert "runbook:promoted" not in {t["Key"] for t in regions.db("orders-west", WEST)["TagList"]}
    channel, _ = recording
    gate = [e for e in channel.events if e.kind == "approval_needed"][0]
    assert "Evidence" in gate.text


@activity.defn(name="rds_promote_replica")
def promote_fails(input) -> None:
    raise ApplicationError("promotion rejected: InvalidDBInstanceState", type=errors.INVALID_INPUT, non_retryable=True)


def replace(activities, *stand_ins):
    names = {s.__temporal_activity_definition.name for s in stand_ins}
    return [a for a in activities if getattr(a, "__temporal_activity_definition").name not in names] + list(stand_ins)


async def test_promotion_failure_changes_no_dns_and_gives_the_fence_back(ts_env, task_queue, regions, recording):
    regions.east_health.status = 503
    before = regions.everything()
    acts = replace(regions.activities, promote_fails)
    result = await run(ts_env, task_queue, acts, failover_input(regions, mode="real"))
    assert result.status == "RolledBack" and result.outcome == "promotion_failed" and not result.dns_shifted
    assert "promotion" in result.reason and "DNS unchanged" in result.reason
    # the DR replica was never promoted: the fence and nothing else is given back, everything as found
    assert any("parameter group back" in c for c in result.compensated) and not result.not_undone
    assert regions.everything() == before
    end = [e for e in recording[0].events if e.kind == "finished"]
    assert end and end[0].severity == "error" and end[0].incident_id == "PINC1"


async def test_drill_promotion_failure_gives_everything_back(ts_env, task_queue, regions):
    before = regions.everything()
    result = await run(ts_env, task_queue, replace(regions.activities, promote_fails), failover_input(regions))
    assert result.status == "RolledBack" and result.outcome == "promotion_failed"
    assert regions.everything() == before and result.differences == []


async def test_verification_failure_holds_and_pages(ts_env, task_queue, regions, recording):
    """Held runs wait for a person: the test does not await the result (so time does not skip past the hold);
    verification probes are therefore 100 ms apart in real time."""
    regions.west_health.status = 503
    async with harness.running_worker(ts_env.client, task_queue, WORKFLOWS, regions.activities):
        handle = await ts_env.client.start_workflow(
            RegionFailover.run, failover_input(regions, verify_attempts=3, verify_interval=timedelta(milliseconds=100)), id=f"fo-{uuid.uuid4().hex[:6]}",
            task_queue=task_queue,
        )
        # the run is held before its page goes out (a notify activity after the status change): wait for both (a
        # run left held by a failure here is terminated when the test ends: tests/conftest.py)
        status, pages = None, []
        for reads in range(600):  # up to ~2 min on a loaded machine
            status = await handle.query(RegionFailover.status)
            pages = [e for e in alerts(recording) if e.severity == "critical"]
            if status.details.get("held") and pages:
                break
            await harness.backoff(reads)
        assert status.status == "Paused" and status.details["held"] and status.details["dns_shifted"]
        assert pages and "HELD" in pages[0].title
        # DNS stays on DR: no automatic flapping back
        assert regions.records()["PRIMARY"] == "web.us-west-2.example.com"
        # a person fixes DR and asks for a re-check: it passes and the run completes (then fails back: drill)
        regions.west_health.status = 200
        report_lag("orders-east-failback", EAST, 1.0)
        await handle.execute_update(RegionFailover.reverify, {"requested_by": "dave", "reason": "fixed the pool"})
        result = await handle.result()
        await harness.save_history(handle, "failover-verification_failure_holds_and_pages")
    assert result.status == "Succeeded" and [s.status for s in result.steps if s.name == "verify"] == ["failed", "done"]
    # the recovery is told once, after the hold's page: it reaches Slack and resolves the page (PagerDutyChannel)
    kinds = recording[0].kinds(handle.id)
    assert kinds.count("recovered") == 1 and kinds.index("recovered") > kinds.index("alert")
    recovered = next(e for e in recording[0].events if e.kind == "recovered")
    assert "us-west-2 passed verification after the hold" in recovered.title and "reverify` by dave" in recovered.text
    assert recovered.severity == "info"


async def test_verification_failure_aborted_ends_held(ts_env, task_queue, regions):
    regions.west_health.status = 503
    async with harness.running_worker(ts_env.client, task_queue, WORKFLOWS, regions.activities):
        handle = await ts_env.client.start_workflow(
            RegionFailover.run, failover_input(regions, verify_attempts=2, verify_interval=timedelta(milliseconds=100)), id=f"fo-{uuid.uuid4().hex[:6]}",
            task_queue=task_queue,
        )
        for reads in range(600):  # up to ~2 min on a loaded machine
            if (await handle.query(RegionFailover.status)).details.get("held"):
                break
            await harness.backoff(reads)
        await handle.execute_update(RegionFailover.abort, AbortInput(requested_by="dave", reason="taking over by hand"))
        result = await handle.result()
    assert result.status == "Held" and result.outcome == "held" and result.dns_shifted and "dave" in result.summary
    assert regions.records()["PRIMARY"] == "web.us-west-2.example.com"
    # never flapped back, no failback started, and the state is named
    assert "failback" not in [s.name for s in result.steps] and result.failback is None
    assert any("traffic on us-west-2" in x for x in result.left_in_place), result.left_in_place
    assert any("orders-west" in d for d in result.differences)


async def test_failback_with_approval(ts_env, task_queue, regions):
    """After a real failover (DR serving), the failback runbook brings the service home once a person approves."""
    regions.east_health.status = 503
    report_lag("orders-east-2", EAST, 5.0)
    await run(ts_env, task_queue, regions.activities, failover_input(regions, mode="real"))
    regions.east_health.status = 200
    wf_input = RegionFailbackInput(
        meta=meta("region-failback", approvers=["alice"]),
        service="shop", original=regions.side(EAST), current=regions.side(WEST), dns=regions.dns(),
        replica="orders-east-2", verify_interval=timedelta(seconds=30),
        catch_up_poll=timedelta(seconds=1),  # the clock runs in real time while the test waits for the gate
    )
    async with harness.running_worker(ts_env.client, task_queue, WORKFLOWS, regions.activities):
        handle = await ts_env.client.start_workflow(
            RegionFailback.run, wf_input, id=f"fb-{uuid.uuid4().hex[:6]}", task_queue=task_queue
        )
        gate = status = None
        for reads in range(600):  # up to ~2 min on a loaded machine
            status = await handle.query(RegionFailback.status)
            gate = status.gate
            if gate is not None:
                break
            await harness.backoff(reads)
        assert gate is not None and "caught up" in gate.summary, status.details["evidence"]
        await handle.execute_update(
            RegionFailback.approve, ApproveInput(gate_id=gate.gate_id, approver="alice", binding=gate.binding)
        )
        result = await handle.result()
        await harness.save_history(handle, "failover-failback_with_approval")
    assert result.status == "Succeeded" and result.outcome == "failed_back" and result.to_region == EAST
    assert regions.records()["PRIMARY"] == "web.us-east-1.example.com"
    assert regions.replicas(EAST) == 4 and regions.replicas(WEST) == 1
    assert {t["Key"]: t["Value"] for t in regions.db("orders-east-2", EAST)["TagList"]}.get("runbook:promoted") == "true"


async def test_drill_on_the_local_stack_seed_leaves_it_as_it_found_it(ts_env, task_queue, regions):
    """The named bug's own resources: orders-db, orders-db-replica, orders-db-failback, the demo's failover records
    with a health check on the PRIMARY, the orders-read-only parameter group; no compute."""

    from starters.demo_aws import seed_demo
    from workflows.failover import DnsSpec

    demo = seed_demo(aws_session.session())
    report_lag("orders-db-failback", EAST, 2.0)

    def everything() -> dict:
        dbs = {}
        for identifier, region in (("orders-db", EAST), ("orders-db-replica", WEST), ("orders-db-failback", EAST)):
            found = aws_session.client("rds", region_name=region).describe_db_instances()["DBInstances"]
            raw = next((d for d in found if d["DBInstanceIdentifier"] == identifier), None)
            if raw is not None:  # raw: the replica link and our tags as moto shows them
                tags = sorted(t["Key"] for t in raw.get("TagList", []) if t["Key"].startswith("runbook:"))
                raw = (raw.get("ReadReplicaSourceDBInstanceIdentifier"), tags,
                       [g["DBParameterGroupName"] for g in raw["DBParameterGroups"]], raw["Endpoint"]["Address"])
            dbs[identifier] = raw
        sets = aws_session.client("route53").list_resource_record_sets(HostedZoneId=demo["hosted_zone_id"])["ResourceRecordSets"]
        return {"dbs": dbs, "records": [s for s in sets if s["Name"] == "orders-db.demo.internal."]}

    before = everything()
    assert any("HealthCheckId" in s for s in before["records"])

    def side(region: str, database: str):
        return regions.side(region, database=database, deployment=None, read_only_parameter_group="orders-read-only",
                            dns_value=f"orders-db.{region}.demo.internal")

    wf_input = failover_input(
        regions, service="orders", primary=side(EAST, "orders-db"), dr=side(WEST, "orders-db-replica"),
        dns=DnsSpec(zone_id=demo["hosted_zone_id"], record_name="orders-db.demo.internal.", ttl=30),
    )
    result = await run(ts_env, task_queue, regions.activities, wf_input)
    assert result.status == "Succeeded" and result.differences == [], (result.summary, result.differences)
    assert everything() == before
