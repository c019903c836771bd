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


# ----------------------------------------------------------------------------------------------- the CLI
def test_codec_keys_init_and_rotate_commands(tmp_path):
    from typer.testing import CliRunner

    from starters.cli import app

    path = tmp_path / "keys.json"
    runner = CliRunner()
    created = runner.invoke(app, ["codec-keys", "init", str(path), "--id", "k1"])
    assert created.exit_code == 0 and path.stat().st_mode & 0o777 == 0o600, created.output
    assert runner.invoke(app, ["codec-keys", "init", str(path)]).exit_code == 2  # never overwrites keys
    rotated = runner.invoke(app, ["codec-keys", "rotate", str(path), "--id", "k2"])
    assert rotated.exit_code == 0 and "keys k1, k2; newest k2" in rotated.output, rotated.output
    ring = KeyRing.from_file(path)
    assert ring.newest == "k2" and set(ring.keys) == {"k1", "k2"}
    path.chmod(0o644)
    refused = runner.invoke(app, ["codec-keys", "rotate", str(path), "--id", "k3"])
    assert refused.exit_code == 2 and "chmod 600" in refused.output


def test_a_client_command_with_an_unsafe_key_file_says_so_in_one_line(tmp_path):
    from typer.testing import CliRunner

    from starters.cli import app

    path = KeyRing.generate().write(tmp_path / "keys.json")
    path.chmod(0o644)
    result = CliRunner().invoke(app, ["list", "--address", "127.0.0.1:1"], env={"RUNBOOK_CODEC_KEYS_FILE": str(path)})
    assert result.exit_code == 2, result.output
    assert "accessible to other users" in result.output and "Traceback" not in result.output
