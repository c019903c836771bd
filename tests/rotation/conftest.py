"""Fixtures for secret rotation: OpenBao's real database engine on the embedded PostgreSQL (tests/rotation/stand_ins.py
has the consumer)."""

from __future__ import annotations

import uuid
from typing import Iterator

import hvac
import pytest
from psycopg.conninfo import conninfo_to_dict

from core.restore import PgServer
from tests.rotation.stand_ins import ADMIN_VAULT_PATH, configure_engine, make_role, seed_credential


@pytest.fixture(scope="session")
def vault(openbao: tuple[str, str]) -> hvac.Client:
    addr, token = openbao
    return hvac.Client(url=addr, token=token)


@pytest.fixture(scope="session")
def db_engine(vault: hvac.Client, postgres: str) -> PgServer:
    """The database engine configured against the embedded server (its superuser; trust auth on the socket)."""
    info = conninfo_to_dict(postgres)
    port = int(info.get("port", 5432))
    configure_engine(vault, postgres)
    vault.secrets.kv.v2.create_or_update_secret(
        path="db/rotation-admin", mount_point="secret",
        secret={"username": info.get("user", "postgres"), "password": "unused-by-trust-auth"})
    return PgServer(host=info["host"], port=port, vault_path=ADMIN_VAULT_PATH)


@pytest.fixture
def seeded(vault: hvac.Client, db_engine: PgServer) -> Iterator[tuple[str, str]]:
    """A fresh role and a KV path holding a first credential issued from it (as a deploy would have): (role, path)."""
    role = make_role(vault, f"app-{uuid.uuid4().hex[:6]}")
    path = f"apps/{role}/db"
    seed_credential(vault, role, path)
    yield role, f"secret/{path}"
