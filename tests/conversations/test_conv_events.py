"""Events and NOTIFY: one notification per transaction with ids only, gap-free resume, search."""
import asyncio

import asyncpg
import pytest
from pyapp.config import role_password, url_for_role  # noqa: F401  (documentation of the roles involved)
from support.waits import notifications_delivered, until


async def _listen(settings):
    import asyncpg
    conn = await asyncpg.connect(settings.admin_url)
    got: list[str] = []
    await conn.add_listener("parley_events", lambda *args: got.append(args[3]))
    return conn, got


async def test_one_notify_per_transaction_with_ids(ws, owner_conn, settings):
    bot = await ws.chatbot()
    listener, got = await _listen(settings)
    try:
        conv = await ws.start(bot["id"])
        msg = await ws.visitor_says(conv, "hello")
        # an agent reply to an unassigned conversation writes two events (claimed, message_added)
        status, _ = await ws.call("POST", f"/api/conversations/{conv}/reply", json={"body": "hi"})
        assert status == 201
        await notifications_delivered(listener, owner_conn)
    finally:
        await listener.close()
    events = await owner_conn.fetch("SELECT id, kind, message_id FROM parley.events WHERE conversation_id = $1 ORDER BY id", conv)
    assert [e["kind"] for e in events] == ["conversation_started", "message_added", "claimed", "message_added"]
    assert events[1]["message_id"] == msg["id"]
    t, c = ws.tenant_id, conv
    assert got == [f"{t}:{events[0]['id']}:{c}", f"{t}:{events[1]['id']}:{c}", f"{t}:{events[2]['id']}:{c}"]


async def test_events_after_never_skips_under_concurrency(make_workspace, owner_conn):
    ws = await make_workspace(plan="pro")
    await owner_conn.execute("INSERT INTO parley.tenant_limits (tenant_id, msgs_per_min_chatbot, msgs_per_min_ip) "
                             "VALUES ($1, 0, 0)", ws.tenant_id)
    bot = await ws.chatbot()
    convs = [await ws.start(bot["id"]) for _ in range(6)]
    seen: list[int] = []
    done = asyncio.Event()

    async def poll():
        last = max(await owner_conn.fetchval("SELECT max(id) FROM parley.events WHERE tenant_id = $1", ws.tenant_id), 0)
        while True:
            finished = done.is_set()
            try:
                async with ws.tx() as conn:
                    rows = await conn.fetch("SELECT id FROM parley.events_after($1, 1000)", last)
            except asyncpg.LockNotAvailableError:
                # The barrier waited 250 ms for writers in flight, then said "retry" (55P03): retry
                # at once, as the relay does (six busy writers on a loaded machine can hold it that long).
                continue
            for r in rows:
                seen.append(r["id"])
                last = r["id"]
            if finished and not rows:
                return
            await asyncio.sleep(0)

    async def write(conv):
        for i in range(40):
            await ws.visitor_says(conv, f"m{i}", ip=f"192.0.2.{i % 200}")

    poller = asyncio.create_task(poll())
    await asyncio.gather(*(write(c) for c in convs))
    done.set()
    await poller
    expected = [r["id"] for r in await owner_conn.fetch(
        "SELECT id FROM parley.events WHERE tenant_id = $1 AND kind = 'message_added' ORDER BY id", ws.tenant_id)]
    assert seen == expected  # every event, once, in order: resuming after the last id never skips


