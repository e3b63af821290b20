"""Realtime tests: a tenant with a chatbot, real WebSocket and SSE clients that wait on frames."""
from __future__ import annotations

import asyncio
import contextlib
import json
import uuid

import aiohttp
import pytest

ORIGIN = "https://shop.example"
TIMEOUT = 10.0


class Client:
    """A real WebSocket client; `expect` waits (with a timeout, never a sleep) for a matching frame."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, session: aiohttp.ClientSession):
        self.ws = ws
        self.session = session
        self.frames: list[dict] = []  # everything received, in order
        self._seen = 0

    @classmethod
    async def connect(cls, base_url: str, path: str) -> Client:
        session = aiohttp.ClientSession()
        try:
            ws = await session.ws_connect(base_url.replace("http", "ws", 1) + path, heartbeat=None)
        except BaseException:  # refused (a test may expect it), or cancelled: no session left to the collector
            await session.close()
            raise
        return cls(ws, session)

    async def send(self, frame: dict) -> None:
        await self.ws.send_str(json.dumps(frame))

    async def _next(self, timeout: float) -> dict | None:
        msg = await self.ws.receive(timeout=timeout)
        if msg.type == aiohttp.WSMsgType.TEXT:
            frame = json.loads(msg.data)
            self.frames.append(frame)
            return frame
        if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
            raise ConnectionError(f"closed: {self.ws.close_code}")
        return None

    async def expect(self, pred=None, *, timeout: float = TIMEOUT, **match) -> dict:
        """The first frame not yet consumed that matches `pred(frame)` / `frame[k] == v`."""
        def ok(frame):
            if any(frame.get(k) != v for k, v in match.items()):
                return False
            return pred(frame) if pred else True

        while self._seen < len(self.frames):
            frame = self.frames[self._seen]
            self._seen += 1
            if ok(frame):
                return frame
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(f"no frame matching {match or pred} within {timeout}s; got {self.frames[-10:]}")
            frame = await asyncio.wait_for(self._next(remaining), remaining)
            self._seen = len(self.frames)
            if frame is not None and ok(frame):
                return frame

    async def expect_message(self, body: str | None = None, *, author: str | None = None, **kw) -> dict:
        def pred(f):
            m = f.get("message") or {}
            return ((body is None or m.get("body") == body) and (author is None or m.get("author") == author))
        return (await self.expect(pred, type="message", **kw))["message"]

    async def expect_event(self, kind: str, pred=None, **kw) -> dict:
        def ok(f):
            ev = f.get("event") or {}
            return ev.get("kind") == kind and (pred is None or pred(ev))
        return (await self.expect(ok, type="event", **kw))["event"]

    async def expect_closed(self, timeout: float = TIMEOUT) -> int | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            try:
                await self._next(max(0.01, deadline - loop.time()))
            except ConnectionError:
                return self.ws.close_code
            if loop.time() > deadline:
                raise AssertionError("socket still open")

    async def close(self) -> None:
        await self.ws.close()
        await self.session.close()


async def create_chatbot(owner_conn, tenant_id, *, origins=(ORIGIN,), config=None, name="Helper") -> dict:
    row = await owner_conn.fetchrow(
        "INSERT INTO parley.chatbots (tenant_id, name, allowed_origins, config) VALUES ($1, $2, $3, $4)"
        " RETURNING id, public_key", uuid.UUID(str(tenant_id)), name, list(origins), config or {})
    return {"chatbot_id": row["id"], "key": row["public_key"]}


async def widget_session(server, key: str, *, origin: str | None = ORIGIN, conversation_id=None,
                         expect: int = 201, start: bool = True) -> dict:
    """A widget session; with `start` (the default here) its conversation starts at once."""
    headers = {"Origin": origin} if origin else {}
    body = {"chatbot_key": key, "conversation_id": str(conversation_id) if conversation_id else None,
            "page_url": "https://shop.example/pricing", "referrer": None, "locale": "en-US", "start": start}
    status, out = await server.call("POST", "/api/widget/sessions", json=body, headers=headers)
    assert status == expect, out
    return out


async def visitor(server, session: dict, last_seen_id: int = 0) -> Client:
    client = await Client.connect(server.base_url, "/ws/visitor")
    await client.send({"type": "hello", "token": session["token"], "last_seen_id": last_seen_id})
    await client.expect(type="ready")
    return client


async def agent(server, token: str, last_event_id: int | None = None) -> Client:
    client = await Client.connect(server.base_url, "/ws/agent")
    hello = {"type": "hello", "token": token}
    if last_event_id is not None:
        hello["last_event_id"] = last_event_id
    await client.send(hello)
    await client.expect(type="ready")
    return client


@pytest.fixture(autouse=True)
def placeholder_bot(monkeypatch):
    """Realtime tests use the placeholder bot (fast, deterministic); the assistant has its own tests.

    The assistant installs itself per application in its `setup(app)`; apps made during the test
    skip that, so their visitor hooks keep the placeholder."""
    from pyapp.assistant import responder
    monkeypatch.setattr(responder, "setup", lambda app: None)


@pytest.fixture
async def tenant(server, signup, owner_conn):
    """A workspace (owner signed in) with one chatbot allowing ORIGIN."""
    owner = await signup(server)
    bot = await create_chatbot(owner_conn, owner["tenant_id"])
    return {**owner, **bot}


@pytest.fixture
async def clients():
    """Collects clients and closes them after the test."""
    opened: list[Client] = []
    yield opened
    for c in opened:
        with contextlib.suppress(Exception):
            await c.close()


class SseClient:
    """A streaming GET /api/events reader that parses Server-Sent Events."""

    def __init__(self, resp: aiohttp.ClientResponse, session: aiohttp.ClientSession):
        self.resp = resp
        self.session = session
        self.events: list[dict] = []  # {"id", "event", "data"} plus comments as {"comment"}
        self._seen = 0
        self._buf: dict = {}

    @classmethod
    async def connect(cls, server, token: str, last_event_id: int | None = None) -> SseClient:
        session = aiohttp.ClientSession()
        headers = {"Authorization": f"Bearer {token}", "Accept": "text/event-stream"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = str(last_event_id)
        try:
            resp = await session.get(server.base_url + "/api/events", headers=headers)
        except BaseException:
            await session.close()
            raise
        return cls(resp, session)

    async def _read_one(self, timeout: float) -> None:
        line = await asyncio.wait_for(self.resp.content.readline(), timeout)
        if not line:
            raise ConnectionError("stream ended")
        text = line.decode().rstrip("\n")
        if text == "":
            if self._buf:
                if "data" in self._buf:
                    self._buf["data"] = json.loads(self._buf["data"])
                self.events.append(self._buf)
                self._buf = {}
        elif text.startswith(":"):
            self.events.append({"comment": text[1:].strip()})
        else:
            field, _, value = text.partition(":")
            value = value[1:] if value.startswith(" ") else value
            self._buf[field] = self._buf.get(field, "") + value if field == "data" else value

    async def expect(self, pred, timeout: float = TIMEOUT) -> dict:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            while self._seen < len(self.events):
                ev = self.events[self._seen]
                self._seen += 1
                if pred(ev):
                    return ev
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(f"no matching SSE event within {timeout}s; got {self.events[-10:]}")
            await self._read_one(remaining)

    async def expect_event(self, kind: str, pred=None, timeout: float = TIMEOUT) -> dict:
        ev = await self.expect(lambda e: isinstance(e.get("data"), dict) and e["data"].get("kind") == kind
                               and (pred is None or pred(e["data"])), timeout)
        return ev

    async def close(self) -> None:
        self.resp.close()
        await self.session.close()
