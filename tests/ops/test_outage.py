"""A database outage as clients see it: with the run's PostgreSQL stopped, REST answers
503 `database_unavailable` with Retry-After (before: a generic 500), both sockets close with 1013
(try again later) after a `database_unavailable` error frame when they need the database, and the
same server serves again once PostgreSQL is back, without a restart."""
from __future__ import annotations

import contextlib

import aiohttp
import pytest
from pyapp.client import ParleyError
from support.database import postgres_down
from support.realtime import Client, agent, create_chatbot, visitor, widget_session
from support.waits import until


async def test_rest_and_sockets_during_a_database_outage(server, signup, owner_conn, pg_server):
    owner = await signup(server)
    bot = await create_chatbot(owner_conn, owner["tenant_id"])
    sess = await widget_session(server, bot["key"])
    vis = await visitor(server, sess)
    ag = await agent(server, owner["access_token"])
    await owner_conn.close()  # the fixture's connection would not survive the stop
    try:
        async with postgres_down(pg_server):
            # REST, signed in (the credential check itself needs the database), through the client.
            with pytest.raises(ParleyError) as err:
                await server.client(owner["access_token"]).list_conversations()
            assert (err.value.status, err.value.code, err.value.retry_after) == (503, "database_unavailable", 5)
            assert err.value.message
            # A public route (widget sessions) too.
            with pytest.raises(ParleyError) as err:
                await server.client().create_session(body={"chatbot_key": bot["key"]},
                                                     headers={"Origin": "https://shop.example"})
            assert (err.value.status, err.value.code) == (503, "database_unavailable")
            # /readyz says why; /healthz (the process) is still fine.
            status, body = await server.call("GET", "/readyz")
            assert status == 503 and body["checks"]["database"]["ok"] is False
            assert (await server.call("GET", "/healthz"))[0] == 200

            # An open visitor socket writing: told, then closed with a retryable code.
            await vis.send({"type": "message", "client_id": "c-1", "body": "anyone there?"})
            frame = await vis.expect(type="error")
            assert frame["code"] == "database_unavailable"
            assert await vis.expect_closed() == 1013
            # A new agent socket's hello (its credential check needs the database) is refused the same
            # way. (An open agent socket only listens: it stays, and the relay catches up after.)
            fresh = await Client.connect(server.base_url, "/ws/agent")
            try:
                await fresh.send({"type": "hello", "token": owner["access_token"]})
                assert (await fresh.expect(type="error"))["code"] == "database_unavailable"
                assert await fresh.expect_closed() == 1013
            finally:
                await fresh.close()

        # Back: the same server (its pool reconnects) answers again.
        async def answers():
            try:
                await server.client(owner["access_token"]).list_conversations()
            except ParleyError as exc:
                assert exc.code == "database_unavailable"
                return False
            return True
        await until(answers, timeout=30, what="REST to answer again after the restart")
        again = await visitor(server, sess)
        await again.send({"type": "message", "client_id": "c-2", "body": "back?"})
        assert (await again.expect_message("back?", author="visitor"))["client_id"] == "c-2"
        # The agent socket that stayed open through the outage hears of it (its relay reconnected).
        await ag.expect_event("message_added", lambda ev: ev["message"]["body"] == "back?", timeout=30)
        await again.close()
    finally:
        for c in (vis, ag):
            with contextlib.suppress(aiohttp.ClientError):
                await c.close()
