"""The Slack and PagerDuty gateway: one ASGI app (FastAPI, with slack-bolt's AsyncApp mounted) that starts and
steers runbooks from chat and from incidents.

Routes
- ``POST /slack/commands``: the ``/runbook`` slash command (``start``, ``status``, ``list``, ``approve``,
  ``reject``, ``abort``, the steering verbs ``pause``, ``resume``, ``promote``, ``extend``, ``destroy-now``,
  ``reverify``, and ``help``). Bolt verifies the signature and timestamp, acks at once, the answer follows through
  ``response_url``; a steered run's Slack message is rewritten at once with its steering.
- ``POST /slack/interactions``: the Approve / Reject buttons of approval messages and the reject-reason dialog.
- ``POST /pagerduty/webhook``: PagerDuty webhooks v3 (``incident.triggered`` starts the mapped runbook,
  ``incident.resolved`` tells the running one).
- ``GET /healthz``.

Every request body is read (at most ``gateway_max_body_bytes``, also for chunked bodies) before anything parses
it; forged, stale, oversized or malformed requests start nothing. Secrets and tokens never appear in logs or
replies.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import json
import logging
import os
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, Awaitable, Callable
from urllib.parse import urlsplit

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse
from slack_bolt.adapter.fastapi.async_handler import AsyncSlackRequestHandler
from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from temporalio.client import Client
from temporalio.common import WorkflowIDReusePolicy
from temporalio.service import RPCError, RPCStatusCode

from activities.slack import SlackChannel, run_message
from core.approval import AbortInput, ApproveInput, GateView, RejectInput
from core.buttons import APPROVE_ACTION, REJECT_ACTION, REJECT_VIEW, parse_button_value
from core.catalog import Catalog, PagerDutyTrigger, ParameterError, RunbookSpec, render_trigger_parameters
from core.config import Settings
from core.events import MAX_NOTIFIED_ACTIONS, RunbookEvent
from core.runbook import RunbookInput, RunbookStatus
from starters.client import DryRunFailed, Refused, RunbookClient, RunbookClientError, RunNotFound, Steer
from workflows.contract import IncidentResolvedInput

log = logging.getLogger(__name__)

HELP = """*Usage:* `/runbook <command>`
• `start NAME key=value ... [--dry-run]`: start a runbook (you become its requester); with --dry-run, show what it would change
• `status ID`: where a run is
• `list`: runbooks you may start here, and runs in progress
• `approve ID [--expect WHAT] [reason]`: approve the run's open gate (WHAT: what its message says it approves)
• `reject ID reason`: reject the run's open gate
• `abort ID reason`: stop a run (it cleans up after itself)
• `pause ID reason` / `resume ID reason`: hold a canary ramp where it is, and let it go on
• `promote ID reason`: a canary to full weight, or a blue-green bake ended early (both through the approval gate)
• `extend ID DURATION reason`: more time for a canary step, a blue-green bake or a sandbox (e.g. `extend ID 30m why`)
• `destroy-now ID reason` / `reverify ID reason`: a sandbox destroyed now; a held failover checked again
• `help`: this text"""


# ---------------------------------------------------------------------------- body limit (before any parsing)
class BodyLimitMiddleware:
    """Reads the whole request body, refusing it with 413 as soon as it passes ``max_bytes``.

    Checks the declared Content-Length first, then counts the bytes actually received, so a chunked body (no
    Content-Length) cannot slip past. The buffered body is replayed to the app, which reads it as usual.
    """

    def __init__(self, app: Callable, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            try:
                if int(declared) > self.max_bytes:
                    await _plain(send, 413, "request body too large")
                    return
            except ValueError:
                await _plain(send, 400, "invalid Content-Length")
                return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await _plain(send, 413, "request body too large")
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def _plain(send: Callable, status: int, text: str) -> None:
    data = text.encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})


# ---------------------------------------------------------------------------- PagerDuty webhooks v3
def verify_pagerduty_signature(body: bytes, header: str | None, secrets: list[str]) -> bool:
    """True when one of the header's ``v1=`` entries is the HMAC-SHA256 of the raw body under one of the secrets."""
    if not header or not secrets:
        return False
    offered = [part.strip()[3:] for part in header.split(",") if part.strip().startswith("v1=")]
    expected = [hmac.new(s.encode(), body, hashlib.sha256).hexdigest() for s in secrets]
    ok = False
    for candidate in offered:
        for digest in expected:  # compare against every pair: no early exit that leaks which matched
            ok |= hmac.compare_digest(candidate, digest)
    return ok


