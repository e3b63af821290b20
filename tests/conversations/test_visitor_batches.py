"""parley.post_visitor_messages: many visitors' messages in one statement, each as post_message
would store it for that visitor; a refused one is rolled back alone; no lock is awaited after
the batch's first event; the server's batcher retries a message that lost a deadlock."""
import asyncio
from contextlib import asynccontextmanager

import asyncpg
import pytest
from pyapp.db import Actor, create_pool, tenant_fetch
from pyapp.errors import from_postgres
from pyapp.widget.batch import MessageRefused, VisitorMessages
from support.waits import blocked_on_lock, notifications_delivered
from support.workspace import override_limits

IP = "198.51.100.20"
BATCH = "SELECT * FROM parley.post_visitor_messages($1, $2, $3, $4, $5, $6)"


async def _batch(ws, convs, bodies, client_ids=None, ips=None, tenant_id=None):
    n = len(convs)
    return await ws.pool.fetch(BATCH, tenant_id or ws.tenant_id, convs, bodies, client_ids or [None] * n,
                               ips or [IP] * n, [f"req-{i}" for i in range(n)])


@asynccontextmanager
async def _holding(settings, conversation_id):
    """Another transaction (a job, a reply) holding one conversation's row lock until it ends;
    it never runs the deadlock check first, so the app's backend is the one that does."""
    conn = await asyncpg.connect(settings.admin_url)
    try:
        await conn.execute("SET deadlock_timeout = '30s'")
        tx = conn.transaction()
        await tx.start()
        await conn.execute("SELECT 1 FROM parley.conversations WHERE id = $1 FOR UPDATE", conversation_id)
        yield conn, tx
    finally:
        await conn.close()  # rolls back whatever it did not commit


def _batcher(pool) -> VisitorMessages:
    """The server's batcher on `pool`, its flushes kept referenced by the test."""
    tasks: set = set()

    def spawn(coro, name=None) -> asyncio.Task:
        task = asyncio.ensure_future(coro)
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        return task
    return VisitorMessages(pool, spawn)


async def _conversations(ws, n):
    bot = await ws.chatbot()
    return sorted([await ws.start(bot["id"]) for _ in range(n)])


async def test_each_message_is_stored_and_announced_as_its_own_visitor(make_workspace, owner_conn):
    ws = await make_workspace()
    c1, c2, c3 = await _conversations(ws, 3)
    heard = []
    await owner_conn.add_listener("parley_events", lambda *args: heard.append(args[3]))
    rows = await _batch(ws, [c3, c1, c2], ["third", "first", "second"], ["k3", "k1", "k2"])

    # One row per message, in conversation order; ord points back into the arrays.
    assert [(r["ord"], r["message"]["body"], r["duplicate"], r["status"], r["error_state"]) for r in rows] == [
        (2, "first", False, "bot", None), (3, "second", False, "bot", None), (1, "third", False, "bot", None)]
    stored = await owner_conn.fetch(
        "SELECT m.id, m.conversation_id, m.author, m.author_id, m.client_id, c.visitor_id, c.last_message_id"
        "  FROM parley.messages m JOIN parley.conversations c ON c.tenant_id = m.tenant_id AND c.id = m.conversation_id"
        " WHERE m.tenant_id = $1 ORDER BY m.id", ws.tenant_id)
    assert [(r["conversation_id"], r["client_id"]) for r in stored] == [(c1, "k1"), (c2, "k2"), (c3, "k3")]
    assert all(r["author"] == "visitor" and r["author_id"] == r["visitor_id"] and r["last_message_id"] == r["id"]
               for r in stored)
    events = await owner_conn.fetch(
        "SELECT kind, conversation_id, message_id, actor_kind, actor_id FROM parley.events"
        " WHERE tenant_id = $1 AND kind = 'message_added' ORDER BY id", ws.tenant_id)
    assert [(e["conversation_id"], e["message_id"], e["actor_kind"], e["actor_id"]) for e in events] == [
        (r["conversation_id"], r["id"], "visitor", str(r["conversation_id"])) for r in stored]
    assert await owner_conn.fetchval(
        "SELECT sum(value) FROM parley.usage_counters WHERE tenant_id = $1 AND metric = 'messages'", ws.tenant_id) == 3
    await notifications_delivered(owner_conn, owner_conn)
    assert len([p for p in heard if p.startswith(str(ws.tenant_id))]) == 1  # one NOTIFY per transaction


