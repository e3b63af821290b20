"""Soak with faults: the product measured from outside while faults are injected.

    python bench/faults.py [--visitors 60] [--agents 2] [--clients 2] [--rate 30] [--every 12]
                           [--faults kill_server,pg_restart,conn_limit,kill_jobs,sink_500,sink_429,sink_hang]
                           [--quick] [--ordered]

Creates its own database on the embedded PostgreSQL (the PostgreSQL faults need it; with
DATABASE_URL they are left out) and drops it afterwards. Runs two `parley serve` processes and
one `parley jobs` (the outbox drainer) on it, a webhook sink on 127.0.0.1 subscribed to every
visitor message (--ordered: an ordered destination, sent one post at a time as Telegram and Slack
are), and client processes of their own (this file with --client): visitors on the widget socket,
as the widget does (resend what was not echoed under its client id, reconnect with last_seen_id,
to the other server after a failure), and agents on the agent socket (reconnect with
last_event_id). This process probes REST (GET /api/conversations, both servers, every 100 ms).

Every --every seconds one fault, in turn:
- kill_server: SIGKILL one `parley serve` (mid-stream), started again on its port;
- pg_restart: `pg_ctl restart -m immediate` (no shutdown checkpoint; mid-transaction);
- conn_limit: the database's CONNECTION LIMIT 0 and the app's and jobs' sessions ended (as at
  max_connections), for 3 s;
- kill_jobs: SIGKILL `parley jobs` while the sink answers slowly (mid-delivery), started again;
- sink_500 / sink_429 (Retry-After: 1) / sink_hang (answers after 20 s): the webhook sink, 5 s;
- llm_stall (two deltas, then nothing), llm_garbage (a chunk that is not JSON), llm_close (the
  socket closed mid-stream), llm_slow (8 s to the first byte): the OpenAI-compatible model, 5 s.

Beside the chatting visitors, --bot-visitors talk to the bot (the servers' model is a fake
OpenAI-compatible API on 127.0.0.1 streaming SSE): one question at a time, each answered by the
bot or by the assistant_unavailable notice; a question left with neither, or answered twice, is
counted.

Printed after the run (the machine is shared: times are under other engineers' load):
messages sent / accepted (echoed) / stored, lost (accepted but not stored, and sent but never
stored), duplicated (stored rows beyond one per client id), visitors whose messages were stored
out of order, agents missing or seeing twice a stored message; webhook deliveries expected /
arrived (distinct webhook-id) / missing / arrived more than once (a resend of the same id, which
the receiver drops), and of those how many the sink was still answering when `parley jobs` was
killed (in flight: sent again whatever the drainer does; the rest were answered and not recorded); REST answers by status and code during the faults, 500s, bodies with a stack
trace, requests that hung (no answer in 5 s); per fault, the time from its end (process started,
PostgreSQL restarted, limit lifted, sink or model healthy) to the first REST 200 from both
servers, for the sink faults to the outbox delivering again, for the model's to a whole answer
streamed again; for the bot questions whose server was killed while they waited, the wait from
question to answer or notice (p50/p95/max) and how many got neither; log lines with a Traceback, and
whether a secret (the session token, the password, the server key, the model's API key) appears in any log.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
import asyncpg  # noqa: E402
from aiohttp import web  # noqa: E402
from bench.chat_flow import arrange_parley, drop_database, prepare_database, raise_fd_limit  # noqa: E402
from bench.soak import end_clients, free_port, start_server, stop_processes  # noqa: E402
from pyapp.client.agent_socket import AgentFeed  # noqa: E402

FAULTS = ("kill_server", "pg_restart", "conn_limit", "kill_jobs", "sink_500", "sink_429", "sink_hang",
          "llm_stall", "llm_garbage", "llm_close", "llm_slow")
LLM_FAULT_S = 5  # how long the model misbehaves
BOT_PACE = 2.0  # s between a bot visitor's answer and its next question
BOT_WAIT = 150.0  # s a bot visitor waits for an answer or a notice (the model's read timeout is 60 s, a retry)
PROBE_EVERY = 0.1
PROBE_TIMEOUT = 5.0
PASSWORD = "bench-password-123"  # arrange_parley's sign-up: must never reach a log


# --------------------------------------------------------------------------- client process


class Visitor:
    """The widget's delivery rule: a message is sent under its client id until echoed back; after
    any failure the socket reconnects (to the other server) with last_seen_id and resends, in
    order, every message not yet echoed."""

    def __init__(self, i: int, token: str):
        self.i, self.token = i, token
        self.order: list[str] = []  # client ids in the order they were written
        self.acked: dict[str, int] = {}
        self.last_seen_id = 0
        self.reconnects = 0
        self.errors: Counter = Counter()
        self.wake = asyncio.Event()

    def write(self) -> None:
        self.order.append(f"f{self.i}-{len(self.order) + 1}")
        self.wake.set()

    def pending(self) -> list[str]:
        return [c for c in self.order if c not in self.acked]

    async def run(self, http: aiohttp.ClientSession, bases: list[str], stop: asyncio.Event) -> None:
        server = self.i % len(bases)
        while not (stop.is_set() and not self.pending()):
            try:
                async with http.ws_connect(bases[server].replace("http", "ws", 1) + "/ws/visitor",
                                           heartbeat=None, timeout=aiohttp.ClientWSTimeout(ws_close=2)) as ws:
                    await ws.send_str(json.dumps({"type": "hello", "token": self.token,
                                                  "last_seen_id": self.last_seen_id}))
                    await self._session(ws, stop)
            except (aiohttp.ClientError, OSError, TimeoutError, RuntimeError):
                pass
            if stop.is_set() and not self.pending():
                break
            self.reconnects += 1
            server = (server + 1) % len(bases)
            await asyncio.sleep(0.25 + random.random() * 0.5)

    async def _session(self, ws, stop: asyncio.Event) -> None:
        async with asyncio.timeout(10):
            while True:
                msg = await ws.receive()
                if msg.type != aiohttp.WSMsgType.TEXT:
                    return
                if json.loads(msg.data).get("type") == "ready":
                    break
        sent: set[str] = set()
        reader = asyncio.ensure_future(self._read(ws, sent))
        try:
            while not reader.done() and not (stop.is_set() and not self.pending()):
                self.wake.clear()
                for cid in self.pending():
                    if cid not in sent:
                        sent.add(cid)
                        await ws.send_str(json.dumps({"type": "message", "client_id": cid,
                                                      "body": f"faults {cid} {time.monotonic():.6f}"}))
                waker = asyncio.ensure_future(self.wake.wait())
                await asyncio.wait([reader, waker], timeout=1.0, return_when=asyncio.FIRST_COMPLETED)
                waker.cancel()
        finally:
            reader.cancel()

    async def _read(self, ws, sent: set[str]) -> None:
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                return
            frame = json.loads(msg.data)
            m = frame.get("message") or {}
            if frame.get("type") == "message" and m.get("id"):
                self.last_seen_id = max(self.last_seen_id, m["id"])
                if m.get("author") == "visitor" and m.get("client_id"):
                    self.acked[m["client_id"]] = m["id"]
                    self.wake.set()
            elif frame.get("type") == "error":
                self.errors[frame.get("code", "?")] += 1
                sent.clear()  # a refused frame says not which message: resend what is unechoed
                self.wake.set()


class BotVisitor:
    """A visitor talking to the bot: one question at a time; the first bot message or system notice
    after the question's echo is its outcome. Reconnects with last_seen_id (replayed messages count)."""

    def __init__(self, i: int, token: str):
        self.i, self.token = i, token
        self.asked: list[str] = []
        self.outcomes: dict[str, str] = {}  # client id -> "answer" | "notice"
        self.extra = 0  # bot messages and notices beyond one per question
        self.last_seen_id = 0
        self.echoed: set[str] = set()
        self.changed = asyncio.Event()
        self.server = 0  # the server this visitor's socket is on
        self.asked_at: dict[str, float] = {}  # client id -> first sent (time.monotonic, one clock per machine)
        self.stored_on: dict[str, int] = {}  # client id -> the server whose echo said it was stored
        self.outcome_at: dict[str, float] = {}  # client id -> when its answer or notice came

    def _on(self, frame: dict) -> None:
        m = frame.get("message") or {}
        if frame.get("type") != "message" or not m.get("id") or m["id"] <= self.last_seen_id:
            return
        self.last_seen_id = m["id"]
        if m.get("author") == "visitor" and m.get("client_id"):
            self.echoed.add(m["client_id"])
            self.stored_on.setdefault(m["client_id"], self.server)
        elif m.get("author") in ("bot", "system") and self.asked:
            waiting = [c for c in self.asked if c not in self.outcomes]
            if waiting:
                self.outcomes[waiting[0]] = "answer" if m["author"] == "bot" else "notice"
                self.outcome_at[waiting[0]] = time.monotonic()
            else:
                self.extra += 1
        self.changed.set()

    async def run(self, http: aiohttp.ClientSession, bases: list[str], stop: asyncio.Event) -> None:
        server = self.i % len(bases)
        while not stop.is_set() or (self.asked and self.asked[-1] not in self.outcomes):
            self.server = server
            try:
                async with http.ws_connect(bases[server].replace("http", "ws", 1) + "/ws/visitor",
                                           heartbeat=None) as ws:
                    await ws.send_str(json.dumps({"type": "hello", "token": self.token,
                                                  "last_seen_id": self.last_seen_id}))
                    reader = asyncio.ensure_future(self._read(ws))
                    try:
                        await self._converse(ws, reader, stop)
                    finally:
                        reader.cancel()
            except (aiohttp.ClientError, OSError, TimeoutError, RuntimeError):
                pass
            server = (server + 1) % len(bases)
            await asyncio.sleep(0.25 + random.random() * 0.5)

    async def _read(self, ws) -> None:
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                return
            self._on(json.loads(msg.data))

    async def _converse(self, ws, reader: asyncio.Future, stop: asyncio.Event) -> None:
        while not reader.done():
            if not self.asked or self.asked[-1] in self.outcomes:
                if stop.is_set():
                    return
                self.asked.append(f"b{self.i}-{len(self.asked) + 1}")
            cid = self.asked[-1]
            if cid not in self.echoed:
                self.asked_at.setdefault(cid, time.monotonic())
                await ws.send_str(json.dumps({"type": "message", "client_id": cid,
                                              "body": f"Question {cid}: what are your opening hours?"}))
            started = time.monotonic()
            while cid not in self.outcomes and not reader.done() and time.monotonic() - started < BOT_WAIT:
                self.changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.changed.wait(), 1.0)
            if cid not in self.outcomes:
                return  # the socket ended (reconnect and resend) or nothing came: counted as silent
            await asyncio.sleep(BOT_PACE)