class SeenEvents:
    """Bounded LRU of webhook event ids already handled by this process (PagerDuty redelivers)."""

    def __init__(self, size: int = 10_000) -> None:
        self._size = size
        self._ids: OrderedDict[str, None] = OrderedDict()

    def __contains__(self, event_id: str) -> bool:
        if event_id in self._ids:
            self._ids.move_to_end(event_id)
            return True
        return False

    def add(self, event_id: str) -> None:
        self._ids[event_id] = None
        self._ids.move_to_end(event_id)
        while len(self._ids) > self._size:
            self._ids.popitem(last=False)


def incident_workflow_id(runbook: str, incident_id: str) -> str:
    return f"{runbook}:incident:{incident_id}"


class PagerDutyWebhooks:
    def __init__(self, gateway: "Gateway") -> None:
        self.g = gateway
        self.seen = SeenEvents()

    def matches(self, event_type: str, incident: dict) -> list[tuple[RunbookSpec, PagerDutyTrigger]]:
        service = (incident.get("service") or {}).get("id")
        priority = (incident.get("priority") or {}).get("summary")
        found = []
        for spec in self.g.catalog.runbooks.values():
            for trigger in spec.triggers.pagerduty:
                if service not in trigger.service_ids or event_type not in trigger.event_types:
                    continue
                if trigger.priorities and priority not in trigger.priorities:
                    continue
                found.append((spec, trigger))
                break
        return found

    async def handle(self, body: bytes, signature: str | None, content_type: str | None = None) -> JSONResponse:
        if not verify_pagerduty_signature(body, signature, self.g.pagerduty_secrets):
            log.warning("pagerduty webhook refused: bad or missing signature")
            return JSONResponse({"error": "invalid signature"}, status_code=401)
        media_type = (content_type or "").split(";", 1)[0].strip().lower()
        if media_type != "application/json":  # PagerDuty sends JSON; anything else is not one of its webhooks
            return JSONResponse({"error": f"unsupported media type {media_type or '(none)'}: send application/json"},
                                status_code=415)
        try:
            payload = json.loads(body)
            event = payload["event"]
            event_id, event_type = str(event["id"]), str(event["event_type"])
            data = event.get("data") or {}
            if not isinstance(data, dict):
                raise TypeError("event.data is not an object")
        except (ValueError, KeyError, TypeError) as err:
            return JSONResponse({"error": f"malformed webhook: {type(err).__name__}"}, status_code=400)
        if event_id in self.seen:
            return JSONResponse({"status": "duplicate", "event_id": event_id}, status_code=200)
        if event.get("resource_type", "incident") != "incident" or not data.get("id"):
            self.seen.add(event_id)
            return JSONResponse({"status": "ignored", "event_type": event_type}, status_code=200)
        try:
            if event_type == "incident.resolved":
                result = await self._resolved(data)
            else:
                result = await self._triggered(event, event_type, data)
        except RPCError as err:  # Temporal unreachable: let PagerDuty redeliver later
            log.error("pagerduty event %s not handled: Temporal error %s", event_id, err.status)
            return JSONResponse({"error": "temporarily unavailable"}, status_code=503)
        self.seen.add(event_id)
        if result.get("refused") and not result.get("started") and not result.get("attached"):
            # every matching runbook refused the incident (a template or parameter problem): say why, with a 4xx
            return JSONResponse({"status": "refused", "event_id": event_id, **result}, status_code=422)
        return JSONResponse({"status": "ok", "event_id": event_id, **result}, status_code=202)

    async def _triggered(self, event: dict, event_type: str, incident: dict) -> dict:
        incident_id = str(incident["id"])
        started: list[str] = []
        attached: list[str] = []
        refused: list[dict[str, str]] = []
        for spec, trigger in self.matches(event_type, incident):
            try:
                plan = self.g.plan(spec, trigger, event, incident_id)
            except ParameterError as err:
                log.warning("pagerduty incident %s: runbook %s not started: %s", incident_id, spec.name, err)
                refused.append({"runbook": spec.name, "reason": str(err)})
                continue
            workflow_id, is_new = await self.g.start_for_incident(plan)
            (started if is_new else attached).append(workflow_id)
            log.info("pagerduty incident %s: %s %s", incident_id, "started" if is_new else "attached to", workflow_id)
        return {"started": started, "attached": attached, "refused": refused}

    async def _resolved(self, incident: dict) -> dict:
        incident_id = str(incident["id"])
        signalled = []
        for spec in self.g.catalog.runbooks.values():
            service = (incident.get("service") or {}).get("id")
            if not any(service in t.service_ids for t in spec.triggers.pagerduty):
                continue
            workflow_id = incident_workflow_id(spec.name, incident_id)
            try:
                await self.g.runs.incident_resolved(workflow_id, IncidentResolvedInput(incident_id=incident_id))
                signalled.append(workflow_id)
            except RunNotFound:
                pass
        return {"signalled": signalled}


