"""The console's billing page: plan cards, meters, warnings, downgrade with payments off, and
checkout / portal redirects to Stripe (the local fake) with payments on."""
from __future__ import annotations

import re

import pytest
from pyapp.billing.config import BillingConfig
from support.fakes.stripe_api import SECRET_KEY, WEBHOOK_SECRET, FakeStripe


async def test_billing_page_payments_off_downgrade_and_warnings(server, signup, console_client, owner_conn):
    owner = await signup(server, plan="starter")
    tenant_id = owner["tenant_id"]
    await owner_conn.execute("INSERT INTO parley.tenant_limits (tenant_id, included_ai_messages) VALUES ($1, 10)",
                             tenant_id)
    await owner_conn.execute("INSERT INTO parley.usage_counters (tenant_id, day, metric, shard, value) "
                             "VALUES ($1, (now() AT TIME ZONE 'UTC')::date, 'ai_messages', 0, 9)", tenant_id)
    c = console_client()
    await c.sign_in(owner["email"], owner["password"])
    status, html, _ = await c.get("/console/billing")
    assert status == 200
    assert 'id="current-plan">starter<' in html
    assert all(f'data-plan="{p}"' in html for p in ("free", "starter", "pro", "white_label"))
    assert "$99</strong> a month, or <strong>$990</strong> a year" in html
    assert 'data-warning="ai_messages"' in html and "90%" in html
    assert "/console/billing/checkout" not in html and "Payments are not enabled" in html
    status, html, _resp = await c.post("/console/billing/downgrade", {})
    assert status == 200 and "You are on the Free plan now." in html, html[:300]
    assert await owner_conn.fetchval("SELECT plan FROM parley.tenants WHERE id = $1::uuid", tenant_id) == "free"
    # Forms need the session's CSRF token.
    status, html, _ = await c.post("/console/billing/downgrade", {"_csrf": "forged"})
    assert status == 403


async def test_agents_do_not_see_billing(server, signup, console_client):
    owner = await signup(server)
    agent = await signup(server, join=owner, role="agent")
    c = console_client()
    await c.sign_in(agent["email"], agent["password"])
    status, _html, _ = await c.get("/console/billing")
    assert status == 403


@pytest.fixture
async def fake_stripe():
    async with FakeStripe() as fake:
        yield fake


@pytest.fixture
def stripe_settings(settings, fake_stripe):
    settings.public_url = "https://parley.example.com"
    settings.extra["billing"] = BillingConfig(enabled=True, secret_key=SECRET_KEY, webhook_secret=WEBHOOK_SECRET,
                                              api_base=fake_stripe.base_url)
    return settings


async def test_checkout_and_portal_redirect_to_stripe(stripe_settings, server, signup, console_client, fake_stripe):
    owner = await signup(server)
    c = console_client()
    await c.sign_in(owner["email"], owner["password"])
    status, html, _ = await c.get("/console/billing")
    assert status == 200 and html.count('action="/console/billing/checkout"') == 3
    status, html, resp = await c.post("/console/billing/checkout", {"plan": "pro", "interval": "year",
                                                                    "extra_seats": "2"}, allow_redirects=False)
    assert status == 303 and resp.headers["Location"].startswith("https://checkout.stripe.test/")
    session = next(iter(fake_stripe.sessions.values()))
    assert session["metadata"] == {"tenant_id": owner["tenant_id"], "plan": "pro", "interval": "year",
                                   "extra_seats": "2"}
    status, html, _ = await c.get("/console/billing")
    assert 'action="/console/billing/portal"' in html
    status, html, resp = await c.post("/console/billing/portal", {}, allow_redirects=False)
    assert status == 303 and resp.headers["Location"].startswith("https://billing.stripe.test/")
    status, html, _ = await c.post("/console/billing/checkout", {"plan": "pro", "interval": "weekly"})
    assert status == 422 and re.search(r"Choose a plan", html)


async def test_banner_on_every_page(server, signup, console_client, owner_conn):
    owner = await signup(server)
    c = console_client()
    await c.sign_in(owner["email"], owner["password"])
    status, html, _ = await c.get("/console/inbox")
    assert 'id="billing-banner"' not in html
    await owner_conn.execute(
        "INSERT INTO parley.usage_warnings (tenant_id, period_start, metric, threshold, used, allowance)"
        " VALUES ($1::uuid, date_trunc('month', now() AT TIME ZONE 'UTC')::date, 'conversations', 80, 240, 300)",
        owner["tenant_id"])
    status, html, _ = await c.get("/console/inbox")
    assert status == 200 and 'id="billing-banner"' in html and "80 % of an allowance" in html
    await owner_conn.execute(
        "INSERT INTO parley.subscriptions (tenant_id, provider, plan, status, grace_until)"
        " VALUES ($1::uuid, 'stripe', 'free', 'past_due', now() - interval '1 hour')", owner["tenant_id"])
    _status, html, _ = await c.get("/console/leads")
    assert "Payment is overdue" in html and 'href="/console/billing">Plan' in html
