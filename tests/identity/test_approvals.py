"""Approvals through a real worker and the time-skipping server, with ID tokens minted by a real OpenBao: the worker
verifies each token at the run's clock, the policy judges the verified person and the token's groups, and a bad
token is refused with one line while nothing counts as approved.

Each test has its own time-skipping server: the tokens are real (15 minutes), so a clock another test moved ahead
would make them expire.
"""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from datetime import timedelta
from pathlib import Path
from typing import AsyncIterator

import hvac
import jwt
import pytest
import pytest_asyncio
from cryptography.hazmat.primitives.asymmetric import ec
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError
from temporalio.testing import WorkflowEnvironment

from activities.identity import IdentityActivities, JwksCache
from core.approval import ApprovalPolicy, ApproveInput, RejectInput
from core.catalog import Catalog, CatalogApproval
from core.identity import unverified_claims
from core.runbook import RunbookMeta, RunbookStatus
from starters.demo_identity import DEMO_PASSWORD, KEY, vault_login
from tests import harness
from tests.core.gated_workflows import GatedChange, GatedChangeInput

CATALOG = Catalog.load(Path(__file__).resolve().parents[2] / "runbooks")  # the product's groups.yaml


def policy(*groups: str, required: int = 1, **kw) -> ApprovalPolicy:
    return CatalogApproval(groups=list(groups), required_approvals=required, timeout="4h", **kw).to_policy(
        CATALOG.groups, CATALOG.idp_groups, CATALOG.people)


@pytest_asyncio.fixture(loop_scope="session")
async def env() -> AsyncIterator[WorkflowEnvironment]:
    environment = await harness.start_time_skipping()
    async with environment:
        with environment.auto_time_skipping_disabled():  # time moves only when a test says so (env.sleep)
            yield environment


@pytest.fixture
def worker(env, task_queue, identity, recording):
    """A worker verifying tokens against the OpenBao issuer, as `runbook worker` with RUNBOOK_OIDC_* set."""
    _, notifier = recording
    return harness.running_worker(env.client, task_queue, [GatedChange], [notifier.notify, identity.verify_id_token])


async def start(env: WorkflowEnvironment, task_queue: str, approval: ApprovalPolicy, requested_by: str = "erin",
                **kw) -> tuple[WorkflowHandle, str]:
    meta = RunbookMeta(runbook="gated-change", target="payments", requested_by=requested_by, approval=approval)
    inp = GatedChangeInput(meta=meta, service="payments", hold=timedelta(0), **kw)
    handle = await env.client.start_workflow(GatedChange.run, inp, id=f"id-{uuid.uuid4().hex[:8]}", task_queue=task_queue)
    state = await harness.poll(lambda: handle.query(GatedChange.status), lambda s: s.gate is not None, "a gate opens")
    return handle, state.gate.gate_id


async def refused(handle: WorkflowHandle, req: ApproveInput) -> str:
    with pytest.raises(WorkflowUpdateFailedError) as failure:
        await handle.execute_update(GatedChange.approve, req)
    return failure.value.cause.message


async def state_after_signals(handle: WorkflowHandle, count: int) -> RunbookStatus:
    return await harness.poll(lambda: handle.query(GatedChange.status), lambda s: len(s.refused) >= count,
                              f"{count} refusals")


async def ended(handle: WorkflowHandle) -> RunbookStatus:
    """The run's final status (its closed gates and their approvals), read by query once it has ended."""
    for _ in range(400):
        state = await handle.query(GatedChange.status)
        if state.status in ("Succeeded", "Rejected", "Aborted", "RolledBack", "Failed"):
            return state
        await asyncio.sleep(0.05)
    raise AssertionError(f"the run did not end ({state.status}: {state.stage}; refused: {state.refused})")


def b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def gateway_token(openbao) -> str:
    from starters.demo_identity import id_token

    addr, _ = openbao
    return id_token(addr, vault_login(addr, "runbook-gateway", DEMO_PASSWORD))


