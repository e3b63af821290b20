"""Telegram updates sent twice, at once or again later, and an operator's reply racing the visitor.

Telegram sends an update again until it gets a 2xx. The update used to be recorded (deduplicated on
update_id) in one transaction and acted on in another: when the action did not happen (its database
session ended while it waited for the conversation, as in a restart), the server answered 5xx,
Telegram sent the update again, and the copy was refused as a duplicate: the operator's reply was
lost. Now both are one transaction (pyapp/channels/telegram_updates.py)."""
from __future__ import annotations

import asyncio
import uuid

import asyncpg
from support.fakes.telegram import CHAT, TOKEN, message_update
from support.outbox import telegram_drainer
from support.realtime import clients, tenant, visitor, widget_session  # noqa: F401
from support.waits import blocked_on_lock

AGENT_TG = 5550002


async def _topic(server, tenant, tg, owner_conn, jobs_pool):  # noqa: F811
    """A connected bot, a linked agent, a visitor's conversation with its topic: (deliver, thread, conv)."""
    token = tenant["access_token"]
    status, channel = await server.call("POST", "/api/channels/telegram", token=token,
                                        json={"name": "Support", "bot_token": TOKEN, "chat_id": CHAT})
    assert status == 201, channel
    secret = tg.webhooks[TOKEN]["secret_token"]

    async def deliver(body):
        return await server.call("POST", f"/api/channels/telegram/{channel['id']}/webhook", json=body,
                                 headers={"X-Telegram-Bot-Api-Secret-Token": secret})

    status, code = await server.call("POST", "/api/channels/telegram/link-code", token=token)
    status, out = await deliver(message_update(1, f"/link {code['code']}", CHAT, None, AGENT_TG))
    assert status == 200 and out["linked"] is True, out
    await owner_conn.execute("UPDATE parley.outbox_rate_buckets SET capacity = 100, tokens = 100, per_second = 100"
                             " WHERE tenant_id = $1", uuid.UUID(tenant["tenant_id"]))
    session = await widget_session(server, tenant["key"])
    v = await visitor(server, session)
    await v.send({"type": "message", "client_id": "v0", "body": "Hello?"})  # the topic opens with it
    await v.expect_message("Hello?", author="visitor")
    await v.close()
    drainer = telegram_drainer(jobs_pool, tg, "tg-races")
    try:
        await drainer.drain()
    finally:
        await drainer.close()
    thread = int(await owner_conn.fetchval("SELECT thread_ref FROM parley.channel_threads"))
    return deliver, thread, uuid.UUID(session["conversation_id"]), session


async def _replies(owner_conn, conv) -> list:
    return await owner_conn.fetch("SELECT body, client_id FROM parley.messages WHERE conversation_id = $1"
                                  " AND author = 'agent' ORDER BY id", conv)


async def test_an_update_sent_again_after_its_action_failed_is_acted_on(server, tenant, tg, public_url,  # noqa: F811
                                                                        owner_conn, jobs_pool, settings):
    deliver, thread, conv, _ = await _topic(server, tenant, tg, owner_conn, jobs_pool)
    update = message_update(40, "On it, one moment", CHAT, thread, AGENT_TG)
    holder = await asyncpg.connect(settings.admin_url)  # someone else's change of the conversation, in flight
    try:
        await holder.execute("BEGIN")
        await holder.execute("SELECT 1 FROM parley.conversations WHERE id = $1 FOR UPDATE", conv)
        first = asyncio.create_task(deliver(update))
        waiting = await blocked_on_lock(owner_conn)  # the reply waits for the conversation
        await owner_conn.execute("SELECT pg_terminate_backend($1)", waiting)  # and its session ends there
        status, _ = await first
        assert status >= 500
        await holder.execute("ROLLBACK")
    finally:
        await holder.close()

    status, out = await deliver(update)  # Telegram sends it again
    assert status == 200 and out.get("result") == "Sent.", out
    assert [(r["body"], r["client_id"]) for r in await _replies(owner_conn, conv)] == [
        ("On it, one moment", "telegram:40")]


async def test_the_same_update_at_once_and_the_visitor_meanwhile(server, tenant, tg, public_url,  # noqa: F811
                                                                 owner_conn, jobs_pool, clients):  # noqa: F811  pytest fixture imported above, injected by name
    """Rounds of one update delivered four times at once while the visitor sends: each reply stored
    once, every copy answered 200, every visitor message stored once."""
    deliver, thread, conv, session = await _topic(server, tenant, tg, owner_conn, jobs_pool)
    v = await visitor(server, session)
    clients.append(v)
    for n in range(100, 112):
        update = message_update(n, f"Reply {n}", CHAT, thread, AGENT_TG)
        copies = [deliver(update) for _ in range(4)]
        sent = v.send({"type": "message", "client_id": f"v{n}", "body": f"Visitor {n}"})
        outs = await asyncio.gather(*copies, sent)
        assert all(status == 200 for status, _ in outs[:4]), outs
        assert sorted(bool(out.get("duplicate")) for _, out in outs[:4]) == [False, True, True, True], outs
        await v.expect_message(f"Visitor {n}", author="visitor")
    replies = await _replies(owner_conn, conv)
    assert [r["client_id"] for r in replies] == [f"telegram:{n}" for n in range(100, 112)]
    assert await owner_conn.fetchval("SELECT count(*) FROM parley.messages WHERE conversation_id = $1"
                                     " AND author = 'visitor' AND client_id LIKE 'v1__'", conv) == 12
