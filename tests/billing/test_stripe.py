"""Stripe end to end against the local fake: checkout -> signed webhook -> plan active -> limits;
forged, stale and replayed events refused with no side effect; out-of-order events; the
portal; downgrades; the dunning timeline (grace -> block) with an injected clock."""
from __future__ import annotations

import json
import time

import pytest
from support.billing import PUBLIC, deliver, stripe_live, subscribe
from support.fakes.stripe_api import sign


@pytest.fixture
def settings(settings, fake_stripe):
    return stripe_live(settings, fake_stripe)


async def facts(owner_conn, tenant):
    row = await owner_conn.fetchrow(
        "SELECT t.plan, s.status, s.billing_interval, s.grace_until, s.limited_at, s.cancel_at_period_end,"
        " s.extra_seats, (SELECT count(*) FROM parley.plan_changes c WHERE c.tenant_id = t.id) AS changes,"
        " (SELECT count(*) FROM parley.billing_events e WHERE e.tenant_id = t.id) AS events"
        " FROM parley.tenants t LEFT JOIN parley.subscriptions s ON s.tenant_id = t.id WHERE t.id = $1", tenant.id)
    return dict(row)


async def test_checkout_webhook_plan_active_limits_changed(tenant, fake_stripe, owner_conn):
    session, event = await subscribe(tenant, fake_stripe, "pro", "year", extra_seats=3)
    assert session["success_url"].startswith(PUBLIC + "/console/billing")
    assert session["cancel_url"].startswith(PUBLIC + "/console/billing")
    assert session["client_reference_id"] == str(tenant.id) and session["metadata"]["plan"] == "pro"
    amounts = [int(li["price_data"]["unit_amount"]) for li in session["line_items"]]
    assert amounts == [99000, 9000]  # Pro annual = 10 months; 3 extra seats at the annual seat price
    assert session["line_items"][1]["quantity"] == "3"
    api_calls = [r for r in fake_stripe.requests if r["path"].startswith("/v1/")]
    assert all(r["headers"].get("Stripe-Version") == "2026-10-28.endive" for r in api_calls)
    assert (await facts(owner_conn, tenant))["plan"] == "free"  # nothing changes before Stripe says so

    status, body = await deliver(tenant.server, event)
    assert status == 200 and body["applied"] and body["plan"] == "pro", body
    f = await facts(owner_conn, tenant)
    assert (f["plan"], f["status"], f["billing_interval"], f["extra_seats"]) == ("pro", "active", "year", 3)
    status, body = await tenant.call("GET", "/api/billing")
    assert body["limits"]["max_chatbots"] == 20 and body["limits"]["max_seats"] == 53
    # The customer is reused by the next checkout and the portal.
    status, body = await tenant.call("POST", "/api/billing/portal", headers={"Host": "evil.example"})
    assert status == 200 and body["url"].startswith("https://billing.stripe.test/")
    portal = [r for r in fake_stripe.requests if r["path"] == "/v1/billing_portal/sessions"][-1]
    assert portal["params"]["return_url"] == PUBLIC + "/console/billing"
    assert portal["params"]["customer"] == session["customer"] and len(fake_stripe.customers) == 1


async def test_forged_stale_unsigned_and_replayed_events_change_nothing(tenant, fake_stripe, owner_conn):
    _, event = await subscribe(tenant, fake_stripe)
    before = await facts(owner_conn, tenant)
    payload = json.dumps(event).encode()
    refused = [
        await deliver(tenant.server, event, secret="whsec_someone_else"),
        await deliver(tenant.server, event, timestamp=int(time.time()) - 400),
        await deliver(tenant.server, event, signature=False),
        await deliver(tenant.server, payload.replace(b'"pro"', b'"white_label"'), signature=sign(payload)),
        await deliver(tenant.server, event, signature="t=abc,v1=zz"),
    ]
    for status, body in refused:
        assert status == 400 and body["error"]["code"] == "invalid_signature", body
    assert await facts(owner_conn, tenant) == before
    assert not [r for r in fake_stripe.requests if r["path"].startswith("/v1/subscriptions")]

    status, body = await deliver(tenant.server, event)
    assert status == 200 and body["applied"]
    applied = await facts(owner_conn, tenant)
    status, body = await deliver(tenant.server, event)  # Stripe delivers it again
    assert status == 200 and body["duplicate"] is True
    assert await facts(owner_conn, tenant) == applied and applied["events"] == 1 and applied["changes"] == 1


