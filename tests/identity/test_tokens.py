"""ID tokens from a real OpenBao, verified the way the worker verifies approvals: each bad token is refused with a
one-line reason."""

from __future__ import annotations

import base64
import json
from datetime import datetime, timedelta, timezone

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from temporalio.exceptions import ApplicationError

from activities.identity import JwksCache, verify
from core.identity import OidcConfig, VerifyTokenInput, unverified_claims


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _refusal(oidc: OidcConfig, token: str, now: datetime | None = None) -> str:
    with pytest.raises(ApplicationError) as refused:
        verify(oidc, JwksCache(oidc), VerifyTokenInput(token=token, now=now or _now()))
    assert refused.value.type == "TokenRefused" and refused.value.non_retryable
    return refused.value.message


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_a_valid_token_gives_the_verified_person_and_groups(oidc, token_of):
    token = token_of("carol")
    who = verify(oidc, JwksCache(oidc), VerifyTokenInput(token=token, now=_now(), via="cli"))
    assert who.name == "carol" and who.groups == ["security-team"] and who.issuer == oidc.issuer
    assert who.subject == unverified_claims(token)["sub"] and who.token_id.startswith("sha256:")
    again = verify(oidc, JwksCache(oidc), VerifyTokenInput(token=token, now=_now()))
    assert again.token_id == who.token_id  # the same token is recognised when it comes back (replay)


def test_expired_and_future_dated_tokens_are_judged_at_the_runs_clock(oidc, token_of):
    token = token_of("alice")
    exp = datetime.fromtimestamp(unverified_claims(token)["exp"], tz=timezone.utc)
    assert "expired at" in _refusal(oidc, token, now=exp + timedelta(minutes=5))
    iat = datetime.fromtimestamp(unverified_claims(token)["iat"], tz=timezone.utc)
    assert "issued in the future" in _refusal(oidc, token, now=iat - timedelta(minutes=5))


def test_wrong_issuer_and_wrong_audience(oidc, token_of):
    token = token_of("alice")
    jwks = JwksCache(oidc)._jwks_url()
    other_issuer = oidc.model_copy(update={"issuer": "https://idp.example.com", "jwks_url": jwks})
    assert "wrong issuer" in _refusal(other_issuer, token)
    assert "wrong audience" in _refusal(oidc.model_copy(update={"audience": "another-client"}), token)


def test_tampered_unsigned_and_foreign_key_tokens(oidc, token_of):
    header, payload, signature = token_of("dave").split(".")
    claims = unverified_claims(token_of("dave"))
    promoted = _b64({**claims, "groups": ["security-team"]})
    assert "bad signature" in _refusal(oidc, f"{header}.{promoted}.{signature}")
    assert "algorithm 'none'" in _refusal(oidc, f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{payload}.")
    foreign = ec.generate_private_key(ec.SECP256R1())
    kid = json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))["kid"]
    forged = jwt.encode(claims, foreign, algorithm="ES256", headers={"kid": "not-a-known-key"})
    assert "unknown signing key 'not-a-known-key'" in _refusal(oidc, forged)
    forged_with_real_kid = jwt.encode(claims, foreign, algorithm="ES256", headers={"kid": kid})
    assert "bad signature" in _refusal(oidc, forged_with_real_kid)
    assert "not a JWT" in _refusal(oidc, "bob")
