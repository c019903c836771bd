"""The rotate-secret runbook's contract: its input, result and the typed requests of its activities.

No type here carries a secret value: only references (Vault paths, roles), versions, lease ids and user names.
The activities that create material write it straight to where consumers read it (Vault KV v2) and answer with
those references; the workflow, its history, queries and logs never see a password.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from core.duration import Duration
from core.kubernetes import SecretRef, SecretRolloutState
from core.restore import PgServer
from core.runbook import RunbookInput, RunbookResult

SecretKind = Literal["database", "certificate", "api_key"]
Rollout = Literal["kv", "kubernetes"]

# rollout kubernetes: the Secret's type and its data keys -> the KV fields they are written from, per kind
SECRET_LAYOUT: dict[str, tuple[str, dict[str, str]]] = {
    "database": ("Opaque", {"username": "username", "password": "password"}),
    "api_key": ("Opaque", {"api_key": "api_key"}),
    "certificate": ("kubernetes.io/tls", {"tls.crt": "certificate", "tls.key": "private_key"}),
}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class KvRef(_Model):
    """A KV v2 secret (``secret/apps/orders/db``) and one of its versions (0: none)."""

    path: str
    version: int = 0


class DbCredentialInput(_Model):
    """Issue a new credential from the database engine's ``role`` and write it as the next version of ``kv_path``
    (keys username, password, lease_id, rotation_id). ``rotation_id`` makes a retry return what it already wrote."""

    mount: str = "database"
    role: str
    kv_path: str
    rotation_id: str
    lease_ttl: str = Field("", description="lease ttl to ask for (empty: the role's default)")


class DbCredentialIssued(_Model):
    kv: KvRef = Field(description="the version the consumers now read")
    username: str
    lease_id: str
    previous: KvRef = Field(description="the version before (0: the path had none)")
    previous_username: str = ""
    previous_lease_id: str = ""


class DbRotationTarget(_Model):
    """What must exist before a rotation starts (checked read-only): the role in the engine and the KV path."""

    mount: str = "database"
    role: str
    kv_path: str


class DbRotationTargetState(_Model):
    role_exists: bool
    kv_version: int = Field(description="the current version of kv_path (0: the path does not exist)")
    kv_username: str = ""
    kv_lease_id: str = ""
    kv_rotation_id: str = Field("", description="the rotation that wrote the current version (a run's workflow id)")


class KvRestoreInput(_Model):
    """Write the data of ``source`` as the newest version of its path (a rollback consumers pick up as a change),
    unless the newest version already holds it (idempotent)."""

    source: KvRef


class LeaseRef(_Model):
    lease_id: str


class LeaseRevoked(_Model):
    lease_id: str
    revoked: bool = Field(description="False: the lease was already gone")


class ConsumerCheckInput(_Model):
    """Wait until every consumer (``application_name`` in pg_stat_activity) has sessions and all of them are
    ``expect_user`` (none as the old user or any other); fails VerificationFailed after ``timeout_seconds``."""

    server: PgServer
    consumers: list[str]
    expect_user: str
    timeout_seconds: float = 300.0
    poll_seconds: float = 1.0


class ConsumerSessions(_Model):
    users: dict[str, list[str]] = Field(description="consumer -> the users its sessions are connected as")


class PkiRotationTarget(_Model):
    """What must exist before a certificate rotation (read-only): the PKI role, a CN it allows, the KV path."""

    mount: str = "pki"
    role: str
    common_name: str
    kv_path: str


class PkiTargetState(_Model):
    role_exists: bool
    cn_allowed: bool = False
    allowed_domains: list[str] = Field(default_factory=list)
    kv_version: int = 0
    kv_serial: str = ""
    kv_not_after: str = Field("", description="the current certificate's expiry (ISO 8601), read from the certificate")
    kv_rotation_id: str = ""


class PkiIssueInput(_Model):
    """Issue a certificate for ``common_name`` from the PKI role and write it (certificate, private_key, serial,
    not_after, rotation_id) as the next version of ``kv_path``, where the TLS endpoint reads it."""

    mount: str = "pki"
    role: str
    common_name: str
    kv_path: str
    rotation_id: str
    ttl: str = ""


class PkiIssued(_Model):
    kv: KvRef
    serial: str
    not_after: str
    previous: KvRef
    previous_serial: str = ""


class PkiRevokeInput(_Model):
    mount: str = "pki"
    serial: str


class TlsServedInput(_Model):
    """Wait until every endpoint (``host:port``) presents the certificate ``serial`` in a TLS handshake."""

    endpoints: list[str]
    serial: str
    timeout_seconds: float = 300.0
    poll_seconds: float = 1.0


class TlsServed(_Model):
    serials: dict[str, str] = Field(description="endpoint -> the serial it presented")


class ApiKeyTarget(_Model):
    kv_path: str


class ApiKeyState(_Model):
    kv_version: int = Field(description="the current version of kv_path (0: the path does not exist)")
    fingerprint: str = ""
    kv_rotation_id: str = ""


class ApiKeyIssueInput(_Model):
    """A new random key written (api_key, fingerprint, rotation_id) as the next version of ``kv_path``; a retry
    returns the version it wrote."""

    kv_path: str
    rotation_id: str
    bytes: int = Field(32, ge=16, le=128)


class ApiKeyIssued(_Model):
    kv: KvRef
    fingerprint: str
    previous: KvRef
    previous_fingerprint: str = ""


class KvDestroyed(_Model):
    kv: KvRef
    destroyed: bool = Field(description="False: that version was already destroyed")


EXPIRY_ALERT_DAYS = (30, 15, 7)


def expiry_alert(days_left: int) -> int | None:
    """The alert a daily expiry scan raises today: 30, 15 or 7 on those days before expiry, every day at 7 or fewer
    (0 or less: expired), else None."""
    if days_left <= EXPIRY_ALERT_DAYS[-1]:
        return days_left
    return days_left if days_left in EXPIRY_ALERT_DAYS else None


def fingerprint_of(key: str) -> str:
    """What consumers report and the run records instead of a key: ``sha256:`` and 16 hex digits of its hash."""
    import hashlib

    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()[:16]


def cn_allowed(common_name: str, domains: list[str], *, subdomains: bool, bare: bool) -> bool:
    """Whether a PKI role with these ``allowed_domains`` issues for ``common_name`` (Vault's rules, without globs)."""
    cn = common_name.lower().rstrip(".")
    for domain in (d.lower().rstrip(".") for d in domains):
        if (bare and cn == domain) or (subdomains and cn.endswith("." + domain)):
            return True
    return False


def serial_of(der: bytes) -> str:
    """A DER certificate's serial as Vault writes it (``1a:2b:...``)."""
    from cryptography import x509

    number = x509.load_der_x509_certificate(der).serial_number
    raw = number.to_bytes((number.bit_length() + 7) // 8 or 1, "big")
    return ":".join(f"{b:02x}" for b in raw)


class RotateSecretInput(RunbookInput):
    kind: SecretKind = "database"
    environment: str = Field("production", description="where the secret is used (change calendar, notifications)")
    # database credentials (OpenBao/Vault database secrets engine)
    mount: str = Field("database", description="the database secrets engine's mount")
    role: str = Field("", description="the engine's role that creates users")
    kv_path: str = Field("", description="the KV v2 path the consumers read their credentials from")
    consumers: list[str] = Field(default_factory=list,
                                 description="the consumers' application_name, seen in pg_stat_activity")
    server: PgServer | None = Field(None, description="the database the consumers use (admin credentials by vault_path)")
    # certificates (Vault's PKI engine; ``role`` is the PKI role, ``kv_path`` where the TLS endpoint reads it)
    pki_mount: str = Field("pki", description="the PKI secrets engine's mount")
    common_name: str = Field("", description="the certificate's CN (the PKI role's allowed domains must allow it)")
    endpoints: list[str] = Field(default_factory=list, description="host:port of each TLS endpoint that must present it")
    renew_within: Duration | None = Field(
        None, description="certificate, the expiry scan: rotate only when the current certificate expires within this "
                          "(the policy: 30d); otherwise end Succeeded with nothing to do. Unset: always rotate")
    # API keys (KV v2 versions; ``kv_path`` holds api_key and its fingerprint)
    consumer_urls: list[str] = Field(default_factory=list,
                                     description="api_key: each consumer's URL whose body names the fingerprint of the key it uses")
    grace_period: Duration = Field(timedelta(hours=1), description="api_key: how long the old version stays after verification")
    verify_timeout: Duration = Field(timedelta(minutes=5), description="how long consumers get to connect as the new user")
    # the rollout: consumers reload from KV themselves (kv), or a Kubernetes Secret and a rolling restart (kubernetes)
    rollout: Rollout = Field("kv", description="kv: the consumers reload the KV path themselves; kubernetes: the new "
                                               "material written into `secret` and the `deployments` restarted")
    secret: SecretRef | None = Field(None, description="rollout kubernetes: the Secret the consumers mount "
                                                       "(certificate: a kubernetes.io/tls Secret, tls.crt/tls.key)")
    deployments: list[str] = Field(default_factory=list, description="rollout kubernetes: the consumer Deployments, "
                                   "in the Secret's namespace, restarted (readiness waited) after each Secret write")
    rollout_timeout: Duration = Field(timedelta(minutes=10), description="rollout kubernetes: per Deployment")

    def problems(self) -> list[str]:
        out: list[str] = []
        if self.kind != "api_key" and not self.role.strip():
            out.append("role: blank (the engine's role to issue from)")
        if not self.kv_path.strip():
            out.append("kv_path: blank (where the consumers read their credentials)")
        if self.kind == "database":
            if not [c for c in self.consumers if c.strip()]:
                out.append("consumers: empty (who must switch to the new user before the old one is revoked)")
            if self.server is None:
                out.append("server: missing (the database whose sessions are checked)")
        elif self.kind == "api_key":
            if not [u for u in self.consumer_urls if u.strip()]:
                out.append("consumer_urls: empty (the consumers that must report the new key's fingerprint)")
            out += [f"consumer_urls: {u!r} is not an http(s) URL" for u in self.consumer_urls
                    if u.strip() and not u.startswith(("http://", "https://"))]
        else:
            if not self.common_name.strip():
                out.append("common_name: blank (the certificate's CN)")
            if not [e for e in self.endpoints if e.strip()]:
                out.append("endpoints: empty (the TLS endpoints that must present the new certificate)")
            out += [f"endpoints: {e!r} is not host:port" for e in self.endpoints
                    if e.strip() and not e.rpartition(":")[2].isdigit()]
        if self.rollout == "kubernetes":
            if self.secret is None or not self.secret.name.strip():
                out.append("secret: missing ({namespace, name, context} of the Secret the consumers mount)")
            if self.kind != "certificate" and not [d for d in self.deployments if d.strip()]:
                out.append("deployments: empty (the consumer Deployments restarted onto the new Secret)")
        elif self.secret is not None or self.deployments:
            out.append(f"rollout: kv ignores {'secret' if self.secret is not None else 'deployments'} "
                       "(set rollout: kubernetes)")
        return out

    def secret_layout(self) -> tuple[str, dict[str, str]]:
        """rollout kubernetes: the Secret's type and data keys -> KV fields, for this kind."""
        return SECRET_LAYOUT[self.kind]


def rollout_problems(input: RotateSecretInput, state: SecretRolloutState) -> list[str]:
    """rollout kubernetes, read-only (the run's validate step and the dry run): the Secret exists with the kind's
    type, and every consumer Deployment exists; each problem names its field."""
    assert input.secret is not None
    where = f"{input.secret.namespace}/{input.secret.name}"
    wanted = input.secret_layout()[0]
    why = []
    if not state.secret_exists:
        why.append(f"secret: {where} does not exist (the Secret the consumers mount)")
    elif state.secret_type != wanted:
        why.append(f"secret: {where} is of type {state.secret_type}; a {input.kind} needs {wanted}")
    if state.missing_deployments:
        why.append(f"deployments: {', '.join(state.missing_deployments)} not found in namespace {input.secret.namespace}")
    return why


class RotationRecord(_Model):
    """The audit of one rotation: versions, lease ids, user names; never a secret."""

    kind: SecretKind
    kv_path: str = ""
    old_version: int = 0
    new_version: int = 0
    old_username: str = ""
    new_username: str = ""
    old_lease_id: str = ""
    new_lease_id: str = ""
    old_fingerprint: str = Field("", description="api keys: the fingerprint of the key before")
    new_fingerprint: str = ""
    destroyed_versions: list[int] = Field(default_factory=list, description="api keys: KV versions destroyed")
    old_serial: str = Field("", description="certificates: the serial the endpoints presented before")
    new_serial: str = ""
    new_not_after: str = ""
    revoked: list[str] = Field(default_factory=list,
                               description="lease ids or certificate serials revoked (old on success, new on rollback)")
    restored_version: int = Field(0, description="on rollback: the KV version that holds the old credential again")
    secret_source: str = Field("", description="rollout kubernetes: the Vault version the Secret holds now")
    restarts: list[str] = Field(default_factory=list, description="rollout kubernetes: each rolling restart "
                                                                  "(its restartedAt value)")


class RotateSecretResult(RunbookResult):
    rotation: RotationRecord
