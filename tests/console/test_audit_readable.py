"""Audit rows read as changes (parley.audit_changes: field: before → after), and an update that
changes nothing (the same plan again, the same name) leaves no row with identical before/after."""
from __future__ import annotations

import html as htmllib
import re


async def test_audit_changes_in_sql(owner_conn):
    changes = await owner_conn.fetchval("SELECT parley.audit_changes($1)", {
        "before": {"role": "agent", "name": "Ada", "gone": 1}, "after": {"role": "admin", "name": "Ada", "new": True}})
    assert changes == [{"field": "gone", "before": 1, "after": None},
                       {"field": "new", "before": None, "after": True},
                       {"field": "role", "before": "agent", "after": "admin"}]
    assert await owner_conn.fetchval("SELECT parley.audit_changes($1)", {"name": "Shop", "template": "faq"}) == [
        {"field": "name", "value": "Shop"}, {"field": "template", "value": "faq"}]
    assert await owner_conn.fetchval("SELECT parley.audit_changes('{}')") == []


async def test_no_op_tenant_update_is_not_audited(server, signup, owner_conn):
    owner = await signup(server)
    tenant = owner["tenant_id"]
    before = await owner_conn.fetchval("SELECT count(*) FROM parley.audit_log WHERE tenant_id = $1"
                                       " AND action = 'tenant.update'", tenant)
    # what change_plan does when the plan is already that one (a resent webhook, a second downgrade)
    await owner_conn.execute("UPDATE parley.tenants SET plan = plan WHERE id = $1", tenant)
    assert await owner_conn.fetchval("SELECT count(*) FROM parley.audit_log WHERE tenant_id = $1"
                                     " AND action = 'tenant.update'", tenant) == before
    await owner_conn.execute("UPDATE parley.tenants SET plan = 'starter' WHERE id = $1", tenant)
    details = await owner_conn.fetchval("SELECT details FROM parley.audit_log WHERE tenant_id = $1"
                                        " AND action = 'tenant.update' ORDER BY id DESC LIMIT 1", tenant)
    assert details["before"] != details["after"]
    assert await owner_conn.fetchval("SELECT parley.audit_changes($1)", details) == [
        {"field": "plan", "before": "free", "after": "starter"}]


async def test_the_audit_page_shows_field_before_after(server, signup, console_client):
    owner = await signup(server)
    member = await signup(server, join=owner, role="agent")
    status, out = await server.call("PATCH", f"/api/members/{member['user_id']}", token=owner["access_token"],
                                    json={"role": "admin"})
    assert status == 200, out
    status, page = await server.call("GET", "/api/audit?action=member.update", token=owner["access_token"])
    assert status == 200 and {"field": "role", "before": "agent", "after": "admin"} in page["items"][0]["changes"]
    c = console_client()
    await c.sign_in(owner["email"], owner["password"])
    status, html, _ = await c.get("/console/audit?action=member.update")
    assert status == 200
    cell = re.search(r'<td class="small break audit-changes">(.*?)</td>', html, re.S).group(1)
    text = htmllib.unescape(re.sub(r"<[^>]+>", "", cell))
    assert "role: agent → admin" in text
    assert '"before"' not in cell and "{" not in text  # no raw JSON rows
