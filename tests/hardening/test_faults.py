"""Faults mid-conversation (issue 17): `parley serve` killed with SIGKILL and restarted, then a
PostgreSQL crash restart, while visitors write and an agent watches. The clients do what the
widget and the console do: reconnect, resume (last_seen_id / last_event_id) and resend what was
not acknowledged under the same client id. A checker then compares what the visitors sent with
what was stored and what reached the agent: 0 lost, 0 duplicated. (`parley jobs` killed
mid-drain: tests/outbox/test_outbox_resilience.py.)"""
from __future__ import annotations

import asyncio
import contextlib
import json
import os

import aiohttp
import asyncpg
import pytest
from pyapp.client.agent_socket import AgentFeed
from support.database import crash_and_restart
from support.realtime import ORIGIN, widget_session
from support.server import TEST_SECRET, ServeProcess, free_port

VISITORS = 6
PER_VISITOR = 24
PACE = 0.15  # s between a visitor's messages: under the 10 frames/s socket limit


class Visitor:
    """Sends PER_VISITOR messages; after any failure reconnects with last_seen_id and resends
    every message not yet echoed back, under its client id."""

    def __init__(self, name: str, session: dict):
        self.name, self.token = name, session["token"]
        self.to_send = [f"{name}-{n}" for n in range(PER_VISITOR)]
        self.acked: dict[str, int] = {}  # client id → stored message id (from the echo)
        self.last_seen_id = 0
        self.reconnects = 0

    async def run(self, http: aiohttp.ClientSession, server: ServeProcess, go: asyncio.Event) -> None:
        while len(self.acked) < len(self.to_send):
            try:
                async with http.ws_connect(server.base_url.replace("http", "ws") + "/ws/visitor") as ws:
                    await ws.send_str(json.dumps({"type": "hello", "token": self.token,
                                                  "last_seen_id": self.last_seen_id}))
                    reader = asyncio.create_task(self._read(ws))
                    try:
                        for cid in self.to_send:
                            if cid in self.acked:
                                continue
                            await go.wait()
                            await ws.send_str(json.dumps({"type": "message", "client_id": cid,
                                                          "body": f"body of {cid}"}))
                            await asyncio.sleep(PACE)
                        async with asyncio.timeout(10):  # the last echoes
                            while len(self.acked) < len(self.to_send) and not reader.done():
                                await asyncio.sleep(0.05)
                    finally:
                        reader.cancel()
                        with contextlib.suppress(asyncio.CancelledError, Exception):
                            await reader
            except (aiohttp.ClientError, ConnectionError, TimeoutError, RuntimeError):
                pass
            if len(self.acked) < len(self.to_send):
                self.reconnects += 1
                await asyncio.sleep(0.2)

    async def _read(self, ws) -> None:
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            frame = json.loads(msg.data)
            m = frame.get("message") or {}
            if frame.get("type") == "message" and m.get("author") == "visitor" and m.get("client_id"):
                self.acked[m["client_id"]] = m["id"]
            if frame.get("type") == "message" and m.get("id"):
                self.last_seen_id = max(self.last_seen_id, m["id"])


class Agent(AgentFeed):
    """Watches every event; reconnects with last_event_id after a failure."""

    def __init__(self, token: str):
        super().__init__(token)
        self.deliveries: list[tuple[int, str | None]] = []  # (message id, client id) per message_added
        self.stop = asyncio.Event()

    def record(self, ev: dict) -> None:
        m = ev.get("message") or {}
        if ev.get("kind") == "message_added" and m.get("author") == "visitor":
            self.deliveries.append((m["id"], m.get("client_id")))

    async def run(self, http: aiohttp.ClientSession, server: ServeProcess, ready: asyncio.Event) -> None:
        while not self.stop.is_set():
            with contextlib.suppress(aiohttp.ClientError, ConnectionError, TimeoutError, RuntimeError):
                await self.follow(http, server.base_url, self.record, ready)
            if not self.stop.is_set():
                await asyncio.sleep(0.2)


