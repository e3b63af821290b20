"""Visitor ↔ bot ↔ agent through the real server, real WebSockets and the real database."""
from __future__ import annotations

import uuid

from pyapp.widget import hooks
from support.realtime import SseClient, agent, visitor, widget_session


async def test_visitor_bot_and_agent_see_the_conversation(server, tenant, clients):
    ag = await agent(server, tenant["access_token"])
    clients.append(ag)
    sess = await widget_session(server, tenant["key"])
    assert sess["status"] == "bot" and sess["config"]["name"] == "Helper"
    started = await ag.expect_event("conversation_started")
    assert started["conversation_id"] == sess["conversation_id"]

    vis = await visitor(server, sess)
    clients.append(vis)
    assert vis.frames[0] == {"type": "ready", "conversation_id": sess["conversation_id"], "status": "bot"}
    await vis.send({"type": "message", "client_id": "c-1", "body": "Do you ship to Lisbon?"})
    mine = await vis.expect_message("Do you ship to Lisbon?", author="visitor")
    assert mine["client_id"] == "c-1" and "meta" not in mine and "author_id" not in mine
    bot = await vis.expect_message(author="bot")
    assert bot["body"] == hooks.PLACEHOLDER_REPLY and bot["id"] > mine["id"]

    seen = await ag.expect_event("message_added", lambda e: e["message"]["id"] == mine["id"])
    assert seen["conversation_id"] == sess["conversation_id"] and seen["message"]["author"] == "visitor"
    bot_ev = await ag.expect_event("message_added", lambda e: e["message"]["id"] == bot["id"])
    assert bot_ev["message"]["meta"]["placeholder"] is True  # staff see meta, visitors do not


async def test_handoff_claim_reply_release(server, tenant, clients):
    ag = await agent(server, tenant["access_token"])
    clients.append(ag)
    sess = await widget_session(server, tenant["key"])
    conv = sess["conversation_id"]
    vis = await visitor(server, sess)
    clients.append(vis)

    await vis.send({"type": "human"})
    assert (await vis.expect(type="status"))["status"] == "waiting_human"
    await ag.expect_event("human_requested", lambda e: e["conversation_id"] == conv)

    status, body = await server.call("POST", f"/api/conversations/{conv}/claim", token=tenant["access_token"])
    assert status == 200, body
    assert (await vis.expect(type="status"))["status"] == "human"
    await ag.expect_event("claimed", lambda e: e["conversation_id"] == conv)

    status, reply = await server.call("POST", f"/api/conversations/{conv}/reply", token=tenant["access_token"],
                                      json={"body": "Hi, Ana here. How can I help?", "client_id": "a-1"})
    assert status == 201, reply
    got = await vis.expect_message("Hi, Ana here. How can I help?", author="agent")
    assert got["id"] == reply["id"]

    # With a human on the conversation the bot stays quiet: the next thing after the
    # visitor's message is the agent's answer.
    await vis.send({"type": "message", "client_id": "c-2", "body": "My order is late"})
    await vis.expect_message("My order is late", author="visitor")
    await server.call("POST", f"/api/conversations/{conv}/reply", token=tenant["access_token"],
                      json={"body": "Let me check."})
    nxt = await vis.expect(type="message")
    assert nxt["message"]["author"] == "agent" and nxt["message"]["body"] == "Let me check."

    status, _ = await server.call("POST", f"/api/conversations/{conv}/release", token=tenant["access_token"])
    assert status == 200
    assert (await vis.expect(type="status"))["status"] == "bot"
    await vis.send({"type": "message", "client_id": "c-3", "body": "thanks"})
    await vis.expect_message("thanks", author="visitor")
    await vis.expect_message(author="bot")


async def test_typing_and_read_receipts_both_ways(server, tenant, clients):
    ag = await agent(server, tenant["access_token"])
    clients.append(ag)
    sess = await widget_session(server, tenant["key"])
    conv = sess["conversation_id"]
    vis = await visitor(server, sess)
    clients.append(vis)

    await vis.send({"type": "typing", "on": True})
    t = await ag.expect(type="typing")
    assert t == {"type": "typing", "author": "visitor", "on": True, "conversation_id": conv}
    await ag.send({"type": "typing", "conversation_id": conv, "on": True})
    assert await vis.expect(type="typing") == {"type": "typing", "author": "agent", "on": True}

    await vis.send({"type": "message", "client_id": "c-1", "body": "hello"})
    msg = await vis.expect_message("hello")
    await ag.send({"type": "read", "conversation_id": conv, "message_id": msg["id"]})
    r = await vis.expect(type="read")
    assert r["message_id"] == msg["id"] and r["author"] == "agent"
    await vis.send({"type": "read", "message_id": msg["id"]})
    r = await ag.expect(type="read")
    assert r["message_id"] == msg["id"] and r["conversation_id"] == conv


async def test_resend_with_same_client_id_is_idempotent(server, tenant, clients, owner_conn):
    sess = await widget_session(server, tenant["key"])
    vis = await visitor(server, sess)
    clients.append(vis)
    await vis.send({"type": "message", "client_id": "same", "body": "once"})
    first = await vis.expect_message("once", author="visitor")
    await vis.expect_message(author="bot")
    await vis.send({"type": "message", "client_id": "same", "body": "once"})
    again = await vis.expect_message("once", author="visitor")
    assert again["id"] == first["id"]
    n = await owner_conn.fetchval("SELECT count(*) FROM parley.messages WHERE conversation_id = $1 AND client_id = 'same'",
                                  uuid.UUID(sess["conversation_id"]))
    events = await owner_conn.fetchval("SELECT count(*) FROM parley.events WHERE message_id = $1", first["id"])
    assert (n, events) == (1, 1)


