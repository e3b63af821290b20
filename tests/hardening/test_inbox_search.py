"""Inbox search (issue 17, finding 9: a one-word search read every match): parley.search_inbox
returns exactly the most recently active matching conversations, whichever step finds them (the
walk over the newest conversations, the index in message-id windows, the conversations active
since whose matches are older than the windows), with the inbox filters and the keyset, inside
the caller's tenant only. Checked against a count from scratch over the rows."""
import pytest
from pyapp.db import Actor, tenant_tx
from support.knowledge import make_tenant

ORACLE = """
  SELECT c.id FROM parley.conversations c
   WHERE c.tenant_id = $1 AND ($3::text IS NULL OR c.status = $3)
     AND ($4::timestamptz IS NULL OR c.last_activity_at < $4)
     AND EXISTS (SELECT 1 FROM parley.messages m WHERE m.tenant_id = c.tenant_id AND m.conversation_id = c.id
                   AND to_tsvector('simple', m.body) @@ websearch_to_tsquery('simple', $2))
   ORDER BY c.last_activity_at DESC, c.id LIMIT $5"""


async def _write(owner_conn, tenant, conversations: list[list[tuple[int, str]]], status=lambda k: "bot") -> list:
    """Conversation k gets messages (minutes ago, body); every message is written oldest first,
    so message ids grow with time as they do live; last activity is the newest message."""
    ids = []
    for k, messages in enumerate(conversations):
        oldest = max(age for age, _ in messages)
        ids.append(await owner_conn.fetchval(
            "INSERT INTO parley.conversations (tenant_id, chatbot_id, visitor_id, status, created_at, last_activity_at)"
            " VALUES ($1, $2, gen_random_uuid(), $3, now() - make_interval(mins => $4),"
            " now() - make_interval(mins => $5)) RETURNING id",
            tenant.id, tenant.chatbot_id, status(k), oldest, min(age for age, _ in messages)))
    rows = sorted(((age, ids[k], body) for k, messages in enumerate(conversations) for age, body in messages),
                  key=lambda r: -r[0])
    await owner_conn.executemany(
        "INSERT INTO parley.messages (tenant_id, conversation_id, author, body, created_at)"
        " VALUES ($1, $2, 'visitor', $3, now() - make_interval(mins => $4))",
        [(tenant.id, conv, body, age) for age, conv, body in rows])
    return ids


async def _search(tenant, q: str, limit: int, window: int = 50000, status=None, before=None, few: int = 1) -> list:
    """few = 1: past the first step, always the id windows (the "every match when few" step
    is the windows' last one, tested with window 50000 and with few=2000)."""
    async with tenant_tx(await tenant.pool("app"), Actor(tenant_id=tenant.id, kind="service")) as conn:
        return list(await conn.fetchval(
            "SELECT parley.search_inbox($1, $2, p_status => $3, p_before => $4, p_window => $5, p_few => $6)",
            q, limit, status, before, window, few))


async def _oracle(owner_conn, tenant, q: str, limit: int, status=None, before=None) -> list:
    return [r["id"] for r in await owner_conn.fetch(ORACLE, tenant.id, q, status, before, limit)]


async def test_a_match_only_older_than_the_windows_still_ranks_by_activity(settings, owner_conn):
    tenant = await make_tenant(settings, owner_conn)
    try:
        # 30 conversations, k = 0 the most recently active; "zebra" in k = 9, 13, 19 recently,
        # and in k = 10 only in a message written days ago (a conversation taken up again).
        conversations = [[(k * 10 + 5, "hello there"), (k * 10 + 1, "zebra here" if k in (9, 13, 19) else "filler")]
                         for k in range(30)]
        conversations[10] = [(5000, "an old zebra"), (101, "filler")]
        # k = 25 matches twice, far apart (two windows; past the first step for a limit of 6)
        conversations[25] = [(3000, "zebra early on"), (255, "hello there"), (251, "zebra here")]
        ids = await _write(owner_conn, tenant, conversations)
        # A limit of 2 walks the newest 8 (no match), then windows of 4, 8, 16... message ids
        # find k = 9 and 13 first; k = 10 ranks between them and must not be missed.
        assert await _search(tenant, "zebra", 2, window=4) == [ids[9], ids[10]]
        assert await _search(tenant, "zebra", 3, window=4) == [ids[9], ids[10], ids[13]]
        for limit in (1, 2, 3, 4, 6, 10):
            for window, few in ((1, 1), (4, 1), (50000, 1), (4, 2000)):
                assert await _search(tenant, "zebra", limit, window, few=few) == \
                    await _oracle(owner_conn, tenant, "zebra", limit)
        assert await _search(tenant, "nothing-like-this", 5, window=4) == []
    finally:
        await tenant.close()


