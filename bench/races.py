"""Races from several processes at once: the same resource, the same instant, many rounds.

    python bench/races.py [--rounds 30] [--procs 4] [--servers 2] [--only name,name]

A fresh migrated database, `--servers` real `parley serve` processes on 127.0.0.1 (their stderr
kept, to count tracebacks), and `--procs` client processes of their own. Each round the parent
arranges what the round needs over the API (and reads/writes the database as the superuser only
to set a limit or read back the outcome), hands every client process one action, the clients
prepare it (a socket opened and greeted), meet at a multiprocessing.Barrier and fire together;
the parent then checks the rule of the scenario (exactly one message, one owner left, never past
a limit, no 500). It prints one line per scenario:

    name rounds=… outcomes={status: count} violations=… (first violation)

and the number of tracebacks in the servers' logs. Timing figures are not its point: a loaded
machine only widens the windows.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import multiprocessing as mp
import os
import random
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
import asyncpg  # noqa: E402
from bench.chat_flow import drop_database, prepare_database  # noqa: E402
from bench.soak import free_port, start_server  # noqa: E402

ORIGIN = "https://races.example"
PASSWORD = "race-password-123"


# --------------------------------------------------------------------------- client processes


async def _http(session: aiohttp.ClientSession, base: str, a: dict) -> dict:
    headers = dict(a.get("headers") or {})
    if a.get("token"):
        headers["Authorization"] = f"Bearer {a['token']}"
    headers.setdefault("X-Forwarded-For", a.get("ip") or f"10.{random.randint(0, 255)}.{random.randint(0, 255)}.9")
    t0 = time.time()
    async with session.request(a["method"], base + a["path"], json=a.get("json"), headers=headers) as resp:
        text = await resp.text()
        try:
            body = json.loads(text) if text else None
        except ValueError:
            body = text
        return {"status": resp.status, "body": body, "t0": t0, "t1": time.time()}


async def _http_loop(session: aiohttp.ClientSession, base: str, a: dict) -> dict:
    """The same request again and again for `seconds` (a fresh client_id each time when the body has
    one): every answer with when it was sent and received."""
    calls = []
    deadline = time.monotonic() + a["seconds"]
    while time.monotonic() < deadline:
        body = dict(a["json"]) if a.get("json") else None
        if body and "client_id" in body:
            body["client_id"] = uuid.uuid4().hex
        calls.append(await _http(session, base, {**a, "json": body}))
    return {"calls": calls}


async def _ws_open(session: aiohttp.ClientSession, base: str, a: dict):
    ws = await session.ws_connect(base.replace("http", "ws", 1) + a["path"], headers={
        "Origin": ORIGIN, "X-Forwarded-For": a.get("ip") or "10.9.9.9"})
    await ws.send_str(json.dumps(a["hello"]))
    frames = []
    while True:
        frame = json.loads((await ws.receive(timeout=15)).data)
        frames.append(frame)
        if frame["type"] == "ready":
            return ws, frames


def _stops(frame: dict, until: dict) -> bool:
    if frame.get("type") not in until.get("types", ()):
        return False
    cid = until.get("client_id")
    if cid is None:
        return True
    got = frame.get("client_id") or (frame.get("message") or {}).get("client_id")
    return got == cid


async def _ws_fire(ws, a: dict) -> dict:
    for frame in a.get("send", ()):
        await ws.send_str(json.dumps(frame))
    frames: list[dict] = []
    deadline = time.monotonic() + a.get("timeout", 8)
    until = a.get("until") or {}
    try:
        while time.monotonic() < deadline:
            msg = await ws.receive(timeout=max(0.05, deadline - time.monotonic()))
            if msg.type != aiohttp.WSMsgType.TEXT:
                frames.append({"type": "closed", "code": ws.close_code})
                break
            frame = json.loads(msg.data)
            frames.append(frame)
            if _stops(frame, until):
                break
    except TimeoutError:
        frames.append({"type": "timeout"})
    await ws.close()
    return {"frames": frames}


async def _client_loop(conn, barrier) -> None:
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        while True:
            task = await loop.run_in_executor(None, conn.recv)
            if task is None:
                return
            base, a = task
            ws = None
            try:
                if a["op"] == "ws":
                    ws, _ = await _ws_open(session, base, a)
            except Exception as exc:  # reported to the parent as the outcome
                ws = exc
            await loop.run_in_executor(None, barrier.wait)
            try:
                if a["op"] == "noop":
                    out: dict = {}
                elif isinstance(ws, Exception):
                    out = {"error": repr(ws)}
                elif a["op"] == "ws":
                    out = await _ws_fire(ws, a)
                elif a["op"] == "http_loop":
                    out = await _http_loop(session, base, a)
                else:
                    out = await _http(session, base, a)
            except Exception as exc:
                out = {"error": repr(exc)}
            conn.send(out)


def client_main(conn, barrier) -> None:
    asyncio.run(_client_loop(conn, barrier))


# --------------------------------------------------------------------------- the parent


class Driver:
    def __init__(self, procs: int, bases: list[str], admin: asyncpg.Connection):
        self.bases = bases
        self.admin = admin
        ctx = mp.get_context("spawn")
        self.barrier = ctx.Barrier(procs)
        self.conns = []
        self.children = []
        for _ in range(procs):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=client_main, args=(child, self.barrier), daemon=True)
            proc.start()
            self.conns.append(parent)
            self.children.append(proc)
        self.http = aiohttp.ClientSession()

    async def close(self) -> None:
        for c in self.conns:
            c.send(None)
        for p in self.children:
            p.join(5)
        await self.http.close()

    async def fire(self, actions: list[dict]) -> list[dict]:
        """Every action in its own process, all released at the same instant; the outcomes in order."""
        assert len(actions) <= len(self.conns)
        padded = actions + [{"op": "noop"}] * (len(self.conns) - len(actions))
        for i, (c, a) in enumerate(zip(self.conns, padded, strict=True)):
            c.send((self.bases[i % len(self.bases)], a))
        loop = asyncio.get_running_loop()
        outs = [await loop.run_in_executor(None, c.recv) for c in self.conns]
        return outs[: len(actions)]

    async def call(self, method: str, path: str, json_body=None, token: str | None = None, headers=None):
        out = await _http(self.http, self.bases[0], {"method": method, "path": path, "json": json_body,
                                                     "token": token, "headers": headers})
        return out["status"], out["body"]

    async def sign_up(self, email: str | None = None) -> dict:
        slug = f"r-{uuid.uuid4().hex[:10]}"
        status, body = await self.call("POST", "/api/auth/signup", {
            "email": email or f"{slug}@races.example", "password": PASSWORD, "name": "Racer",
            "tenant_name": f"Races {slug}", "slug": slug})
        assert status == 201, (status, body)
        return body

    async def workspace(self, plan: str = "pro", agents: int = 1) -> dict:
        """An owner, `agents` more members (agent role), a chatbot; limits off unless a scenario sets them."""
        owner = await self.sign_up()
        tenant = uuid.UUID(owner["tenant"]["id"])
        await self.admin.execute("UPDATE parley.tenants SET plan = $1 WHERE id = $2", plan, tenant)
        await self.admin.execute(
            "INSERT INTO parley.tenant_limits (tenant_id, msgs_per_min_chatbot, msgs_per_min_ip, msgs_per_min_tenant,"
            " msgs_per_min_conversation, max_open_conversations_per_ip, conversations_per_min_chatbot)"
            " VALUES ($1, 0, 0, 0, 0, 0, 0) ON CONFLICT (tenant_id) DO NOTHING", tenant)
        status, bot = await self.call("POST", "/api/chatbots", {"name": "Racer bot", "allowed_origins": [ORIGIN]},
                                      owner["access_token"])
        assert status == 201, (status, bot)
        members = [owner]
        for _ in range(agents):
            members.append(await self.join(owner, "agent"))
        return {"tenant": tenant, "owner": owner, "token": owner["access_token"], "members": members,
                "chatbot": bot["id"], "key": bot["public_key"]}

    async def join(self, owner: dict, role: str) -> dict:
        person = await self.sign_up()
        status, invite = await self.call("POST", "/api/invites", {"email": person["user"]["email"], "role": role},
                                         owner["access_token"])
        assert status == 201, (status, invite)
        status, _ = await self.call("POST", "/api/invites/accept", {"token": invite["token"]}, person["access_token"])
        assert status == 200, status
        status, switched = await self.call("POST", "/api/auth/switch", {"tenant_id": owner["tenant"]["id"]},
                                           person["access_token"])
        assert status == 200, (status, switched)
        return {**person, "access_token": switched["access_token"]}

    async def visitor(self, ws_: dict, start: bool = True, visitor_id: str | None = None) -> dict:
        body = {"chatbot_key": ws_["key"], "start": start}
        if visitor_id:
            body["visitor_id"] = visitor_id
        status, out = await self.call("POST", "/api/widget/sessions", body, headers={"Origin": ORIGIN})
        assert status == 201, (status, out)
        return out


def hello(token: str) -> dict:
    return {"type": "hello", "token": token, "last_seen_id": 0}


def http(method: str, path: str, body=None, token: str | None = None, **extra) -> dict:
    return {"op": "http", "method": method, "path": path, "json": body, "token": token, **extra}


def visitor_ws(token: str, send: list[dict], until: dict, ip: str | None = None, timeout: float = 8) -> dict:
    return {"op": "ws", "path": "/ws/visitor", "hello": hello(token), "send": send, "until": until,
            "ip": ip, "timeout": timeout}


def status_of(out: dict):
    if "status" in out:
        return out["status"]
    if "error" in out:
        return "client_error"
    frames = out.get("frames", [])
    last = frames[-1] if frames else {}
    if last.get("type") == "error":
        return f"ws:{last.get('code')}"
    return f"ws:{last.get('type')}"


class Tally:
    def __init__(self, name: str):
        self.name = name
        self.rounds = 0
        self.outcomes: collections.Counter = collections.Counter()
        self.violations: list[str] = []

    def add(self, outs: list[dict]) -> None:
        self.rounds += 1
        for o in outs:
            self.outcomes[str(status_of(o))] += 1

    def bad(self, what: str) -> None:
        self.violations.append(what)

    def line(self) -> str:
        first = f" first: {self.violations[0]}" if self.violations else ""
        return (f"{self.name} rounds={self.rounds} outcomes={dict(sorted(self.outcomes.items()))} "
                f"violations={len(self.violations)}{first}")


# --------------------------------------------------------------------------- scenarios


async def takeover(d: Driver, rounds: int) -> Tally:
    """Two agents and the owner acting on one conversation at once: claim, assign, close, reopen, release.
    Rule: no 5xx; the conversation's state is what the last successful action left; one event per success."""
    t = Tally("takeover")
    w = await d.workspace(agents=2)
    a, b = w["members"][1], w["members"][2]
    for _ in range(rounds):
        v = await d.visitor(w)
        conv = v["conversation_id"]
        if random.random() < 0.3:
            await d.call("POST", f"/api/conversations/{conv}/close", None, w["token"])
        p = f"/api/conversations/{conv}"
        menu = [
            http("POST", p + "/claim", None, a["access_token"]),
            http("POST", p + "/claim", None, b["access_token"]),
            http("POST", p + "/assign", {"user_id": b["user"]["id"]}, a["access_token"]),
            http("POST", p + "/close", None, b["access_token"]),
            http("POST", p + "/reopen", None, a["access_token"]),
            http("POST", p + "/release", None, b["access_token"]),
            http("POST", p + "/reply", {"body": "mine", "client_id": uuid.uuid4().hex}, b["access_token"]),
        ]
        actions = random.sample(menu, k=min(len(d.conns), 3))
        outs = await d.fire(actions)
        t.add(outs)
        for o in outs:
            if o.get("status", 0) >= 500 or "error" in o:
                t.bad(f"{o}")
        ok = sum(1 for o, act in zip(outs, actions, strict=True) if o.get("status") in (200, 201)
                 and not act["path"].endswith("/reply"))
        events = await d.admin.fetchval(
            "SELECT count(*) FROM parley.events WHERE tenant_id = $1 AND conversation_id = $2"
            " AND kind IN ('claimed', 'assigned', 'closed', 'reopened', 'released') AND (data->>'implicit') IS NULL",
            w["tenant"], uuid.UUID(conv))
        before = 1 if await d.admin.fetchval(
            "SELECT count(*) FROM parley.events WHERE tenant_id = $1 AND conversation_id = $2 AND kind = 'closed'",
            w["tenant"], uuid.UUID(conv)) and ok == 0 else 0
        del before
        row = await d.admin.fetchrow("SELECT status, assignee_id FROM parley.conversations WHERE tenant_id = $1"
                                     " AND id = $2", w["tenant"], uuid.UUID(conv))
        if row["status"] == "human" and row["assignee_id"] is None:
            t.bad(f"human without assignee {conv}")
        if row["status"] in ("bot", "closed") and row["assignee_id"] is not None and row["status"] == "bot":
            t.bad(f"bot with assignee {conv}")
        del events
    return t


