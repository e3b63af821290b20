"""Hot-path lookups stay single index probes before the first ANALYZE.

A new monthly partition (and a new install) has no statistics until autovacuum gets to it;
the planner then guesses, and its cached plans live as long as the pooled session. Two such
guesses made every visitor message cost O(messages in the conversation) and every relayed
event O(conversations in the tenant). These tests run the real functions as parley_app with
auto_explain reporting every nested plan, on tables that were never analyzed.
"""
import re
import uuid

import asyncpg
import pytest

MESSAGES = 2000
CONVERSATIONS = 40  # under the free plan's open-conversation limit


@pytest.fixture
async def explaining_app(settings, owner_conn):
    """A parley_app connection whose every statement, nested ones too, reports its plan."""
    db = await owner_conn.fetchval("SELECT current_database()")
    for name, value in (("session_preload_libraries", "auto_explain"), ("auto_explain.log_min_duration", "0"),
                        ("auto_explain.log_nested_statements", "on"), ("auto_explain.log_analyze", "on"),
                        ("auto_explain.log_timing", "off"), ("auto_explain.log_level", "notice")):
        await owner_conn.execute(f'ALTER ROLE parley_app IN DATABASE "{db}" SET {name} = \'{value}\'')
    conn = await asyncpg.connect(settings.app_url)
    plans: list[str] = []
    conn.add_log_listener(lambda _c, msg: plans.append(msg.message))
    try:
        yield conn, plans
    finally:
        await conn.close()
        await owner_conn.execute(f'ALTER ROLE parley_app IN DATABASE "{db}" RESET ALL')


def plan_of(plans: list[str], marker: str) -> str:
    found = [p for p in plans if marker in p]
    assert found, f"no plan for {marker!r} among {len(plans)}"
    return found[-1]


async def busy_conversation(ws, owner_conn, bot: dict | None = None) -> uuid.UUID:
    bot = bot or await ws.chatbot()
    convs = [await ws.start(bot["id"]) for _ in range(3)]
    conv = convs[0]
    await owner_conn.execute(
        "INSERT INTO parley.messages (tenant_id, conversation_id, author, body, client_id)"
        " SELECT $1, $2, 'visitor', 'message ' || i, 'old-' || i FROM generate_series(1, $3) i",
        ws.tenant_id, conv, MESSAGES)
    return conv


async def post_as_visitor(conn, ws, conv, client_id: str) -> None:
    """The server's visitor path: a batch (here of one) of parley.post_visitor_messages."""
    rows = await conn.fetch("SELECT * FROM parley.post_visitor_messages($1, $2, $3, $4, $5, $6)",
                            ws.tenant_id, [conv], ["hello"], [client_id], [None], [None])
    assert rows[0]["error_state"] is None, rows[0]


async def replay_as_visitor(conn, ws, conv, after: int) -> list:
    async with conn.transaction():
        await conn.fetchval("SELECT parley.begin_request($1, 'visitor', $2, NULL, NULL, NULL, 'visitor')",
                            ws.tenant_id, str(conv))
        return await conn.fetch("SELECT id FROM parley.visible_messages($1, $2, 100)", conv, after)


@pytest.mark.parametrize("statistics", ["none", "taken while empty", "taken", "plan cached while small"])
async def test_a_new_visitor_message_probes_the_client_id_index(ws, owner_conn, explaining_app, statistics):
    conn, plans = explaining_app
    # Long-lived pooled sessions end up on the generic plan: check that one.
    await conn.execute("SET plan_cache_mode = force_generic_plan")
    if statistics == "taken while empty":
        await owner_conn.execute("ANALYZE parley.messages")
    if statistics == "plan cached while small":
        # The session plans the check while the month's partition is small (and analyzed so),
        # then the partition grows before the next ANALYZE: the cached plan must still be an
        # index probe, not the sequential scan that was cheapest for a few rows.
        bot = await ws.chatbot()
        first = await ws.start(bot["id"])
        await post_as_visitor(conn, ws, first, "early-1")
        await owner_conn.execute("ANALYZE parley.messages")
        await post_as_visitor(conn, ws, first, "early-2")
    conv = await busy_conversation(ws, owner_conn, bot if statistics == "plan cached while small" else None)
    if statistics == "taken":
        await owner_conn.execute("ANALYZE parley.messages")
    await post_as_visitor(conn, ws, conv, "new-1")
    lookup = plan_of(plans, "m.client_id = p_client_id")
    assert "client_id_idx" in lookup and "Seq Scan" not in lookup, lookup
    removed = [int(n) for n in re.findall(r"Rows Removed by Filter: (\d+)", lookup)]
    assert not removed or max(removed) < 10, lookup


async def read_as_relay(conn, ws, after: int = 0) -> list:
    async with conn.transaction():
        await conn.fetchval("SELECT parley.begin_request($1, 'service', 'relay', NULL, NULL, NULL, 'agent')",
                            ws.tenant_id)
        return await conn.fetch("SELECT * FROM parley.events_after($1, 1000)", after)


