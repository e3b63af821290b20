"""The relay: one LISTEN connection per process, routing stored events to the sockets that care.

NOTIFY only wakes the relay (payload `<tenant_id>:<event_id>:<conversation_id>`); the events
table is the truth. For each tenant with connected sockets the relay keeps a feed: it reads
new events with `parley.events_after` once per process (one `service` transaction per batch,
not per socket), builds each frame once, and hands it to the sinks (visitor sockets by
conversation, agent sockets and SSE streams by tenant). A transaction may write several events
but NOTIFYs once, so a feed always reads everything after its cursor. events_after never
returns an id while a smaller one can still commit (its barrier on the tenant's event lock,
sql/41_conversations.sql), so after the LISTEN connection comes back every feed re-reads from
its cursor and recovers exactly what was notified while nobody listened; ids already delivered
are dropped anyway, defensively. The barrier lasts only while the read waits for the writers
ahead of it and notes its horizon; reads are one statement each (db.tenant_fetch).

Ephemeral facts (typing, read receipts) are not stored: they go to local sinks directly and to
other instances as signals on the `parley_signals` channel (ids and small integers only).
Bot streaming chunks never go through NOTIFY: `Relay.broadcast_local` reaches the visitor and
the agents connected to *this* instance; agents on other instances see only the final message.
"""
from __future__ import annotations

import asyncio
import logging
import random
import secrets
import time
import uuid
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Protocol

import asyncpg
from aiohttp import web

from pyapp.api import POOL, SETTINGS, json_dumps
from pyapp.db import Actor, tenant_fetch, tenant_tx
from pyapp.errors import from_postgres

log = logging.getLogger("parley.realtime")

CHANNEL = "parley_events"
SIGNAL_CHANNEL = "parley_signals"
RELAY_APP_NAME = "parley-relay"
BATCH = 500  # events read per service transaction
MAX_QUEUE = 2000  # frames waiting for one slow client before it is dropped (it resumes by id)


# --------------------------------------------------------------------------- sources


@dataclass(frozen=True)
class Notice:
    """A NOTIFY payload: an event was committed for this tenant (and conversation)."""

    tenant_id: uuid.UUID
    event_id: int
    conversation_id: uuid.UUID | None


def parse_notice(payload: str) -> Notice | None:
    try:
        tenant, event_id, conv = payload.split(":", 2)
        return Notice(uuid.UUID(tenant), int(event_id), uuid.UUID(conv) if conv else None)
    except (ValueError, AttributeError):
        return None


@dataclass(frozen=True)
class Signal:
    """An ephemeral fact shared between instances: typing on/off, read up to a message id."""

    kind: str  # typing | read
    tenant_id: uuid.UUID
    conversation_id: uuid.UUID
    author: str  # visitor | agent | bot
    value: int  # typing: 1/0; read: message id
    origin: str  # instance that published it (it has already delivered locally)

    def payload(self) -> str:
        return f"{self.kind}:{self.tenant_id}:{self.conversation_id}:{self.author}:{self.value}:{self.origin}"

    @classmethod
    def parse(cls, payload: str) -> "Signal | None":
        try:
            kind, tenant, conv, author, value, origin = payload.split(":")
            if kind not in ("typing", "read") or author not in ("visitor", "agent", "bot"):
                return None
            return cls(kind, uuid.UUID(tenant), uuid.UUID(conv), author, int(value), origin)
        except (ValueError, AttributeError):
            return None


class EventSource(Protocol):
    """Where the relay learns that events were stored (NOTIFY today; logical decoding could replace it).

    `on_notice` is called for every committed event it hears of; `on_gap(outage_seconds)` whenever
    notices may have been lost (after a (re)connect), so the relay re-reads from the table.
    """

    def subscribe(self, on_notice: Callable[[Notice], None], on_gap: Callable[[float], None]) -> None: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class SignalBus(Protocol):
    """Best-effort fan-out of ephemeral signals to the other instances."""

    def subscribe_signals(self, on_signal: Callable[[Signal], None]) -> None: ...

    async def publish(self, signal: Signal) -> None: ...