async def test_a_reader_waits_for_an_earlier_writer_still_in_flight(ws, owner_conn):
    """Two sessions interleaved step by step: event ids are taken in one order and committed in
    the other; events_after must neither skip the late commit nor block the second writer."""
    # Message rate counters are rows sharded by backend (pg_backend_pid() % 8, hit_rate_limit): one
    # time in eight the two writers' backends share a shard of the chatbot's, the address's and the
    # tenant's counters, and the second waits for the first's row lock (it is held open below). What
    # is tested is the event lock, so this tenant's message rate limits are off.
    await owner_conn.execute("INSERT INTO parley.tenant_limits (tenant_id, msgs_per_min_chatbot, msgs_per_min_ip,"
                             " msgs_per_min_conversation, msgs_per_min_tenant) VALUES ($1, 0, 0, 0, 0)", ws.tenant_id)
    bot = await ws.chatbot()
    slow_conv, fast_conv = await ws.start(bot["id"]), await ws.start(bot["id"])
    start = await owner_conn.fetchval("SELECT max(id) FROM parley.events WHERE tenant_id = $1", ws.tenant_id)

    slow = ws.visitor_tx(slow_conv)
    conn = await slow.__aenter__()
    try:
        slow_msg = await conn.fetchrow("SELECT * FROM parley.post_message($1, 'visitor', 'first id, late commit')",
                                       slow_conv)
        # The second writer is not held up by the first (writers share the tenant's event lock):
        # held up, it would wait until the first commits, which happens only below. The bound is
        # that, not a speed (it failed at 5 s on a machine at load 15).
        fast_msg = await asyncio.wait_for(ws.visitor_says(fast_conv, "second id, committed first"), 30)

        timeouts: list[int] = []
        reading = asyncio.create_task(_read_until_free(ws, start, timeouts))
        await until(lambda: len(timeouts) >= 3 or reading.done(), what="the reader to time out three times")
        # Returning now could only show the second event: a reader that then resumed after
        # its id would never see the first one. It keeps timing out (55P03) instead.
        assert not reading.done()
        # ...and while it tries, the tenant's writers still get through between its attempts.
        await asyncio.wait_for(ws.visitor_says(fast_conv, "written while the reader waits"), 30)
    except BaseException as exc:
        await slow.__aexit__(type(exc), exc, exc.__traceback__)
        raise
    await slow.__aexit__(None, None, None)  # commit the first writer
    got = await asyncio.wait_for(reading, 30)
    assert [m for _, m in got][:2] == [slow_msg["id"], fast_msg["id"]] and len(got) == 3
    assert [i for i, _ in got] == sorted(i for i, _ in got)


async def _read_until_free(ws, after: int, timeouts: list[int]) -> list[tuple[int, int]]:
    """Read events as the relay does: retry while events_after times out on the barrier (each
    time out is appended to `timeouts`)."""
    while True:
        try:
            async with ws.tx() as reader:
                return [(r["id"], r["message_id"]) for r in
                        await reader.fetch("SELECT id, message_id FROM parley.events_after($1, 100)", after)]
        except asyncpg.LockNotAvailableError:
            timeouts.append(1)
            await asyncio.sleep(0.05)


async def test_a_rolled_back_writer_releases_the_reader(ws, owner_conn):
    bot = await ws.chatbot()
    conv = await ws.start(bot["id"])
    start = await owner_conn.fetchval("SELECT max(id) FROM parley.events WHERE tenant_id = $1", ws.tenant_id)
    tx = ws.visitor_tx(conv)
    conn = await tx.__aenter__()
    await conn.fetchrow("SELECT * FROM parley.post_message($1, 'visitor', 'never stored')", conv)

    timeouts: list[int] = []
    reading = asyncio.create_task(_read_until_free(ws, start, timeouts))
    await until(lambda: len(timeouts) >= 2 or reading.done(), what="the reader to time out twice")
    assert not reading.done()
    await tx.__aexit__(RuntimeError, RuntimeError("abandoned"), None)  # roll back
    assert await asyncio.wait_for(reading, 5) == []


