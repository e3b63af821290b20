"""One member authentication (pyapp.auth.resolve_member) for REST, /ws/agent and SSE.

Each bad credential is tried on all three surfaces and must be refused the same way: the same
error code, 401 for who-are-you problems and 403 for not-allowed ones (4401/4403 on the socket).
"""
from __future__ import annotations

import uuid

import aiohttp
from pyapp.context import SETTINGS
from pyapp.security import issue_access_token
from pyapp.widget.tokens import issue_visitor_token
from support.realtime import Client, agent, widget_session


async def _rest(server, token: str) -> tuple[int, str]:
    status, body = await server.call("GET", "/api/conversations", token=token)
    return status, body["error"]["code"] if status >= 400 else "ok"


async def _sse(server, token: str) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(server.base_url + "/api/events", headers={"Authorization": f"Bearer {token}"}) as resp,
    ):
        if resp.status >= 400:
            return resp.status, (await resp.json())["error"]["code"]
        return resp.status, "ok"


async def _socket(server, token: str, clients) -> tuple[int, str]:
    c = await Client.connect(server.base_url, "/ws/agent")
    clients.append(c)
    await c.send({"type": "hello", "token": token})
    first = await c.expect(lambda f: f["type"] in ("ready", "error"))
    if first["type"] == "ready":
        return 200, "ok"
    return {4401: 401, 4403: 403}[await c.expect_closed()], first["code"]


async def _everywhere(server, token: str, clients) -> set[tuple[int, str]]:
    return {await _rest(server, token), await _sse(server, token), await _socket(server, token, clients)}


async def test_every_surface_refuses_a_bad_credential_the_same_way(server, tenant, make_api_key, clients):
    secret = server.app[SETTINGS].secret_key
    owner = tenant["access_token"]
    revoked = await make_api_key(server, owner, scopes=("read",))
    status, keys = await server.call("GET", "/api/keys", token=owner)
    assert status == 200
    key_id = next(k["id"] for k in keys["keys"] if revoked.startswith(k["prefix"]))
    status, _ = await server.call("DELETE", f"/api/keys/{key_id}", token=owner)
    assert status == 200
    write_only = await make_api_key(server, owner, scopes=("write",))
    no_workspace, _ = issue_access_token(secret, user_id=uuid.UUID(tenant["user_id"]), tenant_id=None,
                                         session_id=uuid.uuid4(), ttl=300)
    forged, _ = issue_access_token("not-the-server-secret-though-just-as-long", user_id=uuid.UUID(tenant["user_id"]),
                                   tenant_id=uuid.UUID(tenant["tenant_id"]), session_id=uuid.uuid4(), ttl=300)
    sess = await widget_session(server, tenant["key"])
    visitor_token, _ = issue_visitor_token(secret, tenant_id=tenant["tenant_id"], chatbot_id=tenant["chatbot_id"],
                                           conversation_id=sess["conversation_id"], public_key=tenant["key"])
    cases = {
        "prl_nope_" + "x" * 40: (401, "invalid_api_key"),
        revoked: (401, "invalid_api_key"),
        write_only: (403, "insufficient_scope"),
        "eyJhbGciOiJIUzI1NiJ9.e30.x": (401, "invalid_token"),
        forged: (401, "invalid_token"),
        visitor_token: (401, "invalid_token"),  # a visitor's token never passes for a member's
        no_workspace: (401, "no_tenant"),
    }
    for token, expected in cases.items():
        assert await _everywhere(server, token, clients) == {expected}, token[:12]


async def test_a_signed_out_session_is_refused_everywhere_by_sql(server, signup, clients):
    """The JWT is still well signed; only parley.begin_request knows the session ended."""
    person = await signup(server)
    token = person["access_token"]
    assert await _everywhere(server, token, clients) == {(200, "ok")}
    status, _ = await server.call("POST", "/api/auth/logout", token=token, json={})
    assert status == 204
    refused = await _everywhere(server, token, clients)
    assert len(refused) == 1 and next(iter(refused))[0] == 401, refused


async def test_a_read_key_reads_everywhere_but_writes_nowhere(server, tenant, make_api_key, clients):
    key = await make_api_key(server, tenant["access_token"], scopes=("read",))
    assert await _everywhere(server, key, clients) == {(200, "ok")}
    sess = await widget_session(server, tenant["key"])
    status, body = await server.call("POST", f"/api/conversations/{sess['conversation_id']}/claim", token=key)
    assert (status, body["error"]["code"]) == (403, "insufficient_scope")
    live = await agent(server, key)
    clients.append(live)
