"""Write the bytecode a fresh checkout lacks, once, before `make test` starts its processes (``python -m
tests.warm_bytecode``: as a script, tests/platform would hide the standard library's ``platform``).

Many shells and containers (this machine's and CI's among them) set PYTHONDONTWRITEBYTECODE, so no Python process of
the suite writes a .pyc, and every one compiles again what it imports from this repository: each pytest-xdist
process rewrote the asserts of all ~170 test modules while collecting them (about half of its 15 s of collection
CPU), and each of the ~150 worker, CLI and gateway processes the tests start compiled the product's modules (0.3-0.5 s
each). Reading a .pyc does not need the variable unset, so this writes them all up front, in one process per core:

- plain .pyc for the product's packages and the tests' helpers (``compileall``, as installing a wheel does);
- pytest's own cached .pyc of each module it rewrites (test files and conftest.py): the same hash-checked file pytest
  writes itself when it may, so a changed source is noticed and rewritten again.

Only the warm-up is lost if pytest changes the private functions used below: the suite then compiles as before.
"""

from __future__ import annotations

import compileall
import os
import re
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = ("core", "workflows", "activities", "workers", "starters")  # pyproject.toml's packages
PACKAGES = (*PRODUCT, "tests", "bench")
NODE_MODULES = re.compile(r"[/\\]node_modules[/\\]")  # the UI tests' npm packages


def rewritten_by_pytest(path: Path) -> bool:
    """pytest's default ``python_files`` (pyproject.toml keeps it), and conftest.py."""
    return path.name == "conftest.py" or (path.name.startswith("test_") and path.suffix == ".py")


def write_rewritten(path: str) -> str | None:
    """pytest's rewrite of one test module, written where and how pytest would write it; an error is returned."""
    try:
        from _pytest.assertion import rewrite

        source = Path(path)
        pyc = rewrite.get_cache_dir(source) / (source.name[:-3] + rewrite.PYC_TAIL)
        if rewrite._read_pyc(source, pyc) is not None:
            return None  # current already
        source_hash, code = rewrite._rewrite_test(source, None)  # type: ignore[arg-type]  # no config: the defaults
        pyc.parent.mkdir(exist_ok=True)
        partial = pyc.with_name(f"{pyc.name}.{os.getpid()}")
        with open(partial, "wb") as out:
            rewrite._write_pyc_fp(out, source_hash, code)
        os.replace(partial, pyc)
        return None
    except Exception as exc:  # a speed-up only: the suite rewrites the module itself
        return f"{path}: {type(exc).__name__}: {exc}"


def compile_packages(packages: tuple[str, ...] = PACKAGES) -> bool:
    """Plain .pyc for ``packages`` (as installing a wheel does: pip compiles at install); False if any failed."""
    return all([compileall.compile_dir(ROOT / package, quiet=1, workers=os.cpu_count() or 1, rx=NODE_MODULES)
                for package in packages])


def main() -> int:
    workers = os.cpu_count() or 1
    ok = compile_packages()
    tests = sorted(str(p) for p in (ROOT / "tests").rglob("*.py")
                   if rewritten_by_pytest(p) and "node_modules" not in p.parts)
    with ProcessPoolExecutor(workers) as pool:
        errors = [error for error in pool.map(write_rewritten, tests, chunksize=8) if error]
    for error in errors[:3]:
        print(f"warm_bytecode: not cached (pytest will rewrite it): {error}", file=sys.stderr)
    if not ok:  # a read-only checkout, or a syntax error that the suite reports itself
        print("warm_bytecode: some modules were not compiled (the suite compiles them as it imports)", file=sys.stderr)
    return 0  # a speed-up only: never the reason make test fails

if __name__ == "__main__":
    sys.exit(main())
