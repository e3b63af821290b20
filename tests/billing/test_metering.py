"""Metering and overage: per-day usage summed in SQL, the monthly feed (JSON, CSV), and overage
queued in SQL as outbox deliveries and sent by the drainer to Stripe (the local fake, which checks
the Billing Meter event request as the real API does): billed once however often the job runs,
5xx and 429 retried on the outbox's schedule, a drain killed after Stripe accepted an event resent
with the same idempotency key and billed once, held (paused, visible) while payments are off."""
from __future__ import annotations

import asyncio
import datetime as dt

import pytest
from jobs.outbox import OutboxDrainer
from jobs.runner import resume_payment_deliveries
from pyapp.billing.config import BillingConfig
from pyapp.billing.sender import KEY_REFUSED, PAYMENTS_OFF, StripeSender
from support.fakes.stripe_api import SECRET_KEY


def first_day() -> dt.date:
    """Four finished days inside one calendar month, all within Stripe's 35 days."""
    today = dt.datetime.now(dt.UTC).date()
    if today.day >= 6:
        return today.replace(day=1)
    return (today.replace(day=1) - dt.timedelta(days=1)).replace(day=20)


D = first_day()
PERIOD = D.replace(day=1)


@pytest.fixture
def live(fake_stripe):
    return BillingConfig(enabled=True, secret_key=SECRET_KEY, api_base=fake_stripe.base_url)


async def drain(jobs_pool, config: BillingConfig, **kw) -> int:
    drainer = OutboxDrainer(jobs_pool, "metering", senders={"stripe": StripeSender(config)}, **kw)
    try:
        return await drainer.drain()
    finally:
        await drainer.close()


async def queue(jobs_tx, tenant, today: dt.date) -> int:
    async with jobs_tx(tenant.id) as conn:
        return await conn.fetchval("SELECT parley.queue_usage_reports($1)", today)


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


async def deliveries(owner_conn, tenant):
    return await owner_conn.fetch("SELECT * FROM parley.outbox WHERE tenant_id = $1 AND kind = 'billing.meter_event' "
                                  "ORDER BY id", tenant.id)


async def due_now(owner_conn, tenant):
    """The retry's time has come (what the clock would do): deliveries and the destination are due."""
    await owner_conn.execute("UPDATE parley.outbox SET next_attempt_at = now() WHERE tenant_id = $1 "
                             "AND status = 'pending'", tenant.id)
    await owner_conn.execute("UPDATE parley.outbox_destinations SET next_send_at = '-infinity' WHERE tenant_id = $1",
                             tenant.id)


def meter_requests(fake):
    return [r for r in fake.requests if r["path"] == "/v1/billing/meter_events"]


async def test_overage_is_queued_once_and_sent_through_the_outbox(tenant, owner_conn, jobs_tx, jobs_pool, live,
                                                                  fake_stripe, settings):
    await paid(tenant, owner_conn)
    for day, ai, conv in ((D, 6, 5), (D + dt.timedelta(days=1), 7, 1), (D + dt.timedelta(days=2), 4, 0)):
        await use(owner_conn, tenant, day, "ai_messages", ai - 1)
        await use(owner_conn, tenant, day, "ai_messages", 1, shard=3)  # shards are summed
        if conv:
            await use(owner_conn, tenant, day, "conversations", conv)
    today = D + dt.timedelta(days=3)
    assert await queue(jobs_tx, tenant, today) == 3
    assert await queue(jobs_tx, tenant, today) == 0  # re-run: nothing more queued
    rows = await deliveries(owner_conn, tenant)
    assert len(rows) == 3 and fake_stripe.meter_posts == 0  # nothing leaves inside the job
    assert {r["payload"]["identifier"] for r in rows} == {
        f"parley:{tenant.id}:{PERIOD}:ai_messages:{D + dt.timedelta(days=1)}",
        f"parley:{tenant.id}:{PERIOD}:ai_messages:{D + dt.timedelta(days=2)}",
        f"parley:{tenant.id}:{PERIOD}:conversations:{D + dt.timedelta(days=1)}"}

    assert await drain(jobs_pool, live) == 3
    events = fake_stripe.meter_events
    got = sorted((i.split(":")[3], i.split(":")[4], int(e["payload"]["value"])) for i, e in events.items())
    assert got == [("ai_messages", str(D + dt.timedelta(days=1)), 3), ("ai_messages", str(D + dt.timedelta(days=2)), 4),
                   ("conversations", str(D + dt.timedelta(days=1)), 1)]
    assert all(e["payload"]["stripe_customer_id"] == "cus_meter" for e in events.values())
    assert {e["event_name"] for e in events.values()} == {"parley_ai_messages", "parley_conversations"}
    for req in meter_requests(fake_stripe):  # the real request shape: identifier = Idempotency-Key, day's noon
        p = req["params"]
        assert req["headers"]["Idempotency-Key"] == p["identifier"] and req["headers"]["Stripe-Version"]
        day = dt.date.fromisoformat(p["identifier"].rsplit(":", 1)[1])
        assert int(p["timestamp"]) == int(dt.datetime(day.year, day.month, day.day, 12, tzinfo=dt.UTC).timestamp())
    assert await drain(jobs_pool, live) == 0 and fake_stripe.meter_posts == 3
    assert await owner_conn.fetchval("SELECT count(*) FROM parley.usage_reports WHERE tenant_id = $1 "
                                     "AND quantity > 0 AND reported_at IS NULL", tenant.id) == 0

    # Today's usage is not billed until the day is over; then only its growth is.
    await use(owner_conn, tenant, today, "ai_messages", 2)
    assert await queue(jobs_tx, tenant, today) == 0
    assert await queue(jobs_tx, tenant, today + dt.timedelta(days=1)) == 1
    assert await drain(jobs_pool, live) == 1 and len(fake_stripe.meter_events) == 4
    status, body = await tenant.call("GET", f"/api/billing/usage?month={PERIOD:%Y-%m}")
    assert status == 200 and body["overage_reported"] == {"ai_messages": 9, "conversations": 1}

    import asyncpg  # what analysts see: every billed day queued and reported
    analyst = await asyncpg.connect(settings.role_url("parley_analyst"))
    try:
        seen = await analyst.fetch("SELECT metric, quantity, queued, reported FROM analytics.overage "
                                   "WHERE tenant_id = $1 ORDER BY day, metric", tenant.id)
    finally:
        await analyst.close()
    assert [tuple(r) for r in seen] == [("ai_messages", 3, True, True), ("conversations", 1, True, True),
                                        ("ai_messages", 4, True, True), ("ai_messages", 2, True, True)]


