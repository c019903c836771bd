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

import dataclasses
from collections.abc import Sequence

from temporalio.api.common.v1 import Payload
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter, DefaultFailureConverterWithEncodedAttributes, PayloadCodec

from core.config import Settings
from workers.keyring import ENCODING, KEY_BYTES, KEY_ID, NONCE_BYTES, CodecKeyError, KeyRing, UnknownCodecKey


class EncryptionCodec(PayloadCodec):
    """AES-256-GCM over whole payloads, keyed by id (see the module's docstring); the cipher is the keyring's."""

    def __init__(self, keyring: KeyRing) -> None:
        self.keyring = keyring

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.encrypt(p) for p in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.decrypt(p) for p in payloads]

    def encrypt(self, payload: Payload) -> Payload:
        key_id, sealed = self.keyring.seal(payload.SerializeToString())
        return Payload(metadata={"encoding": ENCODING, KEY_ID: key_id.encode()}, data=sealed)

    def decrypt(self, payload: Payload) -> Payload:
        if payload.metadata.get("encoding") != ENCODING:
            return payload  # clear text from before the codec: pass it through
        key_id = payload.metadata.get(KEY_ID, b"").decode(errors="replace")
        return Payload.FromString(self.keyring.open(key_id, payload.data))


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


__all__ = ["ENCODING", "KEY_BYTES", "KEY_ID", "NONCE_BYTES", "CodecKeyError", "EncryptionCodec", "KeyRing",
           "UnknownCodecKey", "converter_for", "data_converter", "load_keyring"]
