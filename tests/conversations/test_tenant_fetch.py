"""db.tenant_fetch: begin_request fused into the query's own statement (hot paths).

It must give exactly tenant_tx's guarantees: the request is begun before the query runs, its
checks refuse forged actors before anything is written, and nothing outlives the statement."""
import uuid

import asyncpg
import pytest
from pyapp.db import Actor, tenant_fetch, tenant_fetchrow
from pyapp.errors import from_postgres

VISITOR_IP = "203.0.113.7"


def visitor(ws, conversation_id) -> Actor:
    return Actor(ws.tenant_id, kind="visitor", actor_id=str(conversation_id), ip=VISITOR_IP, min_role="visitor")


POST = "SELECT m.id, m.body FROM parley.post_message($1, 'visitor', $2, $3, '{}') m"


async def test_a_visitor_message_in_one_statement(ws, owner_conn):
    bot = await ws.chatbot()
    conv = await ws.start(bot["id"])
    row = await tenant_fetchrow(ws.pool, visitor(ws, conv), POST, conv, "hello", "c-1")
    assert row["body"] == "hello"
    stored = await owner_conn.fetchrow("SELECT conversation_id, author FROM parley.messages WHERE id = $1", row["id"])
    assert (stored["conversation_id"], stored["author"]) == (conv, "visitor")
    # Its own transaction: committed, and the same client id is a resend.
    again = await tenant_fetchrow(ws.pool, visitor(ws, conv), POST, conv, "hello", "c-1")
    assert again["id"] == row["id"]


async def test_nothing_outlives_the_statement(ws):
    bot = await ws.chatbot()
    conv = await ws.start(bot["id"])
    await tenant_fetch(ws.pool, visitor(ws, conv), "SELECT parley.current_tenant_id() AS t")
    # Every pooled connection afterwards: no tenant, no actor (the pool releases without a reset query).
    for _ in range(3):
        async with ws.pool.acquire() as conn:
            assert await conn.fetchval("SELECT current_setting('app.tenant_id', true)") in ("", None)
            assert await conn.fetchval("SELECT current_setting('app.actor_kind', true)") in ("", None)


async def test_the_request_is_begun_before_the_query_runs(ws):
    bot = await ws.chatbot()
    conv = await ws.start(bot["id"])
    row = await tenant_fetchrow(ws.pool, visitor(ws, conv),
                                "SELECT parley.current_tenant_id() AS t, parley.current_actor_id() AS a,"
                                " (SELECT count(*) FROM parley.conversations) AS visible")
    # RLS already applies inside the same statement: the visitor sees its own conversation only.
    assert (row["t"], row["a"], row["visible"]) == (ws.tenant_id, str(conv), 1)


async def test_a_visitor_cannot_post_into_another_conversation(ws, owner_conn):
    bot = await ws.chatbot()
    mine, other = await ws.start(bot["id"]), await ws.start(bot["id"])
    with pytest.raises(asyncpg.PostgresError) as caught:
        await tenant_fetchrow(ws.pool, visitor(ws, mine), POST, other, "sneaky", None)
    assert from_postgres(caught.value).status == 403
    assert await owner_conn.fetchval("SELECT count(*) FROM parley.messages WHERE conversation_id = $1", other) == 0


async def test_forged_actors_are_refused_before_anything_runs(ws, make_workspace, owner_conn):
    bot = await ws.chatbot()
    conv = await ws.start(bot["id"])
    other = await make_workspace()
    cases = [
        Actor(ws.tenant_id, kind="system", min_role="visitor"),  # only the jobs login may be system
        Actor(ws.tenant_id, kind="user", actor_id=str(uuid.uuid4()), session_id=uuid.uuid4()),  # no session
        Actor(other.tenant_id, kind="visitor", actor_id=str(conv), min_role="visitor"),  # another tenant's conversation
        Actor(ws.tenant_id, kind="visitor", actor_id=str(conv), min_role="agent"),  # below the route's role
    ]
    for actor in cases:
        with pytest.raises(asyncpg.PostgresError) as caught:
            await tenant_fetchrow(ws.pool, actor, POST, conv, "forged", None)
        assert from_postgres(caught.value).status in (401, 403, 404), actor
    assert await owner_conn.fetchval("SELECT count(*) FROM parley.messages WHERE conversation_id = $1", conv) == 0