class PgNotifySource:
    """LISTEN on one dedicated connection (outside the pool) with heartbeat and reconnect.

    Implements both EventSource (channel parley_events) and SignalBus (channel parley_signals).
    """

    def __init__(self, dsn: str, pool: asyncpg.Pool | None = None, *, heartbeat: float = 10.0,
                 min_backoff: float = 0.1, max_backoff: float = 5.0) -> None:
        self.dsn = dsn
        self.pool = pool
        self.heartbeat = heartbeat
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self.connected = asyncio.Event()
        self.disconnected = asyncio.Event()  # set while down (after a first connection was lost)
        self.connects = 0
        self.backend_pid: int | None = None
        self._on_notice: list[Callable[[Notice], None]] = []
        self._on_gap: list[Callable[[], None]] = []
        self._on_signal: list[Callable[[Signal], None]] = []
        self._task: asyncio.Task | None = None
        self._conn: asyncpg.Connection | None = None
        self._stopping = False
        self._lost_at: float | None = None

    def subscribe(self, on_notice, on_gap) -> None:
        self._on_notice.append(on_notice)
        self._on_gap.append(on_gap)

    def subscribe_signals(self, on_signal) -> None:
        self._on_signal.append(on_signal)

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="parley-relay-listen")

    async def stop(self) -> None:
        self._stopping = True
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
        if self._conn is not None and not self._conn.is_closed():
            self._conn.terminate()

    async def publish(self, signal: Signal) -> None:
        if self.pool is None:
            return
        try:
            await self.pool.execute("SELECT pg_notify($1, $2)", SIGNAL_CHANNEL, signal.payload())
        except (asyncpg.PostgresError, OSError, asyncio.TimeoutError) as exc:
            log.warning("signal not published: %s", type(exc).__name__)

    def _notice(self, conn, pid, channel, payload) -> None:
        if channel == CHANNEL:
            notice = parse_notice(payload)
            if notice is None:
                log.warning("ignored malformed notification %r", payload[:200])
                return
            for cb in self._on_notice:
                cb(notice)
        elif channel == SIGNAL_CHANNEL:
            sig = Signal.parse(payload)
            if sig is not None:
                for cb in self._on_signal:
                    cb(sig)

    async def _run(self) -> None:
        backoff = self.min_backoff
        loop = asyncio.get_running_loop()
        while not self._stopping:
            lost = loop.create_future()
            started = time.monotonic()
            try:
                conn = await asyncpg.connect(self.dsn, timeout=10,
                                             server_settings={"application_name": RELAY_APP_NAME})
                self._conn = conn
                conn.add_termination_listener(lambda _c: lost.done() or lost.set_result(None))
                await conn.add_listener(CHANNEL, self._notice)
                await conn.add_listener(SIGNAL_CHANNEL, self._notice)
                self.backend_pid = conn.get_server_pid()
                self.connects += 1
                self.disconnected.clear()
                self.connected.set()
                log.info("relay listening (connect #%d, pid %s)", self.connects, self.backend_pid)
                outage = time.monotonic() - self._lost_at if self._lost_at is not None else 0.0
                for cb in self._on_gap:
                    cb(outage)
                while True:
                    done, _ = await asyncio.wait([lost], timeout=self.heartbeat)
                    if done:
                        raise ConnectionError("listen connection closed")
                    await conn.fetchval("SELECT 1", timeout=max(1.0, self.heartbeat / 2))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any failure: drop the connection and reconnect
                if not self._stopping:
                    log.warning("relay connection lost: %s: %s", type(exc).__name__, exc)
            finally:
                if self.connected.is_set():
                    self._lost_at = time.monotonic()
                    self.disconnected.set()
                self.connected.clear()
                conn_, self._conn = self._conn, None
                if conn_ is not None and not conn_.is_closed():
                    conn_.terminate()
            if self._stopping:
                return
            if time.monotonic() - started > 30:
                backoff = self.min_backoff
            await asyncio.sleep(backoff * (0.5 + random.random()))
            backoff = min(self.max_backoff, backoff * 2)


# --------------------------------------------------------------------------- events -> frames


