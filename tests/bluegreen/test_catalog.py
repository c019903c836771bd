"""The blue-green runbook's catalog entry validates against the workflow and plans a start keyed by service."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from pydantic import ValidationError

from core.bluegreen import BlueGreenInput
from core.catalog import Catalog

ROOT = Path(__file__).resolve().parents[2] / "runbooks"


def test_catalog_entry_plans_a_start(tmp_path):
    for name in ("groups.yaml", "blue-green.yaml"):
        shutil.copy(ROOT / name, tmp_path / name)
    models = {"BlueGreenCutover": BlueGreenInput}
    catalog = Catalog.load(tmp_path, inputs=models)
    plan = catalog.plan_start(
        "blue-green",
        {"service": "shop", "image": "shop:v2", "preview_urls": "{blue: 'http://b:8080', green: 'http://g:8080'}"},
        requested_by="bob",
        inputs=models,
    )
    assert plan.workflow_id.endswith("bluegreen:shop") and plan.workflow_type == "BlueGreenCutover"
    inp = plan.input
    assert isinstance(inp, BlueGreenInput)
    assert inp.scale_down_delay.total_seconds() == 30 and inp.progress_deadline.total_seconds() == 600
    assert inp.max_bake_extension.total_seconds() == 24 * 3600
    assert inp.meta.environment == "production" and inp.meta.approval.required_approvals == 1
    assert "alice" in inp.meta.approval.eligible() and not inp.meta.approval.allow_self_approval
    assert [m.name for m in inp.bake_analysis.metrics] == ["error-rate", "latency-p99"]
    assert inp.health_failure_limit == 5  # the catalog's policy: the limit of the bake's http-health metric


def test_bake_that_would_judge_nothing_or_shadow_http_health_is_refused_naming_the_field():
    base = {"meta": {"runbook": "blue-green", "target": "shop", "requested_by": "bob"}, "service": "shop",
            "image": "shop:v2", "preview_urls": {"blue": "http://b", "green": "http://g"}}
    with pytest.raises(ValidationError, match="health_checks is empty and there is no bake_analysis"):
        BlueGreenInput.model_validate({**base, "health_checks": []})
    shadow = {"name": "bake", "metrics": [{"name": "http-health", "query": {"provider": "cloudwatch", "namespace": "N",
                                                                           "metric_name": "M"}, "success": "< 1"}]}
    with pytest.raises(ValidationError, match="bake_analysis: the metric name http-health is the bake's own"):
        BlueGreenInput.model_validate({**base, "bake_analysis": shadow})
    assert BlueGreenInput.model_validate({**base, "health_checks": [], "bake_analysis": shadow}).bake_analysis
