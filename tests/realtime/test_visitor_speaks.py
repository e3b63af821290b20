"""Conversations start when the visitor speaks: page views write nothing; the first message, the
lead form or "talk to a person" starts the conversation on the socket, under the tenant's and the
per-address limits; when a limit is hit the visitor is told and may leave a lead instead."""
from __future__ import annotations

import dataclasses
import time
import uuid

import aiohttp
import asyncpg
import jwt
from pyapp.db import Actor, create_pool, tenant_tx
from pyapp.widget.tokens import _visitor_key
from support.realtime import ORIGIN, Client, agent, visitor, widget_session
from support.server import TEST_SECRET, start_server


async def _count(owner_conn, tenant) -> int:
    return await owner_conn.fetchval("SELECT count(*) FROM parley.conversations WHERE tenant_id = $1",
                                     uuid.UUID(tenant["tenant_id"]))


async def _page_view(server, tenant, **kw) -> dict:
    return await widget_session(server, tenant["key"], start=False, **kw)


async def test_page_views_write_nothing_and_the_first_message_starts_the_conversation(
        server, tenant, owner_conn, clients):
    views = [await _page_view(server, tenant) for _ in range(5)]
    assert await _count(owner_conn, tenant) == 0
    assert all(v["conversation_id"] is None and v["status"] is None for v in views)
    assert len({v["visitor_id"] for v in views}) == 5
    # The same visitor comes back on another page: same visitor id, still nothing written.
    status, again = await server.call("POST", "/api/widget/sessions", headers={"Origin": ORIGIN}, json={
        "chatbot_key": tenant["key"], "visitor_id": views[0]["visitor_id"]})
    assert status == 201 and again["visitor_id"] == views[0]["visitor_id"] and again["conversation_id"] is None

    watcher = await agent(server, tenant["access_token"])
    clients.append(watcher)
    v = await Client.connect(server.base_url, "/ws/visitor")
    clients.append(v)
    await v.send({"type": "hello", "token": again["token"], "last_seen_id": 0,
                  "page_url": "https://shop.example/pricing?x=1", "locale": "de-DE"})
    ready = await v.expect(type="ready")
    assert ready["conversation_id"] is None and ready["status"] is None
    await v.send({"type": "typing", "on": True})  # typing is not speaking
    await v.send({"type": "ping"})
    await v.expect(type="pong")
    assert await _count(owner_conn, tenant) == 0

    await v.send({"type": "message", "client_id": "c1", "body": "Hello there"})
    started = await v.expect(type="conversation")
    assert started["status"] == "bot" and started["token"]
    await v.expect_message("Hello there", author="visitor")
    await v.expect_message(author="bot")
    event = await watcher.expect_event("conversation_started")
    assert event["conversation_id"] == started["conversation_id"]
    row = await owner_conn.fetchrow("SELECT * FROM parley.conversations WHERE id = $1",
                                    uuid.UUID(started["conversation_id"]))
    assert str(row["visitor_id"]) == views[0]["visitor_id"]
    assert row["page_url"] == "https://shop.example/pricing?x=1" and row["locale"] == "de-DE"
    assert await _count(owner_conn, tenant) == 1

    # The new token is the conversation's: a reconnect replays it; a reload resumes it.
    claims = jwt.decode(started["token"], options={"verify_signature": False})
    assert claims["sub"] == started["conversation_id"] and claims["vid"] == views[0]["visitor_id"]
    v2 = await visitor(server, {"token": started["token"]})
    clients.append(v2)
    assert (await v2.expect_message("Hello there"))["author"] == "visitor"
    resumed = await widget_session(server, tenant["key"], conversation_id=started["conversation_id"], start=False)
    assert resumed["conversation_id"] == started["conversation_id"] and resumed["visitor_id"] == views[0]["visitor_id"]


async def test_talk_to_a_person_and_the_lead_form_start_a_conversation(server, tenant, owner_conn, clients):
    for frame in ({"type": "human"}, {"type": "lead", "name": "Ada", "email": "ada@example.com"}):
        view = await _page_view(server, tenant)
        v = await visitor(server, view)
        clients.append(v)
        await v.send(frame)
        started = await v.expect(type="conversation")
        conv = uuid.UUID(started["conversation_id"])
        if frame["type"] == "human":
            assert (await v.expect(type="status"))["status"] == "waiting_human"
        else:
            lead = await owner_conn.fetchrow("SELECT * FROM parley.leads WHERE conversation_id = $1", conv)
            for _ in range(50):  # the lead commits after the conversation frame is sent
                if lead is not None:
                    break
                await v.send({"type": "ping"})
                await v.expect(type="pong")
                lead = await owner_conn.fetchrow("SELECT * FROM parley.leads WHERE conversation_id = $1", conv)
            assert lead["email"] == "ada@example.com"
    assert await _count(owner_conn, tenant) == 2


