"""A wire-format fake of the Slack Web API (the methods the product uses) plus response_url endpoints.

It speaks what slack_sdk's WebClient / AsyncWebClient send (JSON or form bodies, ``Authorization: Bearer``),
answers like Slack (HTTP 200 with ``{"ok": false, "error": ...}`` for API errors, HTTP 429 with ``Retry-After``
for rate limits) and records everything it received so tests can assert on it. Test-only: never product code.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from tests.fakes._server import FakeServer, Request, Response


@dataclass
class Message:
    channel: str
    ts: str
    text: str
    blocks: list = field(default_factory=list)
    thread_ts: str | None = None
    history: list[dict] = field(default_factory=list)  # every version, oldest first

    def all_text(self) -> str:
        """The message as a person reads it: text plus every text in its blocks."""
        out = [self.text]
        _collect(self.blocks, out)
        return "\n".join(out)


def _collect(node: Any, out: list[str]) -> None:
    if isinstance(node, dict):
        if isinstance(node.get("text"), str):
            out.append(node["text"])
        for value in node.values():
            if isinstance(value, (dict, list)):
                _collect(value, out)
    elif isinstance(node, list):
        for item in node:
            _collect(item, out)


class FakeSlack:
    def __init__(self, token: str = "xoxb-test-token") -> None:
        self.token = token
        self.calls: list[tuple[str, dict]] = []
        self.messages: dict[tuple[str, str], Message] = {}
        self.responses: list[tuple[str, dict]] = []  # (response_url key, body)
        self.views: list[dict] = []
        self._rate_limits: dict[str, list[int]] = {}
        self._seq = 0
        self._lock = threading.Lock()
        self.server = FakeServer(self._handle)
        self.url = self.server.url
        self.api_url = f"{self.url}/api/"

    # ------------------------------------------------------------------ control
    def start(self) -> "FakeSlack":
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()

    def rate_limit(self, method: str, times: int = 1, retry_after: int = 1) -> None:
        """Answer the next ``times`` calls of ``method`` with 429 and ``Retry-After: retry_after``."""
        self._rate_limits[method] = [retry_after] * times

    def response_url(self, key: str = "r1") -> str:
        return f"{self.url}/response/{key}"

    def method_calls(self, method: str) -> list[dict]:
        return [body for name, body in self.calls if name == method]

    def channel_messages(self, channel: str) -> list[Message]:
        return [m for (c, _), m in sorted(self.messages.items(), key=lambda kv: kv[0][1]) if c == channel]

    # ------------------------------------------------------------------ the wire
    def _handle(self, req: Request) -> Response:
        if req.path.startswith("/response/"):
            with self._lock:
                self.responses.append((req.path.rsplit("/", 1)[1], req.json or {}))
            return Response(200, b"ok")
        if not req.path.startswith("/api/"):
            return Response(404, {"ok": False, "error": "unknown_path"})
        method = req.path[len("/api/"):]
        args = dict(req.form)
        if isinstance(req.json, dict):
            args.update(req.json)
        args.update({k: v[-1] for k, v in req.query.items() if k not in args})
        for key in ("blocks", "view", "attachments"):
            if isinstance(args.get(key), str):
                args[key] = json.loads(args[key])
        with self._lock:
            pending = self._rate_limits.get(method)
            if pending:
                retry_after = pending.pop(0)
                self.calls.append((method + ":429", args))
                return Response(429, {"ok": False, "error": "ratelimited"}, {"Retry-After": str(retry_after)})
            self.calls.append((method, args))
            auth = req.headers.get("authorization", "")
            token = args.get("token") or auth.removeprefix("Bearer ").strip()
            if token != self.token:
                return Response(200, {"ok": False, "error": "invalid_auth"})
            handler = getattr(self, "_m_" + method.replace(".", "_"), None)
            if handler is None:
                return Response(200, {"ok": False, "error": "unknown_method"})
            return Response(200, handler(args))

    def _next_ts(self) -> str:
        self._seq += 1
        return f"{int(time.time())}.{self._seq:06d}"

    def _m_auth_test(self, args: dict) -> dict:
        return {"ok": True, "url": "https://fake.slack.com/", "team": "Fake", "user": "runbooks",
                "team_id": "T0FAKE", "user_id": "U0BOT", "bot_id": "B0BOT"}

    def _m_chat_postMessage(self, args: dict) -> dict:
        channel = args.get("channel")
        if not channel:
            return {"ok": False, "error": "channel_not_found"}
        if not args.get("text") and not args.get("blocks"):
            return {"ok": False, "error": "no_text"}
        ts = self._next_ts()
        msg = Message(channel, ts, args.get("text", ""), args.get("blocks") or [], args.get("thread_ts"))
        msg.history.append({"text": msg.text, "blocks": msg.blocks})
        self.messages[(channel, ts)] = msg
        return {"ok": True, "channel": channel, "ts": ts, "message": {"text": msg.text, "ts": ts}}

    def _m_chat_update(self, args: dict) -> dict:
        key = (args.get("channel"), args.get("ts"))
        msg = self.messages.get(key)  # type: ignore[arg-type]
        if msg is None:
            return {"ok": False, "error": "message_not_found"}
        msg.text = args.get("text", msg.text)
        if "blocks" in args:
            msg.blocks = args["blocks"] or []
        msg.history.append({"text": msg.text, "blocks": msg.blocks})
        return {"ok": True, "channel": msg.channel, "ts": msg.ts, "text": msg.text}

    def _m_chat_postEphemeral(self, args: dict) -> dict:
        return {"ok": True, "message_ts": self._next_ts()}

    def _m_views_open(self, args: dict) -> dict:
        if not args.get("trigger_id"):
            return {"ok": False, "error": "invalid_trigger_id"}
        view = args.get("view") or {}
        self.views.append(view)
        return {"ok": True, "view": {**view, "id": f"V{len(self.views):04d}"}}
