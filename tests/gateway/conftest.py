"""Fixtures of the gateway and notification-channel tests: the Slack and PagerDuty fakes and clients on them."""

from __future__ import annotations

from typing import Iterator

import pytest

from activities.pagerduty import clients
from activities.slack import web_client
from tests.fakes.pagerduty import FakePagerDuty
from tests.fakes.slack import FakeSlack


@pytest.fixture
def fake_slack() -> Iterator[FakeSlack]:
    fake = FakeSlack().start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def fake_pd() -> Iterator[FakePagerDuty]:
    fake = FakePagerDuty().start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def slack_client(fake_slack: FakeSlack):
    return web_client(fake_slack.token, fake_slack.api_url, max_wait_seconds=5)


@pytest.fixture
def pd_clients(fake_pd: FakePagerDuty):
    return clients(fake_pd.api_token, fake_pd.routing_key, from_email="runbooks@example.com",
                   transport=fake_pd.transport())
