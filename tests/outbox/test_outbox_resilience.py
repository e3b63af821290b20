"""Nothing is lost: kill -9 of `parley jobs` mid-drain, a PostgreSQL crash restart, two drainers
at once; and one tenant never sees or replays another's deliveries."""
import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest
from pyapp.db import Actor, create_pool, tenant_tx
from support.database import crash_and_restart
from support.outbox import add_destination, delivery_statuses, make_drainer, post, start_conversation
from support.server import TEST_SECRET

ROOT = Path(__file__).resolve().parents[2]


async def _bulk_events(tenant, conv, n):
    """n message events in one transaction (one delivery each per subscribed destination)."""
    async with await tenant.tx("service") as conn:
        for i in range(n):
            await conn.execute("SELECT 1 FROM parley.post_message($1, 'bot', $2)", conv, f"m{i}")


async def _until_all_delivered(owner_conn, tenant, total, drainer, timeout=60):
    async with asyncio.timeout(timeout):
        while (await delivery_statuses(owner_conn, tenant)).get("delivered", 0) < total:
            if await drainer.drain() == 0:
                await asyncio.sleep(0.2)  # a destination held by its rate bucket or backoff


async def test_kill_9_mid_drain_loses_nothing(settings, owner_conn, tenant, sink, tmp_path):
    sink.script = [(200, {}, 0.02)] * 400
    await add_destination(owner_conn, tenant, sink.url)
    await add_destination(owner_conn, tenant, sink.url + "?second", name="second")
    conv = await start_conversation(tenant)
    await _bulk_events(tenant, conv, 150)
    keys = {f"msg_{r['delivery_key'].hex}" for r in await owner_conn.fetch(
        "SELECT delivery_key FROM parley.outbox WHERE tenant_id = $1", tenant.id)}
    assert len(keys) == 300

    env = {**os.environ, "DATABASE_URL": settings.admin_url, "PARLEY_SECRET_KEY": TEST_SECRET,
           "PARLEY_FETCH_ALLOW_HOSTS": "127.0.0.1", "PARLEY_OUTBOX_LEASE_S": "2",
           "PARLEY_JOBS_HEARTBEAT": str(tmp_path / "alive"), "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "pyapp.cli", "jobs"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        await sink.wait_for(40, timeout=60)  # mid-drain: requests in flight, batches not yet recorded
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    before = len(sink.received)
    assert before < 300
    # The dead worker's leases would lapse PARLEY_OUTBOX_LEASE_S after it last renewed them: let
    # them lapse now instead of waiting (a lease that has run out is what the survivor must take).
    await owner_conn.execute("UPDATE parley.outbox_destinations SET leased_until = now() - interval '1 second'"
                             " WHERE tenant_id = $1 AND leased_by IS NOT NULL", tenant.id)

    drainer = make_drainer(await tenant.pool("jobs"), "survivor")
    try:
        await _until_all_delivered(owner_conn, tenant, 300, drainer)
    finally:
        await drainer.close()
    assert await delivery_statuses(owner_conn, tenant) == {"delivered": 300}
    got = [r.msg_id for r in sink.received]
    assert set(got) == keys                      # every delivery arrived
    assert len(got) >= 300                      # some twice (sent, then killed before recording) ...
    dupes = {k for k in got if got.count(k) > 1}
    # ... and a resend carries the id of the first send, so the receiver can drop it.
    assert dupes <= keys
    attempts = await owner_conn.fetchval("SELECT count(*) FROM parley.outbox_attempts WHERE tenant_id = $1", tenant.id)
    assert attempts >= 300


async def test_postgres_crash_restart_loses_nothing(settings, tenant, sink, pg_server):
    if os.environ.get("TEST_DATABASE_URL"):
        pytest.skip("needs the run's own server to restart it")
    owner = await asyncpg.connect(settings.admin_url)
    await add_destination(owner, tenant, sink.url)
    conv = await start_conversation(tenant)
    await owner.close()
    sink.script = [(200, {}, 0.01)] * 200
    await _bulk_events(tenant, conv, 60)

    pool = await create_pool(settings.jobs_url, min_size=1, max_size=4)
    # A lease far longer than the wait below: the destination the crash caught mid-batch must come
    # back because the drainer gives its lease back, not because the lease ran out.
    drainer = make_drainer(pool, "through-restart", listen_dsn=settings.jobs_url, poll_s=0.2, lease_s=600)
    stop = asyncio.Event()
    task = asyncio.create_task(drainer.run(stop))
    try:
        await sink.wait_for(10)
        # Crash (no shutdown checkpoint), then recover from the WAL.
        await asyncio.to_thread(crash_and_restart, pg_server)
        # Written after the restart: the drainer's pool and listener come back by themselves.
        for p in tenant.pools.values():
            await p.expire_connections()
        await _bulk_events(tenant, conv, 20)
        owner = await asyncpg.connect(settings.admin_url)
        try:
            async with asyncio.timeout(60):
                while await owner.fetchval("SELECT count(*) FROM parley.outbox WHERE tenant_id = $1"
                                           " AND status <> 'delivered'", tenant.id):
                    await asyncio.sleep(0.2)
            assert await owner.fetchval("SELECT count(*) FROM parley.outbox WHERE tenant_id = $1", tenant.id) == 80
        finally:
            await owner.close()
    finally:
        stop.set()
        await task
        await drainer.close()
        await pool.close()
    keys_seen = {r.msg_id for r in sink.received}
    assert len(keys_seen) == 80


async def test_two_drainers_share_the_work_and_keep_order(settings, owner_conn, tenant, sink):
    await add_destination(owner_conn, tenant, sink.url + "?ordered", ordered=True, name="ordered")
    for i in range(3):
        await add_destination(owner_conn, tenant, sink.url + f"?plain{i}", name=f"plain{i}")
    conv = await start_conversation(tenant)
    await _bulk_events(tenant, conv, 100)
    pool_a = await create_pool(settings.jobs_url, min_size=1, max_size=4)
    pool_b = await create_pool(settings.jobs_url, min_size=1, max_size=4)
    a = make_drainer(pool_a, "a", batch=10, max_destinations=2)
    b = make_drainer(pool_b, "b", batch=10, max_destinations=2)
    try:
        sent = await asyncio.gather(a.drain(), b.drain())
    finally:
        for d, p in ((a, pool_a), (b, pool_b)):
            await d.close()
            await p.close()
    assert sum(sent) == 400
    assert await delivery_statuses(owner_conn, tenant) == {"delivered": 400}
    assert len(sink.received) == 400 and len({r.msg_id for r in sink.received}) == 400  # none twice
    ordered_bodies = [r.json()["data"]["message"]["body"] for r in sink.received if r.query == "ordered"]
    assert ordered_bodies == [f"m{i}" for i in range(100)]
    workers = await owner_conn.fetch("SELECT DISTINCT worker FROM parley.outbox_attempts WHERE tenant_id = $1", tenant.id)
    assert {w["worker"] for w in workers} == {"a", "b"}


async def test_a_tenant_never_sees_or_replays_anothers_deliveries(settings, owner_conn, tenant, sink, drainer):
    from support.knowledge import make_tenant

    other = await make_tenant(settings, owner_conn)
    try:
        dest = await add_destination(owner_conn, tenant, sink.url)
        conv = await start_conversation(tenant)
        sink.script = [(500, {}, 0)]
        await owner_conn.execute("UPDATE parley.outbox_destinations SET retry_window = '72 hours' WHERE id = $1", dest)
        await post(tenant, conv, "secret of tenant A")
        await owner_conn.execute("UPDATE parley.outbox SET deadline = now() WHERE tenant_id = $1", tenant.id)
        await drainer.drain()
        delivery = await owner_conn.fetchval("SELECT id FROM parley.outbox WHERE tenant_id = $1", tenant.id)
        assert await owner_conn.fetchval("SELECT status FROM parley.outbox WHERE id = $1", delivery) == "dead"
        for role in ("app", "jobs"):
            actor = Actor(tenant_id=other.id, kind="service" if role == "app" else "system", actor_id="x")
            async with tenant_tx(await other.pool(role), actor) as conn:
                for table in ("outbox", "outbox_attempts", "outbox_destinations"):
                    assert await conn.fetchval(f"SELECT count(*) FROM parley.{table}") == 0
        async with tenant_tx(await other.pool("jobs"), Actor(tenant_id=other.id, kind="system", actor_id="x")) as conn:
            with pytest.raises(asyncpg.PostgresError) as err:
                await conn.fetchval("SELECT parley.replay_delivery($1)", delivery)
            assert err.value.sqlstate == "PT404"
        async with tenant_tx(await other.pool("jobs"), Actor(tenant_id=other.id, kind="system", actor_id="x")) as conn:
            with pytest.raises(asyncpg.PostgresError) as err:
                await conn.fetchval("SELECT parley.replay_dead_letters($1)", dest)
            assert err.value.sqlstate == "PT404"
        async with tenant_tx(await other.pool("jobs"), Actor(tenant_id=other.id, kind="system", actor_id="x")) as conn:
            # Another tenant's drainer transaction cannot take or record that destination's work.
            assert await conn.fetch("SELECT * FROM parley.take_outbox_batch($1, 'x', 10)", dest) == []
            await conn.fetchval("SELECT parley.record_outbox_results($1, 'x', $2)", dest,
                                [{"id": delivery, "created_at": "2020-01-01T00:00:00Z", "outcome": "delivered"}])
        assert await owner_conn.fetchval("SELECT status FROM parley.outbox WHERE id = $1", delivery) == "dead"
    finally:
        await other.close()


async def test_a_worker_takes_back_a_lease_it_lost_track_of(settings, owner_conn, tenant, sink):
    """The database can restart after it committed a lease but before the drainer heard of it (or
    under the release): the same worker's next lease takes that destination again at once; another
    worker still waits for the lease to run out, and a destination the worker is busy with is not
    handed to it twice."""
    dest = await add_destination(owner_conn, tenant, sink.url)
    conv = await start_conversation(tenant)
    await post(tenant, conv, "waiting")
    pool = await create_pool(settings.jobs_url, min_size=1, max_size=2)
    lease = "SELECT destination_id FROM parley.lease_outbox_destinations($1, 10, 600, $2)"
    try:
        assert [r["destination_id"] for r in await pool.fetch(lease, "w1", [])] == [dest]  # reply "lost"
        assert await pool.fetch(lease, "w2", []) == []  # another worker: leased for 600 s
        assert await pool.fetch(lease, "w1", [dest]) == []  # busy with it: not twice
        assert [r["destination_id"] for r in await pool.fetch(lease, "w1", [])] == [dest]  # taken back
    finally:
        await pool.close()
