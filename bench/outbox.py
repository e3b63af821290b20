"""Outbox benchmark: deliveries drained to a local webhook sink.

    python bench/outbox.py [--quick] [--events N] [--destinations D] [--drainers N] [--rate R] [--seconds S]
                           [--profile N]

Uses DATABASE_URL when set, else the embedded PostgreSQL (./.parley); creates its own database
(bench/chat_flow.py's prepare_database) and drops it afterwards. The sink is an HTTP server
in a child process (a raw asyncio HTTP/1.1 protocol, so its own cost stays small) that answers 200 and
notes when each webhook-id arrived.

* Throughput: N events are written as the server writes them (parley.emit_event in a tenant
  transaction), each enqueuing one delivery per subscribed destination through the events
  trigger; then one drainer (jobs/outbox.py, as parley_jobs) sends the backlog (--drainers N: N
  drain processes, each leasing its share of the destinations). outbox_per_s =
  deliveries ÷ time from the drainer's start to the last one recorded as delivered.
* Latency: events at R deliveries/s for S seconds while the drainer runs (LISTEN wake-ups and
  polling as in `parley jobs`); enqueue-to-send = the sink's arrival time − the delivery's
  created_at (its transaction's start).
* Afterwards: the outbox's size and dead tuples (autovacuum has to keep up with one UPDATE per
  delivery), how many record_outbox_results calls recorded the attempts (a drainer records a
  batch's answers as they come: more calls, fewer resends after a crash), and the enqueue cost: the same events with no destination subscribed and with D.

Last line: `outbox_per_s=N p99_enqueue_to_send_ms=N`.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import asyncpg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

SINK = r"""
# A cheap HTTP/1.1 sink (raw asyncio protocol, keep-alive) so the figure is about the drainer: answers
# every POST 200 and notes when each webhook-id first arrived; GET /stats returns them as JSON.
import asyncio, json, time
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
seen = {}
class Sink(asyncio.Protocol):
    def connection_made(self, transport):
        self.t, self.buf = transport, bytearray()
    def data_received(self, data):
        buf = self.buf
        buf += data
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buf[:end]).lower()
            i = head.find(b"content-length:")
            n = int(head[i + 15:head.find(b"\r\n", i) if head.find(b"\r\n", i) > 0 else None]) if i >= 0 else 0
            if len(buf) < end + 4 + n:
                return
            del buf[:end + 4 + n]
            if head.startswith(b"get /stats"):
                body = json.dumps(seen).encode()
                self.t.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
                continue
            j = head.find(b"webhook-id:")
            if j >= 0:
                seen.setdefault(head[j + 11:head.find(b"\r\n", j) if head.find(b"\r\n", j) > 0 else None].strip().decode(), time.time())
            self.t.write(OK)
async def main():
    server = await asyncio.get_running_loop().create_server(Sink, "127.0.0.1", 0, backlog=4096)
    print(server.sockets[0].getsockname()[1], flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""


# An extra drain process for --drainers N (as a second `parley jobs` would be): drains what it can
# lease, then prints the deliveries it sent and its CPU seconds.
DRAIN = r"""
import asyncio, json, sys, time
sys.path.insert(0, sys.argv[1])
from jobs.outbox import OutboxDrainer
from pyapp.db import create_pool
from pyapp.webhooks.sender import WebhookSender
async def main():
    url, worker, batch, most = sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
    pool = await create_pool(url, min_size=2, max_size=8)
    drainer = OutboxDrainer(pool, worker, senders={"webhook": WebhookSender(allow_hosts=["127.0.0.1"])},
                            batch=batch, max_destinations=most)
    sys.stdin.readline()  # go
    cpu0 = time.process_time()
    sent = await drainer.drain(timeout=600)
    await drainer.close()
    await pool.close()
    print(json.dumps({"sent": sent, "cpu": time.process_time() - cpu0}), flush=True)
asyncio.run(main())
"""


def pct(values, q):
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q / 100 * len(s) + 0.5) - 1))]


async def emit(pool, tenant, conv, n, per_tx=50):
    from pyapp.db import Actor, tenant_tx
    done = 0
    while done < n:
        k = min(per_tx, n - done)
        async with tenant_tx(pool, Actor(tenant_id=tenant, kind="service", actor_id="bench")) as conn:
            await conn.execute("SELECT parley.emit_event('message_added', $1, NULL, '{}') FROM generate_series(1, $2)",
                               conv, k)
        done += k


