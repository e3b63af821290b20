"""The staff back-office: who is staff (configured, verified email, live session, no API keys),
stats, search, plan assignment through parley.change_plan, limit overrides, suspension, the
cross-tenant audit view, and every staff action in the tenant's own audit trail as actor staff."""
from __future__ import annotations

import pytest

OPS = "ops@example.test"


@pytest.fixture
def settings(settings):
    settings.extra["admin_emails"] = [OPS.upper(), " "]
    return settings


@pytest.fixture
async def staff(server, signup, owner_conn):
    person = await signup(server, email=OPS)
    # Using a password-reset link is what verifies an email; here it is set directly.
    await owner_conn.execute("UPDATE parley.users SET email_verified_at = now() WHERE lower(email) = $1", OPS)
    return person


async def test_only_verified_listed_people_in_a_live_session(server, signup, owner_conn, make_api_key):
    early = await signup(server, email=OPS)  # signed up with the operator's address, never verified it
    status, body = await server.call("GET", "/api/staff/stats", token=early["access_token"])
    assert status == 403 and body["error"]["code"] == "not_staff"
    other = await signup(server)
    await owner_conn.execute("UPDATE parley.users SET email_verified_at = now()")
    status, body = await server.call("GET", "/api/staff/stats", token=other["access_token"])
    assert status == 403
    key = await make_api_key(server, early["access_token"])
    status, body = await server.call("GET", "/api/staff/stats", token=key)
    assert status == 401
    status, body = await server.call("GET", "/api/staff/stats", token=early["access_token"])
    assert status == 200 and body["tenants"] == 2
    # Signed out: the token is still unexpired but the session is over.
    status, _ = await server.call("POST", "/api/auth/logout", json={}, token=early["access_token"])
    assert status in (200, 204)
    status, body = await server.call("GET", "/api/staff/stats", token=early["access_token"])
    assert status == 403
    # Staff inside a tenant go through begin_request, which checks the same.
    status, body = await server.call("POST", f"/api/staff/tenants/{other['tenant_id']}/plan", json={"plan": "pro"},
                                     token=other["access_token"])
    assert status == 403 and body["error"]["code"] == "not_staff"


async def test_search_plan_limits_suspend_all_audited_as_staff(server, signup, staff, owner_conn):
    customer = await signup(server, email="owner@acme.test", tenant="acme-shop")
    tid = customer["tenant_id"]
    token = staff["access_token"]
    status, body = await server.call("GET", "/api/staff/tenants?q=ACME", token=token)
    assert status == 200 and [t["slug"] for t in body["tenants"]] == ["acme-shop"]
    status, body = await server.call("GET", "/api/staff/tenants?q=owner@acme", token=token)
    assert [t["id"] for t in body["tenants"]] == [tid]

    status, body = await server.call("POST", f"/api/staff/tenants/{tid}/plan", json={"plan": "white_label",
                                                                                   "interval": "year"}, token=token)
    assert status == 200 and body["plan"] == "white_label", body
    row = await owner_conn.fetchrow("SELECT source, actor_kind FROM parley.plan_changes WHERE tenant_id = $1::uuid", tid)
    assert tuple(row) == ("staff", "staff")

    status, body = await server.call("POST", f"/api/staff/tenants/{tid}/limits",
                                     json={"max_chatbots": 0, "ai_msgs_per_day": 7, "note": "pilot"}, token=token)
    assert status == 200 and body["max_chatbots"] == 0 and body["ai_msgs_per_day"] == 7
    status, body = await server.call("POST", f"/api/staff/tenants/{tid}/limits", json={"ai_msgs_per_day": None},
                                     token=token)
    assert body["ai_msgs_per_day"] == 200000 and body["max_chatbots"] == 0  # back to the plan; others kept
    # Every column of the overrides follows a second change too (the whole row is written).
    for pages in (7, 9):
        status, body = await server.call("POST", f"/api/staff/tenants/{tid}/limits", token=token,
                                         json={"knowledge_pages": pages, "max_open_conversations_per_ip": pages,
                                               "conversations_per_min_chatbot": pages})
        assert status == 200, body
        row = await owner_conn.fetchrow(
            "SELECT knowledge_pages, max_open_conversations_per_ip, conversations_per_min_chatbot, max_chatbots"
            " FROM parley.tenant_limits WHERE tenant_id = $1::uuid", tid)
        assert tuple(row) == (pages, pages, pages, 0)
    for bad in ({"max_chatbots": -1}, {"plan": "pro"}, {"max_seats": "many"}):
        status, body = await server.call("POST", f"/api/staff/tenants/{tid}/limits", json=bad, token=token)
        assert status == 422, (bad, body)

    status, body = await server.call("POST", f"/api/staff/tenants/{tid}/suspend", json={"reason": "chargeback"},
                                     token=token)
    assert status == 200 and body["suspended_at"]
    status, body = await server.call("GET", "/api/chatbots", token=customer["access_token"])
    assert status == 403 and body["error"]["code"] == "tenant_suspended"
    status, body = await server.call("GET", "/api/staff/stats", token=token)
    assert body["suspended"] == 1 and body["by_plan"]["white_label"] == 1
    status, body = await server.call("POST", f"/api/staff/tenants/{tid}/unsuspend", json={}, token=token)
    assert status == 200 and body["suspended_at"] is None

    # The tenant sees every staff action in its own audit trail, with actor staff.
    status, body = await server.call("GET", "/api/audit?limit=50", token=customer["access_token"])
    assert status == 200, body
    staff_rows = [e for e in body["items"] if e["actor_kind"] == "staff"]
    assert {e["action"] for e in staff_rows} >= {"billing.plan_changed", "staff.limits_changed", "staff.suspended",
                                                 "staff.unsuspended"}
    # The cross-tenant view: this tenant's and the staff person's own workspace.
    status, body = await server.call("GET", "/api/staff/audit?limit=500", token=token)
    assert {e["tenant_id"] for e in body["events"]} >= {tid, staff["tenant_id"]}
    status, body = await server.call("GET", f"/api/staff/audit?tenant_id={tid}", token=token)
    assert {e["tenant_id"] for e in body["events"]} == {tid} and "ip" not in body["events"][0]


async def test_suspended_widget_is_gone_and_staff_still_reach_the_tenant(server, signup, staff, owner_conn):
    customer = await signup(server)
    tid = customer["tenant_id"]
    status, bot = await server.call("POST", "/api/chatbots", json={"name": "B", "allowed_origins": ["https://shop.test"]},
                                    token=customer["access_token"])
    assert status == 201
    await server.call("POST", f"/api/staff/tenants/{tid}/suspend", json={}, token=staff["access_token"])
    async with owner_conn.transaction():
        assert await owner_conn.fetchval("SELECT count(*) FROM parley.widget_chatbot($1)", bot["public_key"]) == 0
    status, _body = await server.call("POST", f"/api/staff/tenants/{tid}/plan", json={"plan": "pro"},
                                     token=staff["access_token"])
    assert status == 200
    assert await owner_conn.fetchval("SELECT count(*) FROM parley.chatbots WHERE tenant_id = $1::uuid", tid) == 1
