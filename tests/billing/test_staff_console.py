"""The back-office's custom domains in the console (/console/staff/domains), over HTTP like a browser:
staff list every workspace's domains, force one active (routed without a DNS check) or disable it, each
action audited in that workspace's trail with actor staff; anyone else, a forged form or a bad value
changes nothing; the same list over the API (GET /api/staff/domains)."""
from __future__ import annotations

import pytest

OPS = "ops@example.test"
HOST = "chat.shopco.com"


@pytest.fixture
def settings(settings):
    settings.extra["admin_emails"] = [OPS]
    return settings


@pytest.fixture
async def staff(server, signup, owner_conn, console_client):
    person = await signup(server, email=OPS)
    await owner_conn.execute("UPDATE parley.users SET email_verified_at = now() WHERE lower(email) = $1", OPS)
    c = console_client()
    await c.sign_in(person["email"], person["password"])
    c.person = person
    return c


async def claimed(make_tenant, host=HOST):
    t = await make_tenant()
    async with t.tx() as conn:
        await conn.fetchval("SELECT parley.change_plan('white_label', 'webhook', '{}')")
    status, body = await t.call("POST", "/api/domains", json={"hostname": host})
    assert status == 201, body
    return t


async def status_of(owner_conn, t, host=HOST):
    return await owner_conn.fetchval("SELECT status FROM parley.custom_domains WHERE tenant_id = $1 AND hostname = $2",
                                     t.id, host)


async def tls_ask(server, host=HOST) -> int:
    return (await server.call("GET", f"/api/domains/check?domain={host}"))[0]


async def test_staff_force_and_disable_from_the_console_audited(make_tenant, staff, server, owner_conn):
    t = await claimed(make_tenant)
    other = await claimed(make_tenant, "help.elsewhere.com")
    status, html, _ = await staff.get("/console/staff/domains")
    assert status == 200 and HOST in html and "help.elsewhere.com" in html and str(t.id) in html
    status, html, _ = await staff.get("/console/staff/domains?q=shopco")
    assert HOST in html and "help.elsewhere.com" not in html
    status, html, _ = await staff.get("/console/")
    assert 'href="/console/staff/domains"' in html  # the back-office link, for staff only

    status, html, resp = await staff.post("/console/staff/domains", {"tenant_id": str(t.id), "hostname": HOST,
                                                                     "status": "active", "q": "shopco"})
    assert status == 200 and "Domain forced active." in html and resp.url.query.get("q") == "shopco"
    assert await status_of(owner_conn, t) == "active" and await tls_ask(server) == 200
    status, html, _ = await staff.post("/console/staff/domains", {"tenant_id": str(t.id), "hostname": HOST,
                                                                  "status": "disabled", "reason": "abuse report"})
    assert status == 200 and "Domain disabled." in html and "abuse report" in html
    assert await status_of(owner_conn, t) == "disabled" and await tls_ask(server) == 404
    assert await status_of(owner_conn, other, "help.elsewhere.com") == "pending"
    rows = await owner_conn.fetch("SELECT action, actor_kind, actor_id FROM parley.audit_log WHERE tenant_id = $1 "
                                  "AND action LIKE 'staff.domain_%' ORDER BY id", t.id)
    assert [(r["action"], r["actor_kind"]) for r in rows] == [("staff.domain_active", "staff"),
                                                              ("staff.domain_disabled", "staff")]
    assert {r["actor_id"] for r in rows} == {staff.person["user_id"]}
    # The workspace sees the staff actions in its own trail.
    status, body = await t.call("GET", "/api/audit")
    assert status == 200 and {"staff.domain_active", "staff.domain_disabled"} <= {e["action"] for e in body["items"]}

    # The same list over the API, for staff only.
    status, body = await server.call("GET", "/api/staff/domains?q=shopco", token=staff.person["access_token"])
    assert status == 200 and [(d["hostname"], d["status"], d["routed"]) for d in body["domains"]] == [
        (HOST, "disabled", False)]
    status, body = await t.call("GET", "/api/staff/domains")
    assert status == 403


async def test_refusals_are_shown_and_change_nothing(make_tenant, staff, server, owner_conn):
    a = await claimed(make_tenant)
    b = await claimed(make_tenant)  # the same name, claimed by another workspace
    await staff.post("/console/staff/domains", {"tenant_id": str(a.id), "hostname": HOST, "status": "active"})
    status, html, _ = await staff.post("/console/staff/domains", {"tenant_id": str(b.id), "hostname": HOST,
                                                                  "status": "active"})
    assert status == 409 and "already in use by another workspace" in html
    assert await status_of(owner_conn, b) == "pending"
    for form, code in (({"status": "paused"}, 422), ({"hostname": "nope.example.org", "status": "disabled"}, 404),
                       ({"tenant_id": "not-a-uuid", "status": "disabled"}, 404)):
        data = {"tenant_id": str(a.id), "hostname": HOST, **form}
        status, html, _ = await staff.post("/console/staff/domains", data)
        assert status == code, (form, status, html[:300])
    status, html, _ = await staff.post("/console/staff/domains", {"tenant_id": str(a.id), "hostname": HOST,
                                                                  "status": "disabled", "_csrf": "forged"})
    assert status == 403
    assert await status_of(owner_conn, a) == "active"


async def test_only_staff_reach_the_back_office(make_tenant, server, console_client, signup, owner_conn):
    t = await claimed(make_tenant)
    # The workspace's own owner, and someone who signed up with the operator's address unverified.
    for person in (t.owner, await signup(server, email=OPS)):
        c = console_client()
        await c.sign_in(person["email"], person["password"])
        status, html, _ = await c.get("/console/")
        assert 'href="/console/staff/domains"' not in html
        status, html, _ = await c.get("/console/staff/domains")
        assert status == 403 and HOST not in html
        status, html, _ = await c.post("/console/staff/domains", {"tenant_id": str(t.id), "hostname": HOST,
                                                                  "status": "active"})
        assert status == 403
    assert await status_of(owner_conn, t) == "pending" and await tls_ask(server) == 404