async def test_common_and_rare_words_filters_and_pages_equal_a_count_from_scratch(settings, owner_conn):
    tenant = await make_tenant(settings, owner_conn)
    other = await make_tenant(settings, owner_conn)
    try:
        words = ["order", "refund", "damaged", "courier", "invoice"]
        conversations = []
        for k in range(120):
            # "order" in most conversations, "refund" in one in 7, "refund damaged" in one in 21,
            # some matches only in an early message of a long conversation
            early = "refund damaged box" if k % 21 == 0 else ("refund" if k % 7 == 0 else words[k % 5])
            conversations.append([(k * 7 + 400 * (k % 11 == 0), early), (k * 7 + 3, f"order {words[(k * 3) % 5]}"),
                                  (k * 7, "thanks")])
        await _write(owner_conn, tenant, conversations, status=lambda k: ("bot", "closed", "human")[k % 3])
        # The other tenant's conversations match too, and are newer: never in the answer.
        await _write(owner_conn, other, [[(0, "refund damaged order")]] * 10)
        for q in ("order", "refund", "refund damaged", '"damaged box"', "courier -order"):
            for limit in (1, 5, 50):
                for window, few in ((3, 1), (50000, 1), (3, 2000), (3, 3)):
                    for status in (None, "closed"):
                        assert await _search(tenant, q, limit, window, status, few=few) == \
                            await _oracle(owner_conn, tenant, q, limit, status), (q, limit, window, few, status)
        # Paging with the keyset (last activity before the last one seen) reaches every match once.
        seen, before = [], None
        while True:
            page = await _search(tenant, "refund", 4, window=3, before=before)
            if not page:
                break
            seen += page
            before = await owner_conn.fetchval("SELECT last_activity_at FROM parley.conversations WHERE id = $1",
                                               page[-1])
        assert seen == await _oracle(owner_conn, tenant, "refund", 1000)
        # The inbox route's function gives the same order.
        async with tenant_tx(await tenant.pool("app"), Actor(tenant_id=tenant.id, kind="service")) as conn:
            listed = [r["c"]["id"] for r in await conn.fetch(
                "SELECT parley.list_conversations(p_q => 'refund damaged', p_limit => 50) AS c")]
        assert listed == [str(i) for i in await _oracle(owner_conn, tenant, "refund damaged", 50)]
    finally:
        await tenant.close()
        await other.close()


async def test_visitors_cannot_search(settings, owner_conn):
    tenant = await make_tenant(settings, owner_conn)
    try:
        ids = await _write(owner_conn, tenant, [[(1, "zebra")]])
        async with tenant_tx(await tenant.pool("app"), Actor(tenant_id=tenant.id, kind="visitor",
                                                             actor_id=str(ids[0]), min_role="visitor")) as conn:
            for sql in ("SELECT parley.search_inbox('zebra', 5)", "SELECT parley.search_inbox('zebra', 5, p_window => 1)",
                                    "SELECT parley.search_conversation_ids('zebra', NULL, 0, 100000000)",
                        "SELECT parley.search_conversation_ids('zebra', 10)"):
                with pytest.raises(Exception, match="members"):
                    async with conn.transaction():
                        await conn.fetch(sql)
    finally:
        await tenant.close()
