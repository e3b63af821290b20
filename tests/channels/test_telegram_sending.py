"""Posting to a busy Telegram group (against the fake Bot API on 127.0.0.1): a conversation's queued
messages go as one post taking one rate token; a long message goes alone; conversations waiting for
a person are posted before the backlog, each conversation in its own order; a split message whose
later part fails sends only the parts not yet delivered on retry."""
import asyncio
import uuid

from support.fakes.telegram import CHAT, TOKEN
from support.outbox import drain_telegram, post, start_conversation, telegram_drainer


async def _connect(ws, owner_conn, *, capacity=100, per_second=100):
    status, channel = await ws.call("POST", "/api/channels/telegram",
                                    json={"name": "Support", "bot_token": TOKEN, "chat_id": CHAT})
    assert status == 201, channel
    await owner_conn.execute("UPDATE parley.outbox_rate_buckets SET capacity = $2, tokens = $2, per_second = $3"
                             " WHERE tenant_id = $1", ws.tenant.id, capacity, per_second)
    return channel


async def _tokens(owner_conn, ws):
    return await owner_conn.fetchval("SELECT tokens FROM parley.outbox_rate_buckets WHERE tenant_id = $1"
                                     " AND key LIKE '%:group'", ws.tenant.id)


async def test_a_conversations_queued_messages_go_as_one_post(ws, tg, owner_conn):
    channel = await _connect(ws, owner_conn, per_second=0.001)
    conv = await start_conversation(ws.tenant)
    await post(ws.tenant, conv, "Hello", "Is anyone there?", "My order is 1234", author="visitor")
    await post(ws.tenant, conv, "Let me look that up.", author="bot")
    long_body = "x" * 3600  # over channel_post_bytes_max: a post of its own
    await post(ws.tenant, conv, long_body, "After the long one", author="visitor")
    before = await _tokens(owner_conn, ws)
    assert await drain_telegram(ws.tenant, tg) == 6
    texts = [m["text"] for m in tg.sent(CHAT)]
    assert texts == ["Visitor: Hello\nVisitor: Is anyone there?\nVisitor: My order is 1234\nBot: Let me look that up.",
                     "Visitor: " + long_body, "Visitor: After the long one"]
    # One token per post, not per delivery.
    assert 2.9 < before - await _tokens(owner_conn, ws) < 3.1
    statuses = await owner_conn.fetch("SELECT status FROM parley.outbox WHERE destination_id = $1",
                                      uuid.UUID(channel["id"]))
    assert [r["status"] for r in statuses] == ["delivered"] * 6


async def test_handoffs_go_before_the_backlog_in_each_conversations_order(ws, tg, owner_conn):
    await _connect(ws, owner_conn)
    backlog = [await start_conversation(ws.tenant) for _ in range(3)]
    for i, conv in enumerate(backlog):
        await post(ws.tenant, conv, f"Question {i}", author="visitor")
    urgent = await start_conversation(ws.tenant)
    await post(ws.tenant, urgent, "I need a person", author="visitor")
    async with await ws.tenant.tx("service") as conn:
        await conn.execute("SELECT parley.transition_conversation($1, 'human')", urgent)
    # Tokens for two posts now, then one every 50 ms.
    await owner_conn.execute("UPDATE parley.outbox_rate_buckets SET capacity = 2, tokens = 2, per_second = 20"
                             " WHERE tenant_id = $1", ws.tenant.id)
    stop = asyncio.Event()
    drainer = telegram_drainer(await ws.tenant.pool("jobs"), tg, poll_s=0.05)
    running = asyncio.create_task(drainer.run(stop))
    try:
        await tg.wait_for(lambda: len(tg.sent(CHAT)) == 5)
    finally:
        stop.set()
        await running
        await drainer.close()
    assert [m["text"] for m in tg.sent(CHAT)] == [
        "Visitor: I need a person", "The visitor asked for a person.",
        "Visitor: Question 0", "Visitor: Question 1", "Visitor: Question 2"]


async def test_a_split_message_resends_only_the_parts_not_delivered(ws, tg, owner_conn):
    channel = await _connect(ws, owner_conn)
    conv = await start_conversation(ws.tenant)
    long_body = "😀" * 3000 + " end"  # 6,004 UTF-16 units: two parts
    await post(ws.tenant, conv, long_body, author="visitor")
    assert await drain_telegram(ws.tenant, tg) == 1  # the topic exists from here on
    await post(ws.tenant, conv, long_body, author="visitor")
    tg.messages.clear()
    # The second sendMessage of the next drain answers 502 (a retryable failure), once.
    original = tg._answer
    seen = {"n": 0}

    def second_part_fails_once(token, method, p):
        if method == "sendMessage":
            seen["n"] += 1
            if seen["n"] == 2:
                return 502, {"ok": False, "error_code": 502, "description": "Bad Gateway"}
        return original(token, method, p)

    tg._answer = second_part_fails_once
    assert await drain_telegram(ws.tenant, tg) == 0
    row = await owner_conn.fetchrow("SELECT status, parts_sent, attempts FROM parley.outbox WHERE destination_id = $1"
                                    " ORDER BY id DESC LIMIT 1", uuid.UUID(channel["id"]))
    assert (row["status"], row["parts_sent"], row["attempts"]) == ("pending", 1, 1)
    # Due again now (its backoff and the destination's hold skipped).
    await owner_conn.execute("UPDATE parley.outbox SET next_attempt_at = now() WHERE destination_id = $1",
                             uuid.UUID(channel["id"]))
    await owner_conn.execute("UPDATE parley.outbox_destinations SET next_send_at = now() WHERE id = $1",
                             uuid.UUID(channel["id"]))
    assert await drain_telegram(ws.tenant, tg) == 1
    texts = [m["text"] for m in tg.messages]
    assert len(texts) == 2 and "".join(texts) == "Visitor: " + long_body  # part 1 once, part 2 once
    row = await owner_conn.fetchrow("SELECT status, parts_sent FROM parley.outbox WHERE destination_id = $1"
                                    " ORDER BY id DESC LIMIT 1", uuid.UUID(channel["id"]))
    assert (row["status"], row["parts_sent"]) == ("delivered", 2)
