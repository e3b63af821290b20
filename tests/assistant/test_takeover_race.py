"""The bot says nothing once a person has the conversation, even when the person took it while the
bot's turn was running.

A visitor's "talk to a human" read the conversation as the bot's, and an agent claimed it before the
bot's handoff: the handoff was refused (409, a person has it) and the turn failed, logged with a
traceback, and posted "the assistant is unavailable" into the agent's conversation (bench/races.py,
bot_vs_takeover). The claim is held open here between the bot's read and its handoff."""
from __future__ import annotations

import asyncio
import uuid

import asyncpg
from pyapp.assistant.responder import respond
from pyapp.context import POOL
from pyapp.db import Actor, tenant_tx
from pyapp.widget.hooks import BotTurn
from support.waits import blocked_on_lock


async def test_handoff_after_a_person_took_over_meanwhile_stays_silent(server, bot, owner_conn, settings, caplog):
    tenant_id, chatbot_id = uuid.UUID(bot["tenant_id"]), bot["chatbot_id"]
    app_pool = server.app[POOL]
    async with tenant_tx(app_pool, Actor(tenant_id, kind="service", min_role="visitor")) as conn:
        conv = await conn.fetchval("SELECT id FROM parley.start_conversation($1, $2)", chatbot_id, uuid.uuid4())
    async with tenant_tx(app_pool, Actor(tenant_id, kind="visitor", actor_id=str(conv), min_role="visitor")) as conn:
        message = dict(await conn.fetchrow("SELECT id, body FROM parley.post_message($1, 'visitor', $2)",
                                           conv, "Can I talk to a human please?"))

    holder = await asyncpg.connect(settings.admin_url)  # an agent's claim, not yet committed
    try:
        await holder.execute("BEGIN")
        await holder.execute("UPDATE parley.conversations SET status = 'human', assignee_id = $2 WHERE id = $1",
                             conv, uuid.UUID(bot["user_id"]))
        turn = BotTurn(server.app, tenant_id, chatbot_id, conv, message, {"language": "en"})
        task = asyncio.create_task(respond(turn))
        await blocked_on_lock(owner_conn)  # the bot read "bot" and now waits to hand off
        await holder.execute("COMMIT")
        await asyncio.wait_for(task, 10)
    finally:
        await holder.close()

    said = await owner_conn.fetch("SELECT author, body FROM parley.messages WHERE conversation_id = $1"
                                  " AND author IN ('bot', 'system')", conv)
    assert said == [], said
    assert not [r for r in caplog.records if r.name == "parley.assistant" and r.exc_info], caplog.text
    assert await owner_conn.fetchval("SELECT status FROM parley.conversations WHERE id = $1", conv) == "human"
