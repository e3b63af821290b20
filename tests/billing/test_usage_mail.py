"""Owners are e-mailed their usage warnings (80 % and 100 % of an allowance) through the outbox, once
per threshold per allowance period (a real SMTP exchange with aiosmtpd); allowance periods follow the
subscription's own billing period, not calendar months."""
from __future__ import annotations

import datetime as dt

import pytest
from jobs.outbox import OutboxDrainer
from pyapp.channels.senders import EmailSender
from pyapp.mailer import SmtpMailer
from support.fakes.smtp import SmtpSink

TODAY = "(now() AT TIME ZONE 'UTC')::date"


@pytest.fixture
async def smtp():
    s = SmtpSink().start()
    yield s
    s.stop()


async def use(owner_conn, tenant, metric: str, n: int, *, days_ago: int = 0, shard: int = 0):
    await owner_conn.execute(f"INSERT INTO parley.usage_counters (tenant_id, day, metric, shard, value) "
                             f"VALUES ($1, {TODAY} - $2::int, $3, $4, $5)", tenant.id, days_ago, metric, shard, n)


async def record(jobs_tx, tenant) -> int:
    async with jobs_tx(tenant.id) as conn:
        return await conn.fetchval("SELECT parley.record_usage_warnings()")


async def drain(jobs_pool, smtp) -> int:
    sender = EmailSender(SmtpMailer(smtp.url, "parley@example.test"), "https://parley.example")
    drainer = OutboxDrainer(jobs_pool, "usage-mail", senders={"email": sender})
    try:
        return await drainer.drain()
    finally:
        await drainer.close()


async def test_owners_get_one_mail_per_threshold_per_period(tenant, owner_conn, jobs_tx, jobs_pool, smtp, make_tenant):
    quiet = await make_tenant()  # another workspace near nothing: no mail for it
    await owner_conn.execute("INSERT INTO parley.tenant_limits (tenant_id, included_conversations) VALUES ($1, 10)",
                             tenant.id)
    await use(owner_conn, tenant, "conversations", 8)
    assert await record(jobs_tx, tenant) == 1
    assert await record(jobs_tx, tenant) == 0 and await record(jobs_tx, quiet) == 0
    assert await drain(jobs_pool, smtp) == 1
    ((rcpt, msg),) = await smtp.wait_for(1)
    assert rcpt == [tenant.owner["email"]] and msg["Subject"] == "[Parley] Usage of your plan"
    body = msg.get_content()
    assert "80 % of your conversations this period are used: 8 of 10." in body
    assert "https://parley.example/console/billing" in body
    assert await owner_conn.fetchval("SELECT count(*) FROM parley.usage_warnings WHERE tenant_id = $1 "
                                     "AND notified_at IS NULL", tenant.id) == 0

    await use(owner_conn, tenant, "conversations", 2, shard=1)
    assert await record(jobs_tx, tenant) == 1
    assert await drain(jobs_pool, smtp) == 1
    (_, second) = (await smtp.wait_for(2))[1]
    assert "All of your conversations this period are used: 10 of 10." in second.get_content()
    assert await record(jobs_tx, tenant) == 0 and await drain(jobs_pool, smtp) == 0
    assert len(smtp.messages) == 2
    # The owners' notices go to the one "Workspace owners" destination, in the tenant's own outbox.
    async with quiet.tx() as conn:
        assert await conn.fetchval("SELECT count(*) FROM parley.outbox") == 0


async def test_allowance_periods_follow_the_subscription(tenant, make_tenant):
    days = ["2026-10-19", "2026-11-03", "2026-11-20", "2027-02-25"]

    async def periods(t, state=None):
        async with t.tx() as conn:
            if state is not None:
                await conn.fetchval("SELECT parley.change_plan('starter', 'webhook', $1)", state)
            rows = await conn.fetch("SELECT p.* FROM unnest($1::date[]) WITH ORDINALITY d(day, i), "
                                    "LATERAL parley.allowance_period(d.day) p ORDER BY d.i",
                                    [dt.date.fromisoformat(d) for d in days])
            return [(str(r["period_start"]), str(r["period_end"])) for r in rows]

    # No provider period (Free, staff-assigned): calendar months.
    assert (await periods(tenant))[1] == ("2026-11-01", "2026-12-01")
    monthly = {"provider": "stripe", "status": "active", "current_period_start": "2026-10-20T08:00:00+00:00",
               "current_period_end": "2026-11-20T08:00:00+00:00"}
    assert await periods(tenant, monthly) == [("2026-09-20", "2026-10-20"), ("2026-10-20", "2026-11-20"),
                                              ("2026-11-20", "2026-12-20"), ("2027-02-20", "2027-03-20")]
    annual = {"provider": "stripe", "status": "active", "interval": "year",
              "current_period_start": "2026-03-10T00:00:00+00:00", "current_period_end": "2027-03-10T00:00:00+00:00"}
    assert (await periods(await make_tenant(), annual))[1] == ("2026-10-10", "2026-11-10")
    end_of_month = {"provider": "stripe", "status": "active", "current_period_start": "2026-01-31T00:00:00+00:00"}
    other = await make_tenant()
    days[:] = ["2026-02-27", "2026-02-28", "2026-03-30"]
    assert await periods(other, end_of_month) == [("2026-01-31", "2026-02-28"), ("2026-02-28", "2026-03-31"),
                                                  ("2026-02-28", "2026-03-31")]


async def test_meters_count_the_subscription_period(tenant, owner_conn):
    async with tenant.tx() as conn:
        await conn.fetchval(
            "SELECT parley.change_plan('starter', 'webhook', jsonb_build_object('provider', 'stripe', 'status', "
            "'active', 'current_period_start', now() - interval '10 days', 'current_period_end', "
            "now() + interval '20 days'))")
    await use(owner_conn, tenant, "conversations", 5, days_ago=5)  # in this period (maybe last calendar month)
    await use(owner_conn, tenant, "conversations", 3, days_ago=12)  # before it (maybe this calendar month)
    status, body = await tenant.call("GET", "/api/billing")
    meter = next(m for m in body["meters"] if m["metric"] == "conversations")
    assert status == 200 and meter["used"] == 5, body
    start = (dt.datetime.now(dt.UTC) - dt.timedelta(days=10)).date()
    assert body["period_start"] == str(start)
