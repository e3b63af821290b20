"""The drainers' read of a destination has one home, parley.lock_destination (sql/80_outbox.sql):
the current tenant's row or nothing, locked until the transaction ends, so a second writer of its
lease or health waits for the first (renew_destination_lease, record_outbox_results and
on_destination_paused all read it this way)."""

from __future__ import annotations

import asyncio
import re
import uuid
from pathlib import Path

from support.billing import jobs_pool, jobs_tx  # noqa: F401 (fixtures)
from support.waits import blocked_on_lock

LOCK = "SELECT (parley.lock_destination($1)).id"


async def destination(owner_conn, tenant_id) -> uuid.UUID:
    return await owner_conn.fetchval(
        "INSERT INTO parley.outbox_destinations (tenant_id, kind, name, target, event_kinds)"
        " VALUES ($1, 'webhook', 'hook', 'https://hooks.example.test/x', '{message_added}') RETURNING id", tenant_id)


async def test_only_the_own_tenants_destination_and_a_second_writer_waits(rows, owner_conn, jobs_tx):  # noqa: F811  pytest fixture imported above, injected by name
    mine, theirs = await rows.tenant(), await rows.tenant()
    dest = await destination(owner_conn, mine.tenant_id)
    async with jobs_tx(theirs.tenant_id) as conn:
        assert await conn.fetchval(LOCK, dest) is None
        assert await conn.fetchval("SELECT parley.record_outbox_results($1, 'w1', '[]')", dest) == {"recorded": 0}

    async def second_drainer():
        async with jobs_tx(mine.tenant_id) as conn:
            return await conn.fetchval("SELECT parley.record_outbox_results($1, 'w2', '[]')", dest)

    async with jobs_tx(mine.tenant_id) as holder:
        assert await holder.fetchval(LOCK, dest) == dest
        waiting = asyncio.create_task(second_drainer())
        await blocked_on_lock(owner_conn, user="parley_jobs")
        assert not waiting.done()
    assert (await waiting)["delivered"] == 0  # went on once the holder committed


async def test_an_unknown_destination_pausing_notifies_nobody(rows, jobs_tx):  # noqa: F811  pytest fixture imported above, injected by name
    mine = await rows.tenant()
    async with jobs_tx(mine.tenant_id) as conn:
        await conn.execute("SELECT parley.on_destination_paused($1)", uuid.uuid4())
        assert await conn.fetchval("SELECT count(*) FROM parley.outbox") == 0


def test_no_other_statement_locks_a_destination():
    """Only lock_destination takes a destination's row lock: a copy written again elsewhere fails here."""
    sql = Path(__file__).resolve().parents[2] / "sql"
    locking = [p.name for p in sql.glob("*.sql") for statement in p.read_text().split(";")
               if re.search(r"FROM parley\.outbox_destinations d\b", statement) and "FOR NO KEY UPDATE" in statement]
    assert locking == ["80_outbox.sql"]
