"""A tenant has one outbox destination of kind stripe (referral credits and usage reports share it),
even when two transactions ask for it first at the same moment."""
from __future__ import annotations

import asyncio

import asyncpg
from support.waits import blocked_on_lock


async def test_two_first_uses_at_once_make_one_stripe_destination(settings, owner_conn, sql_tenant):
    tenant = sql_tenant.tenant_id
    other = await asyncpg.connect(settings.admin_url)
    try:
        tx = owner_conn.transaction()
        await tx.start()
        first = await owner_conn.fetchval("SELECT parley.stripe_destination($1)", tenant)
        # the second first use waits for the first transaction instead of making its own
        second = asyncio.create_task(other.fetchval("SELECT parley.stripe_destination($1)", tenant))
        await blocked_on_lock(owner_conn, other.get_server_pid())
        await tx.commit()
        assert await second == first
        count = await owner_conn.fetchval(
            "SELECT count(*) FROM parley.outbox_destinations WHERE tenant_id = $1 AND kind = 'stripe'", tenant)
        assert count == 1
    finally:
        await other.close()


async def test_two_first_notices_at_once_make_one_owners_destination(settings, owner_conn, sql_tenant):
    """The owners' notice destination is made by the same one function (parley.system_destination)."""
    tenant = sql_tenant.tenant_id
    notice = "SELECT set_config('app.tenant_id', $1::uuid::text, true), parley.notify_owners('notice.test', '{}')"
    other = await asyncpg.connect(settings.admin_url)
    try:
        tx = owner_conn.transaction()
        await tx.start()
        await owner_conn.fetchrow(notice, tenant)
        other_tx = other.transaction()
        await other_tx.start()
        second = asyncio.create_task(other.fetchrow(notice, tenant))
        await blocked_on_lock(owner_conn, other.get_server_pid())
        await tx.commit()
        await second
        await other_tx.commit()
        rows = await owner_conn.fetch(
            "SELECT d.id, (SELECT count(*) FROM parley.outbox o WHERE o.destination_id = d.id) AS notices"
            " FROM parley.outbox_destinations d WHERE d.tenant_id = $1 AND d.kind = 'email' AND d.target = 'owners'",
            tenant)
        assert [r["notices"] for r in rows] == [2]
    finally:
        await other.close()
