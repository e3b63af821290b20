"""The relay: one LISTEN connection per process, routing stored events to the sockets that care.

NOTIFY only wakes the relay (payload `<tenant_id>:<event_id>:<conversation_id>`); the events
table is the truth. For each tenant with connected sockets the relay keeps a feed: it reads
new events with `parley.events_after` once per process (one `service` transaction per batch,
not per socket), builds each frame once, and hands it to the sinks (visitor sockets by
conversation, agent sockets and SSE streams by tenant). A transaction may write several events
but NOTIFYs once, so a feed always reads everything after its cursor. events_after never
returns an id while a smaller one can still commit (its barrier on the tenant's event lock,
sql/45_events.sql), so after the LISTEN connection comes back every feed re-reads from
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
import secrets
import uuid
from collections import OrderedDict
from collections.abc import Coroutine
from typing import Any, ClassVar

import asyncpg
from aiohttp import web

from pyapp.context import POOL, SETTINGS, json_dumps
from pyapp.db import Actor, database_outage, tenant_tx
from pyapp.errors import from_postgres
from pyapp.realtime.frames import BATCH, PreparedEvent, read_events
from pyapp.realtime.presence import Presence
from pyapp.realtime.sinks import Sink, VisitorSink
from pyapp.realtime.source import EventSource, Notice, PgNotifySource, Revocation, Signal, SignalBus

log = logging.getLogger("parley.realtime")


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


RELAY: web.AppKey[Relay] = web.AppKey("relay")


class Relay:
    """Routes stored events and ephemeral frames to this process's sinks."""

    def __init__(self, pool: asyncpg.Pool, source: EventSource, bus: SignalBus | None = None) -> None:
        self.pool = pool
        self.source = source
        self.bus = bus
        self.instance_id = secrets.token_hex(6)
        self._agents: dict[uuid.UUID, set[Sink]] = {}
        self._visitors: dict[tuple[uuid.UUID, uuid.UUID | None], set[Sink]] = {}
        self._feeds: dict[uuid.UUID, _Feed] = {}
        self._tasks: set[asyncio.Task] = set()
        self.reads = 0  # service transactions that read events (for tests and the benchmark)
        self._stopped = False
        self.gaps = 0  # times the source reported possibly lost notices
        self.presence = Presence(pool, self.instance_id, self.spawn)  # members' streams: who is online
        source.subscribe(self._on_notice, self._on_gap)
        if bus is not None:
            bus.subscribe_signals(self._on_signal)
        if hasattr(source, "subscribe_revocations"):
            source.subscribe_revocations(self.revoke)

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
        try:
            await self.presence.close()
        except TimeoutError:
            log.warning("presence rows left to lapse (the database did not answer)")
        await self.source.stop()
        for task in list(self._tasks):
            task.cancel()
        for feed in self._feeds.values():
            if feed.task:
                feed.task.cancel()
        await asyncio.gather(*self._tasks, *(f.task for f in self._feeds.values() if f.task), return_exceptions=True)

    def spawn(self, coro: Coroutine[Any, Any, Any], *, name: str | None = None) -> asyncio.Task:
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
        return {
            "agents": sum(len(g) for g in self._agents.values()),
            "visitors": sum(len(g) for g in self._visitors.values()),
            "tenants": len(self._feeds),
        }

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
        if not isinstance(sink, VisitorSink):
            await self.presence.join(sink.actor)
        await asyncio.wait_for(feed.ready.wait(), 30)
        if feed.failed is not None:  # from the failure: a database outage stays one (pyapp.db.database_outage)
            raise ConnectionError(f"cannot read events: {feed.failed}") from feed.failed

    def detach(self, sink: Sink) -> None:
        visitor_key = (sink.tenant_id, sink.conversation_id)
        is_visitor = isinstance(sink, VisitorSink)
        group = self._visitors.get(visitor_key) if is_visitor else self._agents.get(sink.tenant_id)
        if group is None or sink not in group:
            return
        group.discard(sink)
        if not is_visitor:
            self.presence.leave(sink.actor)
        if not group:
            if is_visitor:
                self._visitors.pop(visitor_key, None)
            else:
                self._agents.pop(sink.tenant_id, None)
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
        frame = json_dumps(
            {"type": "error", "code": reason or "closed", "message": "This workspace is no longer available."}
        )

        async def close(sink: Sink) -> None:
            await sink.flush()
            sink.close_soon(code, reason)

        for sink in sinks:
            if sink.kind == "sse":
                sink.push(f"event: error\ndata: {frame}\n\n".encode(), bounded=False)
            else:
                sink.push(frame, bounded=False)
            self.spawn(close(sink), name="close-tenant-socket")

    # Revocation ------------------------------------------------------------------
    _REVOKED: ClassVar[dict[str, tuple[str, str]]] = {
        "session": ("session_revoked", "The session has ended; sign in again."),
        "member": ("not_a_member", "You are no longer a member of this workspace."),
        "key": ("invalid_api_key", "The API key was revoked."),
    }

    def revoke(self, rev: Revocation) -> None:
        """Close this instance's member streams that a revocation names (the parley_revoked notice)."""
        groups = self._agents.values() if rev.tenant_id is None else [self._agents.get(rev.tenant_id, ())]
        for group in groups:
            for sink in list(group):
                actor = sink.actor
                if actor is None:
                    continue
                if rev.kind == "session":
                    hit = actor.kind == "user" and str(actor.session_id) in rev.ids
                elif rev.kind == "member":
                    hit = actor.kind == "user" and str(actor.actor_id) in rev.ids
                else:
                    hit = actor.kind == "api_key" and str(actor.actor_id) in rev.ids
                if hit:
                    self._hang_up(sink, *self._REVOKED[rev.kind])

    def _hang_up(self, sink: Sink, code: str, message: str) -> None:
        if sink.closed:
            return
        if sink.kind == "sse":
            sink.push(f"event: error\ndata: {json_dumps({'code': code})}\n\n".encode(), bounded=False)
        else:
            sink.push(json_dumps({"type": "error", "code": code, "message": message}), bounded=False)

        async def close() -> None:
            await sink.flush()
            sink.close_soon(4401, code)

        self.spawn(close(), name="revoke-stream")

    async def _recheck_members(self) -> None:
        """After the LISTEN connection was down: revocations may have been missed; ask SQL for each stream."""
        for sink in [s for group in list(self._agents.values()) for s in group if s.actor is not None]:
            if sink.closed:
                continue
            try:
                async with tenant_tx(self.pool, sink.actor):
                    pass  # begin_request: session alive, key live, still a member
            except asyncpg.PostgresError as exc:
                mapped = from_postgres(exc)
                if mapped is not None and mapped.status in (401, 403):
                    self._hang_up(sink, mapped.code, mapped.message)
            except (TimeoutError, OSError):
                return  # the database is away again; the next reconnect re-checks

    def local_visitors(self, tenant_id: uuid.UUID, conversation_id: uuid.UUID) -> set[Sink]:
        return self._visitors.get((tenant_id, conversation_id), set())

    # Ephemeral frames ----------------------------------------------------------
    def broadcast_local(
        self,
        tenant_id: uuid.UUID,
        conversation_id: uuid.UUID,
        frame: dict,
        *,
        visitors: bool = True,
        agents: bool = True,
        exclude: Sink | None = None,
    ) -> None:
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

    async def signal(
        self,
        kind: str,
        tenant_id: uuid.UUID,
        conversation_id: uuid.UUID,
        author: str,
        value: int,
        *,
        exclude: Sink | None = None,
    ) -> None:
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
        self.broadcast_local(
            sig.tenant_id, sig.conversation_id, frame, visitors=sig.author != "visitor", exclude=exclude
        )

    # Feeds ---------------------------------------------------------------------
    async def _init_feed(self, feed: _Feed) -> None:
        try:
            async with tenant_tx(self.pool, Actor(feed.tenant_id, kind="service")) as conn:
                feed.cursor = await conn.fetchval(
                    "SELECT coalesce(max(id), 0) FROM parley.events WHERE tenant_id = parley.current_tenant_id()"
                )
        except BaseException as exc:  # wake the waiting sockets; the next attach tries again
            feed.failed = exc if not isinstance(exc, asyncio.CancelledError) else ConnectionError("relay stopped")
            if self._feeds.get(feed.tenant_id) is feed:
                self._feeds.pop(feed.tenant_id)
            feed.ready.set()
            if database_outage(exc):  # the waiting sockets close with 1013 (retry): no fault of the relay
                log.warning("relay: the events of tenant %s are unreadable now: %s", feed.tenant_id, type(exc).__name__)
                return
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
            # events_after never skips an id (sql/45_events.sql), so reading after the
            # cursor recovers everything notified while nobody listened.
            start = feed.cursor or 0
            feed.low = start + 1 if feed.low is None else min(feed.low, start + 1)
            self._kick(feed)
        if self.gaps > 1 and self._agents:  # a reconnect, not the first connect
            self.spawn(self._recheck_members(), name="recheck-members")

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
                except (TimeoutError, asyncpg.PostgresError, OSError) as exc:
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
                    self._dispatch(PreparedEvent.from_row(feed.tenant_id, row))
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
        source = PgNotifySource(
            settings.listen_url,
            app[POOL],
            heartbeat=float(settings.extra.get("relay_heartbeat", 10.0)),
            min_backoff=float(settings.extra.get("relay_min_backoff", 0.1)),
        )
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