async def visitor_tabs(d: Driver, rounds: int) -> Tally:
    """The same visitor in two (or more) tabs: the same client_id from each socket (exactly one message),
    or different ones (one each)."""
    t = Tally("visitor_tabs")
    w = await d.workspace()
    await claim_all(d, w)
    for r in range(rounds):
        v = await d.visitor(w)
        await d.call("POST", f"/api/conversations/{v['conversation_id']}/claim", None, w["token"])
        same = r % 2 == 0
        n = min(len(d.conns), 4)
        cids = [uuid.uuid4().hex] * n if same else [uuid.uuid4().hex for _ in range(n)]
        outs = await d.fire([visitor_ws(v["token"], [{"type": "message", "client_id": c, "body": f"hello {c[:6]}"}],
                                        {"types": ("message", "error"), "client_id": c}) for c in cids])
        t.add(outs)
        stored = await d.admin.fetch("SELECT id, client_id FROM parley.messages WHERE tenant_id = $1 AND"
                                     " conversation_id = $2 AND author = 'visitor'", w["tenant"],
                                     uuid.UUID(v["conversation_id"]))
        want = 1 if same else n
        if len(stored) != want:
            t.bad(f"{'same' if same else 'different'} client_id x{n}: {len(stored)} stored")
        echoed = {(o.get("frames") or [{}])[-1].get("message", {}).get("id") for o in outs}
        if same and len(echoed) != 1:
            t.bad(f"same client_id echoed as {echoed}")
    return t


