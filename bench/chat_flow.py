"""Chat benchmark: visitors and agents through the real server, against a bare baseline.

    python bench/chat_flow.py [--quick] [--visitors N] [--agents M] [--seconds S] [--idle K]

Uses DATABASE_URL when set, else the embedded PostgreSQL (./.parley); creates its own
database with `migrate` and drops it afterwards. Everything runs in this process on one
event loop (server, relay and clients alike), and so does the baseline, so the ratio compares
like with like:

* Parley, flat out: N visitors (widget session + /ws/visitor, conversations claimed by an
  agent so no bot runs) each send a message, wait for it to come back over their socket, and
  send the next; M agent sockets (/ws/agent) receive every event of the tenant. This gives the
  sustained msgs/s, counted as messages that reached every agent (latency here is mostly
  queueing: N in flight). Visitors stay under the per-socket frame limit (10/s) only when N is
  large enough; rate_limited errors in the output mean it was not. With --bot the conversations
  stay with the bot and the placeholder answers each visitor message (stored and relayed like
  any reply); the counts are still visitor messages. The server stores visitor
  messages of a tenant that arrive together with one statement and one commit
  (pyapp/widget/batch.py); each run reports how many shared a statement on average.
* Parley, paced: the same clients at a fixed offered load (open loop), for latency that is not
  queueing: 500 msgs/s, the rate of the latency target (--paced-rate), or half the flat-out rate
  when that is below 1,000. Latency is from the visitor's send to each agent's receipt of
  the `message_added` event.
* Baseline: the same clients against a bare aiohttp app: one asyncpg transaction per message,
  `INSERT` + `pg_notify(payload)`, one LISTEN connection, the payload relayed to the visitor's
  and the agents' WebSockets. No auth, RLS, limits, usage, events table or state machine.
* Idle memory: K visitor sockets (after hello) held open by a child process; the server
  process's RSS growth divided by K, measured first (memory the runs leave free would hide it).
* --server-process: Parley runs as its own `parley serve` process, so the clients (this process)
  no longer share its event loop, as with real users; CPU per message and idle memory are then
  the server process's. The baseline stays in this process.

Both runs are repeated against the baseline (paced at the same rate). The last line is
`msgs_per_s=N p99_ms=N baseline_ratio=R kb_per_idle_ws=N`: Parley's flat-out msgs/s, its
visitor→agent p99 in the paced run, flat-out Parley msgs/s ÷ baseline msgs/s, and the idle
socket memory.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import math
import os
import random
import resource
import secrets
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
import asyncpg  # noqa: E402
from aiohttp import web  # noqa: E402
from pyapp.client import ParleyClient  # noqa: E402  (the API's own client: HTTP arranging goes through it)

ORIGIN = "https://bench.example"
DELIVERY_GRACE = 0.5  # a delivery counts only if it lands by the end of the run + this (no backlog credit)
PACED_RATE = 500.0  # msgs/s the paced run offers to both servers (the latency target's rate) ...
PACED_FRACTION = 0.5  # ... or at most this share of Parley's flat-out rate, so it measures latency, not overload


def raise_fd_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 65536
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target


def rss_kb(pid: int | str = "self") -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int | str = "self") -> float:
    """User + system CPU time of one process (0 when it is gone or not visible)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except (OSError, IndexError, ValueError):
        return 0.0


class CpuMeter:
    """CPU seconds spent by this process and by the PostgreSQL server's processes (when local).

    Throughput on a shared 2-core VM swings with its neighbours; CPU time per message does
    much less, so the bench reports both.
    """

    def __init__(self, admin_url: str, server_pid: int | str = "self") -> None:
        self.admin_url = admin_url
        self.server_pid = server_pid  # the Parley server's process (this one unless --server-process)
        self.pg_pids: list[int] = []

    async def refresh(self) -> None:
        conn = await asyncpg.connect(self.admin_url)
        try:
            self.pg_pids = [r["pid"] for r in await conn.fetch("SELECT pid FROM pg_stat_activity")]
            self.pg_pids.append(await conn.fetchval("SELECT pg_backend_pid()"))
        finally:
            await conn.close()

    def sample(self) -> tuple[float, float]:
        return cpu_seconds(self.server_pid), sum(cpu_seconds(p) for p in self.pg_pids)


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


