"""Plans and subscriptions in SQL: the catalog, the one plan-change function and who may call
it, the grace period and the drop to Free limits, stale provider states, per-tenant isolation."""
from __future__ import annotations

import datetime as dt
import json

import asyncpg
import pytest

NOW = dt.datetime.now(dt.UTC)


async def limits(t) -> dict:
    async with t.tx() as conn:
        return dict(await conn.fetchrow("SELECT * FROM parley.effective_limits(parley.current_tenant_id())"))


async def change(t, plan, source="webhook", **state):
    async with t.tx() as conn:
        return await conn.fetchval("SELECT parley.change_plan($1, $2, $3)", plan, source, state)


async def test_catalog_prices_annual_is_ten_months(tenant):
    status, body = await tenant.call("GET", "/api/billing/plans")
    assert status == 200, body
    plans = {p["id"]: p for p in body["plans"]}
    assert list(plans) == ["free", "starter", "pro", "white_label"]
    for p in plans.values():
        assert p["price_annual_cents"] == 10 * p["price_monthly_cents"]
    assert plans["free"]["price_monthly_cents"] == 0 and not plans["free"]["metered"]
    assert plans["white_label"]["allow_custom_domain"] and not plans["pro"]["allow_custom_domain"]
    assert body["payments_live"] is False


async def test_change_plan_has_every_side_effect(tenant, owner_conn):
    before = await limits(tenant)
    out = await change(tenant, "pro", provider="stripe", interval="year", status="active", extra_seats=5,
                       customer_ref="cus_1", subscription_ref="sub_1")
    assert out["applied"] and out["from"] == "free" and out["plan"] == "pro"
    after = await limits(tenant)
    assert before["max_chatbots"] == 1 and after["max_chatbots"] == 20
    assert after["max_seats"] == 50 + 5 and after["metered"] and not after["limited"]
    assert await owner_conn.fetchval("SELECT plan FROM parley.tenants WHERE id = $1", tenant.id) == "pro"
    row = await owner_conn.fetchrow("SELECT * FROM parley.plan_changes WHERE tenant_id = $1", tenant.id)
    assert (row["from_plan"], row["to_plan"], row["source"], row["actor_kind"]) == ("free", "pro", "webhook", "service")
    audit = await owner_conn.fetchrow("SELECT actor_kind, details FROM parley.audit_log "
                                      "WHERE tenant_id = $1 AND action = 'billing.plan_changed'", tenant.id)
    assert audit["actor_kind"] == "service" and audit["details"]["to"] == "pro"
    status, body = await tenant.call("GET", "/api/billing")
    assert status == 200 and body["plan"] == "pro" and body["subscription"]["interval"] == "year"
    assert "customer_ref" not in body["subscription"] and "subscription_ref" not in body["subscription"]


async def test_members_only_go_down_to_free(tenant, signup, owner_conn):
    await change(tenant, "starter")
    # A member cannot upgrade itself through the plan function: paid plans go through checkout.
    with pytest.raises(asyncpg.PostgresError) as err:
        async with tenant.member_tx() as conn:
            await conn.fetchval("SELECT parley.change_plan('pro', 'downgrade', '{}')")
    assert err.value.sqlstate == "PT402"
    # Nor pretend to be the webhook.
    with pytest.raises(asyncpg.PostgresError) as err:
        async with tenant.member_tx() as conn:
            await conn.fetchval("SELECT parley.change_plan('pro', 'webhook', '{}')")
    assert err.value.sqlstate == "PT403"
    # An agent may not downgrade the workspace; the route refuses and so does SQL.
    agent = await signup(tenant.server, join=tenant.owner, role="agent")
    status, body = await tenant.call("POST", "/api/billing/downgrade", json={"plan": "free"}, token=agent["access_token"])
    assert status == 403, body
    with pytest.raises(asyncpg.PostgresError) as err:
        async with tenant.member_tx(agent) as conn:
            await conn.fetchval("SELECT parley.change_plan('free', 'downgrade', '{}')")
    assert err.value.sqlstate == "PT403"
    assert await owner_conn.fetchval("SELECT plan FROM parley.tenants WHERE id = $1", tenant.id) == "starter"
    # The app role cannot write the plan or the subscription directly.
    for sql in ("UPDATE parley.tenants SET plan = 'pro'", "UPDATE parley.subscriptions SET plan = 'pro'"):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            async with tenant.tx() as conn:
                await conn.execute(sql)


