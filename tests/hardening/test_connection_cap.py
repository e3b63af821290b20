"""More connections than the server has room for (found by bench/connections.py): past its open-files
limit a server's accept loop logged a traceback per pending connection and rescheduled itself once per
error, so it spun and flooded its log, and REST went unanswered. Now `parley serve` raises its soft
limit to the hard one, and connections past `max_connections` (by default the limit less what the pool
and the relay need) are answered 503 server_busy at once, while those already open are served."""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import sys

import aiohttp
import pytest
from pyapp import http_guard
from pyapp.http_guard import RESERVED_FILES
from support.knowledge import ROOT
from support.server import TEST_SECRET, free_port, start_server
from support.waits import Output

CAP = 8


@pytest.fixture
async def capped(settings):
    settings.extra.update({"max_connections": CAP, "max_connections_per_ip": 0})
    srv = await start_server(settings)
    yield srv
    await srv.close()


async def _get(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> tuple[int, dict, bytes]:
    """GET /healthz on an open connection: (status, headers, body)."""
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    return await _answer(reader)


async def _answer(reader: asyncio.StreamReader) -> tuple[int, dict, bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    body = await asyncio.wait_for(reader.readexactly(int(headers["Content-Length"])), 10)
    return int(lines[0].split()[1]), headers, body


async def test_connections_past_the_cap_are_told_the_server_is_busy(capped):
    held = [await asyncio.open_connection("127.0.0.1", capped.port) for _ in range(CAP)]
    for reader, writer in held:
        assert (await _get(reader, writer))[0] == 200
    reader, writer = await asyncio.open_connection("127.0.0.1", capped.port)
    status, headers, body = await _answer(reader)  # at once, before any request
    assert status == 503 and headers["Retry-After"] == "5"
    assert json.loads(body)["error"]["code"] == "server_busy"
    assert await asyncio.wait_for(reader.read(), 10) == b""  # and closed
    writer.close()
    async with aiohttp.ClientSession() as http:  # a socket past the cap: the same answer to its upgrade
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(capped.base_url.replace("http", "ws") + "/ws/visitor")
        assert refused.value.status == 503
    for reader, writer in held:  # the connections already open are served as before
        assert (await _get(reader, writer))[0] == 200
    held.pop()[1].close()
    for _ in range(100):  # a place is free once the server has seen the close
        reader, writer = await asyncio.open_connection("127.0.0.1", capped.port)
        status = (await _get(reader, writer))[0]
        writer.close()
        if status == 200:
            break
    else:
        raise AssertionError("no connection served after one was closed")
    for _, writer in held:
        writer.close()


def _limits(pid: int) -> tuple[int, int]:
    with open(f"/proc/{pid}/limits") as fh:
        for line in fh:
            if line.startswith("Max open files"):
                soft, hard = line.split()[3:5]
                return int(soft), int(hard)
    raise AssertionError("no open-files line")


@contextlib.asynccontextmanager
async def _serve(settings, soft: int, hard: int):
    """`parley serve` in its own process started with this open-files limit; its output in an Output."""
    port = free_port()
    env = {**os.environ, "DATABASE_URL": settings.admin_url, "PARLEY_SECRET_KEY": TEST_SECRET,
           "PARLEY_EMBED_WARM": "0", "PARLEY_TRUST_PROXY": "1", "PYTHONPATH": str(ROOT)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pyapp.cli", "serve", "--port", str(port), cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard)))
    out = Output(proc.stdout)
    try:
        await out.wait_for(lambda line: "listening on" in line)  # after the open-files line
        yield proc, port, out
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        await out.task


async def test_serve_raises_its_open_files_limit(settings):
    async with _serve(settings, 256, 4096) as (proc, _port, _out):
        assert _limits(proc.pid) == (4096, 4096)


async def test_more_sockets_than_open_files_are_refused_without_a_storm(settings):
    limit = 1024
    async with _serve(settings, limit, limit) as (_proc, port, out):
        opened = []
        for _ in range(limit + 80):  # past the limit: the last ones get 503 server_busy, not a failed accept()
            opened.append(await asyncio.open_connection("127.0.0.1", port))
        busy = 0
        for reader, _writer in opened[limit - RESERVED_FILES:]:
            status, _headers, body = await _answer(reader)
            busy += status == 503 and json.loads(body)["error"]["code"] == "server_busy"
        assert busy >= 80 + RESERVED_FILES
        for _, writer in opened:
            writer.close()
        async with aiohttp.ClientSession() as http:  # served again once they are gone
            for _ in range(100):
                async with http.get(f"http://127.0.0.1:{port}/healthz") as resp:
                    if resp.status == 200:
                        break
            assert resp.status == 200
        assert not [line for line in out.lines if "out of system resource" in line or "Too many open files" in line]
        assert sum("server busy" in line for line in out.lines) == 1


def test_the_default_cap_keeps_room_for_the_servers_own_descriptors(monkeypatch):
    for soft, cap in ((1024, 704), (65536, 58983), (400, 200)):
        monkeypatch.setattr(http_guard.resource, "getrlimit", lambda _which, soft=soft: (soft, soft))
        assert http_guard.connection_cap() == cap
