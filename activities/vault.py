"""Vault (hvac): read secrets by reference, inside the activity that needs them.

``VaultReader`` is not an activity: it is a small client other activity classes receive in their constructor
(Terraform hands the values to its process as ``TF_VAR_`` variables; the restore drill uses database
credentials). Secret values therefore never enter workflow inputs, results or history, only paths do.

Authentication follows Vault's own conventions: ``VAULT_ADDR`` plus either ``VAULT_TOKEN`` or AppRole
(``VAULT_ROLE_ID`` / ``VAULT_SECRET_ID``; ``VAULT_APPROLE_MOUNT`` defaults to ``approle``). ``VAULT_NAMESPACE``
and ``VAULT_CACERT`` are honoured when set.

Paths are KV version 2 paths below the mount (default ``secret``): ``read_kv("apps/demo")`` reads
``secret/data/apps/demo``. A path may also name the mount explicitly as ``secret/apps/demo``.
"""

from __future__ import annotations

import os
import secrets
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import hvac
import hvac.exceptions
import requests
from temporalio import activity
from temporalio.exceptions import ApplicationError

from core import errors
from core.rotation import (
    ApiKeyIssued,
    ApiKeyIssueInput,
    ApiKeyState,
    ApiKeyTarget,
    DbCredentialInput,
    DbCredentialIssued,
    DbRotationTarget,
    DbRotationTargetState,
    KvDestroyed,
    KvRef,
    KvRestoreInput,
    LeaseRef,
    LeaseRevoked,
    PkiIssued,
    PkiIssueInput,
    PkiRevokeInput,
    PkiRotationTarget,
    PkiTargetState,
    cn_allowed,
    fingerprint_of,
)


