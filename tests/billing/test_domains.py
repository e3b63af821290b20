"""Custom domains: claim → DNS verification against a local DNS server speaking the protocol on
127.0.0.1 (TXT ownership token, CNAME to the target, A-record fallback) → active; widget traffic on
that Host reaches only the owner's chatbots and nothing else; the on-demand TLS question; embed
snippets switch; staff force-activate and disable; a downgrade disables; per-tenant isolation."""
from __future__ import annotations

import aiohttp
import pytest
from support.billing import DNS_TARGET, resolver_down, with_dns
from support.console import console_client  # noqa: F401 (fixture)

TARGET = DNS_TARGET
HOST = "chat.shopco.com"
OPS = "ops@example.test"


@pytest.fixture
def settings(settings, fake_dns):
    settings.extra["admin_emails"] = [OPS]
    return with_dns(settings, fake_dns)


async def white_label(tenant):
    async with tenant.tx() as conn:
        await conn.fetchval("SELECT parley.change_plan('white_label', 'webhook', '{}')")
    return tenant


async def claimed(tenant, host=HOST):
    status, body = await tenant.call("POST", "/api/domains", json={"hostname": host})
    assert status == 201, body
    return body


async def verify(tenant, host=HOST):
    status, body = await tenant.call("POST", f"/api/domains/{host}/verify")
    assert status == 200, body
    return body


async def tls_ask(server, host=HOST) -> int:
    status, _ = await server.call("GET", f"/api/domains/check?domain={host}")
    return status


async def test_claim_verify_activate_then_widget_traffic_on_that_host(make_tenant, fake_dns, settings):
    free = await make_tenant()
    status, body = await free.call("POST", "/api/domains", json={"hostname": HOST})
    assert status == 402 and body["error"]["code"] == "plan_limit"
    t = await white_label(await make_tenant())
    for bad in ("localhost", "127.0.0.1", "x", "svc.internal", "shop.test", "a..b.com", "evil.com/x", "-a.com"):
        status, body = await t.call("POST", "/api/domains", json={"hostname": bad})
        assert status == 422 and body["error"]["code"] == "invalid_hostname", bad
    d = await claimed(t, "Chat.ShopCo.com.")
    assert (d["hostname"], d["status"]) == (HOST, "pending")
    assert d["txt"]["name"] == f"_parley.{HOST}" and d["txt"]["value"].startswith("parley-verify=")
    assert d["cname"] == {"name": HOST, "value": TARGET}

    # Nothing in DNS; then a wrong token; then the token but a CNAME elsewhere: still pending.
    assert (await verify(t))["status"] == "pending"
    fake_dns.records[(f"_parley.{HOST}", "TXT")] = ["parley-verify=0123456789abcdef0123456789abcdef"]
    fake_dns.records[(HOST, "CNAME")] = [TARGET + "."]
    out = await verify(t)
    assert out["status"] == "pending" and out["check"]["txt"] is False and out["check"]["routed"] is True
    fake_dns.records[(f"_parley.{HOST}", "TXT")] = [d["txt"]["value"]]
    fake_dns.records[(HOST, "CNAME")] = ["elsewhere.example.net."]
    out = await verify(t)
    assert out["status"] == "pending" and out["check"]["txt"] is True and out["check"]["routed"] is False
    assert await tls_ask(t.server) == 404
    assert (f"_parley.{HOST}", "TXT") in fake_dns.queries and (HOST, "CNAME") in fake_dns.queries

    fake_dns.records[(HOST, "CNAME")] = [TARGET.upper() + "."]
    out = await verify(t)
    assert out["status"] == "active" and out["activated_by"] == "dns" and out["verified_at"]
    assert await tls_ask(t.server) == 200 and await tls_ask(t.server, HOST.upper()) == 200
    assert await tls_ask(t.server, "other.shopco.com") == 404
    status, _ = await t.server.call("GET", "/api/domains/check")
    assert status == 400

    # The widget on the custom Host: the owner's chatbot yes, another tenant's no, nothing else served.
    status, bot = await t.call("POST", "/api/chatbots", json={"name": "Shop bot"})
    assert status == 201, bot
    other = await make_tenant()
    status, other_bot = await other.call("POST", "/api/chatbots", json={"name": "Other"})
    assert status == 201
    on_host = {"Host": HOST, "Origin": "https://shopco.com"}
    status, mine = await t.server.call("POST", "/api/widget/sessions", json={"chatbot_key": bot["public_key"]},
                                       headers=on_host)
    assert status == 201 and mine["tenant_id"] == str(t.id), mine
    status, body = await t.server.call("POST", "/api/widget/sessions", json={"chatbot_key": other_bot["public_key"]},
                                       headers=on_host)
    assert status == 404 and body["error"]["code"] == "unknown_chatbot"
    status, body = await t.server.call("POST", "/api/widget/sessions", json={"chatbot_key": other_bot["public_key"]},
                                       headers={"Origin": "https://shopco.com"})
    assert status == 201  # the same chatbot on the server's own address is fine
    # Its visitor token does not open a socket on this workspace's domain either; the owner's does.
    async with aiohttp.ClientSession() as http:
        for token, ready in ((body["token"], False), (mine["token"], True)):
            async with http.ws_connect(t.server.base_url.replace("http", "ws", 1) + "/ws/visitor",
                                       headers={"Host": HOST}) as ws:
                await ws.send_json({"type": "hello", "token": token})
                frame = await ws.receive_json(timeout=10)
                assert (frame["type"] == "ready") is ready, frame
    for path in ("/api/billing", "/console/", "/api/domains"):
        status, body = await t.call("GET", path, headers={"Host": HOST})
        assert status == 404 and body["error"]["code"] == "not_found", path
    status, _ = await t.call("GET", "/api/billing", headers={"Host": "unverified.shopco.com"})
    assert status == 200  # a Host nobody verified changes nothing