async def claim_all(d: Driver, w: dict) -> None:
    """A human has every conversation of this workspace: no bot turn in the way."""
    await d.admin.execute("UPDATE parley.chatbots SET config = config || '{\"handoff\": {\"miss_threshold\": 0}}'"
                          " WHERE tenant_id = $1", w["tenant"])


async def visitor_vs_close(d: Driver, rounds: int) -> Tally:
    """A visitor sends while an agent closes. Rule: the message is stored once or refused with a 4xx frame;
    if it was stored after the close, the conversation was reopened (event) and is not closed."""
    t = Tally("visitor_vs_close")
    w = await d.workspace()
    for _ in range(rounds):
        v = await d.visitor(w)
        conv = uuid.UUID(v["conversation_id"])
        await d.call("POST", f"/api/conversations/{conv}/claim", None, w["token"])
        cid = uuid.uuid4().hex
        outs = await d.fire([
            visitor_ws(v["token"], [{"type": "message", "client_id": cid, "body": "wait, one more thing"}],
                       {"types": ("message", "error"), "client_id": cid}),
            http("POST", f"/api/conversations/{conv}/close", None, w["token"]),
        ])
        t.add(outs)
        if outs[1].get("status") != 200:
            t.bad(f"close {outs[1]}")
        rows = await d.admin.fetch("SELECT m.id, m.created_at FROM parley.messages m WHERE m.tenant_id = $1 AND"
                                   " m.conversation_id = $2 AND m.client_id = $3", w["tenant"], conv, cid)
        if len(rows) != 1:
            t.bad(f"{len(rows)} stored")
            continue
        kinds = [r["kind"] for r in await d.admin.fetch(
            "SELECT kind FROM parley.events WHERE tenant_id = $1 AND conversation_id = $2 ORDER BY id",
            w["tenant"], conv)]
        status = await d.admin.fetchval("SELECT status FROM parley.conversations WHERE tenant_id = $1 AND id = $2",
                                        w["tenant"], conv)
        last_closed = max((i for i, k in enumerate(kinds) if k == "closed"), default=-1)
        msg_at = max(i for i, k in enumerate(kinds) if k == "message_added")
        if msg_at > last_closed and status == "closed":
            t.bad(f"message after close but closed: {kinds}")
        if last_closed > msg_at and status != "closed":
            t.bad(f"closed last but {status}: {kinds}")
    return t


