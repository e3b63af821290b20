"""Caps on usage hold when writers meet at the edge (bench/races.py found them passed).

Usage counters are sharded by backend and a writer's count is invisible until it commits, so two
bot replies (or two conversation starts) of one tenant with one left under a cap each read the total
from before the other and both passed: 4 bot replies were stored with one left of ai_msgs_per_day.
Now the enforcing function takes the tenant's lock on the capped metric (parley.lock_usage_cap,
sql/43_usage.sql) before it reads the total, to commit: the second writer waits for the first, then
sees its count and is refused. Each test holds the first writer's transaction open, starts the
second, waits until it is blocked on a lock (or, on the old code, done), commits the first, and
checks the second was refused 402."""
from __future__ import annotations

import asyncio
import uuid

import asyncpg
from support.waits import until


async def _begin(conn: asyncpg.Connection, tenant_id: uuid.UUID) -> None:
    """An open transaction as the server's service actor (the bot's replies, a start from a channel)."""
    await conn.execute("BEGIN")
    await conn.execute("SELECT parley.begin_request($1, 'service', NULL, NULL, '192.0.2.1', NULL, 'visitor')",
                       tenant_id)


async def _second_refused(owner_conn, first: asyncpg.Connection, second: asyncpg.Connection, sql: str, *args):
    """With `first`'s transaction open past its own write, run `sql` on `second`; commit `first` once
    `second` waits for it (or has finished: the old code did not wait); return what `second` raised."""
    task = asyncio.create_task(second.fetchval(sql, *args))
    pid = second.get_server_pid()

    async def waiting_or_done():
        return task.done() or await owner_conn.fetchval(
            "SELECT cardinality(pg_blocking_pids($1)) > 0", pid)

    await until(waiting_or_done, what="the second writer to wait for the first or finish")
    await first.execute("COMMIT")
    try:
        await task
    except asyncpg.PostgresError as exc:
        return exc
    finally:
        await second.execute("ROLLBACK")
    return None


async def _used(owner_conn, tenant_id, metric: str) -> int:
    return await owner_conn.fetchval("SELECT coalesce(sum(value), 0) FROM parley.usage_counters"
                                     " WHERE tenant_id = $1 AND metric = $2", tenant_id, metric)


async def test_two_bot_replies_with_one_left_today(rows, owner_conn, connect):
    owner = await rows.tenant(plan="pro")
    bot = await rows.chatbot(owner)
    first_conv = await rows.conversation(owner.tenant_id, bot["id"])
    second_conv = await rows.conversation(owner.tenant_id, bot["id"])
    await owner_conn.execute("INSERT INTO parley.tenant_limits (tenant_id, ai_msgs_per_day) VALUES ($1, 3)",
                             owner.tenant_id)
    await owner_conn.execute("INSERT INTO parley.usage_counters (tenant_id, day, metric, shard, value)"
                             " VALUES ($1, (now() AT TIME ZONE 'UTC')::date, 'ai_messages', 15, 2)", owner.tenant_id)
    first, second = await connect(), await connect()
    await _begin(first, owner.tenant_id)
    await first.fetchval("SELECT id FROM parley.post_message($1, 'bot', 'The first answer')", first_conv)
    await _begin(second, owner.tenant_id)

    refused = await _second_refused(owner_conn, first, second,
                                    "SELECT id FROM parley.post_message($1, 'bot', 'The second answer')", second_conv)

    assert refused is not None and refused.sqlstate == "PT402", refused
    assert await _used(owner_conn, owner.tenant_id, "ai_messages") == 3
    assert await owner_conn.fetchval("SELECT count(*) FROM parley.messages WHERE tenant_id = $1 AND author = 'bot'",
                                     owner.tenant_id) == 1


async def test_two_conversations_with_one_left_of_the_allowance(rows, owner_conn, connect):
    """Free plan (a hard monthly cap), the open-conversation limit lifted for this workspace: that
    limit's own lock used to be what kept starts one after another."""
    owner = await rows.tenant()
    bot = await rows.chatbot(owner)
    await owner_conn.execute("INSERT INTO parley.tenant_limits (tenant_id, max_open_conversations,"
                             " included_conversations) VALUES ($1, 0, 5)", owner.tenant_id)
    await owner_conn.execute("INSERT INTO parley.usage_counters (tenant_id, day, metric, shard, value)"
                             " VALUES ($1, (now() AT TIME ZONE 'UTC')::date, 'conversations', 15, 4)", owner.tenant_id)
    start = "SELECT id FROM parley.start_conversation($1, $2)"
    first, second = await connect(), await connect()
    await _begin(first, owner.tenant_id)
    await first.fetchval(start, bot["id"], uuid.uuid4())
    await _begin(second, owner.tenant_id)

    refused = await _second_refused(owner_conn, first, second, start, bot["id"], uuid.uuid4())

    assert refused is not None and refused.sqlstate == "PT402", refused
    assert await _used(owner_conn, owner.tenant_id, "conversations") == 5


async def test_replies_far_from_the_cap_still_pass(rows, owner_conn, connect):
    """The lock orders writers, it refuses nothing by itself: with room left both replies are stored."""
    owner = await rows.tenant(plan="pro")
    bot = await rows.chatbot(owner)
    convs = [await rows.conversation(owner.tenant_id, bot["id"]) for _ in range(2)]
    first, second = await connect(), await connect()
    await _begin(first, owner.tenant_id)
    await first.fetchval("SELECT id FROM parley.post_message($1, 'bot', 'One')", convs[0])
    await _begin(second, owner.tenant_id)

    refused = await _second_refused(owner_conn, first, second, "SELECT id FROM parley.post_message($1, 'bot', 'Two')",
                                    convs[1])

    assert refused is None
