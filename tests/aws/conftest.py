"""Fixtures of the AWS activity tests: clients on the session's moto server, and the seeded demo stack."""

from __future__ import annotations

import pytest
from botocore.config import Config

from activities.aws import AwsClients
from starters.demo_aws import seed_alb
from tests import aws_session


@pytest.fixture
def clients(aws: str) -> AwsClients:
    # One attempt: a moto 500 should fail the test now, not after boto3's backoff.
    return AwsClients(aws_session.session(), config=Config(retries={"max_attempts": 1}))


@pytest.fixture
def demo(clients: AwsClients) -> dict:
    """The demo ALB (VPC, target groups, listeners :80 blue/green and :8080 stable/canary at 100/0)."""
    return seed_alb(clients.session)
