"""The per-file timeline plugin (tests/timeline.py) over a real pytest run of two small test files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests import timeline

ROOT = Path(__file__).resolve().parents[2]


def test_one_row_per_file_with_its_wall_time_and_the_children_it_reaped(tmp_path: Path) -> None:
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "test_sleeps.py").write_text("import time\n\ndef test_a():\n    time.sleep(0.3)\n\ndef test_b():\n    pass\n")
    (suite / "test_child.py").write_text(
        "import subprocess, sys\n\ndef test_burns_in_a_child():\n"
        "    subprocess.run([sys.executable, '-c', 'sum(range(20_000_000))'], check=True)\n")
    out = tmp_path / "timeline"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "RUNBOOK_TIMELINE"))},
           "RUNBOOK_TIMELINE_DIR": str(out), "PYTHONPATH": str(ROOT)}  # not the xdist worker this test runs in
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "tests.timeline",
                          "-p", "no:xdist", "--rootdir", str(suite), "-c", os.devnull, str(suite)],
                         cwd=suite, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr

    rows = {r["file"]: r for r in map(json.loads, (out / "main.jsonl").read_text().splitlines())}
    assert set(rows) == {"<collection>", "test_sleeps.py", "test_child.py"}, rows
    assert rows["test_sleeps.py"]["end"] - rows["test_sleeps.py"]["start"] >= 0.28  # its 0.3 s sleep; 2 decimals kept
    assert rows["test_child.py"]["children_cpu"] > 0.1  # the child's CPU, reaped during that file
    assert rows["test_sleeps.py"]["children_cpu"] < rows["test_child.py"]["children_cpu"]

    shown = subprocess.run([sys.executable, "-m", "tests.timeline"], cwd=ROOT, env=env, capture_output=True,
                           text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert sorted(line.split()[-1] for line in lines[1:-1]) == ["<collection>", "test_child.py", "test_sleeps.py"]
    assert lines[-1].startswith("processes 1, last ends"), lines[-1]
    assert timeline.summary([]).endswith("cpu 0 s, children 0 s")