async def read_events(pool: asyncpg.Pool, actor: Actor, after: int, *, retries: int = 0) -> list[asyncpg.Record]:
    """parley.events_after in one statement (one round trip; its barrier ends before the read).

    While a writer keeps its transaction open, events_after gives up after 250 ms
    (LockNotAvailableError); `retries` more attempts are made 0.25 s apart before it propagates.
    """
    for attempt in range(retries + 1):
        try:
            return await tenant_fetch(pool, actor, "SELECT * FROM parley.events_after($1, $2)", after, BATCH)
        except asyncpg.LockNotAvailableError:
            if attempt == retries:
                raise
            await asyncio.sleep(0.25)
    raise AssertionError("unreachable")


def event_json(row: Any) -> dict:
    """One row of parley.events_after as the agent protocol shows it (None fields left out)."""
    rec = dict(row)
    out = {"id": rec.get("id"), "kind": rec.get("kind"), "conversation_id": rec.get("conversation_id")}
    for key in ("at", "message_id", "actor_kind", "actor_id", "data", "message", "conversation"):
        if rec.get(key) is not None:
            out[key] = rec[key]
    return out


# Status a visitor sees after each kind of event (events_after's `conversation` is the
# conversation's *current* summary, so the kind, not the summary, says what happened then).
_STATUS_BY_KIND = {"human_requested": "waiting_human", "claimed": "human", "assigned": "human",
                   "released": "bot", "closed": "closed"}
_VISITOR_HIDDEN = ("author_id", "meta")


def visitor_message(message: dict) -> dict:
    """A stored message as visitors see it: parley.message_json(m, true), i.e. no author ids, no meta."""
    return {k: v for k, v in message.items() if k not in _VISITOR_HIDDEN}


def visitor_frames(ev: dict) -> list[dict]:
    """What the visitor of the event's conversation sees of it (maybe nothing; never notes)."""
    kind = ev.get("kind")
    if kind == "message_added":
        msg = ev.get("message")
        if not isinstance(msg, dict) or msg.get("author") == "note":
            return []
        return [{"type": "message", "message": visitor_message(msg)}]
    if kind == "reopened":
        status = (ev.get("data") or {}).get("status") or "bot"
        return [{"type": "status", "status": status}]
    if kind in _STATUS_BY_KIND:
        return [{"type": "status", "status": _STATUS_BY_KIND[kind]}]
    return []


class PreparedEvent:
    """An event read once per process, with its frames serialised once (lazily) for every sink."""

    __slots__ = ("id", "tenant_id", "conversation_id", "data", "_agent", "_sse", "_visitor")

    def __init__(self, tenant_id: uuid.UUID, data: dict) -> None:
        self.tenant_id = tenant_id
        self.id = int(data["id"])
        conv = data.get("conversation_id")
        self.conversation_id = uuid.UUID(str(conv)) if conv else None
        self.data = data
        self._agent: str | None = None
        self._sse: bytes | None = None
        self._visitor: list[tuple[int | None, str]] | None = None

    @property
    def agent_text(self) -> str:
        if self._agent is None:
            self._agent = json_dumps({"type": "event", "event": self.data})
        return self._agent

    @property
    def sse_bytes(self) -> bytes:
        if self._sse is None:
            self._sse = f"id: {self.id}\ndata: {json_dumps(self.data)}\n\n".encode()
        return self._sse

    @property
    def visitor_texts(self) -> list[tuple[int | None, str]]:
        """(message id or None, frame text) pairs."""
        if self._visitor is None:
            self._visitor = [((f.get("message") or {}).get("id"), json_dumps(f)) for f in visitor_frames(self.data)]
        return self._visitor


# --------------------------------------------------------------------------- sinks


