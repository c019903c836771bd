"""Payload encryption: the one data converter every client and worker uses.

``data_converter(settings)`` is the only place a converter is built. With no codec configured it is the pydantic
data converter (payloads in clear text, as before); with keys configured it adds ``EncryptionCodec``:

- AES-256-GCM, a fresh 96-bit nonce per payload; the whole serialized payload (its metadata too) is encrypted;
- each encoded payload records the key that encrypted it: metadata ``encoding: binary/encrypted`` and
  ``encryption-key-id: <id>`` (the key id is also the AEAD's associated data, so a payload cannot be relabelled);
- keys by id with rotation: new data is encrypted under the newest key, every listed key still decrypts;
- decoding a payload under an unknown key id fails naming the key id; a payload that is not encrypted (written
  before the codec was switched on) passes through, so old histories still replay and old runs still finish;
- failure messages and stack traces move into encoded attributes, so they are encrypted too.

Keys come from a key file or from Vault/OpenBao KV v2, read once when the client starts (``load_keyring``), never
from workflow history. A key file holds::

    {"newest": "k2", "keys": {"k1": "<base64 of 32 bytes>", "k2": "<base64 of 32 bytes>"}}

and a Vault secret the same flattened: a field ``newest`` and one field per key id.

A key file must not be accessible to other users (0600 or 0400; 0640/0440 for a group such as a Kubernetes secret
volume's fsGroup), or it is refused.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import secrets
import stat
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from temporalio.api.common.v1 import Payload
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter, DefaultFailureConverterWithEncodedAttributes, PayloadCodec

from core.config import Settings

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


class EncryptionCodec(PayloadCodec):
    """AES-256-GCM over whole payloads, keyed by id (see the module's docstring)."""

    def __init__(self, keyring: KeyRing) -> None:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # only a client with keys pays for it

        self.keyring = keyring
        self._ciphers = {key_id: AESGCM(key) for key_id, key in keyring.keys.items()}

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.encrypt(p) for p in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.decrypt(p) for p in payloads]

    def encrypt(self, payload: Payload) -> Payload:
        key_id = self.keyring.newest
        nonce = secrets.token_bytes(NONCE_BYTES)
        sealed = self._ciphers[key_id].encrypt(nonce, payload.SerializeToString(), key_id.encode())
        return Payload(metadata={"encoding": ENCODING, KEY_ID: key_id.encode()}, data=nonce + sealed)

    def decrypt(self, payload: Payload) -> Payload:
        if payload.metadata.get("encoding") != ENCODING:
            return payload  # clear text from before the codec: pass it through
        key_id = payload.metadata.get(KEY_ID, b"").decode(errors="replace")
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise UnknownCodecKey(key_id, self._ciphers)
        from cryptography.exceptions import InvalidTag

        try:
            clear = cipher.decrypt(payload.data[:NONCE_BYTES], payload.data[NONCE_BYTES:], key_id.encode())
        except InvalidTag:
            raise CodecKeyError(
                f"payload under codec key id {key_id!r} does not decrypt (tampered, or a different key of that id)"
            ) from None
        return Payload.FromString(clear)


def load_keyring(settings: Settings) -> KeyRing | None:
    """The configured keyring: the key file, else the Vault secret, else None (no codec)."""
    if settings.codec_keys_file is not None:
        return KeyRing.from_file(settings.codec_keys_file)
    if settings.codec_vault_path:
        return KeyRing.from_vault(settings.codec_vault_path)
    return None


def converter_for(keyring: KeyRing | None) -> DataConverter:
    if keyring is None:
        return pydantic_data_converter
    return dataclasses.replace(
        pydantic_data_converter,
        payload_codec=EncryptionCodec(keyring),
        failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
    )


def data_converter(settings: Settings) -> DataConverter:
    """The data converter of every client and worker of this product (see the module's docstring)."""
    return converter_for(load_keyring(settings))
