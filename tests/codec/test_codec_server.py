"""`runbook codec-server`: Temporal's remote codec protocol, its callers' authorisation and CORS for the UI origin."""

from __future__ import annotations

import httpx
import pytest
from google.protobuf import json_format
from temporalio.api.common.v1 import Payload, Payloads

from core.config import Settings
from starters.codec_server import COOKIE, app_from_settings, create_app, ui_origins
from tests import harness
from tests.codec.test_codec import REQUESTER, SERVICE, _approved_run
from workers.codec import CodecKeyError, EncryptionCodec, KeyRing

SECRET = "codec-test-secret"
UI = "http://127.0.0.1:8233"
AUTH = {"Authorization": f"Bearer {SECRET}"}


@pytest.fixture
def server() -> httpx.AsyncClient:
    app = create_app(EncryptionCodec(harness.TEST_KEYRING), SECRET, [UI])
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://codec")


def _body(payloads: list[Payload]) -> str:
    return json_format.MessageToJson(Payloads(payloads=payloads))


def _payloads(response: httpx.Response) -> list[Payload]:
    assert response.status_code == 200, response.text
    return list(json_format.Parse(response.text, Payloads()).payloads)


async def test_decoding_a_runs_history_through_the_server_returns_the_original(ts_env, task_queue, recording, server):
    handle = await _approved_run(ts_env, task_queue, recording)
    history = await handle.fetch_history()
    [encrypted] = history.events[0].workflow_execution_started_event_attributes.input.payloads
    response = await server.post("/decode", content=_body([encrypted]), headers={**AUTH, "X-Namespace": "default"})
    [clear] = _payloads(response)
    [original] = await harness.DATA_CONVERTER.payload_codec.decode([encrypted])
    assert clear == original and clear.metadata["encoding"] == b"json/plain"
    assert SERVICE.encode() in clear.data and REQUESTER.encode() in clear.data
    # the wire format is protobuf JSON: base64 data and metadata values, as the UI and the temporal CLI send them
    assert response.json()["payloads"][0]["metadata"]["encoding"] == "anNvbi9wbGFpbg=="


async def test_encode_then_decode_any_path_prefix(server):
    clear = Payload(metadata={"encoding": b"json/plain"}, data=b'{"colour": "green"}')
    [encoded] = _payloads(await server.post("/default/encode", content=_body([clear]), headers=AUTH))
    assert encoded.metadata["encoding"] == b"binary/encrypted" and b"green" not in encoded.data
    assert _payloads(await server.post("/some/prefix/decode", content=_body([encoded]), headers=AUTH)) == [clear]


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {SECRET}"}, {"Authorization": SECRET},
     {"Cookie": f"{COOKIE}={SECRET}"}],
    ids=["none", "wrong-bearer", "basic", "bare", "cookie-with-raw-secret"],
)
async def test_requests_without_authorisation_get_401(server, headers):
    clear = Payload(metadata={"encoding": b"json/plain"}, data=b"1")
    for path in ("/decode", "/encode"):
        response = await server.post(path, content=_body([clear]), headers=headers)
        assert response.status_code == 401, (path, response.text)
        assert "payloads" not in response.text


async def test_a_browser_authorised_once_by_login_decodes_with_its_cookie(server):
    refused = await server.post("/login", data={"token": "guess"})
    assert refused.status_code == 403 and COOKIE not in refused.headers.get("set-cookie", "")
    accepted = await server.post("/login", data={"token": SECRET})
    assert accepted.status_code == 200
    cookie = accepted.headers["set-cookie"]
    assert SECRET not in cookie and "httponly" in cookie.lower() and "samesite=strict" in cookie.lower()
    [encoded] = await harness.DATA_CONVERTER.payload_codec.encode([Payload(data=b"x")])
    assert _payloads(await server.post("/decode", content=_body([encoded]))) == [Payload(data=b"x")]  # cookie jar


async def test_cors_preflight_is_answered_for_the_ui_origin_only(server):
    ask = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type,x-namespace,authorization"}
    ok = await server.options("/decode", headers={"Origin": UI, **ask})
    assert ok.status_code == 200
    assert ok.headers["access-control-allow-origin"] == UI and ok.headers["access-control-allow-credentials"] == "true"
    assert "x-namespace" in ok.headers["access-control-allow-headers"].lower()
    other = await server.options("/decode", headers={"Origin": "http://evil.example", **ask})
    assert other.status_code == 400 and "access-control-allow-origin" not in other.headers
    # a real request from the UI origin carries the CORS header; from another origin it does not
    [encoded] = await harness.DATA_CONVERTER.payload_codec.encode([Payload(data=b"x")])
    response = await server.post("/decode", content=_body([encoded]), headers={**AUTH, "Origin": UI})
    assert response.headers["access-control-allow-origin"] == UI
    response = await server.post("/decode", content=_body([encoded]), headers={**AUTH, "Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in response.headers


async def test_unknown_key_id_is_a_400_naming_it(server):
    [foreign] = await EncryptionCodec(KeyRing.generate("someone-elses")).encode([Payload(data=b"x")])
    response = await server.post("/decode", content=_body([foreign]), headers=AUTH)
    assert response.status_code == 400 and "'someone-elses'" in response.json()["error"]
    bad = await server.post("/decode", content="{not json", headers=AUTH)
    assert bad.status_code == 400


def test_settings_the_server_needs(monkeypatch, tmp_path):
    monkeypatch.delenv("RUNBOOK_CODEC_KEYS_FILE", raising=False)
    with pytest.raises(CodecKeyError, match="no codec keys configured"):
        app_from_settings(Settings(_env_file=None, codec_server_token=SECRET))
    keys = KeyRing.generate().write(tmp_path / "k.json")
    with pytest.raises(ValueError, match="RUNBOOK_CODEC_SERVER_TOKEN"):
        app_from_settings(Settings(_env_file=None, codec_keys_file=keys))
    assert ui_origins(Settings(_env_file=None, ui_url="http://127.0.0.1:8233/namespaces")) == ["http://127.0.0.1:8233"]
    monkeypatch.setenv("RUNBOOK_CODEC_SERVER_CORS_ORIGINS", '["https://temporal.example.com"]')
    assert ui_origins(Settings(_env_file=None)) == ["https://temporal.example.com"]
