"""Many connections at once, from separate processes, against one `parley serve`.

    python bench/connections.py [--sockets 3000] [--sse 500] [--agents 20] [--conversations 200]
                                [--messages 300] [--burst 1000] [--pool 10] [--slow 10]
                                [--churn 20] [--clients 4] [--nofile 1024] [--quick]

A fresh database on the embedded PostgreSQL (or DATABASE_URL), one `parley serve` with a pool of
--pool connections whose soft open-files limit starts at --nofile (as a default systemd or shell
limit would: the server raises it to the hard limit), and --clients client processes (this file
with --client) that hold the connections. In order:
1. idle: --sockets visitor sockets (hello, ready) spread over --conversations claimed conversations
   (several tabs each), then --sse event streams and --agents agent sockets of the tenant's member;
   the server's RSS and open files before and after (RSS per 1,000 sockets).
2. traffic: --messages agent replies (REST) spread over the conversations, paced; every socket
   counts what it receives: fan-out latency (reply sent -> frame received, all sockets) p50/p99,
   messages lost or seen twice by the sockets that stayed.
3. slow: --slow raw visitor sockets that never read (a small receive buffer) on one conversation
   that then gets long replies until the server has dropped them all (their connections gone from
   /proc), while a reading tab of the same conversation must get every reply once.
4. burst: --burst concurrent REST requests (GET /api/conversations) from another process against
   the pool: statuses and codes, p50/p99, requests with no answer in 60 s.
5. churn: visitor sockets opened, greeted and closed as fast as --churn workers can for 10 s:
   connects per second, errors, and the server's open files and RSS after.
6. limit: a second server whose open-files limit is (soft and hard) a little above what it needs,
   then more sockets than that: what a new socket, a REST call and the log see at the limit.
Throughout, /healthz every 100 ms (the event loop's lag as a client sees it). The machine is
shared with other engineers: every time here is under their load.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
from bench.chat_flow import arrange_parley, cpu_seconds, drop_database, pct, prepare_database, raise_fd_limit, rss_kb  # noqa: E402
from bench.soak import free_port, start_server, stop_processes  # noqa: E402

BENCH = "bench:"  # reply bodies: bench:<CLOCK_MONOTONIC at send>:<n>


def open_files(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


def nofile(pid: int) -> str:
    with open(f"/proc/{pid}/limits") as fh:
        for line in fh:
            if line.startswith("Max open files"):
                return "/".join(line.split()[3:5])
    return "?"


def with_nofile(soft: int, hard: int | None = None):
    """A preexec_fn: the child starts with this open-files limit."""
    def apply() -> None:
        cur_hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard if hard is not None else cur_hard))
    return apply


# --------------------------------------------------------------------------- client process


class Counts:
    """What the sockets of one client process received: latencies and message ids per socket."""

    def __init__(self) -> None:
        self.latency: list[float] = []
        self.errors: Counter = Counter()
        self.closes: Counter = Counter()
        self.seen: dict[str, dict[int, int]] = {}  # socket -> message id -> times

    def got(self, sock: str, message_id: int, body: str) -> None:
        if not body.startswith(BENCH):
            return
        per = self.seen.setdefault(sock, {})
        per[message_id] = per.get(message_id, 0) + 1
        if per[message_id] == 1:
            self.latency.append(time.monotonic() - float(body.split(":")[1]))


async def _socket(http, url: str, hello: dict, message_of, name: str, counts: Counts, opened: list, ready) -> None:
    """One socket: hello, then every message frame (`message_of(frame)`: the message or None) counted."""
    kind = url.rsplit("/", 1)[1]
    try:
        async with http.ws_connect(url, heartbeat=None, max_msg_size=0) as ws:
            await ws.send_str(json.dumps(hello))
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    break
                frame = json.loads(msg.data)
                if frame.get("type") == "ready":
                    opened.append(name)
                    ready.set()
                elif frame.get("type") == "error":
                    counts.errors[f"{kind} error {frame.get('code')}"] += 1
                elif (m := message_of(frame)) is not None:
                    counts.got(name, m["id"], m["body"])
            counts.closes[str(ws.close_code)] += 1
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        counts.errors[f"{kind} {type(exc).__name__}"] += 1


async def _visitor(http, base: str, name: str, token: str, counts: Counts, opened: list, ready) -> None:
    await _socket(http, base.replace("http", "ws", 1) + "/ws/visitor",
                  {"type": "hello", "token": token, "last_seen_id": 0},
                  lambda f: f["message"] if f.get("type") == "message" and f["message"].get("id") else None,
                  name, counts, opened, ready)


async def _agent(http, base: str, name: str, token: str, counts: Counts, opened: list, ready) -> None:
    await _socket(http, base.replace("http", "ws", 1) + "/ws/agent", {"type": "hello", "token": token},
                  lambda f: f["event"]["message"] if f.get("type") == "event"
                  and f["event"].get("kind") == "message_added" else None,
                  name, counts, opened, ready)


async def _sse(http, base: str, name: str, token: str, counts: Counts, opened: list, ready) -> None:
    try:
        async with http.get(base + "/api/events", headers={"Authorization": f"Bearer {token}"},
                            timeout=aiohttp.ClientTimeout(total=None, sock_read=None)) as resp:
            if resp.status != 200:
                counts.errors[f"sse {resp.status}"] += 1
                return
            opened.append(name)
            ready.set()
            async for line in resp.content:
                if line.startswith(b"data: "):
                    data = json.loads(line[6:])
                    if data.get("kind") == "message_added":
                        counts.got(name, data["message"]["id"], data["message"]["body"])
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        counts.errors[f"sse {type(exc).__name__}"] += 1


def _ws_frame(text: str) -> bytes:
    payload, mask = text.encode(), os.urandom(4)
    n = len(payload)
    head = bytes([0x81]) + (bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + n.to_bytes(2, "big"))
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def _non_reader(port: int, token: str) -> socket.socket:
    """A visitor socket that reads its handshake answer and then nothing, with a small receive buffer."""
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await loop.sock_connect(sock, ("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    await loop.sock_sendall(sock, (f"GET /ws/visitor HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                                   f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                                   "Sec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += await asyncio.wait_for(loop.sock_recv(sock, 1), 30)
    await loop.sock_sendall(sock, _ws_frame(json.dumps({"type": "hello", "token": token, "last_seen_id": 0})))
    return sock


async def _churn(http, base: str, token: str, until: float, counts: Counts) -> None:
    while time.monotonic() < until:
        try:
            async with http.ws_connect(base.replace("http", "ws", 1) + "/ws/visitor", heartbeat=None) as ws:
                await ws.send_str(json.dumps({"type": "hello", "token": token, "last_seen_id": 0}))
                while True:
                    msg = await ws.receive(timeout=30)
                    if msg.type != aiohttp.WSMsgType.TEXT:
                        counts.errors[f"churn closed {ws.close_code}"] += 1
                        break
                    if json.loads(msg.data).get("type") == "ready":
                        counts.closes["churn ok"] += 1
                        break
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            counts.errors[f"churn {type(exc).__name__}"] += 1


async def client_main(config_path: str) -> None:
    """One client process: holds its share of sockets, reports when open, and what it got when told to stop."""
    raise_fd_limit()
    cfg = json.loads(Path(config_path).read_text())
    base, counts, opened, tasks = cfg["base"], Counts(), [], []
    http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, force_close=True))
    sem = asyncio.Semaphore(100)

    async def gated(coro_fn, *args) -> None:
        async with sem:  # at most 100 opening at once
            ready = asyncio.Event()
            task = asyncio.ensure_future(coro_fn(http, base, *args, counts, opened, ready))
            tasks.append(task)
            waiting = asyncio.ensure_future(ready.wait())
            await asyncio.wait([task, waiting], return_when=asyncio.FIRST_COMPLETED)
            waiting.cancel()

    kind, items = cfg["kind"], cfg["items"]
    started = time.monotonic()
    if kind == "churn":
        await asyncio.gather(*(_churn(http, base, items[0], started + cfg["seconds"], counts)
                               for _ in range(cfg["workers"])))
    elif kind == "slow":
        socks = [await _non_reader(cfg["port"], token) for token in items]
        opened.extend(str(s.getsockname()[1]) for s in socks)
    else:
        fn = {"visitor": _visitor, "agent": _agent, "sse": _sse}[kind]
        await asyncio.gather(*(gated(fn, f"{kind}{cfg['shard']}-{i}", token) for i, token in enumerate(items)))
    print(json.dumps({"event": "open", "opened": len(opened), "names": opened if kind == "slow" else [],
                      "seconds": time.monotonic() - started,
                      "errors": dict(counts.errors)}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)  # until told to stop
    result = {"event": "result", "latency": counts.latency, "errors": dict(counts.errors),
              "closes": dict(counts.closes), "seen": counts.seen, "opened": opened}
    Path(cfg["result"]).write_text(json.dumps(result))
    print(json.dumps({"event": "done"}), flush=True)
    for task in tasks:
        task.cancel()
    await http.close()


class Client:
    """A client process (this file with --client) as the driver sees it."""

    def __init__(self, proc: asyncio.subprocess.Process, path: str) -> None:
        self.proc, self.path = proc, path

    @classmethod
    async def start(cls, **cfg) -> Client:
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
            json.dump({**cfg, "result": fh.name + ".result"}, fh)
        proc = await asyncio.create_subprocess_exec(sys.executable, __file__, "--client", fh.name,
                                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        return cls(proc, fh.name)

    async def opened(self, timeout: float = 600) -> dict:
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        return json.loads(line) if line else {"event": "exit", "opened": 0, "errors": {"exited": 1}}

    async def stop(self) -> dict:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        with contextlib.suppress(ConnectionError):
            self.proc.stdin.write(b"stop\n")
            await self.proc.stdin.drain()
        await asyncio.wait_for(self.proc.stdout.readline(), 120)
        result = json.loads(Path(self.path + ".result").read_text())
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        await self.proc.wait()
        for name in (self.path, self.path + ".result"):
            with contextlib.suppress(OSError):
                os.unlink(name)
        return result


async def start_clients(kind: str, items: list, shards: int, **cfg) -> list[Client]:
    shards = max(1, min(shards, len(items)))
    clients = [await Client.start(kind=kind, items=items[s::shards], shard=s, **cfg) for s in range(shards)]
    return clients


async def all_opened(clients: list[Client], names: list | None = None) -> tuple[int, Counter]:
    reports = await asyncio.gather(*(c.opened() for c in clients))
    errors: Counter = Counter()
    for r in reports:
        errors.update(r.get("errors") or {})
        if names is not None:
            names.extend(r.get("names") or [])
    return sum(r["opened"] for r in reports), errors


def connections_from(server_port: int, client_ports: set[int]) -> int:
    """The server's TCP connections (any state) with these client ports (/proc/net/tcp, tcp6)."""
    held = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as fh:
            for line in list(fh)[1:]:
                local, remote = line.split()[1:3]
                if int(local.rsplit(":", 1)[1], 16) == server_port and int(remote.rsplit(":", 1)[1], 16) in client_ports:
                    held += 1
    return held


