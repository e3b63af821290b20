"""The outbox in Postgres: deliveries written with the event (or not at all), drained to a local
sink, retries, retry_after, 4xx, dead letters and replay, pausing, order, rate limits."""
import asyncio
import datetime
import json

from pyapp.db import Actor, tenant_tx
from support.outbox import add_destination, post, start_conversation


async def _deliveries(owner_conn, tenant):
    return await owner_conn.fetch("SELECT * FROM parley.outbox WHERE tenant_id = $1 ORDER BY id", tenant.id)


async def test_delivery_is_written_with_its_event_or_not_at_all(owner_conn, tenant, sink):
    conv = await start_conversation(tenant)
    await post(tenant, conv, "before anyone subscribes")
    assert await _deliveries(owner_conn, tenant) == []  # nothing subscribed: nothing written

    dest = await add_destination(owner_conn, tenant, sink.url)
    await post(tenant, conv, "hello")
    # The same change rolled back leaves no delivery behind.
    try:
        async with await tenant.tx("service") as conn:
            await conn.fetchval("SELECT id FROM parley.post_message($1, 'bot', 'rolled back')", conv)
            raise RuntimeError("abort")
    except RuntimeError:
        pass
    rows = await _deliveries(owner_conn, tenant)
    assert len(rows) == 1
    row = rows[0]
    assert row["destination_id"] == dest and row["status"] == "pending" and row["kind"] == "conversation.message_added"
    assert row["payload"] == {}  # the body is built when a drainer first takes it, off the chat path
    async with tenant_tx(await tenant.pool("jobs"), Actor(tenant_id=tenant.id, kind="system", actor_id="t")) as conn:
        await conn.fetch("SELECT * FROM parley.lease_outbox_destinations('t', 10, 30)")
        taken = await conn.fetch("SELECT * FROM parley.take_outbox_batch($1, 't', 10)", dest)
    payload = taken[0]["payload"]
    assert payload["data"]["message"]["body"] == "hello" and payload["data"]["conversation_id"] == str(conv)
    assert payload["type"] == "conversation.message_added" and payload["data"]["chatbot_id"] == str(tenant.chatbot_id)
    # Built on take, not written then (one row version per delivery): the attempt's record keeps the body sent.
    assert (await _deliveries(owner_conn, tenant))[0]["payload"] == {}
    async with tenant_tx(await tenant.pool("jobs"), Actor(tenant_id=tenant.id, kind="system", actor_id="t")) as conn:
        await conn.fetchval("SELECT parley.record_outbox_results($1, 't', $2)", dest, [{
            "id": taken[0]["id"], "created_at": taken[0]["created_at"].isoformat(), "outcome": "retry",
            "error": "HTTP 503", "body": json.dumps(payload)}])
    assert (await _deliveries(owner_conn, tenant))[0]["payload"] == payload  # kept for retries, the log and replays
    assert row["deadline"] - row["created_at"] >= datetime.timedelta(hours=72)
    # Other event kinds are not subscribed.
    async with await tenant.tx("service") as conn:
        await conn.execute("SELECT parley.transition_conversation($1, 'human')", conv)
    assert len(await _deliveries(owner_conn, tenant)) == 1


async def test_drain_delivers_and_records_every_attempt(owner_conn, tenant, sink, drainer):
    await add_destination(owner_conn, tenant, sink.url)
    conv = await start_conversation(tenant)
    await post(tenant, conv, "one", "two", "three")
    assert await drainer.drain() == 3
    got = await sink.wait_for(3)
    assert sorted(r.json()["data"]["message"]["body"] for r in got) == ["one", "three", "two"]
    rows = await _deliveries(owner_conn, tenant)
    assert {r["status"] for r in rows} == {"delivered"}
    assert {f"msg_{r['delivery_key'].hex}" for r in rows} == {r.msg_id for r in got}
    attempts = await owner_conn.fetch("SELECT * FROM parley.outbox_attempts WHERE tenant_id = $1", tenant.id)
    assert len(attempts) == 3 and all(a["outcome"] == "delivered" and a["status_code"] == 200 for a in attempts)
    assert all(a["latency_ms"] is not None and a["response"] == "answer 200" for a in attempts)
    # Nothing left: a second drain sends nothing and the destination is not leased any more.
    assert await drainer.drain() == 0
    assert await owner_conn.fetchval("SELECT leased_by FROM parley.outbox_destinations WHERE tenant_id = $1",
                                     tenant.id) is None


async def _due_now(owner_conn, tenant):
    """Fast-forward: what waits for a backoff is due now (the wait itself is checked separately)."""
    await owner_conn.execute("UPDATE parley.outbox SET next_attempt_at = now() WHERE tenant_id = $1 AND status = 'pending'",
                             tenant.id)
    await owner_conn.execute("UPDATE parley.outbox_destinations SET next_send_at = '-infinity' WHERE tenant_id = $1",
                             tenant.id)


