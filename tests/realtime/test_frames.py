"""Bad input never crashes a socket; hooks for CSAT frames; the agent socket's credentials."""
from __future__ import annotations

import json

from pyapp.realtime import throttle
from pyapp.widget import hooks
from pyapp.widget.hooks import visitor_hooks
from support.realtime import Client, agent, visitor, widget_session


async def test_bad_frames_get_error_frames_and_the_socket_lives_on(server, tenant, clients):
    sess = await widget_session(server, tenant["key"])
    vis = await visitor(server, sess)
    clients.append(vis)
    cases = [
        ("not json", "invalid_json"),
        (json.dumps([1, 2]), "invalid_frame"),
        (json.dumps({"type": "teleport"}), "unknown_type"),
        (json.dumps({"type": "message", "body": "no client id"}), "invalid_frame"),
        (json.dumps({"type": "message", "client_id": "x", "body": "   "}), "invalid_frame"),
        (json.dumps({"type": "message", "client_id": "x", "body": "a" * 4001}), "invalid_frame"),
        (json.dumps({"type": "message", "client_id": "x", "body": "nul \u0000 inside"}), "invalid_frame"),
        ('{"type": "message", "client_id": "x", "body": "lone \\ud800"}', "invalid_frame"),
        (json.dumps({"type": "rating", "score": 9}), "invalid_frame"),
        (json.dumps({"type": "hello", "token": "x" * 20}), "already_authenticated"),
        (json.dumps({"type": "message", "client_id": "x", "body": "b" * 17000}), "frame_too_large"),
    ]
    for raw, code in cases:
        await vis.ws.send_str(raw)
        err = await vis.expect(type="error")
        assert err["code"] == code, (raw[:60], err)
    await vis.ws.send_bytes(b"\x00\x01")
    assert (await vis.expect(type="error"))["code"] == "invalid_frame"
    await vis.send({"type": "lead", "email": "not-an-email"})
    assert (await vis.expect(type="error"))["code"] == "invalid_email"
    await vis.send({"type": "ping"})
    await vis.expect(type="pong")
    await vis.send({"type": "message", "client_id": "ok", "body": "still here"})
    await vis.expect_message("still here")


async def test_first_frame_must_be_a_valid_hello(server, clients):
    for first, code in (({"type": "message", "client_id": "x", "body": "hi"}, 4400),
                        ({"type": "hello", "token": "not-a-real-token-at-all"}, 4401)):
        c = await Client.connect(server.base_url, "/ws/visitor")
        clients.append(c)
        await c.send(first)
        await c.expect(type="error")
        assert await c.expect_closed() == code


async def test_frame_flood_is_throttled_before_the_database(server, tenant, clients):
    sess = await widget_session(server, tenant["key"])
    vis = await visitor(server, sess)
    clients.append(vis)
    for _ in range(int(throttle.FRAME_BURST) + 5):
        await vis.send({"type": "typing", "on": True})
    err = await vis.expect(type="error")
    assert err["code"] == "rate_limited"
    await vis.send({"type": "ping"})  # heartbeats are never throttled
    await vis.expect(type="pong")


async def test_feedback_and_rating_go_to_the_hook(server, tenant, clients):
    saved = {}
    app_hooks = visitor_hooks(server.app)
    old = dict(app_hooks.frame_handlers)
    try:
        app_hooks.set_frame_handler("feedback", None)
        app_hooks.set_frame_handler("rating", None)
        sess = await widget_session(server, tenant["key"])
        vis = await visitor(server, sess)
        clients.append(vis)
        await vis.send({"type": "rating", "score": 5})
        assert (await vis.expect(type="error"))["code"] == "unsupported"

        async def on_rating(ctx: hooks.VisitorContext, frame: dict):
            saved["rating"] = (str(ctx.conversation_id), frame["score"], frame["comment"])
            return {"type": "rating_saved"}
        app_hooks.set_frame_handler("rating", on_rating)
        await vis.send({"type": "rating", "score": 4, "comment": "nice"})
        await vis.expect(type="rating_saved")
        assert saved["rating"] == (sess["conversation_id"], 4, "nice")
    finally:
        for k, v in old.items():
            app_hooks.set_frame_handler(k, v)


async def test_lead_request_after_messages_and_lead_frame(server, tenant, clients, owner_conn):
    await owner_conn.execute("UPDATE parley.chatbots SET config = $2 WHERE id = $1", tenant["chatbot_id"],
                             {"lead_capture": {"mode": "after_messages", "after": 1}})
    sess = await widget_session(server, tenant["key"])
    vis = await visitor(server, sess)
    clients.append(vis)
    ag = await agent(server, tenant["access_token"])
    clients.append(ag)
    await vis.send({"type": "message", "client_id": "c-1", "body": "hi"})
    req = await vis.expect(type="lead_request")
    assert req["fields"] == ["name", "email"]
    await vis.send({"type": "lead", "name": "Ana", "email": "ana@example.test", "company": "Acme"})
    await ag.expect_event("lead_captured", lambda e: e["conversation_id"] == sess["conversation_id"])
    lead = await owner_conn.fetchrow("SELECT name, email, custom FROM parley.leads WHERE chatbot_id = $1",
                                     tenant["chatbot_id"])
    assert (lead["name"], lead["email"], lead["custom"]) == ("Ana", "ana@example.test", {"company": "Acme"})


async def test_agent_socket_accepts_api_keys_and_refuses_bad_credentials(server, tenant, make_api_key, clients):
    key = await make_api_key(server, tenant["access_token"], scopes=("read",))
    ag = await agent(server, key)
    clients.append(ag)
    sess = await widget_session(server, tenant["key"])
    await ag.expect_event("conversation_started", lambda e: e["conversation_id"] == sess["conversation_id"])

    write_only = await make_api_key(server, tenant["access_token"], scopes=("write",))
    for token, code, close in (("prl_nope_" + "x" * 40, "invalid_api_key", 4401),
                               ("eyJhbGciOiJIUzI1NiJ9.e30.x", "invalid_token", 4401),
                               (write_only, "insufficient_scope", 4403)):
        c = await Client.connect(server.base_url, "/ws/agent")
        clients.append(c)
        await c.send({"type": "hello", "token": token})
        assert (await c.expect(type="error"))["code"] == code
        assert await c.expect_closed() == close


async def test_agent_resume_from_last_event_id(server, tenant, clients):
    sess = await widget_session(server, tenant["key"])
    conv = sess["conversation_id"]
    ag = await agent(server, tenant["access_token"], last_event_id=0)  # 0: replay everything
    started = await ag.expect_event("conversation_started")
    await ag.close()
    for text in ("one", "two"):
        await server.call("POST", f"/api/conversations/{conv}/reply", token=tenant["access_token"], json={"body": text})
    back = await agent(server, tenant["access_token"], last_event_id=started["id"])
    clients.append(back)
    kinds = [(await back.expect(type="event"))["event"] for _ in range(3)]
    assert [e["kind"] for e in kinds] == ["claimed", "message_added", "message_added"]
    assert [e["message"]["body"] for e in kinds[1:]] == ["one", "two"]
    ids = [e["id"] for e in kinds]
    assert ids == sorted(ids) and ids[0] > started["id"]
    # Live events continue after the replay, without duplicates.
    await server.call("POST", f"/api/conversations/{conv}/reply", token=tenant["access_token"], json={"body": "three"})
    live = await back.expect_event("message_added")
    assert live["message"]["body"] == "three"
    seen = [f["event"]["id"] for f in back.frames if f["type"] == "event"]
    assert len(seen) == len(set(seen))