async def test_a_visitor_without_a_conversation_reads_nothing(server, tenant, owner_conn, clients, settings):
    spoke = await widget_session(server, tenant["key"])  # someone else's conversation
    v = await visitor(server, spoke)
    clients.append(v)
    await v.send({"type": "message", "client_id": "x", "body": "private words"})
    await v.expect_message("private words")
    view = await _page_view(server, tenant)
    silent = await visitor(server, view)
    clients.append(silent)
    for frame in ({"type": "rating", "score": 5}, {"type": "feedback", "message_id": 1, "value": "up"}):
        await silent.send(frame)
        assert (await silent.expect(type="error"))["code"] == "no_conversation"
    assert all("private words" not in str(f) for f in silent.frames)
    # In SQL: a visitor transaction without a conversation sees no conversation, message or lead.
    pool = await create_pool(settings.app_url, min_size=1, max_size=1)
    try:
        actor = Actor(uuid.UUID(tenant["tenant_id"]), kind="visitor", actor_id=None, min_role="visitor")
        async with tenant_tx(pool, actor) as conn:
            assert await conn.fetchval("SELECT count(*) FROM parley.conversations") == 0
            assert await conn.fetchval("SELECT count(*) FROM parley.leads") == 0
        try:
            async with tenant_tx(pool, actor) as conn:
                await conn.fetch("SELECT * FROM parley.visible_messages($1, 0)", uuid.UUID(spoke["conversation_id"]))
        except asyncpg.PostgresError as exc:
            assert exc.sqlstate in ("PT403", "PT404")
        else:
            raise AssertionError("a visitor without a conversation read one")
    finally:
        await pool.close()


async def test_old_conversation_tokens_still_work(server, tenant, clients):
    sess = await widget_session(server, tenant["key"])
    now = int(time.time())
    claims = {"sub": sess["conversation_id"], "tid": tenant["tenant_id"], "cb": str(tenant["chatbot_id"]),
              "pk": tenant["key"], "aud": "parley:visitor", "iat": now, "exp": now + 600, "jti": "old-style"}
    v1 = jwt.encode(claims, _visitor_key(TEST_SECRET), algorithm="HS256")
    v = await visitor(server, {"token": v1})
    clients.append(v)
    await v.send({"type": "message", "client_id": "old", "body": "still here"})
    await v.expect_message("still here")
    status, fresh = await server.call("POST", "/api/widget/sessions/refresh", json={"token": v1},
                                      headers={"Origin": ORIGIN})
    assert status == 201 and fresh["conversation_id"] == sess["conversation_id"] and fresh["visitor_id"]
    # A version-2 token must name its visitor; a version-1 token its conversation.
    for bad in ({**claims, "ver": 2}, {k: v for k, v in claims.items() if k != "sub"}, {**claims, "ver": 3}):
        ws = await Client.connect(server.base_url, "/ws/visitor")
        clients.append(ws)
        await ws.send({"type": "hello", "token": jwt.encode(bad, _visitor_key(TEST_SECRET), algorithm="HS256")})
        assert (await ws.expect(type="error"))["code"] == "invalid_token"


async def _limit(owner_conn, tenant, **cols) -> None:
    names = ", ".join(cols)
    params = ", ".join(f"${i + 2}" for i in range(len(cols)))
    await owner_conn.execute(f"INSERT INTO parley.tenant_limits (tenant_id, {names}) VALUES ($1, {params})",
                             uuid.UUID(tenant["tenant_id"]), *cols.values())


async def _speak(server, tenant, clients, body="hi", headers=None) -> tuple[Client, dict]:
    status, view = await server.call("POST", "/api/widget/sessions", json={"chatbot_key": tenant["key"]},
                                     headers={"Origin": ORIGIN, **(headers or {})})
    assert status == 201, view  # a page view is never refused for a limit: the widget always renders
    http = aiohttp.ClientSession()
    try:
        ws = await http.ws_connect(server.base_url.replace("http", "ws", 1) + "/ws/visitor", heartbeat=None,
                                   headers=headers or {})
    except BaseException:
        await http.close()
        raise
    v = Client(ws, http)
    clients.append(v)
    await v.send({"type": "hello", "token": view["token"]})
    await v.expect(type="ready")
    await v.send({"type": "message", "client_id": "m", "body": body})
    return v, await v.expect(lambda f: f["type"] in ("conversation", "error"))