async def first_message_tabs(d: Driver, rounds: int) -> Tally:
    """A visitor without a conversation yet, in two tabs (or a resend on a new socket racing the
    original): the first message with the same client_id from each. Rule: exactly one message,
    so one conversation; with different client_ids, one message each."""
    t = Tally("first_message_tabs")
    w = await d.workspace()
    await claim_all(d, w)
    for r in range(rounds):
        vid = str(uuid.uuid4())
        v = await d.visitor(w, start=False, visitor_id=vid)
        same = r % 2 == 0
        n = min(len(d.conns), 3)
        cids = [uuid.uuid4().hex] * n if same else [uuid.uuid4().hex for _ in range(n)]
        outs = await d.fire([visitor_ws(v["token"], [{"type": "message", "client_id": c, "body": "first words"}],
                                        {"types": ("message", "error"), "client_id": c}) for c in cids])
        t.add(outs)
        stored = await d.admin.fetchval(
            "SELECT count(*) FROM parley.messages m JOIN parley.conversations c ON c.tenant_id = m.tenant_id"
            " AND c.id = m.conversation_id WHERE c.tenant_id = $1 AND c.visitor_id = $2 AND m.author = 'visitor'",
            w["tenant"], uuid.UUID(vid))
        want = 1 if same else n
        if stored != want:
            t.bad(f"{'same' if same else 'different'} client_id x{n}: {stored} messages stored")
    return t


async def bot_vs_takeover(d: Driver, rounds: int) -> Tally:
    """A visitor's question (or "talk to a human") while an agent takes the conversation over.
    Rule: nothing from the bot (reply or notice) after the human's claim; no server traceback."""
    t = Tally("bot_vs_takeover")
    w = await d.workspace()
    for r in range(rounds):
        v = await d.visitor(w)
        conv = uuid.UUID(v["conversation_id"])
        cid = uuid.uuid4().hex
        body = "talk to a human" if r % 2 else "what are your opening hours?"
        outs = await d.fire([
            visitor_ws(v["token"], [{"type": "message", "client_id": cid, "body": body}],
                       {"types": ("status", "error")}, timeout=3),
            http("POST", f"/api/conversations/{conv}/claim", None, w["token"]),
        ])
        t.add(outs)
        rows = []
        for _ in range(40):  # the bot's turn runs after the visitor's message: let it finish
            rows = await d.admin.fetch(
                "SELECT e.kind, m.author, m.body FROM parley.events e LEFT JOIN parley.messages m ON"
                " m.tenant_id = e.tenant_id AND m.conversation_id = e.conversation_id AND m.id = e.message_id"
                " WHERE e.tenant_id = $1 AND e.conversation_id = $2 ORDER BY e.id", w["tenant"], conv)
            if any(x["author"] in ("bot", "system") for x in rows) or len(rows) >= 4:
                break
            await asyncio.sleep(0.05)
        claimed = next((i for i, x in enumerate(rows) if x["kind"] == "claimed"), None)
        if claimed is not None:
            after = [x for x in rows[claimed:] if x["author"] in ("bot", "system")]
            if after:
                t.bad(f"{body!r}: after the claim the bot said {[x['body'][:40] for x in after]}")
    return t


async def csat_and_lead(d: Driver, rounds: int) -> Tally:
    """The same conversation rated from several tabs at once, and its lead form sent from several tabs.
    Rule: one rating row, one lead row, every tab answered (no error frame)."""
    t = Tally("csat_and_lead")
    w = await d.workspace()
    for r in range(rounds):
        v = await d.visitor(w)
        conv = uuid.UUID(v["conversation_id"])
        n = min(len(d.conns), 4)
        if r % 2 == 0:
            actions = [visitor_ws(v["token"], [{"type": "rating", "score": 1 + i, "comment": f"tab {i}"}],
                                  {"types": ("rating_saved", "error")}) for i in range(n)]
        else:
            actions = [visitor_ws(v["token"], [{"type": "lead", "name": f"Tab {i}", "email": f"t{i}@races.example"}],
                                  {"types": ("error",)}, timeout=1.0) for i in range(n)]
        outs = await d.fire(actions)
        t.add(outs)
        for o in outs:
            if any(f.get("type") == "error" for f in o.get("frames", [])):
                t.bad(f"error frame {[f for f in o['frames'] if f.get('type') == 'error']}")
        table = "conversation_ratings" if r % 2 == 0 else "leads"
        count = await d.admin.fetchval(f"SELECT count(*) FROM parley.{table} WHERE tenant_id = $1"
                                       " AND conversation_id = $2", w["tenant"], conv)
        if count != 1:
            t.bad(f"{count} {table} rows")
    return t


