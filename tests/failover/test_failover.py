"""Regional failover and failback, end to end on the time-skipping server: moto in two regions, two Kubernetes
fakes, local health endpoints, the real activities."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import pytest
from temporalio import activity
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import ApplicationError

from core import errors
from core.approval import AbortInput, ApproveInput
from tests import harness
from tests.failover.conftest import EAST, WEST, meta, report_lag
from workflows.base import IncidentResolvedInput
from workflows.failover import RegionFailback, RegionFailbackInput, RegionFailover, RegionFailoverInput, RegionMoveResult

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


async def run_failing(env, task_queue, activities, wf_input) -> tuple[ApplicationError, RegionMoveResult]:
    with pytest.raises(WorkflowFailureError) as info:
        await run(env, task_queue, activities, wf_input)
    cause = info.value.cause
    assert isinstance(cause, ApplicationError), cause
    return cause, RegionMoveResult.model_validate(cause.details[0])


def alerts(recording) -> list:
    channel, _ = recording
    return [e for e in channel.events if e.kind == "alert"]


async def test_drill_fails_over_and_back(ts_env, task_queue, regions, recording):
    report_lag("orders-east-failback", EAST, 2.0)  # the failback replica has caught up
    result = await run(ts_env, task_queue, regions.activities, failover_input(regions))

    assert result.status == "Succeeded" and result.outcome == "failed_over", result.summary
    assert [s.name for s in result.steps] == ["fence", "promote", "scale", "dns", "verify"]
    assert any("read-only" in f for f in result.fenced) and any("scaled to 0" in f for f in result.fenced)
    assert result.rto_met and result.rto_seconds is not None
    # the DR database was promoted
    assert {t["Key"]: t["Value"] for t in regions.db("orders-west", WEST)["TagList"]}.get("runbook:promoted") == "true"
    # automatic failback (child workflow): new replica in the original region, promoted, DNS back, DR to standby
    back = result.failback
    assert back is not None and back.status == "Succeeded" and back.outcome == "failed_back", back
    assert [s.name for s in back.steps] == ["replica", "fence", "promote", "scale", "dns", "verify", "standby"]
    replica = regions.db("orders-east-failback", EAST)
    assert replica["ReadReplicaSourceDBInstanceIdentifier"].endswith("orders-west")
    assert regions.records() == {"PRIMARY": "web.us-east-1.example.com", "SECONDARY": "web.us-west-2.example.com"}
    assert regions.replicas(EAST) == 4 and regions.replicas(WEST) == 1
    assert not alerts(recording)


async def test_real_failover_confirms_outage_and_measures_rto(ts_env, task_queue, regions, recording):
    regions.east_health.status = 503
    result = await run(ts_env, task_queue, regions.activities, failover_input(regions, mode="real"))

    assert result.outcome == "failed_over" and result.failback is None
    assert [s.name for s in result.steps] == ["confirm", "fence", "promote", "scale", "dns", "verify"]
    assert len(result.evidence) == 3 and all("FAILED" in e for e in result.evidence)
    # virtual clock: 3 probes 30 s apart (60 s), then 2 verifying probes 30 s apart (30 s); activities take ms
    assert 90 <= result.rto_seconds < 120, result.rto_seconds
    assert result.rto_met and result.rto_target_seconds == 900
    assert regions.records()["PRIMARY"] == "web.us-west-2.example.com"
    assert regions.replicas(WEST) == 4 and regions.replicas(EAST) == 0
    channel, _ = recording
    report = [e for e in channel.events if e.kind == "step_done" and "failed over" in e.title]
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
    wf_input = failover_input(regions, meta=meta(approvers=["alice"], timeout=timedelta(minutes=30)))
    err, result = await run_failing(ts_env, task_queue, regions.activities, wf_input)
    assert err.type == errors.APPROVAL_TIMED_OUT
    assert result.outcome == "not_approved" and result.fenced == [] and not result.dns_shifted
    assert regions.replicas(EAST) == 4 and regions.replicas(WEST) == 0
    assert regions.records()["PRIMARY"] == "web.us-east-1.example.com"
    assert "runbook:promoted" not in {t["Key"] for t in regions.db("orders-west", WEST)["TagList"]}
    channel, _ = recording
    gate = [e for e in channel.events if e.kind == "approval_needed"][0]
    assert "Evidence" in gate.text


@activity.defn(name="rds_promote_replica")
def promote_fails(input) -> None:
    raise ApplicationError("promotion rejected: InvalidDBInstanceState", type=errors.INVALID_INPUT, non_retryable=True)


async def test_promotion_failure_changes_no_dns_and_pages(ts_env, task_queue, regions, recording):
    regions.east_health.status = 503
    acts = [a for a in regions.activities if getattr(a, "__name__", "") != "rds_promote_replica"] + [promote_fails]
    err, result = await run_failing(ts_env, task_queue, acts, failover_input(regions, mode="real"))
    assert err.type == errors.VERIFICATION_FAILED
    assert result.outcome == "promotion_failed" and not result.dns_shifted
    assert regions.records()["PRIMARY"] == "web.us-east-1.example.com"
    assert regions.replicas(WEST) == 0  # never scaled up
    assert regions.replicas(EAST) == 0  # real mode: the fence stays for a person to judge
    pages = [e for e in alerts(recording) if e.severity == "critical"]
    assert pages and "promotion" in pages[0].text and pages[0].incident_id == "PINC1"


async def test_drill_promotion_failure_gives_the_primary_its_compute_back(ts_env, task_queue, regions):
    acts = [a for a in regions.activities if getattr(a, "__name__", "") != "rds_promote_replica"] + [promote_fails]
    _, result = await run_failing(ts_env, task_queue, acts, failover_input(regions))
    assert result.outcome == "promotion_failed" and regions.replicas(EAST) == 4


async def test_verification_failure_holds_and_pages(ts_env, task_queue, regions, recording):
    """Held runs wait for a person: the test does not await the result (so time does not skip past the hold);
    verification probes are therefore 100 ms apart in real time."""
    regions.west_health.status = 503
    async with harness.running_worker(ts_env.client, task_queue, WORKFLOWS, regions.activities):
        handle = await ts_env.client.start_workflow(
            RegionFailover.run, failover_input(regions, verify_attempts=3, verify_interval=timedelta(milliseconds=100)), id=f"fo-{uuid.uuid4().hex[:6]}",
            task_queue=task_queue,
        )
        status = None
        for _ in range(600):  # up to ~30 s on a loaded machine
            status = await handle.query(RegionFailover.status)
            if status.status == "Held":
                break
            await asyncio.sleep(0.05)
        assert status.status == "Held" and status.details["held"] and status.details["dns_shifted"]
        pages = [e for e in alerts(recording) if e.severity == "critical"]
        assert pages and "HELD" in pages[0].title
        # DNS stays on DR: no automatic flapping back
        assert regions.records()["PRIMARY"] == "web.us-west-2.example.com"
        # a person fixes DR and asks for a re-check: it passes and the run completes (then fails back: drill)
        regions.west_health.status = 200
        report_lag("orders-east-failback", EAST, 1.0)
        await handle.execute_update(RegionFailover.reverify, {"requested_by": "dave", "reason": "fixed the pool"})
        result = await handle.result()
        await harness.save_history(handle, "failover-verification_failure_holds_and_pages")
    assert result.outcome == "failed_over" and [s.status for s in result.steps if s.name == "verify"] == ["failed", "done"]


async def test_verification_failure_aborted_ends_held(ts_env, task_queue, regions):
    regions.west_health.status = 503
    async with harness.running_worker(ts_env.client, task_queue, WORKFLOWS, regions.activities):
        handle = await ts_env.client.start_workflow(
            RegionFailover.run, failover_input(regions, verify_attempts=2, verify_interval=timedelta(milliseconds=100)), id=f"fo-{uuid.uuid4().hex[:6]}",
            task_queue=task_queue,
        )
        for _ in range(600):  # up to ~30 s on a loaded machine
            if (await handle.query(RegionFailover.status)).status == "Held":
                break
            await asyncio.sleep(0.05)
        await handle.execute_update(RegionFailover.abort, AbortInput(requested_by="dave", reason="taking over by hand"))
        with pytest.raises(WorkflowFailureError) as info:
            await handle.result()
    result = RegionMoveResult.model_validate(info.value.cause.details[0])
    assert result.status == "Held" and result.outcome == "held" and result.dns_shifted and "dave" in result.summary
    assert regions.records()["PRIMARY"] == "web.us-west-2.example.com"


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
        for _ in range(600):  # up to ~30 s on a loaded machine
            status = await handle.query(RegionFailback.status)
            gate = status.gate
            if gate is not None:
                break
            await asyncio.sleep(0.05)
        assert gate is not None and "caught up" in gate.summary, status.details["evidence"]
        await handle.execute_update(
            RegionFailback.approve, ApproveInput(gate_id=gate.gate_id, approver="alice", binding=gate.binding)
        )
        result = await handle.result()
        await harness.save_history(handle, "failover-failback_with_approval")
    assert result.outcome == "failed_back" and result.to_region == EAST
    assert regions.records()["PRIMARY"] == "web.us-east-1.example.com"
    assert regions.replicas(EAST) == 4 and regions.replicas(WEST) == 1
    assert {t["Key"]: t["Value"] for t in regions.db("orders-east-2", EAST)["TagList"]}.get("runbook:promoted") == "true"
