"""Finding 2: revoking a member, an API key or a session closes its sockets and streams at once, on every
instance (not at the next 60-second re-check); other members' streams stay open."""
from __future__ import annotations

import pytest
from support.realtime import SseClient, agent
from support.server import start_server

PROMPT = 8.0  # well under the 60 s re-check: only the revocation notice can close them this fast
CLOSED = (4401, 1006)  # 1006 when aiohttp drops the transport before our client's close reply (the error frame came)


@pytest.fixture
async def second(settings):
    srv = await start_server(settings)
    yield srv
    await srv.close()


async def _sse_closed(sse: SseClient, timeout: float = PROMPT) -> dict | None:
    """The stream's error event (if sent) once it has ended; fails if it is still open after `timeout`."""
    try:
        return await sse.expect(lambda e: e.get("event") == "error", timeout=timeout)
    except ConnectionError:
        return None


async def _assert_ended(sse: SseClient) -> None:
    err = await _sse_closed(sse)
    if err is not None:  # then the stream must end right after it
        with pytest.raises(ConnectionError):
            await sse.expect(lambda e: False, timeout=PROMPT)


async def test_removed_member_is_cut_off_on_every_instance(server, second, signup):
    owner = await signup(server)
    member = await signup(server, join=owner, role="agent")
    on_first = await agent(server, member["access_token"])
    on_second = await agent(second, member["access_token"])
    sse = await SseClient.connect(second, member["access_token"])
    await sse.expect(lambda e: True)  # the stream is open (its retry line)
    bystander = await agent(second, owner["access_token"])
    status, _ = await server.call("DELETE", f"/api/members/{member['user_id']}", token=owner["access_token"])
    assert status == 204
    for ws in (on_first, on_second):
        frame = await ws.expect(type="error", timeout=PROMPT)
        assert frame["code"]
        assert await ws.expect_closed(timeout=PROMPT) in CLOSED
    await _assert_ended(sse)
    await bystander.send({"type": "ping"})
    await bystander.expect(type="pong")
    for c in (on_first, on_second, bystander):
        await c.close()
    await sse.close()


async def test_revoked_key_is_cut_off_on_every_instance(server, second, signup, make_api_key):
    owner = await signup(server)
    key = await make_api_key(server, owner["access_token"], ("read",), name="stream key")
    other_key = await make_api_key(server, owner["access_token"], ("read",), name="other key")
    status, keys = await server.call("GET", "/api/keys", token=owner["access_token"])
    key_id = next(k["id"] for k in keys["keys"] if k["name"] == "stream key")
    ws = await agent(second, key)
    sse = await SseClient.connect(server, key)
    await sse.expect(lambda e: True)
    bystander = await agent(second, other_key)
    status, _ = await server.call("DELETE", f"/api/keys/{key_id}", token=owner["access_token"])
    assert status == 200
    await ws.expect(type="error", timeout=PROMPT)
    assert await ws.expect_closed(timeout=PROMPT) in CLOSED
    await _assert_ended(sse)
    await bystander.send({"type": "ping"})
    await bystander.expect(type="pong")
    await ws.close()
    await bystander.close()
    await sse.close()


async def test_logout_cuts_off_that_session_only(server, second, signup):
    user = await signup(server)
    status, other = await server.call("POST", "/api/auth/login", json={"email": user["email"],
                                                                       "password": user["password"]})
    assert status == 200
    ws = await agent(second, user["access_token"])
    sse = await SseClient.connect(second, user["access_token"])
    await sse.expect(lambda e: True)
    other_ws = await agent(second, other["access_token"])
    status, _ = await server.call("POST", "/api/auth/logout", json={}, token=user["access_token"])
    assert status == 204
    await ws.expect(type="error", timeout=PROMPT)
    assert await ws.expect_closed(timeout=PROMPT) in CLOSED
    await _assert_ended(sse)
    await other_ws.send({"type": "ping"})
    await other_ws.expect(type="pong")
    # Signing out everywhere closes the other session's socket too.
    status, _ = await second.call("POST", "/api/auth/logout", json={"everywhere": True}, token=other["access_token"])
    assert status == 204
    assert await other_ws.expect_closed(timeout=PROMPT) in CLOSED
    await ws.close()
    await other_ws.close()
    await sse.close()
