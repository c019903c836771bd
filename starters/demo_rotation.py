"""The local stack's rotate-secret demo: OpenBao's database and PKI engines, the demo KV paths and their consumers.

Part of the local stack, not of the runbook. ``setup_rotation`` (run by ``runbook dev`` once OpenBao and the
embedded PostgreSQL answer) sets up:

- the **database engine** at ``database/``: connection ``orders`` to the embedded PostgreSQL (its superuser over the
  Unix socket), role ``orders-app`` (a LOGIN user with SELECT on the ``orders`` tables, lease 30 days), and a first
  credential issued from it in KV ``secret/demo/orders-app/db`` (``username``, ``password``, ``lease_id``);
- the **PKI engine** at ``pki/``: an internal root ``demo.internal root`` and role ``demo-web`` (``demo.internal``
  and its subdomains), and a first certificate for ``checkout.demo.internal`` in KV ``secret/demo/checkout/tls``
  (``certificate``, ``private_key``, ``serial``, ``not_after``);
- an **API key** in KV ``secret/demo/checkout/api-key`` (``api_key``, ``fingerprint``).

Each is created only when missing (OpenBao's dev server keeps everything in memory, so a fresh start has none of
them; on a running OpenBao a second call changes nothing). PostgreSQL keeps its data across starts: the users a
previous OpenBao issued (their leases died with it) are dropped first, so restarts leave no stray users behind.

``RotationDemo`` is the consumers, in threads of ``runbook dev``. Every second they read their KV path and, on a new
version, switch to it as a Vault Agent template or a reloading proxy would:

- ``orders-api`` connects to the ``orders`` database as the KV path's user (``application_name=orders-api``, what
  the database kind's ``pg_wait_consumers`` looks for in pg_stat_activity), the new connection before closing the
  old one;
- the **TLS endpoint** (``RUNBOOK_DEV_TLS_PORT``, default 8443; ``$RUNBOOK_DEMO_TLS_ENDPOINT``) serves HTTPS with the
  KV path's certificate, a new version from the next handshake on (what the certificate kind's ``tls_wait_serial``
  checks); its page names the serial;
- the **API key consumer** reports the fingerprint of the key it uses at ``$RUNBOOK_DEMO_URL/checkout/api-key``
  (``{"api_key": "sha256:..."}``, served by ``starters.demo_services``), what the api_key kind verifies.

While ``<state>/demo/rotation-stuck`` exists none of them reloads (``touch`` it to watch a rotation roll back, ``rm``
to heal); the file is read every second.
"""

from __future__ import annotations

import contextlib
import logging
import ssl
import tempfile
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import hvac
import psycopg
import requests
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from core.rotation import fingerprint_of

log = logging.getLogger(__name__)

DB_MOUNT, DB_CONNECTION, DB_ROLE = "database", "orders", "orders-app"
DB_KV = "demo/orders-app/db"
DB_CONSUMER = "orders-api"  # its application_name in pg_stat_activity
USER_PREFIX = "rot-orders-app-"  # the engine's user names (username_template): stray ones are found by it
PKI_MOUNT, PKI_ROLE, PKI_DOMAIN = "pki", "demo-web", "demo.internal"
TLS_CN = f"checkout.{PKI_DOMAIN}"
TLS_KV = "demo/checkout/tls"
API_KEY_KV = "demo/checkout/api-key"
DEFAULT_TLS_PORT = 8443
STUCK = "rotation-stuck"


def _kv(client: hvac.Client, path: str) -> tuple[int, dict[str, Any]] | None:
    """(version, data) of the newest version of ``secret/<path>``, None when the path does not exist."""
    try:
        resp = client.secrets.kv.v2.read_secret_version(path=path, mount_point="secret", raise_on_deleted_version=True)
    except hvac.exceptions.InvalidPath:
        return None
    return int(resp["data"]["metadata"]["version"]), resp["data"]["data"]


def _kv_write(client: hvac.Client, path: str, data: dict[str, str]) -> None:
    client.secrets.kv.v2.create_or_update_secret(path=path, mount_point="secret", secret=data)


def drop_stray_users(pg_uri: str, database: str, keep: set[str]) -> list[str]:
    """Drop the engine's users (``USER_PREFIX``) that no lease of this OpenBao holds; returns their names."""
    with psycopg.connect(pg_uri, dbname=database, autocommit=True) as conn:
        names = [r[0] for r in conn.execute("SELECT rolname FROM pg_roles WHERE rolname LIKE %s",
                                            (USER_PREFIX + "%",)).fetchall()]
        dropped = []
        for name in names:
            if name in keep:
                continue
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (name,))
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))
            dropped.append(name)
    return dropped


