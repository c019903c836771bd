"""Stand-ins for secret rotation, shared by its tests and the failure matrix: OpenBao's real database engine set up
on a real PostgreSQL, and a consumer.

The consumer is what a service with a Vault-agent-style reload does: it reads its credential from KV v2, holds a
connection as that user (its ``application_name`` is what pg_stat_activity shows) and, when a new version appears,
connects as the new user before closing the old connection. It records whether the old connection still answered
at the moment it switched (both credentials valid during the overlap). ``frozen`` stops it from reloading.
"""

from __future__ import annotations

import threading
import uuid
from typing import Any

import hvac
import psycopg
from psycopg.conninfo import conninfo_to_dict

from core.restore import PgServer

ADMIN_VAULT_PATH = "secret/db/rotation-admin"
MOUNT = "database"
_configured: set[tuple[str, str]] = set()
_lock = threading.Lock()


def newest(vault: hvac.Client, path: str) -> tuple[int, dict[str, str]]:
    """(version, data) of the newest version of KV ``path`` (below secret/): what every consumer here follows."""
    resp = vault.secrets.kv.v2.read_secret_version(path=path, mount_point="secret", raise_on_deleted_version=True)
    return int(resp["data"]["metadata"]["version"]), resp["data"]["data"]


def configure_engine(vault: hvac.Client, pg_uri: str) -> None:
    """Mount the database engine and point its connection ``pg`` at the server (once per OpenBao and server)."""
    info = conninfo_to_dict(pg_uri)
    port = int(info.get("port", 5432))
    with _lock:
        if (str(vault.url), pg_uri) in _configured:
            return
        if f"{MOUNT}/" not in vault.sys.list_mounted_secrets_engines()["data"]:
            vault.sys.enable_secrets_engine("database", path=MOUNT)
        vault.secrets.database.configure(
            "pg", "postgresql-database-plugin", mount_point=MOUNT, allowed_roles=["*"], verify_connection=True,
            connection_url=(f"host={info['host']} port={port} user={{{{username}}}} password={{{{password}}}} "
                            "dbname=postgres sslmode=disable"),
            username=info.get("user", "postgres"), password="unused-by-trust-auth",
        )
        _configured.add((str(vault.url), pg_uri))


def seed_credential(vault: hvac.Client, role: str, path: str) -> dict[str, str]:
    """A first credential issued from ``role``, written to KV ``path`` (below secret/) as a deploy would have."""
    creds = vault.secrets.database.generate_credentials(role, mount_point=MOUNT)
    data = {"username": creds["data"]["username"], "password": creds["data"]["password"], "lease_id": creds["lease_id"]}
    vault.secrets.kv.v2.create_or_update_secret(path=path, mount_point="secret", secret=data)
    return data


def make_role(vault: hvac.Client, name: str) -> str:
    vault.secrets.database.create_role(
        name, "pg", mount_point=MOUNT, default_ttl="24h", max_ttl="720h",
        creation_statements=["CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';"],
    )
    return name


def can_login(server: PgServer, user: str, password: str) -> bool:
    try:
        with psycopg.connect(host=server.host, port=server.port, dbname="postgres", user=user, password=password,
                             connect_timeout=5) as conn:
            return conn.execute("SELECT current_user").fetchone() == (user,)
    except psycopg.OperationalError:
        return False


def role_exists(server: PgServer, user: str) -> bool:
    with psycopg.connect(host=server.host, port=server.port, dbname="postgres", user="postgres", autocommit=True) as conn:
        return conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (user,)).fetchone() is not None


