"""The worker decides how approvals are checked, from its settings only: with RUNBOOK_OIDC_* it verifies tokens
against the issuer, without them it passes typed names on marked unverified, and says so loudly at start."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timezone

import pytest
from temporalio import activity

from activities.identity import IdentityActivities, UnauthenticatedIdentity
from core.config import Settings
from core.identity import VerifyTokenInput
from workers.activities import identity_activities


def test_without_oidc_the_worker_takes_typed_names_marked_unverified():
    [verifier] = identity_activities(Settings(_env_file=None))
    assert activity._Definition.must_from_callable(verifier).name == "verify_id_token"
    assert isinstance(verifier.__self__, UnauthenticatedIdentity)
    who = verifier(VerifyTokenInput(token="", now=datetime.now(timezone.utc), claimed="bob"))
    assert (who.name, who.verified, who.token_id) == ("bob", False, "")


def test_with_oidc_the_worker_verifies_tokens_and_needs_an_audience(oidc):
    [verifier] = identity_activities(Settings(_env_file=None, oidc_issuer=oidc.issuer, oidc_audience=oidc.audience,
                                              oidc_groups_claim="roles"))
    assert isinstance(verifier.__self__, IdentityActivities) and verifier.__self__._config.groups_claim == "roles"
    with pytest.raises(ValueError, match="RUNBOOK_OIDC_AUDIENCE"):
        identity_activities(Settings(_env_file=None, oidc_issuer=oidc.issuer))


def test_a_worker_without_oidc_says_loudly_that_approvals_are_unauthenticated(caplog, monkeypatch):
    from workers import main

    class Stop(Exception):
        pass

    async def no_server(*args, **kwargs):
        raise Stop

    monkeypatch.setattr(main, "connect", no_server)
    with caplog.at_level(logging.WARNING, logger="runbook.worker"), pytest.raises(Stop):
        asyncio.run(main.run_worker(Settings(_env_file=None, metrics_port=None)))
    assert "APPROVALS ARE UNAUTHENTICATED" in caplog.text
