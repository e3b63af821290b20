"""Pooled isolation (issue 17): two server instances whose pools go through PgBouncer in
transaction mode (4 server connections shared by every tenant's transactions), the relays'
LISTEN on their own direct URL (PARLEY_LISTEN_URL), asyncpg's statement cache off
(PARLEY_DB_STATEMENT_CACHE=0, PgBouncer < 1.21). 10,000 requests of many tenants, with
transactions SQL aborts and requests the client abandons mid-flight: every answer is checked
against the tenant that asked, 0 mix-ups. bench/pooled.py runs the same mix at 10^6."""
from __future__ import annotations

import json
import os

import asyncpg
import pytest
from pyapp.context import POOL
from pyapp.realtime.relay import RELAY
from support.pgbouncer import Bouncer
from support.pooled import make_tenants, run_mix
from support.realtime import agent, visitor, widget_session
from support.server import start_server

REQUESTS = int(os.environ.get("PARLEY_POOLED_REQUESTS", "10000"))
TENANTS = 12
CONCURRENCY = 32


@pytest.fixture
async def pooled(settings, monkeypatch):
    """Two servers behind PgBouncer (transaction mode), LISTEN direct."""
    direct = settings.app_url
    bouncer = Bouncer(settings.admin_url, pool_size=4)
    try:
        await bouncer.ready()
        monkeypatch.setenv("PARLEY_PARLEY_APP_DATABASE_URL", bouncer.url())
        monkeypatch.setenv("PARLEY_LISTEN_URL", direct)
        monkeypatch.setenv("PARLEY_DB_STATEMENT_CACHE", "0")
        servers = [await start_server(settings), await start_server(settings)]
        try:
            yield servers, bouncer, direct
        finally:
            for s in servers:
                await s.close()
    finally:
        bouncer.stop()


# 10,000 HTTP requests through two servers and the client in one event loop: 60-100 s on the shared
# 2-core machine (load 13), past the suite's 120 s per test when it is busier.
@pytest.mark.timeout(360)
async def test_many_tenants_through_pgbouncer_never_mix(pooled, owner_conn, clients):
    servers, bouncer, direct = pooled
    tenants = await make_tenants(servers, owner_conn, TENANTS)

    # The relays LISTEN on their direct URL: a visitor's message through server 0 (its pool
    # through PgBouncer) reaches an agent socket on server 1.
    t0 = tenants[0]
    watcher = await agent(servers[1], t0["access_token"])
    clients.append(watcher)
    session = await widget_session(servers[0], t0["key"])
    v = await visitor(servers[0], session)
    clients.append(v)
    await v.send({"type": "message", "client_id": "c1", "body": "pooled hello"})
    await watcher.expect(lambda f: "pooled hello" in json.dumps(f))
    assert all(s.app[RELAY].source.dsn == direct for s in servers)
    assert all(s.app[POOL]._connect_kwargs.get("statement_cache_size") == 0 for s in servers)

    counts = await run_mix(servers, tenants, REQUESTS, CONCURRENCY)
    assert counts["mixups"] == [], counts["mixups"][:5]
    done = counts["ok"] + counts["refused"] + counts["aborted_in_sql"]
    assert done + counts["abandoned"] == REQUESTS and counts["ok"] > REQUESTS // 2, counts
    assert counts["aborted_in_sql"] > 0 and counts["abandoned"] > 0, counts
    # Every server connection PgBouncer handed around is clean: no tenant left set outside a
    # transaction (each statement below may land on any of them).
    conn = await asyncpg.connect(bouncer.url(), statement_cache_size=0)
    try:
        for _ in range(20):
            assert await conn.fetchval("SELECT current_setting('app.tenant_id', true)") in (None, "")
    finally:
        await conn.close()
    # The leads written are each in their own tenant, counted as the superuser.
    wrong = await owner_conn.fetchval(
        "SELECT count(*) FROM parley.leads l WHERE l.name LIKE 'lead-%' AND l.name <> 'lead-' || l.tenant_id")
    assert wrong == 0