class Agent(AgentFeed):
    """The console's agent socket: every visitor message event, resumed with last_event_id."""

    def __init__(self, j: int, token: str):
        super().__init__(token)
        self.j = j
        self.seen: Counter = Counter()
        self.reconnects = 0

    def count(self, ev: dict) -> None:
        m = ev.get("message") or {}
        if ev.get("kind") == "message_added" and m.get("author") == "visitor":
            self.seen[m["id"]] += 1

    async def run(self, http: aiohttp.ClientSession, bases: list[str], ready: asyncio.Event) -> None:
        server = self.j % len(bases)
        while True:
            with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError, RuntimeError):
                await self.follow(http, bases[server], self.count, ready, heartbeat=None, max_msg_size=0)
            self.reconnects += 1
            server = (server + 1) % len(bases)
            await asyncio.sleep(0.25 + random.random() * 0.5)


class SseAgent(Agent):
    """The agent stream over server-sent events (GET /api/events), resumed with Last-Event-ID."""

    async def run(self, http: aiohttp.ClientSession, bases: list[str], ready: asyncio.Event) -> None:
        server = self.j % len(bases)
        while True:
            headers = {"Authorization": f"Bearer {self.token}", "Accept": "text/event-stream"}
            if self.last_event_id is not None:
                headers["Last-Event-ID"] = str(self.last_event_id)
            try:
                async with http.get(bases[server] + "/api/events", headers=headers,
                                    timeout=aiohttp.ClientTimeout(total=None, sock_read=60)) as resp:
                    if resp.status == 200:
                        ready.set()
                        if self.last_event_id is None:
                            self.last_event_id = 0
                        await self._read(resp)
            except (aiohttp.ClientError, OSError, TimeoutError, RuntimeError, ValueError):
                pass
            self.reconnects += 1
            server = (server + 1) % len(bases)
            await asyncio.sleep(0.25 + random.random() * 0.5)

    async def _read(self, resp: aiohttp.ClientResponse) -> None:
        data: list[str] = []
        async for raw in resp.content:
            line = raw.decode().rstrip("\n")
            if line.startswith("data:"):
                data.append(line[5:].strip())
            elif not line and data:
                ev = json.loads("\n".join(data))
                data = []
                if not isinstance(ev, dict) or not ev.get("id"):
                    continue
                self.last_event_id = max(self.last_event_id or 0, ev["id"])
                self.count(ev)