async def test_5xx_and_429_are_retried_on_the_outbox_schedule(tenant, owner_conn, jobs_tx, jobs_pool, live,
                                                              fake_stripe):
    await paid(tenant, owner_conn)
    await use(owner_conn, tenant, D, "ai_messages", 12)
    assert await queue(jobs_tx, tenant, D + dt.timedelta(days=1)) == 1
    fake_stripe.fail_with = [(503, None)]
    assert await drain(jobs_pool, live) == 0
    (row,) = await deliveries(owner_conn, tenant)
    assert (row["status"], row["attempts"], row["last_status_code"]) == ("pending", 1, 503)
    wait = (row["next_attempt_at"] - row["created_at"]).total_seconds()
    assert 3 <= wait <= 7, wait  # the outbox's backoff (5 s ± 25 %), not the library's own retries
    assert len(meter_requests(fake_stripe)) == 1 and await drain(jobs_pool, live) == 0  # held until due

    await due_now(owner_conn, tenant)
    fake_stripe.fail_with = [(429, "30")]
    assert await drain(jobs_pool, live) == 0
    (row,) = await deliveries(owner_conn, tenant)
    held = await owner_conn.fetchval("SELECT next_send_at - now() FROM parley.outbox_destinations "
                                     "WHERE tenant_id = $1 AND kind = 'stripe'", tenant.id)
    assert row["attempts"] == 2 and 25 < held.total_seconds() <= 30  # Retry-After honoured exactly
    assert await drain(jobs_pool, live) == 0 and len(meter_requests(fake_stripe)) == 2

    await due_now(owner_conn, tenant)
    assert await drain(jobs_pool, live) == 1
    outcomes = await owner_conn.fetch("SELECT attempt, outcome, status_code FROM parley.outbox_attempts "
                                      "WHERE tenant_id = $1 ORDER BY attempt", tenant.id)
    assert [tuple(a) for a in outcomes] == [(1, "retry", 503), (2, "retry", 429), (3, "delivered", 200)]
    keys = {r["headers"]["Idempotency-Key"] for r in meter_requests(fake_stripe)}
    assert len(keys) == 1 and len(fake_stripe.meter_events) == 1
    assert await owner_conn.fetchval("SELECT reported_at IS NOT NULL FROM parley.usage_reports WHERE tenant_id = $1 "
                                     "AND quantity > 0", tenant.id)


