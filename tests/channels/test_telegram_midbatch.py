"""A drainer killed mid-batch after a conversation's post made its topic: the topic and the post are
recorded as they come (jobs/outbox.py _Recording), so the next drainer neither makes the topic again
nor shows the operators the post twice; the post in flight is the only one sent again. Killed
mid-post: the topic it made and the parts of a long message it delivered are recorded as they are
done (_Progress), so only the call in flight is made again."""
import asyncio
import contextlib

from jobs.outbox import OutboxDrainer
from pyapp.channels.adapter import ChannelSender
from pyapp.channels.envelope import Keyring
from pyapp.channels.telegram import TelegramAdapter, TelegramApi
from pyapp.db import create_pool
from support.fakes.telegram import CHAT
from support.outbox import connect_telegram, post, start_conversation
from support.server import TEST_SECRET
from support.waits import until


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
    return await _killed_when(ws, tg, owner_conn, settings, "createForumTopic", 1, "the first topic recorded",
                              "SELECT count(*) FROM parley.channel_threads WHERE tenant_id = $1")


async def _killed_when(ws, tg, owner_conn, settings, method, after, what, recorded):
    """A drainer runs until its call number ``after`` + 1 of ``method`` hangs and the query
    ``recorded`` (of the tenant's rows) answers something, then stops hard; the statuses of the
    visitors' deliveries."""
    release = asyncio.Event()
    tg.hold_next(method, release, after=after)
    pool = await create_pool(settings.jobs_url, min_size=1, max_size=4)
    # A send timeout far longer than the test: only recording each post as it is answered can show
    # the first one recorded while the batch is still under way.
    doomed = _drainer(pool, tg, "doomed", timeout=300)
    task = asyncio.create_task(doomed.run(asyncio.Event()))
    try:
        await tg.wait_for(lambda: tg.held == 1)
        await until(lambda: owner_conn.fetchval(recorded, ws.tenant.id), timeout=20, what=what)
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


async def test_a_topic_is_recorded_before_its_first_post_is_answered(ws, tg, owner_conn, settings, jobs_pool):
    """The drainer dies while the post into the topic it just made is in flight: the topic was
    recorded as soon as it was made, so the next drainer posts into it instead of making another."""
    await connect_telegram(ws, owner_conn)
    conversation = await start_conversation(ws.tenant)
    await post(ws.tenant, conversation, "Where is my parcel?", author="visitor")
    statuses = await _killed_when(ws, tg, owner_conn, settings, "sendMessage", 0, "the topic recorded mid-post",
                                  "SELECT count(*) FROM parley.channel_threads WHERE tenant_id = $1")
    assert statuses == {conversation: "pending"}
    await _survivor_drains(ws, tg, owner_conn, jobs_pool)
    named = [t.name for t in tg.topics.values()]
    assert named.count(f"Conversation {str(conversation)[:8]}") == 1
    assert {m.get("message_thread_id") for m in tg.sent(CHAT)} == {t.thread_id for t in tg.topics.values()}


async def test_the_parts_of_a_long_message_delivered_are_not_posted_again(ws, tg, owner_conn, settings, jobs_pool):
    """An answer longer than a Telegram post goes in parts; the drainer dies while the third is in
    flight: the two delivered were noted as they went (parley.note_parts_sent), so the next drainer
    sends the third and nothing before it again."""
    await connect_telegram(ws, owner_conn)
    conversation = await start_conversation(ws.tenant)
    long = "\n".join(f"Line {i:03d} of the order history: " + "shipped, delivered, returned. " * 4 for i in range(70))
    assert 8192 < len(long) < 12000  # three parts of at most 4096
    await post(ws.tenant, conversation, long)  # the assistant's long answer
    statuses = await _killed_when(ws, tg, owner_conn, settings, "sendMessage", 2, "two parts noted",
                                  "SELECT count(*) FROM parley.outbox WHERE tenant_id = $1 AND parts_sent = 2")
    assert statuses == {conversation: "pending"}
    await _survivor_drains(ws, tg, owner_conn, jobs_pool)
    texts = [m["text"] for m in tg.sent(CHAT)]
    assert len(set(texts)) == 3, [t[:40] for t in texts]
    # The third part twice at most (the call in flight was answered after its drainer died); the
    # first two once.
    assert [texts.count(t) for t in dict.fromkeys(texts)][:2] == [1, 1], [t[:40] for t in texts]
    assert "".join(dict.fromkeys(texts)).replace("\n", "").endswith(long.replace("\n", "")[-200:])
