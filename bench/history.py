"""History benchmark: a big tenant's own pages, with years of chat beside another tenant.

    python bench/history.py [--scale 1.0] [--runs 30] [--rebuild] [--drop]

Builds once, in SQL (as the superuser, straight into the tables: minutes at full scale on 2
cores), a database `parley_history_bench` holding
  * the big tenant: 400,000 conversations and 4,000,000 messages over the last 90 days, written
    in time order as a live tenant's are (message ids grow with time) (10 per conversation, bodies drawn from a support vocabulary; "refund" and "damaged" are
    among the rarer words), 20,000 leads, the daily rollups (parley.rollup_daily_stats);
  * another tenant with 1,000,000 messages, so the big tenant's costs are measured beside them;
  * a small tenant (200 conversations).
`--scale` multiplies the sizes (0.1 for a quick look). The database is kept and reused by later
runs (`--rebuild` builds it again, `--drop` removes it). Then a real server (in this process)
answers, as each tenant's owner over HTTP:
  inbox text search GET /api/conversations?q=refund%20damaged, the 90-day analytics summary and
  conversations per day, the leads CSV (and whether it is streamed: chunked, first byte early);
and prints p50/p95/max per call and tenant (timed against `parley serve` in a process of its own), plus the search's plan as the inbox runs it (parley_app
under RLS → list_conversations → search_conversation_ids, via auto_explain). Before timing it runs
the rollup job once per tenant as the jobs process would (analytics read the rollup).
Targets (issue 17): search p95 <= 200 ms at 4 M messages; analytics <= 50 ms whatever the history.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
import asyncpg  # noqa: E402
from bench.soak import free_port, start_server  # noqa: E402
from pyapp.client import ParleyClient  # noqa: E402  (the API's own client)

DB = "parley_history_bench"
WORDS = ["order", "shipping", "delivery", "tracking", "package", "address", "invoice", "payment", "card", "account",
         "password", "login", "email", "help", "thanks", "please", "hello", "size", "color", "return", "exchange",
         "warranty", "discount", "coupon", "price", "stock", "available", "week", "today", "tomorrow", "late", "slow",
         "broken", "missing", "wrong", "item", "box", "label", "courier", "status"]
RARE = ("refund", "damaged", "chargeback", "cancelled")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


def settings_for(name: str):
    from pyapp.config import Settings, _read_or_create_secret, data_dir, with_database

    url = os.environ.get("DATABASE_URL")
    if url:
        maint = with_database(url, "postgres")
    else:
        from pyapp.embedded import EmbeddedCluster

        cluster = EmbeddedCluster(data_dir())
        cluster.start()
        maint = cluster.admin_url("postgres")
    secret = os.environ.get("PARLEY_SECRET_KEY") or _read_or_create_secret(data_dir() / "secret_key")
    return Settings(admin_url=with_database(maint, name), secret_key=secret, host="127.0.0.1", port=0,
                    embedded=not url, extra={"argon2_fast": True}), maint



async def scratch_database(name: str):
    """A new, empty database `name` (one left by an earlier run is dropped first): (settings, maint URL)."""
    settings, maint = settings_for(name)
    await drop_database(maint, name, then_create=True)
    return settings, maint



async def sign_up(settings, name: str = "Bench") -> dict:
    """A new workspace and its owner, as the server signs someone up (parley.sign_up, with a password
    hash the bench never checks): the session JSON (user, tenant, session_id)."""
    import json

    conn = await asyncpg.connect(settings.app_url)
    try:
        async with conn.transaction():
            await conn.execute("SELECT parley.begin_auth_request(NULL, NULL, NULL, NULL)")
            session = await conn.fetchval(
                "SELECT parley.sign_up($1, 'not-a-hash', 'Bench', $2, $3, $4, 3600)::text",
                f"{name}-{uuid.uuid4().hex[:6]}@bench.example", name, f"{name}-{uuid.uuid4().hex[:6]}".lower(),
                uuid.uuid4().bytes)
    finally:
        await conn.close()
    return json.loads(session)

async def drop_database(maint: str, name: str, *, then_create: bool = False) -> None:
    """Drop the scratch database `name` (its connections too) and, with then_create, make it again empty."""
    admin = await asyncpg.connect(maint)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if then_create:
            await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()

# The bodies: 8-14 words, one of the rare words in about 1 message in 50 (both in 1 in ~2,500).
BODY_SQL = """
  (SELECT string_agg(w, ' ') FROM (
     SELECT (CASE WHEN random() < 0.02 THEN $3::text[] ELSE $2::text[] END)[1 + floor(random() *
             CASE WHEN random() < 0.02 THEN cardinality($3::text[]) ELSE cardinality($2::text[]) END)::int] AS w
       FROM generate_series(1, 8 + (g % 7))) words)"""


async def build_tenant(conn: asyncpg.Connection, tenant_id: uuid.UUID, n_conv: int, per_conv: int,
                       n_leads: int) -> None:
    bot = await conn.fetchval("INSERT INTO parley.chatbots (tenant_id, name) VALUES ($1, 'History') RETURNING id",
                              tenant_id)
    step = 20_000
    for start in range(0, n_conv, step):
        count = min(step, n_conv - start)
        await conn.execute(f"""
          WITH c AS (
            INSERT INTO parley.conversations (tenant_id, chatbot_id, visitor_id, status, created_at,
                                              last_activity_at, closed_at, page_url)
            SELECT $1, $4, gen_random_uuid(), CASE WHEN g % 5 = 0 THEN 'bot' ELSE 'closed' END, at,
                   at + interval '20 minutes', CASE WHEN g % 5 = 0 THEN NULL ELSE at + interval '25 minutes' END,
                   'https://shop.example/p/' || (g % 500)
              FROM generate_series($5::int, $6::int) g,
                   -- in time order, as a live tenant writes them (message ids grow with time);
                   -- per row (g), with a little jitter
                   LATERAL (SELECT now() - interval '90 days' * (1 - (g - random()) / $7::int) AS at WHERE g > 0) t
            RETURNING id, created_at)
          INSERT INTO parley.messages (tenant_id, created_at, conversation_id, author, body)
          SELECT $1, c.created_at + g * interval '90 seconds', c.id,
                 CASE WHEN g % 2 = 0 THEN 'visitor' WHEN g % 3 = 0 THEN 'agent' ELSE 'bot' END, {BODY_SQL}
            FROM c, generate_series(1, {per_conv}) g
           ORDER BY 2""",
                           tenant_id, WORDS, list(RARE), bot, start + 1, start + count, n_conv)
        print(f"  {tenant_id}: {start + count:,} / {n_conv:,} conversations", flush=True)
    await conn.execute("""
      UPDATE parley.conversations c SET last_message_id = m.max_id, last_activity_at = m.last_at
        FROM (SELECT conversation_id, max(id) AS max_id, max(created_at) AS last_at FROM parley.messages
               WHERE tenant_id = $1 GROUP BY conversation_id) m
       WHERE c.tenant_id = $1 AND c.id = m.conversation_id""", tenant_id)
    await conn.execute("""
      INSERT INTO parley.leads (tenant_id, chatbot_id, name, email, custom, created_at)
      SELECT $1, $2, 'Lead ' || g, 'lead' || g || '@example.test', jsonb_build_object('n', g),
             now() - random() * interval '90 days'
        FROM generate_series(1, $3::int) g""", tenant_id, bot, n_leads)
    async with conn.transaction():
        await conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(tenant_id))
        await conn.execute("SELECT parley.rollup_daily_stats(current_date - 91)")


async def build(settings, scale: float, api: ParleyClient) -> dict:
    tenants = {}
    for name in ("big", "other", "small"):
        out = await api.sign_up(body={
            "email": f"{name}-{uuid.uuid4().hex[:6]}@bench.example", "password": "bench password 1",
            "tenant_name": name, "slug": f"{name}-{uuid.uuid4().hex[:6]}"})
        tenants[name] = {"id": uuid.UUID(out["tenant"]["id"]), "email": out["user"]["email"]}
    conn = await asyncpg.connect(settings.admin_url)
    try:
        await conn.execute("CREATE TABLE IF NOT EXISTS public.history_bench (name text PRIMARY KEY, tenant_id uuid,"
                           " email text)")
        sizes = {"big": (int(400_000 * scale), 10, int(20_000 * scale)),
                 "other": (int(100_000 * scale), 10, 1000), "small": (200, 10, 50)}
        for name, (n_conv, per_conv, n_leads) in sizes.items():
            started = time.monotonic()
            await build_tenant(conn, tenants[name]["id"], n_conv, per_conv, n_leads)
            print(f"built {name}: {n_conv:,} conversations, {n_conv * per_conv:,} messages "
                  f"in {time.monotonic() - started:.0f} s", flush=True)
        await conn.execute("ANALYZE")
        for name, t in tenants.items():
            await conn.execute("INSERT INTO public.history_bench VALUES ($1, $2, $3)", name, t["id"], t["email"])
    finally:
        await conn.close()
    return tenants


async def timed(call, runs: int) -> list[float]:
    """Milliseconds of `runs` calls of `call()` (a client method: the answer is parsed, as an
    integrator's would be; an error answer raises ParleyError)."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        await call()
        times.append((time.perf_counter() - started) * 1000)
    return times


async def export_shape(http, base, token) -> str:
    """The CSV export read raw (not through the client, which reads whole answers): is it streamed?"""
    started = time.perf_counter()
    async with http.get(base + "/api/leads.csv", headers={"Authorization": f"Bearer {token}"}) as resp:
        assert resp.status == 200, resp.status
        chunked = resp.headers.get("Transfer-Encoding", "") == "chunked"
        first = await resp.content.read(1)
        first_ms = (time.perf_counter() - started) * 1000
        rest = await resp.read()
        total_ms = (time.perf_counter() - started) * 1000
    return (f"{len(first) + len(rest):,} bytes, first byte {first_ms:.0f} ms, all {total_ms:.0f} ms, "
            f"{'chunked (streamed)' if chunked else 'one body (not streamed)'}")


async def plan(settings, tenant_id: uuid.UUID, query: str) -> str:
    """The search's plan as the inbox runs it: parley_app under RLS calls parley.list_conversations,
    which calls parley.search_conversation_ids (parley_auth, the tenant filter explicit); the nested
    statement's plan comes back through auto_explain (loaded by the superuser, then SET ROLE)."""
    conn = await asyncpg.connect(settings.admin_url)
    plans: list[str] = []
    conn.add_log_listener(lambda _c, msg: plans.append(msg.message))
    try:
        for statement in ("LOAD 'auto_explain'", "SET auto_explain.log_min_duration = 0",
                          "SET auto_explain.log_nested_statements = on", "SET auto_explain.log_analyze = on",
                          "SET auto_explain.log_buffers = on", "SET auto_explain.log_level = notice"):
            await conn.execute(statement)
        async with conn.transaction():
            await conn.execute("SET LOCAL ROLE parley_app")
            await conn.execute("SELECT set_config('app.tenant_id', $1, true), set_config('app.role', 'owner', true),"
                               " set_config('app.actor_kind', 'user', true)", str(tenant_id))
            await conn.fetch("SELECT * FROM parley.list_conversations(p_q => $1)", query)
        for _ in range(10):  # notices are handed to the listener on later loop turns
            await asyncio.sleep(0.05)
        nested = [p for p in plans if "search_conversation_ids" in p or "to_tsvector" in p]
        return "\n".join("    " + line for p in nested[:1] for line in p.splitlines())
    finally:
        await conn.close()


async def rollup(settings, tenants: dict) -> str:
    """What the jobs process does every 10 minutes: parley.rollup_daily_stats() per tenant as
    parley_jobs (the first run per tenant counts every day, later ones the days touched)."""
    conn = await asyncpg.connect(settings.jobs_url)
    out = []
    try:
        for name, t in tenants.items():
            for _ in range(2):
                started = time.perf_counter()
                async with conn.transaction():
                    await conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(t["id"]))
                    written = await conn.fetchval("SELECT parley.rollup_daily_stats()")
                out.append(f"{name}: {written} rows in {(time.perf_counter() - started) * 1000:.0f} ms")
    finally:
        await conn.close()
    return "; ".join(out)


