"""Who is online (sql/47_presence.sql, pyapp/realtime/presence.py) and what a visitor is told when
they ask for a person while nobody is: the handoff still happens (the team's alert channels fire on
human_requested as before), and the status frame says `available: false` so the widget offers the
lead form."""
from __future__ import annotations

import asyncio

import asyncpg
import pytest
from pyapp.context import POOL
from pyapp.db import Actor, tenant_tx
from support.realtime import SseClient, agent, clients, placeholder_bot, tenant, visitor, widget_session  # noqa: F401


async def _online(pool, tenant_id) -> int:
    async with tenant_tx(pool, Actor(tenant_id=tenant_id, kind="service", min_role="visitor")) as conn:
        return await conn.fetchval("SELECT parley.members_online()")


async def _until(pred, what: str, timeout: float = 5.0):
    """Poll a condition that a background write makes true (presence rows are written by the relay)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await pred():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def test_presence_is_per_member_lapses_and_stays_in_its_tenant(rows, app_pool, owner_conn):
    owner = await rows.tenant()
    agent_person = await rows.member(owner, "agent")
    other = await rows.tenant()
    assert await _online(app_pool, owner.tenant_id) == 0
    for person, instance in ((owner, "i1"), (owner, "i2"), (agent_person, "i1")):
        async with tenant_tx(app_pool, person.actor) as conn:
            await conn.execute("SELECT parley.set_presence($1, true)", instance)
    assert await _online(app_pool, owner.tenant_id) == 2  # people, not streams
    assert await _online(app_pool, other.tenant_id) == 0
    # another tenant's member cannot mark itself online here, nor see these rows
    async with tenant_tx(app_pool, other.actor) as conn:
        await conn.execute("SELECT parley.set_presence('i1', true)")
        assert await conn.fetchval("SELECT count(*) FROM parley.member_presence") == 1
        assert await conn.execute("DELETE FROM parley.member_presence WHERE tenant_id = $1",
                                  owner.tenant_id) == "DELETE 0"
    assert await _online(app_pool, owner.tenant_id) == 2
    # a row no instance refreshed within the window (a dead server) no longer counts
    await owner_conn.execute("UPDATE parley.member_presence SET seen_at = now() - interval '91 seconds'"
                             " WHERE tenant_id = $1 AND user_id = $2", owner.tenant_id, agent_person.user_id)
    assert await _online(app_pool, owner.tenant_id) == 1
    async with tenant_tx(app_pool, owner.actor) as conn:
        await conn.execute("SELECT parley.set_presence('i1', false)")
        await conn.execute("SELECT parley.set_presence('i2', false)")
    assert await _online(app_pool, owner.tenant_id) == 0


@pytest.mark.parametrize("kind", ["visitor", "service"])
async def test_only_a_signed_in_member_has_a_presence(rows, app_pool, kind):
    owner = await rows.tenant()
    actor = Actor(tenant_id=owner.tenant_id, kind=kind, min_role="visitor")
    with pytest.raises(asyncpg.PostgresError, match="Only a signed-in member"):
        async with tenant_tx(app_pool, actor) as conn:
            await conn.execute("SELECT parley.set_presence('i1', true)")


async def test_nobody_online_the_visitor_is_told_and_the_handoff_still_happens(server, tenant, clients, owner_conn):  # noqa: F811  pytest fixture imported above, injected by name
    session = await widget_session(server, tenant["key"])
    v = await visitor(server, session)
    clients.append(v)
    await v.send({"type": "human"})
    frame = await v.expect(type="status")
    assert frame["status"] == "waiting_human" and frame["available"] is False
    data = await owner_conn.fetchval(
        "SELECT data FROM parley.events WHERE conversation_id = $1 AND kind = 'human_requested'",
        session["conversation_id"])
    assert data == {"reason": "requested", "members_online": 0}


async def test_an_agent_with_the_inbox_open_is_online_until_it_closes(server, tenant, clients):  # noqa: F811  pytest fixture imported above, injected by name
    a = await agent(server, tenant["access_token"])
    clients.append(a)
    pool = server.app[POOL]
    assert await _online(pool, tenant["tenant_id"]) == 1  # written before the socket is ready
    session = await widget_session(server, tenant["key"])
    v = await visitor(server, session)
    clients.append(v)
    await v.send({"type": "human"})
    frame = await v.expect(type="status")
    assert frame == {"type": "status", "status": "waiting_human"}
    await a.close()
    clients.remove(a)
    await _until(lambda: _offline(pool, tenant["tenant_id"]), "the member to go offline")
    # an event stream counts as well
    sse = await SseClient.connect(server, tenant["access_token"])
    try:  # (its headers go out before it attaches)
        await _until(lambda: _is_online(pool, tenant["tenant_id"]), "the stream's member to be online")
    finally:
        await sse.close()  # (the server notices a gone SSE client at its next keep-alive write)


async def _offline(pool, tenant_id) -> bool:
    return await _online(pool, tenant_id) == 0


async def _is_online(pool, tenant_id) -> bool:
    return await _online(pool, tenant_id) == 1


async def test_an_api_key_stream_is_nobody(server, tenant, make_api_key, clients):  # noqa: F811  pytest fixture imported above, injected by name
    key = await make_api_key(server, tenant["access_token"])
    a = await agent(server, key)
    clients.append(a)
    assert await _online(server.app[POOL], tenant["tenant_id"]) == 0