async def test_a_valid_token_approves_and_group_membership_comes_from_the_token(env, task_queue, worker, token_of):
    # security-team names carol in groups.yaml; here nobody is named: only the token's groups claim can admit
    only_idp = policy("security-team").model_copy(update={"groups": {"security-team": []}})
    async with worker:
        handle, gate = await start(env, task_queue, only_idp)
        assert "dave is not an approver" in await refused(handle, ApproveInput(gate_id=gate, token=token_of("dave")))
        assert "carol is not an approver" in await refused(handle, ApproveInput(gate_id=gate, approver="carol"))
        token = token_of("carol")
        view = await handle.execute_update(GatedChange.approve, ApproveInput(gate_id=gate, token=token, reason="ok"))
        assert view.decision == "approved"
        metadata = await handle.query("__temporal_workflow_metadata")  # what the web UI shows as Current Details
        details = metadata.current_details if hasattr(metadata, "current_details") else str(metadata)
        assert "approved by carol (token of carol; sub " in details and "groups security-team" in details
        assert "via cli" in details and token not in details
        result = await handle.result()
        state = await handle.query(GatedChange.status)
    assert result.status == "Succeeded"
    approval = result.gates[0].approvals[0]
    claims = unverified_claims(token)
    assert approval.verified and approval.approver == "carol" and approval.name == "carol"
    assert approval.groups == ["security-team"] and approval.subject == claims["sub"]
    assert approval.issuer == claims["iss"] and approval.token_id.startswith("sha256:") and approval.via == "cli"
    for document in (result.model_dump_json(), state.model_dump_json()):
        assert token not in document and token.split(".")[2] not in document  # no raw token kept anywhere


async def test_each_bad_token_is_refused_with_its_reason_and_nothing_counts(
        env, task_queue, worker, token_of, openbao, oidc, recording):
    addr, root = openbao
    # another application's token from the same provider: signed by the same key, issued for another audience
    admin = hvac.Client(url=addr, token=root)
    admin.write("identity/oidc/role/other-app", key=KEY, ttl="15m", template='{"preferred_username": "carol"}')
    admin.sys.create_or_update_policy(name="other-app", policy='path "identity/oidc/token/other-app" { capabilities = ["read"] }')
    admin.write("auth/userpass/users/mallet", password=DEMO_PASSWORD, policies="other-app")
    other_audience = hvac.Client(url=addr, token=vault_login(addr, "mallet", DEMO_PASSWORD)).read(
        "identity/oidc/token/other-app")["data"]["token"]

    carol = token_of("carol")
    header, payload, signature = carol.split(".")
    claims = unverified_claims(carol)
    kid = json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))["kid"]
    foreign = ec.generate_private_key(ec.SECP256R1())
    bad = {
        "wrong audience": other_audience,
        "bad signature": f"{header}.{b64({**claims, 'groups': ['security-team', 'platform-team']})}.{signature}",
        "algorithm 'none'": f"{b64({'alg': 'none', 'typ': 'JWT'})}.{payload}.",
        "unknown signing key": jwt.encode(claims, foreign, algorithm="ES256", headers={"kid": "not-a-known-key"}),
        "bad signature ": jwt.encode(claims, foreign, algorithm="ES256", headers={"kid": kid}),  # foreign key, real kid
    }
    async with worker:
        handle, gate = await start(env, task_queue, policy("security-team"))
        for reason, token in bad.items():  # by Update: refused at once, in one line
            message = await refused(handle, ApproveInput(gate_id=gate, token=token))
            assert reason.strip() in message and "\n" not in message
        for token in bad.values():  # by Signal (the web UI): refused and recorded
            await handle.signal(GatedChange.approve_signal, ApproveInput(gate_id=gate, token=token))
        state = await state_after_signals(handle, 2 * len(bad))
        assert state.gate is not None and state.gate.approvals == []
        assert all(r.reason.startswith("token refused:") for r in state.refused)
        assert {r.via for r in state.refused} == {"cli", "ui"}

        # replayed: a token counts once per run
        await handle.execute_update(GatedChange.approve, ApproveInput(gate_id=gate, token=carol, binding=None))
        await ended(handle)
        again, gate2 = await start(env, task_queue, policy("security-team", required=2).model_copy(
            update={"groups": {"security-team": ["carol", "bob"]}}))
        fresh = token_of("carol")
        await again.execute_update(GatedChange.approve, ApproveInput(gate_id=gate2, token=fresh))
        assert "replayed" in await refused(again, ApproveInput(gate_id=gate2, token=fresh))
        await again.signal(GatedChange.approve_signal, ApproveInput(gate_id=gate2, token=fresh))
        replay = await state_after_signals(again, 1)
        assert "replayed" in replay.refused[-1].reason and len(replay.gate.approvals) == 1

        # expired at the RUN's clock: the token was fine when minted, the run's time moved on past its expiry
        late = token_of("bob")
        await harness.skip(env, timedelta(minutes=20))
        expired = await refused(again, ApproveInput(gate_id=gate2, token=late))
        assert "token refused: expired" in expired
        await again.signal(GatedChange.approve_signal, ApproveInput(gate_id=gate2, token=late))
        state = await state_after_signals(again, 2)
        assert "expired at" in state.refused[-1].reason and "run clock" in state.refused[-1].reason
        assert len(state.gate.approvals) == 1  # only carol's
        await again.terminate("test over")  # every real token is expired at this run's clock now