async def client_main(config_path: str) -> None:
    """One client shard: its visitors write at their pace until told to stop, then until every
    message is echoed (or --drain runs out); its agents listen until the parent says so."""
    raise_fd_limit()
    cfg = json.loads(Path(config_path).read_text())
    bases = cfg["bases"]
    visitors = [Visitor(i, t) for i, t in enumerate(cfg["visitor_tokens"]) if i % cfg["shards"] == cfg["shard"]]
    agents = [(SseAgent if j % 2 else Agent)(j, cfg["agent_token"])  # every other one over SSE
              for j in range(cfg["agents"]) if j % cfg["shards"] == cfg["shard"]]
    bots = [BotVisitor(i, t) for i, t in enumerate(cfg["bot_tokens"]) if i % cfg["shards"] == cfg["shard"]]
    interval = len(cfg["visitor_tokens"]) / cfg["rate"]
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        ready = [asyncio.Event() for _ in agents]
        agent_tasks = [asyncio.ensure_future(a.run(http, bases, r)) for a, r in zip(agents, ready, strict=True)]
        for r in ready:
            await asyncio.wait_for(r.wait(), 60)
        print(json.dumps({"event": "open", "shard": cfg["shard"]}), flush=True)
        await stdin.readline()  # go
        stop = asyncio.Event()
        tasks = [asyncio.ensure_future(v.run(http, bases, stop)) for v in visitors]
        bot_stop = asyncio.Event()
        bot_tasks = [asyncio.ensure_future(b.run(http, bases, bot_stop)) for b in bots]

        async def pace(v: Visitor) -> None:
            await asyncio.sleep(random.random() * interval)
            while not stop.is_set():
                v.write()
                await asyncio.sleep(interval)

        pacers = [asyncio.ensure_future(pace(v)) for v in visitors]
        await stdin.readline()  # stop writing (the bot visitors: asking; each waits for its last answer)
        stop.set()
        bot_stop.set()
        for v in visitors:
            v.wake.set()
        await asyncio.gather(*pacers)
        with contextlib.suppress(TimeoutError):  # what is still unechoed then counts as never stored
            await asyncio.wait_for(asyncio.gather(*tasks), cfg["drain"])
        with contextlib.suppress(TimeoutError):  # a question still unanswered then counts as silent
            await asyncio.wait_for(asyncio.gather(*bot_tasks), BOT_WAIT + 10)
        print(json.dumps({"event": "written", "shard": cfg["shard"]}), flush=True)
        await stdin.readline()  # everything stored: the agents' last deliveries are in
        for t in tasks + agent_tasks + bot_tasks:
            t.cancel()
        await asyncio.gather(*tasks, *agent_tasks, *bot_tasks, return_exceptions=True)
    Path(cfg["result"]).write_text(json.dumps({
        "visitors": [{"order": v.order, "acked": v.acked, "reconnects": v.reconnects, "errors": v.errors}
                     for v in visitors],
        "agents": [{"seen": {str(k): n for k, n in a.seen.items()}, "reconnects": a.reconnects,
                    "kind": "sse" if isinstance(a, SseAgent) else "socket"} for a in agents],
        "bots": [{"asked": b.asked, "outcomes": b.outcomes, "extra": b.extra, "asked_at": b.asked_at,
                  "stored_on": b.stored_on, "outcome_at": b.outcome_at} for b in bots]}))
    print(json.dumps({"event": "done", "shard": cfg["shard"]}), flush=True)