class Consumer:
    def __init__(self, vault: hvac.Client, server: PgServer, kv_path: str, name: str | None = None) -> None:
        self.vault, self.server, self.kv_path = vault, server, kv_path.removeprefix("secret/")
        self.name = name or f"app-{uuid.uuid4().hex[:6]}"
        self.frozen = threading.Event()
        self.stop = threading.Event()
        self.version: Any = 0
        self.user = ""
        self.switches: list[tuple[str, str, bool]] = []  # (from user, to user, old connection answered then)
        self.passwords: set[str] = set()  # every password it read: the test searches the history for them
        self.errors: list[str] = []
        self._conn: psycopg.Connection | None = None
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> "Consumer":
        self._reload()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self._thread.join(10)
        if self._conn is not None:
            self._conn.close()

    def _source(self) -> tuple[Any, dict[str, str]]:
        """(a marker that changes when the credential may have changed, the credential)."""
        return newest(self.vault, self.kv_path)

    def _reload(self) -> None:
        version, data = self._source()
        if version == self.version:
            return
        self.passwords.add(data["password"])
        new = psycopg.connect(host=self.server.host, port=self.server.port, dbname="postgres", user=data["username"],
                              password=data["password"], application_name=self.name, autocommit=True)
        old, before = self._conn, self.user
        old_ok = False
        if old is not None:
            try:
                old_ok = old.execute("SELECT 1").fetchone() == (1,)
            except psycopg.Error:
                old_ok = False
            old.close()
            self.switches.append((before, data["username"], old_ok))
        self._conn, self.user, self.version = new, data["username"], version

    def _loop(self) -> None:
        while not self.stop.wait(0.1):
            if self.frozen.is_set():
                continue
            try:
                self._reload()
            except Exception as err:  # noqa: BLE001 - recorded for the test to show
                self.errors.append(f"{type(err).__name__}: {err}")


PKI_MOUNT = "pki"


def configure_pki(vault: hvac.Client) -> None:
    """The PKI engine with an internal root and a role for *.shop.test (once per OpenBao)."""
    with _lock:
        if (str(vault.url), "pki") in _configured:
            return
        if f"{PKI_MOUNT}/" not in vault.sys.list_mounted_secrets_engines()["data"]:
            vault.sys.enable_secrets_engine("pki", path=PKI_MOUNT, config={"max_lease_ttl": "87600h"})
            vault.write_data(f"{PKI_MOUNT}/root/generate/internal", data={"common_name": "shop.test root", "ttl": "87600h"})
        vault.write_data(f"{PKI_MOUNT}/roles/web", data={"allowed_domains": ["shop.test"], "allow_subdomains": True,
                                                         "max_ttl": "8760h", "ttl": "8760h"})
        _configured.add((str(vault.url), "pki"))


class TlsEndpoint:
    """A TLS endpoint that serves the certificate in KV ``path`` and picks up a new version for the next handshake
    (as a proxy that watches its certificate source does)."""

    def __init__(self, vault: hvac.Client, path: str) -> None:
        import socket
        import tempfile

        self.vault, self.path = vault, path.removeprefix("secret/")
        self.frozen = threading.Event()
        self.stop = threading.Event()
        self.version: Any = 0
        self.reloads = 0
        self.dir = tempfile.mkdtemp(prefix="tls-")
        self._context: Any = None
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.2)
        self.endpoint = f"127.0.0.1:{self._sock.getsockname()[1]}"
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> "TlsEndpoint":
        self._reload()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self._thread.join(10)
        self._sock.close()

    def _source(self) -> tuple[Any, dict[str, str]]:
        """(a marker that changes with the certificate, {certificate, private_key})."""
        return newest(self.vault, self.path)

    def _reload(self) -> None:
        import ssl
        from pathlib import Path

        version, data = self._source()
        if version == self.version:
            return
        self.reloads += 1
        cert, key = Path(self.dir) / f"{self.reloads}.crt", Path(self.dir) / f"{self.reloads}.key"
        cert.write_text(data["certificate"])
        key.write_text(data["private_key"])
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self._context, self.version = context, version

    def _serve(self) -> None:
        import socket

        while not self.stop.is_set():
            if not self.frozen.is_set():
                try:
                    self._reload()
                except Exception:  # noqa: BLE001 - keeps serving the certificate it has
                    pass
            try:
                conn, _ = self._sock.accept()
            except (TimeoutError, socket.timeout):
                continue
            try:
                conn.settimeout(5)
                with self._context.wrap_socket(conn, server_side=True):
                    pass
            except OSError:
                conn.close()


