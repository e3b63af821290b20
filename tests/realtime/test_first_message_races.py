"""A visitor's first message is stored once, whichever way it is sent twice.

The conversation used to start in one transaction and the first message to be stored in another, so
the same first message (same client_id) from two tabs of one visitor, or resent on a new socket when
the first socket dropped before its `conversation` frame came, started a conversation each and was
stored in each: three tabs, three conversations (bench/races.py, first_message_tabs). Now the start
and the message are one transaction (parley.start_with_message): a visitor's starts take turns, and a
message whose client_id one of the visitor's conversations already holds goes there, stored once."""
from __future__ import annotations

import asyncio
import uuid

import asyncpg
from pyapp.db import _init_connection
from support.realtime import visitor, widget_session
from support.waits import blocked_on_lock


async def _stored(owner_conn, tenant, client_id: str) -> list:
    return await owner_conn.fetch(
        "SELECT m.id, m.conversation_id FROM parley.messages m WHERE m.tenant_id = $1 AND m.client_id = $2",
        uuid.UUID(tenant["tenant_id"]), client_id)


async def test_first_message_resent_on_a_new_socket_joins_its_conversation(server, tenant, owner_conn, clients):
    view = await widget_session(server, tenant["key"], start=False)  # a page view: no conversation yet
    first = await visitor(server, view)
    clients.append(first)
    frame = {"type": "message", "client_id": "first-words", "body": "Hello, is anyone there?"}
    await first.send(frame)
    started = await first.expect(type="conversation")
    echo = await first.expect_message("Hello, is anyone there?", author="visitor")

    # The tab whose socket dropped before its conversation frame came: the page view's token, again.
    again = await visitor(server, view)
    clients.append(again)
    await again.send(frame)
    joined = await again.expect(type="conversation")
    resent = await again.expect_message("Hello, is anyone there?", author="visitor")

    assert joined["conversation_id"] == started["conversation_id"]
    assert resent["id"] == echo["id"]
    assert len(await _stored(owner_conn, tenant, "first-words")) == 1
    assert await owner_conn.fetchval("SELECT count(*) FROM parley.conversations WHERE tenant_id = $1",
                                     uuid.UUID(tenant["tenant_id"])) == 1


async def test_another_first_message_starts_its_own_conversation(server, tenant, owner_conn, clients):
    """Only the same message joins: a new one from a tab without a conversation starts one, as before."""
    view = await widget_session(server, tenant["key"], start=False)
    for n in range(2):
        tab = await visitor(server, view)
        clients.append(tab)
        await tab.send({"type": "message", "client_id": f"words-{n}", "body": f"Question {n}"})
        await tab.expect(type="conversation")
        await tab.expect_message(f"Question {n}", author="visitor")
    conversations = {r["conversation_id"] for n in range(2) for r in await _stored(owner_conn, tenant, f"words-{n}")}
    assert len(conversations) == 2


async def test_two_tabs_starting_at_once_take_turns(settings, tenant, owner_conn):
    """The interleaving that started two conversations: the second tab's start waits for the first
    one's transaction (the visitor's lock), then finds the message there."""
    tenant_id, visitor_id = uuid.UUID(tenant["tenant_id"]), uuid.uuid4()
    conns = []
    for _ in range(2):
        conn = await asyncpg.connect(settings.app_url)
        await _init_connection(conn)
        await conn.execute("BEGIN")
        await conn.execute("SELECT parley.begin_request($1, 'visitor', NULL, NULL, '192.0.2.7', NULL, 'visitor')",
                           tenant_id)
        conns.append(conn)
    start = "SELECT * FROM parley.start_with_message($1, $2, 'Hi there', 'tab-words')"
    try:
        first = await conns[0].fetchrow(start, tenant["chatbot_id"], visitor_id)
        second = asyncio.create_task(conns[1].fetchrow(start, tenant["chatbot_id"], visitor_id))
        await blocked_on_lock(owner_conn, conns[1].get_server_pid())
        await conns[0].execute("COMMIT")
        second_row = await second
        await conns[1].execute("COMMIT")
    finally:
        for conn in conns:
            await conn.close()
    assert not first["duplicate"] and second_row["duplicate"]
    assert second_row["id"] == first["id"] and second_row["message"]["id"] == first["message"]["id"]
    assert len(await _stored(owner_conn, tenant, "tab-words")) == 1