async def test_free_downgrade_with_payments_off_switches_now(tenant, make_api_key, owner_conn):
    await change(tenant, "starter", provider="stripe", status="active", subscription_ref="sub_9")
    key = await make_api_key(tenant.server, tenant.token)
    status, body = await tenant.call("POST", "/api/billing/downgrade", json={"plan": "free"}, token=key)
    assert status == 403 and body["error"]["code"] == "api_key_not_allowed"
    status, body = await tenant.call("POST", "/api/billing/downgrade", json={"plan": "pro"})
    assert status == 402 and body["error"]["code"] == "payment_required"
    status, body = await tenant.call("POST", "/api/billing/downgrade", json={"plan": "free"})
    assert status == 200 and body == {"scheduled": False, "plan": "free"}
    assert (await limits(tenant))["max_chatbots"] == 1
    assert await owner_conn.fetchval("SELECT source FROM parley.plan_changes WHERE tenant_id = $1 ORDER BY id DESC LIMIT 1",
                                     tenant.id) == "downgrade"
    for path in ("/api/billing/checkout", "/api/billing/portal"):
        status, body = await tenant.call("POST", path, json={"plan": "pro", "interval": "month"})
        assert status == 503 and body["error"]["code"] == "payments_disabled", (path, body)


async def test_grace_then_free_limits_never_losing_data(tenant, jobs_tx, owner_conn):
    await change(tenant, "pro", provider="stripe", status="active", subscription_ref="sub_1")
    # Payment failed a day ago: still in grace, Pro's limits, a warning for the console.
    await change(tenant, "pro", provider="stripe", status="past_due", subscription_ref="sub_1",
                 delinquent_since=(NOW - dt.timedelta(days=1)).isoformat())
    lim = await limits(tenant)
    assert not lim["limited"] and lim["max_chatbots"] == 20
    grace = await owner_conn.fetchval("SELECT grace_until FROM parley.subscriptions WHERE tenant_id = $1", tenant.id)
    assert abs((grace - (NOW + dt.timedelta(days=6))).total_seconds()) < 60
    # A later failure does not move the grace period.
    await change(tenant, "pro", provider="stripe", status="past_due", subscription_ref="sub_1")
    assert await owner_conn.fetchval("SELECT grace_until FROM parley.subscriptions WHERE tenant_id = $1", tenant.id) == grace
    # The jobs clock runs 7 days on: the sweep marks it limited, Free's limits apply, the
    # plan and the retention stay (nothing is deleted), and it is audited.
    async with jobs_tx(tenant.id) as conn:
        assert await conn.fetchval("SELECT parley.sweep_grace($1)", NOW + dt.timedelta(days=7)) == 0 + 1
    lim = await limits(tenant)
    assert lim["limited"] and lim["plan"] == "pro" and lim["max_chatbots"] == 1 and not lim["metered"]
    assert lim["retention_days"] == 730
    assert await owner_conn.fetchval("SELECT count(*) FROM parley.audit_log WHERE tenant_id = $1 "
                                     "AND action = 'billing.limited'", tenant.id) == 1
    # Paid again: back to Pro at once.
    await change(tenant, "pro", provider="stripe", status="active", subscription_ref="sub_1")
    lim = await limits(tenant)
    assert not lim["limited"] and lim["max_chatbots"] == 20
    assert await owner_conn.fetchval("SELECT grace_until FROM parley.subscriptions WHERE tenant_id = $1", tenant.id) is None


