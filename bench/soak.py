"""Soak: two `parley serve` processes, clients in processes of their own, for minutes.

    python bench/soak.py [--visitors 5000] [--agents 50] [--minutes 10] [--rate 500]
                         [--clients N] [--ramp 250] [--sample 30] [--quick]

Creates its own database (embedded PostgreSQL, or DATABASE_URL) and drops it afterwards. Two
`parley serve` processes share it; client processes (this file with --client, so no client work
runs in a server's event loop) open N visitor sockets (conversations claimed by an agent, so no
bot runs) and M agent sockets of the same tenant, half on each server, and send visitor messages
at --rate msgs/s in all (each visitor every N/rate seconds, under the per-socket frame limit).
Every message must reach every agent, whichever server it was sent to.

Sized for the full soak: the file-descriptor limit is raised to the hard limit (the servers and
clients inherit it; a warning says when it is below the sockets needed); sockets open at --ramp
a second; the clients are sharded over --clients processes (default: one per 4,000 agent
deliveries a second or 2,500 visitors, whichever needs more, at most 8: 50 agents at 500 msgs/s
is 25,000 frames a second to parse, 7 processes; one process fell behind at 10,000/s), each with
its share of visitors and agents, all starting to send at one moment.
The send time rides in the message body (one monotonic clock for the machine); latencies go to
a 0.1 ms histogram and deliveries to one byte per (agent, message), so client memory is flat.

Printed: the ramp, each server's RSS every --sample seconds (flat, or growing?), then visitor→
agent latency (p50/p95/p99, from the visitor's send to each agent's receipt), and the check:
sent, echoed, stored (distinct client ids in parley.messages), delivered to every agent;
lost = sent − stored, duplicated = stored rows beyond one per client id. Last line:
`visitors=N agents=M rate=R minutes=T clients=K p50_ms=X p99_ms=Y lost=L duplicated=D
undelivered=U rss_growth_mb=A,B`.
--quick: 300 visitors, 10 agents, 100 msgs/s, 1 minute.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from array import array
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
import asyncpg  # noqa: E402
from bench.chat_flow import arrange_parley, drop_database, prepare_database, raise_fd_limit  # noqa: E402


def rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


async def start_server(settings, port: int, log=subprocess.DEVNULL, env: dict | None = None,
                       preexec_fn=None) -> subprocess.Popen:
    """`parley serve` on `port` in a process of its own (its output to `log`, its environment `env` or
    the settings', `preexec_fn` run in the child before it starts), once /healthz answers."""
    env = env or {**os.environ, "DATABASE_URL": settings.admin_url, "PARLEY_SECRET_KEY": settings.secret_key,
                  "PARLEY_EMBED_WARM": "0", "PYTHONPATH": str(ROOT),
                  # Every client comes from 127.0.0.1, as from a load balancer: no per-address connection cap.
                  "PARLEY_TRUST_PROXY": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "pyapp.cli", "serve", "--port", str(port)], cwd=ROOT, env=env,
                            stdout=log, stderr=subprocess.STDOUT if log is not subprocess.DEVNULL else log,
                            preexec_fn=preexec_fn)
    async with aiohttp.ClientSession() as http:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError("parley serve exited")
            try:
                async with http.get(f"http://127.0.0.1:{port}/healthz") as resp:
                    if resp.status == 200:
                        return proc
            except aiohttp.ClientError:
                if time.monotonic() > deadline:
                    raise
            await asyncio.sleep(0.1)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --------------------------------------------------------------------------- client process

HIST_MS = 0.1  # latency histogram bucket
HIST_BUCKETS = 600_000  # up to 60 s; later deliveries count in the last bucket


