"""Finding 6: slow partial requests are cut off (head and body deadlines), and one address cannot hold
more than its share of connections. Raw sockets on 127.0.0.1 play the slow clients."""
from __future__ import annotations

import asyncio

import pytest
from support.server import start_server

LIMITS = {"header_timeout": 1.5, "body_idle_timeout": 1.5, "body_timeout": 4.0, "max_connections_per_ip": 8}


@pytest.fixture
async def guarded(settings):
    settings.extra.update(LIMITS)
    srv = await start_server(settings)
    yield srv
    await srv.close()


async def _open(server):
    return await asyncio.open_connection("127.0.0.1", server.port)


async def _closed_within(reader: asyncio.StreamReader, seconds: float) -> bool:
    """True when the server closes the connection (EOF or reset) within `seconds`."""
    try:
        while True:
            chunk = await asyncio.wait_for(reader.read(65536), seconds)
            if not chunk:
                return True
    except TimeoutError:  # (a subclass of OSError: caught first)
        return False
    except (ConnectionError, OSError):
        return True


async def _drip(writer: asyncio.StreamWriter, lines: list[bytes], every: float) -> None:
    try:
        for line in lines:
            writer.write(line)
            await writer.drain()
            await asyncio.sleep(every)  # the slow client's pace (the test waits on the server's close)
    except (ConnectionError, OSError):
        pass


async def test_slow_request_head_is_cut_off(guarded):
    reader, writer = await _open(guarded)
    lines = [b"GET /healthz HTTP/1.1\r\n"] + [f"X-Slow-{i}: {i}\r\n".encode() for i in range(40)]
    drip = asyncio.create_task(_drip(writer, lines, 0.4))
    assert await _closed_within(reader, LIMITS["header_timeout"] + 3)
    drip.cancel()
    writer.close()


async def test_stalled_and_dripping_bodies_are_cut_off(guarded):
    head = (b"POST /api/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 4000\r\n\r\n")
    # Stalled: part of the body, then nothing.
    reader, writer = await _open(guarded)
    writer.write(head + b'{"email": "a@b.c", ')
    await writer.drain()
    assert await _closed_within(reader, LIMITS["body_idle_timeout"] + 3)
    writer.close()
    # Dripping: a byte now and then, never idle for long, never done.
    reader, writer = await _open(guarded)
    drip = asyncio.create_task(_drip(writer, [head] + [b" "] * 100, 0.3))
    assert await _closed_within(reader, LIMITS["body_timeout"] + 3)
    drip.cancel()
    writer.close()


async def test_connections_per_address_are_capped(guarded):
    held = [await _open(guarded) for _ in range(LIMITS["max_connections_per_ip"])]
    for reader, writer in held:  # each holds a live keep-alive connection
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        assert b"200" in await asyncio.wait_for(reader.readuntil(b"\r\n"), 5)
    reader, writer = await _open(guarded)
    assert await _closed_within(reader, 3)  # one too many: closed at once
    writer.close()
    held[0][1].close()
    await _closed_within(held[0][0], 3)
    # A place is free again: a new connection is served. (The close may take a moment to be seen.)
    for _ in range(50):
        reader, writer = await _open(guarded)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        try:
            line = await asyncio.wait_for(reader.readuntil(b"\r\n"), 10)  # an answer, however loaded the machine
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()
            await asyncio.sleep(0.05)  # poll until the server has seen the close
            continue
        assert b"200" in line
        writer.close()
        break
    else:
        raise AssertionError("no connection accepted after one was closed")
    for _, w in held[1:]:
        w.close()


async def test_ordinary_clients_are_unaffected(guarded, signup):
    user = await signup(guarded)  # sign-up, JSON bodies, keep-alive through the test's session
    for _ in range(20):
        status, _ = await guarded.call("GET", "/api/me", token=user["access_token"])
        assert status == 200
