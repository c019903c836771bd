"""The gateway starts with Slack and PagerDuty unconfigured (compose and Kubernetes pass an unset secret as an empty
variable), says so, and answers its health check; the integrations' routes refuse."""

from __future__ import annotations

import logging

import httpx

from core.catalog import Catalog
from core.config import Settings
from starters.gateway import create_app


async def test_gateway_starts_with_empty_slack_and_pagerduty_secrets(tmp_path, monkeypatch, caplog):
    for name in ("SLACK_SIGNING_SECRET", "SLACK_BOT_TOKEN", "PAGERDUTY_API_TOKEN", "PAGERDUTY_ROUTING_KEY"):
        monkeypatch.setenv(name, "")
    settings = Settings(_env_file=None)
    assert settings.slack_signing_secret is None and settings.pagerduty_api_token is None
    catalog = Catalog.load(tmp_path, inputs={})
    with caplog.at_level(logging.WARNING, logger="starters.gateway"):
        app = create_app(settings, None, catalog, {})  # type: ignore[arg-type]  # no Temporal call is made
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "Slack is off: SLACK_SIGNING_SECRET is not set" in messages
    assert "PagerDuty webhooks are off" in messages
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as http:
        assert (await http.get("/healthz")).status_code == 200
        slack = await http.post("/slack/commands", content=b"x")
        assert slack.status_code == 503 and "not configured" in slack.text
        assert (await http.post("/pagerduty/webhook", content=b"{}")).status_code == 401