# --------------------------------------------------------------------------- driver


class Probe:
    """GET /healthz every 100 ms: what a client sees of the server's event loop."""

    def __init__(self, base: str) -> None:
        self.base, self.times, self.failed, self._task = base, [], Counter(), None

    async def _run(self) -> None:
        async with aiohttp.ClientSession() as http:
            while True:
                started = time.monotonic()
                try:
                    async with http.get(self.base + "/healthz", timeout=aiohttp.ClientTimeout(total=10)) as resp:
                        await resp.read()
                        if resp.status != 200:
                            self.failed[str(resp.status)] += 1
                except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                    self.failed[type(exc).__name__] += 1
                self.times.append(time.monotonic() - started)
                await asyncio.sleep(max(0.0, 0.1 - (time.monotonic() - started)))

    def start(self) -> None:
        self.times, self.failed = [], Counter()
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> str:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        return (f"/healthz p50 {pct(self.times, 50) * 1000:.1f} ms, p99 {pct(self.times, 99) * 1000:.1f} ms,"
                f" max {max(self.times, default=0) * 1000:.0f} ms ({len(self.times)} probes"
                + (f", failed {dict(self.failed)})" if self.failed else ")"))


async def post_replies(base: str, token: str, conversations: list[str], n: int, rate: float,
                       prefix: str = "", pad: int = 0) -> tuple[Counter, dict[str, int]]:
    """`n` agent replies round-robin over `conversations` at `rate` a second; (statuses, replies per conversation)."""
    statuses: Counter = Counter()
    per: Counter = Counter()
    sem = asyncio.Semaphore(16)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        async def one(i: int) -> None:
            conv = conversations[i % len(conversations)]
            async with sem:
                body = f"{BENCH}{time.monotonic()}:{i}" + ("x" * pad)
                async with http.post(f"{base}/api/conversations/{conv}/reply", json={"body": body},
                                     headers={"Authorization": f"Bearer {token}"}) as resp:
                    await resp.read()
                    statuses[resp.status] += 1
                    if resp.status == 201:
                        per[conv] += 1

        start = time.monotonic()
        tasks = []
        for i in range(n):
            await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
            tasks.append(asyncio.ensure_future(one(i)))
        await asyncio.gather(*tasks)
    return statuses, dict(per)