async def test_grace_ended_limits_even_before_the_sweep(tenant):
    await change(tenant, "starter", provider="stripe", status="past_due",
                 delinquent_since=(NOW - dt.timedelta(days=8)).isoformat())
    lim = await limits(tenant)
    assert lim["limited"] and lim["max_chatbots"] == 1


async def test_stale_provider_state_is_ignored(tenant, owner_conn):
    newer, older = NOW, NOW - dt.timedelta(seconds=5)
    await change(tenant, "pro", provider="stripe", status="active", synced_at=newer.isoformat())
    out = await change(tenant, "starter", provider="stripe", status="active", synced_at=older.isoformat())
    assert out["applied"] is False
    assert await owner_conn.fetchval("SELECT plan FROM parley.tenants WHERE id = $1", tenant.id) == "pro"


async def test_subscriptions_and_plan_changes_are_per_tenant(make_tenant):
    a, b = await make_tenant(), await make_tenant()
    await change(a, "pro", provider="stripe", customer_ref="cus_a", subscription_ref="sub_a")
    async with b.tx() as conn:
        assert await conn.fetchval("SELECT count(*) FROM parley.subscriptions") == 0
        assert await conn.fetchval("SELECT count(*) FROM parley.plan_changes") == 0
        assert await conn.fetchrow("SELECT * FROM parley.effective_limits($1)", a.id) is None
    status, body = await b.call("GET", "/api/billing")
    assert status == 200 and body["plan"] == "free" and body["subscription"] is None


async def test_api_key_rate_limit_answers_429_with_retry_after(tenant, make_api_key, owner_conn):
    await owner_conn.execute("INSERT INTO parley.tenant_limits (tenant_id, api_requests_per_min) VALUES ($1, 2)",
                             tenant.id)
    key = await make_api_key(tenant.server, tenant.token)
    for _ in range(2):
        status, _ = await tenant.call("GET", "/api/chatbots", token=key)
        assert status == 200
    async with tenant.server.http.get(tenant.server.base_url + "/api/chatbots",
                                      headers={"Authorization": f"Bearer {key}"}) as resp:
        body = await resp.json()
        assert resp.status == 429 and body["error"]["code"] == "rate_limited"
        assert 1 <= int(resp.headers["Retry-After"]) <= 70  # the last minute, in 10-second buckets
    # A person's session is not counted against the key's window.
    status, _ = await tenant.call("GET", "/api/chatbots")
    assert status == 200


async def test_warnings_at_80_and_100_percent(tenant, jobs_tx, owner_conn):
    await owner_conn.execute("INSERT INTO parley.tenant_limits (tenant_id, included_conversations) VALUES ($1, 10)",
                             tenant.id)
    await owner_conn.execute("INSERT INTO parley.usage_counters (tenant_id, day, metric, shard, value) "
                             "VALUES ($1, (now() AT TIME ZONE 'UTC')::date, 'conversations', 0, 8)", tenant.id)
    status, body = await tenant.call("GET", "/api/billing")
    assert status == 200
    assert [(w["metric"], w["level"]) for w in body["warnings"]] == [("conversations", "warning")]
    async with jobs_tx(tenant.id) as conn:
        assert await conn.fetchval("SELECT parley.record_usage_warnings()") == 1
        assert await conn.fetchval("SELECT parley.record_usage_warnings()") == 0
    await owner_conn.execute("UPDATE parley.usage_counters SET value = 10 WHERE tenant_id = $1", tenant.id)
    async with jobs_tx(tenant.id) as conn:
        assert await conn.fetchval("SELECT parley.record_usage_warnings()") == 1
    rows = await owner_conn.fetch("SELECT threshold, notified_at FROM parley.usage_warnings WHERE tenant_id = $1 "
                                  "ORDER BY threshold", tenant.id)
    # Each is queued to the owners by e-mail in the run that records it (tests/billing/test_usage_mail.py).
    assert [r["threshold"] for r in rows] == [80, 100] and all(r["notified_at"] for r in rows)
    _status, body = await tenant.call("GET", "/api/billing")
    assert body["warnings"][0]["level"] == "limit"


