"""One boto3 Session per test process, for the activities' ``AwsClients`` and the demo seeding of the tests.

A new ``boto3.Session`` parses botocore's JSON service models again for every client it creates (about 0.4 s of CPU
each for RDS, CloudWatch or EC2), so a test building ``AwsClients()`` for its worker paid a second or more before its
first call. A session reads the endpoint (``AWS_ENDPOINT_URL``: the session's moto server) and the region when it
creates a client, so one session follows whatever moto server the test process runs."""

from __future__ import annotations

import functools

import boto3


@functools.cache
def session() -> boto3.Session:
    return boto3.Session()