async def rest_burst(base: str, token: str, n: int) -> dict:
    """`n` concurrent GET /api/conversations (one connection each)."""
    statuses: Counter = Counter()
    times: list[float] = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, force_close=True)) as http:
        async def one() -> None:
            started = time.monotonic()
            try:
                async with http.get(f"{base}/api/conversations?limit=20", headers={"Authorization": f"Bearer {token}"},
                                    timeout=aiohttp.ClientTimeout(total=60)) as resp:
                    body = await resp.read()
                    code = ""
                    if resp.status != 200:
                        with contextlib.suppress(ValueError, KeyError, TypeError):
                            code = " " + json.loads(body)["error"]["code"]
                    statuses[f"{resp.status}{code}"] += 1
            except TimeoutError:
                statuses["no answer in 60 s"] += 1
            except (aiohttp.ClientError, OSError) as exc:
                statuses[type(exc).__name__] += 1
            times.append(time.monotonic() - started)

        started = time.monotonic()
        await asyncio.gather(*(one() for _ in range(n)))
    return {"statuses": dict(statuses), "p50": pct(times, 50), "p99": pct(times, 99),
            "seconds": time.monotonic() - started}


def log_kinds(text: str) -> Counter:
    """A server log's warnings, errors and tracebacks, by their first 100 characters."""
    lines: Counter = Counter()
    for line in text.splitlines():
        if any(k in line for k in ("Traceback", "ERROR", "WARNING", "out of system resource", "Too many open",
                                    "dropping", "unavailable", "unreadable", "busy", "failed")):
            lines[line[:100]] += 1
    return lines


