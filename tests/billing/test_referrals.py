"""Referrals: a stable share code, `?ref=` attribution at sign-up (API and console), the credit
ledger (10 USD per paid conversion, capped per referrer, once per referred tenant) applied as
Stripe customer balance through the outbox against the local fake; attacks on attribution,
tenant isolation of the ledger, the analysts' view."""
from __future__ import annotations

import datetime as dt
import uuid

import asyncpg
import pytest
from jobs.outbox import OutboxDrainer
from pyapp.billing.config import billing_config
from pyapp.billing.sender import StripeSender
from pyapp.outbox.senders import Delivery, Destination
from support.accounts import TEST_PASSWORD
from support.billing import PUBLIC, Tenant, deliver, stripe_live, subscribe


@pytest.fixture
def settings(settings, fake_stripe):
    return stripe_live(settings, fake_stripe)


async def referred(server, code: str | None) -> Tenant:
    slug = f"t-{uuid.uuid4().hex[:12]}"
    body = {"email": f"{slug}@example.test", "password": TEST_PASSWORD, "tenant_name": "Referred", "slug": slug,
            "ref": code}
    status, out = await server.call("POST", "/api/auth/signup", json=body)
    assert status == 201, out
    return Tenant(server, {"access_token": out["access_token"], "tenant_id": out["tenant"]["id"]})


async def ledger(owner_conn, referrer):
    return [dict(r) for r in await owner_conn.fetch(
        "SELECT referred_tenant_id, status, amount_cents, delivery_id, applied_at FROM parley.referral_credits "
        "WHERE tenant_id = $1 ORDER BY signed_up_at", referrer.id)]


async def drain(jobs_pool, settings) -> int:
    drainer = OutboxDrainer(jobs_pool, "referrals", senders={"stripe": StripeSender(billing_config(settings))})
    try:
        return await drainer.drain()
    finally:
        await drainer.close()


async def test_paid_conversion_credits_the_referrer_once_on_its_stripe_balance(
        tenant, fake_stripe, owner_conn, jobs_pool, settings):
    status, mine = await tenant.call("GET", "/api/billing/referrals")
    assert status == 200 and mine["link"] == f"{PUBLIC}/console/sign-up?ref={mine['code']}"
    assert (await tenant.call("GET", "/api/billing/referrals"))[1]["code"] == mine["code"]  # stable
    b = await referred(tenant.server, mine["code"].upper())  # codes are read case-insensitively
    assert [(r["referred_tenant_id"], r["status"]) for r in await ledger(owner_conn, tenant)] == [(b.id, "pending")]

    # b pays: the referrer earns 10 USD; it has no Stripe customer yet, so nothing is queued.
    _, event = await subscribe(b, fake_stripe, "starter")
    status, body = await deliver(b.server, event)
    assert status == 200 and body["applied"], body
    (row,) = await ledger(owner_conn, tenant)
    assert (row["status"], row["amount_cents"], row["delivery_id"]) == ("earned", 1000, None)

    # The referrer starts a checkout: it now has a customer, and its credit is queued and sent.
    await subscribe(tenant, fake_stripe, "pro")
    assert (await ledger(owner_conn, tenant))[0]["delivery_id"] is not None
    assert await drain(jobs_pool, settings) == 1
    (txn,) = fake_stripe.balance_transactions
    customer = await owner_conn.fetchval("SELECT customer_ref FROM parley.subscriptions WHERE tenant_id = $1", tenant.id)
    assert (txn["customer"], txn["amount"], txn["currency"]) == (customer, -1000, "usd")
    assert fake_stripe.customers[customer]["balance"] == -1000
    assert (await ledger(owner_conn, tenant))[0]["applied_at"] is not None
    summary = (await tenant.call("GET", "/api/billing/referrals"))[1]
    assert (summary["signed_up"], summary["converted"], summary["earned_cents"], summary["applied_cents"]) == (1, 1, 1000, 1000)

    # Replayed and later events, another paid plan: no second credit, nothing more sent.
    assert (await deliver(b.server, event))[1]["duplicate"]
    sub_id = next(iter(s for s in fake_stripe.subscriptions.values() if s["metadata"]["tenant_id"] == str(b.id)))["id"]
    fake_stripe.subscriptions[sub_id]["metadata"]["plan"] = "pro"
    status, body = await deliver(b.server, fake_stripe.event("customer.subscription.updated",
                                                             fake_stripe.subscriptions[sub_id]))
    assert status == 200 and body["plan"] == "pro"
    assert [r["amount_cents"] for r in await ledger(owner_conn, tenant)] == [1000]
    assert await drain(jobs_pool, settings) == 0 and len(fake_stripe.balance_transactions) == 1
    assert await owner_conn.fetchval("SELECT count(*) FROM parley.outbox WHERE kind = 'billing.referral_credit'") == 1

    # A resend of the same delivery (a drainer that died before recording) applies once at Stripe.
    payload = await owner_conn.fetchval("SELECT payload FROM parley.outbox WHERE kind = 'billing.referral_credit'")
    sender = StripeSender(billing_config(settings))
    dest = Destination(id=uuid.uuid4(), kind="stripe", target="stripe", config={}, ordered=True)
    again = Delivery(id=1, created_at=dt.datetime.now(dt.UTC), delivery_key=uuid.uuid4(),
                     kind="billing.referral_credit", payload=payload, attempts=1)
    assert (await sender.send(dest, again)).outcome == "delivered"
    await sender.close()
    assert len(fake_stripe.balance_transactions) == 1

    actions = [r["action"] for r in await owner_conn.fetch(
        "SELECT action FROM parley.audit_log WHERE tenant_id = $1 AND action LIKE 'referral.%' ORDER BY id", tenant.id)]
    assert actions == ["referral.signed_up", "referral.credit_earned"]