class KeyConsumer:
    """A service that reads its API key from KV (reloading a new version) and reports the fingerprint of the key it
    uses at ``url`` (``{"api_key": "sha256:..."}``), as a health or info endpoint would."""

    def __init__(self, vault: hvac.Client, path: str) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        from core.rotation import fingerprint_of

        self.vault, self.path = vault, path.removeprefix("secret/")
        self.frozen = threading.Event()
        self.stop = threading.Event()
        self.keys: set[str] = set()
        self.fingerprint = ""
        consumer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the http.server API
                body = ('{"api_key": "%s"}' % consumer.fingerprint).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self._fp = fingerprint_of
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/info"
        self._threads = [threading.Thread(target=self._server.serve_forever, daemon=True),
                         threading.Thread(target=self._loop, daemon=True)]

    def __enter__(self) -> "KeyConsumer":
        self._reload()
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self._server.shutdown()
        self._server.server_close()

    def _source(self) -> dict[str, str]:
        return newest(self.vault, self.path)[1]

    def _reload(self) -> None:
        data = self._source()
        self.keys.add(data["api_key"])
        self.fingerprint = self._fp(data["api_key"])

    def _loop(self) -> None:
        while not self.stop.wait(0.1):
            if not self.frozen.is_set():
                try:
                    self._reload()
                except Exception:  # noqa: BLE001 - keeps the key it has
                    pass


# ---------------------------------------------------------------------------------------- rollout through Kubernetes
def secret_data(fake: Any, namespace: str, name: str) -> dict[str, str]:
    """A Secret's data in the Kubernetes fake, decoded (what a pod mounting it reads)."""
    import base64

    obj = fake.get("secrets", namespace, name) or {}
    return {k: base64.b64decode(v).decode() for k, v in (obj.get("data") or {}).items()}


def restarted_at(fake: Any, namespace: str, name: str) -> str:
    obj = fake.get("deployments", namespace, name) or {}
    annotations = obj.get("spec", {}).get("template", {}).get("metadata", {}).get("annotations") or {}
    return str(annotations.get("kubectl.kubernetes.io/restartedAt", ""))


class PodConsumer(Consumer):
    """A consumer Deployment's pods in the Kubernetes fake: they read the credential from the mounted Secret when
    they start, i.e. only when the Deployment is restarted (its restartedAt changes); ``frozen``: new pods keep the
    old connection (an app that caches its credential elsewhere)."""

    def __init__(self, vault: hvac.Client, server: PgServer, fake: Any, namespace: str, deployment: str,
                 secret: str) -> None:
        super().__init__(vault, server, "", name=deployment)
        self.fake, self.namespace, self.deployment, self.secret = fake, namespace, deployment, secret

    def _source(self) -> tuple[Any, dict[str, str]]:
        return (restarted_at(self.fake, self.namespace, self.deployment) or "first start",
                secret_data(self.fake, self.namespace, self.secret))


class SecretTlsEndpoint(TlsEndpoint):
    """An ingress that terminates TLS with a kubernetes.io/tls Secret of the fake and reloads it when it changes."""

    def __init__(self, vault: hvac.Client, fake: Any, namespace: str, secret: str) -> None:
        super().__init__(vault, "")
        self.fake, self.namespace, self.secret = fake, namespace, secret

    def _source(self) -> tuple[Any, dict[str, str]]:
        data = secret_data(self.fake, self.namespace, self.secret)
        return (data.get("tls.crt"), {"certificate": data["tls.crt"], "private_key": data["tls.key"]})


class PodKeyConsumer(KeyConsumer):
    """An API-key consumer Deployment in the Kubernetes fake: its pods read ``api_key`` from the mounted Secret when
    they start, i.e. when the Deployment is restarted."""

    def __init__(self, vault: hvac.Client, fake: Any, namespace: str, deployment: str, secret: str) -> None:
        super().__init__(vault, "")
        self.fake, self.namespace, self.deployment, self.secret = fake, namespace, deployment, secret
        self._started: str | None = None
        self._data: dict[str, str] = {}

    def _source(self) -> dict[str, str]:
        stamp = restarted_at(self.fake, self.namespace, self.deployment)
        if stamp != self._started:
            self._started, self._data = stamp, secret_data(self.fake, self.namespace, self.secret)
        return self._data