def loss(results: list[dict], expected: dict[str, int], conv_of: dict[str, str] | None) -> tuple[int, int, int]:
    """(sockets checked, replies missing, replies seen twice) over the sockets that stayed open."""
    checked = missing = twice = 0
    for r in results:
        for name in r["opened"]:
            seen = r["seen"].get(name, {})
            want = expected.get(conv_of[name], 0) if conv_of is not None else sum(expected.values())
            checked += 1
            missing += max(0, want - len(seen))
            twice += sum(1 for times in seen.values() if times > 1)
    return checked, missing, twice


async def bench(args) -> None:
    limit = raise_fd_limit()
    settings, maint, dbname = await asyncio.to_thread(prepare_database)
    port = free_port()
    env = {**os.environ, "DATABASE_URL": settings.admin_url, "PARLEY_SECRET_KEY": settings.secret_key,
           "PARLEY_EMBED_WARM": "0", "PYTHONPATH": str(ROOT), "PARLEY_TRUST_PROXY": "1",
           "PARLEY_DB_POOL_SIZE": str(args.pool)}
    servers: list[subprocess.Popen] = []
    log_path, log2_path = tempfile.mktemp(suffix=".log"), tempfile.mktemp(suffix=".log")
    try:
        with open(log_path, "w") as log:
            server = await start_server(settings, port, log=log, env=env, preexec_fn=with_nofile(args.nofile))
        servers.append(server)
        base = f"http://127.0.0.1:{port}"
        arranged = await arrange_parley(base, settings, args.conversations, 0)
        agent_token = arranged["agent_token"]
        conv_tokens = arranged["visitor_tokens"]
        convs = [json.loads(base64.urlsafe_b64decode(t.split(".")[1] + "==").decode())["sub"] for t in conv_tokens]
        print(f"one server (pid {server.pid}, pool {args.pool}), open-files limit started at {args.nofile}, now"
              f" {nofile(server.pid)}; {args.conversations} conversations; {args.clients} client processes;"
              f" bench fd limit {limit}. The machine is shared: times are under other engineers' load.", flush=True)
        probe = Probe(base)

        if "traffic" in args.phases:
            # 1. idle sockets --------------------------------------------------------
            probe.start()
            rss0, fd0 = rss_kb(server.pid), open_files(server.pid)
            tokens = [conv_tokens[i % len(conv_tokens)] for i in range(args.sockets)]
            started = time.monotonic()
            visitors = await start_clients("visitor", tokens, args.clients, base=base)
            opened, errors = await all_opened(visitors)
            took = time.monotonic() - started
            await asyncio.sleep(1.0)
            rss1, fd1 = rss_kb(server.pid), open_files(server.pid)
            print(f"idle: {opened} of {args.sockets} visitor sockets open in {took:.1f} s; server RSS {rss0 / 1024:.0f} ->"
                  f" {rss1 / 1024:.0f} MB ({(rss1 - rss0) / max(opened, 1) * 1000 / 1024:.1f} MB per 1,000 sockets),"
                  f" open files {fd0} -> {fd1}; errors {dict(errors) or 0}; {await probe.stop()}", flush=True)
            probe.start()
            streams = await start_clients("sse", [agent_token] * args.sse, args.clients, base=base)
            agents = await start_clients("agent", [agent_token] * args.agents, 1, base=base)
            sse_open, sse_err = await all_opened(streams)
            agents_open, agents_err = await all_opened(agents)
            rss2, fd2 = rss_kb(server.pid), open_files(server.pid)
            print(f"streams: {sse_open} of {args.sse} SSE streams, {agents_open} of {args.agents} agent sockets; server RSS"
                  f" {rss2 / 1024:.0f} MB ({(rss2 - rss1) / max(sse_open + agents_open, 1) * 1000 / 1024:.1f} MB per"
                  f" 1,000), open files {fd2}; errors {dict(sse_err + agents_err) or 0}; {await probe.stop()}", flush=True)

            # 2. traffic ----------------------------------------------------------------
            probe.start()
            cpu0 = cpu_seconds(server.pid)
            statuses, per_conv = await post_replies(base, agent_token, convs, args.messages, args.rate)
            await asyncio.sleep(2.0)  # the last fan-out
            lag = await probe.stop()
            cpu = cpu_seconds(server.pid) - cpu0
            vres = [await c.stop() for c in visitors]
            sres = [await c.stop() for c in streams]
            ares = [await c.stop() for c in agents]
            conv_of = {}
            for r in vres:
                for name in r["opened"]:
                    shard, i = name[len("visitor"):].split("-")
                    conv_of[name] = convs[conv_tokens.index(tokens[int(i) * min(args.clients, len(tokens)) + int(shard)])]
            expected = {c: n for c, n in per_conv.items()}
            vl = [x for r in vres for x in r["latency"]]
            sl = [x for r in sres for x in r["latency"]]
            al = [x for r in ares for x in r["latency"]]
            vc, vm, vt = loss(vres, expected, conv_of)
            sc, sm, st = loss(sres + ares, expected, None)
            print(f"traffic: {sum(statuses.values())} replies at {args.rate:g}/s ({dict(statuses)}); fan-out to visitors"
                  f" {len(vl)} frames p50 {pct(vl, 50) * 1000:.1f} ms p99 {pct(vl, 99) * 1000:.1f} ms; to SSE {len(sl)}"
                  f" p50 {pct(sl, 50) * 1000:.1f} ms p99 {pct(sl, 99) * 1000:.1f} ms; to agents {len(al)} p50"
                  f" {pct(al, 50) * 1000:.1f} ms p99 {pct(al, 99) * 1000:.1f} ms; lost {vm + sm}, twice {vt + st} over"
                  f" {vc + sc} sockets; server CPU {cpu:.1f} s ({cpu / max(len(vl) + len(sl) + len(al), 1) * 1e6:.0f} µs"
                  f" per frame delivered); closes {dict(sum((Counter(r['closes']) for r in vres + ares), Counter())) or 0};"
                  f" {lag}", flush=True)

        if "slow" in args.phases:
            # 3. slow consumers -------------------------------------------------------------
            busy, busy_token = convs[0], conv_tokens[0]
            reader = await start_clients("visitor", [busy_token], 1, base=base)
            await all_opened(reader)
            slow = await start_clients("slow", [busy_token] * args.slow, 1, base=base, port=port)
            ports: list[str] = []
            await all_opened(slow, ports)
            slow_ports = {int(p) for p in ports}
            held = connections_from(port, slow_ports)
            rss_held = rss_kb(server.pid)
            probe.start()
            sent, started, dropped_at = 0, time.monotonic(), None
            slow_statuses: Counter = Counter()
            while sent < args.slow_max:
                st_, per = await post_replies(base, agent_token, [busy], 200, 400, pad=3900)
                slow_statuses.update(st_)
                sent += per.get(busy, 0)
                if connections_from(port, slow_ports) == 0:
                    dropped_at = time.monotonic() - started
                    break
            rss_peak = rss_kb(server.pid)
            await asyncio.sleep(1.0)
            (rres,) = [await c.stop() for c in reader]
            for c in slow:
                await c.stop()
            _, rm, rt = loss([rres], {busy: sent}, {n: busy for n in rres["opened"]})
            print(f"slow: {args.slow} visitor sockets that never read on a conversation given {sent} replies of 4 KB"
                  f" ({dict(slow_statuses)}): " + (f"all dropped after {dropped_at:.1f} s" if dropped_at is not None else
                                                    f"NOT dropped ({connections_from(port, slow_ports)} of {held} held)")
                  + f"; server RSS {rss_held / 1024:.0f} -> {rss_peak / 1024:.0f} MB; the reading tab: {rm} lost, {rt} twice;"
                  f" {await probe.stop()}", flush=True)

        if "burst" in args.phases:
            # 4. REST burst ---------------------------------------------------------------------
            probe.start()
            burst = await rest_burst(base, agent_token, args.burst)
            print(f"burst: {args.burst} concurrent GET /api/conversations on a pool of {args.pool}: {burst['statuses']},"
                  f" p50 {burst['p50'] * 1000:.0f} ms, p99 {burst['p99'] * 1000:.0f} ms, all done in"
                  f" {burst['seconds']:.1f} s; {await probe.stop()}", flush=True)

        if "churn" in args.phases:
            # 5. churn ----------------------------------------------------------------------------
            rss_c0, fd_c0 = rss_kb(server.pid), open_files(server.pid)
            probe.start()
            churn = await start_clients("churn", [conv_tokens[1]] * args.clients, args.clients, base=base, seconds=10,
                                        workers=args.churn)
            await all_opened(churn)
            cres = [await c.stop() for c in churn]
            await asyncio.sleep(2.0)
            ok = sum(r["closes"].get("churn ok", 0) for r in cres)
            cerr = sum((Counter(r["errors"]) for r in cres), Counter())
            print(f"churn: {ok / 10:.0f} visitor sockets opened, greeted and closed a second ({args.churn * args.clients}"
                  f" workers), errors {dict(cerr) or 0}; server open files {fd_c0} -> {open_files(server.pid)}, RSS"
                  f" {rss_c0 / 1024:.0f} -> {rss_kb(server.pid) / 1024:.0f} MB; {await probe.stop()}", flush=True)
        stop_processes([server])
        servers.clear()
        text = Path(log_path).read_text(errors="replace")
        print(f"the server's log: {dict(log_kinds(text).most_common(8)) or 0} ({len(text.splitlines())} lines)")

        if "limit" in args.phases:
            # 6. at the open-files limit ------------------------------------------------------------
            cap = args.limit_at
            port2 = free_port()
            with open(log2_path, "w") as log:
                server2 = await start_server(settings, port2, log=log, env=env, preexec_fn=with_nofile(cap, cap))
            servers.append(server2)
            base2 = f"http://127.0.0.1:{port2}"
            probe = Probe(base2)
            probe.start()
            over = await start_clients("visitor", [conv_tokens[i % len(conv_tokens)] for i in range(cap + 200)],
                                       args.clients, base=base2)
            got, over_err = await all_opened(over)
            burst2 = await rest_burst(base2, agent_token, 50)
            lag2 = await probe.stop()
            for c in over:
                await c.stop()
            stop_processes([server2])
            servers.clear()
            text = Path(log2_path).read_text(errors="replace")
            lines = log_kinds(text)
            print(f"limit: a server limited to {cap} open files, {cap + 200} visitor sockets asked: {got} open, errors"
                  f" {dict(over_err) or 0}; 50 REST calls then: {burst2['statuses']}; {lag2}; log lines by kind:"
                  f" {dict(lines.most_common(6)) or 0} ({len(text.splitlines())} lines)", flush=True)

    finally:
        stop_processes(servers)
        for path in (log_path, log2_path):
            with contextlib.suppress(OSError):
                os.unlink(path)
        await drop_database(maint, dbname)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--client", help=argparse.SUPPRESS)
    p.add_argument("--sockets", type=int, default=3000)
    p.add_argument("--sse", type=int, default=500)
    p.add_argument("--agents", type=int, default=20)
    p.add_argument("--conversations", type=int, default=200)
    p.add_argument("--messages", type=int, default=300)
    p.add_argument("--rate", type=float, default=30.0)
    p.add_argument("--burst", type=int, default=1000)
    p.add_argument("--pool", type=int, default=10)
    p.add_argument("--slow", type=int, default=10)
    p.add_argument("--slow-max", type=int, default=20000, help="replies to the slow sockets' conversation at most")
    p.add_argument("--churn", type=int, default=20, help="churn workers per client process")
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--nofile", type=int, default=1024, help="the server's soft open-files limit at start")
    p.add_argument("--limit-at", type=int, default=600, help="the open-files limit of phase 6's server")
    p.add_argument("--phases", type=lambda v: set(v.split(",")), default={"traffic", "slow", "burst", "churn", "limit"},
                   help="any of traffic,slow,burst,churn,limit (default all)")
    p.add_argument("--quick", action="store_true", help="600 sockets, 100 SSE, 5 agents, 100 replies, 300 burst")
    args = p.parse_args()
    if args.client:
        asyncio.run(client_main(args.client))
        return
    if args.quick:
        args.sockets, args.sse, args.agents, args.conversations = 600, 100, 5, 50
        args.messages, args.burst, args.clients, args.churn = 100, 300, 2, 10
    asyncio.run(bench(args))


if __name__ == "__main__":
    main()