async def test_reconnect_with_last_seen_id_gets_what_was_missed(server, tenant, clients):
    sess = await widget_session(server, tenant["key"])
    conv = sess["conversation_id"]
    vis = await visitor(server, sess)
    await vis.send({"type": "message", "client_id": "c-1", "body": "first"})
    await vis.expect_message("first")
    bot = await vis.expect_message(author="bot")
    await vis.close()

    for text in ("while you were away 1", "while you were away 2"):
        status, _ = await server.call("POST", f"/api/conversations/{conv}/reply", token=tenant["access_token"],
                                      json={"body": text})
        assert status == 201
    back = await visitor(server, sess, last_seen_id=bot["id"])
    clients.append(back)
    m1 = await back.expect(type="message")
    m2 = await back.expect(type="message")
    assert [m1["message"]["body"], m2["message"]["body"]] == ["while you were away 1", "while you were away 2"]
    assert back.frames[0]["status"] == "human"  # the agent's reply claimed it


async def test_limits_over_give_error_and_system_notice_then_recover(server, tenant, clients, owner_conn):
    await owner_conn.execute("INSERT INTO parley.tenant_limits (tenant_id, msgs_per_min_ip) VALUES ($1, 2)",
                             uuid.UUID(tenant["tenant_id"]))
    sess = await widget_session(server, tenant["key"])
    vis = await visitor(server, sess)
    clients.append(vis)
    for i in range(2):
        await vis.send({"type": "message", "client_id": f"c-{i}", "body": f"m{i}"})
        await vis.expect_message(f"m{i}")
    await vis.send({"type": "message", "client_id": "c-over", "body": "one too many"})
    err = await vis.expect(type="error")
    assert err["code"] == "rate_limited" and err["client_id"] == "c-over"
    assert 1 <= err["retry_after"] <= 70  # the widget sends it again then (the last minute, in 10 s buckets)
    notice = await vis.expect_message(author="system")
    assert "too quickly" in notice["body"]

    # The window rolls over (the test moves it instead of waiting a minute).
    await owner_conn.execute("UPDATE parley.rate_counters SET window_start = window_start - interval '70 seconds'")
    await vis.send({"type": "message", "client_id": "c-over", "body": "one too many"})
    ok = await vis.expect_message("one too many", author="visitor")
    assert ok["client_id"] == "c-over"


async def test_open_conversation_limit_is_402_with_error_shape(server, tenant, owner_conn):
    await owner_conn.execute("INSERT INTO parley.tenant_limits (tenant_id, max_open_conversations) VALUES ($1, 1)",
                             uuid.UUID(tenant["tenant_id"]))
    await widget_session(server, tenant["key"])
    out = await widget_session(server, tenant["key"], expect=402)
    assert out["error"]["code"] == "plan_limit" and out["error"]["message"]


async def test_sse_stream_and_resume(server, tenant):
    sess = await widget_session(server, tenant["key"])
    conv = sess["conversation_id"]
    sse = await SseClient.connect(server, tenant["access_token"])
    try:
        assert sse.resp.status == 200 and sse.resp.headers["Content-Type"].startswith("text/event-stream")
        _status, reply = await server.call("POST", f"/api/conversations/{conv}/reply", token=tenant["access_token"],
                                           json={"body": "over SSE"})
        ev = await sse.expect_event("message_added", lambda d: d["message"]["id"] == reply["id"])
        assert int(ev["id"]) == ev["data"]["id"]
        last = int(ev["id"])
    finally:
        await sse.close()
    await server.call("POST", f"/api/conversations/{conv}/reply", token=tenant["access_token"], json={"body": "missed"})
    again = await SseClient.connect(server, tenant["access_token"], last_event_id=last)
    try:
        ev = await again.expect_event("message_added")
        assert ev["data"]["message"]["body"] == "missed" and int(ev["id"]) > last
    finally:
        await again.close()


async def test_sse_keepalive_comments(settings, signup):
    from support.server import start_server
    settings.extra["sse_keepalive"] = 0.1
    srv = await start_server(settings)
    try:
        owner = await signup(srv)
        sse = await SseClient.connect(srv, owner["access_token"])
        try:
            await sse.expect(lambda e: e.get("comment") == "keep-alive")
        finally:
            await sse.close()
    finally:
        await srv.close()


async def test_sse_needs_a_member(server):
    status, body = await server.call("GET", "/api/events")
    assert status == 401 and body["error"]["code"] == "unauthenticated"


async def test_visitor_message_reopens_a_closed_conversation_with_the_bot(server, tenant, clients):
    sess = await widget_session(server, tenant["key"])
    conv = sess["conversation_id"]
    vis = await visitor(server, sess)
    clients.append(vis)
    status, _ = await server.call("POST", f"/api/conversations/{conv}/close", token=tenant["access_token"])
    assert status == 200
    assert (await vis.expect(type="status"))["status"] == "closed"
    await vis.send({"type": "message", "client_id": "c-1", "body": "one more thing"})
    assert (await vis.expect(type="status"))["status"] == "bot"
    await vis.expect_message("one more thing", author="visitor")
    await vis.expect_message(author="bot")