async def test_only_an_active_paid_stripe_subscription_converts(tenant, fake_stripe, owner_conn):
    code = (await tenant.call("GET", "/api/billing/referrals"))[1]["code"]
    b = await referred(tenant.server, code)
    async with b.tx() as conn:  # staff-assigned, trialing, and free: not a paid conversion
        await conn.fetchval("SELECT parley.change_plan('pro', 'webhook', '{\"provider\": \"none\"}')")
        await conn.fetchval("SELECT parley.change_plan('pro', 'webhook', '{\"provider\": \"stripe\", \"status\": \"trialing\"}')")
        await conn.fetchval("SELECT parley.change_plan('free', 'webhook', '{\"provider\": \"stripe\", \"status\": \"active\"}')")
    assert [r["status"] for r in await ledger(owner_conn, tenant)] == ["pending"]


async def test_credits_stop_at_the_cap(tenant, fake_stripe, owner_conn):
    code = (await tenant.call("GET", "/api/billing/referrals"))[1]["code"]
    await owner_conn.executemany(  # nine earlier conversions: 90 of the 100 USD cap
        "INSERT INTO parley.referral_credits (tenant_id, referred_tenant_id, status, amount_cents, earned_at) "
        "VALUES ($1, $2, 'earned', 1000, now())", [(tenant.id, uuid.uuid4()) for _ in range(9)])
    await owner_conn.execute("INSERT INTO parley.referral_credits (tenant_id, referred_tenant_id, status, amount_cents, "
                             "earned_at) VALUES ($1, $2, 'earned', 500, now())", tenant.id, uuid.uuid4())
    first, second = await referred(tenant.server, code), await referred(tenant.server, code)
    for b in (first, second):
        async with b.tx() as conn:
            await conn.fetchval("SELECT parley.change_plan('starter', 'webhook', "
                                "'{\"provider\": \"stripe\", \"status\": \"active\"}')")
    rows = {r["referred_tenant_id"]: r for r in await ledger(owner_conn, tenant)}
    assert (rows[first.id]["status"], rows[first.id]["amount_cents"]) == ("earned", 500)
    assert (rows[second.id]["status"], rows[second.id]["amount_cents"]) == ("capped", 0)
    assert sum(r["amount_cents"] for r in rows.values()) == 10000