async def test_tenant_limit_reached_the_widget_says_so_and_takes_a_lead(server, tenant, owner_conn, clients):
    await _limit(owner_conn, tenant, max_open_conversations=1)
    _, first = await _speak(server, tenant, clients)
    assert first["type"] == "conversation"
    v, refused = await _speak(server, tenant, clients)
    assert refused == {**refused, "type": "error", "code": "plan_limit", "client_id": "m"}
    notice = await v.expect_message(author="system")
    assert notice["id"] is None and notice["notice"] == "plan_limit"
    assert (await v.expect(type="lead_request"))["reason"] == "plan_limit"
    await v.send({"type": "lead", "name": "Grace", "email": "grace@example.com", "source": "limit"})
    await v.expect(lambda f: f["type"] in ("lead_saved", "error"), type="lead_saved")
    lead = await owner_conn.fetchrow("SELECT * FROM parley.leads WHERE tenant_id = $1 AND email = $2",
                                     uuid.UUID(tenant["tenant_id"]), "grace@example.com")
    assert lead["conversation_id"] is None and lead["chatbot_id"] == tenant["chatbot_id"]
    assert lead["custom"] == {"source": "limit"}
    assert await _count(owner_conn, tenant) == 1
    await v.send({"type": "lead", "email": "not-an-email"})
    assert (await v.expect(type="error"))["code"] == "invalid_email"


async def test_one_address_cannot_fill_the_tenant(server, tenant, owner_conn, clients, settings):
    await _limit(owner_conn, tenant, max_open_conversations_per_ip=2)
    proxied = dataclasses.replace(settings, extra={**settings.extra, "trust_proxy": True})
    srv = await start_server(proxied)
    try:
        attacker = {"X-Forwarded-For": "203.0.113.7"}
        for _ in range(2):
            _, ok = await _speak(srv, tenant, clients, headers=attacker)
            assert ok["type"] == "conversation"
        v, refused = await _speak(srv, tenant, clients, headers=attacker)
        assert refused["code"] == "too_many_conversations"
        assert (await v.expect(type="lead_request"))["reason"] == "too_many_conversations"
        # Another address still starts conversations.
        _, other = await _speak(srv, tenant, clients, headers={"X-Forwarded-For": "198.51.100.9"})
        assert other["type"] == "conversation"
        # Closing one of the attacker's frees a place for that address.
        conv = await owner_conn.fetchval("SELECT id FROM parley.conversations WHERE ip = '203.0.113.7' LIMIT 1")
        await owner_conn.execute("UPDATE parley.conversations SET status = 'closed', closed_at = now() WHERE id = $1",
                                 conv)
        _, again = await _speak(srv, tenant, clients, headers=attacker)
        assert again["type"] == "conversation", again
    finally:
        for c in clients:  # this server's sockets first, or its shutdown waits for them
            await c.close()
        clients.clear()
        await srv.close()


async def test_conversation_starts_per_chatbot_are_rate_limited(server, tenant, owner_conn, clients):
    await _limit(owner_conn, tenant, conversations_per_min_chatbot=2)
    for _ in range(2):
        _, ok = await _speak(server, tenant, clients)
        assert ok["type"] == "conversation"
    v, refused = await _speak(server, tenant, clients)
    assert refused["code"] == "rate_limited"
    assert (await v.expect_message(author="system"))["notice"] == "rate_limited"
    # Page views are still fine, and nothing was written for the refused start.
    await _page_view(server, tenant)
    assert await _count(owner_conn, tenant) == 2


async def test_leave_lead_is_for_visitors_without_a_conversation(server, tenant, settings):
    pool = await create_pool(settings.app_url, min_size=1, max_size=1)
    tid = uuid.UUID(tenant["tenant_id"])
    sess = await widget_session(server, tenant["key"])
    try:
        for actor in (Actor(tid, kind="visitor", actor_id=sess["conversation_id"], min_role="visitor"),
                      Actor(tid, kind="service", actor_id="test")):
            try:
                async with tenant_tx(pool, actor) as conn:
                    await conn.execute("SELECT parley.leave_lead($1, 'x', 'x@example.com', NULL)",
                                       tenant["chatbot_id"])
            except asyncpg.PostgresError as exc:
                assert exc.sqlstate == "PT403"
            else:
                raise AssertionError(f"{actor.kind} left a conversation-less lead")
    finally:
        await pool.close()