# ---------------------------------------------------------------------------- the gateway
SERVICE_NAME = "runbook-gateway"  # the gateway's name when it has no token (a worker without OIDC)


class GatewayIdentityError(Exception):
    """The gateway could not obtain its own service identity's token."""


class Gateway:
    """What the routes share: settings, the Temporal client, the catalog and each workflow type's input model."""

    def __init__(self, settings: Settings, client: Client, catalog: Catalog,
                 inputs: Mapping[str, type[RunbookInput]]) -> None:
        self.settings = settings
        self.client = client
        self.catalog = catalog
        self.inputs = inputs
        self.runs = RunbookClient(client, settings.task_queue)  # every start, query and update goes through it
        self.slack_client: AsyncWebClient | None = None  # set when Slack is configured (create_app)
        self.pagerduty_secrets = [s.get_secret_value() for s in settings.pagerduty_webhook_secrets]

    # ------------------------------------------------------------------ starting
    def plan(self, spec: RunbookSpec, trigger: PagerDutyTrigger, event: dict, incident_id: str):
        params = render_trigger_parameters(trigger.parameters, event)
        plan = self.catalog.plan_start(
            spec.name,
            params,
            requested_by="pagerduty",
            inputs=self.inputs,
            source="pagerduty",
            incident_id=incident_id,
            slack_channel=self.settings.slack_default_channel,
            ui_base=self.settings.ui_url,
            namespace=self.client.namespace,
            workflow_id=incident_workflow_id(spec.name, incident_id),
        )
        if trigger.auto_approve:  # the catalog's policy for this environment, with no gate
            policy = plan.meta.approval.model_copy(update={"required_approvals": 0, "required_groups": []})
            plan.meta = plan.meta.model_copy(update={"approval": policy})
            plan.input = plan.input.model_copy(update={"meta": plan.meta})
        return plan

    async def start_for_incident(self, plan) -> tuple[str, bool]:
        """Start the incident's run, once: a running or finished run for this incident is attached to instead.

        The id comes from the incident; FAIL + REJECT_DUPLICATE make the server the judge, so redeliveries, a new
        event for the same incident and two gateway replicas racing all end with exactly one run per incident.
        """
        return await self.start(plan, WorkflowIDReusePolicy.REJECT_DUPLICATE)

    async def start(self, plan, reuse: WorkflowIDReusePolicy = WorkflowIDReusePolicy.ALLOW_DUPLICATE) -> tuple[str, bool]:
        """Start the planned run (one RPC); (workflow id, False) when a run with that id is already there."""
        outcome = await self.runs.start(plan, reuse=reuse)
        return outcome.workflow_id, outcome.started

    # ------------------------------------------------------------------ Slack permissions
    @staticmethod
    def slack_refusal(spec: RunbookSpec, user: str, channel: str) -> str | None:
        trigger = spec.triggers.slack
        if trigger is None:
            return f"{spec.name} cannot be started from Slack"
        if channel not in trigger.channels:
            return f"{spec.name} cannot be started from this channel (<#{channel}>)"
        if trigger.users and user not in trigger.users:
            return f"<@{user}> may not start {spec.name}"
        return None

    # ------------------------------------------------------------------ steering
    async def status(self, workflow_id: str) -> RunbookStatus:
        return await self.runs.status(workflow_id)

    async def service_token(self) -> str | None:
        """A fresh ID token of the gateway's own service identity (settings), or None when none is configured (a
        worker without OIDC then takes the gateway's typed name, unverified)."""
        from starters.login import LoginError, gateway_token

        s = self.settings
        password = s.gateway_vault_password.get_secret_value() if s.gateway_vault_password else None
        try:
            return await asyncio.to_thread(gateway_token, s.gateway_identity_token_command, os.environ.get("VAULT_ADDR"),
                                           s.gateway_vault_username, password, s.oidc_vault_role)
        except (LoginError, Exception) as err:  # noqa: BLE001 - one line for the person; no token in it
            log.error("the gateway's service identity has no token: %s", type(err).__name__)
            raise GatewayIdentityError(f"the gateway cannot obtain its service identity's token ({type(err).__name__})") from None

    async def decide(
        self, workflow_id: str, action: str, user: str, *, reason: str = "", gate_id: str | None = None,
        binding: str | None = None,
    ) -> tuple[bool, str, GateView | None]:
        """Approve or reject a gate with the workflow's Update, as the gateway's service identity vouching for the
        Slack user (``on_behalf_of=slack:<user>``; Bolt has checked Slack's signature). The binding is what the
        person was shown (the button's value, or typed with --expect); it is never filled in from the run."""
        alias = f"slack:{user}"
        try:
            if gate_id is None:
                status = await self.status(workflow_id)
                if not status.open_gates:
                    return False, f"`{workflow_id}` has no approval pending (it is {status.status})", None
                if len(status.open_gates) > 1:
                    listed = ", ".join(f"`{g.gate_id}` ({g.title})" for g in status.open_gates)
                    return False, f"`{workflow_id}` has {len(status.open_gates)} open gates ({listed}): use the buttons " \
                                  "on the gate's message", None
                gate_id = status.open_gates[0].gate_id
                shown = status.open_gates[0].binding
                if action == "approve" and shown is not None and binding != shown:
                    return False, (f"this gate approves `{shown}`: say so, `/runbook approve {workflow_id} --expect "
                                   f"{shown} [reason]`, or use the buttons on the gate's message"), None
            token = await self.service_token()
            name = self.settings.gateway_vault_username or SERVICE_NAME
            if action == "approve":
                gate = await self.runs.approve(workflow_id, ApproveInput(
                    gate_id=gate_id, approver=name, reason=reason, binding=binding, token=token, on_behalf_of=alias))
            else:
                gate = await self.runs.reject(workflow_id, RejectInput(
                    gate_id=gate_id, approver=name, reason=reason, token=token, on_behalf_of=alias))
        except GatewayIdentityError as err:
            return False, str(err), None
        except Refused as err:
            return False, str(err), None
        except RunNotFound:
            return False, f"no run `{workflow_id}` (or it has finished)", None
        except RPCError as err:
            return False, _rpc_text(workflow_id, err), None
        if gate.decision == "pending":
            return True, f"<@{user}> approved ({len(gate.approvals)}/{gate.required_approvals})", gate
        verdict = "approved" if gate.decision == "approved" else gate.decision
        why = f": {gate.reason}" if gate.reason else ""
        return True, f"{verdict} by <@{user}>{why}", gate

    async def abort(self, workflow_id: str, user: str, reason: str) -> str:
        try:
            return await self.runs.abort(workflow_id, AbortInput(requested_by=user, reason=reason))
        except Refused as err:
            return str(err)

    def may_steer(self, status: RunbookStatus, user: str, channel: str) -> bool:
        """Abort and steering from Slack: for those who may start the runbook from this channel, and for the open
        gate's approvers."""
        spec = self.catalog.runbooks.get(status.runbook)
        person = self.catalog.people.person(f"slack:{user}")
        return spec is not None and (
            self.slack_refusal(spec, user, channel) is None or person in (status.gate.eligible if status.gate else [])
        )

    async def refresh_run_message(self, workflow_id: str) -> None:
        """Rewrite the run's Slack message at once with its steering (the worker rewrites it again at its next
        event, with the same steering lines). Nothing when the run has no message yet; a Slack error is logged."""
        if self.slack_client is None:
            return
        status = await self.status(workflow_id)
        refs = status.notify_refs
        channel, ts = refs.get("slack_channel"), refs.get("slack_ts")
        if not channel or not ts:
            return
        ui = self.settings.ui_url.rstrip("/")
        event = RunbookEvent(kind="step_done", workflow_id=workflow_id, run_id="", runbook=status.runbook,
                             target=status.target, title=status.stage, refs=refs,
                             actions=status.actions[-MAX_NOTIFIED_ACTIONS:],
                             ui_url=f"{ui}/namespaces/{self.client.namespace}/workflows/{workflow_id}" if ui else None)
        text, blocks = run_message(event, SlackChannel._log(event))
        try:
            await self.slack_client.chat_update(channel=channel, ts=ts, text=text, blocks=blocks)
        except SlackApiError as err:
            log.warning("the run message of %s was not updated: %s", workflow_id, err.response.get("error"))


