"""The payload codec (workers.codec): key files and Vault as key sources, rotation, unknown keys, and a real run's
history holding no clear-text input."""

from __future__ import annotations

import base64
import json
import os
import uuid
from datetime import timedelta
from pathlib import Path

import hvac
import pytest
from temporalio.api.common.v1 import Payload
from temporalio.contrib.pydantic import pydantic_data_converter

from core.approval import ApproveInput
from core.config import Settings
from core.runbook import RunbookMeta
from tests import harness
from tests.core.gated_workflows import GatedChange, GatedChangeInput
from tests.core.test_gate import POLICY, _wait_for_gate
from workers.codec import (
    ENCODING,
    KEY_ID,
    CodecKeyError,
    EncryptionCodec,
    KeyRing,
    UnknownCodecKey,
    converter_for,
    data_converter,
    load_keyring,
)

SERVICE, REQUESTER = "ledger-svc-7f3a", "requester-q9z"


async def _roundtrip(codec: EncryptionCodec, value) -> tuple[Payload, object]:
    clear = pydantic_data_converter.payload_converter.to_payloads([value])[0]
    [encoded] = await codec.encode([clear])
    [decoded] = await codec.decode([encoded])
    return encoded, pydantic_data_converter.payload_converter.from_payloads([decoded])[0]


# ----------------------------------------------------------------------------------------------- the codec alone
async def test_encoded_payload_names_its_key_and_hides_the_value():
    codec = EncryptionCodec(KeyRing.generate("k1"))
    encoded, back = await _roundtrip(codec, {"service": SERVICE})
    assert back == {"service": SERVICE}
    assert encoded.metadata["encoding"] == ENCODING and encoded.metadata[KEY_ID] == b"k1"
    assert SERVICE.encode() not in encoded.SerializeToString() and b"json/plain" not in encoded.SerializeToString()


async def test_rotation_new_data_under_the_newest_key_old_data_still_decodes():
    k1 = KeyRing.generate("k1")
    [old] = await EncryptionCodec(k1).encode([Payload(metadata={"encoding": b"json/plain"}, data=b'"written under k1"')])
    k2 = k1.rotated("k2")
    assert k2.newest == "k2" and set(k2.keys) == {"k1", "k2"} and k2.keys["k1"] == k1.keys["k1"]
    codec = EncryptionCodec(k2)
    [decoded] = await codec.decode([old])
    assert decoded.data == b'"written under k1"'
    [new] = await codec.encode([Payload(metadata={"encoding": b"json/plain"}, data=b'"new"')])
    assert new.metadata[KEY_ID] == b"k2"
    with pytest.raises(UnknownCodecKey, match="'k2'"):  # a reader still holding only k1 is told which key it lacks
        await EncryptionCodec(k1).decode([new])


async def test_unknown_key_id_fails_naming_the_key_id():
    [payload] = await EncryptionCodec(KeyRing.generate("retired-2025")).encode([Payload(data=b"x")])
    with pytest.raises(UnknownCodecKey) as failure:
        await EncryptionCodec(KeyRing.generate("k7")).decode([payload])
    assert "'retired-2025'" in str(failure.value) and failure.value.key_id == "retired-2025"


async def test_tampered_or_relabelled_payload_is_refused():
    ring = KeyRing({"a": os.urandom(32), "b": os.urandom(32)}, "a")
    codec = EncryptionCodec(ring)
    [payload] = await codec.encode([Payload(data=b"x")])
    tampered = Payload(metadata=payload.metadata, data=payload.data[:-1] + bytes([payload.data[-1] ^ 1]))
    relabelled = Payload(metadata={**payload.metadata, KEY_ID: b"b"}, data=payload.data)
    for bad in (tampered, relabelled):
        with pytest.raises(CodecKeyError, match="does not decrypt"):
            await codec.decode([bad])


async def test_clear_payloads_pass_through_decoding():
    clear = Payload(metadata={"encoding": b"json/plain"}, data=b'{"a": 1}')
    assert await EncryptionCodec(KeyRing.generate()).decode([clear]) == [clear]


# ----------------------------------------------------------------------------------------------- key sources
def test_key_file_round_trip_and_mode_checks(tmp_path: Path):
    ring = KeyRing.generate("k1").rotated("k2")
    path = ring.write(tmp_path / "keys.json")
    assert path.stat().st_mode & 0o777 == 0o600
    assert KeyRing.from_file(path) == ring
    for mode in (0o644, 0o604, 0o660, 0o606):
        path.chmod(mode)
        with pytest.raises(CodecKeyError, match=f"accessible to other users \\(mode {mode:04o}\\).*chmod 600"):
            KeyRing.from_file(path)
    for mode in (0o400, 0o640, 0o440):  # group read: a secret volume mounted for the pod's fsGroup
        path.chmod(mode)
        assert KeyRing.from_file(path) == ring


@pytest.mark.parametrize(
    "doc, problem",
    [
        ({"newest": "k2", "keys": {"k1": base64.b64encode(os.urandom(32)).decode()}}, "newest key 'k2' is not among"),
        ({"newest": "k1", "keys": {"k1": base64.b64encode(os.urandom(16)).decode()}}, "16 bytes; AES-256 needs 32"),
        ({"newest": "k1", "keys": {"k1": "not base64!"}}, "not valid base64"),
        ({"keys": {}}, "expected"),
    ],
)
def test_malformed_key_documents_are_refused(tmp_path: Path, doc: dict, problem: str):
    path = tmp_path / "keys.json"
    path.write_text(json.dumps(doc))
    path.chmod(0o600)
    with pytest.raises(CodecKeyError, match=problem):
        KeyRing.from_file(path)


