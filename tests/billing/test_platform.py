"""Small platform features of the SaaS issue: the tenant id in widget session responses, the batch
fetch of tenants by id (who may see which), and the widgets' credit line resolved chatbot →
workspace → server."""
from __future__ import annotations

import uuid

import pytest


async def test_widget_session_names_tenant_and_chatbot(tenant):
    status, bot = await tenant.call("POST", "/api/chatbots", json={"name": "B", "allowed_origins": ["https://shop.test"]})
    assert status == 201
    status, body = await tenant.server.call("POST", "/api/widget/sessions", json={"chatbot_key": bot["public_key"], "start": True},
                                            headers={"Origin": "https://shop.test"})
    assert status == 201, body
    assert body["tenant_id"] == str(tenant.id) and body["chatbot_id"] == bot["id"]
    status, again = await tenant.server.call("POST", "/api/widget/sessions/refresh", json={"token": body["token"]},
                                             headers={"Origin": "https://shop.test"})
    assert status == 201 and again["tenant_id"] == str(tenant.id)


OPS = "ops@example.test"


@pytest.fixture
def settings(settings):
    settings.extra["admin_emails"] = [OPS]
    return settings


async def test_tenants_batch_fetch_members_see_their_own_staff_see_all(server, signup, owner_conn, make_api_key):
    a, b = await signup(server), await signup(server)
    joined = await signup(server, join=b, role="agent")
    staff = await signup(server, email=OPS)
    await owner_conn.execute("UPDATE parley.users SET email_verified_at = now() WHERE email = $1", OPS)
    gone = str(uuid.uuid4())
    ids = ",".join([b["tenant_id"], a["tenant_id"], gone])
    status, body = await server.call("GET", f"/api/tenants?ids={ids}", token=a["access_token"])
    assert status == 200 and [(t["id"], t["role"]) for t in body["tenants"]] == [(a["tenant_id"], "owner")]
    status, body = await server.call("GET", f"/api/tenants?ids={ids}", token=joined["access_token"])
    assert [(t["id"], t["role"]) for t in body["tenants"]] == [(b["tenant_id"], "agent")]
    status, body = await server.call("GET", f"/api/tenants?ids={ids}", token=staff["access_token"])
    assert status == 200 and [t["id"] for t in body["tenants"]] == [b["tenant_id"], a["tenant_id"]]
    assert {t["plan"] for t in body["tenants"]} == {"free"} and body["tenants"][1]["role"] is None
    assert body["tenants"][0]["suspended"] is False
    # Without ids: the caller's own workspaces, as before.
    status, body = await server.call("GET", "/api/tenants", token=a["access_token"])
    assert [t["id"] for t in body["tenants"]] == [a["tenant_id"]]
    key = await make_api_key(server, a["access_token"])
    status, _ = await server.call("GET", f"/api/tenants?ids={a['tenant_id']}", token=key)
    assert status == 401  # a key belongs to one workspace: GET /api/billing answers for it
    for bad in ("not-a-uuid", ",", ",".join(str(uuid.uuid4()) for _ in range(101))):
        status, body = await server.call("GET", f"/api/tenants?ids={bad}", token=a["access_token"])
        assert status == 422, (bad[:40], body)


async def _session_branding(server, key):
    status, body = await server.call("POST", "/api/widget/sessions", json={"chatbot_key": key},
                                     headers={"Origin": "https://shop.example.com"})
    assert status == 201, body
    return body["config"]["branding"]["powered_by"]