async def invites(d: Driver, rounds: int) -> Tally:
    """One invite accepted by its person from several processes at once. Rule: one 200, the rest 409/410;
    one membership."""
    t = Tally("invites")
    w = await d.workspace(agents=0)
    for _ in range(rounds):
        person = await d.sign_up()
        status, invite = await d.call("POST", "/api/invites", {"email": person["user"]["email"], "role": "agent"},
                                      w["token"])
        if status == 402:  # seats used up: a new workspace
            w = await d.workspace(agents=0)
            status, invite = await d.call("POST", "/api/invites", {"email": person["user"]["email"],
                                                                   "role": "agent"}, w["token"])
        n = min(len(d.conns), 4)
        outs = await d.fire([http("POST", "/api/invites/accept", {"token": invite["token"]},
                                  person["access_token"]) for _ in range(n)])
        t.add(outs)
        ok = [o for o in outs if o.get("status") == 200]
        if len(ok) != 1 or any(o.get("status", 500) >= 500 for o in outs):
            t.bad(f"accept x{n}: {[status_of(o) for o in outs]}")
        members = await d.admin.fetchval("SELECT count(*) FROM parley.members WHERE tenant_id = $1 AND user_id = $2",
                                         w["tenant"], uuid.UUID(person["user"]["id"]))
        if members != 1:
            t.bad(f"{members} memberships")
    return t


async def owners(d: Driver, rounds: int) -> Tally:
    """Two owners demoting (or removing) each other at once. Rule: the workspace keeps an owner; 4xx, never 5xx."""
    t = Tally("owners")
    for r in range(rounds):
        w = await d.workspace(agents=0)
        a = w["owner"]
        b = await d.join(a, "owner") if False else await d.join(a, "admin")
        await d.call("PATCH", f"/api/members/{b['user']['id']}", {"role": "owner"}, a["access_token"])
        if r % 2 == 0:
            acts = [http("PATCH", f"/api/members/{b['user']['id']}", {"role": "agent"}, a["access_token"]),
                    http("PATCH", f"/api/members/{a['user']['id']}", {"role": "agent"}, b["access_token"])]
        else:
            acts = [http("DELETE", f"/api/members/{b['user']['id']}", None, a["access_token"]),
                    http("DELETE", f"/api/members/{a['user']['id']}", None, b["access_token"])]
        outs = await d.fire(acts)
        t.add(outs)
        left = await d.admin.fetchval("SELECT count(*) FROM parley.members WHERE tenant_id = $1 AND role = 'owner'",
                                      w["tenant"])
        if left < 1 or any(o.get("status", 500) >= 500 for o in outs):
            t.bad(f"owners left {left}: {[status_of(o) for o in outs]}")
    return t


async def signups(d: Driver, rounds: int) -> Tally:
    """The same email signed up from several processes at once. Rule: one 201, the rest 409; one person."""
    t = Tally("signups")
    n = len(d.conns)
    for _ in range(rounds):
        email = f"same-{uuid.uuid4().hex[:10]}@races.example"
        outs = await d.fire([http("POST", "/api/auth/signup", {
            "email": email, "password": PASSWORD, "name": "Twin", "tenant_name": f"Twin {i}",
            "slug": f"twin-{uuid.uuid4().hex[:10]}"}) for i in range(n)])
        t.add(outs)
        people = await d.admin.fetchval("SELECT count(*) FROM parley.users WHERE lower(email) = $1", email)
        tenants = await d.admin.fetchval(
            "SELECT count(*) FROM parley.members m JOIN parley.users u ON u.id = m.user_id WHERE lower(u.email) = $1",
            email)
        if people != 1 or tenants != 1 or sum(o.get("status") == 201 for o in outs) != 1 \
                or any(o.get("status", 500) >= 500 for o in outs):
            t.bad(f"people={people} workspaces={tenants} {[status_of(o) for o in outs]}")
    return t


async def refresh(d: Driver, rounds: int) -> Tally:
    """One refresh token presented by several processes at once (parallel tabs, or a thief racing
    the owner). Rule: one successor at most (all winners hold the same pair), and a later reuse of
    the old token ends the family."""
    t = Tally("refresh")
    n = len(d.conns)
    for _ in range(rounds):
        person = await d.sign_up()
        outs = await d.fire([http("POST", "/api/auth/refresh", {"refresh_token": person["refresh_token"]})
                             for _ in range(n)])
        t.add(outs)
        fresh = {o["body"]["refresh_token"] for o in outs if o.get("status") == 200}
        if len(fresh) > 1 or any(o.get("status", 500) >= 500 for o in outs):
            t.bad(f"{len(fresh)} different successors {[status_of(o) for o in outs]}")
        live = await d.admin.fetchval(
            "SELECT count(*) FROM parley.refresh_tokens WHERE user_id = $1 AND revoked_at IS NULL"
            " AND used_at IS NULL", uuid.UUID(person["user"]["id"]))
        if live != 1:
            t.bad(f"{live} live refresh tokens")
    return t


