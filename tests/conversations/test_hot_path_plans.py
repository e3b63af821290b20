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


async def busy_conversation(ws, owner_conn) -> uuid.UUID:
    bot = await ws.chatbot()
    convs = [await ws.start(bot["id"]) for _ in range(3)]
    conv = convs[0]
    await owner_conn.execute(
        "INSERT INTO parley.messages (tenant_id, conversation_id, author, body, client_id)"
        " SELECT $1, $2, 'visitor', 'message ' || i, 'old-' || i FROM generate_series(1, $3) i",
        ws.tenant_id, conv, MESSAGES)
    return conv


async def test_a_new_visitor_message_probes_the_client_id_index(ws, owner_conn, explaining_app):
    conv = await busy_conversation(ws, owner_conn)
    conn, plans = explaining_app
    async with conn.transaction():
        await conn.fetchval("SELECT parley.begin_request($1, 'visitor', $2, NULL, NULL, NULL, 'visitor')",
                            ws.tenant_id, str(conv))
        await conn.fetchval("SELECT m.id FROM parley.post_message($1, 'visitor', 'hello', 'new-1', '{}') m", conv)
    lookup = plan_of(plans, "m.client_id = p_client_id")
    assert "client_id_idx" in lookup, lookup
    removed = [int(n) for n in re.findall(r"Rows Removed by Filter: (\d+)", lookup)]
    assert not removed or max(removed) < 10, lookup


async def test_the_relay_reads_each_event_message_with_one_probe(ws, owner_conn, explaining_app):
    bot = await ws.chatbot()
    convs = [await ws.start(bot["id"]) for _ in range(CONVERSATIONS)]
    for i, conv in enumerate(convs):  # one address each: under the per-IP rate limit
        await ws.visitor_says(conv, "hello", f"c-{conv}", ip=f"198.51.100.{i + 1}")
    conn, plans = explaining_app
    async with conn.transaction():
        await conn.fetchval("SELECT parley.begin_request($1, 'service', 'relay', NULL, NULL, NULL, 'agent')",
                            ws.tenant_id)
        rows = await conn.fetch("SELECT * FROM parley.events_after(0, 1000)")
    assert sum(1 for r in rows if r["kind"] == "message_added") == CONVERSATIONS
    read = plan_of(plans, "FROM parley.events e")
    # Each lookup of a message (one per event) is one descent of one index, not a skip scan
    # over every conversation of the tenant.
    scans = message_index_scans(read)
    assert scans, read
    for cond, loops, searches in scans:
        assert "conversation_id = e.conversation_id" in cond, read
        assert searches <= loops, read


def message_index_scans(plan: str) -> list[tuple[str, int, int]]:
    """(index condition, loops, index searches) of each executed index scan on messages."""
    out, current = [], None
    for line in plan.splitlines():
        if "->" in line:
            if current:
                out.append(tuple(current))
            head = re.search(r"Index Scan using \S+ on messages_\S+ .*loops=(\d+)\)", line)
            current = ["", int(head.group(1)), 0] if head else None
        elif current is not None:
            if "Index Cond:" in line:
                current[0] = line
            elif m := re.search(r"Index Searches: (\d+)", line):
                current[2] = int(m.group(1))
    if current:
        out.append(tuple(current))
    return out
