"""Metering and overage: per-day usage summed in SQL, the monthly feed (JSON, CSV), and overage
reported to Stripe (the local fake) as meter events, billed once however often the job runs."""
from __future__ import annotations

import datetime as dt

import pytest
from jobs.metering import report_overage
from pyapp.billing.config import BillingConfig
from pyapp.billing.gateway import Gateway
from support.fakes.stripe_api import SECRET_KEY

D = dt.date(2026, 11, 1)


@pytest.fixture
async def gateway(fake_stripe):
    gw = Gateway(BillingConfig(enabled=True, secret_key=SECRET_KEY, api_base=fake_stripe.base_url))
    yield gw
    await gw.close()


async def use(owner_conn, tenant, day: dt.date, metric: str, n: int, shard: int = 0):
    await owner_conn.execute("INSERT INTO parley.usage_counters (tenant_id, day, metric, shard, value) "
                             "VALUES ($1, $2, $3, $4, $5)", tenant.id, day, metric, shard, n)


async def paid(tenant, owner_conn, customer="cus_meter"):
    async with tenant.tx() as conn:
        await conn.fetchval("SELECT parley.change_plan('pro', 'webhook', $1)",
                            {"provider": "stripe", "status": "active", "customer_ref": customer,
                             "subscription_ref": "sub_meter"})
    await owner_conn.execute("INSERT INTO parley.tenant_limits (tenant_id, included_ai_messages, included_conversations)"
                             " VALUES ($1, 10, 5)", tenant.id)


async def test_overage_job_run_twice_bills_once(tenant, owner_conn, jobs_pool, gateway, fake_stripe):
    await paid(tenant, owner_conn)
    for day, ai, conv in ((D, 6, 5), (D + dt.timedelta(days=1), 7, 1), (D + dt.timedelta(days=2), 4, 0)):
        await use(owner_conn, tenant, day, "ai_messages", ai - 1)
        await use(owner_conn, tenant, day, "ai_messages", 1, shard=3)  # shards are summed
        if conv:
            await use(owner_conn, tenant, day, "conversations", conv)
    today = D + dt.timedelta(days=3)
    first = await report_overage(jobs_pool, gateway, today)
    assert first == {"sent": 3, "failed": 0}
    events = {e["identifier"]: e for e in fake_stripe.meter_events.values()}
    got = sorted((i.split(":")[3], i.split(":")[4], int(e["payload"]["value"])) for i, e in events.items())
    assert got == [("ai_messages", "2026-11-02", 3), ("ai_messages", "2026-11-03", 4),
                   ("conversations", "2026-11-02", 1)]
    assert all(e["payload"]["stripe_customer_id"] == "cus_meter" for e in events.values())
    assert {e["event_name"] for e in events.values()} == {"parley_ai_messages", "parley_conversations"}
    assert all(i.startswith(f"parley:{tenant.id}:2026-11-01:") for i in events)
    again = await report_overage(jobs_pool, gateway, today)
    assert again == {"sent": 0, "failed": 0} and fake_stripe.meter_posts == 3

    # Today's usage is not billed until the day is over; then only its growth is.
    await use(owner_conn, tenant, today, "ai_messages", 2)
    fake_stripe.fail_next = 3  # Stripe down (the client retries twice): the row stays pending
    assert (await report_overage(jobs_pool, gateway, today + dt.timedelta(days=1)))["failed"] == 1
    assert len(fake_stripe.meter_events) == 3
    assert (await report_overage(jobs_pool, gateway, today + dt.timedelta(days=1)))["sent"] == 1
    assert len(fake_stripe.meter_events) == 4
    # The job died after Stripe accepted an event but before marking it: the same identifier
    # goes out again and Stripe drops it, so the day is still billed once.
    await owner_conn.execute("UPDATE parley.usage_reports SET reported_at = NULL WHERE tenant_id = $1 AND day = $2"
                             " AND metric = 'ai_messages'",
                             tenant.id, today)
    assert (await report_overage(jobs_pool, gateway, today + dt.timedelta(days=1)))["sent"] == 1
    assert fake_stripe.meter_posts == 5 and len(fake_stripe.meter_events) == 4
    status, body = await tenant.call("GET", "/api/billing/usage?month=2026-11")
    assert status == 200 and body["overage_reported"] == {"ai_messages": 9, "conversations": 1}


