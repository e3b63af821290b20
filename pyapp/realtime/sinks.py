"""Connected clients as the relay sees them: ordered, non-blocking writes, held until live."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from pyapp.context import json_dumps
from pyapp.realtime.frames import PreparedEvent

log = logging.getLogger("parley.realtime")

MAX_QUEUE = 2000  # frames waiting for one slow client before it is dropped (it resumes by id)
# How long a closing client has to take its last frames and the close: a peer that stopped reading
# never does (its kernel buffers are full, so every write waits), and its connection is dropped.
CLOSE_GRACE = 5.0


def drop(transport: asyncio.Transport) -> None:
    """Close a connection at once with a reset: a plain close would leave the kernel sending what is
    buffered (up to its send buffer, megabytes) to a peer that reads nothing, for minutes."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


class Sink:
    """One connected client: ordered, non-blocking writes through a lazy writer task.

    Until `go_live()` the relay's events are held (the client is being replayed from the
    table); after it, events already replayed are dropped by id (`_already_sent`).
    """

    kind = "agent"
    __slots__ = (
        "_close",
        "_done",
        "_held",
        "_queue",
        "_replayed_max",
        "_send",
        "_transport",
        "_writer",
        "actor",
        "closed",
        "conversation_id",
        "feed",
        "label",
        "replayed",
        "tenant_id",
    )

    def __init__(
        self,
        tenant_id: uuid.UUID,
        send: Callable[[Any], Awaitable[None]],
        close: Callable[[int, str], Coroutine[Any, Any, None]],
        *,
        conversation_id: uuid.UUID | None = None,
        label: str = "",
        transport: asyncio.Transport | None = None,
    ) -> None:
        self.tenant_id = tenant_id
        self.conversation_id = conversation_id
        self.label = label
        self._send = send
        self._close = close
        self._transport = transport  # the client's connection, dropped if a close does not get through
        self._queue: deque | None = None  # created on demand: idle sockets hold none
        self._writer: asyncio.Task | None = None
        self._held: list[PreparedEvent] | None = []
        self.replayed: set[int] = set()
        self._replayed_max = 0
        self.closed = False
        self.feed: Any = None  # set by the relay: its per-tenant feed this sink counts in
        self._done: asyncio.Event | None = None
        self.actor: Any = None  # a member's stream: its db.Actor, so a revocation can find it

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

    async def flush(self, timeout: float | None = None) -> bool:
        """Wait until every queued frame has been handed to the transport (at most `timeout`
        seconds, CLOSE_GRACE by default: a peer that stopped reading never takes them); whether it was."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (CLOSE_GRACE if timeout is None else timeout)
        while self._writer is not None:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            await asyncio.wait([self._writer], timeout=remaining)
        return True

    def close_soon(self, code: int = 1001, reason: str = "") -> asyncio.Task | None:
        """Stop writing and close the client (the handler notices through `wait_closed`); a client
        that has not taken its last frame and the close within CLOSE_GRACE loses its connection."""
        if self.closed:
            return None
        self.closed = True
        self._queue = None
        if self._done is not None:
            self._done.set()
        return asyncio.get_running_loop().create_task(self._close_within(code, reason))

    async def _close_within(self, code: int, reason: str) -> None:
        try:
            async with asyncio.timeout(CLOSE_GRACE):
                await self._close(code, reason)
                while self._writer is not None:  # the frame being written when the close came
                    await asyncio.shield(self._writer)
        except TimeoutError:
            if self._transport is not None:
                log.info("dropping a %s client that does not read (close %d not taken)", self.kind, code)
                drop(self._transport)

    async def wait_closed(self, timeout: float | None = None) -> bool:
        """True once the sink is closed (by the relay, a failed write, or close_soon); False on timeout."""
        if self.closed:
            return True
        if self._done is None:
            self._done = asyncio.Event()
        try:
            await asyncio.wait_for(self._done.wait(), timeout)
            return True
        except TimeoutError:
            return False

    # Events ------------------------------------------------------------------
    def offer(self, ev: PreparedEvent) -> None:
        if self._held is not None:
            self._held.append(ev)
        else:
            self.emit(ev)

    def go_live(self) -> None:
        held, self._held = self._held or [], None
        self._replayed_max = max(self.replayed, default=0)
        for ev in held:
            self.emit(ev)

    def _already_sent(self, key: int) -> bool:
        """Whether the replay sent this event (a visitor's: this message) already. The relay's
        feed can lag behind the table the replay read, so a replayed event may still be offered
        after go_live (e.g. its feed back-filling after the database restarted): the ids are kept
        until the feed passes the last of them (it offers in id order), then forgotten."""
        if not self.replayed:
            return False
        if key in self.replayed:
            return True
        if key > self._replayed_max:
            self.replayed = set()
        return False

    def emit(self, ev: PreparedEvent) -> None:
        if self._already_sent(ev.id):
            return
        self.push(ev.agent_text)

    def frame(self, frame: dict) -> None:
        """An ephemeral frame (typing, read, stream)."""
        self.push(json_dumps(frame))


class SseSink(Sink):
    kind = "sse"
    __slots__ = ()

    def emit(self, ev: PreparedEvent) -> None:
        if self._already_sent(ev.id):
            return
        self.push(ev.sse_bytes)

    def frame(self, frame: dict) -> None:
        pass  # SSE carries stored events only


class VisitorSink(Sink):
    kind = "visitor"
    __slots__ = ()

    def emit(self, ev: PreparedEvent) -> None:
        frame = ev.visitor_text
        if frame is None:
            return
        message_id, text = frame
        if message_id is not None and self._already_sent(message_id):
            return
        self.push(text)
