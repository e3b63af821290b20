"""A batch that outlasts its destination's lease (a slow endpoint: up to 15 s a send, one post at a
time on an ordered destination) keeps the lease while it is sent, so no other drainer takes the
destination and sends what is not recorded yet again, out of order; and a batch whose lease is lost
meanwhile (the destination paused, or taken) sends nothing more (jobs/outbox.py _keep_lease)."""
import asyncio
import contextlib
import logging

from pyapp.webhooks.sender import WebhookSender
from support.outbox import add_destination, delivery_statuses, make_drainer, start_conversation
from support.waits import until

N = 4
LEASE_S = 2  # renewed every 2/3 s while the batch is sent


async def _queued(tenant, owner_conn, sink, release):
    sink.script = [(200, {}, release)]  # the first post is held until released, the rest answered at once
    dest = await add_destination(owner_conn, tenant, sink.url, ordered=True)
    conv = await start_conversation(tenant)
    async with await tenant.tx("service") as conn:
        for i in range(N):
            await conn.execute("SELECT 1 FROM parley.post_message($1, 'bot', $2)", conv, f"m{i}")
    return dest


@contextlib.asynccontextmanager
async def _draining(tenant, worker):
    slow = WebhookSender(allow_hosts=["127.0.0.1"], timeout=300)
    drainer = make_drainer(await tenant.pool("jobs"), worker, senders={"webhook": slow}, lease_s=LEASE_S, poll_s=0.1)
    stop = asyncio.Event()
    task = asyncio.create_task(drainer.run(stop))
    try:
        yield drainer
    finally:
        stop.set()
        await task
        await drainer.close()


async def test_a_batch_longer_than_its_lease_keeps_it(owner_conn, tenant, sink):
    release = asyncio.Event()
    dest = await _queued(tenant, owner_conn, sink, release)
    try:
        async with _draining(tenant, "slow") as drainer:
            await sink.wait_arrived(1)  # the first post hangs
            taken_until = await owner_conn.fetchval("SELECT leased_until FROM parley.outbox_destinations"
                                                    " WHERE id = $1", dest)
            # Past the lease the take gave: it was renewed, and another drainer may not take the destination.
            await until(lambda: owner_conn.fetchval("SELECT now() > $1::timestamptz + interval '0.5 s'", taken_until),
                        what="the first lease's end")
            assert await owner_conn.fetchval("SELECT leased_until > $2::timestamptz AND leased_by = 'slow'"
                                             " FROM parley.outbox_destinations WHERE id = $1", dest, taken_until)
            rival = await (await tenant.pool("jobs")).fetch(
                "SELECT destination_id FROM parley.lease_outbox_destinations('rival', 10, 30)")
            assert dest not in [r["destination_id"] for r in rival]
            release.set()
            await until(lambda: drainer.sent == N, what="every delivery sent")
    finally:
        release.set()
    assert await delivery_statuses(owner_conn, tenant) == {"delivered": N}
    bodies = [r.json()["data"]["message"]["body"] for r in sink.received]
    assert bodies == [f"m{i}" for i in range(N)]  # each once, in order


async def test_a_batch_whose_lease_is_lost_sends_nothing_more(owner_conn, tenant, sink, caplog):
    caplog.set_level(logging.INFO, logger="parley.jobs.outbox")
    release = asyncio.Event()
    dest = await _queued(tenant, owner_conn, sink, release)
    try:
        async with _draining(tenant, "paused") as drainer:
            await sink.wait_arrived(1)
            await owner_conn.execute("UPDATE parley.outbox_destinations SET status = 'paused' WHERE id = $1", dest)
            await until(lambda: any("lost mid-batch" in r.getMessage() for r in caplog.records),
                        what="the drainer to find its lease gone")
            release.set()  # the post in flight is answered; the next ones are not sent
            await until(lambda: not drainer.active, what="the batch to end")
    finally:
        release.set()
    assert sink.arrived == 1
    assert await delivery_statuses(owner_conn, tenant) == {"delivered": 1, "pending": N - 1}


async def test_a_drainer_never_leases_again_what_it_is_working_on(owner_conn, tenant, sink):
    """p_busy of lease_outbox_destinations: a destination the drainer is still working on is not leased
    to it again, even past its lease (it used to be: a second task then sent the same batch again)."""
    dest = await _queued(tenant, owner_conn, sink, asyncio.Event())
    jobs = await tenant.pool("jobs")

    async def lease(busy):
        return [r["destination_id"] for r in await jobs.fetch(
            "SELECT destination_id FROM parley.lease_outbox_destinations('w', 10, 30, $1)", busy)]

    assert await lease([]) == [dest]
    await owner_conn.execute("UPDATE parley.outbox_destinations SET leased_until = now() - interval '1 s'"
                             " WHERE id = $1", dest)
    assert await lease([dest]) == []  # still being worked on: not again
    assert await lease(None) == [dest]  # lost track of it: taken again
