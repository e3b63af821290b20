"""A drainer stopped hard mid-batch: what was answered before is recorded (not sent again), what
was in flight is sent after the lease, nothing is lost; a drainer stopped (cancelled) records what it
was answered before it goes; and a batch recorded in several calls keeps
the destination's health as one batch does (jobs/outbox.py _Recording, parley.record_outbox_results)."""
import asyncio
import contextlib

import pytest
from jobs import outbox
from pyapp.db import Actor, create_pool, tenant_tx
from pyapp.webhooks.sender import WebhookSender
from support.outbox import add_destination, delivery_statuses, make_drainer, start_conversation
from support.waits import until

N = 40  # deliveries: one batch
HUNG = 10  # the sink answers the first HUNG requests, then holds the next one until released


async def _recorded(owner_conn, tenant, n, timeout=20):
    """Until n delivered attempts are in parley.outbox_attempts (the drainer's record, seen from outside)."""
    async def enough():
        return await owner_conn.fetchval("SELECT count(*) FROM parley.outbox_attempts WHERE tenant_id = $1"
                                         " AND outcome = 'delivered'", tenant.id) >= n

    await until(enough, timeout=timeout, what=f"{n} delivered attempts recorded")


@pytest.mark.parametrize("ordered", [False, True], ids=["unordered", "ordered"])
async def test_a_drainer_killed_mid_batch_leaves_the_answered_recorded(settings, owner_conn, tenant, sink, ordered):
    release = asyncio.Event()
    sink.script = [(200, {}, 0)] * HUNG + [(200, {}, release)]
    try:
        await _kill_mid_batch(settings, owner_conn, tenant, sink, ordered, release)
    finally:
        release.set()  # the sink's hung handler ends whatever happened


async def _kill_mid_batch(settings, owner_conn, tenant, sink, ordered, release):
    await add_destination(owner_conn, tenant, sink.url, ordered=ordered)
    conv = await start_conversation(tenant)
    async with await tenant.tx("service") as conn:  # one batch's worth, in one transaction
        for i in range(N):
            await conn.execute("SELECT 1 FROM parley.post_message($1, 'bot', $2)", conv, f"m{i}")

    pool = await create_pool(settings.jobs_url, min_size=1, max_size=4)
    # A lease and a send timeout far longer than the test: only the recording as answers come can
    # make the answered deliveries show up while the batch is still under way.
    slow = WebhookSender(allow_hosts=["127.0.0.1"], timeout=300)
    drainer = make_drainer(pool, "doomed", senders={"webhook": slow}, lease_s=600, poll_s=0.1)
    stop = asyncio.Event()
    task = asyncio.create_task(drainer.run(stop))
    try:
        await sink.wait_arrived(HUNG + 1)  # the hung one is in flight
        answered = N - 1 if not ordered else HUNG  # an ordered destination waits for the hung post
        await _recorded(owner_conn, tenant, answered)
        if ordered:
            assert sink.arrived == HUNG + 1  # one post at a time: nothing after the hung one went
    finally:  # a hard stop: its connections gone first, so nothing more can be recorded
        pool.terminate()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await slow.close()
    assert await delivery_statuses(owner_conn, tenant) == {"delivered": answered, "pending": N - answered}
    sent_before = len(sink.received)
    assert sent_before == answered

    # The dead drainer's lease ran out: another drainer sends the rest, each once.
    await owner_conn.execute("UPDATE parley.outbox_destinations SET leased_until = now() - interval '1 second'"
                             " WHERE tenant_id = $1", tenant.id)
    release.set()  # the hung request ends (its answer goes to a closed connection)
    survivor = make_drainer(await tenant.pool("jobs"), "survivor")
    async def all_delivered():
        await survivor.drain()
        return (await delivery_statuses(owner_conn, tenant)).get("delivered", 0) >= N

    try:
        await until(all_delivered, timeout=30, what="every delivery delivered by the survivor")
    finally:
        await survivor.close()
    assert await delivery_statuses(owner_conn, tenant) == {"delivered": N}
    await sink.wait_for(N + 1)  # every delivery, and the hung request noted once released
    bodies = [r.json()["data"]["message"]["body"] for r in sink.received]
    assert set(bodies) == {f"m{i}" for i in range(N)}  # nothing lost
    twice = {b for b in bodies if bodies.count(b) > 1}
    assert len(twice) <= 1  # only the one in flight when the drainer died went twice
    if ordered:
        first_seen = list(dict.fromkeys(bodies))
        assert first_seen == [f"m{i}" for i in range(N)]