async def test_out_of_order_events_follow_the_subscription_not_the_event(tenant, fake_stripe, owner_conn):
    _, completed = await subscribe(tenant, fake_stripe, "starter")
    sub_id = completed["data"]["object"]["subscription"]
    updated = fake_stripe.event("customer.subscription.updated", fake_stripe.subscriptions[sub_id])
    fake_stripe.set_status(sub_id, "canceled")
    deleted = fake_stripe.event("customer.subscription.deleted", fake_stripe.subscriptions[sub_id])
    # The deletion arrives first, then the older events: the re-read subscription is canceled.
    for event in (deleted, completed, updated):
        status, body = await deliver(tenant.server, event)
        assert status == 200 and body["plan"] == "free", body
    f = await facts(owner_conn, tenant)
    assert f["plan"] == "free" and f["status"] == "canceled"


async def test_member_sessions_only(tenant, fake_stripe, make_api_key, signup):
    key = await make_api_key(tenant.server, tenant.token)
    for path in ("/api/billing/checkout", "/api/billing/portal", "/api/billing/downgrade"):
        status, body = await tenant.call("POST", path, json={"plan": "pro"}, token=key)
        assert status == 403 and body["error"]["code"] == "api_key_not_allowed"
    agent = await signup(tenant.server, join=tenant.owner, role="agent")
    status, body = await tenant.call("POST", "/api/billing/checkout", json={"plan": "pro"}, token=agent["access_token"])
    assert status == 403
    status, body = await tenant.call("POST", "/api/billing/portal")
    assert status == 409 and body["error"]["code"] == "no_customer"
    status, body = await tenant.call("POST", "/api/billing/checkout", json={"plan": "free"})
    assert status == 422
    assert not fake_stripe.sessions


async def test_downgrade_cancels_at_period_end_then_webhook_switches(tenant, fake_stripe, owner_conn):
    _, event = await subscribe(tenant, fake_stripe, "starter")
    await deliver(tenant.server, event)
    sub_id = event["data"]["object"]["subscription"]
    status, body = await tenant.call("POST", "/api/billing/downgrade", json={"plan": "free"})
    assert status == 200 and body["scheduled"] is True and body["at"]
    assert fake_stripe.subscriptions[sub_id]["cancel_at_period_end"] is True
    assert (await facts(owner_conn, tenant))["plan"] == "starter"  # paid until the period ends
    await deliver(tenant.server, fake_stripe.event("customer.subscription.updated", fake_stripe.subscriptions[sub_id]))
    assert (await facts(owner_conn, tenant))["cancel_at_period_end"] is True
    fake_stripe.set_status(sub_id, "canceled")
    await deliver(tenant.server, fake_stripe.event("customer.subscription.deleted", fake_stripe.subscriptions[sub_id]))
    f = await facts(owner_conn, tenant)
    assert f["plan"] == "free" and f["status"] == "canceled"


