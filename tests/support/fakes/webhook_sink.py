"""A webhook receiver on 127.0.0.1 that checks Standard Webhooks signatures on its own.

The verification follows the spec's reference algorithm and shares no code with Parley's
signer: base64-decode the secret after `whsec_`, HMAC-SHA256 over `id.timestamp.body`,
compare in constant time with every `v1,` value of the header, reject timestamps more than
five minutes away. Answers are scripted per request (`script`), default 200; a request whose
scripted delay is an asyncio.Event is answered (and noted in `received`) once it is set, and is
counted in `arrived` meanwhile.
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import time
from dataclasses import dataclass, field

from aiohttp import web


def verify(secret: str, headers, body: bytes, *, now: float | None = None, tolerance: int = 300) -> bool:
    """The Standard Webhooks reference check (independent of pyapp.webhooks.signing)."""
    msg_id, ts, sig = headers.get("webhook-id"), headers.get("webhook-timestamp"), headers.get("webhook-signature")
    if not (msg_id and ts and sig) or not ts.isdigit():
        return False
    if abs((now or time.time()) - int(ts)) > tolerance:
        return False
    key = base64.b64decode(secret.removeprefix("whsec_"))
    expected = base64.b64encode(hmac.new(key, f"{msg_id}.{ts}.".encode() + body, hashlib.sha256).digest())
    for part in sig.split(" "):
        version, _, value = part.partition(",")
        if version == "v1" and hmac.compare_digest(value.encode(), expected):
            return True
    return False


@dataclass
class Received:
    at: float
    path: str
    query: str
    headers: dict
    body: bytes
    status: int
    valid: bool | None

    @property
    def msg_id(self) -> str:
        return self.headers.get("webhook-id", "")

    def json(self):
        import json
        return json.loads(self.body)


@dataclass
class WebhookSink:
    secrets: list[str] = field(default_factory=list)
    script: list = field(default_factory=list)   # (status, headers dict, delay_s) per request, in order
    received: list[Received] = field(default_factory=list)
    arrived: int = 0  # requests read, answered or not

    def __post_init__(self):
        self._changed = asyncio.Condition()
        self._runner = None
        self.port = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def start(self) -> WebhookSink:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        return self

    async def close(self):
        if self._runner:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        status, headers, delay = (self.script.pop(0) if self.script else (200, {}, 0))
        async with self._changed:
            self.arrived += 1
            self._changed.notify_all()
        if isinstance(delay, asyncio.Event):
            await delay.wait()
        elif delay:
            await asyncio.sleep(delay)
        valid = any(verify(s, request.headers, body) for s in self.secrets) if self.secrets else None
        async with self._changed:
            self.received.append(Received(time.time(), request.path, request.query_string, {k.lower(): v for k, v in request.headers.items()},
                                          body, status, valid))
            self._changed.notify_all()
        return web.Response(status=status, headers=headers, text=f"answer {status}")

    async def wait_arrived(self, n: int, timeout: float = 20) -> None:
        """Until at least n requests were read, answered or not."""
        async with asyncio.timeout(timeout):
            async with self._changed:
                await self._changed.wait_for(lambda: self.arrived >= n)

    async def wait_for(self, n: int, timeout: float = 20) -> list[Received]:
        """Until at least n requests arrived (a real signal: each request notifies)."""
        async with asyncio.timeout(timeout):
            async with self._changed:
                await self._changed.wait_for(lambda: len(self.received) >= n)
        return self.received