async def test_retry_with_backoff_keeps_the_same_id(owner_conn, tenant, sink, drainer):
    await add_destination(owner_conn, tenant, sink.url)
    conv = await start_conversation(tenant)
    sink.script = [(500, {}, 0), (503, {}, 0)]
    await post(tenant, conv, "flaky")
    await drainer.drain()
    row = (await _deliveries(owner_conn, tenant))[0]
    assert row["status"] == "pending" and row["attempts"] == 1 and row["last_status_code"] == 500
    wait = (row["next_attempt_at"] - row["created_at"]).total_seconds()
    assert 3 <= wait <= 7, wait  # 5 s ± 25 % jitter
    dest = await owner_conn.fetchrow("SELECT * FROM parley.outbox_destinations WHERE tenant_id = $1", tenant.id)
    assert dest["next_send_at"] == row["next_attempt_at"] and dest["failing_since"] is not None
    assert await drainer.drain() == 0  # held until the retry is due
    await _due_now(owner_conn, tenant)
    await drainer.drain()
    row = (await _deliveries(owner_conn, tenant))[0]
    wait = (row["next_attempt_at"] - (await owner_conn.fetchval("SELECT now()"))).total_seconds()
    assert row["attempts"] == 2 and 6 <= wait <= 13, wait  # 10 s ± 25 %
    await _due_now(owner_conn, tenant)
    assert await drainer.drain() == 1
    got = await sink.wait_for(3)
    assert len({r.msg_id for r in got}) == 1  # every attempt carries the same webhook-id
    outcomes = await owner_conn.fetch("SELECT attempt, outcome, status_code FROM parley.outbox_attempts"
                                      " WHERE tenant_id = $1 ORDER BY attempt", tenant.id)
    assert [tuple(a) for a in outcomes] == [(1, "retry", 500), (2, "retry", 503), (3, "delivered", 200)]
    dest = await owner_conn.fetchrow("SELECT * FROM parley.outbox_destinations WHERE tenant_id = $1", tenant.id)
    assert dest["failing_since"] is None and dest["consecutive_failures"] == 0


async def test_retry_after_is_honoured_exactly(owner_conn, tenant, sink, drainer):
    await add_destination(owner_conn, tenant, sink.url)
    conv = await start_conversation(tenant)
    sink.script = [(429, {"Retry-After": "2"}, 0)]
    await post(tenant, conv, "slow down")
    await drainer.drain()
    first = sink.received[0].at
    # Nothing at all goes to the destination before retry_after has passed.
    # Held from the 429's answer (recorded with its attempt), not from now(), which depends on the load.
    held = await owner_conn.fetchval(
        "SELECT d.next_send_at - a.at FROM parley.outbox_destinations d JOIN parley.outbox_attempts a"
        " ON a.tenant_id = d.tenant_id AND a.destination_id = d.id WHERE d.tenant_id = $1 AND a.status_code = 429",
        tenant.id)
    assert held.total_seconds() == 2.0
    await post(tenant, conv, "me too")
    assert await drainer.drain() == 0
    async with asyncio.timeout(10):
        while await owner_conn.fetchval("SELECT count(*) FROM parley.outbox WHERE tenant_id = $1 AND status = 'pending'",
                                        tenant.id):
            await drainer.drain()
            await asyncio.sleep(0.05)  # polling as the drainer does; the check is on the sink's own clock
    assert len(sink.received) == 3 and min(r.at for r in sink.received[1:]) - first >= 2.0


async def test_4xx_stops_that_delivery_only(owner_conn, tenant, sink, drainer):
    await add_destination(owner_conn, tenant, sink.url)
    conv = await start_conversation(tenant)
    sink.script = [(400, {}, 0)]
    await post(tenant, conv, "rejected")
    await drainer.drain()
    await post(tenant, conv, "accepted")
    assert await drainer.drain() == 1
    rows = await _deliveries(owner_conn, tenant)
    assert [(r["status"], r["attempts"], r["last_status_code"]) for r in rows] == [("failed", 1, 400), ("delivered", 1, 200)]
    assert rows[0]["last_error"] == "HTTP 400"


async def test_dead_letter_after_the_window_and_replay(owner_conn, tenant, sink, drainer):
    dest = await add_destination(owner_conn, tenant, sink.url)
    conv = await start_conversation(tenant)
    sink.script = [(500, {}, 0), (500, {}, 0)]
    await post(tenant, conv, "doomed 1", "doomed 2")
    # The retry window is over (as if 72 h had passed): the next failure dead-letters it.
    await owner_conn.execute("UPDATE parley.outbox SET deadline = now() - interval '1 second' WHERE tenant_id = $1",
                             tenant.id)
    await drainer.drain()
    rows = await _deliveries(owner_conn, tenant)
    assert [r["status"] for r in rows] == ["dead", "dead"]
    first_ids = [r.msg_id for r in sink.received]

    # Replay the whole dead-letter queue as an admin (the API's SQL).
    async with tenant_tx(await tenant.pool("jobs"), Actor(tenant_id=tenant.id, kind="system", actor_id="t")) as conn:
        assert await conn.fetchval("SELECT parley.replay_dead_letters($1)", dest) == 2
    rows = await _deliveries(owner_conn, tenant)
    assert [r["status"] for r in rows] == ["replayed", "replayed", "pending", "pending"]
    assert [r["replay_of"] for r in rows[2:]] == [rows[0]["id"], rows[1]["id"]]
    assert await drainer.drain() == 2
    again = [r.msg_id for r in sink.received[2:]]
    assert sorted(again) == sorted(first_ids)  # a duplicate delivery carries the same id


