"""The run report reaches Slack: a run's last message links its report, which the gateway serves only through a
link the worker signed."""

from __future__ import annotations

import re
from datetime import timedelta

import httpx
from pydantic import SecretStr

from activities.notify import NotificationActivities
from activities.slack import SlackChannel
from core.catalog import Catalog
from core.config import Settings
from core.report_links import report_link
from starters.gateway import create_app
from tests import harness
from tests.canary.test_ramp import Rig, make_input
from tests.gateway.test_channels import event
from workers.activities import report_links

SECRET = "report-link-test-secret"


def test_the_last_slack_message_links_the_run_report(fake_slack, slack_client):
    settings = Settings(_env_file=None, report_base_url="https://gateway.example/", report_link_secret=SECRET)
    links = report_links(settings)
    assert links is not None and report_links(Settings(_env_file=None)) is None  # off unless both are set
    notify = NotificationActivities([SlackChannel(slack_client, report_link=links)]).notify
    refs: dict[str, str] = {}
    result = notify(event("started", "restore-drill started", refs))
    refs.update(result.refs)
    [message] = fake_slack.channel_messages("C0OPS")
    assert "run report" not in message.all_text()  # not while the run goes on
    notify(event("finished", "restore-drill: Succeeded", refs, status="Succeeded"))
    [message] = fake_slack.channel_messages("C0OPS")
    expected = report_link("https://gateway.example", SECRET, "restore-drill:orders")
    assert expected.startswith("https://gateway.example/reports/restore-drill%3Aorders?sig=")
    assert f"<{expected}|run report (charts, audit trail)>" in message.all_text()


async def test_the_gateway_serves_a_report_only_through_a_signed_link(ts_env, task_queue, tmp_path):
    rig = Rig(ts_env, task_queue)
    async with rig.worker():
        handle = await rig.start(make_input())
        await harness.skip(ts_env, timedelta(minutes=3))  # a few analysis ticks at 5 %
        settings = Settings(_env_file=None, report_link_secret=SecretStr(SECRET))
        app = create_app(settings, ts_env.client, Catalog.load(tmp_path, inputs={}), {})
        link = report_link("http://gateway", SECRET, handle.id)
        path = link.removeprefix("http://gateway")
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as http:
            served = await http.get(path)
            forged = await http.get(path[: -4] + ("0000" if not path.endswith("0000") else "1111"))
            other = await http.get(path.replace("/reports/", "/reports/x"))
            unsigned = await http.get(path.split("?")[0])
            missing = await http.get(report_link("http://gateway", SECRET, "no-such-run").removeprefix("http://gateway"))
        off = create_app(Settings(_env_file=None), ts_env.client, Catalog.load(tmp_path, inputs={}), {})
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=off), base_url="http://gateway") as http:
            not_served = await http.get(path)
        await harness.cancel_settled(handle)
    assert served.status_code == 200 and served.headers["content-type"].startswith("text/html")
    assert f"<title>canary-ramp {handle.id}: Running</title>" in served.text
    assert re.search(r'id="chart-weight"', served.text) and 'id="chart-metric-error-rate"' in served.text
    assert forged.status_code == other.status_code == unsigned.status_code == 403
    assert missing.status_code == 404 and not_served.status_code == 404