async def _sent_so_far(visitors, share: float) -> None:
    target = int(VISITORS * PER_VISITOR * share)
    async with asyncio.timeout(90):
        while sum(len(v.acked) for v in visitors) < target:
            await asyncio.sleep(0.05)


async def test_kill_9_serve_and_postgres_restart_lose_and_duplicate_nothing(settings, rows, owner_conn, pg_server):
    if os.environ.get("TEST_DATABASE_URL"):
        pytest.skip("needs the run's own server to restart it")
    owner = await rows.tenant()
    bot = await owner_conn.fetchrow(
        "INSERT INTO parley.chatbots (tenant_id, name, allowed_origins) VALUES ($1, 'Faults', $2)"
        " RETURNING id, public_key", owner.tenant_id, [ORIGIN])
    token = owner.access_token(TEST_SECRET)
    # Every visitor here comes from 127.0.0.1: no per-address or per-chatbot message rate.
    await owner_conn.execute("INSERT INTO parley.tenant_limits (tenant_id, msgs_per_min_chatbot, msgs_per_min_ip)"
                             " VALUES ($1, 0, 0)", owner.tenant_id)
    server = ServeProcess(settings, free_port())
    async with aiohttp.ClientSession() as http:
        await server.start(http)
        try:
            visitors = []
            for i in range(VISITORS):
                session = await widget_session(server, bot["public_key"])
                # An agent has the conversation, so no bot answers in between.
                async with http.post(f"{server.base_url}/api/conversations/{session['conversation_id']}/claim",
                                     headers={"Authorization": f"Bearer {token}"}) as resp:
                    assert resp.status == 200, await resp.text()
                visitors.append(Visitor(f"v{i}", session))
            agent = Agent(token)
            ready, go = asyncio.Event(), asyncio.Event()
            agent_task = asyncio.create_task(agent.run(http, server, ready))
            await asyncio.wait_for(ready.wait(), 30)
            tasks = [asyncio.create_task(v.run(http, server, go)) for v in visitors]
            go.set()

            await _sent_so_far(visitors, 1 / 3)
            await server.kill9()  # mid-conversation: frames in flight, sockets cut
            await server.start(http)
            await _sent_so_far(visitors, 2 / 3)
            await asyncio.to_thread(crash_and_restart, pg_server)  # no shutdown checkpoint
            async with asyncio.timeout(120):
                await asyncio.gather(*tasks)
            sent = {cid for v in visitors for cid in v.to_send}

            # Stored: each sent message exactly once.
            check = await asyncpg.connect(settings.admin_url)  # the fixture's died with the restart
            try:
                stored = await check.fetch(
                    "SELECT id, client_id FROM parley.messages WHERE tenant_id = $1 AND author = 'visitor'",
                    owner.tenant_id)
            finally:
                await check.close()
            by_cid: dict[str, list[int]] = {}
            for r in stored:
                by_cid.setdefault(r["client_id"], []).append(r["id"])
            assert set(by_cid) == sent, (len(by_cid), len(sent))
            assert all(len(ids) == 1 for ids in by_cid.values()), {c: i for c, i in by_cid.items() if len(i) > 1}
            # Echoed to the visitor with the stored id.
            assert {cid: by_cid[cid][0] for v in visitors for cid in v.acked} == \
                {cid: mid for v in visitors for cid, mid in v.acked.items()}
            # Delivered to the agent: every stored message, none twice.
            async with asyncio.timeout(30):
                while len({m for m, _ in agent.deliveries}) < len(sent):
                    await asyncio.sleep(0.05)
            delivered = [cid for _, cid in agent.deliveries]
            assert set(delivered) == sent
            assert len(delivered) == len(set(delivered)), sorted(c for c in set(delivered) if delivered.count(c) > 1)
            assert sum(v.reconnects for v in visitors) >= VISITORS  # the faults really cut them off
            agent.stop.set()
            agent_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await agent_task
        finally:
            await server.kill9()