def proc_cpu(pid: int) -> float:
    """utime + stime of a process in seconds (/proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


async def pg_cpu(admin_url: str) -> float:
    """CPU seconds of PostgreSQL so far: the postmaster, its reaped children (backends that ended,
    autovacuum workers) and the live ones (bench/retrieval.py's postgres_cpu). Every database of the
    cluster counts: run it on a cluster of its own."""
    from retrieval import postgres_cpu

    return await postgres_cpu(admin_url) or 0.0


async def enqueue_cost(pool, tenant, conv, n) -> float:
    """µs of wall time per event written (no drainer running)."""
    t = time.perf_counter()
    await emit(pool, tenant, conv, n)
    return (time.perf_counter() - t) / n * 1e6


async def run(args) -> None:
    from chat_flow import drop_database, prepare_database
    from jobs.outbox import OutboxDrainer
    from pyapp.db import create_pool
    from pyapp.outbox.senders import Destination  # noqa: F401  (import check)
    from pyapp.webhooks.sender import WebhookSender

    settings, maint, dbname = prepare_database()
    sink = subprocess.Popen([sys.executable, "-c", SINK], stdout=subprocess.PIPE, text=True)
    port = int(sink.stdout.readline())
    owner = await asyncpg.connect(settings.admin_url)
    app_pool = await create_pool(settings.app_url, min_size=2, max_size=4)
    jobs_pool = await create_pool(settings.jobs_url, min_size=2, max_size=8)
    try:
        tenant = await owner.fetchval("INSERT INTO parley.tenants (slug, name) VALUES ('bench', 'Bench') RETURNING id")
        bot = await owner.fetchval("INSERT INTO parley.chatbots (tenant_id, name) VALUES ($1, 'b') RETURNING id", tenant)
        conv = await owner.fetchval("INSERT INTO parley.conversations (tenant_id, chatbot_id, visitor_id)"
                                    " VALUES ($1, $2, gen_random_uuid()) RETURNING id", tenant, bot)
        cost_none = await enqueue_cost(app_pool, tenant, conv, 2000)
        for i in range(args.destinations):
            await owner.execute("INSERT INTO parley.outbox_destinations (tenant_id, kind, name, target, event_kinds)"
                                " VALUES ($1, 'webhook', $2, $3, '{message_added}')", tenant, f"d{i}",
                                f"http://127.0.0.1:{port}/hook/{i}")
        cost_some = await enqueue_cost(app_pool, tenant, conv, 2000)
        await owner.execute("DELETE FROM parley.outbox")  # the cost probe's rows are not part of the run
        await owner.execute("ANALYZE")

        # Throughput: a backlog.
        await emit(app_pool, tenant, conv, args.events)
        total = args.events * args.destinations
        sender = WebhookSender(allow_hosts=["127.0.0.1"])
        share = -(-args.destinations // args.drainers)  # destinations each drain process leases at once
        drainer = OutboxDrainer(jobs_pool, "bench", senders={"webhook": sender}, batch=args.batch,
                                max_destinations=share)
        others = [subprocess.Popen([sys.executable, "-c", DRAIN, str(ROOT), settings.jobs_url, f"bench-{i}",
                                    str(args.batch), str(share)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                   text=True) for i in range(1, args.drainers)]
        await asyncio.sleep(2 if others else 0)  # their imports and pools ready
        t0, cpu0, sink0 = time.perf_counter(), time.process_time(), proc_cpu(sink.pid)
        pg0 = await pg_cpu(settings.admin_url)
        for child in others:
            child.stdin.write("go\n")
            child.stdin.flush()
        profiler = None
        if args.profile:
            import cProfile
            profiler = cProfile.Profile()
            profiler.enable()
        sent = await drainer.drain(timeout=600)
        other_cpu = 0.0
        for child in others:
            line = await asyncio.to_thread(child.stdout.readline)
            done = json.loads(line)
            sent += done["sent"]
            other_cpu += done["cpu"]
        elapsed = time.perf_counter() - t0
        if profiler is not None:
            import pstats
            profiler.disable()
            pstats.Stats(profiler).sort_stats("tottime").print_stats(args.profile)
        cpu = (time.process_time() - cpu0 + other_cpu) / max(sent, 1) * 1e6
        sink_cpu = (proc_cpu(sink.pid) - sink0) / max(sent, 1) * 1e6
        pg = (await pg_cpu(settings.admin_url) - pg0) / max(sent, 1) * 1e6
        per_s = sent / elapsed
        print(f"backlog: {sent:,}/{total:,} deliveries in {elapsed:.2f} s = {per_s:,.0f}/s "
              f"(batch {args.batch}, {args.destinations} destinations, {args.drainers} drain process"
              f"{'es' if args.drainers > 1 else ''}); CPU per delivery: drainer {cpu:.0f} µs, "
              f"PostgreSQL {pg:.0f} µs, sink {sink_cpu:.0f} µs; load average {os.getloadavg()[0]:.1f}", flush=True)

        # Latency: paced, drainer woken by NOTIFY and polling.
        stop = asyncio.Event()
        drainer2 = OutboxDrainer(jobs_pool, "bench-live", senders={"webhook": sender}, batch=args.batch,
                                 max_destinations=args.destinations, listen_dsn=settings.jobs_url)
        task = asyncio.create_task(drainer2.run(stop))
        await asyncio.sleep(0.5)
        start_id = await owner.fetchval("SELECT coalesce(max(id), 0) FROM parley.outbox")
        events_per_tick = max(1, round(args.rate / args.destinations / 50))
        t_end = time.perf_counter() + args.seconds
        next_tick = time.perf_counter()
        while time.perf_counter() < t_end:
            await emit(app_pool, tenant, conv, events_per_tick, per_tx=events_per_tick)
            next_tick += 0.02
            await asyncio.sleep(max(0, next_tick - time.perf_counter()))
        async with asyncio.timeout(120):
            while await owner.fetchval("SELECT count(*) FROM parley.outbox WHERE status = 'pending'"):
                await asyncio.sleep(0.2)
        stop.set()
        await task
        await sender.close()
        import aiohttp
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/stats") as r:
            seen = await r.json()
        rows = await owner.fetch("SELECT delivery_key, extract(epoch FROM created_at) AS t FROM parley.outbox"
                                 " WHERE id > $1", start_id)
        lat = [(seen[f"msg_{r['delivery_key'].hex}"] - float(r["t"])) * 1000 for r in rows
               if f"msg_{r['delivery_key'].hex}" in seen]
        live = len(rows)
        print(f"paced: {live:,} deliveries at {live / args.seconds:,.0f}/s offered; enqueue→send "
              f"p50 {pct(lat, 50):.1f} ms, p99 {pct(lat, 99):.1f} ms, max {max(lat):.1f} ms", flush=True)

        stats = await owner.fetchrow(
            "SELECT sum(n_live_tup) AS live, sum(n_dead_tup) AS dead, sum(n_tup_upd) AS upd,"
            "       sum(n_tup_hot_upd) AS hot, sum(autovacuum_count) AS av"
            "  FROM pg_stat_user_tables WHERE relname LIKE 'outbox\\_2%' OR relname = 'outbox_default'")
        size = await owner.fetchval("SELECT pg_size_pretty(sum(pg_total_relation_size(c.oid))) FROM pg_class c"
                                    " JOIN pg_inherits i ON i.inhrelid = c.oid WHERE i.inhparent = 'parley.outbox'::regclass")
        attempts = await owner.fetchval("SELECT count(*) FROM parley.outbox_attempts")
        # One record_outbox_results call is one transaction: its attempts share `at` (now()).
        calls = await owner.fetchval("SELECT count(DISTINCT (destination_id, at)) FROM parley.outbox_attempts")
        print(f"outbox after: {stats['live']} live / {stats['dead']} dead tuples, {size} with indexes, "
              f"{stats['upd']} updates ({stats['hot']} HOT), autovacuum runs {stats['av']}; {attempts} attempts rows"
              f" recorded in {calls} calls ({attempts / max(calls, 1):.0f} a call)",
              flush=True)
        print(f"enqueue cost per event: {cost_none:.0f} µs with no destination, {cost_some:.0f} µs with "
              f"{args.destinations} (50 events per transaction)", flush=True)
        print(f"outbox_per_s={per_s:.0f} p99_enqueue_to_send_ms={pct(lat, 99):.1f}", flush=True)
    finally:
        await app_pool.close()
        await jobs_pool.close()
        await owner.close()
        sink.kill()
        await drop_database(maint, dbname)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short run (< 2 min)")
    parser.add_argument("--events", type=int)
    parser.add_argument("--destinations", type=int, default=4)
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--drainers", type=int, default=1,
                        help="drain processes for the backlog (as several `parley jobs`), each leasing its share"
                             " of the destinations")
    parser.add_argument("--rate", type=float, default=1000.0, help="deliveries/s offered in the paced run")
    parser.add_argument("--seconds", type=float)
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="profile the backlog drain (cProfile) and print its N costliest functions")
    args = parser.parse_args()
    args.events = args.events or (5_000 if args.quick else 25_000)
    args.seconds = args.seconds or (10 if args.quick else 30)
    os.environ.setdefault("PARLEY_FETCH_ALLOW_HOSTS", "127.0.0.1")
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