async def test_a_drain_killed_after_stripe_accepted_bills_once(tenant, owner_conn, jobs_tx, jobs_pool, live,
                                                              fake_stripe):
    await paid(tenant, owner_conn)
    await use(owner_conn, tenant, D, "conversations", 8)
    assert await queue(jobs_tx, tenant, D + dt.timedelta(days=1)) == 1
    fake_stripe.hold = asyncio.Event()  # Stripe records the event; its answer never reaches the drainer
    drainer = OutboxDrainer(jobs_pool, "doomed", senders={"stripe": StripeSender(live)})
    task = asyncio.create_task(drainer.drain())
    await asyncio.wait_for(fake_stripe.received.wait(), 30)
    doomed = [task, *drainer.active.values()]  # the drain and its destination's worker die mid-send
    for t in doomed:
        t.cancel()
    await asyncio.gather(*doomed, return_exceptions=True)
    await drainer.close()
    fake_stripe.hold.set()
    (row,) = await deliveries(owner_conn, tenant)
    assert row["status"] == "pending" and row["attempts"] == 0 and len(fake_stripe.meter_events) == 1
    # The lease of a drainer that died (not released) runs out; another drainer sends it again.
    await owner_conn.execute("UPDATE parley.outbox_destinations SET leased_until = now() - interval '1 second', "
                             "leased_by = 'doomed' WHERE tenant_id = $1", tenant.id)
    fake_stripe.hold = None
    assert await drain(jobs_pool, live) == 1
    first, second = meter_requests(fake_stripe)
    assert first["params"] == second["params"]
    assert first["headers"]["Idempotency-Key"] == second["headers"]["Idempotency-Key"] == first["params"]["identifier"]
    assert len(fake_stripe.meter_events) == 1  # billed once
    (row,) = await deliveries(owner_conn, tenant)
    assert row["status"] == "delivered"


async def test_payments_off_holds_stripe_deliveries_paused_with_a_visible_reason(
        tenant, owner_conn, jobs_tx, jobs_pool, live, fake_stripe):
    await paid(tenant, owner_conn)
    await use(owner_conn, tenant, D, "ai_messages", 30)
    assert await queue(jobs_tx, tenant, D + dt.timedelta(days=1)) == 1
    off = BillingConfig()  # no PARLEY_STRIPE_ENABLED, no key
    assert await drain(jobs_pool, off) == 0
    dest = await owner_conn.fetchrow("SELECT * FROM parley.outbox_destinations WHERE tenant_id = $1 AND kind = 'stripe'",
                                     tenant.id)
    assert dest["status"] == "paused" and dest["paused_reason"] == PAYMENTS_OFF
    (row,) = await deliveries(owner_conn, tenant)
    assert (row["status"], row["attempts"]) == ("pending", 1)
    assert await drain(jobs_pool, off) == 0  # no useless retries: nothing is even attempted
    assert await owner_conn.fetchval("SELECT attempts FROM parley.outbox WHERE id = $1", row["id"]) == 1
    status, body = await tenant.call("GET", "/api/outbox/destinations")
    (shown,) = [d for d in body["destinations"] if d["kind"] == "stripe"]
    assert status == 200 and shown["status"] == "paused" and "Payments are off" in shown["paused_reason"]
    assert fake_stripe.meter_posts == 0

    # The jobs process starts with payments on: the destination resumes and the report goes out.
    assert await resume_payment_deliveries(jobs_pool, {"stripe": StripeSender(off)}) == 0
    assert await resume_payment_deliveries(jobs_pool, {"stripe": StripeSender(live)}) == 1
    assert await drain(jobs_pool, live) == 1 and len(fake_stripe.meter_events) == 1


async def test_a_refused_api_key_pauses_until_the_jobs_process_starts_with_a_good_one(
        tenant, owner_conn, jobs_tx, jobs_pool, live, fake_stripe):
    await paid(tenant, owner_conn)
    await use(owner_conn, tenant, D, "conversations", 9)
    assert await queue(jobs_tx, tenant, D + dt.timedelta(days=1)) == 1
    wrong = BillingConfig(enabled=True, secret_key="sk_test_revoked", api_base=fake_stripe.base_url)
    assert await drain(jobs_pool, wrong) == 0
    dest = await owner_conn.fetchrow("SELECT * FROM parley.outbox_destinations WHERE tenant_id = $1 AND kind = 'stripe'",
                                     tenant.id)
    (row,) = await deliveries(owner_conn, tenant)
    assert (dest["status"], dest["paused_reason"]) == ("paused", KEY_REFUSED)
    assert (row["status"], row["last_status_code"]) == ("pending", 401)  # kept, not failed
    assert await resume_payment_deliveries(jobs_pool, {"stripe": StripeSender(live)}) == 1
    assert await drain(jobs_pool, live) == 1 and len(fake_stripe.meter_events) == 1


