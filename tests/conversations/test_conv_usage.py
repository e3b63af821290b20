"""Usage counters: exact under concurrency, without a single hot row."""
import asyncio
import collections
import uuid

import asyncpg
from pyapp.config import role_password, url_for_role
from pyapp.db import _init_connection
from support.server import TEST_SECRET

WORKERS = 8
MESSAGES = 200


async def _connect(settings, role):
    conn = await asyncpg.connect(url_for_role(settings.admin_url, role, role_password(TEST_SECRET, role)))
    await _init_connection(conn)
    return conn


async def test_usage_exact_under_concurrency_and_sharded(make_workspace, owner_conn, settings):
    ws = await make_workspace(plan="pro")
    await owner_conn.execute("INSERT INTO parley.tenant_limits (tenant_id, msgs_per_min_chatbot, msgs_per_min_ip, "
                             "ai_msgs_per_day, max_open_conversations) VALUES ($1, 0, 0, 0, 0)", ws.tenant_id)
    bot = await ws.chatbot()
    convs = [await ws.start(bot["id"]) for _ in range(WORKERS)]
    conns = [await _connect(settings, "parley_app") for _ in range(WORKERS)]
    pids = [c.get_server_pid() for c in conns]

    async def worker(conn, conv):
        for i in range(MESSAGES):
            author = "visitor" if i % 2 == 0 else "bot"
            async with conn.transaction():
                await conn.execute("SELECT parley.begin_request($1, $2, $3, NULL, '192.0.2.1', NULL, 'visitor')",
                                   ws.tenant_id, "visitor" if author == "visitor" else "service",
                                   str(conv) if author == "visitor" else None)
                await conn.execute("SELECT id FROM parley.post_message($1, $2, $3)", conv, author, f"m{i}")

    try:
        await asyncio.gather(*(worker(c, conv) for c, conv in zip(conns, convs, strict=True)))
    finally:
        for c in conns:
            await c.close()

    total = WORKERS * MESSAGES
    usage = {r["metric"]: r["value"] for r in await owner_conn.fetch(
        "SELECT metric, sum(value) AS value FROM parley.usage_counters WHERE tenant_id = $1 GROUP BY metric",
        ws.tenant_id)}
    assert usage == {"messages": total, "ai_messages": total // 2, "conversations": WORKERS}
    assert await owner_conn.fetchval("SELECT count(*) FROM parley.messages WHERE tenant_id = $1", ws.tenant_id) == total

    # No hot row: each backend wrote its own shard (pid % 16); a shard holds exactly the
    # messages of the connections that map to it.
    expected = collections.Counter(pid % 16 for pid in pids)
    shards = {r["shard"]: r["value"] for r in await owner_conn.fetch(
        "SELECT shard, value FROM parley.usage_counters WHERE tenant_id = $1 AND metric = 'messages'", ws.tenant_id)}
    assert shards == {s: n * MESSAGES for s, n in expected.items()}
    assert len(shards) > 1 and max(shards.values()) < total

    # Message ids of each conversation are strictly increasing; event ids are gap-free in commit order.
    for conv in convs:
        ids = [r["id"] for r in await owner_conn.fetch(
            "SELECT id FROM parley.messages WHERE conversation_id = $1 ORDER BY created_at, id", conv)]
        assert ids == sorted(ids) and len(ids) == MESSAGES

    # Analysts see the same totals, and only the analytics view.
    analyst = await _connect(settings, "parley_analyst")
    try:
        row = await analyst.fetchrow("SELECT * FROM analytics.usage_daily WHERE tenant_id = $1", ws.tenant_id)
        assert (row["messages"], row["ai_messages"], row["conversations"]) == (total, total // 2, WORKERS)
        try:
            await analyst.fetch("SELECT 1 FROM parley.usage_counters LIMIT 1")
            raise AssertionError("analyst read a parley table")
        except asyncpg.InsufficientPrivilegeError:
            pass
    finally:
        await analyst.close()

    # The tenant's own view and API agree.
    status, body = await ws.call("GET", "/api/usage")
    assert status == 200 and body["days"][-1]["messages"] == total


async def test_compact_usage_folds_shards(make_workspace, owner_conn, settings):
    ws = await make_workspace()
    await owner_conn.execute(
        "INSERT INTO parley.usage_counters (tenant_id, day, metric, shard, value) "
        "SELECT $1, current_date - 2, 'messages', s, 10 FROM generate_series(0, 5) s", ws.tenant_id)
    jobs = await _connect(settings, "parley_jobs")
    try:
        async with jobs.transaction():
            await jobs.execute("SELECT parley.begin_request($1, 'system', 'jobs', NULL, NULL, NULL, 'agent')",
                               ws.tenant_id)
            await jobs.fetchval("SELECT parley.compact_usage()")
    finally:
        await jobs.close()
    rows = await owner_conn.fetch("SELECT shard, value FROM parley.usage_counters WHERE tenant_id = $1 "
                                  "AND day = current_date - 2", ws.tenant_id)
    assert [(r["shard"], r["value"]) for r in rows] == [(0, 60)]


async def test_active_seats_count_people_once_a_day(ws, signup):
    bot = await ws.chatbot()
    conv = await ws.start(bot["id"])
    agent = ws.agents[0]
    await ws.call("POST", f"/api/conversations/{conv}/claim", token=agent["access_token"])
    for i in range(3):
        await ws.call("POST", f"/api/conversations/{conv}/reply", json={"body": f"r{i}"}, token=agent["access_token"])
    await ws.call("POST", f"/api/conversations/{conv}/notes", json={"body": "n"})
    _status, body = await ws.call("GET", "/api/usage")
    assert body["days"][-1]["active_seats"] == 2
    assert uuid.UUID(ws.owner["user_id"])