# --------------------------------------------------------------------------- database


def prepare_database() -> tuple[object, str, str]:
    """(settings for a fresh migrated database, admin url of the maintenance db, db name)."""
    from pyapp.config import Settings, _read_or_create_secret, data_dir, with_database
    from pyapp.migrate import migrate

    url = os.environ.get("DATABASE_URL")
    if url:
        secret = os.environ.get("PARLEY_SECRET_KEY") or _read_or_create_secret(data_dir() / "secret_key")
        maint = with_database(url, "postgres")
    else:
        from pyapp.embedded import EmbeddedCluster

        cluster = EmbeddedCluster(data_dir())
        cluster.start()
        secret = os.environ.get("PARLEY_SECRET_KEY") or _read_or_create_secret(data_dir() / "secret_key")
        maint = cluster.admin_url("postgres")
    name = f"parley_chatbench_{secrets.token_hex(4)}"
    settings = Settings(admin_url=with_database(maint, name), secret_key=secret, host="127.0.0.1", port=0,
                        embedded=not url, extra={"argon2_fast": True})
    migrate(settings)
    return settings, maint, name


async def drop_database(maint: str, name: str) -> None:
    conn = await asyncpg.connect(maint)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


# --------------------------------------------------------------------------- servers


async def serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=4096)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}"


def baseline_app(pool: asyncpg.Pool, listen_dsn: str) -> web.Application:
    """The bare minimum: INSERT + NOTIFY in one transaction, one LISTEN connection, WS fan-out."""
    app = web.Application()
    visitors: dict[str, set] = {}
    agents: set = set()
    state: dict = {}

    inbox: asyncio.Queue = asyncio.Queue()

    def on_notify(_conn, _pid, _channel, payload: str) -> None:
        inbox.put_nowait(payload)

    async def relay() -> None:
        """One consumer, in order: each payload to the visitor's and every agent's socket."""
        while True:
            msg = json.loads(await inbox.get())
            to_visitor = json.dumps({"type": "message", "message": msg})
            to_agent = json.dumps({"type": "event", "event": {"kind": "message_added",
                                                              "conversation_id": msg["conversation_id"],
                                                              "message": msg}})
            for ws in list(visitors.get(msg["conversation_id"], ())):
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await ws.send_str(to_visitor)
            for ws in list(agents):
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await ws.send_str(to_agent)

    async def startup(app):
        state["listen"] = await asyncpg.connect(listen_dsn)
        await state["listen"].add_listener("bench_baseline", on_notify)
        state["relay"] = asyncio.ensure_future(relay())

    async def cleanup(app):
        state["relay"].cancel()
        await state["listen"].close()

    async def visitor_ws(request):
        ws = web.WebSocketResponse(heartbeat=30, max_msg_size=65536)
        await ws.prepare(request)
        conv = None
        try:
            async for msg in ws:
                frame = json.loads(msg.data)
                if frame["type"] == "hello":
                    conv = frame["token"]
                    visitors.setdefault(conv, set()).add(ws)
                    await ws.send_str(json.dumps({"type": "ready", "conversation_id": conv, "status": "human"}))
                elif frame["type"] == "message":
                    async with pool.acquire() as conn, conn.transaction():
                        row = await conn.fetchrow(
                            "INSERT INTO bench_baseline (conversation_id, body, client_id) VALUES ($1, $2, $3)"
                            " RETURNING id, created_at", conv, frame["body"], frame["client_id"])
                        payload = json.dumps({"id": row["id"], "conversation_id": conv, "author": "visitor",
                                              "body": frame["body"], "client_id": frame["client_id"],
                                              "created_at": row["created_at"].isoformat()})
                        await conn.execute("SELECT pg_notify('bench_baseline', $1)", payload)
        finally:
            if conv:
                visitors.get(conv, set()).discard(ws)
        return ws

    async def agent_ws(request):
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        agents.add(ws)
        try:
            async for msg in ws:
                frame = json.loads(msg.data)
                if frame["type"] == "hello":
                    await ws.send_str(json.dumps({"type": "ready"}))
        finally:
            agents.discard(ws)
        return ws

    app.router.add_get("/ws/visitor", visitor_ws)
    app.router.add_get("/ws/agent", agent_ws)
    app.on_startup.append(startup)
    app.on_cleanup.append(cleanup)
    return app