class Sink:
    """One connected client: ordered, non-blocking writes through a lazy writer task.

    Until `go_live()` the relay's events are held (the client is being replayed from the
    table); after it, events already replayed are dropped by id.
    """

    kind = "agent"
    __slots__ = ("tenant_id", "conversation_id", "label", "_send", "_close", "_queue", "_writer", "_held",
                 "replayed", "closed", "feed", "_done")

    def __init__(self, tenant_id: uuid.UUID, send: Callable[[Any], Awaitable[None]],
                 close: Callable[[int, str], Awaitable[None]], *, conversation_id: uuid.UUID | None = None,
                 label: str = "") -> None:
        self.tenant_id = tenant_id
        self.conversation_id = conversation_id
        self.label = label
        self._send = send
        self._close = close
        self._queue: deque | None = None  # created on demand: idle sockets hold none
        self._writer: asyncio.Task | None = None
        self._held: list[PreparedEvent] | None = []
        self.replayed: set[int] = set()
        self.closed = False
        self.feed: _Feed | None = None
        self._done: asyncio.Event | None = None

    # Writes ----------------------------------------------------------------
    def push(self, item: Any, *, bounded: bool = True) -> None:
        if self.closed:
            return
        if self._queue is None:
            self._queue = deque()
        elif bounded and len(self._queue) >= MAX_QUEUE:
            log.warning("dropping a slow %s client (%d frames queued)", self.kind, len(self._queue))
            self.close_soon(4408, "too slow; reconnect and resume")
            return
        self._queue.append(item)
        if self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        try:
            while self._queue and not self.closed:
                await self._send(self._queue.popleft())
            self._queue = None
        except Exception as exc:  # the peer went away mid-write
            log.debug("send failed: %s", exc)
            self._writer = None
            self.close_soon(1011, "send failed")
        finally:
            self._writer = None

    async def flush(self) -> None:
        """Wait until every queued frame has been handed to the transport."""
        while self._writer is not None:
            await asyncio.shield(self._writer)

    def close_soon(self, code: int = 1001, reason: str = "") -> asyncio.Task | None:
        """Stop writing and close the client (the handler notices through `wait_closed`)."""
        if self.closed:
            return None
        self.closed = True
        self._queue = None
        if self._done is not None:
            self._done.set()
        return asyncio.get_running_loop().create_task(self._close(code, reason))

    async def wait_closed(self, timeout: float | None = None) -> bool:
        """True once the sink is closed (by the relay, a failed write, or close_soon); False on timeout."""
        if self.closed:
            return True
        if self._done is None:
            self._done = asyncio.Event()
        try:
            await asyncio.wait_for(self._done.wait(), timeout)
            return True
        except asyncio.TimeoutError:
            return False

    # Events ------------------------------------------------------------------
    def offer(self, ev: PreparedEvent) -> None:
        if self._held is not None:
            self._held.append(ev)
        else:
            self.emit(ev)

    def go_live(self) -> None:
        held, self._held = self._held or [], None
        for ev in held:
            self.emit(ev)
        self.replayed = _NOTHING

    def emit(self, ev: PreparedEvent) -> None:
        if ev.id in self.replayed:
            return
        self.push(ev.agent_text)

    def frame(self, frame: dict) -> None:
        """An ephemeral frame (typing, read, stream)."""
        self.push(json_dumps(frame))


_NOTHING: frozenset = frozenset()


class SseSink(Sink):
    kind = "sse"
    __slots__ = ()

    def emit(self, ev: PreparedEvent) -> None:
        if ev.id in self.replayed:
            return
        self.push(ev.sse_bytes)

    def frame(self, frame: dict) -> None:
        pass  # SSE carries stored events only


class VisitorSink(Sink):
    kind = "visitor"
    __slots__ = ()

    def emit(self, ev: PreparedEvent) -> None:
        for message_id, text in ev.visitor_texts:
            if message_id is not None and message_id in self.replayed:
                continue
            self.push(text)


# --------------------------------------------------------------------------- the relay


class _Feed:
    """Per-tenant read position of this process."""

    def __init__(self, tenant_id: uuid.UUID) -> None:
        self.tenant_id = tenant_id
        self.sinks = 0
        self.cursor: int | None = None  # highest event id delivered (or present at start)
        self.low: int | None = None  # lowest notified id not read yet
        self.delivered: OrderedDict[int, None] = OrderedDict()
        self.ready = asyncio.Event()
        self.failed: BaseException | None = None
        self.task: asyncio.Task | None = None

    def remember(self, event_id: int) -> None:
        self.delivered[event_id] = None
        while len(self.delivered) > 1024:  # defensive only: ids arrive in order per tenant
            self.delivered.popitem(last=False)


RELAY = web.AppKey("relay", object)


