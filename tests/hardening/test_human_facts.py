"""The human facts kept on a conversation (human_at, human_requested_at, first_human_reply_at),
which the day figures read instead of three lookups per conversation: written by the triggers as
the app writes (visitor and member transactions under RLS), equal to their definitions over the
events and agent messages whatever order the rows arrive in."""
from pyapp.db import Actor, tenant_tx
from support.knowledge import make_tenant

DEFINITION = """
  SELECT (SELECT min(e.at) FROM parley.events e WHERE e.tenant_id = c.tenant_id AND e.conversation_id = c.id
            AND e.kind IN ('human_requested', 'claimed', 'assigned')) AS human_at,
         r.requested AS human_requested_at,
         (SELECT min(m.created_at) FROM parley.messages m WHERE m.tenant_id = c.tenant_id
            AND m.conversation_id = c.id AND m.author = 'agent' AND m.created_at >= r.requested) AS first_human_reply_at
    FROM parley.conversations c,
         LATERAL (SELECT min(e.at) AS requested FROM parley.events e WHERE e.tenant_id = c.tenant_id
                    AND e.conversation_id = c.id AND e.kind = 'human_requested') r
   WHERE c.tenant_id = $1 AND c.id = $2"""
STORED = ("SELECT human_at, human_requested_at, first_human_reply_at FROM parley.conversations"
          " WHERE tenant_id = $1 AND id = $2")


async def _conversation(owner_conn, tenant) -> object:
    return await owner_conn.fetchval(
        "INSERT INTO parley.conversations (tenant_id, chatbot_id, visitor_id, created_at)"
        " VALUES ($1, $2, gen_random_uuid(), now() - interval '1 hour') RETURNING id", tenant.id, tenant.chatbot_id)


async def _event(owner_conn, tenant, conv, kind: str, minutes_ago: int) -> None:
    await owner_conn.execute("INSERT INTO parley.events (tenant_id, at, kind, conversation_id, actor_kind)"
                             " VALUES ($1, now() - make_interval(mins => $2), $3, $4, 'system')",
                             tenant.id, minutes_ago, kind, conv)


async def _agent_message(owner_conn, tenant, conv, minutes_ago: int) -> None:
    await owner_conn.execute("INSERT INTO parley.messages (tenant_id, conversation_id, author, body, created_at)"
                             " VALUES ($1, $2, 'agent', 'hello', now() - make_interval(mins => $3))",
                             tenant.id, conv, minutes_ago)


async def _facts(owner_conn, tenant, conv) -> tuple[tuple, tuple]:
    stored = tuple(await owner_conn.fetchrow(STORED, tenant.id, conv))
    return stored, tuple(await owner_conn.fetchrow(DEFINITION, tenant.id, conv))


async def test_facts_follow_their_definition_in_any_order(settings, owner_conn):
    tenant = await make_tenant(settings, owner_conn)
    try:
        conv = await _conversation(owner_conn, tenant)
        assert await _facts(owner_conn, tenant, conv) == ((None, None, None), (None, None, None))
        # An agent message before any request is no reply to it; a claim is human involvement.
        await _agent_message(owner_conn, tenant, conv, 50)
        await _event(owner_conn, tenant, conv, "claimed", 45)
        stored, defined = await _facts(owner_conn, tenant, conv)
        assert stored == defined and stored[0] is not None and stored[1:] == (None, None)
        # A request, a reply after it, then a later reply: the first one counts.
        await _event(owner_conn, tenant, conv, "human_requested", 40)
        await _agent_message(owner_conn, tenant, conv, 30)
        await _agent_message(owner_conn, tenant, conv, 20)
        stored, defined = await _facts(owner_conn, tenant, conv)
        assert stored == defined and stored[2] is not None
        # Rows arriving out of time order: a reply older than the known first one, then a request
        # earlier than the known one (the first reply is looked up again from that time, and
        # the message of 50 minutes ago still precedes it).
        await _agent_message(owner_conn, tenant, conv, 35)
        await _event(owner_conn, tenant, conv, "human_requested", 48)
        await _event(owner_conn, tenant, conv, "assigned", 55)
        stored, defined = await _facts(owner_conn, tenant, conv)
        assert stored == defined
        assert await owner_conn.fetchval(
            "SELECT first_human_reply_at BETWEEN now() - interval '36 minutes' AND now() - interval '34 minutes'"
            " AND human_at < now() - interval '54 minutes' FROM parley.conversations WHERE tenant_id = $1 AND id = $2",
            tenant.id, conv)
        # Other kinds and other authors leave them alone.
        await _event(owner_conn, tenant, conv, "released", 1)
        await owner_conn.execute("INSERT INTO parley.messages (tenant_id, conversation_id, author, body, created_at)"
                                 " VALUES ($1, $2, 'bot', 'hi', now() - interval '47 minutes')", tenant.id, conv)
        assert await _facts(owner_conn, tenant, conv) == (stored, defined)
    finally:
        await tenant.close()


async def test_facts_written_by_the_app_roles_under_rls(settings, owner_conn):
    """The visitor asks for a human through parley.transition_conversation and a member replies, each in
    its own transaction as parley_app (the triggers write the conversation as the caller)."""
    tenant = await make_tenant(settings, owner_conn)
    try:
        conv = await _conversation(owner_conn, tenant)
        async with tenant_tx(await tenant.pool("app"), Actor(tenant_id=tenant.id, kind="visitor",
                                                             actor_id=str(conv), min_role="visitor")) as conn:
            await conn.execute("SELECT parley.transition_conversation($1, 'human')", conv)
        async with await tenant.tx("service") as conn:
            await conn.execute("INSERT INTO parley.messages (tenant_id, conversation_id, author, body)"
                               " VALUES ($1, $2, 'agent', 'here')", tenant.id, conv)
        stored, defined = await _facts(owner_conn, tenant, conv)
        assert stored == defined and None not in stored
        # The jobs role writes them too (it writes events for Telegram's /claim and the idle sweep).
        other = await _conversation(owner_conn, tenant)
        async with await tenant.tx("system") as conn:
            await conn.execute("INSERT INTO parley.events (tenant_id, kind, conversation_id, actor_kind)"
                               " VALUES ($1, 'human_requested', $2, 'system')", tenant.id, other)
        stored, defined = await _facts(owner_conn, tenant, other)
        assert stored == defined and stored[1] is not None
    finally:
        await tenant.close()


async def test_rows_edited_in_place_are_counted_again(settings, owner_conn):
    tenant = await make_tenant(settings, owner_conn)
    try:
        conv = await _conversation(owner_conn, tenant)
        await _event(owner_conn, tenant, conv, "human_requested", 10)
        await _agent_message(owner_conn, tenant, conv, 5)
        await owner_conn.execute("UPDATE parley.events SET at = at - interval '30 minutes'"
                                 " WHERE tenant_id = $1 AND conversation_id = $2", tenant.id, conv)
        stored, defined = await _facts(owner_conn, tenant, conv)
        assert stored == defined
        await owner_conn.execute("UPDATE parley.messages SET created_at = created_at - interval '60 minutes'"
                                 " WHERE tenant_id = $1 AND conversation_id = $2", tenant.id, conv)
        stored, defined = await _facts(owner_conn, tenant, conv)
        assert stored == defined and stored[2] is None  # the reply now precedes the request
        await owner_conn.execute("UPDATE parley.events SET kind = 'released' WHERE tenant_id = $1"
                                 " AND conversation_id = $2", tenant.id, conv)
        assert await _facts(owner_conn, tenant, conv) == ((None, None, None), (None, None, None))
    finally:
        await tenant.close()
