"""`runbook report` pages in headless Chromium: every chart drew, with the series it should have, for each runbook.

Finished runs of every kind come from the recorded histories of tests/replay (history alone, as for a run whose
worker is gone); a canary that rolls back, and one still running (its live queries), are run here on the
time-skipping server and reported through ``collect`` as the CLI does. One browser (a module fixture) draws every
page of the module: its start costs about as much CPU as two pages. Needs Debian's ``chromium`` and
``playwright-core`` from npm in tests/ui/node_modules (.ci/run installs both).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import IO

import pytest
from temporalio.client import WorkflowHistory
from typer.testing import CliRunner

from starters import report
from tests import harness
from tests.canary.standins import HEALTHY
from tests.canary.test_ramp import Rig, make_input
from tests.ui.test_codec_ui import CHROMIUM, HERE, NODE
from tests.ui.test_codec_ui import pytestmark as needs_chromium

SCRIPT = HERE / "report_charts.mjs"
# a report embeds plotly.js (its basic bundle, 1.2 MB; the full one, 4.6 MB, took about a second on a quiet
# machine and 25 s on a loaded one, 2 cores at load 16)
pytestmark = [needs_chromium, pytest.mark.timeout(300)]


class Browser:
    """report_charts.mjs: one headless Chromium that draws each batch of pages it is sent (a JSON line in, one out)."""

    def __init__(self, profile: str, log: IO[str]) -> None:
        cfg = {"chromium": CHROMIUM, "profile_dir": profile, "timeout_ms": 120000}
        self.log = log
        self.proc = subprocess.Popen([NODE, str(SCRIPT), json.dumps(cfg)], cwd=HERE, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=log, text=True)
        self._one_at_a_time = threading.Lock()

    def _draw(self, urls: list[str]) -> str:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        with self._one_at_a_time:
            self.proc.stdin.write(json.dumps({"urls": urls}) + "\n")
            self.proc.stdin.flush()
            return self.proc.stdout.readline()

    async def charts(self, pages: list[Path]) -> list[dict]:
        line = await asyncio.wait_for(asyncio.to_thread(self._draw, [p.as_uri() for p in pages]), 250)
        if not line:
            self.log.seek(0)
            raise AssertionError(f"the browser script ended (exit {self.proc.poll()}): {self.log.read()[-2000:]}")
        seen = json.loads(line)["pages"]
        for page in seen:
            assert "error" not in page, page
            assert page["requests"] == [], f"the page fetched something: {page['requests']}"
        return seen

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile, tempfile.TemporaryFile("w+") as log:
        chromium = Browser(profile, log)
        try:
            yield chromium
        finally:
            chromium.close()


def _by_id(page: dict) -> dict[str, dict]:
    charts = {c["id"]: c for c in page["charts"]}
    for chart in charts.values():  # drawn: an SVG of real size with at least one mark per series
        assert chart["width"] > 200 and chart["height"] > 150, chart
        assert chart["drawn"]["traces"] == len(chart["series"]), chart
    return charts


async def _from_recording(name: str) -> report.RunData:
    recorded = json.loads((harness.HISTORIES / f"{name}.json").read_text())
    history = WorkflowHistory.from_json(recorded["workflowId"], recorded)
    return await report.from_history(history, harness.DATA_CONVERTER)


def _write(tmp_path: Path, name: str, data: report.RunData) -> Path:
    page = tmp_path / f"{name}.html"
    page.write_text(report.render(data))
    return page  # that it fetches nothing when it opens is checked in the browser (requests == [])


async def test_finished_runs_of_every_kind_draw_their_charts(browser: Browser, tmp_path: Path) -> None:
    names = {
        "bluegreen": "bluegreen-breach_during_bake_switches_back_alb",
        "failover": "failover-verification_failure_holds_and_pages",
        "failback": "failover-failback_with_approval",
        "restore": "restore-healthy_dump_restore_passes",
        "provision": "provision-production_needs_two_distinct_approvers_from_both_groups",
    }
    runs = {kind: await _from_recording(name) for kind, name in names.items()}
    pages = await browser.charts([_write(tmp_path, kind, data) for kind, data in runs.items()])
    seen = dict(zip(names, pages, strict=True))

    # blue-green: the bake analysis's error rate against its threshold, the failed sample marked; its http-health
    # (built by the workflow, not in the input) against health_failure_limit
    bg = _by_id(seen["bluegreen"])
    assert "chart-probes" not in bg
    assert bg["chart-metric-http-health"]["series"] == ["http-health", "threshold (<= 5 %)"]
    assert bg["chart-metric-error-rate"]["series"] == ["error-rate", "failed samples", "threshold (<= 1 %)"]
    assert bg["chart-metric-error-rate"]["drawn"]["lines"] == 2  # the values and the threshold
    assert "chart-steps" in bg

    # failover and failback: the RTO timeline, every step a bar, and the RTO target
    for kind in ("failover", "failback"):
        timeline = _by_id(seen[kind])["chart-timeline"]
        state = runs[kind].state
        assert timeline["series"] == ["steps", "RTO target"] and timeline["drawn"]["lines"] == 1
        assert timeline["drawn"]["bars"] == len(state["steps"]) + len(state["gates"])
        assert timeline["title"].startswith("RTO timeline: RTO ")
        assert "against target 15m" in timeline["title"]

    # restore drill: RPO and RTO achieved against their targets; each check a bar
    restore = _by_id(seen["restore"])
    assert restore["chart-rpo-rto"]["series"] == ["achieved", "target"] and restore["chart-rpo-rto"]["drawn"]["bars"] == 4
    checks = runs["restore"].result["report"]["checks"]
    assert restore["chart-checks"]["drawn"]["bars"] == len(checks) and restore["chart-checks"]["title"].endswith(
        f"{len(checks)}/{len(checks)} passed")

    # provisioning: its steps (and gates) on a timeline
    prov = _by_id(seen["provision"])
    state = runs["provision"].state
    assert prov["chart-steps"]["drawn"]["bars"] == len(state["steps"]) + len(state["gates"])

    # the audit trail names the approvers
    html = (tmp_path / "provision.html").read_text()
    for gate in state["gates"]:
        for approval in gate["approvals"]:
            assert f"approved by {approval['approver']}" in html


async def test_canary_rolled_back_and_running_through_the_cli(ts_env, task_queue: str, browser: Browser,
                                                               tmp_path: Path) -> None:
    def bad_at_25(metric: str, weight: int, n: int) -> float:
        return 2.0 if metric == "error-rate" and weight >= 25 else HEALTHY[metric]

    rig = Rig(ts_env, task_queue, bad_at_25)
    async with rig.worker():
        handle = await rig.start(make_input())
        assert (await handle.result()).status == "RolledBack"
        rolled_back = await report.collect(ts_env.client, handle.id)

        live = Rig(ts_env, task_queue)
        running = await live.start(make_input())
        await harness.skip(ts_env, timedelta(minutes=2))  # two one-minute ticks of the analysis at 5 %
        live_data = await harness.poll(  # until its measurements are in the history
            lambda: report.collect(ts_env.client, running.id),
            lambda data: {m["metric"] for m in report.measurements(data)} == set(HEALTHY), "the live canary measured")
    assert rolled_back.status is None and live_data.status is not None and live_data.canary is not None

    # the CLI command writes the same page (from the history alone: the run is over)
    from starters import cli

    out = tmp_path / "cli.html"
    address = ts_env.client.service_client.config.target_host
    result = await asyncio.to_thread(CliRunner().invoke, cli.app,
                                     ["report", handle.id, "-o", str(out), "--address", address])
    assert result.exit_code == 0, result.output
    assert f"report written to {out}" in result.output

    pages = await browser.charts([out, _write(tmp_path, "live", live_data)])
    done, running_page = (_by_id(p) for p in pages)
    weights = [w for _, w, _ in report.weights(rolled_back)]
    assert weights == [5, 25, 0]
    assert done["chart-weight"]["series"] == ["canary weight %"] and done["chart-weight"]["drawn"]["points"] == 4
    errors = done["chart-metric-error-rate"]
    assert errors["series"] == ["error-rate", "failed samples", "threshold (< 0.5 %)"]
    failed = [m for m in report.measurements(rolled_back) if m["metric"] == "error-rate" and m["phase"] == "Failed"]
    assert len(failed) == 2  # failure limit 1: the second failed sample rolled back
    for metric in HEALTHY:
        assert done[f"chart-metric-{metric}"]["drawn"]["lines"] == 2
    assert "RolledBack" in out.read_text()

    # a running canary: its live weight and first measurements, and the page says it is still running
    assert running_page["chart-weight"]["drawn"]["points"] >= 2
    assert all(f"chart-metric-{metric}" in running_page for metric in HEALTHY)
    assert "still running" in (tmp_path / "live.html").read_text()


@pytest.fixture
def task_queue() -> str:
    return harness.new_task_queue()