async def api_key_revoke(d: Driver, rounds: int) -> Tally:
    """An API key revoked while requests with it keep coming from other processes. Rule: no request
    sent after the revocation was answered succeeds (requests in flight at that moment may); no 5xx."""
    t = Tally("api_key_revoke")
    w = await d.workspace(agents=0)
    in_flight = 0
    for _ in range(rounds):
        status, key = await d.call("POST", "/api/keys", {"name": "racing", "scopes": ["read", "write"]}, w["token"])
        assert status == 201, (status, key)
        v = await d.visitor(w)
        n = len(d.conns) - 1
        acts = [{**http("POST", f"/api/conversations/{v['conversation_id']}/notes",
                        {"body": f"note {i}", "client_id": "x"}, key["key"]), "op": "http_loop", "seconds": 0.4}
                for i in range(n)]
        acts.append(http("DELETE", f"/api/keys/{key['id']}", None, w["token"]))
        outs = await d.fire(acts)
        revoked = outs[-1]
        t.add([revoked] + [c for o in outs[:-1] for c in o.get("calls", [])])
        if revoked.get("status") != 200:
            t.bad(f"revoke {status_of(revoked)}")
            continue
        for o in outs[:-1]:
            for c in o.get("calls", []):
                if c.get("status", 500) >= 500:
                    t.bad(f"{status_of(c)}")
                elif c["status"] == 201 and c["t0"] > revoked["t1"]:
                    t.bad(f"a note sent {c['t0'] - revoked['t1']:.3f} s after the revocation's answer was stored")
                elif c["status"] == 201 and c["t1"] > revoked["t0"]:
                    in_flight += 1
    print(f"    api_key_revoke: {in_flight} requests in flight across a revocation succeeded", flush=True)
    return t


