"""A protocol-faithful stand-in for the Parley server, for widget-only browser tests.

It speaks docs/protocol.md (the widget session REST calls with CORS, and a scripted
`/ws/visitor`), and serves the built `widget/dist/widget.js`. It runs two aiohttp sites in a
background thread, so the widget is exercised the way it is deployed: cross-origin.

- `api_url`  (127.0.0.1:<port>): /widget.js, /api/widget/sessions[/refresh], /ws/visitor
- `site_url` (localhost:<port>): the "customer site": host pages registered with `page()`,
  plus `/demo` (widget/demo.html with its placeholders filled in)

Tests drive it from their own thread: `push()` frames to the visitor, `post()` agent/bot/system
messages, `drop()` every socket, `refuse = True` to refuse new sockets (offline), and read what
the widget sent in `frames`, `hellos`, `session_requests`.
"""
from __future__ import annotations

import asyncio
import copy
import datetime as dt
import json
import secrets
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

ROOT = Path(__file__).resolve().parents[3]
DIST = ROOT / "widget" / "dist"
DEMO_HTML = ROOT / "widget" / "demo.html"
KEY = "pk_test_widget"

DEFAULT_CONFIG: dict[str, Any] = {
    "name": "Acme Bikes",
    "greeting": "Hi! Ask me anything about **Acme Bikes**.",
    "language": "en",
    "starters": ["What are your opening hours?", "Do you ship abroad?"],
    "branding": {"primary_color": "#4f46e5", "position": "right", "title": "Acme support",
                 "avatar_url": None, "launcher_icon": "chat", "hide_powered_by": False},
    "lead_capture": {"mode": "never", "after": 2},
    "nudges": [],
    "max_nudges": 1,
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


def error(status: int, code: str, message: str, headers: dict | None = None) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status, headers=headers)


@dataclass
class Conversation:
    id: str
    status: str = "bot"
    messages: list[dict] = field(default_factory=list)
    by_client_id: dict[str, dict] = field(default_factory=dict)


LANGS = ("en", "es", "fr", "de", "tr")


def widget_actions(db_url: str) -> dict[str, list[dict]]:
    """The visitor buttons the real server puts in a session's config (the actions registry,
    parley.widget_actions), per widget language: read once from the migrated database, so the
    double serves what the registry says rather than a list of its own."""
    import psycopg

    with psycopg.connect(db_url, autocommit=True) as conn:
        rows = conn.execute("SELECT l, parley.widget_actions(jsonb_build_object('language', l), NULL)"
                            " FROM unnest(%s::text[]) l", [list(LANGS)]).fetchall()
    return dict(rows)


class ProtocolDouble:
    def __init__(self, actions: dict[str, list[dict]] | None = None) -> None:
        self.actions = actions or {}  # per language: the registry's visitor buttons (config.actions)
        self._set_defaults()
        self._tasks: set[asyncio.Task] = set()
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="protocol-double")
        self.api_port = _free_port()
        self.site_port = _free_port()
        self.api_url = f"http://127.0.0.1:{self.api_port}"
        self.site_url = f"http://localhost:{self.site_port}"

    # ------------------------------------------------------------------ lifecycle
    def _set_defaults(self) -> None:
        self.config: dict = copy.deepcopy(DEFAULT_CONFIG)
        self.token_ttl = 900.0  # seconds
        self.auto_reply = True  # answer visitor messages with a streamed bot reply
        self.reply_chunks = ["Thanks for ", "asking! ", "See **our docs**."]
        self.refuse = False  # refuse new WebSockets (the visitor is "offline")
        self.session_delay = 0.0  # seconds a new session takes to answer (a slow server)
        self.silent = False  # stop answering pings (a half-open connection)
        self.conversations: dict[str, Conversation] = {}
        self.tokens: dict[str, tuple[str, float]] = {}  # token -> (conversation id, expires at)
        self.sockets: dict[web.WebSocketResponse, str] = {}  # live, authenticated sockets
        self.frames: list[dict] = []  # every frame the widget sent after hello (pings included)
        self.hellos: list[dict] = []
        self.session_requests: list[tuple[str, dict, dict]] = []  # (path, body, headers)
        self.ws_attempts = 0
        self.pages: dict[str, str] = {}
        self._next_id = 100
        self.__dict__.pop("_on_frame", None)  # a test's patched frame handler

    def reset(self) -> None:
        """Forget everything (between tests): state, config, sockets, patched handlers."""
        async def run():
            for task in list(self._tasks):
                task.cancel()
            for ws in list(self.sockets):
                await ws.close()
            self._set_defaults()
        self.call(run)

    def start(self) -> ProtocolDouble:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("protocol double did not start")
        return self

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._start())
        self._ready.set()
        self.loop.run_forever()

    async def _start(self) -> None:
        api = web.Application()
        api.router.add_get("/widget.js", self._script)
        api.router.add_route("OPTIONS", "/api/widget/sessions", self._preflight)
        api.router.add_route("OPTIONS", "/api/widget/sessions/refresh", self._preflight)
        api.router.add_post("/api/widget/sessions", self._session)
        api.router.add_post("/api/widget/sessions/refresh", self._refresh)
        api.router.add_get("/ws/visitor", self._visitor_ws)
        site = web.Application()
        site.router.add_get("/demo", self._demo)
        site.router.add_get("/{path:.*}", self._page)
        self._runners = []
        for app, port in ((api, self.api_port), (site, self.site_port)):
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", port).start()
            self._runners.append(runner)

    def stop(self) -> None:
        async def _stop():
            for task in list(self._tasks):
                task.cancel()
            for ws in list(self.sockets):
                await ws.close()
            for r in self._runners:
                await r.cleanup()
        asyncio.run_coroutine_threadsafe(_stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)

    def call(self, fn: Callable, *args, timeout: float = 10):
        """Run fn(*args) (a coroutine function or plain function) on the double's loop."""
        async def run():
            out = fn(*args)
            return await out if asyncio.iscoroutine(out) else out
        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(timeout)

    # ------------------------------------------------------------------ host pages
    def page(self, path: str = "/", *, head: str = "", body: str = "", script_attrs: str = "") -> str:
        """Register a customer-site page embedding the widget; returns its URL."""
        self.pages[path] = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Host page</title>
