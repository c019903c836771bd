"""Where `make test`'s time goes, file by file: a pytest plugin, and its summary.

    RUNBOOK_TIMELINE=1 make test     # tests/conftest.py registers it: one line per test file, per xdist process
    python -m tests.timeline         # the files by wall time, and the totals

For each test file the plugin records which process ran it, when it started and ended (seconds since that process
was configured: xdist starts its processes together), and the CPU (user+sys) of that process and of the child processes it reaped meanwhile (servers, workers,
Terraform, `runbook` commands; a session fixture's servers count in the file during which they stop). Collection is
one row per process. Lines go to ``$RUNBOOK_TIMELINE_DIR`` (default .state/timeline/, emptied by the run's first
process), one JSON file per process. It showed the files begun last that ran alone at the end of a run
(``LONGEST_FIRST`` in tests/conftest.py) and the cost of collection without cached bytecode (tests/warm_bytecode.py).
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import IO, Any

import pytest

ROOT = Path(__file__).resolve().parents[1]


def directory() -> Path:
    return Path(os.environ.get("RUNBOOK_TIMELINE_DIR") or ROOT / ".state" / "timeline")


def _cpu() -> tuple[float, float]:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


class Timeline:
    def __init__(self, worker: str, started: float) -> None:
        self.worker, self.started = worker, started
        self.current: dict[str, Any] | None = None
        directory().mkdir(parents=True, exist_ok=True)
        self.out: IO[str] = open(directory() / f"{worker}.jsonl", "a")

    def row(self, file: str, start: float, cpu: tuple[float, float]) -> None:
        own, children = _cpu()
        self.out.write(json.dumps({"process": self.worker, "file": file, "start": round(start - self.started, 2),
                                   "end": round(time.time() - self.started, 2), "cpu": round(own - cpu[0], 2),
                                   "children_cpu": round(children - cpu[1], 2)}) + "\n")
        self.out.flush()

    def file_starts(self, file: str) -> None:
        if self.current is not None and self.current["file"] == file:
            return
        self.file_ends()
        self.current = {"file": file, "start": time.time(), "cpu": _cpu()}

    def file_ends(self) -> None:
        if self.current is not None:
            self.row(self.current["file"], self.current["start"], self.current["cpu"])
            self.current = None


_timeline: Timeline | None = None


def pytest_configure(config: pytest.Config) -> None:
    global _timeline
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker is None and getattr(config.option, "dist", "no") != "no":
        return  # the xdist controller runs no test
    if worker is None or worker == "gw0":
        for old in directory().glob("*.jsonl") if directory().exists() else []:
            if worker is None or old.stat().st_mtime < time.time() - 60:  # gw0: only an earlier run's
                old.unlink()
    _timeline = Timeline(worker or "main", time.time())


def pytest_collection_finish(session: pytest.Session) -> None:
    if _timeline is not None:
        _timeline.row("<collection>", _timeline.started, (0.0, 0.0))


def pytest_runtest_logstart(nodeid: str, location: tuple[str, int | None, str]) -> None:
    if _timeline is not None:
        _timeline.file_starts(nodeid.split("::")[0])


def pytest_sessionfinish(session: pytest.Session) -> None:
    if _timeline is not None:
        _timeline.file_ends()
        _timeline.out.close()


def summary(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'wall s':>7} {'cpu s':>7} {'children':>8} {'start':>6} {'end':>6}  process  file"]
    for r in sorted(rows, key=lambda r: -(r["end"] - r["start"])):
        lines.append(f"{r['end'] - r['start']:7.1f} {r['cpu']:7.1f} {r['children_cpu']:8.1f} {r['start']:6.0f} "
                     f"{r['end']:6.0f}  {r['process']:7s}  {r['file']}")
    ends = {r["process"]: r["end"] for r in rows}
    lines.append(f"processes {len(ends)}, last ends {max(ends.values(), default=0):.0f} s, first ends "
                 f"{min(ends.values(), default=0):.0f} s; cpu {sum(r['cpu'] for r in rows):.0f} s, children "
                 f"{sum(r['children_cpu'] for r in rows):.0f} s")
    return "\n".join(lines)


def main() -> int:
    rows = [json.loads(line) for path in sorted(directory().glob("*.jsonl")) for line in path.read_text().splitlines()]
    if not rows:
        print(f"no timeline in {directory()}: run RUNBOOK_TIMELINE=1 make test", file=sys.stderr)
        return 1
    print(summary(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
