"""A client that stops reading while its conversation is busy (found by bench/connections.py): the
server drops it (its queue is bounded), and its connection is gone within a bounded time even though
the peer never reads the close frame; the other sockets of the conversation get every message once.

The slow clients are raw sockets on 127.0.0.1 with a small receive buffer that read nothing after the
handshake, so the server's writes back up through the kernel into the transport."""
from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import socket
import struct
import uuid

import pytest
from pyapp.context import POOL
from pyapp.db import Actor, tenant_tx
from pyapp.realtime import sinks
from pyapp.realtime.relay import RELAY
from support import waits
from support.realtime import SseClient, visitor, widget_session

BODY_CHARS = 16_000  # a bot message's longest body: each frame is about 16 KB
CHUNK = 40  # messages committed together; the reading client reads each chunk before the next
MAX_MESSAGES = 1600  # 25 MB of frames: far past the kernel's buffers (4 MB) and the test's queue cap


@pytest.fixture
def small_queue(monkeypatch):
    """Frames a client may have queued, lowered (above CHUNK) so that a few MB fill it."""
    monkeypatch.setattr(sinks, "MAX_QUEUE", 100)
    monkeypatch.setattr(sinks, "CLOSE_GRACE", 1.0, raising=False)


def _frame(text: str) -> bytes:
    """A masked text frame, as a browser sends it."""
    payload, mask = text.encode(), os.urandom(4)
    n = len(payload)
    head = bytes([0x81]) + (bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + struct.pack("!H", n))
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def _non_reader(port: int, request: bytes, then: bytes = b"") -> socket.socket:
    """Connect with a small receive buffer, send `request`, read the answer's head, send `then`, and
    never read again."""
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await loop.sock_connect(sock, ("127.0.0.1", port))
    await loop.sock_sendall(sock, request)
    head = b""
    while b"\r\n\r\n" not in head:
        head += await asyncio.wait_for(loop.sock_recv(sock, 1), 10)
    assert head.split(b" ", 2)[1] in (b"101", b"200"), head
    await loop.sock_sendall(sock, then)
    return sock


async def _visitor_non_reader(port: int, token: str) -> socket.socket:
    key = base64.b64encode(os.urandom(16)).decode()
    return await _non_reader(
        port, (f"GET /ws/visitor HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode(),
        _frame(json.dumps({"type": "hello", "token": token, "last_seen_id": 0})))


async def _sse_non_reader(port: int, token: str) -> socket.socket:
    return await _non_reader(port, (f"GET /api/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}"
                                    "\r\nAccept: text/event-stream\r\n\r\n").encode())


async def _unlimited(owner_conn, tenant_id) -> None:
    await owner_conn.execute(
        "INSERT INTO parley.tenant_limits (tenant_id, ai_msgs_per_day, included_ai_messages) VALUES ($1, 0, 0)",
        uuid.UUID(str(tenant_id)))


async def _until_dropped(server, tenant_id, conversation_id, dropped, received) -> int:
    """Commit CHUNK long bot messages at a time into the conversation, each chunk once the reading
    client has read the last, until the server `dropped` the slow client; returns how many were sent."""
    tenant, sent = uuid.UUID(str(tenant_id)), 0
    while not dropped():
        assert sent < MAX_MESSAGES, "the client that stopped reading was never dropped"
        async with tenant_tx(server.app[POOL], Actor(tenant, kind="service")) as conn:
            await conn.execute(
                "SELECT count(m.id) FROM generate_series($2::int, $3::int) i,"
                " LATERAL parley.post_message($1, 'bot', lpad(i::text, 4, '0') || repeat('x', $4 - 4)) m",
                uuid.UUID(str(conversation_id)), sent + 1, sent + CHUNK, BODY_CHARS)
        server.app[RELAY].wake(tenant)
        sent += CHUNK
        await waits.until(lambda n=sent: received() >= n, timeout=30, what="the reading client to read the chunk")
    return sent


def _holds(server, sock: socket.socket) -> bool:
    """Whether the server still holds a connection from `sock`: its handler (transport, buffers), or the
    kernel its socket, in any state (a socket closed with megabytes unsent to a peer that reads nothing
    stays, orphaned, until the kernel gives up on it)."""
    port = sock.getsockname()[1]
    for handler in server.runner.server.connections:
        peer = handler.transport.get_extra_info("peername") if handler.transport is not None else None
        if peer and peer[1] == port:
            return True
    with open("/proc/net/tcp") as table:
        for line in list(table)[1:]:
            local, remote = line.split()[1:3]
            if int(local.rsplit(":", 1)[1], 16) == server.port and int(remote.rsplit(":", 1)[1], 16) == port:
                return True
    return False


async def test_a_visitor_that_stops_reading_is_dropped_and_the_others_get_everything(
        server, tenant, owner_conn, small_queue):
    await _unlimited(owner_conn, tenant["tenant_id"])
    session = await widget_session(server, tenant["key"])
    reader = await visitor(server, session)
    slow = await _visitor_non_reader(server.port, session["token"])
    seen: list[int] = []

    async def read() -> None:
        while True:
            frame = await reader.expect(lambda f: f.get("type") == "message" and f["message"]["author"] == "bot",
                                        timeout=60)
            seen.append(int(frame["message"]["body"][:4]))

    reading = asyncio.create_task(read())
    try:
        await waits.until(lambda: server.app[RELAY].counts()["visitors"] == 2, what="both sockets attached")
        # The socket that stopped reading is closed and detached though it never reads the close
        # frame (the old code waited for it for ever: the socket and its buffers were held).
        sent = await _until_dropped(server, tenant["tenant_id"], session["conversation_id"],
                                    lambda: not _holds(server, slow), lambda: len(seen))
        assert server.app[RELAY].counts()["visitors"] == 1
        assert seen == list(range(1, sent + 1))  # every one, once, in order
    finally:
        reading.cancel()
        slow.close()
        await reader.close()


async def test_an_event_stream_that_stops_reading_is_dropped(server, tenant, owner_conn, small_queue):
    await _unlimited(owner_conn, tenant["tenant_id"])
    session = await widget_session(server, tenant["key"])
    sse = await SseClient.connect(server, tenant["access_token"])
    slow = await _sse_non_reader(server.port, tenant["access_token"])
    ids: list[int] = []

    async def read() -> None:
        while True:
            ids.append(int((await sse.expect_event("message_added", timeout=60))["id"]))

    reading = asyncio.create_task(read())
    try:
        await waits.until(lambda: server.app[RELAY].counts()["agents"] == 2, what="both streams attached")
        sent = await _until_dropped(server, tenant["tenant_id"], session["conversation_id"],
                                    lambda: not _holds(server, slow), lambda: len(ids))
        assert server.app[RELAY].counts()["agents"] == 1
        assert len(ids) == len(set(ids)) == sent and ids == sorted(ids)
    finally:
        reading.cancel()
        slow.close()
        with contextlib.suppress(Exception):
            await sse.close()
