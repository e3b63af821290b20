"""Issue 13's "Done when", as one customer's journey against the real server and the local fake Stripe,
every rule in SQL: subscribe (Checkout → signed webhook → plan active), be metered (real conversations
counted, the feed; the finished day's overage queued and sent to Stripe through the outbox), be warned
(80 % and 100 % of the allowance: the billing overview and the owners' e-mail queued), pay late
(payment failed → grace), be limited (the jobs clock past the grace: Free's limits, no more overage,
nothing deleted), pay (limits back). The payments-off half: tests/billing/test_plans.py
(test_free_downgrade_with_payments_off_switches_now) and tests/console/test_billing_page.py."""
from __future__ import annotations

import datetime as dt
import time

import pytest
from jobs.outbox import OutboxDrainer
from pyapp.billing.config import billing_config
from pyapp.billing.sender import StripeSender
from support.billing import deliver, stripe_live, subscribe

ORIGIN = "https://shop.example.com"


@pytest.fixture
def settings(settings, fake_stripe):
    return stripe_live(settings, fake_stripe)


async def test_subscribe_metered_warned_late_limited_paid(tenant, fake_stripe, owner_conn, jobs_tx, jobs_pool,
                                                           settings):
    # Subscribe.
    _, event = await subscribe(tenant, fake_stripe, "pro")
    status, body = await deliver(tenant.server, event)
    assert status == 200 and body["plan"] == "pro", body
    sub_id = event["data"]["object"]["subscription"]
    customer = event["data"]["object"]["customer"]
    await owner_conn.execute("INSERT INTO parley.tenant_limits (tenant_id, included_conversations) VALUES ($1, 4)",
                             tenant.id)  # a small allowance, so a few conversations pass it

    # Metered: five visitors start conversations on the widget.
    status, bot = await tenant.call("POST", "/api/chatbots", json={"name": "Shop", "allowed_origins": [ORIGIN]})
    assert status == 201, bot
    for _ in range(5):
        status, s = await tenant.server.call("POST", "/api/widget/sessions",
                                             json={"chatbot_key": bot["public_key"], "start": True},
                                             headers={"Origin": ORIGIN})
        assert status == 201, s
    status, usage = await tenant.call("GET", "/api/billing/usage")
    assert status == 200 and sum(d["conversations"] for d in usage["days"]) == 5

    # Warned: the overview says the allowance is used up; the owners' e-mail is queued once.
    status, overview = await tenant.call("GET", "/api/billing")
    assert [(w["metric"], w["level"]) for w in overview["warnings"]] == [("conversations", "limit")]
    async with jobs_tx(tenant.id) as conn:
        assert await conn.fetchval("SELECT parley.record_usage_warnings()") >= 1
        assert await conn.fetchval("SELECT parley.record_usage_warnings()") == 0
    mail = await owner_conn.fetchval("SELECT payload FROM parley.outbox WHERE tenant_id = $1 "
                                     "AND kind = 'notice.usage_warning'", tenant.id)
    assert mail["to"] == [tenant.owner["email"]]

    # The day ends (the counters are yesterday's now): its overage goes to Stripe through the outbox.
    await owner_conn.execute("UPDATE parley.usage_counters SET day = day - 1 WHERE tenant_id = $1", tenant.id)
    today = dt.datetime.now(dt.UTC).date()
    async with jobs_tx(tenant.id) as conn:
        assert await conn.fetchval("SELECT parley.queue_usage_reports($1)", today) == 1
    drainer = OutboxDrainer(jobs_pool, "journey", senders={"stripe": StripeSender(billing_config(settings))})
    try:
        assert await drainer.drain() == 1
    finally:
        await drainer.close()
    (meter,) = fake_stripe.meter_events.values()
    assert meter["event_name"] == "parley_conversations" and meter["payload"] == {
        "stripe_customer_id": customer, "value": "1"}

    # Pay late: the invoice fails (8 days ago); the grace is over when the jobs clock comes by.
    fake_stripe.set_status(sub_id, "past_due")
    failed = fake_stripe.event("invoice.payment_failed", fake_stripe.invoice(sub_id, paid=False),
                               created=int(time.time()) - 8 * 86400)
    assert (await deliver(tenant.server, failed))[0] == 200
    async with jobs_tx(tenant.id) as conn:
        assert await conn.fetchval("SELECT parley.sweep_grace()") == 1
    # Limited: Free's limits, the plan and the data kept, no more overage billed.
    status, overview = await tenant.call("GET", "/api/billing")
    assert overview["limited"] is True and overview["plan"] == "pro" and overview["limits"]["max_chatbots"] == 1
    status, body = await tenant.call("POST", "/api/chatbots", json={"name": "second"})
    assert status == 402 and body["error"]["code"] == "plan_limit"
    assert await owner_conn.fetchval("SELECT count(*) FROM parley.conversations WHERE tenant_id = $1", tenant.id) == 5
    await owner_conn.execute("UPDATE parley.usage_counters SET day = day - 1 WHERE tenant_id = $1", tenant.id)
    async with jobs_tx(tenant.id) as conn:
        assert await conn.fetchval("SELECT parley.queue_usage_reports($1)", today) == 0

    # Paid at last: the plan's limits again.
    fake_stripe.set_status(sub_id, "active")
    assert (await deliver(tenant.server, fake_stripe.event("invoice.paid",
                                                           fake_stripe.invoice(sub_id, paid=True))))[0] == 200
    status, body = await tenant.call("POST", "/api/chatbots", json={"name": "second"})
    assert status == 201
