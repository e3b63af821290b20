"""Finding 3: /ws/agent frames are rate limited before they reach NOTIFY, its per-socket state is bounded,
and a read-only API key cannot send typing or read signals to visitors."""
from __future__ import annotations

import asyncio
import time
import uuid

import asyncpg
from pyapp.agent import socket as agent_socket
from pyapp.realtime import throttle
from pyapp.realtime.relay import get_relay
from support.realtime import agent


class SignalCounter:
    """A LISTEN connection of the test's own on parley_signals: counts what the server NOTIFYs."""

    def __init__(self) -> None:
        self.count = 0
        self.conn: asyncpg.Connection | None = None

    async def start(self, url: str) -> SignalCounter:
        self.conn = await asyncpg.connect(url)
        await self.conn.add_listener("parley_signals", self._on)
        return self

    def _on(self, *_args) -> None:
        self.count += 1

    async def settle(self) -> int:
        """Wait until a marker NOTIFY sent now has arrived: everything sent before it has too."""
        got = asyncio.get_running_loop().create_future()
        await self.conn.add_listener("marker", lambda *_: got.done() or got.set_result(None))
        await self.conn.execute("NOTIFY marker")
        await asyncio.wait_for(got, 5)
        return self.count

    async def close(self) -> None:
        await self.conn.close()


async def test_typing_flood_is_rate_limited(server, settings, tenant):
    counter = await SignalCounter().start(settings.admin_url)
    ws = await agent(server, tenant["access_token"])
    conv = str(uuid.uuid4())
    started = time.monotonic()
    for i in range(300):
        await ws.send({"type": "typing", "conversation_id": conv, "on": i % 2 == 0})
    await ws.send({"type": "ping"})
    await ws.expect(type="pong")
    elapsed = time.monotonic() - started
    limited = [f for f in ws.frames if f.get("type") == "error" and f.get("code") == "rate_limited"]
    assert limited
    sent = await counter.settle()
    assert sent <= throttle.FRAME_BURST + throttle.FRAMES_PER_SECOND * elapsed + 1, (sent, elapsed)
    await ws.close()
    await counter.close()


async def test_typing_state_per_socket_is_bounded(server, tenant, monkeypatch):
    monkeypatch.setattr(throttle, "FRAME_BURST", 10_000.0)
    ws = await agent(server, tenant["access_token"])
    for _ in range(agent_socket.MAX_TRACKED + 200):
        await ws.send({"type": "typing", "conversation_id": str(uuid.uuid4()), "on": True})
        await ws.send({"type": "read", "conversation_id": str(uuid.uuid4()), "message_id": 5})
    await ws.send({"type": "ping"})
    await ws.expect(type="pong")
    sessions = [s._send.__self__ for s in get_relay(server.app).sinks() if s.kind == "agent"]
    assert len(sessions) == 1
    assert len(sessions[0]._typing) == agent_socket.MAX_TRACKED
    assert len(sessions[0]._read) == agent_socket.MAX_TRACKED
    await ws.close()


async def test_read_only_key_cannot_signal_visitors(server, settings, tenant, make_api_key):
    key = await make_api_key(server, tenant["access_token"], ("read",))
    counter = await SignalCounter().start(settings.admin_url)
    ws = await agent(server, key)
    conv = str(uuid.uuid4())
    await ws.send({"type": "typing", "conversation_id": conv, "on": True})
    assert (await ws.expect(type="error"))["code"] == "insufficient_scope"
    await ws.send({"type": "read", "conversation_id": conv, "message_id": 3})
    assert (await ws.expect(type="error"))["code"] == "insufficient_scope"
    assert await counter.settle() == 0
    # A key with write may.
    writer = await agent(server, await make_api_key(server, tenant["access_token"], ("read", "write")))
    await writer.send({"type": "typing", "conversation_id": conv, "on": True})
    await writer.send({"type": "ping"})
    await writer.expect(type="pong")
    assert await counter.settle() == 1
    await ws.close()
    await writer.close()
    await counter.close()
