"""Visitor messages of one tenant share a statement and a commit (parley.post_visitor_messages).

Why: alone, a visitor message cost PostgreSQL about twice as much CPU as in a batch of eight:
most of it was the round trip, the transaction and its WAL flush, not the checks and writes
(bench/chat_flow.py; docs/DEVELOPING.md "Realtime throughput"). Batches form only under load:
each tenant has at most FLUSHES_PER_TENANT statements in flight, and whatever arrives
meanwhile goes into the next one, so a lone message is sent at once and waits for nothing.

Every rule stays in SQL: each message is stored as post_message would store it for that
visitor (the function sets the actor per message), and one refused message is rolled back
alone and reported to its sender only.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field

import asyncpg
from asyncpg.exceptions._base import PostgresMessageMeta

from pyapp import metrics, tracing
from pyapp.db import db_unavailable

MAX_BATCH = 24  # parley.post_visitor_messages refuses more (subtransaction cache; see there)
FLUSHES_PER_TENANT = 2  # statements in flight per tenant: enough to keep both cores busy
# Lost a lock race with another batch or a job (deadlock victim, serialization), or waited over
# a second for a lock (its conversation busy in a long transaction): nothing of it was written,
# so it goes round once more, in a later statement, before the sender hears of it.
RETRY_STATES = frozenset({"40001", "40P01", "55P03"})


@dataclass(frozen=True)
class Posted:
    """A stored visitor message (as the visitor sees it) and the conversation's status after it."""

    message: dict
    duplicate: bool
    status: str


class MessageRefused(Exception):
    """One message was refused (its SQLSTATE, message and stable code, as errors.from_postgres reads them)."""

    def __init__(self, sqlstate: str, message: str, hint: str | None, detail: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate
        self.hint = hint
        self.detail = detail  # e.g. a rate limit's retry_after=<seconds>


@dataclass
class _Item:
    conversation_id: uuid.UUID
    body: str
    client_id: str | None
    ip: str | None
    request_id: str | None
    future: asyncio.Future
    attempts: int = 0
    traceparent: str | None = None  # the sender's span (traces on): its message's outbox rows continue it


@dataclass
class _Queue:
    items: deque = field(default_factory=deque)
    flushing: int = 0


class VisitorMessages:
    """Per-tenant queues of visitor messages, flushed by up to FLUSHES_PER_TENANT tasks each."""

    def __init__(self, pool: asyncpg.Pool, spawn: Callable[..., asyncio.Task]) -> None:
        self.pool = pool
        self.spawn = spawn
        self._queues: dict[uuid.UUID, _Queue] = {}
        self.statements = 0  # statements run, and the messages they carried (tests, the benchmark)
        self.messages = 0
        self.retried: Counter[str] = Counter()  # messages sent again, by SQLSTATE

    async def post(
        self,
        tenant_id: uuid.UUID,
        conversation_id: uuid.UUID,
        body: str,
        client_id: str | None,
        ip: str | None,
        request_id: str | None,
    ) -> Posted:
        """Store one visitor message; raises MessageRefused (or the statement's own error)."""
        future = asyncio.get_running_loop().create_future()
        item = _Item(conversation_id, body, client_id, ip, request_id, future, traceparent=tracing.traceparent())
        self._enqueue(tenant_id, item)
        return await future

    def _enqueue(self, tenant_id: uuid.UUID, item: _Item) -> None:
        queue = self._queues.setdefault(tenant_id, _Queue())
        queue.items.append(item)
        if queue.flushing < FLUSHES_PER_TENANT:
            queue.flushing += 1
            self.spawn(self._flush(tenant_id, queue), name=f"visitor-messages-{tenant_id}")

    async def _flush(self, tenant_id: uuid.UUID, queue: _Queue) -> None:
        try:
            while queue.items:
                batch = [queue.items.popleft() for _ in range(min(MAX_BATCH, len(queue.items)))]
                batch = [item for item in batch if not item.future.done()]  # the sender went away
                if batch:
                    await self._run(tenant_id, batch)
        except asyncio.CancelledError:  # shutting down: nobody is left to store the rest
            _fail(queue.items, ConnectionError("server shutting down"))
            queue.items.clear()
            raise
        finally:
            queue.flushing -= 1
            if not queue.items and not queue.flushing and self._queues.get(tenant_id) is queue:
                del self._queues[tenant_id]

    async def _run(self, tenant_id: uuid.UUID, batch: list[_Item]) -> None:
        self.statements += 1
        self.messages += len(batch)
        try:
            traced = any(i.traceparent for i in batch)
            rows = await self.pool.fetch(
                "SELECT * FROM parley.post_visitor_messages($1, $2, $3, $4, $5, $6, $7)",
                tenant_id,
                [i.conversation_id for i in batch],
                [i.body for i in batch],
                [i.client_id for i in batch],
                [i.ip for i in batch],
                [i.request_id for i in batch],
                [i.traceparent for i in batch] if traced else None,
            )
        except asyncio.CancelledError:
            _fail(batch, ConnectionError("server shutting down"))
            raise
        except Exception as exc:  # the statement itself failed: every sender hears of it
            _fail(batch, exc)
            return
        for row in rows:
            item = batch[row["ord"] - 1]
            if item.future.done():
                continue
            state = row["error_state"]
            if state is None:
                if not row["duplicate"]:
                    metrics.MESSAGES.labels("visitor").inc()
                item.future.set_result(Posted(row["message"], row["duplicate"], row["status"]))
            elif state in RETRY_STATES and item.attempts == 0:
                item.attempts += 1
                self.retried[state] += 1
                self._enqueue(tenant_id, item)
            else:
                item.future.set_exception(_refusal(state, row["error_message"], row["error_hint"], row["error_detail"]))


def _refusal(sqlstate: str, message: str, hint: str | None, detail: str | None = None) -> Exception:
    """Why one message of a batch was not stored: MessageRefused, or for a state that means the
    database cannot take writes now (53100 disk full, 53200 out of memory: pyapp.db.db_unavailable)
    asyncpg's own error of that state, so the socket answers it as the outage it is (1013, resend)."""
    error = PostgresMessageMeta.get_message_class_for_sqlstate(sqlstate)(message)
    return error if db_unavailable(error) else MessageRefused(sqlstate, message, hint, detail)


def _fail(items, exc: BaseException) -> None:
    for item in items:
        if not item.future.done():
            item.future.set_exception(exc)