async def test_a_refused_message_is_rolled_back_alone(make_workspace, owner_conn):
    ws = await make_workspace()
    await override_limits(owner_conn, ws.tenant_id, msgs_per_min_ip=1, msgs_per_min_chatbot=0)
    c1, c2, c3, c4 = await _conversations(ws, 4)
    rows = await _batch(ws, [c1, c2, c3, c4], ["ok", "over the limit", "  ", "other address"],
                        ips=[IP, IP, "198.51.100.21", "198.51.100.22"])
    got = {r["ord"]: (r["error_state"], r["error_hint"], r["message"] is None) for r in rows}
    assert got == {1: (None, None, False), 2: ("PT429", "rate_limited", True), 3: ("PT422", "empty_body", True),
                   4: (None, None, False)}
    assert next(r["error_message"] for r in rows if r["ord"] == 2) == \
        "Too many messages (1 per minute per ip); wait a moment."
    # Nothing of the refused ones: no message, no event, no usage, no rate-limit hit.
    assert await owner_conn.fetchval("SELECT array_agg(conversation_id ORDER BY conversation_id) FROM parley.messages"
                                     " WHERE tenant_id = $1", ws.tenant_id) == [c1, c4]
    assert await owner_conn.fetchval("SELECT count(*) FROM parley.events WHERE tenant_id = $1 AND kind = 'message_added'",
                                     ws.tenant_id) == 2
    assert await owner_conn.fetchval("SELECT sum(value) FROM parley.usage_counters WHERE tenant_id = $1"
                                     " AND metric = 'messages'", ws.tenant_id) == 2
    assert await owner_conn.fetchval("SELECT sum(hits) FROM parley.rate_counters WHERE tenant_id = $1 AND scope = 'ip'"
                                     " AND key = $2", ws.tenant_id, IP) == 1
    last = await owner_conn.fetchval("SELECT last_message_id FROM parley.conversations WHERE id = $1", c2)
    assert last is None


async def test_resends_and_reopening_in_a_batch(make_workspace, owner_conn):
    ws = await make_workspace()
    c1, c2 = await _conversations(ws, 2)
    first = await _batch(ws, [c1], ["hello"], ["same"])
    await owner_conn.execute("UPDATE parley.conversations SET status = 'closed', closed_at = now() WHERE id = $1", c2)
    rows = await _batch(ws, [c1, c1, c2], ["hello", "hello", "back again"], ["same", "same", "k"])
    assert [(r["message"]["id"], r["duplicate"]) for r in rows[:2]] == [(first[0]["message"]["id"], True)] * 2
    assert (rows[2]["duplicate"], rows[2]["status"]) == (False, "bot")  # a closed conversation reopens
    assert await owner_conn.fetchval("SELECT count(*) FROM parley.messages WHERE conversation_id = $1", c1) == 1
    kinds = await owner_conn.fetch("SELECT kind, conversation_id FROM parley.events WHERE tenant_id = $1"
                                   " AND kind IN ('message_added', 'reopened') ORDER BY id", ws.tenant_id)
    assert [(k["kind"], k["conversation_id"]) for k in kinds] == [
        ("message_added", c1), ("reopened", c2), ("message_added", c2)]


async def test_a_batch_never_reaches_another_tenant(make_workspace, owner_conn):
    a, b = await make_workspace(), await make_workspace()
    (ca,), (cb,) = await _conversations(a, 1), await _conversations(b, 1)
    # Tenant A's batch naming B's conversation, and B's conversation under A's id in B's batch call.
    rows = await _batch(a, [cb, ca], ["sneaky", "mine"])
    assert {r["ord"]: (r["error_state"], r["error_hint"]) for r in rows} == {
        1: ("PT404", "not_found"), 2: (None, None)}
    rows = await _batch(b, [ca], ["sneaky"], tenant_id=b.tenant_id)
    assert (rows[0]["error_state"], rows[0]["error_hint"]) == ("PT404", "not_found")
    assert await owner_conn.fetchval("SELECT count(*) FROM parley.messages WHERE tenant_id = $1", b.tenant_id) == 0
    assert await owner_conn.fetchval("SELECT count(*) FROM parley.events WHERE tenant_id = $1 AND kind = 'message_added'",
                                     b.tenant_id) == 0
    assert await owner_conn.fetchval("SELECT count(*) FROM parley.messages WHERE tenant_id = $1", a.tenant_id) == 1


