"""The Temporal web UI, in headless Chromium, shows a run's decoded input through the codec server.

The dev server's UI is pointed at the codec server with ``--ui-codec-endpoint`` (as ``make dev`` does). A browser
that has not been authorised at the codec server sees only ciphertext (the codec server answers 401); once a person
authorised it (the codec server's login sets a cookie, and the UI's codec settings send it: "Include cross-origin
credentials") it shows the input.

Needs Debian's ``chromium`` and ``playwright-core`` from npm in tests/ui/node_modules (.ci/run installs both).
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import pytest
import uvicorn

from starters.codec_server import create_app
from tests import harness
from tests.codec.test_codec import SERVICE, _approved_run
from workers.codec import ENCODING, EncryptionCodec

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "decoded_input.mjs"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
NODE = shutil.which("node")
SECRET = "ui-test-codec-secret"

pytestmark = pytest.mark.skipif(
    not (CHROMIUM and NODE and (HERE / "node_modules" / "playwright-core").exists()),
    reason="needs chromium and `npm ci --prefix tests/ui` (.ci/run installs both)",
)


class _Server(uvicorn.Server):
    def install_signal_handlers(self) -> None:  # in a thread
        pass


def _serve_codec(port: int, ui_origin: str, calls: list) -> tuple[_Server, threading.Thread]:
    """The codec server on ``port``; ``calls`` records (method, path, cookie presented, status) of each request."""
    app = create_app(EncryptionCodec(harness.TEST_KEYRING), SECRET, [ui_origin])

    async def recording(scope, receive, send):
        async def send_and_record(message):
            if message["type"] == "http.response.start":
                cookie = any(name == b"cookie" for name, _ in scope["headers"])
                calls.append((scope["method"], scope["path"], cookie, message["status"]))
            await send(message)

        await (app(scope, receive, send_and_record) if scope["type"] == "http" else app(scope, receive, send))

    server = _Server(uvicorn.Config(recording, host="127.0.0.1", port=port, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    harness.wait_http(f"http://127.0.0.1:{port}/healthz")
    return server, thread


async def _browse(**cfg) -> dict:
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        cfg = {"profile_dir": profile, "chromium": CHROMIUM, **cfg}
        proc = await asyncio.create_subprocess_exec(
            NODE, str(SCRIPT), json.dumps(cfg), cwd=HERE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        out, err = await asyncio.wait_for(proc.communicate(), 90)
    assert proc.returncode == 0, err.decode()[-2000:]
    return json.loads(out.decode().strip().splitlines()[-1])


async def test_ui_shows_the_decoded_input_through_the_codec_server(recording):
    ui_port, codec_port = harness.free_port(), harness.free_port()
    ui, codec = f"http://127.0.0.1:{ui_port}", f"http://127.0.0.1:{codec_port}"
    calls: list[tuple[str, str, bool, int]] = []
    server, thread = _serve_codec(codec_port, ui, calls)
    try:
        env = await harness.start_dev_server(ui_port=ui_port, codec_endpoint=codec)
        async with env:
            handle = await _approved_run(env, harness.new_task_queue(), recording)
            run_id = (await handle.describe()).run_id
            history = await handle.fetch_history()
            [encrypted] = history.events[0].workflow_execution_started_event_attributes.input.payloads
            harness.wait_http(ui)
            seen = await _browse(
                workflow_url=f"{ui}/namespaces/default/workflows/{handle.id}/{run_id}/history",
                expect=SERVICE,
                # a payload it could not decode, the UI shows as it is: its data in base64
                ciphertext=base64.b64encode(encrypted.data).decode()[:24],
                login_url=f"{codec}/login",
                secret=SECRET,
                codec_endpoint=codec,
                timeout_ms=30000,  # the machine is shared; a quiet one takes about 2 s per page
            )
    finally:
        server.should_exit = True
        thread.join(5)
    assert "error" not in seen, seen
    # a browser the codec server does not know: the UI asked it (the dev server's --ui-codec-endpoint), was refused
    assert seen["stranger"] == {"ciphertext": True, "clear": False}, seen
    assert encrypted.metadata["encoding"] == ENCODING and ("POST", "/decode", False, 401) in calls
    # the person who authorised this browser sees the input decoded
    assert seen["person"]["clear"], seen
    assert ("POST", "/decode", True, 200) in calls
    assert not [c for c in calls if c[:2] == ("POST", "/decode") and c[2] and c[3] != 200]