def _rpc_text(workflow_id: str, err: RPCError) -> str:
    if err.status == RPCStatusCode.NOT_FOUND:
        return f"no run `{workflow_id}` (or it has finished)"
    return f"could not reach the run `{workflow_id}` ({err.status.name if err.status else 'error'})"


# ---------------------------------------------------------------------------- Slack: the slash command
class SlackCommands:
    def __init__(self, gateway: Gateway) -> None:
        self.g = gateway

    async def run(self, text: str, user: str, channel: str) -> str:
        words = text.split()
        if not words or words[0] == "help":
            return HELP
        command, args = words[0].lower(), words[1:]
        handler = getattr(self, f"_cmd_{command.replace('-', '_')}", None)
        if handler is None:
            return f"unknown command `{command}`\n{HELP}"
        try:
            return await handler(args, user, channel)
        except RunNotFound as err:
            return f"no run `{err.workflow_id}` (or it has finished)"
        except RPCError as err:
            return _rpc_text(args[0] if args else "?", err)

    async def _cmd_start(self, args: list[str], user: str, channel: str) -> str:
        dry = "--dry-run" in args
        args = [a for a in args if a != "--dry-run"]
        if not args:
            return "usage: `start NAME key=value ... [--dry-run]`"
        name, params = args[0], {}
        for item in args[1:]:
            key, sep, value = item.partition("=")
            if not sep or not key:
                return f"`{item}` is not `key=value`"
            params[key] = value
        try:
            spec = self.g.catalog.get(name)
        except ParameterError as err:
            return str(err)
        refusal = self.g.slack_refusal(spec, user, channel)
        if refusal:
            log.info("slack start of %s refused for %s in %s", name, user, channel)
            return f":no_entry: {refusal}"
        try:
            plan = self.g.catalog.plan_start(
                name, params, requested_by=f"slack:{user}", inputs=self.g.inputs, source="slack", slack_channel=channel,
                ui_base=self.g.settings.ui_url, namespace=self.g.client.namespace,
            )
        except ParameterError as err:
            return f":warning: {err}"
        if dry:
            return await self._dry_run(plan)
        workflow_id, started = await self.g.start(plan)
        if not started:
            return f":information_source: `{workflow_id}` is already running; nothing new was started"
        link = f" (<{plan.meta.ui_url}|web UI>)" if plan.meta.ui_url else ""
        return f":rocket: started `{workflow_id}`{link}"

    async def _dry_run(self, plan) -> str:
        """``start ... --dry-run``: the worker's read-only plan as text; nothing changed, nothing started."""
        try:
            outcome = await self.g.runs.dry_run(plan)
        except DryRunFailed as err:
            return f":warning: {err}"
        if outcome.status == "AlreadyRunning":
            return f":information_source: `{outcome.workflow_id}` is already running; a start would start nothing"
        p = outcome.plan
        lines = [f":mag: *dry run* of {p.runbook} as `{p.workflow_id}` (nothing changed): *{p.outcome}*: {p.summary}"]
        if p.reads:
            lines += ["*As found*", *(f"• {r.system} {r.what}: {r.value}" for r in p.reads)]
        if p.changes:
            lines += ["*Would change, in order*",
                      *(f"{i}. [{c.step}] {c.system} {c.target}: {c.before} → {c.after}" for i, c in enumerate(p.changes, 1))]
        for title, items in (("Rollback", p.rollback), ("Approval", p.approval), ("Freeze", [p.freeze.text()])):
            if items:
                lines += [f"*{title}*", *(f"• {x}" for x in items)]
        return "\n".join(lines)

    async def _cmd_status(self, args: list[str], user: str, channel: str) -> str:
        if len(args) != 1:
            return "usage: `status ID`"
        s = await self.g.status(args[0])
        lines = [f"*{s.runbook}* on `{s.target}`: *{s.status}*, {s.stage} (requested by {s.requested_by})"]
        if s.gate is not None:
            lines.append(f"waiting for approval of *{s.gate.title}* (gate `{s.gate.gate_id}`), "
                         f"{len(s.gate.approvals)}/{s.gate.required_approvals} approvals")
        lines += [f"• {step.status}: {step.name} {step.detail}".rstrip() for step in s.steps[-10:]]
        return "\n".join(lines)

    async def _cmd_list(self, args: list[str], user: str, channel: str) -> str:
        mine = [spec for spec in self.g.catalog.runbooks.values() if self.g.slack_refusal(spec, user, channel) is None]
        lines = ["*Runbooks you may start here:*"]
        lines += [f"• `{s.name}`: {s.description}" for s in sorted(mine, key=lambda s: s.name)] or ["• none"]
        running = []
        try:
            query = ("RunbookStatus = 'Running' OR RunbookStatus = 'WaitingForApproval' "
                     "OR RunbookStatus = 'WaitingForWindow'")
            async for wf in self.g.client.list_workflows(query, limit=20):
                running.append(f"• `{wf.id}` ({wf.workflow_type})")
        except RPCError:
            running = ["• (the run list is not available)"]
        lines += ["*In progress:*", *(running or ["• none"])]
        return "\n".join(lines)

    async def _cmd_approve(self, args: list[str], user: str, channel: str) -> str:
        if not args:
            return "usage: `approve ID [--expect WHAT] [reason]`"
        rest, binding = args[1:], None
        if rest and rest[0] in ("--expect", "expect"):
            if len(rest) < 2:
                return "usage: `approve ID --expect WHAT [reason]` (WHAT: what the gate's message says it approves)"
            binding, rest = rest[1], rest[2:]
        elif rest and rest[0].startswith("--expect="):
            binding, rest = rest[0].split("=", 1)[1], rest[1:]
        ok, text, _ = await self.g.decide(args[0], "approve", user, reason=" ".join(rest), binding=binding)
        return (":white_check_mark: " if ok else ":no_entry: ") + f"`{args[0]}`: {text}"

    async def _cmd_reject(self, args: list[str], user: str, channel: str) -> str:
        if len(args) < 2:
            return "usage: `reject ID reason` (a reason is required)"
        ok, text, _ = await self.g.decide(args[0], "reject", user, reason=" ".join(args[1:]))
        return (":no_entry_sign: " if ok else ":no_entry: ") + f"`{args[0]}`: {text}"

    async def _cmd_abort(self, args: list[str], user: str, channel: str) -> str:
        if len(args) < 2:
            return "usage: `abort ID reason` (a reason is required)"
        workflow_id = args[0]
        if not self.g.may_steer(await self.g.status(workflow_id), user, channel):
            return f":no_entry: <@{user}> may not abort `{workflow_id}` from here"
        return f":octagonal_sign: `{workflow_id}`: {await self.g.abort(workflow_id, user, ' '.join(args[1:]))}"

    async def _steer(self, verb: str, args: list[str], user: str, channel: str) -> str:
        """``VERB ID [DURATION] reason``: the run's own steering update, through the RunbookClient; the run's Slack
        message shows it at once."""
        timed = verb == "extend"
        if len(args) < (3 if timed else 2):
            return f"usage: `{verb} ID {'DURATION ' if timed else ''}reason` (a reason is required)"
        workflow_id, duration = args[0], (args[1] if timed else None)
        reason = " ".join(args[2:] if timed else args[1:])
        if not self.g.may_steer(await self.g.status(workflow_id), user, channel):
            return f":no_entry: <@{user}> may not {verb} `{workflow_id}` from here"
        try:
            steered = await self.g.runs.steer(workflow_id, verb, Steer(by=f"slack:{user}", reason=reason,
                                                                       duration=duration))
        except RunbookClientError as err:
            return f":no_entry: `{workflow_id}`: {err}"
        await self.g.refresh_run_message(workflow_id)
        return f":white_check_mark: `{workflow_id}`: {steered.message}"

    async def _cmd_pause(self, args: list[str], user: str, channel: str) -> str:
        return await self._steer("pause", args, user, channel)

    async def _cmd_resume(self, args: list[str], user: str, channel: str) -> str:
        return await self._steer("resume", args, user, channel)

    async def _cmd_promote(self, args: list[str], user: str, channel: str) -> str:
        return await self._steer("promote", args, user, channel)

    async def _cmd_extend(self, args: list[str], user: str, channel: str) -> str:
        return await self._steer("extend", args, user, channel)

    async def _cmd_destroy_now(self, args: list[str], user: str, channel: str) -> str:
        return await self._steer("destroy-now", args, user, channel)

    async def _cmd_reverify(self, args: list[str], user: str, channel: str) -> str:
        return await self._steer("reverify", args, user, channel)


