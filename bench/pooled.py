"""Pooled isolation at scale: many tenants' requests through two servers whose pools go through
PgBouncer in transaction mode, every answer checked against the tenant that asked.

    python bench/pooled.py [--requests 1000000] [--tenants 50] [--concurrency 64] [--pool-size 4] [--quick]

The same mix as tests/hardening/test_pooled_isolation.py (tests/support/pooled.py): reads of
the tenant's chatbots and leads, lead writes, writes SQL refuses inside their transaction, and
about 1 in 12 requests abandoned by the client mid-flight. Creates its own database (embedded
PostgreSQL, or DATABASE_URL) and drops it afterwards; PgBouncer is Debian's `pgbouncer`
(scripts/setup.sh --test installs it), the relays LISTEN on the direct URL. Prints progress every
50,000 requests and a last line `requests=N mixups=N req_per_s=N`. --quick: 20,000 requests.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import asyncpg  # noqa: E402
from bench.chat_flow import drop_database, prepare_database  # noqa: E402


async def main(args) -> None:
    from pyapp.db import _init_connection
    from support.pgbouncer import Bouncer
    from support.pooled import make_tenants, run_mix
    from support.server import start_server

    settings, maint, name = prepare_database()
    bouncer = Bouncer(settings.admin_url, pool_size=args.pool_size, secret=settings.secret_key)
    servers = []
    try:
        await bouncer.ready()
        direct = settings.app_url
        os.environ["PARLEY_PARLEY_APP_DATABASE_URL"] = bouncer.url()
        os.environ["PARLEY_LISTEN_URL"] = direct
        os.environ["PARLEY_DB_STATEMENT_CACHE"] = "0"
        servers = [await start_server(settings), await start_server(settings)]
        owner = await asyncpg.connect(settings.admin_url)
        await _init_connection(owner)  # jsonb as Python values, as the app's connections
        try:
            tenants = await make_tenants(servers, owner, args.tenants)
        finally:
            await owner.close()
        print(f"{args.tenants} tenants, 2 servers, PgBouncer transaction mode with {args.pool_size} server"
              f" connections, {args.concurrency} clients in flight", flush=True)
        total = {"ok": 0, "refused": 0, "aborted_in_sql": 0, "abandoned": 0, "mixups": 0}
        started = time.perf_counter()
        done, seed = 0, 1
        while done < args.requests:
            step = min(50_000, args.requests - done)
            counts = await run_mix(servers, tenants, step, args.concurrency, seed=seed)
            for key in ("ok", "refused", "aborted_in_sql", "abandoned"):
                total[key] += counts[key]
            total["mixups"] += len(counts["mixups"])
            for m in counts["mixups"][:3]:
                print("MIX-UP:", m, flush=True)
            done += step
            seed += 1
            elapsed = time.perf_counter() - started
            print(f"  {done:,} requests, {elapsed:.0f} s: " + ", ".join(f"{k}={v}" for k, v in total.items()),
                  flush=True)
        elapsed = time.perf_counter() - started
        print(f"requests={done} mixups={total['mixups']} req_per_s={done / elapsed:.0f}")
    finally:
        for s in servers:
            await s.close()
        bouncer.stop()
        await drop_database(maint, name)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=1_000_000)
    parser.add_argument("--tenants", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--pool-size", type=int, default=4)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.requests = min(args.requests, 20_000)
    asyncio.run(main(args))
