"""OpenBao configured as the identity provider, as the local stack configures it."""

from __future__ import annotations

import pytest

from activities.identity import IdentityActivities, JwksCache
from core.identity import OidcConfig
from starters.demo_identity import DEMO_PASSWORD, OidcSetup, id_token, setup_identity, vault_login


@pytest.fixture(scope="session")
def idp(openbao) -> OidcSetup:
    addr, root = openbao
    return setup_identity(addr, root)


@pytest.fixture(scope="session")
def oidc(idp: OidcSetup) -> OidcConfig:
    return OidcConfig(issuer=idp.issuer, audience=idp.audience)


@pytest.fixture(scope="session")
def identity(oidc: OidcConfig) -> IdentityActivities:
    return IdentityActivities(oidc, JwksCache(oidc))


@pytest.fixture(scope="session")
def token_of(openbao, idp):
    """A fresh ID token for a demo user, minted by OpenBao after the user's own login."""
    addr, _ = openbao

    def mint(user: str) -> str:
        return id_token(addr, vault_login(addr, user, DEMO_PASSWORD))

    return mint
