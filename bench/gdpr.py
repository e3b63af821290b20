"""GDPR benchmark: export a big workspace as a zip, then purge it, beside another tenant.

    python bench/gdpr.py [--scale 0.05] [--keep]

Builds a fresh database `parley_gdpr_bench` (dropped afterwards unless --keep) with a big tenant
(400,000 conversations and 4,000,000 messages at scale 1, built like bench/history.py) and a
small one, then, as the operator's CLI does (the jobs role's `system` actor in the tenant's own
transaction):
  * exports the whole big tenant (pyapp.gdpr.archive: server-side cursors, zip written chunk by
    chunk) and prints rows/s, bytes, the time to the first chunk and how much the process's peak
    memory grew (ru_maxrss): it should stay flat whatever the tenant's size;
  * deletes the tenant, ends its grace and purges it with the job's function in batches of 5,000
    rows, printing the batches' p50/p95/max and the total time; then checks zero rows are left and the
    small tenant is unchanged.
Every figure is from whatever machine runs it; on a shared, loaded machine say so.
"""
from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import asyncpg  # noqa: E402
from history import build_tenant, drop_database, pct, scratch_database, sign_up  # noqa: E402

DB = "parley_gdpr_bench"


async def new_tenant(settings, name: str) -> uuid.UUID:
    return uuid.UUID((await sign_up(settings, name))["tenant"]["id"])


async def counts(admin: asyncpg.Connection, tenant_id: uuid.UUID) -> dict[str, int]:
    tables = await admin.fetch(
        "SELECT c.oid::regclass::text AS t FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id'"
        " WHERE n.nspname = 'parley' AND c.relkind IN ('r', 'p') AND NOT c.relispartition")
    return {r["t"]: await admin.fetchval(f"SELECT count(*) FROM {r['t']} WHERE tenant_id = $1", tenant_id)
            for r in tables}


async def main(args) -> None:
    from pyapp.db import Actor, create_pool, tenant_tx
    from pyapp.gdpr.archive import archive_chunks, begin_export
    from pyapp.migrate import migrate

    settings, maint = await scratch_database(DB)
    migrate(settings)
    big, small = await new_tenant(settings, "big"), await new_tenant(settings, "small")
    conn = await asyncpg.connect(settings.admin_url)
    try:
        started = time.monotonic()
        await build_tenant(conn, big, int(400_000 * args.scale), 10, int(20_000 * args.scale))
        await build_tenant(conn, small, 200, 10, 50)
        await conn.execute("ANALYZE")
        print(f"built in {time.monotonic() - started:.0f} s", flush=True)
        before_small = await counts(conn, small)
        big_rows = sum((await counts(conn, big)).values())

        pool = await create_pool(settings.jobs_url, min_size=1, max_size=1)
        try:
            rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            started = time.monotonic()
            first = None
            size = 0
            async with tenant_tx(pool, Actor(tenant_id=big, kind="system", actor_id="bench", min_role="admin")) as tx:
                scope = await begin_export(tx, None, None)
                async for chunk in archive_chunks(tx, scope):
                    if chunk and first is None:
                        first = time.monotonic() - started
                    size += len(chunk)
            took = time.monotonic() - started
            grew = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before
        finally:
            await pool.close()
        exported = sum(v for k, v in (await counts(conn, big)).items()
                       if k in ("parley.conversations", "parley.messages", "parley.leads", "parley.audit_log",
                                "parley.knowledge_sources", "parley.message_feedback", "parley.conversation_ratings"))
        print(f"export: {exported:,} rows, {size / 1e6:.1f} MB zip in {took:.1f} s ({exported / took:,.0f} rows/s),"
              f" first chunk {first * 1000:.0f} ms, peak RSS grew {grew / 1024:.1f} MB", flush=True)

        await conn.execute("UPDATE parley.tenants SET deleted_at = now(), purge_after = now() WHERE id = $1", big)
        jobs = await asyncpg.connect(settings.jobs_url)
        try:
            batches = []
            started = time.monotonic()
            while True:
                t0 = time.monotonic()
                deleted = await jobs.fetchval("SELECT parley.purge_deleted_tenants(5000)")
                if not deleted:
                    break
                batches.append(time.monotonic() - t0)
            took = time.monotonic() - started
        finally:
            await jobs.close()
        left = {k: v for k, v in (await counts(conn, big)).items() if v and k != "parley.tenant_purges"}
        assert not left, left
        assert await counts(conn, small) == before_small, "the other tenant changed"
        print(f"purge: {big_rows:,} rows in {len(batches)} batches of <= 5,000, {took:.1f} s "
              f"({big_rows / took:,.0f} rows/s), batch p50 {pct(batches, 50) * 1000:.0f} ms"
              f" p95 {pct(batches, 95) * 1000:.0f} ms max {max(batches) * 1000:.0f} ms; 0 rows left, the other tenant unchanged", flush=True)
    finally:
        await conn.close()
        if not args.keep:
            await drop_database(maint, DB)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=0.05)
    parser.add_argument("--keep", action="store_true")
    asyncio.run(main(parser.parse_args()))