async def test_free_and_unpaid_tenants_report_nothing(make_tenant, owner_conn, jobs_pool, gateway, fake_stripe):
    free = await make_tenant()
    await use(owner_conn, free, D, "ai_messages", 5000)
    staff_assigned = await make_tenant()
    async with staff_assigned.tx() as conn:  # a metered plan without a Stripe customer: nobody to bill
        await conn.fetchval("SELECT parley.change_plan('pro', 'webhook', '{}')")
    await use(owner_conn, staff_assigned, D, "ai_messages", 500000)
    assert await report_overage(jobs_pool, gateway, D + dt.timedelta(days=2)) == {"sent": 0, "failed": 0}
    assert fake_stripe.meter_posts == 0


async def test_reports_are_per_tenant(make_tenant, owner_conn, jobs_pool, gateway):
    a, b = await make_tenant(), await make_tenant()
    await paid(a, owner_conn, "cus_a")
    await use(owner_conn, a, D, "ai_messages", 50)
    await report_overage(jobs_pool, gateway, D + dt.timedelta(days=1))
    async with b.tx() as conn:
        assert await conn.fetchval("SELECT count(*) FROM parley.usage_reports") == 0
    async with a.tx() as conn:  # every finished day is written once, zero or not (history is frozen)
        assert await conn.fetchval("SELECT count(*) FROM parley.usage_reports WHERE quantity > 0") == 1
        assert await conn.fetchval("SELECT count(*) FROM parley.usage_reports WHERE reported_at IS NULL") == 0


async def test_monthly_usage_feed_json_and_csv(tenant, owner_conn, make_api_key):
    await use(owner_conn, tenant, D + dt.timedelta(days=4), "messages", 12)
    await use(owner_conn, tenant, D + dt.timedelta(days=4), "messages", 3, shard=5)
    key = await make_api_key(tenant.server, tenant.token, scopes=("read",))
    status, body = await tenant.call("GET", "/api/billing/usage?month=2026-11", token=key)
    assert status == 200 and body["month"] == "2026-11" and len(body["days"]) == 30
    assert body["days"][4] == {"day": "2026-11-05", "messages": 15, "ai_messages": 0, "conversations": 0,
                               "active_seats": 0}
    async with tenant.server.http.get(tenant.server.base_url + "/api/billing/usage?month=2026-11&format=csv",
                                      headers={"Authorization": f"Bearer {tenant.token}"}) as resp:
        text = await resp.text()
        assert resp.status == 200 and resp.content_type == "text/csv"
        assert "usage-2026-11.csv" in resp.headers["Content-Disposition"]
    lines = text.splitlines()
    assert lines[0] == "day,messages,ai_messages,conversations,active_seats" and "2026-11-05,15,0,0,0" in lines
    status, body = await tenant.call("GET", "/api/billing/usage?month=2026-13")
    assert status == 422


async def test_scheduled_job_writes_the_rows_the_runner_sends(tenant, owner_conn, jobs_pool):
    from jobs.runner import run_due_jobs
    from jobs.schedule import register

    await paid(tenant, owner_conn)
    yesterday = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
    await use(owner_conn, tenant, yesterday, "ai_messages", 50)
    await register(jobs_pool)
    assert "report_overage" in await run_due_jobs(jobs_pool, "test-worker", only=["report_overage"])
    row = await owner_conn.fetchrow("SELECT quantity, reported_at FROM parley.usage_reports "
                                    "WHERE tenant_id = $1 AND day = $2 AND metric = 'ai_messages'", tenant.id, yesterday)
    assert row["quantity"] == 40 and row["reported_at"] is None