class VaultReader:
    """Reads KV v2 secrets; re-authenticates (AppRole) once when the token has expired."""

    def __init__(
        self,
        client: hvac.Client,
        *,
        mount_point: str = "secret",
        role_id: str | None = None,
        secret_id: str | None = None,
        approle_mount: str = "approle",
    ) -> None:
        self._client = client
        self._mount = mount_point.strip("/")
        self._role_id = role_id
        self._secret_id = secret_id
        self._approle_mount = approle_mount
        self._lock = threading.Lock()

    # -- construction ------------------------------------------------------------------------------------------
    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, *, mount_point: str = "secret") -> "VaultReader":
        env = os.environ if env is None else env
        addr = env.get("VAULT_ADDR")
        if not addr:
            raise ApplicationError("VAULT_ADDR is not set: cannot read secrets from Vault", type=errors.INVALID_INPUT,
                                   non_retryable=True)
        verify: bool | str = env.get("VAULT_CACERT") or True
        client = hvac.Client(url=addr, namespace=env.get("VAULT_NAMESPACE") or None, verify=verify)
        role_id, secret_id = env.get("VAULT_ROLE_ID"), env.get("VAULT_SECRET_ID")
        reader = cls(client, mount_point=mount_point, role_id=role_id, secret_id=secret_id,
                     approle_mount=env.get("VAULT_APPROLE_MOUNT", "approle"))
        if role_id and secret_id:
            reader._login()
        elif env.get("VAULT_TOKEN"):
            client.token = env["VAULT_TOKEN"]
        else:
            raise ApplicationError("Vault credentials missing: set VAULT_TOKEN, or VAULT_ROLE_ID and VAULT_SECRET_ID",
                                   type=errors.INVALID_INPUT, non_retryable=True)
        return reader

    @property
    def client(self) -> hvac.Client:
        return self._client

    def _login(self) -> None:
        try:
            resp = self._client.auth.approle.login(role_id=self._role_id, secret_id=self._secret_id,
                                                   mount_point=self._approle_mount)
        except hvac.exceptions.InvalidRequest as err:
            raise ApplicationError(f"Vault AppRole login refused: {err}", type=errors.ACCESS_DENIED,
                                   non_retryable=True) from None
        self._client.token = resp["auth"]["client_token"]

    # -- reading -----------------------------------------------------------------------------------------------
    def _split(self, path: str) -> tuple[str, str]:
        path = path.strip("/")
        prefix = self._mount + "/"
        if path.startswith(prefix + "data/"):
            path = path[len(prefix) + 5:]
        elif path.startswith(prefix):
            path = path[len(prefix):]
        if not path:
            raise ApplicationError("empty Vault path", type=errors.INVALID_INPUT, non_retryable=True)
        return self._mount, path

    def read_kv(self, path: str, version: int | None = None) -> dict[str, str]:
        """The latest version of a KV v2 secret (or ``version``), values as strings. Raises typed ApplicationErrors."""
        mount, sub = self._split(path)
        for attempt in (1, 2):
            try:
                resp = self._client.secrets.kv.v2.read_secret_version(
                    path=sub, mount_point=mount, version=version, raise_on_deleted_version=True
                )
                data = resp["data"]["data"] or {}
                return {str(k): v if isinstance(v, str) else str(v) for k, v in data.items()}
            except hvac.exceptions.InvalidPath:
                which = f" v{version}" if version else ""
                raise ApplicationError(f"Vault secret {mount}/{sub}{which} does not exist (or that version is deleted)",
                                       type=errors.NOT_FOUND, non_retryable=True) from None
            except hvac.exceptions.Forbidden:
                if attempt == 1 and self._role_id and self._secret_id:
                    with self._lock:
                        self._login()
                    continue
                raise ApplicationError(f"Vault denied reading {mount}/{sub}: check the token's policy",
                                       type=errors.ACCESS_DENIED, non_retryable=True) from None
            except (hvac.exceptions.VaultDown, hvac.exceptions.InternalServerError,
                    requests.exceptions.ConnectionError, requests.exceptions.Timeout) as err:
                raise ApplicationError(f"Vault unreachable reading {mount}/{sub}: {type(err).__name__}: {err}",
                                       type=errors.TRANSIENT) from None
        raise AssertionError("unreachable")

    def read_many(self, refs: Mapping[str, str]) -> dict[str, str]:
        """Resolve ``{name: "path#key"}`` references (``path`` alone when the secret has one key)."""
        cache: dict[str, dict[str, str]] = {}
        out: dict[str, str] = {}
        for name, ref in refs.items():
            path, _, key = ref.partition("#")
            if path not in cache:
                cache[path] = self.read_kv(path)
            data = cache[path]
            if key:
                if key not in data:
                    raise ApplicationError(f"Vault secret {path} has no key {key!r} (keys: {sorted(data)})",
                                           type=errors.NOT_FOUND, non_retryable=True)
                out[name] = data[key]
            elif len(data) == 1:
                out[name] = next(iter(data.values()))
            else:
                raise ApplicationError(f"Vault secret {path} has several keys {sorted(data)}: write {path}#<key>",
                                       type=errors.INVALID_INPUT, non_retryable=True)
        return out


@dataclass(frozen=True)
class _KvVersion:
    """One version of a KV v2 secret as the rotation activities read or wrote it (version 0: none). Its data holds
    secrets: it never leaves the activity; the answers below keep versions, user names, serials and fingerprints."""

    ref: KvRef
    data: dict[str, str]


def _key_fingerprint(data: Mapping[str, str]) -> str:
    """The fingerprint a KV version's API key has (written beside it, or computed from the key)."""
    return data.get("fingerprint") or (fingerprint_of(data["api_key"]) if data.get("api_key") else "")


def _db_issued(new: _KvVersion, old: _KvVersion) -> DbCredentialIssued:
    return DbCredentialIssued(kv=new.ref, username=new.data.get("username", ""), lease_id=new.data.get("lease_id", ""),
                              previous=old.ref, previous_username=old.data.get("username", ""),
                              previous_lease_id=old.data.get("lease_id", ""))


def _pki_issued(new: _KvVersion, old: _KvVersion) -> PkiIssued:
    return PkiIssued(kv=new.ref, serial=new.data.get("serial", ""), not_after=new.data.get("not_after", ""),
                     previous=old.ref, previous_serial=old.data.get("serial", ""))


def _api_key_issued(new: _KvVersion, old: _KvVersion) -> ApiKeyIssued:
    return ApiKeyIssued(kv=new.ref, fingerprint=_key_fingerprint(new.data), previous=old.ref,
                        previous_fingerprint=_key_fingerprint(old.data))


