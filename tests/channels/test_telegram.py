"""Telegram channels through the outbox against a fake Bot API on 127.0.0.1 (support.fakes.telegram):
connect a bot and a forum group by the API (token checked with getMe, sealed, never shown), one
topic per conversation with its messages in order, splitting at 4096 UTF-16 units, the chat's
rate bucket, 429 retry_after honoured, 403 pausing the channel, and tenants kept apart."""
import asyncio
import itertools
import uuid

from pyapp.channels.telegram import split_text, utf16_units
from support.fakes.telegram import CHAT, OTHER_TOKEN, TOKEN
from support.outbox import drain_telegram, post, start_conversation, telegram_drainer


async def _connect(ws, chat=CHAT, token=TOKEN):
    status, body = await ws.call("POST", "/api/channels/telegram",
                                 json={"name": "Support group", "bot_token": token, "chat_id": chat})
    assert status == 201, body
    return body


async def _outbox(owner_conn, channel_id):
    return await owner_conn.fetch("SELECT status, last_status_code, last_error FROM parley.outbox"
                                  " WHERE destination_id = $1 ORDER BY id", uuid.UUID(channel_id))


async def test_connect_checks_the_token_seals_it_and_shows_only_a_hint(ws, tg, owner_conn):
    status, body = await ws.call("POST", "/api/channels/telegram", json={
        "bot_token": "111:" + "x" * 35, "chat_id": CHAT})
    assert status == 422 and body["error"]["code"] == "invalid_bot_token"
    assert "x" * 35 not in str(body)
    status, body = await ws.call("POST", "/api/channels/telegram", json={"bot_token": TOKEN, "chat_id": 42})
    assert status == 422 and body["error"]["code"] == "invalid_chat_id"
    channel = await _connect(ws)
    assert channel["bot_username"] == "parley_support_bot" and channel["chat_id"] == CHAT
    assert channel["token_hint"] == TOKEN[-4:]
    status, again = await ws.call("POST", "/api/channels/telegram", json={"bot_token": TOKEN, "chat_id": CHAT})
    assert status == 409, again
    secret = TOKEN.split(":")[1]
    status, listed = await ws.call("GET", "/api/channels/telegram")
    assert status == 200 and [c["id"] for c in listed["channels"]] == [channel["id"]]
    # Nowhere in clear: the API, the destination, its secrets, the audit log.
    dump = [str(listed)]
    for table in ("outbox_destinations", "destination_secrets", "audit_log"):
        dump += [str(dict(r)) for r in await owner_conn.fetch(f"SELECT * FROM parley.{table}")]
    sealed = await owner_conn.fetch("SELECT sealed FROM parley.destination_secrets WHERE destination_id = $1 AND purpose = 'token'",
                                    uuid.UUID(channel["id"]))
    assert len(sealed) == 1
    assert not any(secret in d for d in dump) and secret.encode() not in sealed[0]["sealed"]


async def test_a_topic_per_conversation_messages_in_order_and_split(ws, tg, owner_conn):
    channel = await _connect(ws)
    # One bucket token a second per chat would spread this test over seconds: its rule has its own test.
    await owner_conn.execute("UPDATE parley.outbox_rate_buckets SET capacity = 100, tokens = 100, per_second = 100"
                             " WHERE tenant_id = $1", ws.tenant.id)
    conv = await start_conversation(ws.tenant)
    long_body = "😀" * 3000 + " end"     # 3000 characters, 6004 UTF-16 units
    await post(ws.tenant, conv, "Hello, my parcel is late", long_body, author="visitor")
    await post(ws.tenant, conv, "Sorry to hear that!", author="bot")
    other = await start_conversation(ws.tenant)
    await post(ws.tenant, other, "Another question", author="visitor")
    assert await drain_telegram(ws.tenant, tg) == 4
    topics = sorted(tg.topics.values(), key=lambda t: t.thread_id)
    assert len(topics) == 2 and all(t.chat_id == CHAT for t in topics)
    first = [m["text"] for m in tg.sent(CHAT, topics[0].thread_id)]
    assert first[0] == "Visitor: Hello, my parcel is late"
    assert len(first) == 4 and all(utf16_units(t) <= 4096 for t in first[1:3])
    assert "".join(first[1:3]) == "Visitor: " + long_body
    assert first[3] == "Bot: Sorry to hear that!"
    assert [m["text"] for m in tg.sent(CHAT, topics[1].thread_id)] == ["Visitor: Another question"]
    rows = await owner_conn.fetch("SELECT conversation_id, thread_ref FROM parley.channel_threads"
                                  " WHERE destination_id = $1", uuid.UUID(channel["id"]))
    assert {r["conversation_id"]: r["thread_ref"] for r in rows} == {conv: str(topics[0].thread_id),
                                                                     other: str(topics[1].thread_id)}
    # A later message goes to the existing topic (no new one).
    await post(ws.tenant, conv, "Any news?", author="visitor")
    assert await drain_telegram(ws.tenant, tg) == 1
    assert len(tg.topics) == 2 and tg.sent(CHAT, topics[0].thread_id)[-1]["text"] == "Visitor: Any news?"


