"""The Temporal web UI, in headless Chromium, shows a run's decoded input through the codec server.

The dev server's UI is pointed at the codec server with ``--ui-codec-endpoint`` (as ``make dev`` does). A browser
that has not been authorised at the codec server sees only ciphertext (the codec server answers 401); once a person
authorised it (the codec server's login sets a cookie, and the UI's codec settings send it: "Include cross-origin
credentials") it shows the input.

The UI page is loaded once, by the person: the load is most of the test's CPU. The stranger is checked over plain HTTP:
the UI's settings (what its page reads) name the codec server, which refuses the page's decode request without the
cookie; what the UI then shows (the payload as it is) is the UI's own doing.

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

import httpx
import pytest
import uvicorn
from temporalio.api.common.v1 import Payload

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


async def _as_stranger(ui: str, codec: str, payload: Payload) -> dict:
    """What a browser the codec server does not know gets: the codec endpoint in the UI's settings, and the codec
    server's answer to the decode request the UI page sends (cross-origin, no cookie, the remote codec's JSON)."""
    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    body = {"payloads": [{"metadata": {k: b64(v) for k, v in payload.metadata.items()}, "data": b64(payload.data)}]}
    async with httpx.AsyncClient(timeout=30) as client:
        settings = (await client.get(f"{ui}/api/v1/settings")).json()
    # a client of its own: the UI's answer sets a cookie for the host, which the page's fetch would not send here
    async with httpx.AsyncClient(timeout=30) as client:
        refused = await client.post(f"{codec}/decode", json=body, headers={"Origin": ui, "X-Namespace": "default"})
    return {"codec": settings["Codec"], "status": refused.status_code, "body": refused.text}


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
            stranger = await _as_stranger(ui, codec, encrypted)
            seen = await _browse(
                workflow_url=f"{ui}/namespaces/default/workflows/{handle.id}/{run_id}/history",
                expect=SERVICE,
                login_url=f"{codec}/login",
                secret=SECRET,
                codec_endpoint=codec,
                timeout_ms=30000,  # the machine is shared; a quiet one takes about 2 s per page
            )
    finally:
        server.should_exit = True
        thread.join(5)
    assert "error" not in seen, seen
    # a browser the codec server does not know: the UI's settings point it at the codec server (the dev server's
    # --ui-codec-endpoint), which refuses the decode request the UI page sends without the cookie
    # (and do not have the page send credentials: without the person's own setting, its request carries no cookie)
    assert stranger["codec"]["Endpoint"] == codec and not stranger["codec"]["IncludeCredentials"], stranger
    assert stranger["status"] == 401 and SERVICE not in stranger["body"], stranger
    assert encrypted.metadata["encoding"] == ENCODING and ("POST", "/decode", False, 401) in calls
    # the person who authorised this browser sees the input decoded
    assert seen["person"]["clear"], seen
    assert ("POST", "/decode", True, 200) in calls
    assert not [c for c in calls if c[:2] == ("POST", "/decode") and c[2] and c[3] != 200]