async def test_failures_first_then_successes_do_not_hold_the_destination(owner_conn, tenant, sink, drainer):
    """Answers recorded in several calls: a batch whose first answers failed and whose later ones got
    through is not held (its failures wait for its first success), as when it was recorded whole."""
    sink.script = [(500, {}, 0)] * 3 + [(200, {}, 0.6)] * 5  # the failures a recording window before
    dest = await add_destination(owner_conn, tenant, sink.url)
    conv = await start_conversation(tenant)
    async with await tenant.tx("service") as conn:
        for i in range(8):
            await conn.execute("SELECT 1 FROM parley.post_message($1, 'bot', $2)", conv, f"m{i}")
    assert await drainer.drain() == 5
    d = await owner_conn.fetchrow("SELECT failing_since, consecutive_failures, next_send_at <= now() AS open"
                                  " FROM parley.outbox_destinations WHERE id = $1", dest)
    assert d["failing_since"] is None and d["consecutive_failures"] == 3 and d["open"]
    # The failures were recorded in the same call (transaction) as a success.
    assert await owner_conn.fetchval(
        "SELECT bool_and(f.at IN (SELECT s.at FROM parley.outbox_attempts s WHERE s.tenant_id = $1"
        " AND s.outcome = 'delivered')) FROM parley.outbox_attempts f WHERE f.tenant_id = $1 AND f.outcome = 'retry'",
        tenant.id)


async def test_a_later_call_of_a_batch_that_got_through_holds_nothing(owner_conn, tenant, sink):
    """record_outbox_results' p_batch_delivered: failures recorded after the batch's success (a later
    call) count, but neither mark the destination failing nor hold it; without it they would."""
    dest = await add_destination(owner_conn, tenant, sink.url)
    conv = await start_conversation(tenant)
    async with await tenant.tx("service") as conn:
        for i in range(4):
            await conn.execute("SELECT 1 FROM parley.post_message($1, 'bot', $2)", conv, f"m{i}")
    jobs = await tenant.pool("jobs")

    async def record(rows, outcome, batch_delivered):
        async with tenant_tx(jobs, Actor(tenant_id=tenant.id, kind="system", actor_id="t")) as conn:
            return await conn.fetchval("SELECT parley.record_outbox_results($1, 't', $2, $3)", dest, [
                {"id": r["id"], "created_at": r["created_at"].isoformat(), "outcome": outcome, "status_code": 500}
                for r in rows], batch_delivered)

    async def health():
        return await owner_conn.fetchrow("SELECT failing_since IS NULL AS healthy, consecutive_failures,"
                                         " next_send_at <= now() AS open FROM parley.outbox_destinations"
                                         " WHERE id = $1", dest)

    rows = await owner_conn.fetch("SELECT id, created_at FROM parley.outbox WHERE tenant_id = $1 ORDER BY id",
                                  tenant.id)
    assert (await record(rows[:1], "delivered", 0))["delivered"] == 1
    assert (await record(rows[1:2], "retry", 1))["retry"] == 1
    assert dict(await health()) == {"healthy": True, "consecutive_failures": 1, "open": True}
    assert (await record(rows[2:3], "retry", 1))["retry"] == 1  # the batch's failures add up
    assert dict(await health()) == {"healthy": True, "consecutive_failures": 2, "open": True}
    # A batch with no success (the next one): failing, and held until its earliest retry.
    await record(rows[3:4], "retry", 0)
    assert dict(await health()) == {"healthy": False, "consecutive_failures": 3, "open": False}


class _Counting:
    """A webhook sender that counts the answers it hands the drainer (which notes each one before
    it next waits: the count is a real signal that the drainer holds them)."""

    def __init__(self, inner):
        self.inner = inner
        self.answered = 0

    async def send(self, destination, delivery):
        result = await self.inner.send(destination, delivery)
        self.answered += 1
        return result

    async def close(self):
        await self.inner.close()


async def test_a_drainer_stopped_mid_batch_records_what_was_answered(monkeypatch, owner_conn, tenant, sink):
    """`parley jobs` stopping (its drainer cancelled, the database still there) records the answers
    it holds before it goes, though its next recording was not due yet; the one in flight stays pending."""
    monkeypatch.setattr(outbox, "RECORD_S", 600)  # nothing recorded on the way: only the stop records
    release = asyncio.Event()
    sink.script = [(200, {}, 0)] * 5 + [(200, {}, release)]
    await add_destination(owner_conn, tenant, sink.url)
    conv = await start_conversation(tenant)
    async with await tenant.tx("service") as conn:
        for i in range(10):
            await conn.execute("SELECT 1 FROM parley.post_message($1, 'bot', $2)", conv, f"m{i}")
    counting = _Counting(WebhookSender(allow_hosts=["127.0.0.1"], timeout=300))
    drainer = make_drainer(await tenant.pool("jobs"), "stopping", senders={"webhook": counting}, lease_s=600)
    task = asyncio.create_task(drainer.run(asyncio.Event()))
    try:
        await until(lambda: counting.answered >= 9, timeout=20, what="nine answers")
        assert await delivery_statuses(owner_conn, tenant) == {"pending": 10}
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert await delivery_statuses(owner_conn, tenant) == {"delivered": 9, "pending": 1}
    finally:
        release.set()
        task.cancel()  # a no-op once stopped above
        await drainer.close()
