"""Fixtures of the Kubernetes tests: one fake API server per session, emptied before each test."""

from __future__ import annotations

from typing import Iterator

import pytest

from tests.fakes.kubernetes import KubeHandle, kube_fake


@pytest.fixture(scope="session")
def _kube_session() -> Iterator[KubeHandle]:
    with kube_fake() as handle:
        yield handle


@pytest.fixture
def kube(_kube_session: KubeHandle) -> KubeHandle:
    """(fake, ApiClient): the fake API server, reset, and a real client pointed at it."""
    _kube_session.fake.reset()
    return _kube_session
