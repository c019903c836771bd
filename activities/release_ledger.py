"""The release ledger in PostgreSQL (psycopg 3): per service and environment the versions a release judged.

``ReleaseLedgerActivities(dsn)``:
- ``ledger_read``: every verdict on a service, read as ``core.release.ledger_view`` (last known good per
  environment, versions marked bad);
- ``ledger_record``: one verdict; idempotent: the row's key is (service, environment, version, verdict, run), so a
  retried activity or a replayed run writes it once.

The table (``release_ledger``) is created on first use. The DSN is configuration (``RUNBOOK_RELEASE_LEDGER_DSN``),
never a workflow input.
"""

from __future__ import annotations

import psycopg
from temporalio import activity
from temporalio.exceptions import ApplicationError

from core import errors
from core.release import LedgerEntry, LedgerQuery, LedgerRow, LedgerView, ledger_view

SCHEMA = """
CREATE TABLE IF NOT EXISTS release_ledger (
    service     text NOT NULL,
    environment text NOT NULL,
    version     text NOT NULL,
    verdict     text NOT NULL CHECK (verdict IN ('good', 'bad')),
    workflow_id text NOT NULL,
    reason      text NOT NULL DEFAULT '',
    at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (service, environment, version, verdict, workflow_id)
)
"""


class ReleaseLedgerActivities:
    def __init__(self, dsn: str | None) -> None:
        self._dsn = dsn
        self._ready = False

    def _connect(self) -> psycopg.Connection:
        if not self._dsn:
            raise ApplicationError("no release ledger is configured: set RUNBOOK_RELEASE_LEDGER_DSN on the worker "
                                   "(a PostgreSQL connection string)", type=errors.INVALID_INPUT, non_retryable=True)
        try:
            conn = psycopg.connect(self._dsn, connect_timeout=10)
        except psycopg.OperationalError as err:
            raise ApplicationError(f"release ledger unreachable: {err}".strip(), type=errors.TRANSIENT) from err
        if not self._ready:
            with conn.transaction():
                conn.execute(SCHEMA)
            self._ready = True
        return conn

    @activity.defn(name="ledger_read")
    def ledger_read(self, req: LedgerQuery) -> LedgerView:
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT service, environment, version, verdict, workflow_id, reason, at FROM release_ledger "
                "WHERE service = %s ORDER BY at", (req.service,)
            ).fetchall()
        return ledger_view(req.service, [
            LedgerRow(service=r[0], environment=r[1], version=r[2], verdict=r[3], workflow_id=r[4], reason=r[5],
                      at=r[6]) for r in rows
        ])

    @activity.defn(name="ledger_record")
    def ledger_record(self, entry: LedgerEntry) -> bool:
        """True if this call wrote the row, False if it was there already (a retry)."""
        with self._connect() as conn:
            cur = conn.execute(
                "INSERT INTO release_ledger (service, environment, version, verdict, workflow_id, reason) "
                "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                (entry.service, entry.environment, entry.version, entry.verdict, entry.workflow_id, entry.reason),
            )
            return cur.rowcount == 1
