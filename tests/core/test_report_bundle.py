"""The plotly.js that `runbook report` embeds: the basic bundle of the version plotly.py builds its figures for
(tests/ui/test_report.py draws the pages in Chromium)."""

from __future__ import annotations

import inspect
import re

from plotly.offline import get_plotlyjs_version

from starters import report


def test_the_embedded_bundle_is_the_basic_one_of_plotly_pys_plotly_js_version() -> None:
    head = report.plotly_js()[:300]
    found = re.search(r"plotly\.js \(basic - minified\) v(\S+)", head)
    assert found is not None and found.group(1) == get_plotlyjs_version(), head


def test_every_trace_the_report_draws_is_in_the_basic_bundle() -> None:
    assert set(re.findall(r"go\.(\w+)\(", inspect.getsource(report))) <= {"Figure", "Scatter", "Bar", "Pie"}