<meta name="viewport" content="width=device-width, initial-scale=1">{head}</head>
<body><main><h1>Acme Bikes</h1><p>We build bikes.</p><p><a href="#about">About us</a></p>{body}</main>
<script src="{self.api_url}/widget.js" data-chatbot="{KEY}" {script_attrs} async></script>
</body></html>"""
        return self.site_url + path

    async def _page(self, request: web.Request) -> web.Response:
        html = self.pages.get("/" + request.match_info["path"])
        if html is None:
            return web.Response(status=404, text="no such page")
        return web.Response(text=html, content_type="text/html")

    async def _demo(self, request: web.Request) -> web.Response:
        html = DEMO_HTML.read_text().replace("{{API_BASE}}", self.api_url).replace("{{CHATBOT_KEY}}", KEY)
        return web.Response(text=html, content_type="text/html")

    async def _script(self, request: web.Request) -> web.Response:
        return web.Response(body=(DIST / "widget.js").read_bytes(), content_type="application/javascript",
                            charset="utf-8", headers={"Cache-Control": "no-store",
                                                      "Access-Control-Allow-Origin": "*"})

    # ------------------------------------------------------------------ REST
    def _cors(self, request: web.Request) -> dict:
        origin = request.headers.get("Origin")
        return {"Access-Control-Allow-Origin": origin, "Vary": "Origin"} if origin else {}

    async def _preflight(self, request: web.Request) -> web.Response:
        return web.Response(status=204, headers={
            **self._cors(request), "Access-Control-Allow-Methods": "POST, OPTIONS",
            "Access-Control-Allow-Headers": "Content-Type", "Access-Control-Max-Age": "600"})

    def _issue(self, conv: Conversation, locale: str | None = None) -> dict:
        token = secrets.token_urlsafe(16)
        expires = time.time() + self.token_ttl
        self.tokens[token] = (conv.id, expires)
        config = copy.deepcopy(self.config)
        if "actions" not in config:  # as the server: in the chatbot's language, or with auto the browser's
            lang = config.get("language") or "auto"
            if lang == "auto":
                lang = (locale or "en").split("-")[0].lower()
            config["actions"] = self.actions.get(lang) or self.actions.get("en") or []
        return {"token": token,
                "expires_at": dt.datetime.fromtimestamp(expires, dt.UTC).isoformat(),
                "conversation_id": conv.id, "status": conv.status, "config": config}

    async def _session(self, request: web.Request) -> web.Response:
        cors = self._cors(request)
        body = await request.json()
        self.session_requests.append(("/api/widget/sessions", body, dict(request.headers)))
        if self.session_delay:
            await asyncio.sleep(self.session_delay)  # the slow server being simulated, not a test's wait
        if body.get("chatbot_key") != KEY:
            return error(404, "unknown_chatbot", "No such chatbot.", cors)
        conv = self.conversations.get(body.get("conversation_id") or "")
        if conv is None:
            conv = Conversation(str(uuid.uuid4()))
            self.conversations[conv.id] = conv
        return web.json_response(self._issue(conv, body.get("locale")), status=201, headers=cors)

    async def _refresh(self, request: web.Request) -> web.Response:
        cors = self._cors(request)
        body = await request.json()
        self.session_requests.append(("/api/widget/sessions/refresh", body, dict(request.headers)))
        found = self.tokens.get(body.get("token") or "")
        if found is None or found[1] < time.time() - 3600:
            return error(401, "invalid_token", "Invalid token.", cors)
        return web.json_response(self._issue(self.conversations[found[0]]), status=201, headers=cors)

    # ------------------------------------------------------------------ WebSocket
    def _message(self, conv: Conversation, author: str, body: str, **extra) -> dict:
        self._next_id += 1
        msg = {"id": self._next_id, "author": author, "body": body, "client_id": None,
               "created_at": _now(), "author_name": None, "citations": [], "stream_id": None, **extra}
        conv.messages.append(msg)
        return msg

    async def _broadcast(self, conv_id: str, frame: dict) -> None:
        for ws, cid in list(self.sockets.items()):
            if cid == conv_id and not ws.closed:
                await ws.send_json(frame)

    async def _visitor_ws(self, request: web.Request) -> web.StreamResponse:
        self.ws_attempts += 1
        if self.refuse:
            return web.Response(status=503, text="offline")
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        try:
            hello = await ws.receive_json(timeout=10)
        except (TimeoutError, TypeError, ValueError):
            await ws.close(code=4400, message=b"hello expected")
            return ws
        self.hellos.append(hello)
        found = self.tokens.get(hello.get("token") or "") if hello.get("type") == "hello" else None
        if found is None or found[1] < time.time():
            await ws.close(code=4401, message=b"invalid token")
            return ws
        conv = self.conversations[found[0]]
        self.sockets[ws] = conv.id
        await ws.send_json({"type": "ready", "conversation_id": conv.id, "status": conv.status})
        last = int(hello.get("last_seen_id") or 0)
        for msg in conv.messages:
            if msg["id"] > last:
                await ws.send_json({"type": "message", "message": msg})
        try:
            async for raw in ws:
                if raw.type != WSMsgType.TEXT:
                    continue
                frame = json.loads(raw.data)
                self.frames.append(frame)
                await self._on_frame(ws, conv, frame)
        finally:
            self.sockets.pop(ws, None)
        return ws

    async def _on_frame(self, ws: web.WebSocketResponse, conv: Conversation, frame: dict) -> None:
        kind = frame.get("type")
        if kind == "ping":
            if not self.silent:
                await ws.send_json({"type": "pong"})
        elif kind == "message":
            cid = frame.get("client_id")
            if cid in conv.by_client_id:  # an idempotent resend
                await ws.send_json({"type": "message", "message": conv.by_client_id[cid]})
                return
            msg = self._message(conv, "visitor", frame["body"], client_id=cid)
            conv.by_client_id[cid] = msg
            await self._broadcast(conv.id, {"type": "message", "message": msg})
            if self.auto_reply and conv.status == "bot":
                task = asyncio.ensure_future(self._bot_reply(conv))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        elif kind == "human":
            await self._set_status(conv, "waiting_human")

    async def _bot_reply(self, conv: Conversation) -> None:
        stream_id = secrets.token_hex(6)
        await self._broadcast(conv.id, {"type": "typing", "author": "bot", "on": True})
        await asyncio.sleep(0.05)
        for chunk in self.reply_chunks:
            await self._broadcast(conv.id, {"type": "stream", "stream_id": stream_id, "delta": chunk})
            await asyncio.sleep(0.03)
        msg = self._message(conv, "bot", "".join(self.reply_chunks), stream_id=stream_id,
                            citations=[{"n": 1, "title": "Docs", "url": "https://example.com/docs"}])
        await self._broadcast(conv.id, {"type": "message", "message": msg})

    async def _set_status(self, conv: Conversation, status: str) -> None:
        conv.status = status
        await self._broadcast(conv.id, {"type": "status", "status": status})

    # ------------------------------------------------------------------ test controls
    @property
    def conversation(self) -> Conversation:
        """The only conversation (most tests have exactly one)."""
        assert len(self.conversations) == 1, list(self.conversations)
        return next(iter(self.conversations.values()))

    def push(self, frame: dict, conversation_id: str | None = None) -> None:
        """Send a raw server frame to the visitor sockets of a conversation."""
        self.call(self._broadcast, conversation_id or self.conversation.id, frame)

    def post(self, author: str, body: str, conversation_id: str | None = None, **extra) -> dict:
        """Store a message (agent/bot/system) and deliver it, like the real server."""
        conv = self.conversations[conversation_id] if conversation_id else self.conversation

        async def run():
            msg = self._message(conv, author, body, **extra)
            await self._broadcast(conv.id, {"type": "message", "message": msg})
            return msg
        return self.call(run)

    def set_status(self, status: str, conversation_id: str | None = None) -> None:
        conv = self.conversations[conversation_id] if conversation_id else self.conversation
        self.call(self._set_status, conv, status)

    def drop(self) -> None:
        """Close every visitor socket (the network dropped)."""
        async def run():
            for ws in list(self.sockets):
                await ws.close(code=1001)
            self.sockets.clear()
        self.call(run)

    def frames_of(self, kind: str) -> list[dict]:
        return [f for f in list(self.frames) if f.get("type") == kind]

    @property
    def connected(self) -> int:
        return sum(1 for ws in list(self.sockets) if not ws.closed)