async def main(args) -> None:
    from aiohttp import web
    from pyapp.app import create_app, make_runner
    from pyapp.migrate import migrate

    settings, maint = settings_for(DB)
    admin = await asyncpg.connect(maint)
    try:
        exists = await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", DB)
        if exists and (args.rebuild or args.drop):
            await admin.execute(f'DROP DATABASE "{DB}" WITH (FORCE)')
            exists = False
        if args.drop:
            print(f"dropped {DB}")
            return
        if not exists:
            await admin.execute(f'CREATE DATABASE "{DB}"')
    finally:
        await admin.close()
    migrate(settings)
    app = create_app(settings)
    runner = make_runner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    base = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
    http = aiohttp.ClientSession()
    api = ParleyClient(base, session=http)
    try:
        conn = await asyncpg.connect(settings.admin_url)
        built = await conn.fetchval("SELECT to_regclass('public.history_bench') IS NOT NULL")
        tenants = {}
        if built:
            tenants = {r["name"]: {"id": r["tenant_id"], "email": r["email"]}
                       for r in await conn.fetch("SELECT * FROM public.history_bench")}
        await conn.close()
        if len(tenants) < 3:
            print(f"building {DB} at scale {args.scale} (kept for later runs; --rebuild to redo)", flush=True)
            tenants = await build(settings, args.scale, api)
        sizes = await _sizes(settings)
        print("tenants:", ", ".join(f"{n}: {sizes.get(t['id'], (0, 0))[0]:,} conversations / "
                                     f"{sizes.get(t['id'], (0, 0))[1]:,} messages" for n, t in tenants.items()))
        for _name, t in tenants.items():
            out = await api.log_in(body={"email": t["email"], "password": "bench password 1"})
            t["token"] = out["access_token"]
        print("rollup job (run, then again):", await rollup(settings, tenants), flush=True)
        # The calls are timed against `parley serve` in a process of its own: the client (this
        # process) shares no event loop with the server.
        server = await start_server(settings, free_port())
        served = f"http://127.0.0.1:{server.args[-1]}"
        timed_api = ParleyClient(served, session=http)
        print(f"timing against parley serve (pid {server.pid}) from this process; {args.runs} calls each"
              f" (machine shared: load {os.getloadavg()[0]:.1f})", flush=True)
        pages = {"search": lambda c: c.list_conversations(q="refund damaged"),
                 "search, one word": lambda c: c.list_conversations(q="refund"),
                 "search, commonest word": lambda c: c.list_conversations(q="order"),
                 "search, rare pair": lambda c: c.list_conversations(q="chargeback cancelled"),
                 "search, no match": lambda c: c.list_conversations(q="zebra"),
                 "analytics summary 90d": lambda c: c.summary(days=90),
                 "conversations per day 90d": lambda c: c.conversations_per_day(days=90),
                 "csat per day 90d": lambda c: c.csat_per_day(days=90),
                 "top questions 90d": lambda c: c.questions(days=90),
                 "inbox first page": lambda c: c.list_conversations()}
        print(f"\n{'call':28} {'tenant':6} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}")
        for label, page in pages.items():
            for name in ("big", "small"):
                member = timed_api.with_token(tenants[name]["token"])
                times = await timed(lambda page=page, member=member: page(member), args.runs)
                print(f"{label:28} {name:6} {pct(times, 50):8.1f} {pct(times, 95):8.1f} {max(times):8.1f}", flush=True)
        # The rollup a day behind (the jobs process down since yesterday): yesterday and today
        # are counted from the rows.
        admin = await asyncpg.connect(settings.admin_url)
        try:
            await admin.execute("UPDATE parley.daily_stats_state SET rolled_at = rolled_at - interval '1 day'"
                                " WHERE tenant_id = $1", tenants["big"]["id"])
            for label, path in (("summary 90d, rollup 1 day old", pages["analytics summary 90d"]),
                                ("per day 90d, rollup 1 day old", pages["conversations per day 90d"])):
                big = timed_api.with_token(tenants["big"]["token"])
                times = await timed(lambda path=path, big=big: path(big), args.runs)
                print(f"{label:28} {'big':6} {pct(times, 50):8.1f} {pct(times, 95):8.1f} {max(times):8.1f}",
                      flush=True)
        finally:
            await admin.execute("UPDATE parley.daily_stats_state SET rolled_at = rolled_at + interval '1 day'"
                                " WHERE tenant_id = $1", tenants["big"]["id"])
            await admin.close()
        print("\nleads CSV, big tenant:", await export_shape(http, served, tenants["big"]["token"]))
        server.terminate()
        server.wait(15)
        print("\nsearch plan (big tenant, 'refund damaged', as parley_app through list_conversations):")
        print(await plan(settings, tenants["big"]["id"], "refund damaged"))
    finally:
        await http.close()
        await runner.cleanup()


async def _sizes(settings) -> dict:
    conn = await asyncpg.connect(settings.admin_url)
    try:
        rows = await conn.fetch("""SELECT c.tenant_id, c.n, (SELECT count(*) FROM parley.messages m
                                     WHERE m.tenant_id = c.tenant_id) AS m
                                     FROM (SELECT tenant_id, count(*) AS n FROM parley.conversations
                                            GROUP BY tenant_id) c""")
        return {r["tenant_id"]: (r["n"], r["m"]) for r in rows}
    finally:
        await conn.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--rebuild", action="store_true")
    parser.add_argument("--drop", action="store_true")
    asyncio.run(main(parser.parse_args()))
