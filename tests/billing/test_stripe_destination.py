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
