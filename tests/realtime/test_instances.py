"""Several server processes on one database: cross-instance delivery, restarts, a dropped LISTEN connection."""
from __future__ import annotations

import asyncio
import uuid

from pyapp.realtime.relay import get_relay
from pyapp.realtime.source import RELAY_APP_NAME
from pyapp.widget import hooks
from pyapp.widget.hooks import visitor_hooks
from support.realtime import agent, visitor, widget_session
from support.server import start_server


async def test_visitor_on_one_instance_agent_on_another(server, settings, tenant, clients):
    other = await start_server(settings)
    try:
        ag = await agent(other, tenant["access_token"])
        clients.append(ag)
        sess = await widget_session(server, tenant["key"])
        conv = sess["conversation_id"]
        vis = await visitor(server, sess)
        clients.append(vis)

        await vis.send({"type": "message", "client_id": "c-1", "body": "from instance one"})
        ev = await ag.expect_event("message_added", lambda e: e["message"]["body"] == "from instance one")
        assert ev["conversation_id"] == conv
        await ag.expect_event("message_added", lambda e: e["message"]["author"] == "bot")

        status, _ = await other.call("POST", f"/api/conversations/{conv}/reply", token=tenant["access_token"],
                                     json={"body": "answer from instance two"})
        assert status == 201
        # Replying claimed it: the visitor sees the status change, then the answer.
        assert (await vis.expect(type="status"))["status"] == "human"
        await vis.expect_message("answer from instance two", author="agent")

        # Typing and read receipts cross instances as signals (never stored).
        await ag.send({"type": "typing", "conversation_id": conv, "on": True})
        assert await vis.expect(type="typing") == {"type": "typing", "author": "agent", "on": True}
        await vis.send({"type": "typing", "on": True})
        t = await ag.expect(type="typing")
        assert t["author"] == "visitor" and t["conversation_id"] == conv
    finally:
        await other.close()


async def test_bot_stream_reaches_local_sockets_only(server, settings, tenant, clients):
    async def streaming_bot(turn: hooks.BotTurn) -> None:
        for delta in ("Hel", "lo ", "there"):
            turn.stream("s-1", delta)
        await turn.reply("Hello there", meta={"stream_id": "s-1"})

    visitor_hooks(server.app).set_bot_responder(streaming_bot)
    other = await start_server(settings)
    try:
        local_agent = await agent(server, tenant["access_token"])
        remote_agent = await agent(other, tenant["access_token"])
        clients += [local_agent, remote_agent]
        sess = await widget_session(server, tenant["key"])
        vis = await visitor(server, sess)
        clients.append(vis)
        await vis.send({"type": "message", "client_id": "c-1", "body": "hi"})
        chunks = [(await vis.expect(type="stream"))["delta"] for _ in range(3)]
        assert "".join(chunks) == "Hello there"
        final = await vis.expect_message("Hello there", author="bot")
        assert final["stream_id"] == "s-1"
        s = await local_agent.expect(type="stream")
        assert s["conversation_id"] == sess["conversation_id"] and s["stream_id"] == "s-1"
        # The agent on the other instance gets the stored reply, and no chunks before it.
        await remote_agent.expect_event("message_added", lambda e: e["message"]["body"] == "Hello there")
        assert not any(f["type"] == "stream" for f in remote_agent.frames)
    finally:
        await other.close()


