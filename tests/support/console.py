"""Console tests: a cookie-keeping client for /console, visitors, chatbots, seeded analytics."""
from __future__ import annotations

import re

import aiohttp
import pytest

from support.browser import SCREENSHOTS  # noqa: F401 (the console tests' screenshots go there too)

CSRF_RE = re.compile(r'name="_csrf" value="([^"]+)"')


class ConsoleClient:
    """An aiohttp session with its own cookie jar, talking to /console like a browser would."""

    def __init__(self, base_url: str):
        self.base_url = base_url
        self.http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        self.csrf = ""

    async def get(self, path: str, **kw):
        async with self.http.get(self.base_url + path, allow_redirects=kw.pop("allow_redirects", True), **kw) as r:
            text = await r.text()
            m = CSRF_RE.search(text)
            if m and "/console/sign-in" not in str(r.url):
                self.csrf = m.group(1)
            return r.status, text, r

    async def post(self, path: str, data: dict | None = None, *, csrf: bool = True, **kw):
        data = dict(data or {})
        if csrf and "_csrf" not in data:
            data["_csrf"] = self.csrf
        async with self.http.post(self.base_url + path, data=data,
                                  allow_redirects=kw.pop("allow_redirects", True), **kw) as r:
            text = await r.text()
            m = CSRF_RE.search(text)
            if m and "/console/sign-in" not in str(r.url):
                self.csrf = m.group(1)
            return r.status, text, r

    async def sign_in(self, email: str, password: str):
        status, text, _ = await self.get("/console/sign-in")
        token = CSRF_RE.search(text).group(1)
        status, text, resp = await self.post("/console/sign-in", {"email": email, "password": password,
                                                                 "_csrf": token, "next": "/console/inbox"})
        assert status == 200, text[:500]
        assert "/console/inbox" in str(resp.url), resp.url
        return text

    async def close(self):
        await self.http.close()


ORIGIN = "https://shop.example"


async def make_chatbot(server, token: str, *, name: str = "Helper", origins=(ORIGIN,), config=None) -> dict:
    body = {"name": name, "allowed_origins": list(origins), "config": config or {}}
    status, out = await server.call("POST", "/api/chatbots", json=body, token=token)
    assert status == 201, out
    return out


async def widget_session(server, key: str, *, origin: str = ORIGIN, page_url="https://shop.example/pricing",
                         locale="en-US", start: bool = True) -> dict:
    """A widget session; with `start` (the default here) its conversation starts at once."""
    body = {"chatbot_key": key, "conversation_id": None, "page_url": page_url, "referrer": None, "locale": locale,
            "start": start}
    status, out = await server.call("POST", "/api/widget/sessions", json=body, headers={"Origin": origin})
    assert status == 201, out
    return out


class Visitor:
    """A visitor on /ws/visitor; `expect` waits for a matching frame (with a timeout, never a sleep)."""

    def __init__(self, http, ws):
        self.http, self.ws, self.frames = http, ws, []

    @classmethod
    async def connect(cls, base_url: str, token: str) -> Visitor:
        import aiohttp as _a
        http = _a.ClientSession()
        try:
            ws = await http.ws_connect(base_url.replace("http", "ws", 1) + "/ws/visitor", heartbeat=None)
            v = cls(http, ws)
            await v.send({"type": "hello", "token": token, "last_seen_id": 0})
            await v.expect(lambda f: f.get("type") == "ready")
        except BaseException:  # refused or cancelled: no session left to the garbage collector
            await http.close()
            raise
        return v

    async def send(self, frame: dict) -> None:
        import json as _j
        await self.ws.send_str(_j.dumps(frame))

    async def expect(self, pred, timeout: float = 10.0) -> dict:
        import asyncio as _aio
        import json as _j
        for f in self.frames:
            if pred(f):
                self.frames.remove(f)
                return f
        loop = _aio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(f"no matching frame; got {self.frames[-10:]}")
            msg = await self.ws.receive(timeout=remaining)
            if msg.type != 1:  # TEXT
                raise AssertionError(f"socket closed: {msg}")
            frame = _j.loads(msg.data)
            if pred(frame):
                return frame
            self.frames.append(frame)

    async def say(self, body: str) -> dict:
        import uuid as _u
        await self.send({"type": "message", "client_id": str(_u.uuid4()), "body": body})
        return await self.expect(lambda f: f.get("type") == "message" and f["message"]["body"] == body
                                 and f["message"]["author"] == "visitor")

    async def close(self):
        await self.ws.close()
        await self.http.close()


# ---- browser (Playwright with Debian chromium; never `playwright install`) -----------------

