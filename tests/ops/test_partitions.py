"""Partitions and retention for DBAs: `parley partitions` (list, create ahead, drop expired with
--dry-run), ops.partitions and ops.retention_status, and per-tenant retention from the plan:
a monthly partition goes whole only once every tenant's retention has passed it, otherwise each
tenant's older rows are deleted in batches."""
import asyncio
import itertools
import json
import os
import sys

import asyncpg
import pytest
from support.knowledge import ROOT, make_tenant


@pytest.fixture
def run_cli(settings):
    """`parley partitions ...` as an operator runs it, against the test database."""
    env = {**os.environ, "DATABASE_URL": settings.admin_url, "PARLEY_SECRET_KEY": settings.secret_key,
           "PYTHONPATH": str(ROOT)}

    async def run(*argv):
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "pyapp.cli", "partitions", *argv, cwd=ROOT, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, err.decode()
        return out.decode()
    return run


async def _old_partition(owner_conn, table: str, months_back: int) -> str:
    """A monthly partition months_back months ago, made as the owner (as the jobs process would have)."""
    start = await owner_conn.fetchval(
        "SELECT date_trunc('month', now() - make_interval(months => $1))::date", months_back)
    name = f"{table}_{start:%Y_%m}"
    await owner_conn.execute("SET ROLE parley_owner")
    try:
        await owner_conn.execute(
            f"CREATE TABLE IF NOT EXISTS {name} PARTITION OF {table}"
            f" FOR VALUES FROM ('{start}') TO ('{start}'::date + interval '1 month')")
    finally:
        await owner_conn.execute("RESET ROLE")
    return name


async def _message(owner_conn, tenant, age: str, conversation=None):
    if conversation is None:
        conversation = await owner_conn.fetchval(
            "INSERT INTO parley.conversations (tenant_id, chatbot_id, visitor_id, status)"
            " VALUES ($1, $2, gen_random_uuid(), 'bot') RETURNING id", tenant.id, tenant.chatbot_id)
    await owner_conn.execute(
        "INSERT INTO parley.messages (tenant_id, conversation_id, author, body, created_at)"
        " VALUES ($1, $2, 'visitor', 'old words', now() - $3::text::interval)", tenant.id, conversation, age)
    await owner_conn.execute(
        "INSERT INTO parley.events (tenant_id, kind, conversation_id, actor_kind, at)"
        " VALUES ($1, 'message_added', $2, 'visitor', now() - $3::text::interval)", tenant.id, conversation, age)
    return conversation


async def _retention(owner_conn, tenant, days):
    await owner_conn.execute(
        "INSERT INTO parley.tenant_limits (tenant_id, retention_days) VALUES ($1, $2)"
        " ON CONFLICT (tenant_id) DO UPDATE SET retention_days = EXCLUDED.retention_days", tenant.id, days)


async def _expired(owner_conn, name):
    return await owner_conn.fetchval("SELECT expired FROM ops.partitions WHERE partition_name = $1", name)


async def test_list_shows_ranges_estimates_and_sizes(owner_conn, tenant, run_cli):
    await _message(owner_conn, tenant, "1 minute")
    await owner_conn.execute("ANALYZE parley.messages")
    rows = json.loads(await run_cli("list", "--json", "--table", "parley.messages"))
    month = await owner_conn.fetchval("SELECT to_char(now(), 'YYYY_MM')")
    current = next(r for r in rows if r["partition_name"] == f"parley.messages_{month}")
    assert current["range_from"] < current["range_to"] and current["row_estimate"] == 1 and current["bytes"] > 0
    assert current["expired"] is False and current["keep_days"] == 30  # the free plan's retention
    assert any(r["is_default"] and r["range_from"] is None for r in rows)
    text = await run_cli()  # the default action lists every table, as a table
    assert text.splitlines()[0].split()[:4] == ["table", "partition", "from", "to"]
    for table in ("parley.messages", "parley.events", "parley.audit_log", "parley.outbox"):
        assert table in text


async def test_create_ahead(owner_conn, run_cli):
    far = await owner_conn.fetchval("SELECT 'parley.audit_log_' || to_char(now() + interval '5 months', 'YYYY_MM')")
    assert await owner_conn.fetchval("SELECT to_regclass($1)", far) is None
    out = await run_cli("create", "--months-ahead", "5")
    assert "parley.audit_log: 2 partition(s) created" in out
    assert await owner_conn.fetchval("SELECT to_regclass($1)::text", far) == far
    # Owned by the owner role like the table, so the jobs process can drop it later.
    assert await owner_conn.fetchval("SELECT relowner::regrole::text FROM pg_class WHERE oid = $1::regclass", far) \
        == "parley_owner"
    assert "0 partition(s) created" in (await run_cli("create", "--months-ahead", "5")).splitlines()[0]


