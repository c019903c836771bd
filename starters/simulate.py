"""``runbook simulate slack|pagerduty``: send the gateway a request signed as Slack or PagerDuty would sign it.

For the local stack (``make dev`` prints one example of each) and for checking a deployed gateway's secrets: the
signing secrets come from the same settings the gateway reads (``SLACK_SIGNING_SECRET`` / ``PAGERDUTY_WEBHOOK_SECRETS``
or their Vault paths, ``RUNBOOK_SLACK_VAULT_PATH`` / ``RUNBOOK_PAGERDUTY_VAULT_PATH``), the gateway's address from
``RUNBOOK_GATEWAY_HOST``/``RUNBOOK_GATEWAY_PORT`` (or ``--gateway``).

- ``runbook simulate slack 'status ID' --user U0ALICE01 --channel C0OPS``: a ``/runbook`` slash command, signed
  (``v0=`` HMAC-SHA256 of ``v0:<timestamp>:<body>``); its ``response_url`` is a listener of this command, so the
  answer the gateway sends there is printed.
- ``runbook simulate pagerduty --service PEDGE01 --priority P1``: an ``incident.triggered`` webhook v3 (JSON, signed
  ``v1=`` HMAC-SHA256 of the body); the gateway's JSON answer is printed (what started, attached or was refused).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
import uuid
from typing import Annotated, Any
from urllib.parse import parse_qs, urlencode

import typer

simulate_app = typer.Typer(help="Send the gateway a signed Slack command or PagerDuty webhook, as those services would.")

GatewayOpt = Annotated[str | None, typer.Option("--gateway", help="the gateway's base URL (default from settings)")]


def slack_command(text: str, user: str, channel: str, secret: str, response_url: str,
                  timestamp: int | None = None) -> tuple[bytes, dict[str, str]]:
    """The form body and headers of a signed ``/runbook`` slash command."""
    body = urlencode({"token": "simulated", "team_id": "T0DEMO", "channel_id": channel, "user_id": user,
                      "user_name": user.lower(), "command": "/runbook", "text": text, "response_url": response_url,
                      "trigger_id": f"simulated.{uuid.uuid4().hex[:8]}"}).encode()
    ts = str(int(time.time()) if timestamp is None else timestamp)
    digest = hmac.new(secret.encode(), f"v0:{ts}:".encode() + body, hashlib.sha256).hexdigest()
    return body, {"Content-Type": "application/x-www-form-urlencoded", "X-Slack-Request-Timestamp": ts,
                  "X-Slack-Signature": f"v0={digest}"}


def incident_event(service_id: str, priority: str | None, title: str, incident_id: str | None = None,
                   event_type: str = "incident.triggered") -> dict[str, Any]:
    """A PagerDuty webhook v3 payload for an incident (the fields the gateway and trigger templates read)."""
    incident_id = incident_id or "PSIM" + uuid.uuid4().hex[:8].upper()
    return {"event": {
        "id": uuid.uuid4().hex[:26].upper(), "event_type": event_type, "resource_type": "incident",
        "occurred_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "data": {
            "id": incident_id, "type": "incident", "title": title, "status": "triggered", "urgency": "high",
            "service": {"id": service_id, "type": "service_reference", "summary": service_id},
            "priority": {"id": "PPRISIM", "type": "priority_reference", "summary": priority} if priority else None,
        },
    }}


def pagerduty_webhook(event: dict[str, Any], secrets: list[str]) -> tuple[bytes, dict[str, str]]:
    """The JSON body and headers of a signed webhook (one ``v1=`` entry per secret, as during a rotation)."""
    body = json.dumps(event).encode()
    signature = ",".join("v1=" + hmac.new(s.encode(), body, hashlib.sha256).hexdigest() for s in secrets)
    return body, {"Content-Type": "application/json", "X-PagerDuty-Signature": signature,
                  "User-Agent": "PagerDuty-Webhook/V3.0 (simulated)"}


class ReplyListener:
    """A one-shot HTTP listener on 127.0.0.1 for a slash command's ``response_url``: keeps the first JSON posted."""

    def __init__(self) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer  # only when a command is simulated

        self.reply: dict[str, Any] | None = None
        self._got = threading.Event()
        listener = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    data = json.loads(raw)
                except ValueError:
                    data = {k: v[0] for k, v in parse_qs(raw.decode(errors="replace")).items()}
                if listener.reply is None:
                    listener.reply = data if isinstance(data, dict) else {"text": str(data)}
                    listener._got.set()
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/response"
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()

    def wait(self, timeout: float) -> dict[str, Any] | None:
        self._got.wait(timeout)
        return self.reply

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _settings_and_gateway(gateway: str | None):
    from core.config import Settings
    from starters.secret_settings import SecretSettingsError, with_vault_secrets

    settings = Settings()
    try:
        settings = with_vault_secrets(settings)
    except SecretSettingsError as err:
        typer.echo(f"runbook simulate: {err}", err=True)
        raise typer.Exit(2) from None
    return settings, (gateway or f"http://{settings.gateway_host}:{settings.gateway_port}").rstrip("/")


