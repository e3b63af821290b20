"""Managing chatbots is admin work in SQL too (parley.require_role('admin')), not only at the
route: an agent's transaction calling the functions directly is refused, an admin's is not."""
from __future__ import annotations

import asyncpg
import pytest
from pyapp.db import tenant_tx

CALLS = [
    ("SELECT id FROM parley.create_chatbot('Evil', '{}', '{}')", ()),
    ("SELECT id FROM parley.update_chatbot($1, 'Renamed', NULL, NULL)", ("bot",)),
    ("SELECT id FROM parley.rotate_chatbot_key($1)", ("bot",)),
    ("SELECT parley.delete_chatbot($1)", ("bot",)),
    ("SELECT id FROM parley.apply_chatbot_template($1, 'support')", ("bot",)),
]


async def test_agents_cannot_manage_chatbots_in_sql(rows, app_pool):
    owner = await rows.tenant()
    agent = await rows.member(owner, "agent")
    admin = await rows.member(owner, "admin")
    bot = await rows.chatbot(owner)
    refused = []
    for statement, args in CALLS:
        values = [bot["id"] if a == "bot" else a for a in args]
        with pytest.raises(asyncpg.PostgresError) as caught:
            async with tenant_tx(app_pool, agent.actor) as conn:
                await conn.fetchval(statement, *values)
        assert caught.value.sqlstate == "PT403" and "admin role" in str(caught.value), statement
        refused.append(statement)
    assert len(refused) == len(CALLS)
    async with tenant_tx(app_pool, admin.actor) as conn:  # the same calls pass the gate for an admin
        assert await conn.fetchval("SELECT public_key FROM parley.rotate_chatbot_key($1)", bot["id"]) is not None
        assert await conn.fetchval("SELECT name FROM parley.update_chatbot($1, 'Renamed', NULL, NULL)",
                                   bot["id"]) == "Renamed"
    async with tenant_tx(app_pool, owner.actor) as conn:
        assert await conn.fetchval("SELECT deleted_at FROM parley.chatbots WHERE id = $1", bot["id"]) is None
