"""A drainer killed mid-batch after a conversation's post made its topic: the topic and the post are
recorded as they come (jobs/outbox.py _Recording), so the next drainer neither makes the topic again
nor shows the operators the post twice; the post in flight is the only one sent again."""
import asyncio
import contextlib

from support.fakes.telegram import CHAT
from support.outbox import connect_telegram, post, start_conversation
from support.server import TEST_SECRET
from support.waits import until

from jobs.outbox import OutboxDrainer
from pyapp.channels.adapter import ChannelSender
from pyapp.channels.envelope import Keyring
from pyapp.channels.telegram import TelegramAdapter, TelegramApi
from pyapp.db import create_pool


def _drainer(pool, tg, worker, timeout=15.0) -> OutboxDrainer:
    sender = ChannelSender(TelegramAdapter(TelegramApi(base=tg.url, timeout=timeout)))
    return OutboxDrainer(pool, worker, senders={"telegram": sender}, keyring=Keyring.from_settings(TEST_SECRET),
                         poll_s=0.1)


async def _two_conversations(ws, owner_conn):
    await connect_telegram(ws, owner_conn)
    first, second = await start_conversation(ws.tenant), await start_conversation(ws.tenant)
    await post(ws.tenant, first, "Hello from the first", author="visitor")
    await post(ws.tenant, second, "Hello from the second", author="visitor")
    return first, second


async def _killed_once_the_first_topic_is_recorded(ws, tg, owner_conn, settings):
    """A drainer runs until the second conversation's topic hangs and the first one's is recorded,
    then stops hard (its connections gone first, so nothing more can be recorded); the statuses of
    the visitors' deliveries."""
    release = asyncio.Event()
    tg.hold_next("createForumTopic", release, after=1)  # the second conversation's topic hangs
    pool = await create_pool(settings.jobs_url, min_size=1, max_size=4)
    # A send timeout far longer than the test: only recording each post as it is answered can show
    # the first one recorded while the batch is still under way.
    doomed = _drainer(pool, tg, "doomed", timeout=300)
    task = asyncio.create_task(doomed.run(asyncio.Event()))
    try:
        await tg.wait_for(lambda: tg.held == 1)
        await until(lambda: owner_conn.fetchval("SELECT count(*) FROM parley.channel_threads WHERE tenant_id = $1",
                                                ws.tenant.id), timeout=20, what="the first topic recorded")
    finally:
        pool.terminate()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await doomed.close()
        release.set()  # the hung call ends (its answer goes to a closed connection)
    rows = await owner_conn.fetch("SELECT conversation_id, status FROM parley.outbox WHERE tenant_id = $1"
                                  " AND kind = 'conversation.message_added'", ws.tenant.id)
    return {r["conversation_id"]: r["status"] for r in rows}


async def _survivor_drains(ws, tg, owner_conn, jobs_pool):
    await owner_conn.execute("UPDATE parley.outbox_destinations SET leased_until = now() - interval '1 second',"
                             " next_send_at = now() WHERE tenant_id = $1", ws.tenant.id)
    await owner_conn.execute("UPDATE parley.outbox SET next_attempt_at = now() WHERE tenant_id = $1"
                             " AND status = 'pending'", ws.tenant.id)  # a retry's backoff, over
    survivor = _drainer(jobs_pool, tg, "survivor")
    try:
        await survivor.drain()
    finally:
        await survivor.close()
    assert await owner_conn.fetchval("SELECT count(*) FROM parley.outbox WHERE tenant_id = $1"
                                     " AND status <> 'delivered'", ws.tenant.id) == 0


async def test_a_topic_made_before_the_drainer_died_is_not_made_again(ws, tg, owner_conn, settings, jobs_pool):
    first, second = await _two_conversations(ws, owner_conn)
    statuses = await _killed_once_the_first_topic_is_recorded(ws, tg, owner_conn, settings)
    assert statuses == {first: "delivered", second: "pending"}
    await _survivor_drains(ws, tg, owner_conn, jobs_pool)
    texts = [m["text"] for m in tg.sent(CHAT)]
    assert texts.count("Visitor: Hello from the first") == 1  # shown once
    assert texts.count("Visitor: Hello from the second") == 1
    named = [t.name for t in tg.topics.values()]
    assert named.count(f"Conversation {str(first)[:8]}") == 1  # its topic made once


async def test_a_topic_made_for_a_post_that_failed_is_recorded_at_once(ws, tg, owner_conn, settings, jobs_pool):
    """A failed answer waits for its batch's first success to be recorded (the destination's health),
    but the topic it made does not: the next drainer posts into it rather than make another."""
    first, second = await _two_conversations(ws, owner_conn)
    tg.fail_next("sendMessage", 500)  # the first conversation's topic is made, its post fails
    statuses = await _killed_once_the_first_topic_is_recorded(ws, tg, owner_conn, settings)
    assert statuses == {first: "pending", second: "pending"}
    await _survivor_drains(ws, tg, owner_conn, jobs_pool)
    assert [m["text"] for m in tg.sent(CHAT)].count("Visitor: Hello from the first") == 1
    named = [t.name for t in tg.topics.values()]
    assert named.count(f"Conversation {str(first)[:8]}") == 1