# --------------------------------------------------------------------------- clients


class Run:
    """Counters of one measured run."""

    def __init__(self, warmup: float, seconds: float) -> None:
        self.warmup = warmup
        self.seconds = seconds
        self.warmup_until = self.end_at = float("inf")
        self.go = asyncio.Event()  # set once every visitor socket is open and said hello
        self.connected = 0
        self.sent = 0
        self.acked = 0
        self.latencies: list[float] = []
        self.errors: dict[str, int] = {}
        self.tag = secrets.token_hex(3)  # client ids are unique per run (a reused one is an idempotent resend)

    def in_window(self, t: float) -> bool:
        return self.warmup_until <= t < self.end_at

    def start(self) -> None:
        now = time.perf_counter()
        self.warmup_until = now + self.warmup
        self.end_at = self.warmup_until + self.seconds
        self.go.set()


async def run_visitor(session: aiohttp.ClientSession, base: str, token: str, run: Run, vid: int,
                      interval: float | None = None) -> None:
    """Closed loop (send, wait for the echo, send again) or, with `interval`, a fixed pace."""
    async with session.ws_connect(base.replace("http", "ws", 1) + "/ws/visitor", heartbeat=None) as ws:
        await ws.send_str(json.dumps({"type": "hello", "token": token, "last_seen_id": 0}))
        while True:
            frame = json.loads((await ws.receive()).data)
            if frame["type"] == "ready":
                break
        # Drain the replay of earlier runs, then wait for everyone before the clock starts.
        while True:
            try:
                await ws.receive(timeout=0.2)
            except TimeoutError:
                break
        run.connected += 1
        await run.go.wait()
        if interval is not None:
            await _paced(ws, run, vid, interval)
            return
        seq = 0
        while time.perf_counter() < run.end_at:
            seq += 1
            cid = f"{run.tag}-{vid}-{seq}"
            t0 = time.perf_counter()
            await ws.send_str(json.dumps({"type": "message", "client_id": cid, "body": f"{t0!r}|hello from {vid}"}))
            if run.in_window(t0):
                run.sent += 1
            while True:
                msg = await ws.receive(timeout=30)
                if msg.type != aiohttp.WSMsgType.TEXT:
                    return
                frame = json.loads(msg.data)
                if frame["type"] == "message" and frame["message"].get("client_id") == cid:
                    if run.in_window(t0):
                        run.acked += 1
                    break
                if frame["type"] == "error":
                    run.errors[frame.get("code", "?")] = run.errors.get(frame.get("code", "?"), 0) + 1
                    await asyncio.sleep(0.05)
                    break


