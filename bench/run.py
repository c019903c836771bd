"""Runs every benchmark under bench/ (each ``bench/*.py`` but this file) as its own process.

Each benchmark prints figures as lines ``<name> <value> <unit>`` (for example ``canary_full_ramp_wall_s 0.41 s``);
this runner prints those lines, in file order, and nothing else on stdout, so two runs can be diffed. Other
output of a benchmark goes to stderr. Exit status 1 if any benchmark failed or printed no figure.

    python bench/run.py [NAME ...]     # NAME: a benchmark file's stem, to run only some
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
FIGURE = re.compile(r"^(?P<name>[A-Za-z0-9_.:-]+) (?P<value>-?[0-9.]+(?:[eE][-+]?[0-9]+)?) (?P<unit>\S+)$")
TIMEOUT_S = float(os.environ.get("BENCH_TIMEOUT_S", "600"))


def benchmarks(only: list[str]) -> list[Path]:
    found = sorted(p for p in BENCH.glob("*.py") if p.name != Path(__file__).name and not p.name.startswith("_"))
    if only:
        found = [p for p in found if p.stem in only]
    return found


def run_one(path: Path) -> tuple[list[str], str | None]:
    """The figure lines of one benchmark, and an error message or None."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    try:
        proc = subprocess.run(
            [sys.executable, str(path)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT_S
        )
    except subprocess.TimeoutExpired:
        return [], f"timed out after {TIMEOUT_S:.0f}s"
    figures, other = [], []
    for line in proc.stdout.splitlines():
        (figures if FIGURE.match(line.strip()) else other).append(line.strip())
    if other or proc.stderr:
        sys.stderr.write("".join(f"[{path.stem}] {line}\n" for line in [*other, *proc.stderr.splitlines()]))
    if proc.returncode != 0:
        return figures, f"exit status {proc.returncode}"
    if not figures:
        return figures, "printed no '<name> <value> <unit>' line"
    return figures, None


def main(argv: list[str]) -> int:
    paths = benchmarks(argv)
    if not paths:
        print("bench: no benchmarks found" + (f" named {', '.join(argv)}" if argv else ""), file=sys.stderr)
        return 1 if argv else 0
    failed = []
    for path in paths:
        started = time.monotonic()
        figures, error = run_one(path)
        for line in figures:
            print(line, flush=True)
        print(f"[{path.stem}] {time.monotonic() - started:.1f}s" + (f" FAILED: {error}" if error else ""), file=sys.stderr)
        if error:
            failed.append(path.stem)
    if failed:
        print(f"bench: failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