async def test_reconnect_across_a_server_restart(settings, signup, owner_conn, clients):
    from support.realtime import create_chatbot
    one = await start_server(settings)
    two = await start_server(settings)
    try:
        owner = await signup(one)
        bot = await create_chatbot(owner_conn, owner["tenant_id"])
        sess = await widget_session(one, bot["key"])
        conv = sess["conversation_id"]
        vis = await visitor(one, sess)
        clients.append(vis)
        await vis.send({"type": "message", "client_id": "c-1", "body": "before restart"})
        await vis.expect_message("before restart")
        last = await vis.expect_message(author="bot")

        closed = asyncio.create_task(vis.expect_closed())  # the widget is always reading
        await one.close()  # instance one goes away with the visitor's socket
        # 1001 "going away" (1006 if aiohttp drops the transport before our close reply lands).
        assert await closed in (1001, 1006)
        for text in ("sent during the restart", "and another"):
            status, _ = await two.call("POST", f"/api/conversations/{conv}/reply", token=owner["access_token"],
                                       json={"body": text})
            assert status == 201
        three = await start_server(settings)
        try:
            fresh = await widget_session(three, bot["key"], conversation_id=conv)
            back = await visitor(three, fresh, last_seen_id=last["id"])
            clients.append(back)
            bodies = [(await back.expect(type="message"))["message"]["body"] for _ in range(2)]
            assert bodies == ["sent during the restart", "and another"]
            await back.send({"type": "message", "client_id": "c-2", "body": "after restart"})
            await back.expect_message("after restart")
        finally:
            await three.close()
    finally:
        await two.close()


async def test_dropped_listen_connection_is_reestablished_and_the_gap_backfilled(settings, signup, owner_conn,
                                                                                 clients):
    from support.realtime import create_chatbot
    settings.extra["relay_min_backoff"] = 2.0  # a visible gap: reconnects after 1..3 s
    srv = await start_server(settings)
    try:
        owner = await signup(srv)
        bot = await create_chatbot(owner_conn, owner["tenant_id"])
        sess = await widget_session(srv, bot["key"])
        conv = sess["conversation_id"]
        ag = await agent(srv, owner["access_token"])
        clients.append(ag)
        relay = get_relay(srv.app)
        source = relay.source
        assert source.connects == 1

        killed = await owner_conn.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE application_name = $1 AND datname = current_database()", RELAY_APP_NAME)
        assert killed == 1
        await asyncio.wait_for(source.disconnected.wait(), 10)
        # Posted while nobody listens: its NOTIFY is lost.
        status, reply = await srv.call("POST", f"/api/conversations/{conv}/reply", token=owner["access_token"],
                                       json={"body": "during the outage"})
        assert status == 201
        assert source.connects == 1, "the relay reconnected before the message was posted"

        ev = await ag.expect_event("message_added", lambda e: e["message"]["id"] == reply["id"])
        assert ev["message"]["body"] == "during the outage"
        assert source.connects == 2 and relay.gaps == 2
        new_pid = await owner_conn.fetchval(
            "SELECT pid FROM pg_stat_activity WHERE application_name = $1 AND datname = current_database()",
            RELAY_APP_NAME)
        assert new_pid == source.backend_pid

        # And live delivery works again afterwards.
        await srv.call("POST", f"/api/conversations/{conv}/reply", token=owner["access_token"], json={"body": "after"})
        await ag.expect_event("message_added", lambda e: e["message"]["body"] == "after")
    finally:
        await srv.close()



async def test_sockets_of_a_deleted_workspace_are_closed(server, tenant, clients, owner_conn):
    ag = await agent(server, tenant["access_token"])
    clients.append(ag)
    sess = await widget_session(server, tenant["key"])
    await ag.expect_event("conversation_started")
    vis = await visitor(server, sess)
    clients.append(vis)
    await owner_conn.execute("UPDATE parley.tenants SET deleted_at = now() WHERE id = $1",
                             uuid.UUID(tenant["tenant_id"]))
    # Any wake-up makes the relay read; its service transaction is refused for a deleted tenant.
    await owner_conn.execute("SELECT pg_notify('parley_events', $1)", f"{tenant['tenant_id']}:999999999:")
    for client in (ag, vis):
        assert (await client.expect(type="error"))["code"] == "tenant_not_found"
        # 4403, or 1006 when aiohttp closes the transport before our client's close reply
        # lands (a server-side close while the handler is reading); either way it is closed.
        assert await client.expect_closed() in (4403, 1006)