async def _paced(ws, run: Run, vid: int, interval: float) -> None:
    pending: dict[str, float] = {}

    async def reader() -> None:
        async for msg in ws:
            frame = json.loads(msg.data)
            if frame["type"] == "message":
                t0 = pending.pop(frame["message"].get("client_id"), None)
                if t0 is not None and run.in_window(t0):
                    run.acked += 1
            elif frame["type"] == "error":
                run.errors[frame.get("code", "?")] = run.errors.get(frame.get("code", "?"), 0) + 1

    reading = asyncio.ensure_future(reader())
    next_at = time.perf_counter() + random.uniform(0, interval)
    seq = 0
    while next_at < run.end_at:
        await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
        seq += 1
        cid = f"{run.tag}-{vid}-{seq}"
        t0 = time.perf_counter()
        pending[cid] = t0
        await ws.send_str(json.dumps({"type": "message", "client_id": cid, "body": f"{t0!r}|hello from {vid}"}))
        if run.in_window(t0):
            run.sent += 1
        next_at += interval
    deadline = time.perf_counter() + 5
    while pending and time.perf_counter() < deadline:
        await asyncio.sleep(0.05)
    reading.cancel()


async def run_agent(session: aiohttp.ClientSession, base: str, token: str, run: Run, ready: asyncio.Event) -> None:
    """Receive every event until cancelled; record visitor→agent latency of visitor messages."""
    async with session.ws_connect(base.replace("http", "ws", 1) + "/ws/agent", heartbeat=None) as ws:
        await ws.send_str(json.dumps({"type": "hello", "token": token}))
        async for msg in ws:
            now = time.perf_counter()
            frame = json.loads(msg.data)
            if frame["type"] == "ready":
                ready.set()
            elif frame["type"] == "event" and frame["event"].get("kind") == "message_added":
                message = frame["event"].get("message") or {}
                if message.get("author") == "visitor":
                    t0 = float(message["body"].split("|", 1)[0])
                    if run.in_window(t0) and now <= run.end_at + DELIVERY_GRACE:
                        run.latencies.append(now - t0)


async def drive(base: str, visitor_tokens: list[str], agent_tokens: list[str], seconds: float,
                warmup: float, rate: float | None = None, meter: CpuMeter | None = None) -> dict:
    """Run the flow against one server; returns msgs/s and latency percentiles (ms)."""
    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn) as session:
        run = Run(warmup, seconds)
        readies = [asyncio.Event() for _ in agent_tokens]
        agents = [asyncio.ensure_future(run_agent(session, base, t, run, r))
                  for t, r in zip(agent_tokens, readies, strict=True)]
        await asyncio.wait_for(asyncio.gather(*(r.wait() for r in readies)), 30)
        interval = len(visitor_tokens) / rate if rate else None
        visitors = [asyncio.ensure_future(run_visitor(session, base, t, run, i, interval))
                    for i, t in enumerate(visitor_tokens)]
        while run.connected < len(visitor_tokens):
            done = [v for v in visitors if v.done()]
            if done and any(v.exception() for v in done):
                raise next(v.exception() for v in done if v.exception())
            await asyncio.sleep(0.05)
        run.start()
        cpu = {}

        async def measure_cpu() -> None:
            await asyncio.sleep(max(0.0, run.warmup_until - time.perf_counter()))
            if meter is not None:
                await meter.refresh()  # the pool has grown during the warm-up
                cpu["start"] = meter.sample()
                await asyncio.sleep(max(0.0, run.end_at - time.perf_counter()))
                cpu["end"] = meter.sample()

        measuring = asyncio.ensure_future(measure_cpu())
        await asyncio.gather(*visitors)
        await measuring
        # Let the last events reach the agents (later ones do not count anyway), then stop them.
        await asyncio.sleep(max(0.0, run.end_at + DELIVERY_GRACE - time.perf_counter()))
        for task in agents:
            task.cancel()
        await asyncio.gather(*agents, return_exceptions=True)
    lat = [x * 1000 for x in run.latencies]
    # Sustained = reached every agent by the end of the run (+ DELIVERY_GRACE): a relay that
    # acknowledges senders but builds a backlog towards the agents gets no credit for the backlog.
    delivered = len(lat) / max(1, len(agent_tokens))
    if "end" in cpu and delivered:
        py_ms, pg_ms = ((b - a) * 1000 / delivered for a, b in zip(cpu["start"], cpu["end"], strict=True))
    else:
        py_ms = pg_ms = float("nan")
    return {"msgs_per_s": delivered / seconds, "acked_per_s": run.acked / seconds,
            "py_cpu_ms": py_ms, "pg_cpu_ms": pg_ms,
            "sent": run.sent, "acked": run.acked,
            "p50_ms": pct(lat, 50), "p95_ms": pct(lat, 95), "p99_ms": pct(lat, 99),
            "deliveries": len(lat), "errors": run.errors}


