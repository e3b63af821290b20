"""`parley migrate` while traffic runs: how long a re-apply over a current schema takes, which locks
its sql/ transaction takes, and what requests see while a slow request holds rows.

    python bench/migrate.py [--hold 3] [--workers 4]

Builds a fresh database `parley_migrate_bench` (on DATABASE_URL's server, else the embedded
cluster in .parley/; dropped afterwards), migrates it and makes one workspace with a conversation,
then:
* times three re-applies of `parley migrate` (nothing to change) and counts the tables and views of
  parley/analytics/ops its sql/ transaction holds a SHARE-or-stronger lock on before it commits
  (each one would make requests wait, or wait for them);
* opens a parley_app transaction that holds the conversation (FOR UPDATE) and has posted a reply, as
  a slow request would, for --hold seconds; runs `parley migrate` meanwhile while --workers
  connections make short requests (begin_request, the plan limits, the conversation list) until
  both are done; prints how long the migrate took and the requests' p50 / p99 / max latency.
The last line is `reapply_s=N strong_locks=N migrate_under_hold_s=N request_p50_ms=N
request_p99_ms=N request_max_ms=N`. Every figure is from whatever machine runs it; on a shared,
loaded machine say so.
"""
from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import psycopg  # noqa: E402
from history import drop_database, pct, scratch_database, sign_up  # noqa: E402

DB = "parley_migrate_bench"
STRONG_LOCKS = """
  SELECT count(DISTINCT c.oid) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
   WHERE l.pid = pg_backend_pid() AND c.relpersistence <> 't'
     AND c.relnamespace::regnamespace::text IN ('parley', 'analytics', 'ops')
     AND l.mode IN ('ShareLock', 'ShareRowExclusiveLock', 'ExclusiveLock', 'AccessExclusiveLock')"""


def strong_locks_of_a_reapply(settings) -> int:
    from pyapp.migrate import apply_sql_files

    with psycopg.connect(settings.admin_url, autocommit=True) as conn, conn.transaction():
        apply_sql_files(conn)
        return conn.execute(STRONG_LOCKS).fetchall()[0][0]


async def workspace(settings) -> tuple[object, uuid.UUID]:
    """A workspace's owner actor and a conversation of it, made through the product's functions."""
    from pyapp.db import Actor

    session = await sign_up(settings)
    owner = Actor(tenant_id=uuid.UUID(session["tenant"]["id"]), kind="user", actor_id=session["user"]["id"],
                  session_id=uuid.UUID(session["session_id"]), min_role="agent")
    return owner, session


async def main(args) -> None:
    from pyapp.db import Actor, create_pool, tenant_tx
    from pyapp.migrate import migrate

    settings, maint = await scratch_database(DB)
    try:
        migrate(settings)
        reapply = []
        for _ in range(3):
            started = time.monotonic()
            migrate(settings)
            reapply.append(time.monotonic() - started)
        strong = strong_locks_of_a_reapply(settings)
        print(f"re-apply over a current schema: {' / '.join(f'{s:.2f}' for s in reapply)} s;"
              f" tables and views locked SHARE or stronger: {strong}", flush=True)

        owner, _ = await workspace(settings)
        pool = await create_pool(settings.app_url, min_size=args.workers + 1, max_size=args.workers + 2)
        try:
            async with tenant_tx(pool, owner) as conn:
                chatbot = await conn.fetchval("SELECT id FROM parley.create_chatbot('Bench', '{}', '{}')")
            async with tenant_tx(pool, Actor(tenant_id=owner.tenant_id, kind="service", min_role="visitor")) as conn:
                conversation = await conn.fetchval(
                    "SELECT id FROM parley.start_conversation($1, $2, 'https://shop.test/', NULL, 'UA', 'en',"
                    " '203.0.113.7'::inet, 'de')", chatbot, uuid.uuid4())

            latencies: list[float] = []
            held, done = asyncio.Event(), asyncio.Event()

            async def requests() -> None:
                while not done.is_set():
                    started = time.monotonic()
                    async with tenant_tx(pool, owner) as conn:
                        await conn.fetchval("SELECT max_chatbots FROM parley.effective_limits(parley.current_tenant_id())")
                        await conn.fetch("SELECT id, status FROM parley.conversations ORDER BY last_activity_at DESC"
                                         " LIMIT 20")
                    latencies.append(time.monotonic() - started)

            async def slow_request() -> None:
                async with tenant_tx(pool, owner) as conn:
                    await conn.fetchval("SELECT id FROM parley.conversations WHERE id = $1 FOR UPDATE", conversation)
                    await conn.fetchval("SELECT (parley.post_message($1, 'agent', 'One moment, please.')).id",
                                        conversation)
                    held.set()
                    await asyncio.sleep(args.hold)  # the slow request's own work, holding its locks

            workers = [asyncio.create_task(requests()) for _ in range(args.workers)]
            holder = asyncio.create_task(slow_request())
            await held.wait()
            started = time.monotonic()
            await asyncio.to_thread(migrate, settings)
            under_hold = time.monotonic() - started
            await holder
            done.set()
            await asyncio.gather(*workers)
        finally:
            await pool.close()
        ms = sorted(x * 1000 for x in latencies)
        print(f"migrate while a request held a conversation for {args.hold} s: {under_hold:.2f} s;"
              f" {len(ms)} requests meanwhile, p50 {pct(ms, 50):.1f} ms, p99 {pct(ms, 99):.1f} ms,"
              f" max {ms[-1]:.1f} ms", flush=True)
        print(f"reapply_s={statistics.median(reapply):.2f} strong_locks={strong} migrate_under_hold_s={under_hold:.2f}"
              f" request_p50_ms={pct(ms, 50):.1f} request_p99_ms={pct(ms, 99):.1f} request_max_ms={ms[-1]:.1f}")
    finally:
        await drop_database(maint, DB)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hold", type=float, default=3.0, help="seconds the slow request holds its locks")
    parser.add_argument("--workers", type=int, default=4, help="connections making short requests meanwhile")
    asyncio.run(main(parser.parse_args()))
