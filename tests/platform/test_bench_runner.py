"""bench/run.py: runs every benchmark file as its own process and passes through only the figure lines."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def load_runner(tmp_path: Path):
    """The runner module, copied into a temporary bench folder so the test controls which benchmarks exist."""
    bench = tmp_path / "bench"
    bench.mkdir()
    (bench / "run.py").write_text((ROOT / "bench" / "run.py").read_text())
    spec = importlib.util.spec_from_file_location("bench_run_under_test", bench / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module, bench


def test_runs_each_benchmark_and_prints_only_figures(tmp_path, capsys):
    runner, bench = load_runner(tmp_path)
    (bench / "a_fast.py").write_text("print('warming up')\nprint('a_wall_s 0.41 s')\nprint('a_rate 1200 wf/s')\n")
    (bench / "b_other.py").write_text("import os\nprint(f'b_pid_nonzero {int(os.getpid() > 0)} bool')\n")
    assert runner.main([]) == 0
    out = capsys.readouterr()
    assert out.out.splitlines() == ["a_wall_s 0.41 s", "a_rate 1200 wf/s", "b_pid_nonzero 1 bool"]
    assert "[a_fast] warming up" in out.err


def test_a_failing_or_silent_benchmark_fails_the_run(tmp_path, capsys):
    runner, bench = load_runner(tmp_path)
    (bench / "ok.py").write_text("print('ok_s 1 s')\n")
    (bench / "broken.py").write_text("print('half_s 2 s')\nraise SystemExit(3)\n")
    (bench / "silent.py").write_text("pass\n")
    assert runner.main([]) == 1
    out = capsys.readouterr()
    assert "ok_s 1 s" in out.out and "half_s 2 s" in out.out
    assert "broken" in out.err and "exit status 3" in out.err
    assert "silent" in out.err and "no '<name> <value> <unit>' line" in out.err
    assert runner.main(["ok"]) == 0