# --------------------------------------------------------------------------- arranging


async def arrange_parley(base: str, settings, n_visitors: int, n_conversations: int, claim: bool = True,
                         webhooks: int = 0, telegram: bool = False) -> dict:
    """A tenant with unlimited limits, a chatbot, and visitor sessions (conversations claimed unless `claim` is off)."""
    async with ParleyClient(base) as api:
        slug = f"bench-{secrets.token_hex(4)}"
        body = await api.sign_up(body={
            "email": f"{slug}@bench.example", "password": "bench-password-123", "name": "Bench Agent",
            "tenant_name": "Bench Co", "slug": slug})
        token, tenant_id = body["access_token"], uuid.UUID(body["tenant"]["id"])
        agent = api.with_token(token)
        owner = await asyncpg.connect(settings.admin_url)
        try:
            await owner.execute(
                "INSERT INTO parley.tenant_limits (tenant_id, max_open_conversations, msgs_per_min_chatbot,"
                " msgs_per_min_ip, ai_msgs_per_day, msgs_per_min_tenant, msgs_per_min_conversation,"
                " included_conversations, included_ai_messages, max_open_conversations_per_ip,"
                " conversations_per_min_chatbot) VALUES ($1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)", tenant_id)
            key = await owner.fetchval(
                "INSERT INTO parley.chatbots (tenant_id, name, allowed_origins) VALUES ($1, 'Bench', $2)"
                " RETURNING public_key", tenant_id, [ORIGIN])
            for i in range(webhooks):  # subscribed endpoints: every message also writes a delivery each
                await owner.execute(
                    "INSERT INTO parley.outbox_destinations (tenant_id, kind, name, target, event_kinds)"
                    " VALUES ($1, 'webhook', $2, 'http://127.0.0.1:9/bench', '{message_added}')", tenant_id, f"w{i}")
            if telegram:  # a connected Telegram group: an ordered destination subscribed to the conversation events
                await owner.execute(
                    "INSERT INTO parley.outbox_destinations (tenant_id, kind, name, target, config, event_kinds, ordered)"
                    " VALUES ($1, 'telegram', 'Telegram', '-1001234567890', $2::jsonb, parley.telegram_event_kinds(), true)",
                    tenant_id, '{"chat_id": -1001234567890, "bot_id": 1, "bot_username": "bench_bot"}')
        finally:
            await owner.close()

        sem = asyncio.Semaphore(32)

        async def session(claim: bool) -> str:
            async with sem:
                out = await api.create_session(body={"chatbot_key": key, "start": True}, headers={"Origin": ORIGIN})
                if claim:  # a human has it: no bot turn, visitor → agent only
                    await agent.claim(out["conversation_id"])
                return out["token"]

        tokens = await asyncio.gather(*(session(claim) for _ in range(n_visitors)))
        idle = await asyncio.gather(*(session(False) for _ in range(n_conversations)))
    # A live database has statistics (autovacuum analyzes within a minute of this much change);
    # a freshly arranged one has none, and plans made on a guess stay cached in the pool's
    # sessions (foreign-key checks too) until an ANALYZE invalidates them.
    owner = await asyncpg.connect(settings.admin_url)
    try:
        await owner.execute("ANALYZE")
    finally:
        await owner.close()
    return {"agent_token": token, "visitor_tokens": list(tokens), "idle_tokens": list(idle), "key": key}


# --------------------------------------------------------------------------- idle sockets