async def client_main(config_path: str) -> None:
    """One client shard: its visitors (i % shards == shard) paced, its agents counting every
    visitor message of the run. The send time travels in the message body (CLOCK_MONOTONIC is
    one clock for every process of the machine), so an agent in any shard measures its latency.
    Memory stays flat at any size: latencies go to a histogram, deliveries to one byte per
    (agent, visitor, message number). Writes its results as JSON to cfg["result"]."""
    raise_fd_limit()
    cfg = json.loads(Path(config_path).read_text())
    bases, tokens, agent_tokens = cfg["bases"], cfg["visitor_tokens"], cfg["agent_tokens"]
    shard, shards = cfg["shard"], cfg["shards"]
    seconds, rate, ramp = cfg["seconds"], cfg["rate"], cfg["ramp"]
    n_visitors = len(tokens)
    interval = n_visitors / rate  # each visitor sends every `interval` seconds
    per_visitor = int(seconds / interval) + 2  # message numbers a visitor can reach
    mine = [i for i in range(n_visitors) if i % shards == shard]
    my_agents = [j for j in range(len(agent_tokens)) if j % shards == shard]
    sent_count = {i: 0 for i in mine}
    echoed = 0
    seen = {j: bytearray(n_visitors * per_visitor) for j in my_agents}
    delivered = {j: 0 for j in my_agents}
    duplicates = 0
    hist = array("l", bytes(8 * HIST_BUCKETS))
    errors: dict[str, int] = {}
    closed_early = 0
    opened = {"visitors": 0, "agents": 0}
    go = asyncio.Event()
    start = {"t": 0.0}
    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn) as http:

        async def agent(j: int) -> None:
            nonlocal duplicates
            url = bases[j % len(bases)].replace("http", "ws", 1) + "/ws/agent"
            async with http.ws_connect(url, heartbeat=None, max_msg_size=0) as ws:
                await ws.send_str(json.dumps({"type": "hello", "token": agent_tokens[j]}))
                async for msg in ws:
                    now = time.monotonic()
                    if msg.type != aiohttp.WSMsgType.TEXT:
                        break
                    frame = json.loads(msg.data)
                    if frame["type"] == "ready":
                        opened["agents"] += 1
                        continue
                    ev = frame.get("event") or {}
                    m = ev.get("message") or {}
                    if frame["type"] != "event" or ev.get("kind") != "message_added" or m.get("author") != "visitor":
                        continue
                    parts = (m.get("body") or "").split()
                    if len(parts) != 4 or parts[0] != "soak":
                        continue
                    slot = int(parts[1]) * per_visitor + int(parts[2])
                    if seen[j][slot]:
                        duplicates += 1
                        continue
                    seen[j][slot] = 1
                    delivered[j] += 1
                    hist[min(HIST_BUCKETS - 1, int((now - float(parts[3])) * 1000 / HIST_MS))] += 1

        async def visitor(i: int, opened_at: float) -> None:
            nonlocal echoed, closed_early
            await asyncio.sleep(max(0.0, opened_at - time.monotonic()))  # the ramp: `ramp` sockets a second
            url = bases[i % len(bases)].replace("http", "ws", 1) + "/ws/visitor"
            ws = await http.ws_connect(url, heartbeat=None)
            await ws.send_str(json.dumps({"type": "hello", "token": tokens[i], "last_seen_id": 0}))
            while json.loads((await ws.receive(timeout=120)).data)["type"] != "ready":
                pass
            opened["visitors"] += 1

            async def read() -> None:
                nonlocal echoed, closed_early
                async for msg in ws:
                    frame = json.loads(msg.data)
                    if frame["type"] == "message" and frame["message"].get("author") == "visitor":
                        echoed += 1
                    elif frame["type"] == "error":
                        errors[frame.get("code", "?")] = errors.get(frame.get("code", "?"), 0) + 1
                if not go.is_set() or time.monotonic() < start["t"] + seconds:
                    closed_early += 1

            reader = asyncio.ensure_future(read())
            await go.wait()
            next_at = start["t"] + (i / n_visitors) * interval  # spread evenly over the interval
            seq = 0
            while next_at < start["t"] + seconds:
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
                seq += 1
                sent_count[i] = seq
                await ws.send_str(json.dumps({"type": "message", "client_id": f"s{i}-{seq}",
                                              "body": f"soak {i} {seq} {time.monotonic():.6f}"}))
                next_at += interval
            await asyncio.sleep(cfg["drain"])  # the last echoes
            reader.cancel()
            await ws.close()

        agent_tasks = [asyncio.ensure_future(agent(j)) for j in my_agents]
        t0 = time.monotonic()
        visitor_tasks = [asyncio.ensure_future(visitor(i, t0 + k / ramp)) for k, i in enumerate(mine)]
        last_report = 0.0
        while opened["visitors"] < len(mine) or opened["agents"] < len(my_agents):
            failed = [t for t in visitor_tasks + agent_tasks if t.done() and t.exception()]
            if failed:
                raise failed[0].exception()  # type: ignore[misc]
            if time.monotonic() - last_report > 5:
                last_report = time.monotonic()
                print(json.dumps({"event": "opening", "shard": shard, **opened}), flush=True)
            await asyncio.sleep(0.1)
        print(json.dumps({"event": "open", "shard": shard, **opened}), flush=True)
        # Every shard starts sending at the same moment, given by the parent on stdin.
        line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        start["t"] = float(line)
        go.set()
        await asyncio.gather(*visitor_tasks)
        for t in agent_tasks:
            t.cancel()
        await asyncio.gather(*agent_tasks, return_exceptions=True)
    Path(cfg["result"]).write_text(json.dumps({
        "sent": sent_count, "echoed": echoed, "delivered": delivered, "duplicates": duplicates,
        "hist": {str(k): v for k, v in enumerate(hist) if v}, "errors": errors, "closed_early": closed_early}))
    print(json.dumps({"event": "done", "shard": shard}), flush=True)


