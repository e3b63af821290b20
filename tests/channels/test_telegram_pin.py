"""System texts marked pin (sql/49_system_texts.sql: the handoff text ships pinned) are pinned in the
conversation's forum topic after they are posted (pinChatMessage against the fake Bot API on
127.0.0.1), alone in their post; other messages are not pinned; a pin Telegram refuses leaves the
text delivered, with the refusal noted on its attempt."""
import uuid

from support.fakes.telegram import CHAT
from support.outbox import connect_telegram, drain_telegram, post, start_conversation


async def _say(ws, conv, kind="handoff"):
    async with await ws.tenant.tx("service") as conn:
        said = await conn.fetchval("SELECT parley.post_system_text($1, $2, 'en')", conv, kind)
    assert said["posted"] is True, said
    return said


async def test_a_pinned_system_text_is_pinned_in_its_topic(ws, tg, owner_conn):
    await connect_telegram(ws, owner_conn)
    conv, other = await start_conversation(ws.tenant), await start_conversation(ws.tenant)
    await post(ws.tenant, conv, "I want a person", author="visitor")
    handoff = await _say(ws, conv)
    await post(ws.tenant, conv, "Still there?", author="visitor")
    await post(ws.tenant, other, "Hello", author="visitor")
    assert await drain_telegram(ws.tenant, tg) == 4
    topic = next(t for t in tg.topics.values() if any(m["text"] == "Visitor: I want a person"
                                                      for m in tg.sent(CHAT, t.thread_id)))
    texts = [m["text"] for m in tg.sent(CHAT, topic.thread_id)]
    # Not coalesced with the messages around it: the pinned post is the text alone.
    assert texts == ["Visitor: I want a person", f"System: {handoff['body']}", "Visitor: Still there?"]
    (pinned,) = [m for m in tg.sent(CHAT, topic.thread_id) if m["text"] == f"System: {handoff['body']}"]
    assert tg.pinned == {(CHAT, topic.thread_id): [pinned["message_id"]]}
    (call,) = [c for c in tg.calls if c.method == "pinChatMessage"]
    assert call.params["chat_id"] == CHAT and call.params["disable_notification"] is True


async def test_a_text_not_marked_pin_is_not_pinned_and_a_refused_pin_is_noted(ws, tg, owner_conn):
    channel = await connect_telegram(ws, owner_conn)
    conv = await start_conversation(ws.tenant)
    status, _ = await ws.call("PUT", "/api/system-texts/handoff/en", json={
        "body": "A person will answer.", "store": True, "to_widget": True, "to_channels": True, "pin": False})
    assert status == 200
    await _say(ws, conv)
    assert await drain_telegram(ws.tenant, tg) == 1
    assert [m["text"] for m in tg.sent(CHAT)] == ["System: A person will answer."] and tg.pinned == {}
    status, _ = await ws.call("PUT", "/api/system-texts/handoff/en", json={
        "body": "A person will answer.", "store": True, "to_widget": True, "to_channels": True, "pin": True})
    assert status == 200
    tg.fail_next("pinChatMessage", 400, description="Bad Request: not enough rights to manage pinned messages")
    await _say(ws, conv)
    assert await drain_telegram(ws.tenant, tg) == 1
    assert len(tg.sent(CHAT)) == 2 and tg.pinned == {}
    row = await owner_conn.fetchrow("SELECT outcome, error FROM parley.outbox_attempts WHERE destination_id = $1"
                                    " ORDER BY id DESC LIMIT 1", uuid.UUID(channel["id"]))
    assert row["outcome"] == "delivered" and "not pinned" in row["error"] and "rights" in row["error"]