async def idle_client_main(url: str, token_file: str) -> None:
    """Child process: open one visitor socket per token, hello, report, then hold them."""
    raise_fd_limit()
    tokens = json.loads(Path(token_file).read_text())
    sem = asyncio.Semaphore(100)
    conn = aiohttp.TCPConnector(limit=0)
    session = aiohttp.ClientSession(connector=conn)
    sockets = []

    async def one(token: str) -> None:
        async with sem:
            ws = await session.ws_connect(url, heartbeat=None, autoping=True)
            await ws.send_str(json.dumps({"type": "hello", "token": token, "last_seen_id": 0}))
            while True:
                frame = json.loads((await ws.receive(timeout=60)).data)
                if frame["type"] == "ready":
                    break
            sockets.append(ws)

    results = await asyncio.gather(*(one(t) for t in tokens), return_exceptions=True)
    failed = sum(1 for r in results if isinstance(r, BaseException))
    print(f"READY {len(sockets)} {failed}", flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)  # until the parent closes our stdin
    for ws in sockets:
        await ws.close()
    await session.close()


async def idle_memory(base: str, tokens: list[str], server_pid: int | str = "self") -> tuple[float, int]:
    """Server-side RSS growth per idle visitor socket (KB), and how many were open."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
        json.dump(tokens, fh)
        path = fh.name
    try:
        gc.collect()
        before = rss_kb(server_pid)
        child = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--idle-client", base.replace("http", "ws", 1) + "/ws/visitor", path,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        line = (await asyncio.wait_for(child.stdout.readline(), 300)).decode().split()
        opened = int(line[1])
        await asyncio.sleep(1.0)  # let the last hellos' replies and buffers settle
        gc.collect()
        after = rss_kb(server_pid)
        child.stdin.close()
        await asyncio.wait_for(child.wait(), 60)
    finally:
        os.unlink(path)
    return (after - before) / max(opened, 1), opened


# --------------------------------------------------------------------------- main


async def bench(args) -> None:
    from pyapp.app import load_surfaces
    from pyapp.db import create_pool

    raise_fd_limit()
    t_start = time.perf_counter()
    settings, maint, dbname = await asyncio.to_thread(prepare_database)
    print(f"database {dbname} migrated in {time.perf_counter() - t_start:.1f}s", flush=True)
    load_surfaces()
    try:
        if args.server_process:
            parley, parley_paced, kb, rate = await _run_server_process(settings, args)
        else:
            parley, parley_paced, kb, rate = await _run_in_process(settings, args)
        meter = CpuMeter(settings.admin_url)

        owner = await asyncpg.connect(settings.admin_url)
        try:
            await owner.execute("CREATE TABLE bench_baseline (id bigserial PRIMARY KEY, conversation_id text NOT NULL,"
                                " body text NOT NULL, client_id text, created_at timestamptz NOT NULL DEFAULT now())")
            await owner.execute("GRANT SELECT, INSERT ON bench_baseline TO parley_app;"
                                " GRANT USAGE ON SEQUENCE bench_baseline_id_seq TO parley_app")
        finally:
            await owner.close()
        pool = await create_pool(settings.app_url)
        try:
            runner, base = await serve(baseline_app(pool, settings.app_url))
            try:
                tokens = [f"conv-{i}" for i in range(args.visitors)]
                baseline = await drive(base, tokens, ["agent"] * args.agents, args.seconds, args.warmup, meter=meter)
                _report("baseline", baseline, args)
                baseline_paced = await drive(base, tokens, ["agent"] * args.agents, args.paced_seconds, 1.0, rate,
                                             meter=meter)
                _report("baseline", baseline_paced, args, rate)
            finally:
                await runner.cleanup()
        finally:
            await pool.close()
    finally:
        await drop_database(maint, dbname)

    ratio = parley["msgs_per_s"] / baseline["msgs_per_s"] if baseline["msgs_per_s"] else float("nan")
    cpu_ratio = ((baseline["py_cpu_ms"] + baseline["pg_cpu_ms"]) / (parley["py_cpu_ms"] + parley["pg_cpu_ms"])
                 if not math.isnan(parley["py_cpu_ms"]) else float("nan"))
    print(f"parley/baseline: throughput ratio {ratio:.2f}, CPU-time ratio {cpu_ratio:.2f} (baseline CPU per message"
          f" / Parley's: the share of the baseline's rate Parley would reach with the same CPU); p99 at {rate:.0f} msgs/s"
          f" {parley_paced['p99_ms']:.1f} ms vs {baseline_paced['p99_ms']:.1f} ms; total {time.perf_counter() - t_start:.1f}s",
          flush=True)
    print(f"msgs_per_s={parley['msgs_per_s']:.0f} p99_ms={parley_paced['p99_ms']:.0f} baseline_ratio={ratio:.2f} "
          f"kb_per_idle_ws={kb:.0f}")


async def _run_in_process(settings, args) -> tuple[dict, dict, float, float]:
    """Parley's runs with the server in this process (the clients share its event loop)."""
    from pyapp.app import create_app
    from pyapp.widget.hooks import visitor_hooks
    from pyapp.widget.socket import message_batcher

    app = create_app(settings)
    # Conversations are claimed, so no bot runs (and no model loads); with --bot they stay with
    # the bot and the placeholder answers every visitor message (one more post_message each).
    visitor_hooks(app).set_bot_responder(None if args.bot else _no_bot)
    runner, base = await serve(app)
    try:
        arranged = await arrange_parley(base, settings, args.visitors, args.idle, claim=not args.bot,
                                        webhooks=args.webhooks, telegram=args.telegram)
        print(f"arranged {args.visitors} {'bot' if args.bot else 'claimed'} + {args.idle} idle conversations",
              flush=True)
        # Measured before the flat-out runs: memory they leave free would hide the sockets' own.
        kb, opened = await idle_memory(base, arranged["idle_tokens"])
        print(f"idle visitor sockets: {opened} open, {kb:.1f} KB each (server RSS growth)", flush=True)
        agents = [arranged["agent_token"]] * args.agents
        meter = CpuMeter(settings.admin_url)
        batcher = message_batcher(app)
        counted = (batcher.messages, batcher.statements)
        parley = await drive(base, arranged["visitor_tokens"], agents, args.seconds, args.warmup, meter=meter)
        _report("parley", parley, args, batches=_per_statement(batcher, counted))
        rate = max(1.0, round(min(args.paced_rate, parley["msgs_per_s"] * PACED_FRACTION)))
        counted = (batcher.messages, batcher.statements)
        parley_paced = await drive(base, arranged["visitor_tokens"], agents, args.paced_seconds, 1.0, rate,
                                   meter=meter)
        _report("parley", parley_paced, args, rate, batches=_per_statement(batcher, counted))
    finally:
        await runner.cleanup()
    return parley, parley_paced, kb, rate


