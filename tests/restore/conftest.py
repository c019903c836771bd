"""Fixtures for restore drills: a seeded source database on the real PostgreSQL, its real pg_dump, S3 and Vault."""

from __future__ import annotations

import json
import subprocess
import uuid
from datetime import datetime, timedelta, timezone
from typing import Iterator

import hvac
import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from activities.database import DatabaseActivities, default_pg_bin_dir
from activities.vault import VaultReader
from core.restore import PgDatabaseRef, PgServer
from tests import aws_session

VAULT_PATH = "secret/db/restore-drill"
DUMP_BUCKET = "drill-dumps"
REPORT_BUCKET = "drill-reports"


@pytest.fixture(scope="session")
def pg_server(postgres: str, openbao: tuple[str, str]) -> PgServer:
    """The embedded server as a PgServer whose credentials live in OpenBao (seeded with hvac directly)."""
    info = conninfo_to_dict(postgres)
    addr, token = openbao
    hvac.Client(url=addr, token=token).secrets.kv.v2.create_or_update_secret(
        path="db/restore-drill", secret={"username": info.get("user", "postgres"), "password": "not-checked-by-trust-auth"},
        mount_point="secret",
    )
    return PgServer(host=info["host"], port=int(info.get("port", 5432)), vault_path=VAULT_PATH)


@pytest.fixture(scope="session")
def admin_uri(postgres: str) -> str:
    return postgres


def connect(uri: str, dbname: str | None = None) -> psycopg.Connection:
    info = conninfo_to_dict(uri)
    if dbname:
        info["dbname"] = dbname
    return psycopg.connect(**info, autocommit=True)


def database_exists(uri: str, name: str) -> bool:
    with connect(uri) as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None


class SourceDb:
    """A seeded source database: orders (newest write ``newest``), customers; plus its dump and manifest."""

    def __init__(self, uri: str, name: str, newest: datetime, orders: int = 200, customers: int = 20) -> None:
        self.uri, self.name, self.newest = uri, name, newest
        self.counts = {"orders": orders, "customers": customers}
        with connect(uri) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        with connect(uri, name) as conn:
            conn.execute("CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL)")
            conn.execute("CREATE TABLE orders (id int PRIMARY KEY, customer_id int REFERENCES customers(id),"
                         " amount numeric(10,2) NOT NULL, updated_at timestamptz NOT NULL)")
            conn.execute("INSERT INTO customers SELECT g, 'c' || g FROM generate_series(1, %s) g", (customers,))
            conn.execute(
                "INSERT INTO orders SELECT g, 1 + g %% %s, g * 1.5, %s - make_interval(secs => %s - g)"
                " FROM generate_series(1, %s) g", (customers, newest, orders, orders),
            )
            self.checksum = conn.execute(
                "SELECT md5(string_agg(id || ':' || amount, ',' ORDER BY id)) FROM orders").fetchone()[0]

    def dump(self) -> bytes:
        info = conninfo_to_dict(self.uri)
        out = subprocess.run(
            [str(default_pg_bin_dir() / "pg_dump"), "-Fc", "-h", info["host"], "-p", str(info.get("port", 5432)),
             "-U", info.get("user", "postgres"), "-d", self.name],
            check=True, capture_output=True,
        )
        return out.stdout

    def manifest(self, backup_time: datetime) -> dict:
        return {"backup_time": backup_time.isoformat(), "row_counts": dict(self.counts),
                "checksums": {"orders_checksum": self.checksum}}

    def drop(self) -> None:
        with connect(self.uri) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(self.name)))


@pytest.fixture(scope="session")
def source_db(postgres: str) -> Iterator[SourceDb]:
    """Newest write 2 minutes before now: within every policy's RPO once dumped."""
    db = SourceDb(postgres, "shop_fresh", datetime.now(timezone.utc) - timedelta(minutes=2))
    yield db
    db.drop()


@pytest.fixture
def rds_source(postgres: str) -> Iterator[SourceDb]:
    """A source database of its own per RDS test, newest write 2 minutes before now. An RDS drill clones it as the
    snapshot's data and measures RPO against a snapshot taken now, so the session's ``source_db`` (newest write at
    the start of a long session) would breach tier-1's 5 minutes on a busy machine."""
    db = SourceDb(postgres, f"shop_rds_{uuid.uuid4().hex[:8]}", datetime.now(timezone.utc) - timedelta(minutes=2))
    yield db
    db.drop()


@pytest.fixture(scope="session")
def stale_db(postgres: str) -> Iterator[SourceDb]:
    """Newest write 40 minutes before now: an RPO breach for every policy."""
    db = SourceDb(postgres, "shop_stale", datetime.now(timezone.utc) - timedelta(minutes=40))
    yield db
    db.drop()


@pytest.fixture(scope="session")
def fresh_dump(source_db: SourceDb) -> bytes:
    return source_db.dump()


@pytest.fixture
def s3(aws: str):
    client = aws_session.client("s3")
    for bucket in (DUMP_BUCKET, REPORT_BUCKET):
        client.create_bucket(Bucket=bucket)
    return client


def upload_dump(s3, key: str, data: bytes, manifest: dict | None = None) -> None:
    s3.put_object(Bucket=DUMP_BUCKET, Key=key, Body=data)
    if manifest is not None:
        s3.put_object(Bucket=DUMP_BUCKET, Key=f"{key}.manifest.json", Body=json.dumps(manifest).encode())


@pytest.fixture
def db_activities(s3, pg_server: PgServer) -> DatabaseActivities:
    return DatabaseActivities(s3, VaultReader.from_env(), default_pg_bin_dir())


@pytest.fixture
def scratch_name() -> str:
    return f"scratch_{uuid.uuid4().hex[:10]}"


def ref(server: PgServer, database: str) -> PgDatabaseRef:
    return PgDatabaseRef(server=server, database=database)
