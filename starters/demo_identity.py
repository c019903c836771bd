"""OpenBao as the local stack's OpenID Connect identity provider (see shared notes identity.md).

``setup_identity`` makes OpenBao issue signed ID tokens for approvers: an ES256 key, the ``approver`` role whose
template puts the user name and the identity groups in the token, a policy that lets a logged-in user read their
own token, userpass users, and identity groups with those users as members. Idempotent: running it again on a
configured OpenBao changes nothing. ``id_token`` logs a user in and returns a fresh ID token, as `runbook login`
does with the user's own Vault login.
"""

from __future__ import annotations

from dataclasses import dataclass

import hvac

ROLE = "approver"
KEY = "runbook"
TEMPLATE = '{"preferred_username": {{identity.entity.name}}, "groups": {{identity.entity.groups.names}}}'
POLICY = f'path "identity/oidc/token/{ROLE}" {{ capabilities = ["read"] }}\n'

# The demo's people and their identity-provider groups (runbooks/groups.yaml maps these groups to approver groups).
DEMO_USERS: dict[str, list[str]] = {
    "alice": ["platform-team"],
    "bob": ["platform-team"],
    "carol": ["security-team"],
    "dave": ["sre"],
    "erin": ["sre"],
    "runbook-gateway": ["service-identities"],
}
DEMO_PASSWORD = "pw"


@dataclass(frozen=True)
class OidcSetup:
    issuer: str
    audience: str
    role: str = ROLE


def setup_identity(addr: str, token: str, users: dict[str, list[str]] | None = None,
                   password: str = DEMO_PASSWORD) -> OidcSetup:
    users = DEMO_USERS if users is None else users
    client = hvac.Client(url=addr, token=token)
    client.write("identity/oidc/key/" + KEY, allowed_client_ids="*", algorithm="ES256", rotation_period="24h",
                 verification_ttl="48h")
    client.write("identity/oidc/role/" + ROLE, key=KEY, ttl="15m", template=TEMPLATE)
    client.sys.create_or_update_policy(name=ROLE, policy=POLICY)
    if "userpass/" not in client.sys.list_auth_methods():
        client.sys.enable_auth_method("userpass")
    accessor = client.sys.list_auth_methods()["userpass/"]["accessor"]
    members: dict[str, list[str]] = {}
    for user, groups in users.items():
        client.write(f"auth/userpass/users/{user}", password=password, policies=ROLE)
        client.secrets.identity.create_or_update_entity_by_name(name=user)  # 204 when it exists already
        entity = client.secrets.identity.read_entity_by_name(name=user)["data"]
        entity_id, aliases = entity["id"], entity.get("aliases") or []
        if not any(a.get("mount_accessor") == accessor for a in aliases):
            client.secrets.identity.create_or_update_entity_alias(name=user, canonical_id=entity_id,
                                                                  mount_accessor=accessor)
        for group in groups:
            members.setdefault(group, []).append(entity_id)
    for group, ids in members.items():
        client.secrets.identity.create_or_update_group_by_name(name=group, member_entity_ids=ids)
    audience = client.read("identity/oidc/role/" + ROLE)["data"]["client_id"]
    return OidcSetup(issuer=addr.rstrip("/") + "/v1/identity/oidc", audience=audience)


def vault_login(addr: str, user: str, password: str) -> str:
    """A Vault token for the user (userpass), for reading their ID token."""
    client = hvac.Client(url=addr)
    return client.auth.userpass.login(username=user, password=password)["auth"]["client_token"]


def id_token(addr: str, vault_token: str, role: str = ROLE) -> str:
    """A fresh signed ID token for whoever holds ``vault_token``."""
    client = hvac.Client(url=addr, token=vault_token)
    return client.read(f"identity/oidc/token/{role}")["data"]["token"]
