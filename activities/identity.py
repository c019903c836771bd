"""Verifying approvers' OpenID Connect ID tokens against the issuer's published keys (JWKS).

``IdentityActivities.verify_id_token`` is called by a run's approval handlers before a gate counts an approval. It
checks the signature (by ``kid``, refetching the JWKS once for an unknown key: providers rotate), the algorithm
(never ``none``, only the configured asymmetric ones), the issuer, the audience, and expiry / not-before / issued-at
against the RUN's clock (passed in, so a replay judges the same way). A refusal is one line naming the reason and
is not retried; an unreachable JWKS is retried. Any standard provider works: Okta, Entra ID, Google, Keycloak,
Vault/OpenBao (whose tokens carry no ``jti``: see core.identity.token_id).
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import jwt
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.http_checks import http_client
from core import errors
from core.identity import (
    OidcConfig,
    VerifiedIdentity,
    VerifyTokenInput,
    token_id,
    unverified_claims,
    unverified_identity,
)

TOKEN_REFUSED = "TokenRefused"


def _refuse(reason: str) -> ApplicationError:
    return ApplicationError(f"token refused: {reason}", type=TOKEN_REFUSED, non_retryable=True)


class JwksCache:
    """The issuer's keys by ``kid``, fetched on first use and again when a token names a key not seen yet."""

    def __init__(self, config: OidcConfig, http: httpx.Client | None = None) -> None:
        self._config = config
        self._http = http or http_client(timeout=10.0)
        self._keys: dict[str, Any] = {}
        self._lock = threading.Lock()

    def _jwks_url(self) -> str:
        if self._config.jwks_url:
            return self._config.jwks_url
        discovery = self._http.get(self._config.issuer.rstrip("/") + "/.well-known/openid-configuration")
        discovery.raise_for_status()
        return discovery.json()["jwks_uri"]

    def _refresh(self) -> None:
        try:
            response = self._http.get(self._jwks_url())
            response.raise_for_status()
            jwks = jwt.PyJWKSet.from_dict(response.json())
        except (httpx.HTTPError, KeyError, ValueError, jwt.PyJWKSetError) as err:
            raise ApplicationError(f"cannot read the identity provider's keys: {err}", type=errors.TRANSIENT) from err
        self._keys = {k.key_id: k for k in jwks.keys if k.key_id}

    def key(self, kid: str) -> Any:
        with self._lock:
            if kid not in self._keys:
                self._refresh()
            found = self._keys.get(kid)
        if found is None:
            raise _refuse(f"unknown signing key {kid!r} (not in the issuer's JWKS)")
        return found


class IdentityActivities:
    def __init__(self, config: OidcConfig, keys: JwksCache | None = None) -> None:
        self._config = config
        self._keys = keys or JwksCache(config)

    @activity.defn
    def verify_id_token(self, req: VerifyTokenInput) -> VerifiedIdentity:
        return verify(self._config, self._keys, req)


class UnauthenticatedIdentity:
    """The verifier of a worker WITHOUT OpenID Connect configured (tests, a bare local run): it takes the typed
    approver name as it comes and marks it ``verified: False``. The worker logs loudly that approvals are then
    unauthenticated. It is the worker's choice, never the input's: a worker with OIDC refuses any approval without a
    valid token."""

    @activity.defn(name="verify_id_token")
    def verify_id_token(self, req: VerifyTokenInput) -> VerifiedIdentity:
        name = req.claimed.strip() or str(unverified_claims(req.token).get("preferred_username") or "")
        return unverified_identity(name, req.via, req.now)


def verify(config: OidcConfig, keys: JwksCache, req: VerifyTokenInput) -> VerifiedIdentity:
    token = req.token.strip()
    if not token:
        raise _refuse("no ID token: this worker accepts only authenticated approvals (run `runbook login`)")
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as err:
        raise _refuse(f"not a JWT ({err})") from None
    alg = header.get("alg")
    if not alg or alg.lower() == "none" or alg not in config.algorithms:
        raise _refuse(f"algorithm {alg!r} is not accepted (unsigned or not one of {', '.join(config.algorithms)})")
    kid = header.get("kid")
    if not kid:
        raise _refuse("the token names no signing key (kid)")
    key = keys.key(kid)
    try:
        claims = jwt.decode(
            token,
            key.key,
            algorithms=[alg],
            audience=config.audience,
            issuer=config.issuer,
            options={"verify_exp": False, "verify_nbf": False, "verify_iat": False,
                     "require": ["exp", "iss", "aud", "sub"]},
        )
    except jwt.InvalidAudienceError:
        raise _refuse(f"wrong audience {unverified_claims(token).get('aud')!r} (expected {config.audience!r})") from None
    except jwt.InvalidIssuerError:
        raise _refuse(f"wrong issuer {unverified_claims(token).get('iss')!r} (expected {config.issuer!r})") from None
    except jwt.InvalidSignatureError:
        raise _refuse("bad signature (tampered, or signed by another key)") from None
    except jwt.MissingRequiredClaimError as err:
        raise _refuse(f"missing claim {err.claim!r}") from None
    except jwt.PyJWTError as err:
        raise _refuse(str(err)) from None
    now = req.now if req.now.tzinfo else req.now.replace(tzinfo=timezone.utc)
    leeway = timedelta(seconds=config.leeway_seconds)
    expires = datetime.fromtimestamp(float(claims["exp"]), tz=timezone.utc)
    if now > expires + leeway:
        raise _refuse(f"expired at {expires:%Y-%m-%d %H:%M:%S} UTC (run clock {now:%Y-%m-%d %H:%M:%S} UTC)")
    for claim, what in (("nbf", "not valid before"), ("iat", "issued in the future, at")):
        if claim in claims and datetime.fromtimestamp(float(claims[claim]), tz=timezone.utc) > now + leeway:
            at = datetime.fromtimestamp(float(claims[claim]), tz=timezone.utc)
            raise _refuse(f"{what} {at:%Y-%m-%d %H:%M:%S} UTC (run clock {now:%Y-%m-%d %H:%M:%S} UTC)")
    name = claims.get(config.username_claim)
    if not isinstance(name, str) or not name:
        raise _refuse(f"no user name in claim {config.username_claim!r}")
    groups = claims.get(config.groups_claim) or []
    if isinstance(groups, str):
        groups = [groups]
    return VerifiedIdentity(
        subject=str(claims["sub"]),
        name=name,
        groups=sorted(str(g) for g in groups),
        issuer=str(claims["iss"]),
        token_id=token_id(token, claims),
        expires_at=expires,
        via=req.via,
    )
