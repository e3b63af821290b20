"""Topics follow the conversation (against the fake Bot API on 127.0.0.1): a topic is named after the
visitor once a lead gives their name, after the codename once an agent sets one (codename wins),
closed after the "Closed." post when the conversation closes and reopened before the "Reopened."
post; all through the outbox in the topic's order. The codename's own rules: members only, the text
rule, never shown to the visitor."""
import asyncpg
import pytest
from support.fakes.telegram import CHAT
from support.outbox import drain_telegram, post, start_conversation


@pytest.fixture
async def channel(ws, tg, owner_conn):
    status, body = await ws.call("POST", "/api/channels/telegram",
                                 json={"name": "Support", "bot_token": "123456789:AAH-fake-token-for-tests-0123456789abcd",
                                       "chat_id": CHAT})
    assert status == 201, body
    # The chat's one post a second has its own test: here posts go as fast as they are drained.
    await owner_conn.execute("UPDATE parley.outbox_rate_buckets SET capacity = 100, tokens = 100, per_second = 100"
                             " WHERE tenant_id = $1", ws.tenant.id)
    return body


async def _as_service(ws, sql, *args):
    async with await ws.tenant.tx("service") as conn:
        return await conn.fetchval(sql, *args)


def _topic_calls(tg):
    return [(c.method, c.params.get("name") or c.params.get("text")) for c in tg.calls
            if c.method in ("createForumTopic", "editForumTopic", "closeForumTopic", "reopenForumTopic", "sendMessage")]


async def test_topic_is_renamed_closed_and_reopened_with_the_conversation(ws, tg, channel, owner_conn):
    conv = await start_conversation(ws.tenant)
    await post(ws.tenant, conv, "Hello", author="visitor")
    assert await drain_telegram(ws.tenant, tg) == 1
    (topic,) = tg.topics.values()
    assert topic.name == f"Conversation {str(conv)[:8]}"
    await _as_service(ws, "SELECT 1 FROM parley.capture_lead($1, 'Ana Silva', 'ana@example.com', NULL)", conv)
    await _as_service(ws, "SELECT 1 FROM parley.set_codename($1, 'Falcon')", conv)
    await _as_service(ws, "SELECT 1 FROM parley.transition_conversation($1, 'close')", conv)
    await _as_service(ws, "SELECT 1 FROM parley.transition_conversation($1, 'reopen')", conv)
    await post(ws.tenant, conv, "Still there?", author="visitor")
    tg.calls.clear()
    assert await drain_telegram(ws.tenant, tg) == 5
    assert len(tg.topics) == 1 and topic.name == "Falcon" and not topic.closed
    # Bodies are built when first taken, so the lead's delivery already knows the codename: one
    # rename, to the codename, before the lead's post.
    assert _topic_calls(tg) == [
        ("editForumTopic", "Falcon"),
        ("sendMessage", "The visitor left their contact details."),
        ("sendMessage", "Codename: Falcon."),
        ("sendMessage", "Closed."),
        ("closeForumTopic", None),
        ("reopenForumTopic", None),
        ("sendMessage", "Reopened."),
        ("sendMessage", "Visitor: Still there?"),
    ]
    assert all(c.params.get("message_thread_id") == topic.thread_id for c in tg.calls)
    assert await owner_conn.fetchval("SELECT title FROM parley.channel_threads WHERE conversation_id = $1",
                                     conv) == "Falcon"
    # Codename removed: the visitor's name again.
    await _as_service(ws, "SELECT 1 FROM parley.set_codename($1, '')", conv)
    tg.calls.clear()
    assert await drain_telegram(ws.tenant, tg) == 1
    assert _topic_calls(tg) == [("editForumTopic", "Ana Silva"), ("sendMessage", "Codename removed.")]
    # Any other 400 (the topic deleted by hand, say) stops that delivery and shows it.
    tg.fail_next("closeForumTopic", 400, description="Bad Request: message thread not found")
    await _as_service(ws, "SELECT 1 FROM parley.transition_conversation($1, 'close')", conv)
    assert await drain_telegram(ws.tenant, tg) == 0  # a plain 400 is a failed delivery, shown
    row = await owner_conn.fetchrow("SELECT status, last_status_code FROM parley.outbox WHERE conversation_id = $1"
                                    " ORDER BY id DESC LIMIT 1", conv)
    assert (row["status"], row["last_status_code"]) == ("failed", 400)


