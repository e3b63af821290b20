"""Outbox helpers and fixtures: webhook destinations pointing at a local sink, conversations
whose events enqueue deliveries, and drainers as parley_jobs (jobs/outbox.py)."""
from __future__ import annotations

from pathlib import Path

import pytest
from jobs.outbox import OutboxDrainer
from pyapp.channels.adapter import ChannelSender
from pyapp.channels.envelope import Keyring
from pyapp.channels.telegram import TelegramAdapter, TelegramApi
from pyapp.webhooks.sender import WebhookSender

from support.fakes.webhook_sink import WebhookSink
from support.server import TEST_SECRET

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def sink():
    s = await WebhookSink().start()
    yield s
    await s.close()


async def add_destination(owner_conn, tenant, url, *, kinds=("message_added",), ordered=False, rate_keys=(),
                          kind="webhook", chatbot_id=None, name="hook"):
    return await owner_conn.fetchval(
        "INSERT INTO parley.outbox_destinations (tenant_id, kind, name, target, event_kinds, ordered, rate_keys,"
        " chatbot_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
        tenant.id, kind, name, url, list(kinds), ordered, list(rate_keys), chatbot_id)


async def start_conversation(tenant):
    async with await tenant.tx("service") as conn:
        return await conn.fetchval(
            "SELECT id FROM parley.start_conversation($1, gen_random_uuid(), NULL, NULL, NULL, 'en', NULL, NULL)",
            tenant.chatbot_id)


async def post(tenant, conv, *bodies, author="bot"):
    """Each body in its own transaction, as the server stores a message (one event each)."""
    ids = []
    for body in bodies:
        async with await tenant.tx("service") as conn:
            ids.append(await conn.fetchval("SELECT id FROM parley.post_message($1, $2, $3)", conv, author, body))
    return ids


async def delivery_statuses(owner_conn, tenant) -> dict[str, int]:
    """The tenant's deliveries by status (owners' notices, e.g. the usage warnings `parley jobs` mails
    when bulk bot replies pass the plan's allowances, are not what the outbox tests count)."""
    rows = await owner_conn.fetch(
        "SELECT status, count(*) AS n FROM parley.outbox WHERE tenant_id = $1 AND kind NOT LIKE 'notice.%' "
        "GROUP BY 1", tenant.id)
    return {r["status"]: r["n"] for r in rows}


def make_drainer(pool, worker="w1", **kw) -> OutboxDrainer:
    kw.setdefault("senders", {"webhook": WebhookSender(allow_hosts=["127.0.0.1"])})
    kw.setdefault("keyring", Keyring.from_settings(TEST_SECRET))
    return OutboxDrainer(pool, worker, **kw)


def telegram_drainer(pool, fake, worker="tg", **kw) -> OutboxDrainer:
    """A drainer whose Telegram adapter talks to the fake Bot API `fake` (support.fakes.telegram)."""
    sender = ChannelSender(TelegramAdapter(TelegramApi(base=fake.url)))
    return OutboxDrainer(pool, worker, senders={"telegram": sender}, keyring=Keyring.from_settings(TEST_SECRET), **kw)


async def drain_telegram(tenant, fake) -> int:
    """Send every Telegram delivery ready now, as parley_jobs; returns how many were delivered."""
    drainer = telegram_drainer(await tenant.pool("jobs"), fake)
    try:
        return await drainer.drain()
    finally:
        await drainer.close()


@pytest.fixture
async def drainer(tenant):
    d = make_drainer(await tenant.pool("jobs"))
    yield d
    await d.close()


class Workspace:
    """A workspace signed up through the API, with a chatbot, for SQL-level steps as its tenant."""

    def __init__(self, server, owner, settings, owner_conn, chatbot_id):
        import uuid as _uuid

        from support.knowledge import Tenant

        self.server = server
        self.owner = owner
        self.token = owner["access_token"]
        self.tenant = Tenant(settings, owner_conn, _uuid.UUID(owner["tenant_id"]), chatbot_id)

    async def call(self, method, path, **kw):
        return await self.server.call(method, path, token=self.token, **kw)

    async def close(self):
        await self.tenant.close()


async def make_workspace(server, signup, settings, owner_conn) -> Workspace:
    owner = await signup(server)
    bot = await owner_conn.fetchval("INSERT INTO parley.chatbots (tenant_id, name) VALUES ($1, 'Bot') RETURNING id",
                                    __import__("uuid").UUID(owner["tenant_id"]))
    return Workspace(server, owner, settings, owner_conn, bot)


async def connect_telegram(ws, owner_conn, *, token=None, chat=None, capacity=100, per_second=100):
    """Connect the fake Bot API's bot and group to the workspace through the API, its rate buckets set
    to ``capacity`` tokens refilled at ``per_second`` (the real limits have their own tests)."""
    from support.fakes.telegram import CHAT, TOKEN

    status, channel = await ws.call("POST", "/api/channels/telegram",
                                    json={"name": "Support", "bot_token": token or TOKEN, "chat_id": chat or CHAT})
    assert status == 201, channel
    await owner_conn.execute("UPDATE parley.outbox_rate_buckets SET capacity = $2, tokens = $2, per_second = $3"
                             " WHERE tenant_id = $1", ws.tenant.id, capacity, per_second)
    return channel
