"""Who approves: identities verified from OpenID Connect ID tokens, and the people behind aliases.

An approval carries an ID token (a JWT) from the organisation's identity provider. The worker verifies it (an
activity: activities/identity.py) and the gate counts the verified identity, never a typed name:

- ``subject`` (``sub``), ``name`` (the claim named by ``username_claim``), ``groups`` (``groups_claim``), the
  ``issuer``, and a ``token_id``: the token's ``jti``, or, for providers that issue none (OpenBao), a digest of its
  signed header and claims (not of the signature, which ECDSA lets a holder re-encode);
- a token is accepted at most once per run (``token_id``), and only while valid at the run's own clock.

``People`` maps the identities a person has on other channels (``slack:U0PLATFORM1``) to that person, so that one
person with two names is one approver, and says which service identities (the Slack gateway) may vouch for which
alias namespaces. Pure data and functions: no client library.
"""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Via = Literal["cli", "slack", "ui", "api"]

# The standard claim names (OpenID Connect Core 5.1; "groups" is the de-facto name used by Okta, Keycloak, Entra ID
# with groupMembershipClaims, Google via Cloud Identity, and Vault/OpenBao role templates).
DEFAULT_USERNAME_CLAIM = "preferred_username"
DEFAULT_GROUPS_CLAIM = "groups"


class OidcConfig(BaseModel):
    """How the worker verifies approvers' ID tokens."""

    model_config = ConfigDict(extra="forbid")

    issuer: str = Field(description="the provider's issuer URL; its discovery document gives the JWKS")
    audience: str = Field(description="the client id the tokens are issued for (the `aud` claim)")
    username_claim: str = DEFAULT_USERNAME_CLAIM
    groups_claim: str = DEFAULT_GROUPS_CLAIM
    jwks_url: str | None = Field(None, description="default: jwks_uri from the issuer's discovery document")
    leeway_seconds: int = Field(30, ge=0, le=300, description="clock skew allowed on exp/nbf/iat")
    algorithms: list[str] = Field(default_factory=lambda: ["RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "EdDSA"])


class VerifyTokenInput(BaseModel):
    token: str = Field(repr=False)
    now: datetime = Field(description="the run's clock: expiry and not-before are judged against it")
    via: Via = "cli"
    claimed: str = Field("", description="the typed approver name: used only by a worker without OIDC (unverified)")


class VerifiedIdentity(BaseModel):
    """An approver as the identity provider vouches for them (no raw token)."""

    subject: str
    name: str
    groups: list[str] = Field(default_factory=list)
    issuer: str
    token_id: str
    expires_at: datetime
    via: Via = "cli"
    on_behalf_of: str | None = Field(None, description="an alias a service identity vouched for (slack:U...)")
    verified: bool = Field(True, description="False: a worker without OIDC took the typed name as it came")

    @property
    def person(self) -> str:
        return self.name


def unverified_identity(name: str, via: Via, now: datetime) -> VerifiedIdentity:
    """The typed name as it came, marked unverified (a worker without OIDC; a UI approval the policy lets in)."""
    return VerifiedIdentity(subject=name, name=name, issuer="", token_id="", expires_at=now, via=via, verified=False)


def token_id(token: str, claims: dict) -> str:
    """The token's ``jti``, or a digest of its signed header and claims (stable under signature re-encoding)."""
    if isinstance(claims.get("jti"), str) and claims["jti"]:
        return claims["jti"]
    signing_input = ".".join(token.split(".")[:2])
    return "sha256:" + hashlib.sha256(signing_input.encode()).hexdigest()[:32]


def unverified_claims(token: str) -> dict:
    """The claims of a JWT WITHOUT checking anything: for messages only (e.g. "expired at ...")."""
    try:
        payload = token.split(".")[1]
        return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return {}


class People(BaseModel):
    """Aliases of people on other channels, and who may vouch for them (from the catalog's groups.yaml)."""

    model_config = ConfigDict(extra="forbid")

    aliases: dict[str, list[str]] = Field(default_factory=dict, description="person -> aliases, e.g. slack:U0ALICE")
    vouchers: dict[str, list[str]] = Field(
        default_factory=dict, description="service identity (token name) -> alias namespaces it may vouch for"
    )

    def person_of(self, alias: str) -> str | None:
        for person, known in self.aliases.items():
            if alias in known or alias == person:
                return person
        return None

    def person(self, name: str) -> str:
        """The person behind a name or alias; a name nobody claims is a person of its own."""
        return self.person_of(name) or name

    def may_vouch(self, service: str, alias: str) -> bool:
        namespace = alias.split(":", 1)[0] if ":" in alias else ""
        return bool(namespace) and namespace in self.vouchers.get(service, [])

    def is_service(self, name: str) -> bool:
        return name in self.vouchers


def approver_of(identity: VerifiedIdentity, on_behalf_of: str | None, people: People) -> tuple[str, list[str], str | None]:
    """(person, identity-provider groups, refusal) for an identity the worker has checked.

    A service identity (the Slack gateway) approves only on behalf of an alias in a namespace it may vouch for; the
    approver is then the person behind the alias, with no identity-provider groups (the token's groups are the
    service's). Anyone else is the person behind the token's name, with the token's groups.
    """
    if on_behalf_of:
        if not people.may_vouch(identity.name, on_behalf_of):
            namespace = on_behalf_of.split(":", 1)[0] if ":" in on_behalf_of else on_behalf_of
            return "", [], f"{identity.name} may not vouch for {namespace!r} identities ({on_behalf_of})"
        return people.person(on_behalf_of), [], None
    if people.is_service(identity.name):
        return "", [], f"{identity.name} is a service identity: it approves only on behalf of a person (on_behalf_of)"
    return people.person(identity.name), list(identity.groups), None