def browser_sign_in(page, base_url: str, email: str, password: str, next_path: str = "/console/inbox") -> None:
    page.goto(f"{base_url}/console/sign-in?next={next_path}")
    page.fill("#f-email", email)
    page.fill("#f-password", password)
    page.click("button[type=submit]")
    page.wait_for_url(f"**{next_path}*")


async def seed_analytics(conn, tenant_id, chatbot_id) -> dict:
    """Arrange a month of history as the schema owner: conversations, human requests and agent
    replies, assistant turns (some ungrounded), ratings and thumbs. Returns a few ids."""
    import datetime as _dt
    import random
    import uuid as _uuid

    rnd = random.Random(7)
    tenant_id, chatbot_id = _uuid.UUID(str(tenant_id)), _uuid.UUID(str(chatbot_id))
    now = _dt.datetime.now(_dt.UTC)
    questions = ["how long does shipping take", "can i return a mug", "do you ship to brazil",
                 "are the bowls dishwasher safe", "what are your opening hours"]
    down_conv = None
    for day in range(29, -1, -1):
        for _ in range(rnd.randint(1, 5)):
            at = now - _dt.timedelta(days=day, minutes=rnd.randint(5, 600))
            human = rnd.random() < 0.35
            closed = rnd.random() < 0.8
            conv = await conn.fetchval(
                "INSERT INTO parley.conversations (tenant_id, chatbot_id, status, visitor_id, created_at,"
                " last_activity_at, closed_at, page_url, locale) VALUES ($1, $2, $3, $4, $5, $5, $6,"
                " 'https://shop.example/', 'en') RETURNING id",
                tenant_id, chatbot_id, "closed" if closed else "bot", _uuid.uuid4(), at,
                at + _dt.timedelta(minutes=20) if closed else None)
            q = rnd.choice(questions)
            qid = await conn.fetchval(
                "INSERT INTO parley.messages (tenant_id, conversation_id, author, body, created_at)"
                " VALUES ($1, $2, 'visitor', $3, $4) RETURNING id", tenant_id, conv, q + "?", at)
            grounded = q != "do you ship to brazil"
            rid = await conn.fetchval(
                "INSERT INTO parley.messages (tenant_id, conversation_id, author, body, created_at)"
                " VALUES ($1, $2, 'bot', $3, $4) RETURNING id", tenant_id, conv,
                "Here is what I found." if grounded else "I'm not sure.", at + _dt.timedelta(seconds=3))
            await conn.execute(
                "INSERT INTO parley.assistant_turns (tenant_id, chatbot_id, conversation_id, question_message_id,"
                " reply_message_id, question_norm, outcome, grounded, created_at) VALUES ($1, $2, $3, $4, $5, $6,"
                " $7, $8, $9)", tenant_id, chatbot_id, conv, qid, rid, q, "answered" if grounded else "unknown",
                grounded, at + _dt.timedelta(seconds=3))
            if human:
                req = at + _dt.timedelta(minutes=1)
                await conn.execute(
                    "INSERT INTO parley.events (tenant_id, kind, conversation_id, actor_kind, at)"
                    " VALUES ($1, 'human_requested', $2, 'visitor', $3)", tenant_id, conv, req)
                await conn.execute(
                    "INSERT INTO parley.messages (tenant_id, conversation_id, author, body, created_at)"
                    " VALUES ($1, $2, 'agent', 'Hello, a human here.', $3)", tenant_id, conv,
                    req + _dt.timedelta(seconds=rnd.randint(20, 400)))
            if closed and rnd.random() < 0.6:
                await conn.execute(
                    "INSERT INTO parley.conversation_ratings (tenant_id, conversation_id, chatbot_id, score, created_at)"
                    " VALUES ($1, $2, $3, $4, $5)", tenant_id, conv, chatbot_id, rnd.choice([3, 4, 4, 5, 5]),
                    at + _dt.timedelta(minutes=21))
            if rnd.random() < 0.5:
                value = "up" if grounded else "down"
                await conn.execute(
                    "INSERT INTO parley.message_feedback (tenant_id, message_id, conversation_id, chatbot_id, value,"
                    " comment, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)", tenant_id, rid, conv, chatbot_id,
                    value, "" if value == "up" else "<b>useless</b> answer", at + _dt.timedelta(seconds=10))
                if value == "down":
                    down_conv = conv
    return {"down_conversation": down_conv}


@pytest.fixture
async def console_client(server):
    """`make()` -> a new ConsoleClient on the test's server; all are closed after the test."""
    clients = []

    def make():
        client = ConsoleClient(server.base_url)
        clients.append(client)
        return client

    yield make
    for c in clients:
        await c.close()