def test_no_codec_configured_means_clear_text(monkeypatch):
    monkeypatch.delenv("RUNBOOK_CODEC_KEYS_FILE", raising=False)
    monkeypatch.delenv("RUNBOOK_CODEC_VAULT_PATH", raising=False)
    assert data_converter(Settings(_env_file=None)) is pydantic_data_converter


def test_settings_read_the_key_file_from_the_environment(monkeypatch, tmp_path: Path):
    path = KeyRing.generate("env-key").write(tmp_path / "k.json")
    monkeypatch.setenv("RUNBOOK_CODEC_KEYS_FILE", str(path))
    converter = data_converter(Settings(_env_file=None))
    assert isinstance(converter.payload_codec, EncryptionCodec) and converter.payload_codec.keyring.newest == "env-key"


def test_keys_from_openbao_kv(openbao, monkeypatch):
    addr, token = openbao
    ring = KeyRing.generate("v1").rotated("v2")
    client = hvac.Client(url=addr, token=token)
    flat = {"newest": ring.newest, **ring.document()["keys"]}
    client.secrets.kv.v2.create_or_update_secret(path="runbook/codec", secret=flat, mount_point="secret")
    monkeypatch.delenv("RUNBOOK_CODEC_KEYS_FILE", raising=False)
    monkeypatch.setenv("RUNBOOK_CODEC_VAULT_PATH", "secret/runbook/codec")
    assert load_keyring(Settings(_env_file=None)) == ring
    with pytest.raises(CodecKeyError, match="secret/runbook/missing"):
        KeyRing.from_vault("secret/runbook/missing")


# ----------------------------------------------------------------------------------------------- a real run
async def _approved_run(env, task_queue: str, recording) -> object:
    _, notifier = recording
    meta = RunbookMeta(runbook="gated-change", target=SERVICE, requested_by=REQUESTER, approval=POLICY)
    async with harness.running_worker(env.client, task_queue, [GatedChange], [notifier.notify]):
        handle = await env.client.start_workflow(
            GatedChange.run,
            GatedChangeInput(meta=meta, service=SERVICE, change=f"restart of {SERVICE}", hold=timedelta(seconds=1)),
            id=f"codec-{uuid.uuid4().hex[:8]}", task_queue=task_queue,
        )
        gate_id = (await _wait_for_gate(handle)).gate.gate_id
        await handle.execute_update(GatedChange.approve, ApproveInput(gate_id=gate_id, approver="bob", reason="ok"))
        result = await handle.result()
    assert result.status == "Succeeded"
    return handle


def _without_search_attributes(history):
    """The history's events with their search attributes removed: those are an index, clear by design (README)."""
    events = []
    for event in history.events:
        copy = type(event)()
        copy.CopyFrom(event)
        for attrs in (copy.workflow_execution_started_event_attributes, copy.upsert_workflow_search_attributes_event_attributes):
            attrs.ClearField("search_attributes")
        events.append(copy)
    return events


async def test_raw_history_of_a_run_holds_no_clear_text_input(ts_env, task_queue, recording):
    handle = await _approved_run(ts_env, task_queue, recording)
    history = await handle.fetch_history()
    raw = b"".join(e.SerializeToString() for e in _without_search_attributes(history))
    assert SERVICE.encode() not in raw and REQUESTER.encode() not in raw and b"json/plain" not in raw
    payloads = list(harness.history_payloads(history))
    encrypted = [p for p in payloads if p.metadata.get("encoding") == ENCODING]
    assert len(encrypted) >= 3 and all(p.metadata[KEY_ID] == b"test-k1" for p in encrypted)
    # what the key holder sees: the input, in full
    clear = await harness.decoded_payload_bytes(history)
    assert SERVICE.encode() in clear and REQUESTER.encode() in clear
    # and a reader without the key cannot even read the input
    with pytest.raises(KeyError, match="Unknown payload encoding binary/encrypted"):
        await converter_for(None).decode(
            list(history.events[0].workflow_execution_started_event_attributes.input.payloads), [GatedChangeInput]
        )


async def test_a_worker_without_the_writers_key_fails_the_task_naming_the_key_id(ts_env, task_queue):
    """A starter on a newer keyring than the worker: the workflow task fails (and retries) with a message naming
    the key id, readable by whoever holds a key (the message itself is encrypted in history)."""

    from temporalio.api.enums.v1 import EventType
    from temporalio.client import Client

    from tests.replay.workflows_under_test import ReplayProbe, probe

    ahead = Client(ts_env.client.service_client, namespace=ts_env.client.namespace,
                   data_converter=converter_for(KeyRing.generate("k-next")))
    async with harness.running_worker(ts_env.client, task_queue, [ReplayProbe], [probe]):
        handle = await ahead.start_workflow(ReplayProbe.run, 1, id=f"ahead-{uuid.uuid4().hex[:8]}", task_queue=task_queue)
        try:  # started through a client of its own (not ts_env's, which terminates what its tests leave open)
            history = await harness.poll(
                ts_env.client.get_workflow_handle(handle.id).fetch_history,
                lambda h: any(e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED for e in h.events),
                "the worker fails the workflow task")
        finally:
            await handle.terminate("test over")
        failed = [e for e in history.events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED]
    failure = failed[0].workflow_task_failed_event_attributes.failure
    assert "k-next" not in failure.message  # encrypted like every failure message
    decoded = await harness.DATA_CONVERTER.decode_failure(failure)
    assert "unknown codec key id 'k-next'" in str(decoded)
