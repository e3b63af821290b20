"""POST /api/widget/sessions and /refresh: origins, CORS, resume, tokens, and who may read what."""
from __future__ import annotations

import time
import uuid

import jwt
from pyapp.widget.tokens import decode_visitor_token, issue_visitor_token
from support.realtime import ORIGIN, Client, create_chatbot, visitor, widget_session
from support.server import TEST_SECRET


async def test_allowed_origin_gets_cors_and_a_short_lived_token(server, tenant):
    headers = {"Origin": ORIGIN}
    async with server.http.post(server.base_url + "/api/widget/sessions", headers=headers,
                                json={"chatbot_key": tenant["key"]}) as resp:
        body = await resp.json()
        assert resp.status == 201, body
        assert resp.headers["Access-Control-Allow-Origin"] == ORIGIN
        assert "Origin" in resp.headers["Vary"]
    claims = jwt.decode(body["token"], options={"verify_signature": False})
    assert claims["aud"] == "parley:visitor" and claims["exp"] - claims["iat"] <= 900
    assert jwt.get_unverified_header(body["token"])["alg"] == "HS256"
    # A page view has no conversation: the token names the chatbot and the visitor only.
    assert "sub" not in claims and claims["tid"] == tenant["tenant_id"] and claims["ver"] == 2
    assert body["conversation_id"] is None and body["status"] is None
    assert claims["vid"] == body["visitor_id"]
    assert set(body["config"]) >= {"name", "greeting", "language", "starters", "branding", "lead_capture",
                                   "nudges", "max_nudges"}

    async with server.http.options(server.base_url + "/api/widget/sessions", headers={
            "Origin": ORIGIN, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type"}) as resp:
        assert resp.status == 204
        assert resp.headers["Access-Control-Allow-Origin"] == ORIGIN
        assert "POST" in resp.headers["Access-Control-Allow-Methods"]
        assert "Content-Type" in resp.headers["Access-Control-Allow-Headers"]


async def test_origin_refused(server, tenant):
    async with server.http.post(server.base_url + "/api/widget/sessions", headers={"Origin": "https://evil.example"},
                                json={"chatbot_key": tenant["key"]}) as resp:
        body = await resp.json()
        assert resp.status == 403 and body["error"]["code"] == "origin_not_allowed"
        assert "Access-Control-Allow-Origin" not in resp.headers
    # No Origin at all cannot prove anything against a non-empty list either.
    out = await widget_session(server, tenant["key"], origin=None, expect=403)
    assert out["error"]["code"] == "origin_not_allowed"


async def test_unknown_key_and_bad_body(server):
    out = await widget_session(server, "pk_" + "x" * 40, expect=404)
    assert out["error"]["code"] == "unknown_chatbot"
    status, body = await server.call("POST", "/api/widget/sessions", json={"chatbot_key": 5},
                                     headers={"Origin": ORIGIN})
    assert status == 422 and body["error"]["code"] == "validation_failed"


async def test_resume_and_refresh(server, tenant, clients):
    first = await widget_session(server, tenant["key"])
    again = await widget_session(server, tenant["key"], conversation_id=first["conversation_id"])
    assert again["conversation_id"] == first["conversation_id"] and again["token"] != first["token"]

    status, fresh = await server.call("POST", "/api/widget/sessions/refresh", json={"token": first["token"]},
                                      headers={"Origin": ORIGIN})
    assert status == 201, fresh
    assert fresh["conversation_id"] == first["conversation_id"]
    assert decode_visitor_token(TEST_SECRET, fresh["token"]).conversation_id == uuid.UUID(first["conversation_id"])

    # Expired for less than an hour: still refreshable; longer: not.
    claims = decode_visitor_token(TEST_SECRET, first["token"])
    kwargs = dict(tenant_id=claims.tenant_id, chatbot_id=claims.chatbot_id, conversation_id=claims.conversation_id,
                  public_key=claims.public_key, visitor_id=claims.visitor_id)
    old = _token_at(time.time() - 1800, **kwargs)
    status, _ = await server.call("POST", "/api/widget/sessions/refresh", json={"token": old}, headers={"Origin": ORIGIN})
    assert status == 201
    ancient = _token_at(time.time() - 4 * 3600, **kwargs)
    status, body = await server.call("POST", "/api/widget/sessions/refresh", json={"token": ancient},
                                     headers={"Origin": ORIGIN})
    assert status == 401 and body["error"]["code"] == "invalid_token"

    # An expired token does not open a socket.
    ws = await Client.connect(server.base_url, "/ws/visitor")
    clients.append(ws)
    await ws.send({"type": "hello", "token": old, "last_seen_id": 0})
    assert (await ws.expect(type="error"))["code"] == "invalid_token"
    assert await ws.expect_closed() == 4401


def _token_at(issued: float, **kw) -> str:
    from pyapp.widget import tokens as widget_api
    real = widget_api.time.time
    widget_api.time.time = lambda: issued
    try:
        return issue_visitor_token(TEST_SECRET, **kw)[0]
    finally:
        widget_api.time.time = real


async def test_resume_of_a_foreign_conversation_starts_a_new_one(server, tenant, signup, owner_conn):
    other = await signup(server)
    other_bot = await create_chatbot(owner_conn, other["tenant_id"])
    theirs = await widget_session(server, other_bot["key"])
    mine = await widget_session(server, tenant["key"], conversation_id=theirs["conversation_id"])
    assert mine["conversation_id"] != theirs["conversation_id"]


async def test_visitor_token_cannot_read_or_post_another_conversation(server, tenant, clients, settings):
    a = await widget_session(server, tenant["key"])
    b = await widget_session(server, tenant["key"])
    vb = await visitor(server, b)
    clients.append(vb)
    await vb.send({"type": "message", "client_id": "b-1", "body": "secret of B"})
    await vb.expect_message("secret of B")

    # A's socket replays only A's conversation and never hears B's messages.
    va = await visitor(server, a)
    clients.append(va)
    await va.send({"type": "message", "client_id": "a-1", "body": "marker A"})
    await va.expect_message("marker A")
    await va.expect_message(author="bot")
    assert all("secret of B" not in str(f) for f in va.frames)

    # A token is bound to its conversation by signature: editing the claim breaks it.
    claims = jwt.decode(a["token"], options={"verify_signature": False})
    forged = jwt.encode({**claims, "sub": b["conversation_id"]}, "a-guessed-key-" * 4, algorithm="HS256")
    for token in (forged, jwt.encode({**claims, "sub": b["conversation_id"]}, TEST_SECRET, algorithm="HS256")):
        ws = await Client.connect(server.base_url, "/ws/visitor")
        clients.append(ws)
        await ws.send({"type": "hello", "token": token, "last_seen_id": 0})
        assert (await ws.expect(type="error"))["code"] == "invalid_token"
    # Nor is a visitor token a member credential.
    status, _body = await server.call("GET", f"/api/conversations/{b['conversation_id']}", token=a["token"])
    assert status == 401
    ws = await Client.connect(server.base_url, "/ws/agent")
    clients.append(ws)
    await ws.send({"type": "hello", "token": a["token"]})
    assert (await ws.expect(type="error"))["code"] in ("invalid_token", "unauthenticated")

    # And in SQL, the visitor transaction of A is refused B's messages and B's conversation.
    import asyncpg
    from pyapp.db import Actor, create_pool, tenant_tx
    pool = await create_pool(settings.app_url, min_size=1, max_size=2)
    try:
        actor = Actor(uuid.UUID(tenant["tenant_id"]), kind="visitor", actor_id=a["conversation_id"], min_role="visitor")
        for sql, args in (("SELECT * FROM parley.visible_messages($1, 0)", ()),
                          ("SELECT m.id FROM parley.post_message($1, 'visitor', 'hi', NULL, '{}') m", ())):
            try:
                async with tenant_tx(pool, actor) as conn:
                    await conn.fetch(sql, uuid.UUID(b["conversation_id"]), *args)
            except asyncpg.PostgresError as exc:
                assert exc.sqlstate == "PT403"
            else:
                raise AssertionError(f"{sql} was allowed")
    finally:
        await pool.close()


async def test_new_sessions_are_rate_limited_per_address(server, tenant, owner_conn):
    await owner_conn.execute("INSERT INTO parley.tenant_limits (tenant_id, msgs_per_min_ip) VALUES ($1, 2)",
                             uuid.UUID(tenant["tenant_id"]))
    first = await widget_session(server, tenant["key"])
    await widget_session(server, tenant["key"])
    out = await widget_session(server, tenant["key"], expect=429)
    assert out["error"]["code"] == "rate_limited"
    # Resuming an existing conversation is not a new one: still fine.
    again = await widget_session(server, tenant["key"], conversation_id=first["conversation_id"])
    assert again["conversation_id"] == first["conversation_id"]


async def test_language_defaults_to_auto_and_auto_is_accepted(server, tenant):
    out = await widget_session(server, tenant["key"], start=False)
    assert out["config"]["language"] == "auto"  # the visitor's browser language
    status, body = await server.call("PATCH", f"/api/chatbots/{tenant['chatbot_id']}", token=tenant["access_token"],
                                     json={"config": {"language": "auto"}})
    assert status == 200, body
    status, body = await server.call("PATCH", f"/api/chatbots/{tenant['chatbot_id']}", token=tenant["access_token"],
                                     json={"config": {"language": "autox"}})
    assert status == 422, body