@pytest.mark.parametrize("cached_while_small", [False, True])
async def test_the_relay_reads_each_event_message_with_one_probe(ws, owner_conn, explaining_app, cached_while_small):
    bot = await ws.chatbot()
    conn, plans = explaining_app
    if cached_while_small:
        await owner_conn.execute("ANALYZE parley.events")
        await owner_conn.execute("ANALYZE parley.messages")
        await read_as_relay(conn, ws)
    convs = [await ws.start(bot["id"]) for _ in range(CONVERSATIONS)]
    for i, conv in enumerate(convs):  # one address each: under the per-IP rate limit
        await ws.visitor_says(conv, "hello", f"c-{conv}", ip=f"198.51.100.{i + 1}")
    rows = await read_as_relay(conn, ws)
    assert sum(1 for r in rows if r["kind"] == "message_added") == CONVERSATIONS
    read = plan_of(plans, "FROM parley.events e")
    assert "Seq Scan" not in read, read
    # The scan of events starts at the cursor instead of filtering the tenant's whole history.
    events = index_scans(read, "events_")
    assert events and all("id >" in cond and removed == 0 for cond, removed, _, _ in events), read
    # Each lookup of a message (one per event) is one descent of one index, not a skip scan
    # over every conversation of the tenant.
    scans = index_scans(read, "messages_")
    assert scans, read
    for cond, _removed, loops, searches in scans:
        assert "conversation_id = e.conversation_id" in cond, read
        assert searches <= loops, read


@pytest.mark.parametrize("cached_while_small", [False, True])
async def test_a_replay_starts_at_the_last_seen_message(ws, owner_conn, explaining_app, cached_while_small):
    conn, plans = explaining_app
    # Long-lived pooled sessions end up on the generic plan: check that one.
    await conn.execute("SET plan_cache_mode = force_generic_plan")
    bot = await ws.chatbot()
    if cached_while_small:
        first = await ws.start(bot["id"])
        await ws.visitor_says(first, "hello", "early-1")
        await owner_conn.execute("ANALYZE parley.messages")
        await replay_as_visitor(conn, ws, first, 0)
    conv = await busy_conversation(ws, owner_conn, bot)
    last = await owner_conn.fetchval("SELECT max(id) FROM parley.messages WHERE conversation_id = $1", conv)
    rows = await replay_as_visitor(conn, ws, conv, last - 5)
    assert len(rows) == 5
    read = plan_of(plans, "FROM parley.messages m")
    scans = index_scans(read, "messages_")
    assert scans and "Seq Scan" not in read, read
    for cond, removed, _loops, _searches in scans:
        assert "id >" in cond and removed < 10, read


def index_scans(plan: str, table_prefix: str) -> list[tuple[str, int, int, int]]:
    """(index condition, rows removed by filter, loops, index searches) of each executed index
    scan of a table whose name starts with table_prefix."""
    out, current = [], None
    for line in plan.splitlines():
        if "->" in line:
            if current:
                out.append(tuple(current))
            head = re.search(rf"Index Scan using \S+ on {table_prefix}\S* .*loops=(\d+)\)", line)
            current = ["", 0, int(head.group(1)), 0] if head else None
        elif current is not None:
            if "Index Cond:" in line:
                current[0] = line
            elif m := re.search(r"Rows Removed by Filter: (\d+)", line):
                current[1] = int(m.group(1))
            elif m := re.search(r"Index Searches: (\d+)", line):
                current[3] = int(m.group(1))
    if current:
        out.append(tuple(current))
    return out


async def test_todays_usage_reads_only_today(ws, owner_conn, explaining_app):
    # A year of history: the quota check of every bot reply must not walk it.
    await owner_conn.execute(
        "INSERT INTO parley.usage_counters (tenant_id, day, metric, shard, value)"
        " SELECT $1, current_date - d, m, s, 1 FROM generate_series(1, 365) d,"
        " unnest(ARRAY['messages', 'ai_messages']) m, generate_series(0, 3) s", ws.tenant_id)
    conn, plans = explaining_app
    await conn.execute("SET plan_cache_mode = force_generic_plan")
    async with conn.transaction():
        await conn.fetchval("SELECT parley.begin_request($1, 'service', 'bot', NULL, NULL, NULL, 'agent')",
                            ws.tenant_id)
        assert await conn.fetchval("SELECT parley.usage_on('ai_messages')") == 0
    read = plan_of(plans, "FROM parley.usage_counters u")
    scans = index_scans(read, "usage_counters")
    assert scans, read
    for cond, removed, _loops, _searches in scans:
        assert "day =" in cond and removed == 0, read


async def test_the_message_search_index_has_no_pending_list(owner_conn):
    """With GIN's fastupdate the insert that overflows the pending list merges it (a stall of
    a tenant's live delivery); every partition's search index, later ones too, is without it."""
    await owner_conn.execute("SELECT parley.ensure_monthly_partitions('parley.messages'::regclass, 8)")
    rows = await owner_conn.fetch(
        "SELECT c.relname, c.reloptions FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = 'parley.messages__tenant_id_body_tsv_idx'::regclass")
    assert len(rows) >= 9
    assert all("fastupdate=off" in (r["reloptions"] or []) for r in rows), rows