async def test_credit_line_chatbot_then_workspace_then_server(tenant, owner_conn):
    status, bot = await tenant.call("POST", "/api/chatbots", json={"name": "B"})
    assert status == 201
    none = {"label": None, "url": None}
    assert await _session_branding(tenant.server, bot["public_key"]) == none
    # A blank override is no override, for the chatbot as for the workspace (parley.branding_value):
    # not refused as a label, not taken for a replacement the Free plan may not make.
    status, body = await tenant.call("PATCH", f"/api/chatbots/{bot['id']}",
                                     json={"config": {"branding": {"powered_by_label": "   ", "powered_by_url": ""}}})
    assert status == 200, body
    assert await _session_branding(tenant.server, bot["public_key"]) == none
    status, body = await tenant.call("PUT", "/api/branding", json={"label": "Support by Acme"})
    assert status == 402 and body["error"]["code"] == "plan_limit"  # Free keeps Parley's credit
    await owner_conn.execute("UPDATE parley.tenants SET plan = 'starter' WHERE id = $1", tenant.id)
    for bad in ({"url": "javascript:alert(1)"}, {"url": "ftp://acme.example"}, {"label": "Acme\u202eemca"},
                {"label": "   "}):
        status, body = await tenant.call("PUT", "/api/branding", json=bad)
        assert status == 422 or (bad == {"label": "   "} and status == 200), (bad, body)
    status, body = await tenant.call("PUT", "/api/branding", json={"label": "Support by Acme",
                                                                   "url": "https://acme.example.com/help"})
    assert status == 200 and body["effective"] == {"label": "Support by Acme", "url": "https://acme.example.com/help"}
    assert await _session_branding(tenant.server, bot["public_key"]) == body["effective"]
    # The chatbot's own label wins; its link falls back to the workspace's.
    status, _ = await tenant.call("PATCH", f"/api/chatbots/{bot['id']}",
                                  json={"config": {"branding": {"powered_by_label": "Acme Shop help"}}})
    assert status == 200
    assert await _session_branding(tenant.server, bot["public_key"]) == {
        "label": "Acme Shop help", "url": "https://acme.example.com/help"}
    # Its link as the workspace's would be read: trimmed.
    status, body = await tenant.call("PATCH", f"/api/chatbots/{bot['id']}", json={"config": {"branding": {
        "powered_by_label": "Acme Shop help", "powered_by_url": " https://shop.acme.example/help "}}})
    assert status == 200, body
    assert await _session_branding(tenant.server, bot["public_key"]) == {
        "label": "Acme Shop help", "url": "https://shop.acme.example/help"}
    status, body = await tenant.call("PATCH", f"/api/chatbots/{bot['id']}",
                                     json={"config": {"branding": {"powered_by_url": "javascript:alert(1)"}}})
    assert status == 422 and body["error"]["code"] == "invalid_branding"
    # Down to Free: Parley's credit again, nothing deleted.
    async with tenant.member_tx() as conn:
        await conn.fetchval("SELECT parley.change_plan('free', 'downgrade', '{}')")
    assert await _session_branding(tenant.server, bot["public_key"]) == none
    assert await owner_conn.fetchval("SELECT label FROM parley.tenant_branding WHERE tenant_id = $1",
                                     tenant.id) == "Support by Acme"


async def test_console_sets_the_credit_line(server, signup, console_client):
    owner = await signup(server, plan="starter")
    c = console_client()
    await c.sign_in(owner["email"], owner["password"])
    status, html, _ = await c.post("/console/billing/branding", {"label": "Help by Acme", "url": "ftp://x.example"})
    assert status == 422 and "http(s)" in html
    status, html, _ = await c.post("/console/billing/branding", {"label": "Help by Acme",
                                                                 "url": "https://acme.example.com"})
    assert status == 200 and 'value="Help by Acme"' in html and "credit line is saved" in html
    free = await signup(server)
    c2 = console_client()
    await c2.sign_in(free["email"], free["password"])
    status, html, _ = await c2.get("/console/billing")
    assert 'id="branding"' not in html
    status, html, _ = await c2.post("/console/billing/branding", {"label": "Mine"})
    assert status == 402


async def test_server_default_credit_line_from_the_environment(settings, tenant, owner_conn, signup):
    import dataclasses

    import asyncpg
    from support.server import start_server

    status, bot = await tenant.call("POST", "/api/chatbots", json={"name": "B"})
    assert status == 201
    db = await owner_conn.fetchval("SELECT current_database()")
    await owner_conn.execute(f'ALTER DATABASE "{db}" SET parley.branding_url = \'https://db.example\'')
    # A second server started with PARLEY_BRANDING_LABEL / _URL: SQL resolves it for every widget.
    env = dataclasses.replace(settings, extra={**settings.extra, "server_branding": ("Help by Host Co", None)})
    other = await start_server(env)
    try:
        assert await _session_branding(other, bot["public_key"]) == {"label": "Help by Host Co",
                                                                     "url": "https://db.example"}
        status, body = await other.call("GET", "/api/branding", token=tenant.token)
        assert body["server"] == {"label": "Help by Host Co", "url": "https://db.example"}
        # A plan that may replace it: the workspace's own line still wins, field by field.
        await owner_conn.execute("UPDATE parley.tenants SET plan = 'starter' WHERE id = $1", tenant.id)
        status, _ = await other.call("PUT", "/api/branding", json={"url": "https://acme.example.com"}, token=tenant.token)
        assert status == 200
        assert await _session_branding(other, bot["public_key"]) == {"label": "Help by Host Co",
                                                                     "url": "https://acme.example.com"}
    finally:
        await other.close()
    # The environment is checked like any credit line (a server with a bad one stops at start),
    # and only the server's start may write it: not a tenant's transaction, not the app role directly.
    async with tenant.member_tx() as conn:
        with pytest.raises(asyncpg.PostgresError) as err:
            await conn.fetchval("SELECT parley.sync_server_branding(NULL, 'javascript:alert(1)')")
        assert err.value.hint == "invalid_branding"
    async with tenant.member_tx() as conn:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("INSERT INTO parley.server_settings (name, value) VALUES ('branding_label', 'x')")
    # Without the variables the database settings apply again.
    plain = await start_server(settings)
    try:
        await owner_conn.execute("UPDATE parley.tenants SET plan = 'free' WHERE id = $1", tenant.id)
        assert await _session_branding(plain, bot["public_key"]) == {"label": None, "url": "https://db.example"}
    finally:
        await plain.close()