async def test_handoff_request_posts_claim_release_close_buttons(ws, tg):
    await _connect(ws)
    conv = await start_conversation(ws.tenant)
    await post(ws.tenant, conv, "A person please", author="visitor")
    async with await ws.tenant.tx("service") as conn:
        await conn.execute("SELECT parley.transition_conversation($1, 'human')", conv)
    stop = asyncio.Event()
    drainer = telegram_drainer(await ws.tenant.pool("jobs"), tg, poll_s=0.05)
    runner = asyncio.create_task(drainer.run(stop))
    try:
        last = await tg.wait_for(lambda: [m for m in tg.messages if m.get("reply_markup")])
    finally:
        stop.set()
        await runner
        await drainer.close()
    buttons = last[0]["reply_markup"]["inline_keyboard"][0]
    assert [(b["text"], b["callback_data"]) for b in buttons] == [("Claim", "claim"), ("Release to bot", "release"),
                                                                  ("Close", "close")]


async def test_chat_rate_bucket_spaces_posts_a_second_apart(ws, tg):
    await _connect(ws)
    # Three conversations (one conversation's queued messages would go as one post).
    for body in ("one", "two", "three"):
        await post(ws.tenant, await start_conversation(ws.tenant), body, author="visitor")
    stop = asyncio.Event()
    drainer = telegram_drainer(await ws.tenant.pool("jobs"), tg, poll_s=0.05)
    runner = asyncio.create_task(drainer.run(stop))
    try:
        await tg.wait_for(lambda: len(tg.sent(CHAT)) == 3, timeout=15)
    finally:
        stop.set()
        await runner
        await drainer.close()
    assert [m["text"] for m in tg.sent(CHAT)] == ["Visitor: one", "Visitor: two", "Visitor: three"]
    sends = [c.at for c in tg.calls if c.method == "sendMessage"]
    # The chat bucket holds one token refilled at 1/s: the posts are spread out, not sent at once
    # (tokens are taken in SQL before the send, so a loaded machine can bring two arrivals closer
    # than the second between their takes: the bound leaves room for that).
    assert all(b - a >= 0.5 for a, b in itertools.pairwise(sends))


async def test_429_retry_after_is_honoured_exactly(ws, tg, owner_conn):
    channel = await _connect(ws)
    conv = await start_conversation(ws.tenant)
    await post(ws.tenant, conv, "Hello", author="visitor")
    tg.fail_next("sendMessage", 429, retry_after=7)
    assert await drain_telegram(ws.tenant, tg) == 0
    (row,) = await _outbox(owner_conn, channel["id"])
    assert row["status"] == "pending" and row["last_status_code"] == 429
    held = await owner_conn.fetchval("SELECT extract(epoch FROM next_send_at - now()) FROM parley.outbox_destinations"
                                     " WHERE id = $1", uuid.UUID(channel["id"]))
    assert 6 < held <= 7
    # The topic made before the 429 is remembered: the retry will not make a second one.
    assert await owner_conn.fetchval("SELECT count(*) FROM parley.channel_threads WHERE destination_id = $1",
                                     uuid.UUID(channel["id"])) == 1
    assert await drain_telegram(ws.tenant, tg) == 0 and len(tg.topics) == 1 and tg.sent(CHAT) == []


async def test_403_bot_removed_pauses_the_channel(ws, tg, owner_conn):
    channel = await _connect(ws)
    tg.remove_bot(CHAT)
    conv = await start_conversation(ws.tenant)
    await post(ws.tenant, conv, "Hello", author="visitor")
    assert await drain_telegram(ws.tenant, tg) == 0
    (row,) = await _outbox(owner_conn, channel["id"])
    assert row["status"] == "failed" and row["last_status_code"] == 403
    status, listed = await ws.call("GET", "/api/channels/telegram")
    assert status == 200
    (shown,) = listed["channels"]
    assert shown["status"] == "paused" and "removed" in shown["paused_reason"]
    assert TOKEN not in str(listed) and TOKEN.split(":")[1] not in str(row)


async def test_a_tenant_cannot_see_or_delete_another_tenants_channel(ws, ws2, tg):
    channel = await _connect(ws)
    status, listed = await ws2.call("GET", "/api/channels/telegram")
    assert status == 200 and listed["channels"] == []
    status, body = await ws2.call("DELETE", f"/api/channels/telegram/{channel['id']}")
    assert status == 404, body
    # The same group under another tenant's own bot is that tenant's business, not a clash.
    other = await _connect(ws2, token=OTHER_TOKEN)
    assert other["id"] != channel["id"]
    status, listed = await ws.call("GET", "/api/channels/telegram")
    assert [c["id"] for c in listed["channels"]] == [channel["id"]]
    status, _ = await ws.call("DELETE", f"/api/channels/telegram/{channel['id']}")
    assert status == 204
    status, listed = await ws.call("GET", "/api/channels/telegram")
    assert listed["channels"] == []


def test_split_counts_utf16_units_and_never_cuts_a_character():
    assert split_text("short") == ["short"]
    text = "a" * 4095 + "😀" + "b"
    parts = split_text(text)
    assert parts == ["a" * 4095, "😀b"] and "".join(parts) == text
    words = ("word " * 2000).strip()
    parts = split_text(words)
    assert all(utf16_units(p) <= 4096 for p in parts) and "".join(parts) == words
    assert all(p.endswith(" ") for p in parts[:-1])