async def chatbot_delete(d: Driver, rounds: int) -> Tally:
    """A chatbot deleted while its visitors chat, some of them starting. Rule: no 5xx; no conversation
    begins after the deletion was answered (conversations already open go on: a soft delete)."""
    t = Tally("chatbot_delete")
    for _ in range(max(1, rounds // 2)):
        w = await d.workspace(agents=0)
        n = len(d.conns) - 1
        visitors = [await d.visitor(w, start=i % 2 == 0) for i in range(n)]
        acts = [visitor_ws(v["token"], [{"type": "message", "client_id": uuid.uuid4().hex, "body": f"hi {i}"}],
                           {"types": ("message", "error", "closed")}, timeout=3) for i, v in enumerate(visitors)]
        acts.append(http("DELETE", f"/api/chatbots/{w['chatbot']}", None, w["token"]))
        outs = await d.fire(acts)
        t.add(outs)
        if outs[-1].get("status") != 204:
            t.bad(f"delete {outs[-1]}")
        late = await d.admin.fetchval(
            "SELECT count(*) FROM parley.conversations c JOIN parley.chatbots b ON b.tenant_id = c.tenant_id"
            " AND b.id = c.chatbot_id WHERE b.tenant_id = $1 AND b.id = $2 AND c.created_at > to_timestamp($3)",
            w["tenant"], uuid.UUID(w["chatbot"]), outs[-1].get("t1", 0))
        if late:
            t.bad(f"{late} conversations started after the chatbot's deletion")
    return t


async def conversation_quota(d: Driver, rounds: int) -> Tally:
    """Free plan, one conversation left in the month's allowance (or one open conversation left under
    max_open_conversations): visitors in several processes start at once. Rule: never past the limit."""
    t = Tally("conversation_quota")
    n = len(d.conns)
    for r in range(rounds):
        w = await d.workspace(plan="free", agents=0)
        allowance = r % 2 == 0
        if allowance:
            await d.admin.execute(
                "UPDATE parley.tenant_limits SET max_open_conversations = 0, included_conversations = 5"
                " WHERE tenant_id = $1", w["tenant"])
            await d.admin.execute(
                "INSERT INTO parley.usage_counters (tenant_id, day, metric, shard, value)"
                " VALUES ($1, (now() AT TIME ZONE 'UTC')::date, 'conversations', 15, 4)", w["tenant"])
            limit = 5
        else:
            await d.admin.execute("UPDATE parley.tenant_limits SET max_open_conversations = 1 WHERE tenant_id = $1",
                                  w["tenant"])
            limit = 1
        sessions = [await d.visitor(w, start=False) for _ in range(n)]
        outs = await d.fire([visitor_ws(s["token"], [{"type": "message", "client_id": uuid.uuid4().hex,
                                                      "body": "hello"}],
                                        {"types": ("message", "error", "lead_request")}, ip=f"10.1.{r}.{i}")
                             for i, s in enumerate(sessions)])
        t.add(outs)
        if allowance:
            used = await d.admin.fetchval(
                "SELECT sum(value) FROM parley.usage_counters WHERE tenant_id = $1 AND metric = 'conversations'",
                w["tenant"])
            if used > limit:
                t.bad(f"allowance {limit}: {used} conversations counted")
        else:
            open_ = await d.admin.fetchval("SELECT count(*) FROM parley.conversations WHERE tenant_id = $1"
                                           " AND status <> 'closed'", w["tenant"])
            if open_ > limit:
                t.bad(f"max open {limit}: {open_} open")
    return t


async def ai_quota(d: Driver, rounds: int) -> Tally:
    """One AI reply left today (ai_msgs_per_day): visitors of several conversations ask at once.
    Rule: never more bot replies than the allowance."""
    t = Tally("ai_quota")
    n = len(d.conns)
    for _r in range(rounds):
        w = await d.workspace(plan="pro", agents=0)
        await d.admin.execute("UPDATE parley.tenant_limits SET ai_msgs_per_day = 3 WHERE tenant_id = $1", w["tenant"])
        await d.admin.execute(
            "INSERT INTO parley.usage_counters (tenant_id, day, metric, shard, value)"
            " VALUES ($1, (now() AT TIME ZONE 'UTC')::date, 'ai_messages', 15, 2)", w["tenant"])
        sessions = [await d.visitor(w) for _ in range(n)]
        outs = await d.fire([visitor_ws(s["token"], [{"type": "message", "client_id": uuid.uuid4().hex,
                                                      "body": "what are your prices?"}],
                                        {"types": ("never",)}, timeout=2.5) for s in sessions])
        t.add(outs)
        used = await d.admin.fetchval(
            "SELECT sum(value) FROM parley.usage_counters WHERE tenant_id = $1 AND metric = 'ai_messages'", w["tenant"])
        bots = await d.admin.fetchval("SELECT count(*) FROM parley.messages WHERE tenant_id = $1 AND author = 'bot'",
                                      w["tenant"])
        if used > 3 or bots > 1:
            t.bad(f"ai_msgs_per_day 3 with 2 used: {bots} bot replies, {used} counted")
    return t


async def seats(d: Driver, rounds: int) -> Tally:
    """Free plan (3 seats), 2 used: different people accept their invites at once. Rule: never more than 3."""
    t = Tally("seats")
    for _ in range(rounds):
        w = await d.workspace(plan="free", agents=1)
        people = [await d.sign_up() for _ in range(min(len(d.conns), 3))]
        invites = []
        for person in people:
            status, invite = await d.call("POST", "/api/invites", {"email": person["user"]["email"],
                                                                   "role": "agent"}, w["token"])
            assert status == 201, (status, invite)
            invites.append(invite)
        outs = await d.fire([http("POST", "/api/invites/accept", {"token": i["token"]}, p["access_token"])
                             for i, p in zip(invites, people, strict=True)])
        t.add(outs)
        members = await d.admin.fetchval("SELECT count(*) FROM parley.members WHERE tenant_id = $1", w["tenant"])
        if members > 3 or any(o.get("status", 500) >= 500 for o in outs):
            t.bad(f"{members} members of 3 seats {[status_of(o) for o in outs]}")
    return t


async def rate_edge(d: Driver, rounds: int) -> Tally:
    """Visitors of one chatbot in several processes send at once with one message left of
    msgs_per_min_chatbot. Figure: how many pass the limit (the rate counters are sharded by backend
    and documented to overshoot by up to the concurrent writers - 1, sql/42_limits.sql)."""
    t = Tally("rate_edge")
    n = len(d.conns)
    over = 0
    for r in range(rounds):
        w = await d.workspace(plan="pro", agents=0)
        sessions = [await d.visitor(w) for _ in range(n)]
        await d.admin.execute("UPDATE parley.tenant_limits SET msgs_per_min_chatbot = 5 WHERE tenant_id = $1",
                              w["tenant"])
        await d.admin.execute(
            "INSERT INTO parley.rate_counters (tenant_id, scope, key, window_start, shard, hits)"
            " VALUES ($1, 'chatbot', $2, parley.rate_bucket(now()), 7, 4)", w["tenant"], w["chatbot"])
        outs = await d.fire([visitor_ws(s["token"], [{"type": "message", "client_id": uuid.uuid4().hex,
                                                      "body": "hello"}],
                                        {"types": ("message", "error"), "client_id": None}, ip=f"10.2.{r}.{i}")
                             for i, s in enumerate(sessions)])
        t.add(outs)
        stored = await d.admin.fetchval("SELECT count(*) FROM parley.messages WHERE tenant_id = $1"
                                        " AND author = 'visitor'", w["tenant"])
        over += max(0, stored - 1)  # a figure, not a violation: the documented bound of the sharded windows
    print(f"    rate_edge: {over} messages past the limit in {rounds} rounds of {n} at once", flush=True)
    return t


async def counted_caps(d: Driver, rounds: int) -> Tally:
    """Counted caps with one left, several creates at once: alert channels per chatbot (10), custom
    domains per workspace (5), open conversations per address (max_open_conversations_per_ip).
    Rule: never past the cap; the others refused 409/429."""
    t = Tally("counted_caps")
    n = len(d.conns)
    for r in range(rounds):
        w = await d.workspace(plan="white_label", agents=0)
        kind = ("alerts", "domains", "per_ip")[r % 3]
        if kind == "alerts":
            await d.admin.execute(
                "INSERT INTO parley.outbox_destinations (tenant_id, kind, name, target, event_kinds, chatbot_id)"
                " SELECT $1, 'email', 'a' || g, 'a' || g || '@races.example', '{lead_captured}', $2"
                " FROM generate_series(1, 9) g", w["tenant"], uuid.UUID(w["chatbot"]))
            acts = [http("POST", f"/api/chatbots/{w['chatbot']}/alerts", {"kind": "email", "name": f"Desk {i}",
                         "email": f"desk{i}@races.example", "events": ["lead_captured"]}, w["token"])
                    for i in range(n)]
            cap, count = 10, ("SELECT count(*) FROM parley.outbox_destinations WHERE tenant_id = $1"
                              " AND kind = 'email'")
        elif kind == "domains":
            await d.admin.execute(
                "INSERT INTO parley.custom_domains (tenant_id, hostname, token) SELECT $1, 'd' || g ||"
                " '.races-parley.com', md5(g::text) FROM generate_series(1, 4) g", w["tenant"])
            acts = [http("POST", "/api/domains", {"hostname": f"chat{i}.races-parley.com"}, w["token"])
                    for i in range(n)]
            cap, count = 5, "SELECT count(*) FROM parley.custom_domains WHERE tenant_id = $1"
        else:
            await d.admin.execute("UPDATE parley.tenant_limits SET max_open_conversations_per_ip = 2"
                                  " WHERE tenant_id = $1", w["tenant"])
            ip = f"10.3.{r % 250}.7"
            await d.call("POST", "/api/widget/sessions", {"chatbot_key": w["key"], "start": True},
                         headers={"Origin": ORIGIN, "X-Forwarded-For": ip})
            sessions = [await d.visitor(w, start=False) for _ in range(n)]
            acts = [visitor_ws(s["token"], [{"type": "message", "client_id": uuid.uuid4().hex, "body": "hi"}],
                               {"types": ("message", "error")}, ip=ip) for s in sessions]
            cap, count = 2, "SELECT count(*) FROM parley.conversations WHERE tenant_id = $1 AND status <> 'closed'"
        outs = await d.fire(acts)
        t.add(outs)
        got = await d.admin.fetchval(count, w["tenant"])
        if os.environ.get("RACES_DEBUG"):
            print(kind, [o.get("body") for o in outs][:1], flush=True)
        if got > cap or any(o.get("status", 0) >= 500 for o in outs):
            t.bad(f"{kind}: {got} of {cap} {[status_of(o) for o in outs]}")
    return t


async def logout_vs_refresh(d: Driver, rounds: int) -> Tally:
    """Signing out while another tab refreshes the same session. Rule: the session is over: no live
    refresh token left in it, and a token the refresh handed out meanwhile is refused."""
    t = Tally("logout_vs_refresh")
    for r in range(rounds):
        person = await d.sign_up()
        outs = await d.fire([
            http("POST", "/api/auth/logout", {"everywhere": r % 2 == 1}, person["access_token"]),
            http("POST", "/api/auth/refresh", {"refresh_token": person["refresh_token"]}),
        ])
        t.add(outs)
        live = await d.admin.fetchval("SELECT count(*) FROM parley.refresh_tokens WHERE user_id = $1"
                                      " AND revoked_at IS NULL", uuid.UUID(person["user"]["id"]))
        fresh = outs[1].get("body") or {}
        again = None
        if outs[1].get("status") == 200:
            again, _ = await d.call("POST", "/api/auth/refresh", {"refresh_token": fresh["refresh_token"]})
        if live or again == 200 or any(o.get("status", 500) >= 500 for o in outs):
            t.bad(f"after sign-out: {live} live refresh tokens, its successor answered {again}"
                  f" {[status_of(o) for o in outs]}")
    return t


async def run(args) -> None:
    settings, maint, name = prepare_database()
    logs = []
    servers = []
    admin = await asyncpg.connect(settings.admin_url)
    try:
        bases = []
        for _ in range(args.servers):
            port = free_port()
            with tempfile.NamedTemporaryFile("w+", prefix="races-serve-", suffix=".log", delete=False) as log:
                logs.append(log.name)
                servers.append(await start_server(settings, port, log))
            bases.append(f"http://127.0.0.1:{port}")
        driver = Driver(args.procs, bases, admin)
        try:
            only = set(args.only.split(",")) if args.only else None
            for scenario in SCENARIOS:
                if only and scenario.__name__ not in only:
                    continue
                started = time.monotonic()
                tally = await scenario(driver, args.rounds)
                print(f"{tally.line()} ({time.monotonic() - started:.1f} s)", flush=True)
                for v in tally.violations[1:5]:
                    print(f"    also: {v}", flush=True)
        finally:
            await driver.close()
    finally:
        await admin.close()
        for proc in servers:
            proc.terminate()
            proc.wait(10)
        await drop_database(maint, name)
    tracebacks = 0
    for path in logs:
        text = Path(path).read_text(errors="replace")
        tracebacks += text.count("Traceback")
        if "Traceback" in text and args.show_logs:
            print(text[-6000:])
        if not args.keep_logs:
            os.unlink(path)
    print(f"server tracebacks={tracebacks} servers={args.servers} procs={args.procs}"
          + (f" logs={logs}" if args.keep_logs else ""))


SCENARIOS = [takeover, visitor_tabs, visitor_vs_close, first_message_tabs, bot_vs_takeover, csat_and_lead, invites,
             owners, signups, refresh, api_key_revoke, chatbot_delete, conversation_quota, ai_quota,
             seats, rate_edge, counted_caps, logout_vs_refresh]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--procs", type=int, default=4)
    parser.add_argument("--servers", type=int, default=2)
    parser.add_argument("--only", default="")
    parser.add_argument("--keep-logs", action="store_true")
    parser.add_argument("--show-logs", action="store_true")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