async def test_partition_drops_only_when_every_tenant_passed_it(settings, owner_conn, tenant, run_cli):
    other = await make_tenant(settings, owner_conn)
    old = await _old_partition(owner_conn, "parley.messages", 8)
    await _old_partition(owner_conn, "parley.events", 8)
    await _message(owner_conn, tenant, "8 months")
    await _message(owner_conn, other, "8 months")

    await _retention(owner_conn, other, 0)  # keeps forever: nothing goes whole
    assert await _expired(owner_conn, old) is False
    assert await owner_conn.fetchval("SELECT keep FROM ops.partitions WHERE partition_name = $1", old) is None
    await _retention(owner_conn, other, 400)  # 400 days reach back past this partition
    assert await _expired(owner_conn, old) is False
    assert "0 partition(s) would drop" in await run_cli("drop", "--dry-run")

    await _retention(owner_conn, other, 90)  # now every tenant's retention has passed it
    assert await _expired(owner_conn, old) is True
    out = await run_cli("drop", "--dry-run", "--table", "parley.messages")
    assert f"would drop {old}" in out and "1 partition(s) would drop" in out
    assert await owner_conn.fetchval("SELECT to_regclass($1)", old) is not None  # a dry run keeps it

    pool = await tenant.pool("jobs")
    async with pool.acquire() as conn:  # the jobs role's daily job drops it
        result = await conn.fetchval("SELECT parley.maintain_partitions()")
    assert result["dropped"] == 2  # messages and events of that month
    assert await owner_conn.fetchval("SELECT to_regclass($1)", old) is None
    await other.close()


async def test_retention_deletes_each_tenants_rows_in_batches(settings, owner_conn, tenant):
    keeper = await make_tenant(settings, owner_conn)
    await _retention(owner_conn, keeper, 400)
    conv = await _message(owner_conn, tenant, "40 days")  # the free plan keeps 30 days
    for _ in range(4):
        await _message(owner_conn, tenant, "35 days", conv)
    fresh = await _message(owner_conn, tenant, "1 day", conv)
    kept = await _message(owner_conn, keeper, "40 days")
    status = await owner_conn.fetchrow("SELECT * FROM ops.retention_status WHERE tenant_id = $1", tenant.id)
    assert status["retention_days"] == 30 and status["messages_due"] == 5 and status["events_due"] == 5

    runs = []
    while True:
        async with await tenant.tx("system") as conn:
            runs.append(await conn.fetchval("SELECT parley.apply_retention(2)"))
        if runs[-1] == 0:
            break
    assert runs == [4, 4, 2, 0]  # two messages and two events a run, oldest first
    assert await owner_conn.fetchval(
        "SELECT count(*) FROM parley.messages WHERE tenant_id = $1", tenant.id) == 1
    assert await owner_conn.fetchval("SELECT count(*) FROM parley.conversations WHERE id = $1", fresh) == 1
    status = await owner_conn.fetchrow("SELECT * FROM ops.retention_status WHERE tenant_id = $1", tenant.id)
    assert status["messages_due"] == 0 and status["events_due"] == 0 and status["closed_conversations_due"] == 0
    # The other tenant's rows of the same age are inside its retention and stay.
    assert await owner_conn.fetchval(
        "SELECT count(*) FROM parley.messages WHERE conversation_id = $1", kept) == 1
    keeper_status = await owner_conn.fetchrow("SELECT * FROM ops.retention_status WHERE tenant_id = $1", keeper.id)
    assert keeper_status["retention_days"] == 400 and keeper_status["messages_due"] == 0
    await keeper.close()


async def test_retention_batch_takes_what_was_stored_at_its_last_instant(owner_conn, tenant):
    conv = await _message(owner_conn, tenant, "1 day")
    await owner_conn.execute(  # three messages stored together (one statement, one instant), then a later one
        "INSERT INTO parley.messages (tenant_id, conversation_id, author, body, created_at)"
        " SELECT $1::uuid, $2::uuid, 'visitor', 'old words', now() - interval '40 days' FROM generate_series(1, 3)"
        " UNION ALL SELECT $1, $2, 'visitor', 'old words', now() - interval '35 days'", tenant.id, conv)
    runs = []
    for _ in range(3):
        async with await tenant.tx("system") as conn:
            runs.append(await conn.fetchval("SELECT parley.apply_retention(2)"))
    assert runs == [3, 1, 0]  # never half of what arrived together, never past the cutoff
    assert await owner_conn.fetchval("SELECT count(*) FROM parley.messages WHERE tenant_id = $1", tenant.id) == 1