class SecretEngineActivities:
    """OpenBao/Vault secret engines for the rotate-secret runbook (hvac): the database engine's credentials, KV v2
    versions the consumers read, and lease revocation. Every secret stays inside these activities: they answer with
    versions, lease ids and user names only."""

    def __init__(self, client: hvac.Client | None, *, kv_mount: str = "secret") -> None:
        self._hvac = client
        self._kv = VaultReader(client or hvac.Client(), mount_point=kv_mount)

    @property
    def _client(self) -> hvac.Client:
        if self._hvac is None:
            raise ApplicationError("cannot rotate secrets: VAULT_ADDR is not set on this worker",
                                   type=errors.INVALID_INPUT, non_retryable=True)
        return self._hvac

    def _kv_versions(self, path: str) -> tuple[str, str, int]:
        """(mount, sub-path, current version; 0 when the path does not exist)."""
        mount, sub = self._kv._split(path)
        try:
            meta = self._vault(lambda: self._client.secrets.kv.v2.read_secret_metadata(path=sub, mount_point=mount),
                               f"{mount}/{sub}")
        except ApplicationError as err:
            if err.type == errors.NOT_FOUND:
                return mount, sub, 0
            raise
        return mount, sub, int(meta["data"].get("current_version") or 0)

    def _kv_read(self, mount: str, sub: str, version: int) -> dict[str, str]:
        resp = self._vault(lambda: self._client.secrets.kv.v2.read_secret_version(
            path=sub, mount_point=mount, version=version, raise_on_deleted_version=True), f"{mount}/{sub} v{version}")
        return {str(k): str(v) for k, v in (resp["data"]["data"] or {}).items()}

    def _newest(self, path: str) -> _KvVersion:
        """The newest version of ``path`` and its data (version 0 and no data: the path does not exist)."""
        mount, sub, version = self._kv_versions(path)
        return _KvVersion(KvRef(path=path, version=version), self._kv_read(mount, sub, version) if version else {})

    def _already_issued(self, kv_path: str, rotation_id: str) -> tuple[_KvVersion, _KvVersion | None]:
        """The idempotency read of every issue activity: the newest version of ``kv_path`` and, when rotation
        ``rotation_id`` wrote it (a retry after the write, or the roll-back asking what the issue wrote), the version
        before it; the activity then answers with the pair instead of issuing again, so one rotation never issues
        twice. Otherwise None: the newest version is the one to rotate away from."""
        newest = self._newest(kv_path)
        if not newest.ref.version or newest.data.get("rotation_id") != rotation_id:
            return newest, None
        mount, sub = self._kv._split(kv_path)
        version = newest.ref.version - 1
        return newest, _KvVersion(KvRef(path=kv_path, version=version),
                                  self._kv_read(mount, sub, version) if version else {})

    def _write_next(self, after: KvRef, secret: dict[str, str]) -> _KvVersion:
        """Write ``secret`` as the version after ``after`` (check-and-set: fails if another writer came between)."""
        mount, sub = self._kv._split(after.path)
        written = self._vault(lambda: self._client.secrets.kv.v2.create_or_update_secret(
            path=sub, mount_point=mount, cas=after.version, secret=secret), f"{mount}/{sub}")
        return _KvVersion(KvRef(path=after.path, version=int(written["data"]["version"])), secret)

    @staticmethod
    def _vault(call: Callable[[], Any], what: str) -> Any:
        try:
            return call()
        except hvac.exceptions.InvalidPath:
            raise ApplicationError(f"Vault: {what} does not exist", type=errors.NOT_FOUND, non_retryable=True) from None
        except hvac.exceptions.Forbidden:
            raise ApplicationError(f"Vault denied {what}: check the token's policy", type=errors.ACCESS_DENIED,
                                   non_retryable=True) from None
        except hvac.exceptions.InvalidRequest as err:
            raise ApplicationError(f"Vault refused {what}: {err}", type=errors.INVALID_INPUT, non_retryable=True) from None
        except (hvac.exceptions.VaultDown, hvac.exceptions.InternalServerError,
                requests.exceptions.ConnectionError, requests.exceptions.Timeout) as err:
            raise ApplicationError(f"Vault unreachable ({what}): {type(err).__name__}: {err}",
                                   type=errors.TRANSIENT) from None

    @activity.defn
    def db_rotation_target(self, req: DbRotationTarget) -> DbRotationTargetState:
        """Read-only: does the engine's role exist, and which KV version do the consumers read now."""
        try:
            self._vault(lambda: self._client.secrets.database.read_role(req.role, mount_point=req.mount),
                        f"{req.mount}/roles/{req.role}")
            role_exists = True
        except ApplicationError as err:
            if err.type != errors.NOT_FOUND:
                raise
            role_exists = False
        kv = self._newest(req.kv_path)
        return DbRotationTargetState(role_exists=role_exists, kv_version=kv.ref.version,
                                     kv_username=kv.data.get("username", ""), kv_lease_id=kv.data.get("lease_id", ""),
                                     kv_rotation_id=kv.data.get("rotation_id", ""))

    @activity.defn
    def db_issue_credential(self, req: DbCredentialInput) -> DbCredentialIssued:
        """A new user from the engine, written as the next KV version; a retry finds its own version and returns it
        (the lease id and user recorded beside it), so one rotation never issues two users."""
        newest, before = self._already_issued(req.kv_path, req.rotation_id)
        if before is not None:
            return _db_issued(newest, before)
        creds = self._vault(lambda: self._client.secrets.database.generate_credentials(req.role, mount_point=req.mount),
                            f"{req.mount}/creds/{req.role}")
        lease_id = creds["lease_id"]
        try:
            written = self._write_next(newest.ref, {"username": creds["data"]["username"],
                                                    "password": creds["data"]["password"], "lease_id": lease_id,
                                                    "rotation_id": req.rotation_id})
        except ApplicationError:
            self._revoke(lease_id)  # nobody will ever read this user: do not leave it behind
            raise
        return _db_issued(written, newest)

    @activity.defn
    def kv_restore_version(self, req: KvRestoreInput) -> KvRef:
        """Write version ``source.version``'s data again as the newest version (a rollback the consumers see as a
        change); when the newest already holds that data, nothing is written."""
        mount, sub = self._kv._split(req.source.path)
        wanted = self._kv_read(mount, sub, req.source.version)
        newest = self._newest(req.source.path)
        if newest.ref.version and newest.data == wanted:
            return newest.ref
        return self._write_next(newest.ref, wanted).ref

    def _revoke(self, lease_id: str) -> bool:
        try:
            self._vault(lambda: self._client.sys.read_lease(lease_id), f"lease {lease_id}")
        except ApplicationError as err:
            if err.type in (errors.NOT_FOUND, errors.INVALID_INPUT):  # unknown or expired lease: already gone
                return False
            raise
        self._vault(lambda: self._client.sys.revoke_lease(lease_id), f"revoking lease {lease_id}")
        return True

    @activity.defn
    def vault_revoke_lease(self, req: LeaseRef) -> LeaseRevoked:
        """Revoke a lease now (the engine drops its database user); idempotent."""
        return LeaseRevoked(lease_id=req.lease_id, revoked=self._revoke(req.lease_id))

    # -- certificates (the PKI engine) ---------------------------------------------------------------------------
    @activity.defn
    def pki_rotation_target(self, req: PkiRotationTarget) -> PkiTargetState:
        """Read-only: the PKI role exists and allows the CN, and which certificate the KV path holds now."""
        try:
            role = self._vault(lambda: self._client.read(f"{req.mount}/roles/{req.role}"),
                               f"{req.mount}/roles/{req.role}")
        except ApplicationError as err:
            if err.type != errors.NOT_FOUND:
                raise
            role = None
        data = (role or {}).get("data") or {}
        domains = [str(d) for d in data.get("allowed_domains") or []]
        allowed = bool(data.get("allow_any_name")) or cn_allowed(
            req.common_name, domains, subdomains=bool(data.get("allow_subdomains")),
            bare=bool(data.get("allow_bare_domains")))
        kv = self._newest(req.kv_path)
        current = kv.data
        not_after = ""
        if current.get("certificate"):
            from cryptography import x509

            not_after = x509.load_pem_x509_certificate(current["certificate"].encode()).not_valid_after_utc.isoformat()
        return PkiTargetState(role_exists=role is not None, cn_allowed=allowed, allowed_domains=domains,
                              kv_version=kv.ref.version, kv_serial=current.get("serial", ""), kv_not_after=not_after,
                              kv_rotation_id=current.get("rotation_id", ""))

    @activity.defn
    def pki_issue_certificate(self, req: PkiIssueInput) -> PkiIssued:
        """A certificate from the PKI role, written as the next KV version; a retry returns the version it wrote."""
        newest, before = self._already_issued(req.kv_path, req.rotation_id)
        if before is not None:
            return _pki_issued(newest, before)
        params: dict[str, Any] = {"common_name": req.common_name}
        if req.ttl:
            params["ttl"] = req.ttl
        issued = self._vault(lambda: self._client.write_data(f"{req.mount}/issue/{req.role}", data=params),
                             f"{req.mount}/issue/{req.role}")["data"]
        serial = str(issued["serial_number"])
        not_after = datetime.fromtimestamp(int(issued["expiration"]), timezone.utc).isoformat()
        try:
            written = self._write_next(newest.ref, {
                "certificate": issued["certificate"], "private_key": issued["private_key"], "serial": serial,
                "not_after": not_after, "rotation_id": req.rotation_id})
        except ApplicationError:
            self._revoke_serial(req.mount, serial)  # nobody will ever serve it
            raise
        return _pki_issued(written, newest)

    def _revoke_serial(self, mount: str, serial: str) -> bool:
        cert = self._vault(lambda: self._client.read(f"{mount}/cert/{serial}"), f"{mount}/cert/{serial}")
        if cert is None:
            raise ApplicationError(f"Vault: {mount}/cert/{serial} does not exist", type=errors.NOT_FOUND,
                                   non_retryable=True)
        if int((cert.get("data") or {}).get("revocation_time") or 0) > 0:
            return False
        self._vault(lambda: self._client.write_data(f"{mount}/revoke", data={"serial_number": serial}),
                    f"revoking {mount} certificate {serial}")
        return True

    @activity.defn
    def pki_revoke_certificate(self, req: PkiRevokeInput) -> LeaseRevoked:
        """Revoke a certificate by serial (it joins the CRL); idempotent."""
        return LeaseRevoked(lease_id=req.serial, revoked=self._revoke_serial(req.mount, req.serial))

    # -- API keys (KV v2 versions) -----------------------------------------------------------------------------
    @activity.defn
    def apikey_rotation_target(self, req: ApiKeyTarget) -> ApiKeyState:
        """Read-only: the KV path's current version and the fingerprint of its key."""
        kv = self._newest(req.kv_path)
        return ApiKeyState(kv_version=kv.ref.version, fingerprint=_key_fingerprint(kv.data),
                           kv_rotation_id=kv.data.get("rotation_id", ""))

    @activity.defn
    def apikey_issue(self, req: ApiKeyIssueInput) -> ApiKeyIssued:
        """A new random key as the next KV version (the old version stays readable: both valid); idempotent."""
        newest, before = self._already_issued(req.kv_path, req.rotation_id)
        if before is not None:
            return _api_key_issued(newest, before)
        key = secrets.token_urlsafe(req.bytes)
        kept = {k: v for k, v in newest.data.items() if k not in ("api_key", "fingerprint", "rotation_id")}
        written = self._write_next(newest.ref, {**kept, "api_key": key, "fingerprint": fingerprint_of(key),
                                                "rotation_id": req.rotation_id})
        return _api_key_issued(written, newest)

    @activity.defn
    def kv_destroy_version(self, req: KvRef) -> KvDestroyed:
        """Destroy one version of a KV v2 secret for good (its data is gone; the version number stays); idempotent."""
        mount, sub = self._kv._split(req.path)
        meta = self._vault(lambda: self._client.secrets.kv.v2.read_secret_metadata(path=sub, mount_point=mount),
                           f"{mount}/{sub}")
        version = (meta["data"].get("versions") or {}).get(str(req.version))
        if version is None:
            raise ApplicationError(f"Vault: {mount}/{sub} has no version {req.version}", type=errors.NOT_FOUND,
                                   non_retryable=True)
        if version.get("destroyed"):
            return KvDestroyed(kv=req, destroyed=False)
        self._vault(lambda: self._client.secrets.kv.v2.destroy_secret_versions(
            path=sub, versions=[req.version], mount_point=mount), f"destroying {mount}/{sub} v{req.version}")
        return KvDestroyed(kv=req, destroyed=True)
