"""Stripe delivering at once: the same event several times concurrently, and a subscription's events
all at the same moment in the wrong order. Each event is applied once (parley.claim_billing_event in
the transaction that applies it: a copy waits for the first and is then a duplicate) and the plan
follows the subscription as re-read, whatever order the deliveries commit in (change_plan locks
the tenant and ignores a state read before the one applied)."""
from __future__ import annotations

import asyncio

import pytest
from support.billing import deliver, stripe_live, subscribe
from support.waits import until

ROUNDS = 6


@pytest.fixture
def settings(settings, fake_stripe):
    return stripe_live(settings, fake_stripe)


async def test_one_event_delivered_four_times_at_once_applies_once(make_tenant, fake_stripe, owner_conn):
    for _ in range(ROUNDS):
        tenant = await make_tenant()
        _, event = await subscribe(tenant, fake_stripe, "starter")
        outs = await asyncio.gather(*(deliver(tenant.server, event) for _ in range(4)))
        assert all(status == 200 for status, _ in outs), outs
        assert sorted(bool(body.get("duplicate")) for _, body in outs) == [False, True, True, True], outs
        row = await owner_conn.fetchrow(
            "SELECT t.plan, (SELECT count(*) FROM parley.billing_events e WHERE e.tenant_id = t.id) AS events,"
            " (SELECT count(*) FROM parley.plan_changes c WHERE c.tenant_id = t.id) AS changes"
            " FROM parley.tenants t WHERE t.id = $1", tenant.id)
        assert (row["plan"], row["events"], row["changes"]) == ("starter", 1, 1)


async def test_a_subscriptions_events_at_once_and_out_of_order_follow_the_subscription(make_tenant, fake_stripe,
                                                                                       owner_conn):
    for n in range(ROUNDS):
        tenant = await make_tenant()
        _, completed = await subscribe(tenant, fake_stripe, "pro")
        sub_id = completed["data"]["object"]["subscription"]
        updated = fake_stripe.event("customer.subscription.updated", fake_stripe.subscriptions[sub_id])
        events = [completed, updated]
        if n % 2:  # and it ends: whatever arrives, the re-read subscription is canceled
            fake_stripe.set_status(sub_id, "canceled")
            events.append(fake_stripe.event("customer.subscription.deleted", fake_stripe.subscriptions[sub_id]))
        outs = await asyncio.gather(*(deliver(tenant.server, e) for e in reversed(events + events)))
        assert all(status == 200 for status, _ in outs), outs
        row = await owner_conn.fetchrow(
            "SELECT t.plan, s.status, (SELECT count(*) FROM parley.billing_events e WHERE e.tenant_id = t.id) AS n"
            " FROM parley.tenants t JOIN parley.subscriptions s ON s.tenant_id = t.id WHERE t.id = $1", tenant.id)
        expected = ("free", "canceled") if n % 2 else ("pro", "active")
        assert (row["plan"], row["status"], row["n"]) == (*expected, len(events))


async def test_two_deliveries_of_one_tenant_change_the_plan_one_after_the_other(rows, connect, owner_conn):
    """The interleaving that deadlocked: both webhook transactions record their event first (the
    foreign key holds the tenant row FOR KEY SHARE), then each changes the plan. The first goes
    through, the second waits for it and then applies its own (later) state."""
    owner = await rows.tenant()
    first, second = await connect(), await connect()
    for conn, event in ((first, "evt_first"), (second, "evt_second")):
        await conn.execute("BEGIN")
        await conn.execute("SELECT parley.begin_request($1, 'service', 'stripe', NULL, NULL, NULL, 'visitor')",
                           owner.tenant_id)
        assert await conn.fetchval("SELECT parley.claim_billing_event($1, 'customer.subscription.updated', now())",
                                   event)
    change = "SELECT parley.change_plan($1, 'webhook', jsonb_build_object('status', 'active', 'synced_at', now()))"

    async def waits(conn, task):
        return task.done() or await owner_conn.fetchval("SELECT cardinality(pg_blocking_pids($1)) > 0",
                                                        conn.get_server_pid())

    first_task = asyncio.create_task(first.fetchval(change, "starter"))
    await until(lambda: waits(first, first_task), what="the first plan change to finish or wait")
    second_task = asyncio.create_task(second.fetchval(change, "pro"))
    await until(lambda: waits(second, second_task), what="the second plan change to finish or wait")
    if first_task.done() and first_task.exception() is None:
        await first.execute("COMMIT")
    results = await asyncio.gather(first_task, second_task, return_exceptions=True)
    for conn in (first, second):
        if conn.is_in_transaction():
            await conn.execute("COMMIT" if not any(isinstance(r, Exception) for r in results) else "ROLLBACK")
    assert not [r for r in results if isinstance(r, Exception)], results
    assert await owner_conn.fetchval("SELECT plan FROM parley.tenants WHERE id = $1", owner.tenant_id) == "pro"
