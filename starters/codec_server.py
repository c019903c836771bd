"""``runbook codec-server``: Temporal's remote codec protocol, so the web UI and the ``temporal`` CLI show decoded data.

The protocol (temporalio/samples-go ``codec-server/protocol.md``): ``POST .../encode`` and ``POST .../decode`` take
and return ``{"payloads": [...]}``, each payload in protobuf JSON (base64 ``metadata`` values and ``data``); only
the last part of the path matters; the UI sends ``X-Namespace``. Decoding uses the product's own codec
(``workers.codec``), so it decrypts exactly what the workers wrote, under any key of the keyring.

Who may call it: every request to encode or decode must carry the configured secret (``RUNBOOK_CODEC_SERVER_TOKEN``),
either as ``Authorization: Bearer <secret>`` (the ``temporal`` CLI's ``--codec-auth``, or the UI's forwarded header
behind a proxy that adds it) or as the session cookie a browser gets from ``/login`` (for a UI without login, as the
dev server's: the UI sends it when its codec setting "Include cross-origin credentials" is on). Anything else gets
401. Browsers may call it only from the configured UI origins (CORS); a preflight from another origin gets 400.
Payload contents are never logged.
"""

from __future__ import annotations

import hashlib
import hmac
import html
from urllib.parse import urlsplit

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse, JSONResponse, Response
from google.protobuf import json_format
from temporalio.api.common.v1 import Payloads
from temporalio.converter import PayloadCodec

from core.config import Settings

COOKIE = "runbook_codec_session"


def _session_value(secret: str) -> str:
    """What the login cookie holds: derived from the secret, so the secret itself never sits in a browser."""
    return hmac.new(secret.encode(), b"runbook codec-server session", hashlib.sha256).hexdigest()


def ui_origins(settings: Settings) -> list[str]:
    if settings.codec_server_cors_origins:
        return list(settings.codec_server_cors_origins)
    parts = urlsplit(settings.ui_url)
    return [f"{parts.scheme}://{parts.netloc}"]


def create_app(codec: PayloadCodec, secret: str, cors_origins: list[str]) -> FastAPI:
    if not secret:
        raise ValueError("the codec server needs a secret its callers present")
    session = _session_value(secret)
    api = FastAPI(title="runbook codec server", docs_url=None, redoc_url=None, openapi_url=None)

    def authorised(request: Request) -> bool:
        header = request.headers.get("authorization", "")
        scheme, _, presented = header.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(presented.strip().encode(), secret.encode()):
            return True
        cookie = request.cookies.get(COOKIE, "")
        return bool(cookie) and hmac.compare_digest(cookie.encode(), session.encode())

    async def convert(request: Request, decode: bool) -> Response:
        if not authorised(request):
            return JSONResponse({"error": "unauthorised: present the codec server's secret (Authorization: Bearer)"},
                                status_code=401, headers={"WWW-Authenticate": 'Bearer realm="runbook codec"'})
        try:
            payloads = json_format.Parse(await request.body(), Payloads())
        except json_format.ParseError as err:
            return JSONResponse({"error": f"body is not Payloads JSON: {err}"}, status_code=400)
        try:
            converted = await (codec.decode if decode else codec.encode)(list(payloads.payloads))
        except Exception as err:  # an unknown key id, a tampered payload: say which, never what it holds
            return JSONResponse({"error": str(err)}, status_code=400)
        return Response(json_format.MessageToJson(Payloads(payloads=converted)), media_type="application/json")

    @api.post("/decode")
    @api.post("/{prefix:path}/decode")
    async def decode(request: Request) -> Response:
        return await convert(request, decode=True)

    @api.post("/encode")
    @api.post("/{prefix:path}/encode")
    async def encode(request: Request) -> Response:
        return await convert(request, decode=False)

    @api.get("/healthz")
    async def healthz() -> dict:
        return {"ok": True}

    @api.get("/login", response_class=HTMLResponse)
    async def login_form() -> str:
        return _page("Present the codec server's secret to let this browser decode Temporal data.", form=True)

    @api.post("/login", response_class=HTMLResponse)
    async def login(request: Request) -> Response:
        from urllib.parse import parse_qs

        form = parse_qs((await request.body()).decode(errors="replace"))
        presented = (form.get("token") or [""])[0].strip()
        if not hmac.compare_digest(presented.encode(), secret.encode()):
            return HTMLResponse(_page("Wrong secret.", form=True), status_code=403)
        response = HTMLResponse(_page(
            "This browser may now decode. In the Temporal UI's codec server settings, turn on "
            "\"Include cross-origin credentials\"."))
        response.set_cookie(COOKIE, session, httponly=True, samesite="strict", secure=request.url.scheme == "https",
                            max_age=12 * 3600)
        return response

    api.add_middleware(
        CORSMiddleware,
        allow_origins=cors_origins,
        allow_credentials=True,
        allow_methods=["POST"],
        allow_headers=["Authorization", "Content-Type", "X-Namespace"],
        max_age=600,
    )
    return api


def _page(message: str, form: bool = False) -> str:
    body = f"<p>{html.escape(message)}</p>"
    if form:
        body += ('<form method="post" action="/login"><input type="password" name="token" autofocus>'
                 '<button type="submit">Authorise this browser</button></form>')
    return f"<!doctype html><title>runbook codec server</title><h1>runbook codec server</h1>{body}"


def app_from_settings(settings: Settings) -> FastAPI:
    """The app for ``settings``; raises ``CodecKeyError`` or ``ValueError`` with a one-line reason."""
    from workers.codec import CodecKeyError, EncryptionCodec, load_keyring

    keyring = load_keyring(settings)
    if keyring is None:
        raise CodecKeyError("no codec keys configured: set RUNBOOK_CODEC_KEYS_FILE or RUNBOOK_CODEC_VAULT_PATH")
    if settings.codec_server_token is None or not settings.codec_server_token.get_secret_value():
        raise ValueError("set RUNBOOK_CODEC_SERVER_TOKEN: the secret callers must present")
    return create_app(EncryptionCodec(keyring), settings.codec_server_token.get_secret_value(), ui_origins(settings))


def serve(settings: Settings) -> None:
    """``runbook codec-server``: serve the app with uvicorn (no access log: paths are harmless, bodies are not)."""
    import uvicorn

    app = app_from_settings(settings)
    uvicorn.run(app, host=settings.codec_server_host, port=settings.codec_server_port, log_level="info",
                access_log=False)