# ---------------------------------------------------------------------------- Slack: Bolt app
def _gate_blocks(message: dict, note: str, keep_buttons: bool) -> list[dict]:
    blocks = [b for b in message.get("blocks") or [] if keep_buttons or b.get("type") != "actions"]
    blocks = [b for b in blocks if b.get("block_id") != "verdict"]
    blocks.append({"type": "context", "block_id": "verdict", "elements": [{"type": "mrkdwn", "text": note}]})
    return blocks


def build_bolt(gateway: Gateway, slack_client: AsyncWebClient) -> AsyncApp:
    settings = gateway.settings
    assert settings.slack_signing_secret is not None
    bolt = AsyncApp(signing_secret=settings.slack_signing_secret.get_secret_value(), client=slack_client,
                    logger=logging.getLogger("starters.gateway.bolt"))
    commands = SlackCommands(gateway)

    @bolt.command("/runbook")
    async def on_command(ack: Callable[..., Awaitable], command: dict, respond: Callable[..., Awaitable]) -> None:
        await ack()
        text = await commands.run(command.get("text", ""), command["user_id"], command["channel_id"])
        await respond(text=text, response_type="ephemeral")

    async def _after_decision(client: AsyncWebClient, body: dict, ok: bool, text: str, gate: GateView | None) -> None:
        message = body.get("message") or {}
        channel = (body.get("channel") or {}).get("id")
        if not channel or not message.get("ts"):
            return
        closed = gate is not None and gate.decision != "pending"
        note = (":white_check_mark: " if ok else ":warning: ") + text
        await client.chat_update(channel=channel, ts=message["ts"], text=message.get("text") or text,
                                 blocks=_gate_blocks(message, note, keep_buttons=not closed))

    @bolt.action(APPROVE_ACTION)
    async def on_approve(ack: Callable[..., Awaitable], body: dict, action: dict, client: AsyncWebClient) -> None:
        await ack()
        try:
            value = parse_button_value(action["value"])
        except (ValueError, KeyError):
            return
        ok, text, gate = await gateway.decide(value["w"], "approve", body["user"]["id"], gate_id=value["g"],
                                              binding=value.get("b"), reason="approved in Slack")
        await _after_decision(client, body, ok, text, gate)

    @bolt.action(REJECT_ACTION)
    async def on_reject(ack: Callable[..., Awaitable], body: dict, action: dict, client: AsyncWebClient) -> None:
        await ack()
        try:
            value = parse_button_value(action["value"])
        except (ValueError, KeyError):
            return
        meta = {**value, "c": (body.get("channel") or {}).get("id"), "ts": (body.get("message") or {}).get("ts")}
        await client.views_open(trigger_id=body["trigger_id"], view={
            "type": "modal",
            "callback_id": REJECT_VIEW,
            "private_metadata": json.dumps(meta),
            "title": {"type": "plain_text", "text": "Reject"},
            "submit": {"type": "plain_text", "text": "Reject"},
            "close": {"type": "plain_text", "text": "Cancel"},
            "blocks": [{"type": "input", "block_id": "reason", "label": {"type": "plain_text", "text": "Why?"},
                        "element": {"type": "plain_text_input", "action_id": "reason", "multiline": True}}],
        })

    @bolt.view(REJECT_VIEW)
    async def on_reject_reason(ack: Callable[..., Awaitable], body: dict, view: dict, client: AsyncWebClient) -> None:
        meta = json.loads(view.get("private_metadata") or "{}")
        reason = (((view.get("state") or {}).get("values") or {}).get("reason") or {}).get("reason", {}).get("value") or ""
        if not reason.strip():
            await ack(response_action="errors", errors={"reason": "a reason is required"})
            return
        ok, text, gate = await gateway.decide(meta["w"], "reject", body["user"]["id"], gate_id=meta["g"], reason=reason)
        if not ok:  # shown in the dialog, next to the reason
            await ack(response_action="errors", errors={"reason": text[:150]})
            return
        await ack()
        if meta.get("c") and meta.get("ts"):
            note = f":no_entry_sign: {text}"
            await client.chat_update(channel=meta["c"], ts=meta["ts"], text=note,
                                     blocks=[{"type": "section", "text": {"type": "mrkdwn", "text": note}}])

    return bolt