def _post(url: str, body: bytes, headers: dict[str, str]):
    import httpx

    try:
        return httpx.post(url, content=body, headers=headers, timeout=30)
    except httpx.HTTPError as err:
        typer.echo(f"runbook simulate: cannot reach the gateway at {url} ({type(err).__name__}); is it running?",
                   err=True)
        raise typer.Exit(1) from None


@simulate_app.command("slack")
def slack(
    text: Annotated[str, typer.Argument(help="the slash command's text, e.g. 'list' or 'status ID'")],
    user: Annotated[str, typer.Option(help="the Slack user id (runbooks/groups.yaml maps U0ALICE01 to alice)")] = "U0ALICE01",
    channel: Annotated[str, typer.Option(help="the Slack channel id (the stock catalog allows C0OPS)")] = "C0OPS",
    gateway: GatewayOpt = None,
    timeout: Annotated[float, typer.Option(help="seconds to wait for the answer")] = 30.0,
) -> None:
    """Send `/runbook TEXT` as USER in CHANNEL, signed with the Slack signing secret, and print the answer."""
    settings, base = _settings_and_gateway(gateway)
    if settings.slack_signing_secret is None:
        typer.echo("runbook simulate: no Slack signing secret: set SLACK_SIGNING_SECRET or RUNBOOK_SLACK_VAULT_PATH "
                   "(the local stack: source .state/dev.env)", err=True)
        raise typer.Exit(2)
    listener = ReplyListener()
    try:
        body, headers = slack_command(text, user, channel, settings.slack_signing_secret.get_secret_value(), listener.url)
        response = _post(f"{base}/slack/commands", body, headers)
        if response.status_code != 200:
            typer.echo(f"the gateway answered {response.status_code}: {response.text.strip()}", err=True)
            raise typer.Exit(2)
        reply = listener.wait(timeout)
    finally:
        listener.close()
    if reply is None:
        typer.echo(f"runbook simulate: no answer on the response URL within {timeout:.0f}s", err=True)
        raise typer.Exit(1)
    typer.echo(reply.get("text") or json.dumps(reply))


@simulate_app.command("pagerduty")
def pagerduty(
    service: Annotated[str, typer.Option(help="the PagerDuty service id (the stock catalog maps PEDGE01)")] = "PEDGE01",
    priority: Annotated[str, typer.Option(help="the incident's priority, e.g. P1; '' for none")] = "P1",
    title: Annotated[str, typer.Option(help="the incident's title")] = "edge is down (simulated)",
    incident: Annotated[str | None, typer.Option(help="the incident id (default: a new one)")] = None,
    event_type: Annotated[str, typer.Option("--event-type", help="incident.triggered or incident.resolved")] = "incident.triggered",
    gateway: GatewayOpt = None,
) -> None:
    """Send an incident webhook signed with the PagerDuty webhook secrets, and print the gateway's answer."""
    settings, base = _settings_and_gateway(gateway)
    secrets = [s.get_secret_value() for s in settings.pagerduty_webhook_secrets]
    if not secrets:
        typer.echo("runbook simulate: no PagerDuty webhook secret: set PAGERDUTY_WEBHOOK_SECRETS or "
                   "RUNBOOK_PAGERDUTY_VAULT_PATH (the local stack: source .state/dev.env)", err=True)
        raise typer.Exit(2)
    event = incident_event(service, priority or None, title, incident, event_type)
    body, headers = pagerduty_webhook(event, secrets)
    response = _post(f"{base}/pagerduty/webhook", body, headers)
    typer.echo(f"{response.status_code} {response.text.strip()}")
    if response.status_code >= 300:
        raise typer.Exit(2)