# --------------------------------------------------------------------------- outside services


class Sink:
    """The webhook receiver: answers as `mode` says; counts each webhook-id it accepted (2xx)."""

    def __init__(self):
        self.mode = {"status": 200, "delay": 0.0, "headers": {}}
        self.accepted: Counter = Counter()
        self.answers: Counter = Counter()
        self.last_accepted = 0.0
        self.spans: list[tuple[float, float, str]] = []  # accepted: (read, answered, webhook-id)
        self.jobs_kills: list[tuple[float, float]] = []  # (just before, just after) each SIGKILL of `parley jobs`
        self.runner: web.AppRunner | None = None
        self.url = ""

    def in_flight_at_kills(self) -> set[str]:
        """Webhook-ids the sink accepted from a killed drainer after it died: read before the kill (or
        just after, from the socket's buffer: a new `parley jobs` needs longer than 0.5 s to send)
        and answered after it."""
        return {key for read, answered, key in self.spans
                if any(answered > before and read < after + 0.5 for before, after in self.jobs_kills)}

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self.runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self.runner.setup()
        port = free_port()
        await web.TCPSite(self.runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}/hook"

    async def handle(self, request: web.Request) -> web.Response:
        await request.read()
        read = time.monotonic()
        status, delay, headers = self.mode["status"], self.mode["delay"], self.mode["headers"]
        if delay:
            await asyncio.sleep(delay)
        self.answers[status] += 1
        if status < 300:
            self.accepted[request.headers.get("webhook-id", "")] += 1
            self.last_accepted = time.monotonic()
            self.spans.append((read, self.last_accepted, request.headers.get("webhook-id", "")))
        return web.Response(status=status, headers=headers, text="ok" if status < 300 else "no")