# ---------------------------------------------------------------------------- the ASGI app
def is_loopback_url(url: str) -> bool:
    """Whether a URL's host is this machine only (localhost, 127.0.0.0/8, ::1): a link to it opens nowhere else."""
    host = (urlsplit(url).hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def create_app(
    settings: Settings,
    client: Client,
    catalog: Catalog,
    inputs: Mapping[str, type[RunbookInput]],
    *,
    slack_client: AsyncWebClient | None = None,
) -> Any:
    """The gateway ASGI app (FastAPI wrapped in the body-size limit)."""
    gateway = Gateway(settings, client, catalog, inputs)
    pagerduty = PagerDutyWebhooks(gateway)
    api = FastAPI(title="runbook gateway", docs_url=None, redoc_url=None, openapi_url=None)
    api.state.gateway = gateway
    api.state.pagerduty = pagerduty

    handler: AsyncSlackRequestHandler | None = None
    if settings.slack_signing_secret is not None:
        if slack_client is None:
            token = settings.slack_bot_token.get_secret_value() if settings.slack_bot_token else None
            slack_client = AsyncWebClient(token=token, base_url=settings.slack_api_url)
        gateway.slack_client = slack_client
        handler = AsyncSlackRequestHandler(build_bolt(gateway, slack_client))
    else:
        log.warning("Slack is off: SLACK_SIGNING_SECRET is not set (/slack/* answer 503)")
    if not gateway.pagerduty_secrets:
        log.warning("PagerDuty webhooks are off: PAGERDUTY_WEBHOOK_SECRETS is not set (deliveries are refused)")
    if (handler is not None or gateway.pagerduty_secrets) and is_loopback_url(settings.ui_url):
        log.warning("links to the web UI point at %s, a loopback address: they open only on this host, not for the "
                    "people in Slack or PagerDuty. Set RUNBOOK_UI_URL to the UI's address as they reach it",
                    settings.ui_url)

    @api.get("/healthz")
    async def healthz() -> dict:
        return {"ok": True, "runbooks": len(catalog.runbooks)}

    async def slack(request: Request):
        if handler is None:
            return PlainTextResponse("Slack is not configured (SLACK_SIGNING_SECRET)", status_code=503)
        if not request.headers.get("x-slack-signature") or not request.headers.get("x-slack-request-timestamp"):
            return PlainTextResponse("invalid request", status_code=401)
        return await handler.handle(request)

    api.add_api_route("/slack/commands", slack, methods=["POST"])
    api.add_api_route("/slack/interactions", slack, methods=["POST"])

    @api.get("/reports/{workflow_id:path}")
    async def run_report(workflow_id: str, sig: str = "") -> Any:
        """A run's report (`runbook report`), for the link in its last Slack message: signed by the worker."""
        from core.report_links import signed

        secret = settings.report_link_secret
        if secret is None:
            return PlainTextResponse("reports are not served here (RUNBOOK_REPORT_LINK_SECRET)", status_code=404)
        if not signed(secret.get_secret_value(), workflow_id, sig):
            return PlainTextResponse("invalid report link", status_code=403)
        from starters.report import collect, render  # plotly: loaded on the first report only

        try:
            return HTMLResponse(render(await collect(client, workflow_id)))
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                return PlainTextResponse(f"no run {workflow_id}", status_code=404)
            raise

    @api.post("/pagerduty/webhook")
    async def pagerduty_webhook(request: Request) -> JSONResponse:
        return await pagerduty.handle(await request.body(), request.headers.get("x-pagerduty-signature"),
                                      request.headers.get("content-type"))

    return BodyLimitMiddleware(api, settings.gateway_max_body_bytes)


def serve(settings: Settings) -> None:
    """``runbook gateway``: connect to Temporal, load the catalog, serve the app with uvicorn."""
    import uvicorn

    from starters.secret_settings import SecretSettingsError, with_vault_secrets
    from workers.connection import connect
    from workflows.registry import inputs

    try:
        settings = with_vault_secrets(settings)  # Slack / PagerDuty secrets from Vault when their paths are set
    except SecretSettingsError as err:
        raise SystemExit(f"runbook gateway: {err}") from None

    async def main() -> None:
        client = await connect(settings)
        models = inputs(settings.workflow_modules)
        catalog = Catalog.load(settings.catalog_dir, inputs=models)
        app = create_app(settings, client, catalog, models)
        config = uvicorn.Config(app, host=settings.gateway_host, port=settings.gateway_port, log_level="info",
                                access_log=False)
        await uvicorn.Server(config).serve()

    asyncio.run(main())