def _database_engine(client: hvac.Client, pg_uri: str, database: str) -> list[str]:
    mounts = client.sys.list_mounted_secrets_engines()["data"]
    if f"{DB_MOUNT}/" not in mounts:
        client.sys.enable_secrets_engine("database", path=DB_MOUNT)
    stray: list[str] = []
    if _kv(client, DB_KV) is None:  # a fresh OpenBao: whatever users the last one issued have no lease any more
        stray = drop_stray_users(pg_uri, database, keep=set())
    with contextlib.suppress(hvac.exceptions.InvalidPath):
        if client.read(f"{DB_MOUNT}/config/{DB_CONNECTION}"):
            return stray
    info = conninfo_to_dict(pg_uri)
    client.secrets.database.configure(
        DB_CONNECTION, "postgresql-database-plugin", mount_point=DB_MOUNT, allowed_roles=[DB_ROLE],
        verify_connection=True,
        connection_url=(f"host={info['host']} port={info.get('port') or 5432} user={{{{username}}}} "
                        f"password={{{{password}}}} dbname={database} sslmode=disable"),
        username=info.get("user", "postgres"), password="unused-by-trust-auth",
        username_template='{{ printf "rot-%s-%s" .RoleName (random 12) | lowercase }}',
    )
    client.secrets.database.create_role(
        DB_ROLE, DB_CONNECTION, mount_point=DB_MOUNT, default_ttl="720h", max_ttl="720h",
        creation_statements=[
            "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';",
            "GRANT SELECT ON ALL TABLES IN SCHEMA public TO \"{{name}}\";",
        ],
    )
    return stray


def _pki_engine(client: hvac.Client) -> None:
    mounts = client.sys.list_mounted_secrets_engines()["data"]
    if f"{PKI_MOUNT}/" not in mounts:  # the root is generated with the mount, once
        client.sys.enable_secrets_engine("pki", path=PKI_MOUNT, config={"max_lease_ttl": "87600h"})
        client.write_data(f"{PKI_MOUNT}/root/generate/internal",
                          data={"common_name": f"{PKI_DOMAIN} root", "ttl": "87600h"})
    with contextlib.suppress(hvac.exceptions.InvalidPath):
        if client.read(f"{PKI_MOUNT}/roles/{PKI_ROLE}"):
            return
    client.write_data(f"{PKI_MOUNT}/roles/{PKI_ROLE}", data={
        "allowed_domains": [PKI_DOMAIN], "allow_subdomains": True, "allow_bare_domains": False,
        "max_ttl": "8760h", "ttl": "8760h"})


def setup_rotation(addr: str, token: str, pg_uri: str, database: str) -> list[str]:
    """The engines, roles and first KV versions of the demo, each only when missing (see the module's doc); returns
    what it created or cleaned up, for the stack's log."""
    from datetime import datetime, timezone

    client = hvac.Client(url=addr, token=token)
    done: list[str] = []
    stray = _database_engine(client, pg_uri, database)
    if stray:
        done.append(f"dropped {len(stray)} PostgreSQL user(s) a previous OpenBao issued")
    if _kv(client, DB_KV) is None:
        creds = client.secrets.database.generate_credentials(DB_ROLE, mount_point=DB_MOUNT)
        _kv_write(client, DB_KV, {"username": creds["data"]["username"], "password": creds["data"]["password"],
                                  "lease_id": creds["lease_id"]})
        done.append(f"secret/{DB_KV} from {DB_MOUNT}/creds/{DB_ROLE}")
    _pki_engine(client)
    if _kv(client, TLS_KV) is None:
        issued = client.write_data(f"{PKI_MOUNT}/issue/{PKI_ROLE}", data={"common_name": TLS_CN})["data"]
        not_after = datetime.fromtimestamp(int(issued["expiration"]), timezone.utc).isoformat()
        _kv_write(client, TLS_KV, {"certificate": issued["certificate"], "private_key": issued["private_key"],
                                   "serial": str(issued["serial_number"]), "not_after": not_after})
        done.append(f"secret/{TLS_KV} from {PKI_MOUNT}/issue/{PKI_ROLE} ({TLS_CN})")
    if _kv(client, API_KEY_KV) is None:
        import secrets

        key = secrets.token_urlsafe(32)
        _kv_write(client, API_KEY_KV, {"api_key": key, "fingerprint": fingerprint_of(key)})
        done.append(f"secret/{API_KEY_KV}")
    return done


