"""The gateway's doors with the stock catalog (issue 14, item 6): the demo Slack channel may start every runbook, the
stock PagerDuty trigger of region-failover starts a real run, trigger templates are checked when the catalog loads
and a bad one is refused at request time with a 4xx and its reason (never a 500), and only JSON webhooks count."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from temporalio.service import RPCError, RPCStatusCode

from core.catalog import Catalog, CatalogError, ParameterError, render_trigger_parameters
from core.config import Settings
from starters.gateway import Gateway, create_app, incident_workflow_id
from tests.fakes.pagerduty import incident_event, webhook
from workflows.registry import inputs

STOCK = Path(__file__).resolve().parents[2] / "runbooks"
SECRET = "pd-secret-for-door-tests"
DEMO_CHANNEL = "C0OPS"


@pytest.fixture(scope="module")
def models() -> dict[str, type]:
    return inputs()


@pytest.fixture(scope="module")
def stock(models) -> Catalog:
    return Catalog.load(STOCK, inputs=models)


def test_the_demo_channel_may_start_every_stock_runbook(stock):
    refusals = {name: Gateway.slack_refusal(spec, "U0ALICE01", DEMO_CHANNEL) for name, spec in stock.runbooks.items()}
    assert refusals and all(r is None for r in refusals.values()), refusals


def test_every_stock_pagerduty_trigger_plans_a_start(stock, models):
    triggers = [(spec, t) for spec in stock.runbooks.values() for t in spec.triggers.pagerduty]
    assert triggers
    for spec, trigger in triggers:
        params = render_trigger_parameters(trigger.parameters, incident_event(service_id=trigger.service_ids[0])["event"])
        plan = stock.plan_start(spec.name, params, requested_by="pagerduty", inputs=models, source="pagerduty",
                                workflow_id=incident_workflow_id(spec.name, "PDOOR1"))
        assert plan.workflow_id == f"{spec.name}:incident:PDOOR1"


def _catalog_with(tmp_path: Path, trigger_parameters: str) -> Path:
    (tmp_path / "groups.yaml").write_text("groups:\n  sre: [dave]\n")
    (tmp_path / "drill.yaml").write_text(f"""
name: drill
description: a drill
workflow: RestoreDrill
target: "{{database}}"
concurrency_key: "drill-{{database}}"
parameters:
  database: {{type: string, required: true}}
  report_bucket: {{type: string, default: reports}}
  region: {{type: string}}
triggers:
  pagerduty:
    - service_ids: [PSVC001]
      parameters:
{trigger_parameters}
""")
    return tmp_path


@pytest.mark.parametrize("template, problem", [
    ('        database: "{region: us-east-1}"', "{region} is not a field"),
    ('        database: "{0}"', "positional field"),
    ('        database: "{incident.}"', "not a valid template"),
    ('        database: "{incident.title"', "not a valid template"),
    ('        database: orders\n        colour: "{incident.title}"', "colour: not a parameter of this runbook"),
    ('        region: "{incident.title}"', "requires 'database', which this trigger does not set"),
])
def test_catalog_refuses_trigger_templates_that_cannot_render(tmp_path, models, template, problem):
    with pytest.raises(CatalogError) as err:
        Catalog.load(_catalog_with(tmp_path, template), inputs=models)
    text = str(err.value)
    assert "drill.yaml" in text and problem in text, text
    assert "{{" in text or "not a parameter" in text or "requires" in text  # says how to write a literal brace


def test_rendering_never_raises_anything_but_a_parameter_error():
    event = incident_event()["event"]
    for template in ("{region: us-east-1}", "{0}", "{incident.}", "{incident.title!x}", "{incident.nope}",
                     "{incident.service[9]}", "{incident.title:%Y}"):
        with pytest.raises(ParameterError, match="trigger parameter 'p'"):
            render_trigger_parameters({"p": template}, event)
    assert render_trigger_parameters({"p": "{{a: {incident.title}}}"}, event) == {"p": "{a: orders-db is down}"}


async def _absent(client, workflow_id: str) -> bool:
    try:
        await client.get_workflow_handle(workflow_id).describe()
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            return True
        raise
    return False


async def test_stock_trigger_starts_a_real_run_and_bad_requests_get_4xx(dev_env, tmp_path, stock, models, task_queue):
    settings = Settings(_env_file=None, task_queue=task_queue, PAGERDUTY_WEBHOOK_SECRETS=[SECRET])
    app = create_app(settings, dev_env.client, stock, models)
    incident = "PDOOR" + str(int(time.time() * 1000))[-8:]
    workflow_id = incident_workflow_id("region-failover", incident)
    event = incident_event(incident_id=incident, service_id="PEDGE01", priority="P1")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as http:
        # a signed webhook that is not JSON is no PagerDuty webhook: 415, nothing starts
        body, headers = webhook(event, SECRET)
        for media in ("text/plain", "application/x-www-form-urlencoded", None):
            sent = {k: v for k, v in headers.items() if k != "Content-Type"}
            if media:
                sent["Content-Type"] = media
            response = await http.post("/pagerduty/webhook", content=body, headers=sent)
            assert response.status_code == 415, (media, response.text)
            assert "application/json" in response.json()["error"]
        assert await _absent(dev_env.client, workflow_id)

        # the stock trigger starts a real run (JSON with a charset is JSON)
        json_headers = {**headers, "Content-Type": "application/json; charset=utf-8"}
        response = await http.post("/pagerduty/webhook", content=body, headers=json_headers)
        assert response.status_code == 202, response.text
        assert response.json()["started"] == [workflow_id]
        description = await dev_env.client.get_workflow_handle(workflow_id).describe()
        assert description.workflow_type == "RegionFailover"
        await dev_env.client.get_workflow_handle(workflow_id).terminate("test over")

        # a template that cannot render at request time: 422 with the reason, never 500
        stock_trigger = stock.runbooks["region-failover"].triggers.pagerduty[0]
        saved = dict(stock_trigger.parameters)
        try:
            stock_trigger.parameters["service"] = "{region}"  # as a catalog loaded without checks would hold it
            other = incident_event(incident_id=incident + "X", service_id="PEDGE01", priority="P1")
            body, headers = webhook(other, SECRET)
            response = await http.post("/pagerduty/webhook", content=body, headers=headers)
        finally:
            stock_trigger.parameters.clear()
            stock_trigger.parameters.update(saved)
        assert response.status_code == 422, response.text
        [refused] = response.json()["refused"]
        assert refused["runbook"] == "region-failover" and "{region} is not a field" in refused["reason"]
        assert await _absent(dev_env.client, incident_workflow_id("region-failover", incident + "X"))
