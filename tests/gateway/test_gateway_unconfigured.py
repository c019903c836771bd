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


def _warnings(caplog, tmp_path, settings: Settings) -> str:
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="starters.gateway"):
        create_app(settings, None, Catalog.load(tmp_path, inputs={}), {})  # type: ignore[arg-type]
    return " ".join(r.getMessage() for r in caplog.records)


def test_gateway_says_when_its_ui_links_would_open_only_on_this_host(tmp_path, caplog, monkeypatch):
    """Compose's default RUNBOOK_UI_URL is the UI it publishes on 127.0.0.1: fine on the host, a dead link in Slack."""
    for name in ("SLACK_SIGNING_SECRET", "RUNBOOK_SLACK_SIGNING_SECRET", "PAGERDUTY_WEBHOOK_SECRETS",
                 "RUNBOOK_PAGERDUTY_WEBHOOK_SECRETS"):
        monkeypatch.delenv(name, raising=False)
    slack = {"SLACK_SIGNING_SECRET": "s", "SLACK_BOT_TOKEN": "xoxb-1"}
    loopback = Settings(_env_file=None, ui_url="http://127.0.0.1:8080", **slack)  # type: ignore[arg-type]
    assert "a loopback address" in _warnings(caplog, tmp_path, loopback)
    public = Settings(_env_file=None, ui_url="https://temporal.example.com", **slack)  # type: ignore[arg-type]
    assert "loopback" not in _warnings(caplog, tmp_path, public)
    # nobody outside follows a link when Slack and PagerDuty are off: nothing to say
    assert "loopback" not in _warnings(caplog, tmp_path, Settings(_env_file=None, ui_url="http://localhost:8080"))


def test_loopback_urls():
    from starters.gateway import is_loopback_url

    for url in ("http://localhost:8233", "http://127.0.0.1:8080", "http://127.1.2.3/", "http://[::1]:8080",
                "http://ui.localhost"):
        assert is_loopback_url(url), url
    for url in ("https://temporal.example.com", "http://10.0.0.5:8080", "https://cloud.temporal.io/namespaces/x", ""):
        assert not is_loopback_url(url), url
