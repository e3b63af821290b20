"""Soak: two `parley serve` processes, clients in a process of their own, for minutes.

    python bench/soak.py [--visitors 5000] [--agents 50] [--minutes 10] [--rate 500] [--quick]

Creates its own database (embedded PostgreSQL, or DATABASE_URL) and drops it afterwards. Two
`parley serve` processes share it; a client process (this file with --client, so no client
work runs in a server's event loop) opens N visitor sockets (conversations claimed by an agent,
so no bot runs) and M agent sockets of the same tenant, half on each server, and sends visitor
messages at --rate msgs/s in all (each visitor every N/rate seconds, under the per-socket frame
limit). Every message must reach every agent, whichever server it was sent to.

Printed: each server's RSS every --sample seconds (flat, or growing?), then visitor→agent
latency (p50/p95/p99, from the visitor's send to each agent's receipt), and the check:
sent, echoed, stored (distinct client ids in parley.messages), delivered to every agent;
lost = sent − stored, duplicated = stored rows beyond one per client id. Last line:
`visitors=N agents=M rate=R p99_ms=X lost=L duplicated=D rss_growth_mb=A,B`.
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
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
import asyncpg  # noqa: E402

from bench.chat_flow import arrange_parley, drop_database, pct, prepare_database, raise_fd_limit  # noqa: E402


def rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


async def start_server(settings, port: int) -> subprocess.Popen:
    env = {**os.environ, "DATABASE_URL": settings.admin_url, "PARLEY_SECRET_KEY": settings.secret_key,
           "PARLEY_EMBED_WARM": "0", "PYTHONPATH": str(ROOT),
           # Every client comes from 127.0.0.1, as from a load balancer: no per-address connection cap.
           "PARLEY_TRUST_PROXY": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "pyapp.cli", "serve", "--port", str(port)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
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


async def client_main(config_path: str) -> None:
    """The clients: visitors paced, agents counting; writes its results as one JSON line."""
    raise_fd_limit()
    cfg = json.loads(Path(config_path).read_text())
    bases, visitors, agents = cfg["bases"], cfg["visitor_tokens"], cfg["agent_tokens"]
    seconds, rate = cfg["seconds"], cfg["rate"]
    interval = len(visitors) / rate
    sent: dict[str, float] = {}
    echoed: set[str] = set()
    per_agent: list[set[str]] = [set() for _ in agents]
    latencies: list[float] = []
    errors: dict[str, int] = {}
    ready = asyncio.Event()
    opened = {"visitors": 0, "agents": 0}
    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn) as http:

        async def agent(i: int, token: str) -> None:
            async with http.ws_connect(bases[i % 2].replace("http", "ws", 1) + "/ws/agent", heartbeat=None) as ws:
                await ws.send_str(json.dumps({"type": "hello", "token": token}))
                async for msg in ws:
                    now = time.perf_counter()
                    frame = json.loads(msg.data)
                    if frame["type"] == "ready":
                        opened["agents"] += 1
                        continue
                    ev = frame.get("event") or {}
                    m = ev.get("message") or {}
                    if frame["type"] == "event" and ev.get("kind") == "message_added" and m.get("author") == "visitor":
                        cid = m.get("client_id")
                        if cid in sent and cid not in per_agent[i]:
                            per_agent[i].add(cid)
                            latencies.append((now - sent[cid]) * 1000)

        sem = asyncio.Semaphore(100)

        async def visitor(i: int, token: str) -> None:
            async with sem:
                ws = await http.ws_connect(bases[i % 2].replace("http", "ws", 1) + "/ws/visitor", heartbeat=None)
                await ws.send_str(json.dumps({"type": "hello", "token": token, "last_seen_id": 0}))
                while json.loads((await ws.receive(timeout=60)).data)["type"] != "ready":
                    pass
            opened["visitors"] += 1

            async def read() -> None:
                async for msg in ws:
                    frame = json.loads(msg.data)
                    if frame["type"] == "message" and frame["message"].get("author") == "visitor":
                        echoed.add(frame["message"].get("client_id"))
                    elif frame["type"] == "error":
                        errors[frame.get("code", "?")] = errors.get(frame.get("code", "?"), 0) + 1

            reader = asyncio.ensure_future(read())
            await ready.wait()
            start = cfg_start["t"]
            next_at = start + (i / len(visitors)) * interval  # spread evenly over the interval
            seq = 0
            while next_at < start + seconds:
                await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
                seq += 1
                cid = f"s{i}-{seq}"
                sent[cid] = time.perf_counter()
                await ws.send_str(json.dumps({"type": "message", "client_id": cid, "body": f"soak {cid}"}))
                next_at += interval
            await asyncio.sleep(5)  # the last echoes
            reader.cancel()
            await ws.close()

        cfg_start = {"t": 0.0}
        agent_tasks = [asyncio.ensure_future(agent(i, t)) for i, t in enumerate(agents)]
        visitor_tasks = [asyncio.ensure_future(visitor(i, t)) for i, t in enumerate(visitors)]
        while opened["visitors"] < len(visitors) or opened["agents"] < len(agents):
            failed = [t for t in visitor_tasks + agent_tasks if t.done() and t.exception()]
            if failed:
                raise failed[0].exception()  # type: ignore[misc]
            await asyncio.sleep(0.1)
        print(json.dumps({"event": "open", "visitors": opened["visitors"], "agents": opened["agents"]}), flush=True)
        cfg_start["t"] = time.perf_counter()
        ready.set()
        await asyncio.gather(*visitor_tasks)
        await asyncio.sleep(5)  # deliveries still on their way
        for t in agent_tasks:
            t.cancel()
        await asyncio.gather(*agent_tasks, return_exceptions=True)
    # The result (every client id sent) goes to a file: too long for one line on a pipe.
    Path(cfg["result"]).write_text(json.dumps({"sent": sorted(sent), "echoed": len(echoed & set(sent)),
                      "delivered_min": min((len(s) for s in per_agent), default=0),
                      "delivered_max": max((len(s) for s in per_agent), default=0),
                      "p50_ms": pct(latencies, 50), "p95_ms": pct(latencies, 95), "p99_ms": pct(latencies, 99),
                      "errors": errors}))
    print(json.dumps({"event": "done"}), flush=True)


# --------------------------------------------------------------------------- main


async def soak(args) -> None:
    settings, maint, dbname = await asyncio.to_thread(prepare_database)
    servers: list[subprocess.Popen] = []
    try:
        ports = [free_port(), free_port()]
        for port in ports:
            servers.append(await start_server(settings, port))
        bases = [f"http://127.0.0.1:{p}" for p in ports]
        arranged = await arrange_parley(bases[0], settings, args.visitors, 0)
        print(f"two servers (pids {servers[0].pid}, {servers[1].pid}), {args.visitors} visitors, {args.agents} agents,"
              f" {args.rate:.0f} msgs/s for {args.minutes:g} min (machine shared: figures under load)", flush=True)
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
            json.dump({"bases": bases, "visitor_tokens": arranged["visitor_tokens"],
                       "agent_tokens": [arranged["agent_token"]] * args.agents,
                       "seconds": args.minutes * 60, "rate": args.rate, "result": fh.name + ".result"}, fh)
            path = fh.name
        child = await asyncio.create_subprocess_exec(sys.executable, __file__, "--client", path,
                                                     stdout=subprocess.PIPE)
        baseline = [rss_mb(p.pid) for p in servers]
        samples: list[tuple[float, list[float]]] = []
        started = time.monotonic()
        result = None
        assert child.stdout is not None
        while result is None:
            try:
                line = await asyncio.wait_for(child.stdout.readline(), args.sample)
            except TimeoutError:
                line = None
            if line == b"":
                break
            if line:
                msg = json.loads(line)
                if msg["event"] == "open":
                    baseline = [rss_mb(p.pid) for p in servers]
                    started = time.monotonic()
                    print(f"clients open: {msg['visitors']} visitors, {msg['agents']} agents; server RSS"
                          f" {baseline[0]:.0f} / {baseline[1]:.0f} MB", flush=True)
                elif msg["event"] == "done":
                    result = json.loads(Path(path + ".result").read_text())
                continue
            now = [rss_mb(p.pid) for p in servers]
            samples.append((time.monotonic() - started, now))
            print(f"  t={time.monotonic() - started:5.0f}s RSS {now[0]:.0f} / {now[1]:.0f} MB", flush=True)
        await child.wait()
        os.unlink(path)
        if os.path.exists(path + ".result"):
            os.unlink(path + ".result")
        if result is None:
            raise RuntimeError("the client process ended without a result")
        owner = await asyncpg.connect(settings.admin_url)
        try:
            rows = await owner.fetch("SELECT client_id, count(*) AS n FROM parley.messages WHERE author = 'visitor'"
                                     " AND client_id LIKE 's%' GROUP BY client_id")
        finally:
            await owner.close()
        stored = {r["client_id"]: r["n"] for r in rows}
        sent = set(result["sent"])
        lost = len(sent - set(stored))
        duplicated = sum(n - 1 for n in stored.values())
        end = [rss_mb(p.pid) for p in servers]
        growth = [e - b for e, b in zip(end, baseline)]
        print(f"sent {len(sent)}, echoed {result['echoed']}, stored {len(stored)}, delivered to each agent"
              f" {result['delivered_min']}..{result['delivered_max']}; visitor→agent p50 {result['p50_ms']:.1f} ms,"
              f" p95 {result['p95_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms; errors {result['errors'] or 0};"
              f" RSS growth {growth[0]:+.1f} / {growth[1]:+.1f} MB", flush=True)
        print(f"visitors={args.visitors} agents={args.agents} rate={args.rate:.0f} p99_ms={result['p99_ms']:.0f}"
              f" lost={lost} duplicated={duplicated} undelivered={len(sent) - result['delivered_min']}"
              f" rss_growth_mb={growth[0]:.1f},{growth[1]:.1f}")
    finally:
        for p in servers:
            p.terminate()
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
        await drop_database(maint, dbname)


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
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.visitors, args.agents, args.minutes, args.rate, args.sample = 300, 10, 1, 100, 10
    asyncio.run(soak(args))


if __name__ == "__main__":
    main()
