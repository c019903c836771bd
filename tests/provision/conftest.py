"""Fixtures of the provisioning tests: the provider-free modules and a Terraform root per test."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

MODULES = Path(__file__).parent / "modules"

os.environ.setdefault("CHECKPOINT_DISABLE", "1")


@pytest.fixture(autouse=True)
def _terraform_without_gc(monkeypatch: pytest.MonkeyPatch) -> None:
    """Terraform started by these tests runs without Go's garbage collector (``GOGC=off``, in the environment the
    adapter copies): each of the ~280 commands of tests/provision/test_endings.py lives well under a second on a tiny,
    provider-free module (at most about 50 MB of memory, with the collector or without) and spent a fifth of its CPU
    collecting while it started. Only for the test's own duration: the session's Go servers (OpenBao, the Temporal
    dev server), started before it, keep their collector."""
    monkeypatch.setenv("GOGC", "off")


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