async def test_dunning_timeline_grace_then_block_then_paid(tenant, fake_stripe, owner_conn, jobs_tx):
    _, event = await subscribe(tenant, fake_stripe, "pro")
    await deliver(tenant.server, event)
    sub_id = event["data"]["object"]["subscription"]
    failed_at = int(time.time()) - 3 * 86400
    fake_stripe.set_status(sub_id, "past_due")
    failed = fake_stripe.event("invoice.payment_failed", fake_stripe.invoice(sub_id, paid=False), created=failed_at)
    status, body = await deliver(tenant.server, failed)
    assert status == 200 and body["applied"], body
    f = await facts(owner_conn, tenant)
    assert f["status"] == "past_due" and f["grace_until"].timestamp() == failed_at + 7 * 86400
    status, body = await tenant.call("GET", "/api/billing")
    assert body["limited"] is False and body["limits"]["max_chatbots"] == 20
    assert body["subscription"]["grace_until"]
    # A retry fails again today: the grace period still ends 7 days after the first failure.
    await deliver(tenant.server, fake_stripe.event("invoice.payment_failed", fake_stripe.invoice(sub_id, paid=False)))
    assert (await facts(owner_conn, tenant))["grace_until"] == f["grace_until"]
    # The jobs clock reaches the end of grace: Free limits, plan and data kept.
    async with jobs_tx(tenant.id) as conn:
        assert await conn.fetchval("SELECT parley.sweep_grace($1)", f["grace_until"]) == 1
    status, body = await tenant.call("GET", "/api/billing")
    assert body["limited"] is True and body["plan"] == "pro" and body["limits"]["max_chatbots"] == 1
    status, body = await tenant.call("POST", "/api/chatbots", json={"name": "one"})
    assert status == 201
    status, body = await tenant.call("POST", "/api/chatbots", json={"name": "two"})
    assert status == 402 and body["error"]["code"] == "plan_limit"
    # Paid at last.
    fake_stripe.set_status(sub_id, "active")
    await deliver(tenant.server, fake_stripe.event("invoice.paid", fake_stripe.invoice(sub_id, paid=True)))
    f = await facts(owner_conn, tenant)
    assert f["status"] == "active" and f["grace_until"] is None and f["limited_at"] is None
    status, body = await tenant.call("POST", "/api/chatbots", json={"name": "two"})
    assert status == 201


async def test_stripe_down_answers_502_and_the_event_is_retried(tenant, fake_stripe, owner_conn):
    _, event = await subscribe(tenant, fake_stripe)
    fake_stripe.fail_next = 5
    status, body = await deliver(tenant.server, event)
    assert status == 502 and body["error"]["code"] == "payment_provider_error"
    assert (await facts(owner_conn, tenant))["events"] == 0
    fake_stripe.fail_next = 0
    status, body = await deliver(tenant.server, event)
    assert status == 200 and body["applied"]


async def test_an_event_naming_another_tenants_customer_changes_nothing(make_tenant, fake_stripe, owner_conn):
    a, b = await make_tenant(), await make_tenant()
    for t in (a, b):
        _, event = await subscribe(t, fake_stripe, "starter")
        assert (await deliver(t.server, event))[0] == 200
    before = await facts(owner_conn, a)
    # b's subscription claims to be a's (metadata is Stripe's, but the customer decides).
    b_sub = next(s for s in fake_stripe.subscriptions.values() if s["metadata"]["tenant_id"] == str(b.id))
    b_sub["metadata"] = {**b_sub["metadata"], "tenant_id": str(a.id), "plan": "pro"}
    status, body = await deliver(a.server, fake_stripe.event("customer.subscription.updated", b_sub))
    assert status == 200 and body.get("ignored") == "customer mismatch", body
    after = await facts(owner_conn, a)  # the event id is recorded as handled; nothing else moved
    assert {**after, "events": 0} == {**before, "events": 0} and after["plan"] == "starter"


@pytest.mark.parametrize("payload, status, code", [
    (b"[1, 2]", 400, "invalid_event"),
    (b'"evt"', 400, "invalid_event"),
    (json.dumps({"id": "evt_1", "type": "invoice.paid", "data": "x"}).encode(), 400, "invalid_event"),
    (json.dumps({"id": "evt_1", "type": "invoice.paid", "data": {"object": [1]}}).encode(), 400, "invalid_event"),
    (json.dumps({"id": 7, "type": "invoice.paid", "data": {"object": {}}}).encode(), 400, "invalid_event"),
    (json.dumps({"id": "evt_1", "type": "invoice.paid", "created": "soon", "data": {"object": {}}}).encode(),
     400, "invalid_event"),
    (b'{"id": "evt_1", "type": "made.up", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}", 400, "too_deep"),
    (json.dumps({"id": "evt_\u0000", "type": "invoice.paid", "data": {"object": {}}}).encode(), 422, "validation_failed"),
])
async def test_signed_bodies_that_are_not_events_are_refused(server, payload, status, code):
    """Found by bench/hostile.py: a correctly signed body of another shape (a list, `data` a string, too
    deep to parse) was a 500; only Stripe can sign, but a 500 makes it retry for days."""
    got, body = await deliver(server, payload)
    assert (got, body["error"]["code"]) == (status, code), body