async def test_attribution_cannot_be_forged(tenant, make_tenant, owner_conn):
    code = (await tenant.call("GET", "/api/billing/referrals"))[1]["code"]
    # Unknown and malformed codes are ignored: sign-up succeeds, nobody is credited.
    for bad in ("nosuchcode99", "x' OR 1=1 --", ""):
        await referred(tenant.server, bad)
    assert await ledger(owner_conn, tenant) == []
    # An existing workspace cannot be attributed afterwards, by its own owner or anyone.
    other = await make_tenant()
    async with other.member_tx() as conn:
        with pytest.raises(asyncpg.PostgresError) as err:
            await conn.fetchval("SELECT parley.attribute_referral($1, $2)", other.id, code)
    assert err.value.hint == "forbidden"
    async with other.member_tx() as conn:
        with pytest.raises(asyncpg.PostgresError):
            await conn.fetchval("SELECT parley.earn_referral_credit('pro')")
        with pytest.raises(asyncpg.PostgresError):
            await conn.execute("INSERT INTO parley.referral_credits (tenant_id, referred_tenant_id) VALUES ($1, $2)",
                               other.id, uuid.uuid4())
    assert await ledger(owner_conn, other) == []


async def test_ledgers_are_per_tenant_and_analysts_see_them_without_customer_ids(
        tenant, make_tenant, owner_conn, settings):
    code = (await tenant.call("GET", "/api/billing/referrals"))[1]["code"]
    b = await referred(tenant.server, code)
    c = await make_tenant()
    async with tenant.member_tx() as conn:
        assert await conn.fetchval("SELECT count(*) FROM parley.referral_credits") == 1
    for outsider in (b, c):  # the referred tenant and a stranger see no row of the referrer's ledger
        async with outsider.member_tx() as conn:
            assert await conn.fetchval("SELECT count(*) FROM parley.referral_credits") == 0
            assert await conn.fetchval("SELECT referral_code FROM parley.tenants WHERE id = $1", tenant.id) is None
        status, theirs = await outsider.call("GET", "/api/billing/referrals")
        assert status == 200 and theirs["code"] != code and theirs["signed_up"] == 0
    analyst = await asyncpg.connect(settings.role_url("parley_analyst"))
    try:
        row = await analyst.fetchrow("SELECT * FROM analytics.referral_credits WHERE referrer_tenant_id = $1", tenant.id)
        assert row["referred_tenant_id"] == b.id and row["status"] == "pending"
        assert not {"customer", "customer_ref", "delivery_id"} & set(row.keys())
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await analyst.fetch("SELECT * FROM parley.referral_credits")
    finally:
        await analyst.close()


async def test_console_sign_up_keeps_the_ref_and_the_billing_page_shows_the_link(
        tenant, server, console_client, owner_conn, signup):
    code = (await tenant.call("GET", "/api/billing/referrals"))[1]["code"]
    c = console_client()
    status, html, _ = await c.get(f"/console/sign-up?ref={code}")
    assert status == 200 and f'name="ref" value="{code}"' in html
    slug = f"t-{uuid.uuid4().hex[:12]}"
    status, html, _ = await c.post("/console/sign-up", {"email": f"{slug}@example.test", "password": TEST_PASSWORD,
                                                        "tenant_name": "Via console", "slug": slug, "ref": code})
    assert status == 200, html[:300]
    new_id = await owner_conn.fetchval("SELECT id FROM parley.tenants WHERE slug = $1", slug)
    assert [r["referred_tenant_id"] for r in await ledger(owner_conn, tenant)] == [new_id]
    owner = await signup(server)
    c2 = console_client()
    await c2.sign_in(owner["email"], owner["password"])
    status, html, _ = await c2.get("/console/billing")
    own = await owner_conn.fetchval("SELECT referral_code FROM parley.tenants WHERE id = $1::uuid", owner["tenant_id"])
    assert status == 200 and f"{PUBLIC}/console/sign-up?ref={own}" in html