async def test_topic_not_modified_counts_as_done(ws, tg, channel):
    """Closed by hand in Telegram already: Telegram's TOPIC_NOT_MODIFIED counts as done."""
    conv = await start_conversation(ws.tenant)
    await post(ws.tenant, conv, "Hello", author="visitor")
    await drain_telegram(ws.tenant, tg)
    tg.fail_next("closeForumTopic", 400, description="Bad Request: TOPIC_NOT_MODIFIED")
    await _as_service(ws, "SELECT 1 FROM parley.transition_conversation($1, 'close')", conv)
    assert await drain_telegram(ws.tenant, tg) == 1


async def test_codename_rules(ws, ws2, tg, channel, owner_conn):
    conv = await start_conversation(ws.tenant)
    with pytest.raises(asyncpg.PostgresError) as bad:
        await _as_service(ws, "SELECT 1 FROM parley.set_codename($1, $2)", conv, "Fal\u202econ")
    assert "invalid_codename" in str(bad.value.detail or bad.value)
    with pytest.raises(asyncpg.PostgresError):
        await _as_service(ws, "SELECT 1 FROM parley.set_codename($1, $2)", conv, "x" * 65)
    # A visitor (even of this very conversation) cannot name it.
    pool = await ws.tenant.pool("app")
    from pyapp.db import Actor, tenant_tx
    with pytest.raises(asyncpg.PostgresError):
        async with tenant_tx(pool, Actor(tenant_id=ws.tenant.id, kind="visitor", actor_id=str(conv))) as conn:
            await conn.execute("SELECT 1 FROM parley.set_codename($1, 'Mine')", conv)
    await _as_service(ws, "SELECT 1 FROM parley.set_codename($1, 'Falcon')", conv)
    # Setting the same codename again writes no second event.
    await _as_service(ws, "SELECT 1 FROM parley.set_codename($1, ' Falcon ')", conv)
    kinds = await owner_conn.fetch("SELECT kind, parley.visitor_frame(kind, data, NULL) AS frame FROM parley.events"
                                   " WHERE conversation_id = $1 AND kind = 'codename_set'", conv)
    assert [(r["kind"], r["frame"]) for r in kinds] == [("codename_set", None)]
    assert await owner_conn.fetchval("SELECT codename FROM parley.conversations WHERE id = $1", conv) == "Falcon"
    # Another tenant cannot name this tenant's conversation.
    with pytest.raises(asyncpg.PostgresError) as other:
        await _as_service(ws2, "SELECT 1 FROM parley.set_codename($1, 'Hijack')", conv)
    assert "not_found" in str(other.value.detail or other.value) or "404" in str(other.value)
    assert await owner_conn.fetchval("SELECT codename FROM parley.conversations WHERE id = $1", conv) == "Falcon"


async def test_codename_through_the_api(ws, ws2, tg, channel):
    conv = await start_conversation(ws.tenant)
    status, body = await ws.call("PUT", f"/api/conversations/{conv}/codename", json={"codename": "Owl"})
    assert status == 200 and body["codename"] == "Owl", body
    status, body = await ws.call("GET", f"/api/conversations/{conv}")
    assert body["conversation"]["codename"] == "Owl"
    status, body = await ws.call("PUT", f"/api/conversations/{conv}/codename", json={"codename": "O\u202ewl"})
    assert status == 422 and body["error"]["code"] == "invalid_codename"
    status, body = await ws.call("PUT", f"/api/conversations/{conv}/codename", json={"codename": "x" * 65})
    assert status == 422
    status, body = await ws2.call("PUT", f"/api/conversations/{conv}/codename", json={"codename": "Hijack"})
    assert status == 404
