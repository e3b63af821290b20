"""Counted limits hold when writers meet at the edge (bench/races.py found them passed).

A limit is checked by counting and then writing; usage counters are sharded and a writer's count or
row is invisible until it commits, so two writers with one left each counted before the other and
both passed: 4 bot replies were stored with one left of ai_msgs_per_day, alert channels, custom
domains and open conversations per address went past their caps. Now the enforcing function takes
the tenant's lock on that limit (parley.lock_limit, sql/42_limits.sql) before it counts, to commit:
the second writer waits for the first, then counts its row and is refused. Each test holds the first
writer's transaction open, starts the second, waits until it is blocked on a lock (or, on the old
code, done), commits the first, and checks the second was refused."""
from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest
from pyapp.db import Actor, act_as
from support.waits import day_clear, until


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
    await day_clear(owner_conn)
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


async def _arrange_alerts(owner_conn, owner, bot):
    await owner_conn.execute(
        "INSERT INTO parley.outbox_destinations (tenant_id, kind, name, target, event_kinds, chatbot_id)"
        " SELECT $1, 'email', 'a' || g, 'a' || g || '@example.test', '{lead_captured}', $2"
        " FROM generate_series(1, 9) g", owner.tenant_id, bot["id"])
    return ("SELECT parley.create_alert_channel(gen_random_uuid(), $1, 'email', 'Desk', $2, '{lead_captured}')",
            lambda n: (bot["id"], f"desk{n}@example.test"), "PT409")


async def _arrange_domains(owner_conn, owner, bot):
    await owner_conn.execute("INSERT INTO parley.custom_domains (tenant_id, hostname, token) SELECT $1, 'd' || g ||"
                             " '.example.com', md5(g::text) FROM generate_series(1, 4) g", owner.tenant_id)
    return "SELECT parley.claim_domain($1)", lambda n: (f"chat{n}.example.com",), "PT409"


async def _arrange_webhooks(owner_conn, owner, bot):
    await owner_conn.execute(
        "INSERT INTO parley.outbox_destinations (tenant_id, kind, name, target, event_kinds)"
        " SELECT $1, 'webhook', 'w' || g, 'https://hooks.example.test/' || g, '{message_added}'"
        " FROM generate_series(1, 19) g", owner.tenant_id)
    return ("SELECT parley.create_webhook_endpoint(gen_random_uuid(), 'Orders', $1, '{message_added}')",
            lambda n: (f"https://hooks.example.test/new{n}",), "PT409")


@pytest.mark.parametrize("arrange", [_arrange_alerts, _arrange_domains, _arrange_webhooks],
                         ids=["alert channels", "custom domains", "webhook endpoints"])
async def test_the_last_one_of_a_counted_cap_created_twice_at_once(rows, owner_conn, connect, arrange):
    owner = await rows.tenant(plan="white_label")
    bot = await rows.chatbot(owner)
    sql, args, refusal = await arrange(owner_conn, owner, bot)
    first, second = await connect(), await connect()
    for conn in (first, second):
        await conn.execute("BEGIN")
        await act_as(conn, Actor(owner.tenant_id, kind="user", actor_id=str(owner.user_id),
                                 session_id=owner.session_id, min_role="admin"))
    await first.fetchval(sql, *args(1))

    refused = await _second_refused(owner_conn, first, second, sql, *args(2))

    assert refused is not None and refused.sqlstate == refusal, refused


async def test_two_conversations_from_one_address_with_one_left(rows, owner_conn, connect):
    owner = await rows.tenant(plan="pro")
    bot = await rows.chatbot(owner)
    await owner_conn.execute("INSERT INTO parley.tenant_limits (tenant_id, max_open_conversations_per_ip)"
                             " VALUES ($1, 2)", owner.tenant_id)
    await rows.conversation(owner.tenant_id, bot["id"], ip="198.51.100.9")
    start = "SELECT id FROM parley.start_conversation($1, $2, NULL, NULL, NULL, NULL, '198.51.100.9')"
    first, second = await connect(), await connect()
    for conn in (first, second):
        await conn.execute("BEGIN")
        await act_as(conn, Actor(owner.tenant_id, kind="visitor", ip="198.51.100.9", min_role="visitor"))
    await first.fetchval(start, bot["id"], uuid.uuid4())

    refused = await _second_refused(owner_conn, first, second, start, bot["id"], uuid.uuid4())

    assert refused is not None and refused.sqlstate == "PT429", refused