async def test_a_wrong_issuer_is_refused(env, task_queue, oidc, token_of, recording):
    _, notifier = recording
    elsewhere = oidc.model_copy(update={"issuer": "https://idp.example.com", "jwks_url": JwksCache(oidc)._jwks_url()})
    other = IdentityActivities(elsewhere, JwksCache(elsewhere))
    async with harness.running_worker(env.client, task_queue, [GatedChange], [notifier.notify, other.verify_id_token]):
        handle, gate = await start(env, task_queue, policy("security-team"))
        assert "wrong issuer" in await refused(handle, ApproveInput(gate_id=gate, token=token_of("carol")))
        state = await handle.query(GatedChange.status)
        assert state.gate.approvals == [] and "wrong issuer" in state.refused[-1].reason
        await env.client.get_workflow_handle(handle.id).terminate("test over")


async def test_one_person_through_cli_and_slack_is_one_approver(env, task_queue, worker, token_of, openbao):
    two = policy("platform-team", required=2)
    async with worker:
        # bob by his own login, then the gateway vouching for bob's Slack alias: still one approver
        handle, gate = await start(env, task_queue, two)
        view = await handle.execute_update(GatedChange.approve, ApproveInput(gate_id=gate, token=token_of("bob")))
        assert len(view.approvals) == 1 and view.approvals[0].approver == "bob"
        via_slack = ApproveInput(gate_id=gate, token=gateway_token(openbao), on_behalf_of="slack:U0PLATFORM1")
        assert "bob has already approved this gate" in await refused(handle, via_slack)
        # alice's Slack alias is a second person: approved, recorded as the gateway vouching for her
        view = await handle.execute_update(GatedChange.approve, ApproveInput(
            gate_id=gate, token=gateway_token(openbao), on_behalf_of="slack:U0ALICE01", reason="from Slack"))
        assert view.decision == "approved"
        slack = view.approvals[1]
        assert (slack.approver, slack.name, slack.on_behalf_of, slack.via) == ("alice", "runbook-gateway", "slack:U0ALICE01", "slack")
        assert (await ended(handle)).status == "Succeeded"

        # alice started this run from Slack: she cannot approve it with her own login
        handle, gate = await start(env, task_queue, two, requested_by="slack:U0ALICE01")
        assert "alice requested this run" in await refused(handle, ApproveInput(gate_id=gate, token=token_of("alice")))
        # ... and started from the CLI, not through her Slack alias either
        mine, mine_gate = await start(env, task_queue, two, requested_by="alice")
        assert "alice requested this run" in await refused(mine, ApproveInput(
            gate_id=mine_gate, token=gateway_token(openbao), on_behalf_of="slack:U0ALICE01"))

        # only a listed service may vouch, and a service approves only for someone
        assert "dave may not vouch" in await refused(mine, ApproveInput(
            gate_id=mine_gate, token=token_of("dave"), on_behalf_of="slack:U0PLATFORM1"))
        assert "service identity" in await refused(mine, ApproveInput(gate_id=mine_gate, token=gateway_token(openbao)))
        for run, g in ((handle, gate), (mine, mine_gate)):
            await run.execute_update(GatedChange.reject, RejectInput(gate_id=g, reason="test over", token=token_of("bob")))
            assert (await ended(run)).status == "Rejected"


async def test_ui_approval_needs_a_token_unless_the_policy_lets_it_in(env, task_queue, worker, token_of):
    async with worker:
        handle, gate = await start(env, task_queue, policy("sre"))
        typed = await refused(handle, ApproveInput(gate_id=gate, approver="dave"))  # dave is named in groups.yaml
        assert "no ID token" in typed  # but a typed name proves nothing to a worker with OIDC
        await handle.signal(GatedChange.approve_signal, ApproveInput(gate_id=gate, approver="dave"))
        state = await state_after_signals(handle, 2)
        assert "needs an ID token" in state.refused[1].reason and "--print-signal" in state.refused[1].reason
        await handle.signal(GatedChange.approve_signal, ApproveInput(gate_id=gate, token=token_of("dave"), reason="ui"))
        assert (await ended(handle)).gates[0].approvals[0].via == "ui"

        lenient = policy("sre", allow_unauthenticated_ui_approval=True)
        handle, gate = await start(env, task_queue, lenient)
        await handle.signal(GatedChange.approve_signal, ApproveInput(gate_id=gate, approver="dave"))
        approval = (await ended(handle)).gates[0].approvals[0]
        assert approval.approver == "dave" and not approval.verified and approval.via == "ui"
