"""The payload codec's keys and cipher, with nothing of Temporal: AES-256-GCM under keys by id (see
``workers.codec`` for the format and where keys come from). ``workers.codec`` wraps it as the SDK's payload codec;
``starters.fast_read`` decrypts a query's answer with it without importing the SDK's Python client.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import secrets
import stat
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

ENCODING = b"binary/encrypted"
KEY_ID = "encryption-key-id"
NONCE_BYTES = 12
KEY_BYTES = 32


class CodecKeyError(Exception):
    """Keys missing, malformed or unsafe to use; the message names the source and what is wrong."""


class UnknownCodecKey(CodecKeyError):
    """A payload was encrypted under a key id this keyring does not hold."""

    def __init__(self, key_id: str, known: Iterable[str]) -> None:
        super().__init__(
            f"payload encrypted with unknown codec key id {key_id!r} (this keyring holds: {', '.join(sorted(known))}); "
            "add that key to the keyring to decrypt it"
        )
        self.key_id = key_id


@dataclasses.dataclass(frozen=True)
class KeyRing:
    """Keys by id; ``newest`` encrypts, all decrypt."""

    keys: Mapping[str, bytes]
    newest: str
    _ciphers: dict[str, Any] = dataclasses.field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.keys:
            raise CodecKeyError("codec keyring is empty")
        if self.newest not in self.keys:
            raise CodecKeyError(f"codec keyring's newest key {self.newest!r} is not among its keys ({', '.join(sorted(self.keys))})")
        for key_id, key in self.keys.items():
            if not key_id or not key_id.isascii():
                raise CodecKeyError(f"codec key id {key_id!r} must be non-empty ASCII")
            if len(key) != KEY_BYTES:
                raise CodecKeyError(f"codec key {key_id!r} is {len(key)} bytes; AES-256 needs {KEY_BYTES}")

    # -- the JSON document ---------------------------------------------------------------------------------------
    @classmethod
    def from_document(cls, doc: Mapping, source: str) -> "KeyRing":
        """``{"newest": id, "keys": {id: base64}}``, or flat ``{"newest": id, id: base64, ...}`` (a Vault secret)."""
        if isinstance(doc, Mapping) and "keys" not in doc:
            doc = {"newest": doc.get("newest"), "keys": {k: v for k, v in doc.items() if k != "newest"}}
        if not isinstance(doc, Mapping) or not isinstance(doc.get("keys"), Mapping) or not isinstance(doc.get("newest"), str):
            raise CodecKeyError(f'{source}: expected {{"newest": "<id>", "keys": {{"<id>": "<base64 32-byte key>"}}}}')
        keys: dict[str, bytes] = {}
        for key_id, encoded in doc["keys"].items():
            try:
                keys[str(key_id)] = base64.b64decode(str(encoded), validate=True)
            except ValueError:
                raise CodecKeyError(f"{source}: key {key_id!r} is not valid base64") from None
        try:
            return cls(keys, doc["newest"])
        except CodecKeyError as err:
            raise CodecKeyError(f"{source}: {err}") from None

    def document(self) -> dict:
        return {"newest": self.newest, "keys": {k: base64.b64encode(v).decode() for k, v in self.keys.items()}}

    @classmethod
    def generate(cls, key_id: str = "k1") -> "KeyRing":
        return cls({key_id: secrets.token_bytes(KEY_BYTES)}, key_id)

    def rotated(self, key_id: str) -> "KeyRing":
        """A keyring with a new random key ``key_id`` as the newest; the old keys stay for decryption."""
        if key_id in self.keys:
            raise CodecKeyError(f"codec key id {key_id!r} already exists")
        return KeyRing({**self.keys, key_id: secrets.token_bytes(KEY_BYTES)}, key_id)

    # -- sources -------------------------------------------------------------------------------------------------
    @classmethod
    def from_file(cls, path: Path) -> "KeyRing":
        try:
            mode = path.stat().st_mode
        except OSError as err:
            raise CodecKeyError(f"codec key file {path}: {err.strerror}") from None
        if mode & (stat.S_IRWXO | stat.S_IWGRP | stat.S_IXGRP):  # group read only is fine (a secret volume's fsGroup)
            raise CodecKeyError(
                f"codec key file {path} is accessible to other users (mode {stat.S_IMODE(mode):04o}): "
                f"chmod 600 {path}"
            )
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise CodecKeyError(f"codec key file {path}: {err}") from None
        return cls.from_document(doc, f"codec key file {path}")

    def write(self, path: Path) -> Path:
        """Write the keyring as a key file, mode 0600 from the first byte."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(self.document(), out, indent=2)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
        return path

    @classmethod
    def from_vault(cls, ref: str, reader=None) -> "KeyRing":
        """KV v2 secret ``ref`` (``mount/path``, e.g. ``secret/runbook/codec``): a field ``newest`` and one field
        per key id (``bao kv put secret/runbook/codec newest=k2 k1=<base64> k2=<base64>``).

        ``reader``: an ``activities.vault.VaultReader``; default one from ``VAULT_ADDR`` and ``VAULT_TOKEN`` (or
        AppRole), as the activities read Vault."""
        from temporalio.exceptions import ApplicationError

        from activities.vault import VaultReader  # hvac is imported only when Vault holds the keys

        mount, _, path = ref.strip("/").partition("/")
        if not path:
            raise CodecKeyError(f"codec Vault path {ref!r} must be <mount>/<path>, e.g. secret/runbook/codec")
        try:
            data = (reader or VaultReader.from_env(mount_point=mount)).read_kv(ref)
        except ApplicationError as err:
            raise CodecKeyError(f"codec keys from Vault: {err.message}") from None
        return cls.from_document(data, f"codec keys from Vault {ref}")

    # -- the cipher ----------------------------------------------------------------------------------------------
    def _cipher(self, key_id: str) -> Any:
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # only a client with keys pays for it

            cipher = self._ciphers[key_id] = AESGCM(self.keys[key_id])
        return cipher

    def seal(self, clear: bytes) -> tuple[str, bytes]:
        """``clear`` encrypted under the newest key: that key's id and nonce + ciphertext (the id is the AEAD's
        associated data, so the sealed bytes cannot be relabelled with another key id)."""
        key_id = self.newest
        nonce = secrets.token_bytes(NONCE_BYTES)
        return key_id, nonce + self._cipher(key_id).encrypt(nonce, clear, key_id.encode())

    def open(self, key_id: str, sealed: bytes) -> bytes:
        """What ``seal`` sealed under ``key_id``; ``UnknownCodecKey`` for a key this keyring lacks, ``CodecKeyError``
        when the bytes do not decrypt."""
        if key_id not in self.keys:
            raise UnknownCodecKey(key_id, self.keys)
        from cryptography.exceptions import InvalidTag

        try:
            return bytes(self._cipher(key_id).decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], key_id.encode()))
        except InvalidTag:
            raise CodecKeyError(
                f"payload under codec key id {key_id!r} does not decrypt (tampered, or a different key of that id)"
            ) from None