async def test_batch_bounds(make_workspace):
    ws = await make_workspace()
    (c,) = await _conversations(ws, 1)
    with pytest.raises(asyncpg.PostgresError) as exc:
        await _batch(ws, [c] * 25, ["x"] * 25)
    assert (exc.value.sqlstate, exc.value.hint) == ("PT413", "batch_too_large")
    with pytest.raises(asyncpg.PostgresError) as exc:
        await ws.pool.fetch(BATCH, ws.tenant_id, [c, c], ["one"], [None, None], [IP, IP], [None, None])
    assert (exc.value.sqlstate, exc.value.hint) == ("PT422", "invalid_batch")
    assert await ws.pool.fetch(BATCH, ws.tenant_id, [], [], [], [], []) == []


async def test_no_lock_is_awaited_after_the_first_event(make_workspace, owner_conn, settings):
    """A batch waiting for its second conversation must not hold the tenant's event lock: the
    relay's read (events_after's barrier) would queue behind it and every writer behind that."""
    ws = await make_workspace()
    c1, c2 = await _conversations(ws, 2)
    async with _holding(settings, c2) as (_blocker, tx):
        batch = asyncio.ensure_future(_batch(ws, [c1, c2], ["first", "second"]))
        await blocked_on_lock(owner_conn)
        service = Actor(ws.tenant_id, kind="service", actor_id="relay")
        rows = await asyncio.wait_for(
            tenant_fetch(ws.pool, service, "SELECT * FROM parley.events_after($1, $2)", 0, 100), 5)
        assert not [r for r in rows if r["kind"] == "message_added"]  # nothing of the batch yet
        assert not batch.done()
        await tx.rollback()
        out = await asyncio.wait_for(batch, 10)
        assert [r["error_state"] for r in out] == [None, None]
    rows = await tenant_fetch(ws.pool, service, "SELECT * FROM parley.events_after($1, $2)", 0, 100)
    assert [r["message"]["body"] for r in rows if r["kind"] == "message_added"] == ["first", "second"]


async def test_a_batch_takes_its_conversations_before_any_usage_row(make_workspace, owner_conn, settings):
    """A single writer (a bot or agent reply) holds a conversation of the batch and then bumps
    usage in the batch backend's shard row: it must not find that row held by the batch, or the
    two would wait for each other (the lock order is conversations first, then usage rows)."""
    ws = await make_workspace()
    c1, c2 = await _conversations(ws, 2)
    async with _holding(settings, c2) as (writer, tx):
        batch = asyncio.ensure_future(_batch(ws, [c1, c2], ["first", "second"]))
        pid = await blocked_on_lock(owner_conn)
        await asyncio.wait_for(writer.execute(
            "INSERT INTO parley.usage_counters AS u (tenant_id, day, metric, shard, value)"
            " VALUES ($1, (now() AT TIME ZONE 'UTC')::date, 'messages', $2, 1)"
            " ON CONFLICT (tenant_id, day, metric, shard) DO UPDATE SET value = u.value + 1", ws.tenant_id, pid % 16), 5)
        await tx.commit()
        rows = await asyncio.wait_for(batch, 10)
    assert [(r["message"]["body"], r["error_state"]) for r in rows] == [("first", None), ("second", None)]
    assert await owner_conn.fetchval("SELECT sum(value) FROM parley.usage_counters WHERE tenant_id = $1"
                                     " AND metric = 'messages'", ws.tenant_id) == 3