class Relay:
    """Routes stored events and ephemeral frames to this process's sinks."""

    def __init__(self, pool: asyncpg.Pool, source: EventSource, bus: SignalBus | None = None) -> None:
        self.pool = pool
        self.source = source
        self.bus = bus
        self.instance_id = secrets.token_hex(6)
        self._agents: dict[uuid.UUID, set[Sink]] = {}
        self._visitors: dict[tuple[uuid.UUID, uuid.UUID], set[Sink]] = {}
        self._feeds: dict[uuid.UUID, _Feed] = {}
        self._tasks: set[asyncio.Task] = set()
        self.reads = 0  # service transactions that read events (for tests and the benchmark)
        self._stopped = False
        self.gaps = 0  # times the source reported possibly lost notices
        source.subscribe(self._on_notice, self._on_gap)
        if bus is not None:
            bus.subscribe_signals(self._on_signal)

    async def start(self) -> None:
        await self.source.start()

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        for feed in self._feeds.values():
            if not feed.ready.is_set():
                feed.failed = ConnectionError("relay stopped")
                feed.ready.set()
        closing = [t for t in (sink.close_soon(1001, "server shutting down") for sink in list(self.sinks())) if t]
        if closing:  # let clients see a clean "going away" and reconnect elsewhere
            await asyncio.wait(closing, timeout=5)
        await self.source.stop()
        for task in list(self._tasks):
            task.cancel()
        for feed in self._feeds.values():
            if feed.task:
                feed.task.cancel()
        await asyncio.gather(*self._tasks, *(f.task for f in self._feeds.values() if f.task),
                             return_exceptions=True)

    def spawn(self, coro: Awaitable, *, name: str | None = None) -> asyncio.Task:
        """A background task owned by the relay: kept referenced, logged on failure, cancelled on stop."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)

        def done(t: asyncio.Task) -> None:
            self._tasks.discard(t)
            if not t.cancelled() and t.exception() is not None:
                log.error("background task %s failed", t.get_name(), exc_info=t.exception())
        task.add_done_callback(done)
        return task

    def sinks(self):
        for group in self._agents.values():
            yield from group
        for group in self._visitors.values():
            yield from group

    def counts(self) -> dict:
        return {"agents": sum(len(g) for g in self._agents.values()),
                "visitors": sum(len(g) for g in self._visitors.values()), "tenants": len(self._feeds)}

    # Registration -------------------------------------------------------------
    async def attach(self, sink: Sink) -> None:
        """Register a sink (its events are held until go_live) and wait until its tenant's feed is ready.

        Raises ConnectionError when the relay is stopping or cannot read the tenant's events;
        the caller must still `detach` the sink (it always does, in `finally`).
        """
        if self._stopped:
            raise ConnectionError("the relay is stopping")
        if isinstance(sink, VisitorSink):
            self._visitors.setdefault((sink.tenant_id, sink.conversation_id), set()).add(sink)
        else:
            self._agents.setdefault(sink.tenant_id, set()).add(sink)
        feed = self._feeds.get(sink.tenant_id)
        if feed is None:
            feed = self._feeds[sink.tenant_id] = _Feed(sink.tenant_id)
            self.spawn(self._init_feed(feed), name=f"feed-init-{sink.tenant_id}")
        feed.sinks += 1
        sink.feed = feed
        await asyncio.wait_for(feed.ready.wait(), 30)
        if feed.failed is not None:
            raise ConnectionError(f"cannot read events: {feed.failed}")

    def detach(self, sink: Sink) -> None:
        if isinstance(sink, VisitorSink):
            key = (sink.tenant_id, sink.conversation_id)
            group = self._visitors.get(key)
        else:
            key = sink.tenant_id
            group = self._agents.get(key)
        if group is None or sink not in group:
            return
        group.discard(sink)
        if not group:
            (self._visitors if isinstance(sink, VisitorSink) else self._agents).pop(key, None)
        feed = self._feeds.get(sink.tenant_id)
        if feed is not None and feed is sink.feed:
            feed.sinks -= 1
            if feed.sinks <= 0:
                self._feeds.pop(sink.tenant_id, None)
                if feed.task:
                    feed.task.cancel()

    def close_tenant(self, tenant_id: uuid.UUID, code: int = 4403, reason: str = "") -> None:
        """Tell every socket of a tenant on this instance why, then close it (handlers detach)."""
        sinks = list(self._agents.get(tenant_id, ()))
        for (tenant, _conv), group in list(self._visitors.items()):
            if tenant == tenant_id:
                sinks.extend(group)
        frame = json_dumps({"type": "error", "code": reason or "closed", "message": "This workspace is no longer available."})

        async def close(sink: Sink) -> None:
            await sink.flush()
            sink.close_soon(code, reason)

        for sink in sinks:
            if sink.kind == "sse":
                sink.push(f"event: error\ndata: {frame}\n\n".encode(), bounded=False)
            else:
                sink.push(frame, bounded=False)
            self.spawn(close(sink), name="close-tenant-socket")

    def local_visitors(self, tenant_id: uuid.UUID, conversation_id: uuid.UUID) -> set[Sink]:
        return self._visitors.get((tenant_id, conversation_id), set())

    # Ephemeral frames ----------------------------------------------------------
    def broadcast_local(self, tenant_id: uuid.UUID, conversation_id: uuid.UUID, frame: dict, *,
                        visitors: bool = True, agents: bool = True, exclude: Sink | None = None) -> None:
        """Send a frame to this instance's visitor(s) of the conversation and its agents of the tenant.

        For bot `stream` chunks and typing: nothing is stored and nothing goes through NOTIFY,
        so agents connected to other instances see only the final stored message.
        """
        if visitors:
            text = json_dumps(frame)
            for sink in self._visitors.get((tenant_id, conversation_id), ()):
                if sink is not exclude and sink._held is None:
                    sink.push(text)
        if agents:
            group = [s for s in self._agents.get(tenant_id, ()) if s is not exclude and s.kind == "agent"]
            if group:
                text = json_dumps({**frame, "conversation_id": str(conversation_id)})
                for sink in group:
                    if sink._held is None:
                        sink.push(text)

    async def signal(self, kind: str, tenant_id: uuid.UUID, conversation_id: uuid.UUID, author: str,
                     value: int, *, exclude: Sink | None = None) -> None:
        """Typing or read receipt: delivered here at once, then published to the other instances."""
        sig = Signal(kind, tenant_id, conversation_id, author, int(value), self.instance_id)
        self._deliver_signal(sig, exclude=exclude)
        if self.bus is not None:
            await self.bus.publish(sig)

    def _on_signal(self, sig: Signal) -> None:
        if sig.origin != self.instance_id:
            self._deliver_signal(sig)

    def _deliver_signal(self, sig: Signal, *, exclude: Sink | None = None) -> None:
        if sig.kind == "typing":
            frame = {"type": "typing", "author": sig.author, "on": bool(sig.value)}
        else:
            frame = {"type": "read", "message_id": sig.value, "author": sig.author}
        # Visitors see the other side only; agents see everyone but themselves.
        self.broadcast_local(sig.tenant_id, sig.conversation_id, frame,
                             visitors=sig.author != "visitor", exclude=exclude)

    # Feeds ---------------------------------------------------------------------
    async def _init_feed(self, feed: _Feed) -> None:
        try:
            async with tenant_tx(self.pool, Actor(feed.tenant_id, kind="service")) as conn:
                feed.cursor = await conn.fetchval(
                    "SELECT coalesce(max(id), 0) FROM parley.events WHERE tenant_id = parley.current_tenant_id()")
        except BaseException as exc:  # wake the waiting sockets; the next attach tries again
            feed.failed = exc if not isinstance(exc, asyncio.CancelledError) else ConnectionError("relay stopped")
            if self._feeds.get(feed.tenant_id) is feed:
                self._feeds.pop(feed.tenant_id)
            feed.ready.set()
            raise
        feed.ready.set()
        if feed.low is not None:
            self._kick(feed)

    def _on_notice(self, notice: Notice) -> None:
        feed = self._feeds.get(notice.tenant_id)
        if feed is None:
            return  # nobody here cares about this tenant
        if notice.event_id in feed.delivered:
            return
        feed.low = notice.event_id if feed.low is None else min(feed.low, notice.event_id)
        if feed.ready.is_set():
            self._kick(feed)

    def _on_gap(self, outage: float) -> None:
        self.gaps += 1
        for feed in self._feeds.values():
            if not feed.ready.is_set():
                continue
            # events_after never skips an id (sql/41_conversations.sql), so reading after the
            # cursor recovers everything notified while nobody listened.
            start = feed.cursor or 0
            feed.low = start + 1 if feed.low is None else min(feed.low, start + 1)
            self._kick(feed)

    def wake(self, tenant_id: uuid.UUID) -> None:
        """This process just committed events for the tenant: read them now rather than after
        the NOTIFY round trip (the notice that follows finds them delivered)."""
        feed = self._feeds.get(tenant_id)
        if feed is not None and feed.ready.is_set() and feed.cursor is not None:
            feed.low = feed.cursor + 1 if feed.low is None else min(feed.low, feed.cursor + 1)
            self._kick(feed)

    def _kick(self, feed: _Feed) -> None:
        if feed.task is None or feed.task.done():
            feed.task = self.spawn(self._pump(feed), name=f"feed-{feed.tenant_id}")

    async def _pump(self, feed: _Feed) -> None:
        while feed.low is not None and self._feeds.get(feed.tenant_id) is feed:
            low, feed.low = feed.low, None
            after = min(low - 1, feed.cursor or 0)
            while True:
                try:
                    rows = await read_events(self.pool, Actor(feed.tenant_id, kind="service"), after)
                except (asyncpg.PostgresError, OSError, asyncio.TimeoutError) as exc:
                    refused = from_postgres(exc) if isinstance(exc, asyncpg.PostgresError) else None
                    if refused is not None and refused.status in (401, 403, 404):
                        # The tenant is gone (deleted workspace): nothing more will come.
                        log.info("relay: tenant %s refused (%s); closing its sockets", feed.tenant_id, refused.code)
                        self.close_tenant(feed.tenant_id, 4403, refused.code)
                        return
                    if isinstance(exc, asyncpg.LockNotAvailableError):
                        # A writer of this tenant keeps its transaction open past events_after's
                        # lock timeout; pausing lets the tenant's other writers through meanwhile.
                        log.info("relay: events of %s wait for a long transaction", feed.tenant_id)
                    else:
                        log.warning("relay read failed for %s: %s", feed.tenant_id, exc)
                    feed.low = after + 1 if feed.low is None else min(feed.low, after + 1)
                    await asyncio.sleep(0.5)
                    break
                self.reads += 1
                for row in rows:
                    event_id = row["id"]
                    after = max(after, event_id)
                    if event_id in feed.delivered:
                        continue
                    feed.remember(event_id)
                    self._dispatch(PreparedEvent(feed.tenant_id, event_json(row)))
                    if feed.cursor is None or event_id > feed.cursor:
                        feed.cursor = event_id
                if len(rows) < BATCH:
                    break

    def _dispatch(self, ev: PreparedEvent) -> None:
        for sink in self._agents.get(ev.tenant_id, ()):
            sink.offer(ev)
        if ev.conversation_id is not None:
            for sink in self._visitors.get((ev.tenant_id, ev.conversation_id), ()):
                sink.offer(ev)


# --------------------------------------------------------------------------- wiring


def install(app: web.Application) -> None:
    """Give the app its relay (idempotent; every realtime surface calls it from setup)."""
    if app.get(_INSTALLED):
        return
    app[_INSTALLED] = True

    async def relay_ctx(app: web.Application):
        settings = app[SETTINGS]
        source = PgNotifySource(settings.app_url, app[POOL],
                                heartbeat=float(settings.extra.get("relay_heartbeat", 10.0)),
                                min_backoff=float(settings.extra.get("relay_min_backoff", 0.1)))
        relay = Relay(app[POOL], source, source)
        app[RELAY] = relay
        await relay.start()
        yield
        await relay.stop()

    async def on_shutdown(app: web.Application):
        relay = app.get(RELAY)
        if relay is not None:
            await relay.stop()

    app.cleanup_ctx.append(relay_ctx)
    app.on_shutdown.append(on_shutdown)


_INSTALLED = web.AppKey("realtime_installed", bool)


def get_relay(app: web.Application) -> Relay:
    return app[RELAY]