class FakeModel:
    """An OpenAI-compatible chat API streaming SSE; `mode` says how it misbehaves."""

    KEY = "sk-bench-model-key-never-logged"

    def __init__(self):
        self.mode = "ok"
        self.completed = 0
        self.last_completed = 0.0
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.handle)
        self.runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self.runner.setup()
        port = free_port()
        await web.TCPSite(self.runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}/v1"

    @staticmethod
    def chunk(text: str | None, finish: str | None = None) -> bytes:
        delta = {"content": text} if text is not None else {}
        return ("data: " + json.dumps({"id": "c", "object": "chat.completion.chunk", "model": "bench",
                                        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
                + "\n\n").encode()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        try:
            return await self._answer(request)
        except (ConnectionResetError, aiohttp.ClientConnectionResetError):  # the server gave up on it
            return web.Response(status=499)

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        mode = self.mode
        if mode == "slow":
            await asyncio.sleep(8)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        words = ["We", " are", " open", " from", " nine", " to", " six", " on", " weekdays", "."]
        for n, word in enumerate(words):
            if n == 2 and mode == "stall":
                await asyncio.sleep(600)  # the client's read timeout ends it
            if n == 2 and mode == "garbage":
                await resp.write(b"data: {this is not json\n\n")
            if n == 2 and mode == "close":
                assert request.transport is not None
                request.transport.close()
                return resp
            await resp.write(self.chunk(word))
            await asyncio.sleep(0.02)
        await resp.write(self.chunk(None, "stop") + b"data: [DONE]\n\n")
        await resp.write_eof()
        self.completed += 1
        self.last_completed = time.monotonic()
        return resp


class Probe:
    """REST as a client sees it during the faults: one GET every PROBE_EVERY s to each server."""

    def __init__(self, bases: list[str], token: str):
        self.bases, self.token = bases, token
        self.log: list[tuple[float, int, int, str]] = []  # (t, server, status, code); status 0: no answer
        self.traces = 0
        self.hung = 0

    async def run(self, stop: asyncio.Event) -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=PROBE_TIMEOUT)) as http:
            while not stop.is_set():
                await asyncio.gather(*(self.one(http, k) for k in range(len(self.bases))))
                await asyncio.sleep(PROBE_EVERY)

    async def one(self, http: aiohttp.ClientSession, k: int) -> None:
        status, code = 0, "refused"
        try:
            async with http.get(self.bases[k] + "/api/conversations?limit=1",
                                headers={"Authorization": f"Bearer {self.token}"}) as resp:
                status, text = resp.status, await resp.text()
            if "Traceback" in text or 'File "' in text:
                self.traces += 1
            if status >= 400:
                try:
                    code = json.loads(text)["error"]["code"]
                except (ValueError, KeyError, TypeError):
                    code = "not_json"
            else:
                code = "ok"
        except TimeoutError:
            self.hung += 1
            code = "hung"
        except (aiohttp.ClientError, OSError):
            pass
        self.log.append((time.monotonic(), k, status, code))

    async def both_answer(self, since: float, timeout: float = 120) -> float | None:
        """Seconds from `since` until each server has answered 200 once after it (None: not within timeout)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            firsts = [next((t for t, k, s, _ in self.log if k == n and s == 200 and t >= since), None)
                      for n in range(len(self.bases))]
            if all(firsts):
                return max(firsts) - since  # type: ignore[type-var]
            await asyncio.sleep(0.05)
        return None


class Processes:
    """The two servers and the jobs process, their output in log files."""

    def __init__(self, settings, logdir: Path, model_url: str):
        self.settings, self.logdir = settings, logdir
        self.ports = [free_port(), free_port()]
        self.bases = [f"http://127.0.0.1:{p}" for p in self.ports]
        self.servers: list[subprocess.Popen | None] = [None, None]
        self.jobs: subprocess.Popen | None = None
        self.env = {**os.environ, "DATABASE_URL": settings.admin_url, "PARLEY_SECRET_KEY": settings.secret_key,
                    "PARLEY_EMBED_WARM": "0", "PYTHONPATH": str(ROOT), "PARLEY_TRUST_PROXY": "1",
                    "PARLEY_FETCH_ALLOW_HOSTS": "127.0.0.1", "PARLEY_OUTBOX_LEASE_S": "3",
                    "PARLEY_JOBS_HEARTBEAT": str(logdir / "jobs.alive"), "PARLEY_LLM": "openai",
                    "PARLEY_LLM_URL": model_url, "PARLEY_LLM_MODEL": "bench", "PARLEY_LLM_KEY": FakeModel.KEY}

    def _log(self, name: str):
        return open(self.logdir / f"{name}.log", "ab")

    async def start_server(self, k: int) -> None:
        with self._log(f"server{k}") as log:
            self.servers[k] = await start_server(self.settings, self.ports[k], log=log, env=self.env)

    def start_jobs(self) -> None:
        with self._log("jobs") as log:
            self.jobs = subprocess.Popen([sys.executable, "-m", "pyapp.cli", "jobs"], cwd=ROOT, env=self.env,
                                         stdout=log, stderr=subprocess.STDOUT)

    @staticmethod
    def kill9(proc: subprocess.Popen | None) -> None:
        if proc is not None and proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)


def pg_restart_immediate() -> None:
    from pyapp.config import data_dir
    from pyapp.embedded import EmbeddedCluster

    cluster = EmbeddedCluster(data_dir())
    cluster._run("pg_ctl", ["-D", str(cluster.pgdata), "-l", str(cluster.log_file), "-m", "immediate", "-w",
                            "-t", "60", "restart"], timeout=90)


async def connection_limit(settings, dbname: str, limit: int) -> None:
    from pyapp.config import APP_ROLE, JOBS_ROLE

    owner = await asyncpg.connect(settings.admin_url)
    try:
        await owner.execute(f'ALTER DATABASE "{dbname}" CONNECTION LIMIT {int(limit)}')
        if limit == 0:
            await owner.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1"
                                " AND usename = ANY($2::text[])", dbname, [APP_ROLE, JOBS_ROLE])
    finally:
        await owner.close()


# --------------------------------------------------------------------------- main


async def inject(kind: str, procs: Processes, sink: Sink, model: FakeModel, settings, dbname: str,
                 kills: list[tuple[float, int]]) -> float:
    """Inject one fault; returns the monotonic time it ended (what recovery is measured from). A server
    killed is noted in `kills` (when, which)."""
    if kind == "kill_server":
        k = random.randrange(2)
        procs.kill9(procs.servers[k])
        kills.append((time.monotonic(), k))
        await procs.start_server(k)
    elif kind == "pg_restart":
        await asyncio.to_thread(pg_restart_immediate)
    elif kind == "conn_limit":
        await connection_limit(settings, dbname, 0)
        await asyncio.sleep(3)
        await connection_limit(settings, dbname, -1)
    elif kind == "kill_jobs":
        sink.mode = {"status": 200, "delay": 0.3, "headers": {}}  # deliveries in flight when it dies
        await asyncio.sleep(1.5)
        before = time.monotonic()
        procs.kill9(procs.jobs)
        sink.jobs_kills.append((before, time.monotonic()))
        sink.mode = {"status": 200, "delay": 0.0, "headers": {}}
        procs.start_jobs()
    elif kind.startswith("llm"):
        model.mode = kind.removeprefix("llm_")
        await asyncio.sleep(LLM_FAULT_S)
        model.mode = "ok"
    else:
        sink.mode = {"sink_500": {"status": 500, "delay": 0.0, "headers": {}},
                     "sink_429": {"status": 429, "delay": 0.0, "headers": {"Retry-After": "1"}},
                     "sink_hang": {"status": 200, "delay": 20.0, "headers": {}}}[kind]
        await asyncio.sleep(5)
        sink.mode = {"status": 200, "delay": 0.0, "headers": {}}
    return time.monotonic()


async def since(last, ended: float, timeout: float = 90) -> float | None:
    """Seconds from `ended` until last() (a monotonic time) passes it, or None within timeout."""
    deadline = time.monotonic() + timeout
    while last() < ended and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return last() - ended if last() >= ended else None


async def outbox_state(settings, destination_id) -> tuple[set[str], int]:
    owner = await asyncpg.connect(settings.admin_url)
    try:
        rows = await owner.fetch("SELECT delivery_key, status FROM parley.outbox WHERE destination_id = $1",
                                 destination_id)
    finally:
        await owner.close()
    return {f"msg_{r['delivery_key'].hex}" for r in rows}, sum(r["status"] == "pending" for r in rows)


async def run(args) -> None:
    raise_fd_limit()
    if os.environ.get("DATABASE_URL"):
        faults = [f for f in args.faults if f not in ("pg_restart", "conn_limit")]
        print("DATABASE_URL is set: the PostgreSQL faults are left out", flush=True)
    else:
        faults = list(args.faults)
    settings, maint, dbname = await asyncio.to_thread(prepare_database)
    logdir = Path(tempfile.mkdtemp(prefix="parley-faults-"))
    model = FakeModel()
    await model.start()
    procs = Processes(settings, logdir, model.url)
    sink = Sink()
    children: list[asyncio.subprocess.Process] = []
    paths: list[str] = []
    try:
        await sink.start()
        for k in range(2):
            await procs.start_server(k)
        arranged = await arrange_parley(procs.bases[0], settings, args.visitors, args.bot_visitors, webhooks=1)
        owner = await asyncpg.connect(settings.admin_url)
        try:
            destination = await owner.fetchval("UPDATE parley.outbox_destinations SET target = $1, ordered = $2"
                                                " RETURNING id", sink.url, args.ordered)
            # The bot answers every question (no handoff after misses: there is no knowledge to ground on).
            await owner.execute("""UPDATE parley.chatbots SET config = config || '{"handoff": {"miss_threshold": 0}}'""")
        finally:
            await owner.close()
        procs.start_jobs()
        print(f"two servers, one jobs process, {args.visitors} visitors and {args.agents} agents in {args.clients}"
              f" client processes, {args.rate:g} msgs/s, a fault every {args.every:g} s: {', '.join(faults)}"
              f" (machine shared: times under load); logs in {logdir}", flush=True)
        for shard in range(args.clients):
            with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
                json.dump({"bases": procs.bases, "visitor_tokens": arranged["visitor_tokens"],
                           "bot_tokens": arranged["idle_tokens"],
                           "agent_token": arranged["agent_token"], "agents": args.agents, "shard": shard,
                           "shards": args.clients, "rate": args.rate, "drain": args.drain,
                           "result": fh.name + ".result"}, fh)
                paths.append(fh.name)
            children.append(await asyncio.create_subprocess_exec(
                sys.executable, __file__, "--client", fh.name, stdin=subprocess.PIPE, stdout=subprocess.PIPE))

        async def expect(event: str) -> None:
            for c in children:
                assert c.stdout is not None
                while json.loads(await c.stdout.readline())["event"] != event:
                    pass

        async def tell() -> None:
            for c in children:
                assert c.stdin is not None
                c.stdin.write(b"\n")
                await c.stdin.drain()

        await asyncio.wait_for(expect("open"), 120)
        probe = Probe(procs.bases, arranged["agent_token"])
        probe_stop = asyncio.Event()
        probe_task = asyncio.ensure_future(probe.run(probe_stop))
        await tell()  # go
        recovery: dict[str, list[float | None]] = {}
        windows: list[tuple[float, float]] = []
        kills: list[tuple[float, int]] = []
        await asyncio.sleep(args.every)
        for kind in faults:
            began = time.monotonic()
            ended = await inject(kind, procs, sink, model, settings, dbname, kills)
            rest = await probe.both_answer(ended)
            if kind.startswith("sink") or kind == "kill_jobs":
                recovery.setdefault(kind, []).append(await since(lambda: sink.last_accepted, ended))
            elif kind.startswith("llm"):
                recovery.setdefault(kind, []).append(await since(lambda: model.last_completed, ended))
            else:
                recovery.setdefault(kind, []).append(rest)
            windows.append((began, time.monotonic()))
            took = recovery[kind][-1]
            print(f"  {kind}: recovered in {'never' if took is None else f'{took:.2f} s'}", flush=True)
            await asyncio.sleep(args.every)
        await tell()  # stop writing
        await asyncio.wait_for(expect("written"), args.drain + BOT_WAIT + 60)
        deadline = time.monotonic() + 120
        keys, pending = await outbox_state(settings, destination)
        while pending and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            keys, pending = await outbox_state(settings, destination)
        await asyncio.sleep(3)  # the agents' last events (they resume from their last_event_id)
        await tell()
        await asyncio.wait_for(expect("done"), 60)
        for c in children:
            await c.wait()
        probe_stop.set()
        await probe_task
        results = [json.loads(Path(p + ".result").read_text()) for p in paths]
        report(args, settings, results, probe, windows, recovery, sink, keys, pending, logdir, arranged,
               await stored_messages(settings), model, kills)
    finally:
        end_clients(children, paths)
        stop_processes([*procs.servers, procs.jobs])
        for runner in (sink.runner, model.runner):
            if runner is not None:
                await runner.cleanup()
        await drop_database(maint, dbname)


async def stored_messages(settings) -> list:
    owner = await asyncpg.connect(settings.admin_url)
    try:
        return await owner.fetch("SELECT id, client_id FROM parley.messages WHERE author = 'visitor'"
                                 " AND client_id LIKE 'f%' ORDER BY id")
    finally:
        await owner.close()


def orphaned_waits(bots: list[dict], kills: list[tuple[float, int]]) -> tuple[list[float], int]:
    """The bot questions whose server was killed while they waited (stored by it, asked before the kill,
    not answered by then): the seconds from each question to its answer or notice, and how many got
    neither."""
    waits, silent = [], 0
    for b in bots:
        for cid, asked in b["asked_at"].items():
            done = b["outcome_at"].get(cid)
            if not any(k == b["stored_on"].get(cid) and asked < t and (done is None or done > t) for t, k in kills):
                continue
            if done is None:
                silent += 1
            else:
                waits.append(done - asked)
    return sorted(waits), silent


def report(args, settings, results, probe: Probe, windows, recovery, sink: Sink, keys: set[str], pending: int,
           logdir: Path, arranged: dict, stored_rows, model: FakeModel, kills: list[tuple[float, int]]) -> None:
    visitors = [v for r in results for v in r["visitors"]]
    agents = [a for r in results for a in r["agents"]]
    by_cid: dict[str, list[int]] = {}
    for row in stored_rows:
        by_cid.setdefault(row["client_id"], []).append(row["id"])
    sent = [c for v in visitors for c in v["order"]]
    acked = {c: i for v in visitors for c, i in v["acked"].items()}
    lost_accepted = [c for c in acked if c not in by_cid]
    never_stored = [c for c in sent if c not in by_cid]
    duplicated = sum(len(ids) - 1 for ids in by_cid.values())
    wrong_echo = sum(1 for c, i in acked.items() if c in by_cid and by_cid[c][0] != i)
    out_of_order = 0
    for v in visitors:
        ids = [by_cid[c][0] for c in v["order"] if c in by_cid]
        out_of_order += ids != sorted(ids)
    stored_ids = {ids[0] for ids in by_cid.values()}
    missing = [len(stored_ids - {int(k) for k in a["seen"]}) for a in agents]
    twice = [sum(n > 1 for n in a["seen"].values()) for a in agents]
    during = [e for e in probe.log if any(b <= e[0] <= w for b, w in windows)]
    codes = Counter(f"{s} {c}" for _, _, s, c in during)
    arrived = set(sink.accepted) - {""}
    secrets_found = []
    logs = {p.name: p.read_text(errors="replace") for p in logdir.glob("*.log")}
    for name, text in logs.items():
        for label, secret in (("session token", arranged["agent_token"]), ("password", PASSWORD),
                              ("server key", settings.secret_key), ("model key", FakeModel.KEY)):
            if secret and secret in text:
                secrets_found.append(f"{label} in {name}")
    tracebacks = {name: text.count("Traceback") for name, text in logs.items() if "Traceback" in text}
    print(f"messages: sent {len(sent)}, accepted {len(acked)}, stored {len(by_cid)}; lost after acceptance"
          f" {len(lost_accepted)}, sent and never stored {len(never_stored)}, duplicated {duplicated}, echoed with"
          f" another id {wrong_echo}, visitors stored out of order {out_of_order}", flush=True)
    print(f"visitor reconnects {sum(v['reconnects'] for v in visitors)}, error frames"
          f" {dict(sum((Counter(v['errors']) for v in visitors), Counter()))}; agents"
          f" ({', '.join(a['kind'] for a in agents)}): stored messages missed {missing}, seen twice {twice},"
          f" reconnects {[a['reconnects'] for a in agents]}", flush=True)
    print(f"webhooks: expected {len(keys)} (pending {pending}), arrived {len(arrived & keys)}, missing"
          f" {len(keys - arrived)}, unexpected {len(arrived - keys)}, arrived more than once"
          f" {len(twice_ids := {k for k, n in sink.accepted.items() if n > 1})} (of which in flight at a kill of"
          f" `parley jobs`: {len(twice_ids & sink.in_flight_at_kills())}); sink answers {dict(sink.answers)}",
          flush=True)
    bots = [b for r in results for b in r["bots"]]
    outcomes = Counter(o for b in bots for o in b["outcomes"].values())
    silent = sum(len(b["asked"]) - len(b["outcomes"]) for b in bots)
    print(f"bot visitors: questions {sum(len(b['asked']) for b in bots)}, answered {outcomes['answer']}, notice"
          f" {outcomes['notice']}, left without either {silent}, answered twice {sum(b['extra'] for b in bots)}; model streams completed {model.completed}",
          flush=True)
    if kills:
        waits, orphans_silent = orphaned_waits(bots, kills)

        def at(q: float) -> str:
            return f"{waits[min(len(waits) - 1, int(q * len(waits)))]:.1f}" if waits else "-"

        print(f"bot questions whose server was killed while they waited ({len(kills)} kills): {len(waits) + orphans_silent},"
              f" answered {len(waits)} after min {at(0.0)} s, p50 {at(0.5)} s, p95 {at(0.95)} s, max {at(1.0)} s"
              f" (question to answer or notice), left without either {orphans_silent}", flush=True)
    print(f"REST during faults: {dict(codes)}; 500s {sum(s == 500 for _, _, s, _ in probe.log)}, stack traces"
          f" {probe.traces}, hung {probe.hung}, of {len(probe.log)} probes", flush=True)
    for kind, times in recovery.items():
        shown = ", ".join("never" if t is None else f"{t:.2f}" for t in times)
        what = ("outbox delivering again" if kind.startswith("sink") or kind == "kill_jobs"
                else "a whole answer streamed" if kind.startswith("llm") else "REST 200 on both")
        print(f"recovery {kind}: {shown} s ({what})", flush=True)
    print(f"logs: tracebacks {tracebacks or 0}; secrets {secrets_found or 'none'}", flush=True)
    print(f"visitors={args.visitors} rate={args.rate:g} faults={len(recovery)} sent={len(sent)} accepted={len(acked)}"
          f" lost={len(lost_accepted)} unstored={len(never_stored)} duplicated={duplicated}"
          f" out_of_order={out_of_order} agent_missed={max(missing, default=0)} webhooks_missing={len(keys - arrived)}"
          f" rest_500={sum(s == 500 for _, _, s, _ in probe.log)} hung={probe.hung}", flush=True)


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--client":
        asyncio.run(client_main(sys.argv[2]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--visitors", type=int, default=60)
    parser.add_argument("--agents", type=int, default=2)
    parser.add_argument("--bot-visitors", type=int, default=6, help="visitors talking to the bot")
    parser.add_argument("--clients", type=int, default=2, help="client processes")
    parser.add_argument("--rate", type=float, default=30, help="visitor messages a second, all together")
    parser.add_argument("--every", type=float, default=12, help="seconds between faults")
    parser.add_argument("--faults", default=",".join(FAULTS), help="comma-separated, in order: " + ", ".join(FAULTS))
    parser.add_argument("--drain", type=float, default=60, help="seconds for the last messages to be echoed")
    parser.add_argument("--quick", action="store_true", help="20 visitors, 10 msgs/s, a fault every 6 s")
    parser.add_argument("--ordered", action="store_true",
                        help="the sink's destination is ordered (one post at a time, as Telegram and Slack)")
    args = parser.parse_args()
    args.faults = [f for f in args.faults.split(",") if f]
    unknown = set(args.faults) - set(FAULTS)
    if unknown:
        parser.error(f"unknown faults: {', '.join(sorted(unknown))}")
    if args.quick:
        args.visitors, args.rate, args.every, args.bot_visitors = 20, 10, 6, 4
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
