"""A refusal is scoped to what it refuses (against the fake Bot API on 127.0.0.1): a 400 in one forum
topic fails that delivery only (shown, not retried) while the other topics keep flowing and the topic's
next messages follow it; a 5xx in one topic holds that topic's order only; a 403 (the bot kicked from
the group) pauses the whole channel with its reason and nothing else is sent."""
import uuid

from support.fakes.telegram import CHAT
from support.outbox import connect_telegram, drain_telegram, post, start_conversation


async def _rows(owner_conn, channel, conv):
    return await owner_conn.fetch(
        "SELECT status, last_status_code, last_error, attempts FROM parley.outbox"
        " WHERE destination_id = $1 AND conversation_id = $2 ORDER BY id", uuid.UUID(channel["id"]), conv)


async def _destination(owner_conn, channel):
    return await owner_conn.fetchrow(
        "SELECT status, paused_reason, failing_since, next_send_at <= now() AS free, last_error"
        " FROM parley.outbox_destinations WHERE id = $1", uuid.UUID(channel["id"]))


def _texts(tg, topic):
    return [m["text"] for m in tg.sent(CHAT, topic.thread_id)]


async def test_a_400_in_one_topic_fails_that_delivery_only(ws, tg, owner_conn):
    channel = await connect_telegram(ws, owner_conn)
    first, second = await start_conversation(ws.tenant), await start_conversation(ws.tenant)
    await post(ws.tenant, first, "too long, says Telegram", author="visitor")
    await post(ws.tenant, second, "Hello from the second", author="visitor")
    async with await ws.tenant.tx("service") as conn:  # a second post of the first topic, queued behind the 400
        await conn.execute("SELECT parley.transition_conversation($1, 'human')", first)
    tg.fail_next("sendMessage", 400, description="Bad Request: message is too long")
    assert await drain_telegram(ws.tenant, tg) == 2
    by_name = {t.thread_id: t for t in tg.topics.values()}
    topic_of = {r["conversation_id"]: by_name[int(r["thread_ref"])] for r in await owner_conn.fetch(
        "SELECT conversation_id, thread_ref FROM parley.channel_threads WHERE destination_id = $1",
        uuid.UUID(channel["id"]))}
    assert _texts(tg, topic_of[second]) == ["Visitor: Hello from the second"]
    # The refused post is shown and not retried; the topic's next post went after it, in order.
    assert _texts(tg, topic_of[first]) == ["The visitor asked for a person."]
    refused, handoff = await _rows(owner_conn, channel, first)
    assert (refused["status"], refused["last_status_code"], refused["attempts"]) == ("failed", 400, 1)
    assert "message is too long" in refused["last_error"] and handoff["status"] == "delivered"
    attempts = await owner_conn.fetch("SELECT outcome, status_code FROM parley.outbox_attempts WHERE destination_id = $1"
                                      " ORDER BY id", uuid.UUID(channel["id"]))
    assert sorted((a["outcome"], a["status_code"]) for a in attempts) == [
        ("delivered", 200), ("delivered", 200), ("failed", 400)]
    # The group is not held, paused or counted as failing for one topic's refusal.
    dest = await _destination(owner_conn, channel)
    assert dest["status"] == "active" and dest["failing_since"] is None and dest["free"]
    await post(ws.tenant, first, "Any news?", author="visitor")
    assert await drain_telegram(ws.tenant, tg) == 1
    assert _texts(tg, topic_of[first])[-1] == "Visitor: Any news?"


async def test_a_5xx_in_one_topic_holds_that_topic_only(ws, tg, owner_conn):
    channel = await connect_telegram(ws, owner_conn)
    first, second = await start_conversation(ws.tenant), await start_conversation(ws.tenant)
    await post(ws.tenant, first, "one", author="visitor")
    await post(ws.tenant, second, "elsewhere", author="visitor")
    tg.fail_next("sendMessage", 502, description="Bad Gateway")
    assert await drain_telegram(ws.tenant, tg) == 1
    # The first topic waits for its retry (a later message of it queues behind); the other flows.
    # (Had nothing got through, the whole destination would wait: a down API is not hammered.)
    await post(ws.tenant, first, "two", author="visitor")
    await post(ws.tenant, second, "again", author="visitor")
    assert await drain_telegram(ws.tenant, tg) == 1
    assert [m["text"] for m in tg.sent(CHAT)] == ["Visitor: elsewhere", "Visitor: again"]
    assert [r["status"] for r in await _rows(owner_conn, channel, first)] == ["pending", "pending"]
    assert (await _destination(owner_conn, channel))["status"] == "active"
    # Once the retry is due, the first topic's messages go in their order.
    await owner_conn.execute("UPDATE parley.outbox SET next_attempt_at = now() WHERE conversation_id = $1", first)
    await owner_conn.execute("UPDATE parley.outbox_destinations SET next_send_at = now() WHERE id = $1",
                             uuid.UUID(channel["id"]))
    assert await drain_telegram(ws.tenant, tg) == 2
    assert [m["text"] for m in tg.sent(CHAT)][-1] == "Visitor: one\nVisitor: two"


async def test_a_403_bot_kicked_pauses_the_whole_channel_with_its_reason(ws, tg, owner_conn):
    channel = await connect_telegram(ws, owner_conn)
    convs = [await start_conversation(ws.tenant) for _ in range(3)]
    for conv in convs:
        await post(ws.tenant, conv, "hello", author="visitor")
    tg.remove_bot(CHAT)
    assert await drain_telegram(ws.tenant, tg) == 0
    assert tg.sent(CHAT) == [] and [c.method for c in tg.calls] == ["getMe", "setMyCommands", "createForumTopic"]
    statuses = [r["status"] for conv in convs for r in await _rows(owner_conn, channel, conv)]
    assert sorted(statuses) == ["failed", "pending", "pending"]
    status, listed = await ws.call("GET", "/api/channels/telegram")
    (shown,) = listed["channels"]
    assert status == 200 and shown["status"] == "paused" and "kicked" in shown["paused_reason"]