async def _run_server_process(settings, args) -> tuple[dict, dict, float, float]:
    """Parley's runs with the server as its own `parley serve` process: the clients (this process)
    no longer share its event loop, as with real users. CPU and memory are the server process's."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "DATABASE_URL": settings.admin_url, "PARLEY_SECRET_KEY": settings.secret_key,
           "PARLEY_EMBED_WARM": "0", "PYTHONPATH": str(ROOT),
           # Every client comes from 127.0.0.1, as from a load balancer: no per-address connection cap.
           "PARLEY_TRUST_PROXY": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "pyapp.cli", "serve", "--port", str(port)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            deadline = time.monotonic() + 60
            while True:
                if proc.poll() is not None:
                    raise RuntimeError("parley serve exited")
                try:
                    async with http.get(base + "/healthz") as resp:
                        if resp.status == 200:
                            break
                except aiohttp.ClientError:
                    if time.monotonic() > deadline:
                        raise
                await asyncio.sleep(0.1)
        arranged = await arrange_parley(base, settings, args.visitors, args.idle, claim=True, webhooks=args.webhooks,
                                        telegram=args.telegram)
        print(f"server process {proc.pid}; arranged {args.visitors} claimed + {args.idle} idle conversations",
              flush=True)
        kb, opened = await idle_memory(base, arranged["idle_tokens"], proc.pid)
        print(f"idle visitor sockets: {opened} open, {kb:.1f} KB each (server process RSS growth)", flush=True)
        agents = [arranged["agent_token"]] * args.agents
        meter = CpuMeter(settings.admin_url, proc.pid)
        parley = await drive(base, arranged["visitor_tokens"], agents, args.seconds, args.warmup, meter=meter)
        _report("parley (server process)", parley, args)
        rate = max(1.0, round(min(args.paced_rate, parley["msgs_per_s"] * PACED_FRACTION)))
        parley_paced = await drive(base, arranged["visitor_tokens"], agents, args.paced_seconds, 1.0, rate,
                                   meter=meter)
        _report("parley (server process)", parley_paced, args, rate)
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
    return parley, parley_paced, kb, rate


async def _no_bot(turn) -> None:
    return None


def _per_statement(batcher, before: tuple[int, int]) -> float:
    """Visitor messages per statement since `before` (the batcher's counters then)."""
    messages, statements = batcher.messages - before[0], batcher.statements - before[1]
    return messages / statements if statements else float("nan")


def _report(name: str, r: dict, args, rate: float | None = None, batches: float | None = None) -> None:
    how = (f"paced at {rate:.0f} msgs/s, {args.paced_seconds:.0f}s" if rate else
           f"flat out, {args.seconds:.0f}s")
    print(f"{name}: {args.visitors} visitors, {args.agents} agents, {how}: "
          f"{r['msgs_per_s']:.0f} visitor msgs/s delivered to every agent ({r['acked_per_s']:.0f}/s echoed back), "
          f"visitor→agent p50 {r['p50_ms']:.1f} ms, p95 {r['p95_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms "
          f"over {r['deliveries']} deliveries; CPU per message {r['py_cpu_ms']:.2f} ms in this process "
          f"+ {r['pg_cpu_ms']:.2f} ms in PostgreSQL"
          + (f"; {batches:.1f} visitor messages per statement" if batches is not None else "")
          + (f", errors {r['errors']}" if r["errors"] else ""), flush=True)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--idle-client":
        asyncio.run(idle_client_main(sys.argv[2], sys.argv[3]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short run (< 60 s)")
    parser.add_argument("--visitors", type=int)
    parser.add_argument("--agents", type=int)
    parser.add_argument("--seconds", type=float)
    parser.add_argument("--warmup", type=float)
    parser.add_argument("--paced-seconds", type=float)
    parser.add_argument("--paced-rate", type=float, default=PACED_RATE,
                        help="offered msgs/s of the paced runs (at most half the flat-out rate)")
    parser.add_argument("--idle", type=int, help="idle visitor sockets for the memory figure")
    parser.add_argument("--bot", action="store_true",
                        help="leave the conversations with the bot: the placeholder answers every visitor message")
    parser.add_argument("--server-process", action="store_true",
                        help="run Parley as its own `parley serve` process (clients outside its event loop)")
    parser.add_argument("--webhooks", type=int, default=0,
                        help="webhook endpoints subscribed to message_added (deliveries written, not drained)")
    parser.add_argument("--telegram", action="store_true",
                        help="a Telegram group connected (its deliveries written, not drained)")
    args = parser.parse_args()
    defaults = dict(visitors=200, agents=2, seconds=5.0, warmup=1.0, paced_seconds=3.0, idle=600) if args.quick else \
        dict(visitors=200, agents=5, seconds=30.0, warmup=5.0, paced_seconds=20.0, idle=5000)
    for k, v in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    import logging
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    asyncio.run(bench(args))


if __name__ == "__main__":
    main()
