"""Fixtures of the provisioning tests: the provider-free modules and a Terraform root per test."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

MODULES = Path(__file__).parent / "modules"

os.environ.setdefault("CHECKPOINT_DISABLE", "1")


@pytest.fixture
def tf_root(tmp_path: Path) -> Path:
    return tmp_path / "terraform"


@pytest.fixture(scope="session")
def _kube_session():
    from tests.fakes.kubernetes import kube_fake

    with kube_fake() as handle:
        yield handle


@pytest.fixture
def kube(_kube_session):
    _kube_session.fake.reset()
    return _kube_session
