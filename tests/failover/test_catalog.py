"""The failover and failback catalog entries validate against the workflows and plan a start."""

from __future__ import annotations

import shutil
from pathlib import Path

from core.catalog import Catalog
from core.failover import RegionFailoverInput
from workflows.registry import inputs

WF = inputs()
ROOT = Path(__file__).resolve().parents[2] / "runbooks"


def side(region: str) -> dict:
    return {"region": region, "health_url": f"https://shop.{region}.example.com/healthz", "database": f"shop-{region}",
            "deployment": "web", "replicas": 4, "dns_value": f"shop.{region}.example.com"}


def test_catalog_entries_plan_a_start(tmp_path):
    for name in ("groups.yaml", "region-failover.yaml", "region-failback.yaml"):  # only ours: others' may be mid-edit
        shutil.copy(ROOT / name, tmp_path / name)
    catalog = Catalog.load(tmp_path, inputs=WF)
    plan = catalog.plan_start(
        "region-failover",
        {"service": "shop", "primary": side("us-east-1"), "dr": side("us-west-2"),
         "dns": {"zone_id": "Z1", "record_name": "shop.example.com."}},
        requested_by="dave", inputs=WF,
    )
    assert plan.workflow_type == "RegionFailover" and plan.workflow_id == "region-move-shop"
    assert isinstance(plan.input, RegionFailoverInput) and plan.input.mode == "drill"
    assert plan.input.rto_target.total_seconds() == 900
    assert plan.meta.approval.required_approvals == 1 and "dave" in plan.meta.approval.eligible()
    drill = catalog.plan_start("region-failover", {"service": "shop", "mode": "real", "primary": side("us-east-1"),
                               "dr": side("us-west-2"), "dns": {"zone_id": "Z1", "record_name": "shop.example.com."}},
                               requested_by="erin", inputs=WF)
    assert drill.input.mode == "real" and drill.meta.approval.on_timeout == "escalate"
    back = catalog.plan_start("region-failback", {"service": "shop", "original": side("us-east-1"), "current": side("us-west-2"),
                              "dns": {"zone_id": "Z1", "record_name": "shop.example.com."}, "replica": "shop-east-2"},
                              requested_by="dave", inputs=WF)
    assert back.workflow_type == "RegionFailback" and back.workflow_id == "region-move-shop"
