"""One boto3 Session per test process, and its clients, for the activities' ``AwsClients`` and the tests' own calls.

A new ``boto3.Session`` parses botocore's JSON service models again for every client it creates (about 0.4 s of CPU
each for RDS, CloudWatch or EC2), and even on one session a new client costs about 0.1 s (its event hooks are
copied), so a test that built ``AwsClients()`` or called ``boto3.client(...)`` in a helper paid that again and again.
A session reads the endpoint (``AWS_ENDPOINT_URL``: the session's moto server) and the region when it creates a
client, so one session follows whatever moto server the test process runs; ``client`` keys its cache on the endpoint
too. boto3 clients are thread-safe (activities run in threads)."""

from __future__ import annotations

import functools
import os
import threading
from typing import Any

import boto3

_lock = threading.Lock()
_clients: dict[tuple[str, str | None, str | None], Any] = {}
_activity_clients: dict[str | None, Any] = {}


@functools.cache
def session() -> boto3.Session:
    return boto3.Session()


def client(service: str, region_name: str | None = None) -> Any:
    """``boto3.client(service, region_name=...)``, created once per process (and endpoint)."""
    key = (service, region_name or session().region_name, os.environ.get("AWS_ENDPOINT_URL"))
    with _lock:
        if key not in _clients:
            _clients[key] = session().client(service, region_name=key[1])
        return _clients[key]


def activity_clients() -> Any:
    """The activities' ``AwsClients`` on this session, one per process (and endpoint): a fixture that builds
    ``AwsClients(session())`` for every test builds every client its activities use again (RDS in two regions,
    Route53, CloudWatch: ~17 ms of CPU a test in tests/failover)."""
    from activities.aws import AwsClients

    endpoint = os.environ.get("AWS_ENDPOINT_URL")
    with _lock:
        if endpoint not in _activity_clients:
            _activity_clients[endpoint] = AwsClients(session())
        return _activity_clients[endpoint]