async def test_the_lead_form_is_asked_again_on_resume_until_filled_in(server, tenant, owner_conn, clients):
    await owner_conn.execute("UPDATE parley.chatbots SET config = $2 WHERE id = $1", tenant["chatbot_id"],
                             {"lead_capture": {"mode": "after_messages", "after": 1}})
    sess = await widget_session(server, tenant["key"])
    v = await visitor(server, sess)
    clients.append(v)
    await v.send({"type": "message", "client_id": "c-1", "body": "hi"})
    await v.expect(type="lead_request")
    await v.close()
    clients.remove(v)
    # A reload (replay from 0) and a reconnect (resume after the last message) both ask again.
    for last_seen in (0, 10**9):
        again = await visitor(server, sess, last_seen_id=last_seen)
        clients.append(again)
        assert (await again.expect(type="lead_request"))["fields"] == ["name", "email"]
    await again.send({"type": "lead", "name": "Ana", "email": "ana@example.test"})
    await again.send({"type": "ping"})
    await again.expect(type="pong")
    filled = await visitor(server, sess)
    clients.append(filled)
    await filled.send({"type": "ping"})
    await filled.expect(type="pong")
    assert not any(f["type"] == "lead_request" for f in filled.frames)


async def _closed_conversation(server, tenant, clients, owner_conn):
    sess = await widget_session(server, tenant["key"])
    v = await visitor(server, sess)
    clients.append(v)
    await v.send({"type": "message", "client_id": "first", "body": "first question"})
    await v.expect_message("first question")
    await v.expect_message(author="bot")  # the reply is in before the close
    status, out = await server.call("POST", f"/api/conversations/{sess['conversation_id']}/close",
                                    token=tenant["access_token"])
    assert status == 200, out
    await v.expect(type="status", status="closed")
    return sess, v


async def test_writing_after_a_rated_close_starts_a_new_conversation(server, tenant, owner_conn, clients):
    sess, v = await _closed_conversation(server, tenant, clients, owner_conn)
    old = uuid.UUID(sess["conversation_id"])
    await owner_conn.execute("INSERT INTO parley.conversation_ratings (tenant_id, conversation_id, chatbot_id, score)"
                             " VALUES ($1, $2, $3, 5)", uuid.UUID(tenant["tenant_id"]), old, tenant["chatbot_id"])
    await v.send({"type": "message", "client_id": "again", "body": "one more thing"})
    new = await v.expect(type="conversation")
    assert new["conversation_id"] != sess["conversation_id"] and new["status"] == "bot"
    echo = await v.expect_message("one more thing")
    assert echo["conversation_id"] == new["conversation_id"]
    await v.expect_message(author="bot")  # the socket now follows the new conversation
    rows = {r["id"]: r for r in await owner_conn.fetch(
        "SELECT id, status, visitor_id FROM parley.conversations WHERE tenant_id = $1", uuid.UUID(tenant["tenant_id"]))}
    assert rows[old]["status"] == "closed"
    assert rows[uuid.UUID(new["conversation_id"])]["visitor_id"] == rows[old]["visitor_id"]  # the same visitor
    # The agent sees the visitor's other conversations (and nobody else's).
    await widget_session(server, tenant["key"])  # another visitor
    status, out = await server.call("GET", f"/api/conversations/{new['conversation_id']}",
                                    token=tenant["access_token"])
    assert status == 200, out
    assert [(c["id"], c["status"], c["messages"]) for c in out["visitor_conversations"]] == [(str(old), "closed", 2)]  # question + reply


async def test_reopen_only_within_the_window(server, tenant, owner_conn, clients):
    sess, v = await _closed_conversation(server, tenant, clients, owner_conn)
    conv = uuid.UUID(sess["conversation_id"])
    # Within the default window (30 minutes): the same conversation continues.
    await v.send({"type": "message", "client_id": "soon", "body": "back again"})
    await v.expect_message("back again")
    assert await owner_conn.fetchval("SELECT status FROM parley.conversations WHERE id = $1", conv) == "bot"
    assert not any(f["type"] == "conversation" for f in v.frames)
    # Closed again, an hour ago: too long ago, a new conversation.
    status, _ = await server.call("POST", f"/api/conversations/{conv}/close", token=tenant["access_token"])
    assert status == 200
    await owner_conn.execute("UPDATE parley.conversations SET closed_at = now() - interval '1 hour' WHERE id = $1",
                             conv)
    await v.send({"type": "message", "client_id": "late", "body": "much later"})
    assert (await v.expect(type="conversation"))["conversation_id"] != str(conv)


async def test_a_window_of_zero_never_reopens(server, tenant, owner_conn, clients):
    status, out = await server.call("PATCH", f"/api/chatbots/{tenant['chatbot_id']}", token=tenant["access_token"],
                                    json={"config": {"reopen_window_minutes": 0}})
    assert status == 200, out
    sess, v = await _closed_conversation(server, tenant, clients, owner_conn)
    await v.send({"type": "message", "client_id": "soon", "body": "back at once"})
    assert (await v.expect(type="conversation"))["conversation_id"] != sess["conversation_id"]
