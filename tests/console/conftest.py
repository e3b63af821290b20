"""Console test helpers: a cookie-keeping HTTP client that signs in through the console form."""
from __future__ import annotations

import re

import aiohttp
import pytest

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


@pytest.fixture
async def console_client(server):
    clients = []

    def make():
        client = ConsoleClient(server.base_url)
        clients.append(client)
        return client

    yield make
    for c in clients:
        await c.close()


ORIGIN = "https://shop.example"


async def make_chatbot(server, token: str, *, name: str = "Helper", origins=(ORIGIN,), config=None) -> dict:
    body = {"name": name, "allowed_origins": list(origins), "config": config or {}}
    status, out = await server.call("POST", "/api/chatbots", json=body, token=token)
    assert status == 201, out
    return out


async def widget_session(server, key: str, *, origin: str = ORIGIN, page_url="https://shop.example/pricing",
                         locale="en-US") -> dict:
    body = {"chatbot_key": key, "conversation_id": None, "page_url": page_url, "referrer": None, "locale": locale}
    status, out = await server.call("POST", "/api/widget/sessions", json=body, headers={"Origin": origin})
    assert status == 201, out
    return out


class Visitor:
    """A visitor on /ws/visitor; `expect` waits for a matching frame (with a timeout, never a sleep)."""

    def __init__(self, http, ws):
        self.http, self.ws, self.frames = http, ws, []

    @classmethod
    async def connect(cls, base_url: str, token: str) -> "Visitor":
        import aiohttp as _a
        http = _a.ClientSession()
        ws = await http.ws_connect(base_url.replace("http", "ws", 1) + "/ws/visitor", heartbeat=None)
        v = cls(http, ws)
        await v.send({"type": "hello", "token": token, "last_seen_id": 0})
        await v.expect(lambda f: f.get("type") == "ready")
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

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
SCREENSHOTS = __import__("pathlib").Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


def browser_sign_in(page, base_url: str, email: str, password: str, next_path: str = "/console/inbox") -> None:
    page.goto(f"{base_url}/console/sign-in?next={next_path}")
    page.fill("#f-email", email)
    page.fill("#f-password", password)
    page.click("button[type=submit]")
    page.wait_for_url(f"**{next_path}*")
