"""The local stack's codec: a key and a codec-server secret under the state folder (mode 0600, kept across starts),
every client pointed at the key, the UI and the temporal CLI pointed at the codec server."""

from __future__ import annotations

import pytest

from core.config import Settings
from starters.dev import DevPorts, DevStack, DevStackError, codec_material
from workers.codec import KeyRing


def test_codec_material_is_created_once_private_and_kept(tmp_path):
    keys, secret = codec_material(tmp_path)
    assert keys == tmp_path / "codec-keys.json" and len(secret) >= 32
    for path in (keys, tmp_path / "codec-token"):
        assert path.stat().st_mode & 0o777 == 0o600
    ring = KeyRing.from_file(keys)
    assert codec_material(tmp_path) == (keys, secret) and KeyRing.from_file(keys) == ring  # a restart keeps them

    keys.chmod(0o644)
    with pytest.raises(DevStackError, match="accessible to other users.*chmod 600"):
        codec_material(tmp_path)
    keys.chmod(0o600)
    (tmp_path / "codec-token").chmod(0o640)
    with pytest.raises(DevStackError, match="codec-token is accessible to other users"):
        codec_material(tmp_path)


def test_clients_ui_and_temporal_cli_are_pointed_at_the_codec(tmp_path):
    ports = DevPorts(codec=18081, ui=18233)
    assert DevPorts.ENV["codec"] == "RUNBOOK_CODEC_SERVER_PORT"
    stack = DevStack(Settings(_env_file=None), tmp_path / "state", ports, out=lambda _: None)
    assert stack.client_env()["RUNBOOK_CODEC_KEYS_FILE"] == str(stack.state_dir / "codec-keys.json")
    env_file = stack.write_env_file().read_text()
    assert "export TEMPORAL_CODEC_ENDPOINT=http://127.0.0.1:18081" in env_file
    assert f'export TEMPORAL_CODEC_AUTH="Bearer $(cat {stack.state_dir / "codec-token"})"' in env_file
    banner = stack.banner()
    assert "codec server    http://127.0.0.1:18081" in banner and "http://127.0.0.1:18081/login" in banner