async def _bot(t, owner_conn):
    bot = await owner_conn.fetchval("INSERT INTO parley.chatbots (tenant_id, name) VALUES ($1, 'B') RETURNING id", t.id)
    return bot


async def _start(t, bot):
    async with t.tx() as conn:
        return (await conn.fetchrow("SELECT * FROM parley.start_conversation($1, gen_random_uuid(), NULL, NULL, NULL,"
                                    " NULL, '203.0.113.9'::inet, NULL)", bot))["id"]


async def _visitor_says(t, conv, body, ip="203.0.113.9"):
    from pyapp.context import POOL
    from pyapp.db import Actor, tenant_tx

    async with tenant_tx(t.server.app[POOL], Actor(tenant_id=t.id, kind="visitor", actor_id=str(conv), ip=ip,
                                                   min_role="visitor")) as conn:
        return await conn.fetchrow("SELECT * FROM parley.post_message($1, 'visitor', $2)", conv, body)


@pytest.mark.parametrize("scope", ["conversation", "tenant"])
async def test_message_windows_per_conversation_and_tenant(tenant, owner_conn, scope):
    await owner_conn.execute(
        "INSERT INTO parley.tenant_limits (tenant_id, msgs_per_min_ip, msgs_per_min_chatbot, msgs_per_min_conversation,"
        " msgs_per_min_tenant) VALUES ($1, 0, 0, $2, $3)", tenant.id,
        2 if scope == "conversation" else 0, 3 if scope == "tenant" else 0)
    bot = await _bot(tenant, owner_conn)
    first = await _start(tenant, bot)
    await _visitor_says(tenant, first, "one")
    await _visitor_says(tenant, first, "two")
    other = await _start(tenant, bot)
    if scope == "conversation":
        with pytest.raises(asyncpg.PostgresError) as err:
            await _visitor_says(tenant, first, "three")
        await _visitor_says(tenant, other, "another conversation has its own window")
    else:
        await _visitor_says(tenant, other, "third of the tenant")
        with pytest.raises(asyncpg.PostgresError) as err:
            await _visitor_says(tenant, other, "fourth")
    assert err.value.sqlstate == "PT429" and err.value.hint == "rate_limited"
    assert err.value.detail.startswith("retry_after=")


async def test_free_monthly_allowances_are_hard_caps_paid_are_not(tenant, owner_conn):
    await owner_conn.execute("INSERT INTO parley.tenant_limits (tenant_id, included_conversations) VALUES ($1, 2)",
                             tenant.id)
    bot = await _bot(tenant, owner_conn)
    await _start(tenant, bot)
    await _start(tenant, bot)
    with pytest.raises(asyncpg.PostgresError) as err:
        await _start(tenant, bot)
    assert err.value.sqlstate == "PT402" and err.value.hint == "plan_limit"
    await change(tenant, "starter", provider="stripe", status="active")
    await owner_conn.execute("UPDATE parley.tenant_limits SET included_conversations = 2, max_open_conversations = 0 "
                             "WHERE tenant_id = $1", tenant.id)
    await _start(tenant, bot)  # metered: past the allowance is overage, not a block


async def test_webhook_refuses_forged_events_with_payments_off(tenant, owner_conn):
    from support.fakes.stripe_api import sign

    payload = json.dumps({"id": "evt_1", "type": "checkout.session.completed", "created": 0,
                          "data": {"object": {"client_reference_id": str(tenant.id), "subscription": "sub_1"}}}).encode()
    for signature in (sign(payload, "whsec_guess"), None):
        headers = {"Content-Type": "application/json"}
        if signature:
            headers["Stripe-Signature"] = signature
        async with tenant.server.http.post(tenant.server.base_url + "/api/billing/webhook", data=payload,
                                           headers=headers) as resp:
            body = await resp.json()
            assert resp.status == 400 and body["error"]["code"] == "invalid_signature"
    assert await owner_conn.fetchval("SELECT count(*) FROM parley.billing_events") == 0


