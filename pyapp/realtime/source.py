"""Where the relay learns that events were stored, and how instances share ephemeral signals.

NOTIFY only wakes the relay (payload `<tenant_id>:<event_id>:<conversation_id>`); the events
table is the truth. `PgNotifySource` LISTENs on one dedicated connection with heartbeat and
reconnect, and reports a possible gap after every (re)connect so feeds re-read from their
cursor. Signals (typing, read receipts) travel on `parley_signals`: ids and small integers only.
Revocations (a member removed, an API key revoked, a session ended) arrive on `parley_revoked`
(sent by the triggers of sql/26_revocation.sql), so every instance closes those streams at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import asyncpg

log = logging.getLogger("parley.realtime")

CHANNEL = "parley_events"
SIGNAL_CHANNEL = "parley_signals"
REVOKE_CHANNEL = "parley_revoked"
RELAY_APP_NAME = "parley-relay"


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
    def parse(cls, payload: str) -> Signal | None:
        try:
            kind, tenant, conv, author, value, origin = payload.split(":")
            if kind not in ("typing", "read") or author not in ("visitor", "agent", "bot"):
                return None
            return cls(kind, uuid.UUID(tenant), uuid.UUID(conv), author, int(value), origin)
        except (ValueError, AttributeError):
            return None


@dataclass(frozen=True)
class Revocation:
    """Credentials that stopped being valid: sessions (families), members of a tenant, or API keys of a tenant."""

    kind: str  # session | member | key
    tenant_id: uuid.UUID | None  # None for sessions (a person's, across tenants)
    ids: frozenset[str]

    @classmethod
    def parse(cls, payload: str) -> Revocation | None:
        try:
            kind, rest = payload.split(":", 1)
            if kind == "session":
                tenant, ids = None, rest
            elif kind in ("member", "key"):
                tenant_text, ids = rest.split(":", 1)
                tenant = uuid.UUID(tenant_text)
            else:
                return None
            return cls(kind, tenant, frozenset(str(uuid.UUID(i)) for i in ids.split(",") if i))
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

    def __init__(
        self,
        dsn: str,
        pool: asyncpg.Pool | None = None,
        *,
        heartbeat: float = 10.0,
        min_backoff: float = 0.1,
        max_backoff: float = 5.0,
    ) -> None:
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
        self._on_gap: list[Callable[[float], None]] = []
        self._on_signal: list[Callable[[Signal], None]] = []
        self._on_revoke: list[Callable[[Revocation], None]] = []
        self._task: asyncio.Task | None = None
        self._conn: asyncpg.Connection | None = None
        self._stopping = False
        self._lost_at: float | None = None

    def subscribe(self, on_notice: Callable[[Notice], None], on_gap: Callable[[float], None]) -> None:
        self._on_notice.append(on_notice)
        self._on_gap.append(on_gap)

    def subscribe_signals(self, on_signal: Callable[[Signal], None]) -> None:
        self._on_signal.append(on_signal)

    def subscribe_revocations(self, on_revoke: Callable[[Revocation], None]) -> None:
        self._on_revoke.append(on_revoke)

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="parley-relay-listen")

    async def stop(self) -> None:
        self._stopping = True
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._conn is not None and not self._conn.is_closed():
            self._conn.terminate()

    async def publish(self, signal: Signal) -> None:
        if self.pool is None:
            return
        try:
            await self.pool.execute("SELECT pg_notify($1, $2)", SIGNAL_CHANNEL, signal.payload())
        except (TimeoutError, asyncpg.PostgresError, OSError) as exc:
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
                for on_signal in self._on_signal:
                    on_signal(sig)
        elif channel == REVOKE_CHANNEL:
            rev = Revocation.parse(payload)
            if rev is None:
                log.warning("ignored malformed revocation %r", payload[:200])
                return
            for on_revoke in self._on_revoke:
                on_revoke(rev)

    async def _run(self) -> None:
        backoff = self.min_backoff
        loop = asyncio.get_running_loop()
        while not self._stopping:
            lost = loop.create_future()
            started = time.monotonic()
            try:
                conn = await asyncpg.connect(self.dsn, timeout=10, server_settings={"application_name": RELAY_APP_NAME})
                self._conn = conn
                conn.add_termination_listener(lambda _c, lost=lost: lost.done() or lost.set_result(None))
                await conn.add_listener(CHANNEL, self._notice)
                await conn.add_listener(SIGNAL_CHANNEL, self._notice)
                await conn.add_listener(REVOKE_CHANNEL, self._notice)
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