async def test_a_record_fallback_and_resolver_errors(make_tenant, fake_dns, settings):
    t = await white_label(await make_tenant())
    d = await claimed(t, "shopco.com")
    fake_dns.records[("_parley.shopco.com", "TXT")] = ["v=spf1 -all", d["txt"]["value"]]
    fake_dns.records[("shopco.com", "A")] = ["198.51.100.7"]
    assert (await verify(t, "shopco.com"))["status"] == "pending"  # an address that is not the target's
    with resolver_down(fake_dns, settings, t.server.app):
        out = await verify(t, "shopco.com")
    assert out["status"] == "pending" and "did not answer" in out["check"]["error"]
    fake_dns.records[("shopco.com", "A")] = ["198.51.100.7", "203.0.113.10"]
    out = await verify(t, "shopco.com")
    assert out["status"] == "active", out
    assert await tls_ask(t.server, "shopco.com") == 200
    # Unpaid past the grace period: Free's limits, so the domain stops being served (claim kept); paid: back.
    async with t.tx() as conn:
        await conn.fetchval("SELECT parley.change_plan('white_label', 'webhook', jsonb_build_object('provider', "
                            "'stripe', 'status', 'past_due', 'delinquent_since', now() - interval '8 days'))")
    assert await tls_ask(t.server, "shopco.com") == 404
    async with t.tx() as conn:
        await conn.fetchval("SELECT parley.change_plan('white_label', 'webhook', "
                            "'{\"provider\": \"stripe\", \"status\": \"active\"}')")
    assert await tls_ask(t.server, "shopco.com") == 200


async def test_a_name_belongs_to_whoever_proves_it_first(make_tenant, fake_dns):
    a, b = await white_label(await make_tenant()), await white_label(await make_tenant())
    da, db = await claimed(a), await claimed(b)
    assert da["txt"]["value"] != db["txt"]["value"]
    fake_dns.records[(f"_parley.{HOST}", "TXT")] = [da["txt"]["value"]]
    fake_dns.records[(HOST, "CNAME")] = [TARGET]
    assert (await verify(b))["status"] == "pending"  # a's token proves nothing for b
    assert (await verify(a))["status"] == "active"
    fake_dns.records[(f"_parley.{HOST}", "TXT")] = [da["txt"]["value"], db["txt"]["value"]]
    status, body = await b.call("POST", f"/api/domains/{HOST}/verify")
    assert status == 409 and body["error"]["code"] == "domain_taken"
    # b sees and touches only its own claim; a's stays routed.
    status, listed = await b.call("GET", "/api/domains")
    assert [x["status"] for x in listed["domains"]] == ["pending"]
    status, _ = await b.call("DELETE", f"/api/domains/{HOST}")
    assert status == 204 and await tls_ask(a.server) == 200
    status, _ = await b.call("DELETE", f"/api/domains/{HOST}")
    assert status == 404
    status, listed = await a.call("GET", "/api/domains")
    assert [x["status"] for x in listed["domains"]] == ["active"]