async def test_analyst_views(make_tenant, owner_conn, settings):
    a, b = await make_tenant(), await make_tenant()
    await change(a, "pro", provider="stripe", status="active", interval="year", extra_seats=2,
                 customer_ref="cus_secret", subscription_ref="sub_secret")
    await change(b, "starter", provider="stripe", status="active")
    from pyapp.config import ANALYST_ROLE

    conn = await asyncpg.connect(settings.role_url(ANALYST_ROLE))
    try:
        mrr = {r["plan"]: r for r in await conn.fetch("SELECT * FROM analytics.mrr_by_plan")}
        assert mrr["pro"]["subscriptions"] == 1 and mrr["pro"]["mrr_cents"] == (99000 + 10 * 900 * 2) // 12
        assert mrr["starter"]["mrr_cents"] == 2900 and mrr["free"]["mrr_cents"] == 0
        changes = await conn.fetch("SELECT to_plan, source FROM analytics.plan_changes ORDER BY at")
        assert [tuple(r) for r in changes] == [("pro", "webhook"), ("starter", "webhook")]
        subs = await conn.fetch("SELECT * FROM analytics.subscriptions")
        assert len(subs) == 2 and "customer_ref" not in dict(subs[0])
        await conn.fetch("SELECT * FROM analytics.usage_monthly")
        await conn.fetch("SELECT * FROM analytics.overage")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.fetch("SELECT * FROM parley.subscriptions")
    finally:
        await conn.close()


async def test_every_billing_ledger_is_per_tenant(make_tenant, owner_conn, jobs_tx):
    """A's subscription, provider events, warnings, overage reports, referral credits, domains and branding
    are invisible to B and cannot be written for A from B's transaction."""
    a, b = await make_tenant(), await make_tenant()
    await change(a, "white_label", provider="stripe", customer_ref="cus_a", subscription_ref="sub_a")
    async with a.tx() as conn:
        assert await conn.fetchval("SELECT parley.claim_billing_event('evt_a', 'invoice.paid', now())")
    await owner_conn.execute("INSERT INTO parley.tenant_limits (tenant_id, included_conversations) VALUES ($1, 1)", a.id)
    await owner_conn.execute("INSERT INTO parley.usage_counters (tenant_id, day, metric, shard, value) "
                             "VALUES ($1, (now() AT TIME ZONE 'UTC')::date, 'conversations', 0, 5)", a.id)
    async with jobs_tx(a.id) as conn:
        assert await conn.fetchval("SELECT parley.record_usage_warnings()") >= 1
    await owner_conn.execute("INSERT INTO parley.usage_reports (tenant_id, period_start, metric, day, quantity, "
                             "identifier) VALUES ($1, '2026-11-01', 'conversations', '2026-11-02', 3, 'x')", a.id)
    await owner_conn.execute("INSERT INTO parley.referral_credits (tenant_id, referred_tenant_id) VALUES ($1, $2)",
                             a.id, b.id)
    async with a.member_tx() as conn:
        await conn.fetchval("SELECT parley.claim_domain('chat.a-shop.com')")
        await conn.fetchval("SELECT parley.set_default_branding('By A', NULL)")
    tables = ("subscriptions", "billing_events", "plan_changes", "usage_warnings", "usage_reports",
              "referral_credits", "custom_domains", "tenant_branding")
    async with a.member_tx() as conn:
        assert all([await conn.fetchval(f"SELECT count(*) FROM parley.{t}") for t in tables])
    async with b.member_tx() as conn:
        assert {t: await conn.fetchval(f"SELECT count(*) FROM parley.{t}") for t in tables} == dict.fromkeys(tables, 0)
    async with b.tx() as conn:  # even the server's own role, in B's transaction, cannot write for A
        with pytest.raises(asyncpg.PostgresError):
            async with conn.transaction():
                await conn.execute("INSERT INTO parley.billing_events (tenant_id, event_id, type, created) "
                                   "VALUES ($1, 'evt_forged', 'invoice.paid', now())", a.id)