async def test_a_destination_that_keeps_failing_is_paused_with_its_reason(owner_conn, tenant, sink, drainer):
    dest = await add_destination(owner_conn, tenant, sink.url)
    conv = await start_conversation(tenant)
    await owner_conn.execute("UPDATE parley.outbox_destinations SET failing_since = now() - interval '5 days 1 minute'"
                             " WHERE id = $1", dest)
    sink.script = [(502, {}, 0)]
    await post(tenant, conv, "still down")
    await drainer.drain()
    d = await owner_conn.fetchrow("SELECT * FROM parley.outbox_destinations WHERE id = $1", dest)
    assert d["status"] == "paused" and "502" in d["paused_reason"] and d["paused_at"] is not None
    await _due_now(owner_conn, tenant)
    assert await drainer.drain() == 0  # paused: its deliveries wait
    async with tenant_tx(await tenant.pool("jobs"), Actor(tenant_id=tenant.id, kind="system", actor_id="t")) as conn:
        await conn.execute("SELECT parley.resume_destination($1)", dest)
    assert await drainer.drain() == 1


async def test_ordered_destination_keeps_order_behind_a_failure(owner_conn, tenant, sink, drainer):
    await add_destination(owner_conn, tenant, sink.url, ordered=True)
    conv = await start_conversation(tenant)
    sink.script = [(200, {}, 0), (500, {}, 0)]
    await post(tenant, conv, *[f"m{i}" for i in range(5)])
    await drainer.drain()
    assert [r.json()["data"]["message"]["body"] for r in sink.received] == ["m0", "m1"]
    await _due_now(owner_conn, tenant)
    await drainer.drain()
    assert [r.json()["data"]["message"]["body"] for r in sink.received] == ["m0", "m1", "m1", "m2", "m3", "m4"]


async def test_token_bucket_limits_sends(owner_conn, tenant, sink, drainer):
    await owner_conn.execute("INSERT INTO parley.outbox_rate_buckets (tenant_id, key, capacity, per_second, tokens)"
                             " VALUES ($1, 'chat:1', 2, 0.05, 2)", tenant.id)
    await add_destination(owner_conn, tenant, sink.url, rate_keys=["chat:1"])
    conv = await start_conversation(tenant)
    await post(tenant, conv, "a", "b", "c", "d")
    assert await drainer.drain() == 2
    # Held until the bucket holds one token again (one every 20 s: a loaded machine still drains
    # again well inside that), counted from the bucket's last refill, which the take that found it
    # empty made: what now() says depends on the machine's load.
    held = await owner_conn.fetchrow(
        "SELECT extract(epoch FROM d.next_send_at - b.refilled_at)::float8 AS seconds, b.tokens::float8 AS tokens"
        "  FROM parley.outbox_destinations d JOIN parley.outbox_rate_buckets b ON b.tenant_id = d.tenant_id"
        " WHERE d.tenant_id = $1 AND b.key = 'chat:1'", tenant.id)
    assert 0 <= held["tokens"] < 1 and 0 < held["seconds"] <= 20.0
    assert abs(held["tokens"] + 0.05 * held["seconds"] - 1) < 1e-6
    assert await drainer.drain() == 0


async def test_a_failing_destination_is_probed_with_one_delivery(owner_conn, tenant, sink, drainer):
    dest = await add_destination(owner_conn, tenant, sink.url)
    conv = await start_conversation(tenant)

    async def due_now():  # as if the backoff had passed
        await owner_conn.execute("UPDATE parley.outbox SET next_attempt_at = now() WHERE tenant_id = $1 AND status = 'pending'",
                                 tenant.id)
        await owner_conn.execute("UPDATE parley.outbox_destinations SET next_send_at = now() WHERE id = $1", dest)

    sink.script = [(503, {}, 0)] * 5
    await post(tenant, conv, *(f"message {n}" for n in range(5)))
    assert await drainer.drain() == 0 and len(sink.received) == 5  # one batch, every delivery refused
    # Still failing: after the hold one delivery goes (a probe), not all five again.
    await due_now()
    sink.script = [(503, {}, 0)]
    assert await drainer.drain() == 0 and len(sink.received) == 6
    # The probe gets through: the destination is healthy again and the rest follow in the same drain.
    await due_now()
    assert await drainer.drain() == 5 and len(sink.received) == 11
    rows = await _deliveries(owner_conn, tenant)
    assert [r["status"] for r in rows] == ["delivered"] * 5
    assert await owner_conn.fetchval("SELECT failing_since FROM parley.outbox_destinations WHERE id = $1", dest) is None