async def test_retention_takes_closed_conversations_a_batch_at_a_time(owner_conn, tenant):
    """A plan's retention lowered (a year to 30 days) leaves old closed conversations with all their
    messages past the cutoff: each run deletes at most a batch of messages, one of events and one of
    conversations counted with what their cascade deletes, never a whole conversation's backlog at
    once (the old code deleted every closed conversation past retention, messages and all, in its
    first run), and a conversation goes only once it fits in a batch."""
    heavy = await _message(owner_conn, tenant, "50 days")
    for minutes in range(1, 12):  # twelve messages and twelve events, a minute apart
        await _message(owner_conn, tenant, f"50 days -{minutes} minutes", heavy)
    light = await _message(owner_conn, tenant, "45 days")
    fresh = await _message(owner_conn, tenant, "45 days")
    await owner_conn.execute("UPDATE parley.conversations SET status = 'closed', closed_at = now() - interval '40 days'"
                             " WHERE id = ANY ($1::uuid[])", [heavy, light])
    await owner_conn.execute("UPDATE parley.conversations SET status = 'closed', closed_at = now() - interval '5 days'"
                             " WHERE id = $1", fresh)  # closed within retention: kept (its old messages are not)
    rows = ("SELECT (SELECT count(*) FROM parley.messages WHERE tenant_id = $1)"
            " + (SELECT count(*) FROM parley.events WHERE tenant_id = $1)"
            " + (SELECT count(*) FROM parley.conversations WHERE tenant_id = $1)")
    left, runs = [await owner_conn.fetchval(rows, tenant.id)], []
    while True:
        async with await tenant.tx("system") as conn:
            runs.append(await conn.fetchval("SELECT parley.apply_retention(4)"))
        left.append(await owner_conn.fetchval(rows, tenant.id))
        if runs[-1] == 0:
            break
        assert len(runs) < 20
    assert left[0] == 3 + 2 * 14
    gone = [before - after for before, after in itertools.pairwise(left)]
    assert max(gone) <= 3 * 4, (gone, runs)  # a batch of each kind at most, cascades counted
    # Everything past retention went; the conversation closed 5 days ago stays (its old messages did not).
    assert await owner_conn.fetchval("SELECT array_agg(id) FROM parley.conversations WHERE tenant_id = $1",
                                     tenant.id) == [fresh]


async def test_retention_never_reaches_another_tenant(settings, owner_conn, tenant):
    other = await make_tenant(settings, owner_conn)
    theirs = await _message(owner_conn, other, "60 days")
    async with await tenant.tx("system") as conn:
        await conn.fetchval("SELECT parley.apply_retention()")
    assert await owner_conn.fetchval("SELECT count(*) FROM parley.messages WHERE conversation_id = $1", theirs) == 1
    await other.close()


async def test_audit_trail_kept_180_days(owner_conn):
    eight = await _old_partition(owner_conn, "parley.audit_log", 8)
    five = await _old_partition(owner_conn, "parley.audit_log", 5)
    assert await _expired(owner_conn, eight) is True and await _expired(owner_conn, five) is False
    assert (await owner_conn.fetchval("SELECT keep FROM ops.partitions WHERE partition_name = $1", five)).days == 180
    # The trail is append-only: it goes by whole months only, never row by row.
    assert [r["partition_name"] for r in await owner_conn.fetch(
        "SELECT * FROM parley.drop_expired_partitions(false, 'parley.audit_log')")] == [eight]
    assert await owner_conn.fetchval("SELECT to_regclass($1)", five) is not None


async def test_app_and_analyst_roles_cannot_read_or_drop(settings, owner_conn):
    for url in (settings.app_url, settings.role_url("parley_analyst")):
        conn = await asyncpg.connect(url)
        try:
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.fetch("SELECT * FROM ops.partitions")
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.fetch("SELECT * FROM parley.drop_expired_partitions(false, NULL)")
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.fetch("SELECT parley.partition_keep('parley.messages')")
        finally:
            await conn.close()
