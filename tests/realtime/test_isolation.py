"""An agent of tenant A never receives tenant B's events: WebSocket, SSE, REST, on one or two instances."""
from __future__ import annotations

from support.realtime import SseClient, agent, create_chatbot, visitor, widget_session
from support.server import start_server


async def test_agents_only_get_their_own_tenants_events(server, settings, signup, owner_conn, clients):
    a = await signup(server)
    b = await signup(server)
    bot_a = await create_chatbot(owner_conn, a["tenant_id"])
    bot_b = await create_chatbot(owner_conn, b["tenant_id"])
    other = await start_server(settings)
    try:
        ws_a_here = await agent(server, a["access_token"], last_event_id=0)
        ws_a_there = await agent(other, a["access_token"], last_event_id=0)
        clients += [ws_a_here, ws_a_there]
        sse_a = await SseClient.connect(server, a["access_token"], last_event_id=0)
        try:
            # Tenant B is busy: a conversation, messages, a handoff, a claim, a reply.
            sess_b = await widget_session(server, bot_b["key"])
            vb = await visitor(other, sess_b)
            clients.append(vb)
            await vb.send({"type": "message", "client_id": "b-1", "body": "B's secret"})
            await vb.expect_message(author="bot")
            await vb.send({"type": "human"})
            conv_b = sess_b["conversation_id"]
            status, _ = await server.call("POST", f"/api/conversations/{conv_b}/claim", token=b["access_token"])
            assert status == 200
            await server.call("POST", f"/api/conversations/{conv_b}/reply", token=b["access_token"],
                              json={"body": "B's answer"})
            await vb.expect_message("B's answer")
            await vb.send({"type": "typing", "on": True})

            # Then tenant A has one conversation with a marker message.
            sess_a = await widget_session(server, bot_a["key"])
            va = await visitor(server, sess_a)
            clients.append(va)
            await va.send({"type": "message", "client_id": "a-1", "body": "A marker"})
            for stream in (ws_a_here, ws_a_there):
                await stream.expect_event("message_added", lambda e: e["message"]["body"] == "A marker")
            await sse_a.expect_event("message_added", lambda d: d["message"]["body"] == "A marker")

            for frames in (ws_a_here.frames, ws_a_there.frames, [e.get("data") for e in sse_a.events]):
                text = str(frames)
                assert conv_b not in text and "B's" not in text
                convs = {str((f.get("event") or f).get("conversation_id")) for f in frames
                         if isinstance(f, dict) and (f.get("event") or f).get("conversation_id")}
                assert convs == {sess_a["conversation_id"]}, convs
        finally:
            await sse_a.close()

        # REST: A can neither list nor open B's conversation, nor act on it.
        status, listing = await server.call("GET", "/api/conversations", token=a["access_token"])
        assert status == 200 and conv_b not in str(listing)
        status, _ = await server.call("GET", f"/api/conversations/{conv_b}", token=a["access_token"])
        assert status == 404
        status, _ = await server.call("POST", f"/api/conversations/{conv_b}/reply", token=a["access_token"],
                                      json={"body": "intrusion"})
        assert status == 404
        # And A's agent typing into B's conversation id reaches nobody.
        await ws_a_here.send({"type": "typing", "conversation_id": conv_b, "on": True})
        await ws_a_here.send({"type": "ping"})
        await ws_a_here.expect(type="pong")
        await vb.send({"type": "ping"})
        await vb.expect(type="pong")
        assert not any(f.get("type") == "typing" and f.get("author") == "agent" for f in vb.frames)
    finally:
        await other.close()
