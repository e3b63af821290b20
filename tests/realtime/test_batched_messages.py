"""Many visitors writing at once through the real server: their messages share statements
(pyapp/widget/batch.py), yet each visitor hears only of its own, and one refused message
does not take the others with it."""
from __future__ import annotations

import asyncio
import uuid

from pyapp.widget.socket import message_batcher
from support.realtime import agent, visitor, widget_session

VISITORS = 12


async def _claimed_visitors(server, tenant, clients, n: int) -> list[tuple[dict, object]]:
    out = []
    for _ in range(n):
        sess = await widget_session(server, tenant["key"])
        status, body = await server.call("POST", f"/api/conversations/{sess['conversation_id']}/claim",
                                         token=tenant["access_token"])
        assert status == 200, body
        vis = await visitor(server, sess)
        clients.append(vis)
        out.append((sess, vis))
    return out


async def _agent_sees(ag, bodies: set[str]) -> None:
    """Every body in `bodies` arrives as a message_added event (in whatever order: conversation order)."""
    missing = set(bodies)

    def seen(event) -> bool:
        missing.discard(event["message"]["body"])
        return not missing
    await ag.expect_event("message_added", seen)


async def test_many_visitors_at_once_each_get_their_own_message(server, tenant, clients, owner_conn):
    ag = await agent(server, tenant["access_token"])
    clients.append(ag)
    visitors = await _claimed_visitors(server, tenant, clients, VISITORS)
    batcher = message_batcher(server.app)
    before = batcher.messages

    await asyncio.gather(*(vis.send({"type": "message", "client_id": f"c-{i}", "body": f"from visitor {i}"})
                           for i, (_sess, vis) in enumerate(visitors)))
    for i, (sess, vis) in enumerate(visitors):
        mine = await vis.expect_message(f"from visitor {i}", author="visitor")
        assert mine["conversation_id"] == sess["conversation_id"] and mine["client_id"] == f"c-{i}"
    await _agent_sees(ag, {f"from visitor {i}" for i in range(VISITORS)})
    # Nobody saw anybody else's message.
    for i, (_sess, vis) in enumerate(visitors):
        bodies = {f["message"]["body"] for f in vis.frames if f.get("type") == "message"}
        assert bodies == {f"from visitor {i}"}, bodies
    assert batcher.messages - before == VISITORS  # the widget's messages all went through the batcher
    assert await owner_conn.fetchval("SELECT count(*) FROM parley.messages WHERE tenant_id = $1 AND author = 'visitor'",
                                     uuid.UUID(tenant["tenant_id"])) == VISITORS


async def test_a_refused_message_among_others_reaches_only_its_sender(server, tenant, clients, owner_conn):
    ag = await agent(server, tenant["access_token"])
    clients.append(ag)
    visitors = await _claimed_visitors(server, tenant, clients, 4)
    # The first visitor's conversation is closed and the workspace is at its open-conversation
    # limit, so that visitor's message (which would reopen it) is refused with 402.
    closed_sess, closed_vis = visitors[0]
    status, _ = await server.call("POST", f"/api/conversations/{closed_sess['conversation_id']}/close",
                                  token=tenant["access_token"])
    assert status == 200
    await owner_conn.execute("INSERT INTO parley.tenant_limits (tenant_id, max_open_conversations) VALUES ($1, 3)",
                             uuid.UUID(tenant["tenant_id"]))

    await asyncio.gather(*(vis.send({"type": "message", "client_id": f"c-{i}", "body": f"from visitor {i}"})
                           for i, (_sess, vis) in enumerate(visitors)))
    err = await closed_vis.expect(type="error")
    assert (err["code"], err["client_id"]) == ("plan_limit", "c-0")
    for i, (_sess, vis) in enumerate(visitors[1:], start=1):
        await vis.expect_message(f"from visitor {i}", author="visitor")
        assert not [f for f in vis.frames if f.get("type") == "error"]
    await _agent_sees(ag, {f"from visitor {i}" for i in range(1, 4)})
    assert not [f for f in ag.frames if f.get("type") == "event"
                and (f["event"].get("message") or {}).get("body") == "from visitor 0"]
    assert await owner_conn.fetchval("SELECT count(*) FROM parley.messages WHERE conversation_id = $1",
                                     uuid.UUID(closed_sess["conversation_id"])) == 0
    assert await owner_conn.fetchval("SELECT status FROM parley.conversations WHERE id = $1",
                                     uuid.UUID(closed_sess["conversation_id"])) == "closed"