def hist_pct(hist: dict[int, int], q: float) -> float:
    total = sum(hist.values())
    if not total:
        return float("nan")
    want, running = q / 100 * total, 0
    for bucket in sorted(hist):
        running += hist[bucket]
        if running >= want:
            return (bucket + 1) * HIST_MS
    return float("nan")


# --------------------------------------------------------------------------- main


async def soak(args) -> None:
    limit = raise_fd_limit()  # the servers and the client shards inherit it
    need = args.visitors + args.agents + 200
    if limit < need:
        print(f"warning: file-descriptor limit {limit} < {need} (raise the hard limit: ulimit -Hn)", flush=True)
    shards = args.clients or max(1, min(8, max(-(-args.agents * args.rate // 4000), -(-args.visitors // 2500))))
    shards = int(max(shards, 1))
    settings, maint, dbname = await asyncio.to_thread(prepare_database)
    servers: list[subprocess.Popen] = []
    children: list[asyncio.subprocess.Process] = []
    paths: list[str] = []
    try:
        ports = [free_port(), free_port()]
        for port in ports:
            servers.append(await start_server(settings, port))
        bases = [f"http://127.0.0.1:{p}" for p in ports]
        started = time.monotonic()
        arranged = await arrange_parley(bases[0], settings, args.visitors, 0)
        print(f"arranged {args.visitors} visitor sessions in {time.monotonic() - started:.0f} s", flush=True)
        print(f"two servers (pids {servers[0].pid}, {servers[1].pid}), {args.visitors} visitors, {args.agents} agents,"
              f" {args.rate:.0f} msgs/s for {args.minutes:g} min, {shards} client processes, sockets opened at"
              f" {args.ramp:.0f}/s; fd limit {limit} (machine shared: figures under load)", flush=True)
        for shard in range(shards):
            with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
                json.dump({"bases": bases, "visitor_tokens": arranged["visitor_tokens"],
                           "agent_tokens": [arranged["agent_token"]] * args.agents, "shard": shard,
                           "shards": shards, "seconds": args.minutes * 60, "rate": args.rate,
                           "ramp": args.ramp / shards, "drain": args.drain, "result": fh.name + ".result"}, fh)
                paths.append(fh.name)
            children.append(await asyncio.create_subprocess_exec(
                sys.executable, __file__, "--client", fh.name, stdin=subprocess.PIPE, stdout=subprocess.PIPE))
        lines: asyncio.Queue = asyncio.Queue()

        async def pump(child: asyncio.subprocess.Process) -> None:
            assert child.stdout is not None
            async for line in child.stdout:
                await lines.put(json.loads(line))
            await lines.put({"event": "exit"})

        pumps = [asyncio.ensure_future(pump(c)) for c in children]
        opened: dict[int, dict] = {}
        done = exited = 0
        baseline = [rss_mb(p.pid) for p in servers]
        started = time.monotonic()
        last_sample = started
        sending = False
        while done + exited < shards:
            try:
                msg = await asyncio.wait_for(lines.get(), 1.0)
            except TimeoutError:
                msg = None
            if msg and msg["event"] in ("opening", "open"):
                opened[msg["shard"]] = msg
                v, a = sum(o["visitors"] for o in opened.values()), sum(o["agents"] for o in opened.values())
                if msg["event"] == "open" and sum(o["event"] == "open" for o in opened.values()) == shards:
                    baseline = [rss_mb(p.pid) for p in servers]
                    print(f"clients open: {v} visitors, {a} agents in {time.monotonic() - started:.0f} s; server RSS"
                          f" {baseline[0]:.0f} / {baseline[1]:.0f} MB", flush=True)
                    at = time.monotonic() + 1.0
                    for c in children:
                        assert c.stdin is not None
                        c.stdin.write(f"{at}\n".encode())
                        await c.stdin.drain()
                    started = last_sample = at
                    sending = True
                elif msg["event"] == "opening":
                    print(f"  opening: {v} visitors, {a} agents", flush=True)
            elif msg and msg["event"] == "done":
                done += 1
            elif msg and msg["event"] == "exit":
                exited += 1
            if sending and time.monotonic() - last_sample >= args.sample:
                last_sample = time.monotonic()
                now = [rss_mb(p.pid) for p in servers]
                print(f"  t={last_sample - started:5.0f}s RSS {now[0]:.0f} / {now[1]:.0f} MB", flush=True)
        for c in children:
            await c.wait()
        await asyncio.gather(*pumps, return_exceptions=True)
        results = []
        for path in paths:
            if not os.path.exists(path + ".result"):
                raise RuntimeError("a client process ended without a result")
            results.append(json.loads(Path(path + ".result").read_text()))
        owner = await asyncpg.connect(settings.admin_url)
        try:
            rows = await owner.fetch("SELECT client_id, count(*) AS n FROM parley.messages WHERE author = 'visitor'"
                                     " AND client_id LIKE 's%' GROUP BY client_id")
        finally:
            await owner.close()
        stored = {r["client_id"]: r["n"] for r in rows}
        sent = {f"s{i}-{k}" for r in results for i, n in r["sent"].items() for k in range(1, n + 1)}
        lost = len(sent - set(stored))
        duplicated = sum(n - 1 for n in stored.values())
        delivered = [n for r in results for n in r["delivered"].values()]
        hist: dict[int, int] = {}
        for r in results:
            for k, v in r["hist"].items():
                hist[int(k)] = hist.get(int(k), 0) + v
        errors: dict[str, int] = {}
        for r in results:
            for k, v in r["errors"].items():
                errors[k] = errors.get(k, 0) + v
        echoed = sum(r["echoed"] for r in results)
        dup_delivered = sum(r["duplicates"] for r in results)
        closed_early = sum(r["closed_early"] for r in results)
        p50, p95, p99 = (hist_pct(hist, q) for q in (50, 95, 99))
        end = [rss_mb(p.pid) for p in servers]
        growth = [e - b for e, b in zip(end, baseline, strict=True)]
        d_min, d_max = min(delivered, default=0), max(delivered, default=0)
        print(f"sent {len(sent)}, echoed {echoed}, stored {len(stored)}, delivered to each agent {d_min}..{d_max}"
              f" (duplicate deliveries {dup_delivered}); visitor→agent p50 {p50:.1f} ms, p95 {p95:.1f} ms,"
              f" p99 {p99:.1f} ms; errors {errors or 0}; sockets closed early {closed_early};"
              f" RSS growth {growth[0]:+.1f} / {growth[1]:+.1f} MB", flush=True)
        print(f"visitors={args.visitors} agents={args.agents} rate={args.rate:.0f} minutes={args.minutes:g}"
              f" clients={shards} p50_ms={p50:.1f} p99_ms={p99:.1f} lost={lost} duplicated={duplicated}"
              f" undelivered={len(sent) - d_min} rss_growth_mb={growth[0]:.1f},{growth[1]:.1f}", flush=True)
    finally:
        end_clients(children, paths)
        stop_processes(servers)
        await drop_database(maint, dbname)


def end_clients(children: list[asyncio.subprocess.Process], paths: list[str]) -> None:
    """Kill the client processes still running; remove their configuration and result files."""
    for c in children:
        if c.returncode is None:
            c.kill()
    for path in paths:
        for name in (path, path + ".result"):
            if os.path.exists(name):
                os.unlink(name)


def stop_processes(procs) -> None:
    """SIGTERM each process still running (None: never started), SIGKILL if it has not ended in 15 s."""
    for p in procs:
        if p is None or p.poll() is not None:
            continue
        p.terminate()
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            p.kill()


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--client":
        asyncio.run(client_main(sys.argv[2]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--visitors", type=int, default=5000)
    parser.add_argument("--agents", type=int, default=50)
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--rate", type=float, default=500)
    parser.add_argument("--sample", type=float, default=30, help="seconds between memory samples")
    parser.add_argument("--clients", type=int, default=0,
                        help="client processes (default: one per 4,000 agent deliveries/s or 2,500 visitors, whichever needs more, at most 8)")
    parser.add_argument("--ramp", type=float, default=250, help="sockets opened per second, all client processes together")
    parser.add_argument("--drain", type=float, default=10, help="seconds to wait for the last deliveries")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.visitors, args.agents, args.minutes, args.rate, args.sample = 300, 10, 1, 100, 10
    asyncio.run(soak(args))


if __name__ == "__main__":
    main()