async def _advisory_locks_of(owner_conn, pid: int) -> int:
    return await owner_conn.fetchval(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = 7261003 AND pid = $1", pid)


async def _relay_read_fails(ws, owner_conn, errors, *, cancel: bool = False) -> None:
    """One events_after call as the relay on a pooled session that must fail with `errors`
    (cancelled by the server once it waits on a lock, with cancel=True), leaving that session
    without the barrier lock."""
    async with ws.pool.acquire() as reader:
        pid = await reader.fetchval("SELECT pg_backend_pid()")
        async with reader.transaction():
            await reader.fetchval("SELECT parley.begin_request($1, 'service', 'relay', NULL, NULL, NULL, 'agent')",
                                  ws.tenant_id)
            reading = asyncio.create_task(reader.fetch("SELECT id FROM parley.events_after(0, 10)"))
            if cancel:
                async def waiting_or_done():
                    return reading.done() or await owner_conn.fetchval(
                        "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $1", pid)
                await until(waiting_or_done, what="the reader to wait for the barrier")
                await owner_conn.execute("SELECT pg_cancel_backend($1)", pid)
            with pytest.raises(errors):
                await reading
        assert await _advisory_locks_of(owner_conn, pid) == 0


async def test_a_reader_that_gives_up_or_is_cancelled_leaves_no_lock_behind(ws, owner_conn):
    """The barrier is a session-level lock held only while the horizon is read: a reader that
    times out, is cancelled while it waits, or fails while holding it must not leave its
    pooled session holding it (every writer of the tenant would then wait forever)."""
    bot = await ws.chatbot()
    conv, other = await ws.start(bot["id"]), await ws.start(bot["id"])
    tx = ws.visitor_tx(conv)
    writer = await tx.__aenter__()
    try:
        await writer.fetchrow("SELECT * FROM parley.post_message($1, 'visitor', 'kept open')", conv)
        # 1. It gives up after its lock timeout.
        await _relay_read_fails(ws, owner_conn, asyncpg.LockNotAvailableError)
        # 2. It is cancelled while it waits (on a slow machine the timeout may come first).
        await _relay_read_fails(ws, owner_conn, (asyncpg.QueryCanceledError, asyncpg.LockNotAvailableError),
                                cancel=True)
    finally:
        await tx.__aexit__(None, None, None)
    # 3. It fails after taking the lock (reading the horizon is refused here on purpose).
    await owner_conn.execute("REVOKE SELECT ON SEQUENCE parley.events_id_seq FROM parley_app")
    try:
        await _relay_read_fails(ws, owner_conn, asyncpg.InsufficientPrivilegeError)
    finally:
        await owner_conn.execute("GRANT SELECT ON SEQUENCE parley.events_id_seq TO parley_app")
    # The tenant's writers are not held up by anything left behind.
    await asyncio.wait_for(ws.visitor_says(other, "after the readers"), 5)


async def test_full_text_search_and_filters(ws, owner_conn):
    bot = await ws.chatbot()
    refund = await ws.start(bot["id"])
    shipping = await ws.start(bot["id"])
    await ws.visitor_says(refund, "I would like a refund for order 1234")
    await ws.visitor_says(shipping, "When does shipping to Norway arrive?")
    await ws.call("POST", f"/api/conversations/{shipping}/notes", json={"body": "customer prefers DHL"})
    await ws.call("POST", f"/api/conversations/{refund}/claim", token=ws.agents[0]["access_token"])

    async def ids(query, token=None):
        status, body = await ws.call("GET", "/api/conversations" + query, token=token)
        assert status == 200, body
        return {c["id"] for c in body["conversations"]}

    assert await ids("?q=refund") == {str(refund)}
    assert await ids("?q=norway") == {str(shipping)}
    assert await ids("?q=dhl") == {str(shipping)}  # agents search notes too
    assert await ids("?q=%22order 1234%22") == {str(refund)}
    assert await ids("?q=nothing-like-this") == set()
    assert await ids("?status=human") == {str(refund)}
    assert await ids("?assignee=me", token=ws.agents[0]["access_token"]) == {str(refund)}
    assert await ids("?assignee=me") == set()
    assert await ids(f"?chatbot={bot['id']}&from=2000-01-01&to=2999-01-01") == {str(refund), str(shipping)}
    assert await ids("?from=2999-01-01") == set()
    status, body = await ws.call("GET", "/api/conversations?status=open")
    assert status == 422
    status, body = await ws.call("GET", "/api/conversations?limit=1")
    assert len(body["conversations"]) == 1 and body["next_before"]
    assert body["conversations"][0]["last_message"]["body"]

    # The search query, run as the function's owner, can use the tenant-led GIN index.
    async with owner_conn.transaction():
        await owner_conn.execute("SET LOCAL enable_seqscan = off")
        await owner_conn.execute("SET LOCAL ROLE parley_auth")
        plan = "\n".join(r[0] for r in await owner_conn.fetch(
            "EXPLAIN SELECT DISTINCT m.conversation_id FROM parley.messages m WHERE m.tenant_id = $1 "
            "AND to_tsvector('simple'::regconfig, m.body) @@ websearch_to_tsquery('simple', 'refund')", ws.tenant_id))
    assert "Bitmap Index Scan" in plan and "to_tsvector" in plan, plan