@dataclass
class _Served:
    version: int = 0
    context: ssl.SSLContext | None = None
    serial: str = ""


class RotationDemo:
    """The three consumers (see the module's doc). ``run(stop_event)`` serves until the event is set."""

    def __init__(self, addr: str, token: str, pg_uri: str, database: str, state_dir: Path | str,
                 tls_port: int = DEFAULT_TLS_PORT, host: str = "127.0.0.1") -> None:
        # three reads a second of a local OpenBao, without requests' look-up of proxy settings in the environment on
        # each request (1.2 ms of CPU per read instead of 3)
        session = requests.Session()
        session.trust_env = False
        self.client = hvac.Client(url=addr, token=token, session=session)
        self.pg_uri, self.database = pg_uri, database
        self.demo = Path(state_dir) / "demo"
        self.tls_port, self.host = tls_port, host
        self.db_version, self.db_user = 0, ""
        self._conn: psycopg.Connection | None = None
        self.tls = _Served()
        self.key_version, self.fingerprint = 0, ""
        self._dir = tempfile.mkdtemp(prefix="demo-tls-")
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ the consumers
    def stuck(self) -> bool:
        return (self.demo / STUCK).exists()

    def reload(self) -> None:
        """One look at each KV path; a consumer whose path has a new version switches to it. An error leaves that
        consumer on what it has (logged) and the others go on."""
        for name, step in (("orders-api", self._reload_db), ("tls endpoint", self._reload_tls),
                           ("api key consumer", self._reload_key)):
            try:
                step()
            except Exception as err:  # noqa: BLE001 - a demo consumer keeps what it has and tries again
                log.warning("demo %s: %s: %s", name, type(err).__name__, err)

    def _reload_db(self) -> None:
        found = _kv(self.client, DB_KV)
        if found is None:
            return
        version, data = found
        alive = self._conn is not None and not self._conn.closed and not self._conn.broken
        if version == self.db_version and alive:
            return
        new = psycopg.connect(self.pg_uri, dbname=self.database, user=data["username"], password=data["password"],
                              application_name=DB_CONSUMER, autocommit=True, connect_timeout=5)
        old, self._conn = self._conn, new  # connected as the new user before the old connection closes
        self.db_version, self.db_user = version, data["username"]
        if old is not None:
            old.close()

    def _reload_tls(self) -> None:
        found = _kv(self.client, TLS_KV)
        if found is None or found[0] == self.tls.version:
            return
        version, data = found
        cert, key = Path(self._dir) / f"{version}.crt", Path(self._dir) / f"{version}.key"
        cert.write_text(data["certificate"])
        key.touch(0o600)
        key.write_text(data["private_key"])
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        with self._lock:
            self.tls = _Served(version=version, context=context, serial=data.get("serial", ""))
        cert.unlink(missing_ok=True)
        key.unlink(missing_ok=True)

    def _reload_key(self) -> None:
        found = _kv(self.client, API_KEY_KV)
        if found is None or found[0] == self.key_version:
            return
        version, data = found
        self.key_version, self.fingerprint = version, fingerprint_of(data["api_key"])

    # ------------------------------------------------------------------ the TLS endpoint
    def make_tls_server(self) -> ThreadingHTTPServer:
        demo = self

        class Handler(BaseHTTPRequestHandler):
            timeout = 10  # a client that connects and says nothing does not hold a thread for ever

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                served = demo.tls
                body = (f"{TLS_CN} over TLS: certificate serial {served.serial} (secret/{TLS_KV} "
                        f"v{served.version})\n").encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet: probed every second
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def get_request(self) -> tuple[Any, Any]:
                conn, addr = self.socket.accept()
                with demo._lock:
                    context = demo.tls.context
                if context is None:
                    conn.close()
                    raise OSError("no certificate yet")
                # the certificate of this moment; the handshake runs in the request's thread
                return context.wrap_socket(conn, server_side=True, do_handshake_on_connect=False), addr

            def handle_error(self, request: Any, client_address: Any) -> None:  # a failed handshake: not our news
                pass

        return Server((self.host, self.tls_port), Handler)

    def run(self, stop_event: threading.Event, interval: float = 1.0) -> None:
        self.demo.mkdir(parents=True, exist_ok=True)
        self.reload()
        server = self.make_tls_server()
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
        thread.start()
        try:
            while not stop_event.wait(interval):
                if not self.stuck():
                    self.reload()
        finally:
            server.shutdown()
            server.server_close()
            if self._conn is not None:
                with contextlib.suppress(psycopg.Error):
                    self._conn.close()