async def test_free_and_unpaid_tenants_report_nothing(make_tenant, owner_conn, jobs_tx, jobs_pool, live, fake_stripe):
    free = await make_tenant()
    await use(owner_conn, free, D, "ai_messages", 5000)
    staff_assigned = await make_tenant()
    async with staff_assigned.tx() as conn:  # a metered plan without a Stripe customer: nobody to bill
        await conn.fetchval("SELECT parley.change_plan('pro', 'webhook', '{}')")
    await use(owner_conn, staff_assigned, D, "ai_messages", 500000)
    for t in (free, staff_assigned):
        assert await queue(jobs_tx, t, D + dt.timedelta(days=2)) == 0
    assert await drain(jobs_pool, live) == 0 and fake_stripe.meter_posts == 0
    async with free.tx() as conn:  # only the jobs process reports usage
        with pytest.raises(Exception) as err:
            await conn.fetchval("SELECT parley.queue_usage_reports()")
    assert "jobs process" in str(err.value) or "permission" in str(err.value)


async def test_reports_are_per_tenant(make_tenant, owner_conn, jobs_tx):
    a, b = await make_tenant(), await make_tenant()
    await paid(a, owner_conn, "cus_a")
    await use(owner_conn, a, D, "ai_messages", 50)
    assert await queue(jobs_tx, a, D + dt.timedelta(days=1)) == 1
    async with b.tx() as conn:
        assert await conn.fetchval("SELECT count(*) FROM parley.usage_reports") == 0
        assert await conn.fetchval("SELECT count(*) FROM parley.outbox WHERE kind = 'billing.meter_event'") == 0
    async with a.tx() as conn:  # every finished day is written once, zero or not (history is frozen)
        assert await conn.fetchval("SELECT count(*) FROM parley.usage_reports WHERE quantity > 0") == 1
        assert await conn.fetchval("SELECT count(*) FROM parley.usage_reports WHERE delivery_id IS NULL "
                                   "AND reported_at IS NULL") == 0


async def test_monthly_usage_feed_json_and_csv(tenant, owner_conn, make_api_key):
    await use(owner_conn, tenant, D + dt.timedelta(days=4), "messages", 12)
    await use(owner_conn, tenant, D + dt.timedelta(days=4), "messages", 3, shard=5)
    key = await make_api_key(tenant.server, tenant.token, scopes=("read",))
    status, body = await tenant.call("GET", f"/api/billing/usage?month={PERIOD:%Y-%m}", token=key)
    days = (PERIOD.replace(day=28) + dt.timedelta(days=4)).replace(day=1) - PERIOD
    assert status == 200 and body["month"] == f"{PERIOD:%Y-%m}" and len(body["days"]) == days.days
    fifth = D + dt.timedelta(days=4)
    assert body["days"][fifth.day - 1] == {"day": str(fifth), "messages": 15, "ai_messages": 0, "conversations": 0,
                                           "active_seats": 0}
    async with tenant.server.http.get(tenant.server.base_url + f"/api/billing/usage?month={PERIOD:%Y-%m}&format=csv",
                                      headers={"Authorization": f"Bearer {tenant.token}"}) as resp:
        text = await resp.text()
        assert resp.status == 200 and resp.content_type == "text/csv"
        assert f"usage-{PERIOD:%Y-%m}.csv" in resp.headers["Content-Disposition"]
    lines = text.splitlines()
    assert lines[0] == "day,messages,ai_messages,conversations,active_seats" and f"{fifth},15,0,0,0" in lines
    status, body = await tenant.call("GET", "/api/billing/usage?month=2026-13")
    assert status == 422


async def test_scheduled_job_queues_what_the_drainer_sends(tenant, owner_conn, jobs_pool):
    from jobs.runner import run_due_jobs
    from jobs.schedule import register

    await paid(tenant, owner_conn)
    yesterday = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
    await use(owner_conn, tenant, yesterday, "ai_messages", 50)
    await register(jobs_pool)
    assert "report_overage" in await run_due_jobs(jobs_pool, "test-worker", only=["report_overage"])
    row = await owner_conn.fetchrow("SELECT quantity, reported_at, delivery_id FROM parley.usage_reports "
                                    "WHERE tenant_id = $1 AND day = $2 AND metric = 'ai_messages'", tenant.id, yesterday)
    assert row["quantity"] == 40 and row["reported_at"] is None and row["delivery_id"] is not None
    payload = await owner_conn.fetchval("SELECT payload FROM parley.outbox WHERE tenant_id = $1 AND id = $2",
                                        tenant.id, row["delivery_id"])
    assert (payload["metric"], payload["value"], payload["customer"]) == ("ai_messages", 40, "cus_meter")


@pytest.mark.parametrize("month", ["0000-01", "9999-12", "1969-12", "3000-01"])
async def test_usage_of_a_month_that_is_no_date_is_a_422(tenant, month):
    """Found by bench/hostile.py (schemathesis from outside): 0000-01 and 9999-12 passed the pattern and
    were 500s (year 0, and the month after 9999-12)."""
    status, body = await tenant.call("GET", f"/api/billing/usage?month={month}")
    assert (status, body["error"]["code"]) == (422, "validation_failed"), body