async def test_batcher_groups_what_arrives_together_and_answers_each_sender(make_workspace, owner_conn):
    ws = await make_workspace()
    convs = await _conversations(ws, 5)
    batcher = _batcher(ws.pool)
    posted = await asyncio.gather(
        *(batcher.post(ws.tenant_id, c, f"hello {i}", f"k{i}", IP, None) for i, c in enumerate(convs)),
        batcher.post(ws.tenant_id, convs[0], "\t", "blank", IP, None), return_exceptions=True)
    assert batcher.statements == 1  # everything queued before the first flush ran went into it
    assert [p.message["body"] for p in posted[:5]] == [f"hello {i}" for i in range(5)]
    assert all(not p.duplicate and p.status == "bot" for p in posted[:5])
    refused = posted[5]
    assert isinstance(refused, MessageRefused) and (refused.sqlstate, refused.hint) == ("PT422", "empty_body")
    assert await owner_conn.fetchval("SELECT count(*) FROM parley.messages WHERE tenant_id = $1", ws.tenant_id) == 5


async def test_batcher_retries_a_message_that_lost_a_deadlock(make_workspace, owner_conn, settings):
    """A job locking conversations in another order than a batch: the deadlock detector aborts
    one message of the batch (its subtransaction); the batcher sends it again, and it lands."""
    ws = await make_workspace()
    c1, c2 = await _conversations(ws, 2)
    # The batch's backend checks for deadlocks first (the job's would after 30 s), and before
    # its own one-second lock timeout.
    db = await owner_conn.fetchval("SELECT current_database()")
    await owner_conn.execute(f'ALTER ROLE parley_app IN DATABASE "{db}" SET deadlock_timeout = \'500ms\'')
    pool = await create_pool(settings.app_url, min_size=1, max_size=2)
    batcher = _batcher(pool)
    try:
        async with _holding(settings, c2) as (job, tx):
            posts = asyncio.ensure_future(asyncio.gather(batcher.post(ws.tenant_id, c1, "one", "k1", IP, None),
                                                         batcher.post(ws.tenant_id, c2, "two", "k2", IP, None)))
            await blocked_on_lock(owner_conn)
            # The job now wants c1, which the batch holds: a cycle; the batch's item for c2 gives way.
            await asyncio.wait_for(job.execute("SELECT 1 FROM parley.conversations WHERE id = $1 FOR UPDATE", c1), 20)
            await tx.commit()
            one, two = await asyncio.wait_for(posts, 20)
    finally:
        await pool.close()
        await owner_conn.execute(f'ALTER ROLE parley_app IN DATABASE "{db}" RESET deadlock_timeout')
    assert (one.message["body"], two.message["body"]) == ("one", "two")
    # The batch's backend found the deadlock (on a machine slow enough that the job asked for
    # c1 only after that check, the lock timeout gives up on c2 instead: the same retry).
    assert sum(batcher.retried.values()) == 1 and set(batcher.retried) <= {"40P01", "55P03"}
    assert batcher.statements == 2
    assert await owner_conn.fetchval("SELECT count(*) FROM parley.messages WHERE tenant_id = $1", ws.tenant_id) == 2


async def test_a_busy_conversation_does_not_hold_up_the_others(make_workspace, owner_conn, settings):
    """A long transaction holds one conversation: the rest of the batch commits while it still
    does, and that message, after waiting a second twice, is refused as busy (nothing written)."""
    ws = await make_workspace()
    c1, c2 = await _conversations(ws, 2)
    batcher = _batcher(ws.pool)
    async with _holding(settings, c2):
        one = asyncio.ensure_future(batcher.post(ws.tenant_id, c1, "one", "k1", IP, None))
        two = asyncio.ensure_future(batcher.post(ws.tenant_id, c2, "two", "k2", IP, None))
        assert (await asyncio.wait_for(one, 10)).message["body"] == "one"  # the lock is still held
        with pytest.raises(MessageRefused) as refused:
            await asyncio.wait_for(two, 10)
        assert refused.value.sqlstate == "55P03"
    assert batcher.statements == 2  # the first batch, then the one retry
    assert await owner_conn.fetchval("SELECT count(*) FROM parley.messages WHERE conversation_id = $1", c2) == 0
    assert from_postgres(refused.value).code == "busy"
    assert batcher.retried == {"55P03": 1}