async def test_the_app_role_cannot_activate_or_route_by_itself(make_tenant, fake_dns):
    import asyncpg

    t = await white_label(await make_tenant())
    await claimed(t)
    async with t.member_tx() as conn:
        for sql in ("UPDATE parley.custom_domains SET status = 'active'",
                    f"INSERT INTO parley.domain_routes (hostname, tenant_id) VALUES ('{HOST}', '{t.id}')"):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                async with conn.transaction():
                    await conn.execute(sql)
        with pytest.raises(asyncpg.PostgresError):
            async with conn.transaction():
                await conn.execute("SELECT parley.staff_set_domain($1, 'active')", HOST)
    assert await tls_ask(t.server) == 404


async def test_staff_force_and_disable_and_a_downgrade_disables(make_tenant, fake_dns, server, signup, owner_conn):
    t = await white_label(await make_tenant())
    await claimed(t)
    staff = await signup(server, email=OPS)
    await owner_conn.execute("UPDATE parley.users SET email_verified_at = now() WHERE lower(email) = $1", OPS)
    path = f"/api/staff/tenants/{t.id}/domains/{HOST}"
    status, body = await t.call("POST", path, json={"status": "active"})
    assert status == 403  # the tenant's own owner is not staff
    status, body = await server.call("POST", path, json={"status": "active"}, token=staff["access_token"])
    assert status == 200 and body["status"] == "active" and body["activated_by"] == "staff", body
    assert await tls_ask(server) == 200
    status, body = await server.call("POST", path, json={"status": "disabled", "reason": "abuse report"},
                                     token=staff["access_token"])
    assert status == 200 and body["status"] == "disabled" and body["disabled_reason"] == "abuse report"
    assert await tls_ask(server) == 404
    # A disabled domain stays disabled whatever the DNS says.
    d = (await t.call("GET", "/api/domains"))[1]["domains"][0]
    fake_dns.records[(f"_parley.{HOST}", "TXT")] = [d["txt"]["value"]]
    fake_dns.records[(HOST, "CNAME")] = [TARGET]
    assert (await verify(t))["status"] == "disabled"
    await server.call("POST", path, json={"status": "active"}, token=staff["access_token"])
    assert await tls_ask(server) == 200
    actions = [r["action"] for r in await owner_conn.fetch(
        "SELECT action FROM parley.audit_log WHERE tenant_id = $1 AND action LIKE '%domain%' ORDER BY id", t.id)]
    assert actions == ["domain.claimed", "staff.domain_active", "staff.domain_disabled", "staff.domain_active"]

    # Down to Pro (no custom domains) through the one plan change: disabled, unrouted.
    async with t.tx() as conn:
        await conn.fetchval("SELECT parley.change_plan('pro', 'webhook', '{}')")
    assert await tls_ask(server) == 404
    d = (await t.call("GET", "/api/domains"))[1]
    assert d["allowed"] is False and d["domains"][0]["status"] == "disabled"
    assert "pro plan" in d["domains"][0]["disabled_reason"]
    assert await owner_conn.fetchval("SELECT count(*) FROM parley.domain_routes WHERE tenant_id = $1", t.id) == 0


async def test_embed_snippet_switches_to_the_active_domain(make_tenant, fake_dns, console_client, signup, server,  # noqa: F811  pytest fixture imported above, injected by name
                                                          owner_conn):
    owner = await signup(server, plan="white_label")
    status, bot = await server.call("POST", "/api/chatbots", json={"name": "Shop"}, token=owner["access_token"])
    assert status == 201
    c = console_client()
    await c.sign_in(owner["email"], owner["password"])
    status, html, _ = await c.get(f"/console/chatbots/{bot['id']}")
    assert status == 200 and f'https://{HOST}/widget.js' not in html
    status, html, _ = await c.post("/console/domains", {"hostname": "localhost"})
    assert status == 422 and "public host name" in html
    status, html, _ = await c.post("/console/domains", {"hostname": HOST})
    assert status == 200 and f"_parley.{HOST}" in html and TARGET in html and "Verify" in html
    status, listed = await server.call("GET", "/api/domains", token=owner["access_token"])
    d = listed["domains"][0]
    fake_dns.records[(f"_parley.{HOST}", "TXT")] = [d["txt"]["value"]]
    fake_dns.records[(HOST, "CNAME")] = [TARGET]
    status, html, _ = await c.post("/console/domains/verify", {"hostname": HOST})
    assert status == 200 and "active" in html
    status, html, _ = await c.get(f"/console/chatbots/{bot['id']}")
    assert f"https://{HOST}/widget.js" in html
