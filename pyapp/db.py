"""The pool and the one helper that opens every tenant-scoped transaction.

Tenant, actor, ip and request id are set with set_config(..., true) (SET LOCAL) by
parley.begin_request inside the transaction, so a pooled connection never carries
them to the next request.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from uuid import UUID

import asyncpg
from pgvector.asyncpg import register_vector

from pyapp import logs, metrics, tracing
from pyapp.config import db_acquire_timeout, db_statement_cache
from pyapp.errors import ApiError, database_busy, database_unavailable


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    await conn.set_type_codec("json", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    with contextlib.suppress(ValueError):  # vector extension not installed in this database
        await register_vector(conn)


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Release without asyncpg's reset query (RESET ALL, UNLISTEN *, ...): one round trip saved per use.

    Safe because the app keeps no session state on pooled connections: settings are
    transaction-local (set_config(..., true); app.worker, the server's name, is given once when a
    connection opens and is the same for every use), advisory locks are xact locks (the one exception,
    events_after's barrier, is released inside the function on every path, errors and cancels
    included), LISTEN lives on the relay's own connection. asyncpg still rolls back a
    transaction left open.
    """


# The database is unreachable or went away (restart, failover, network), or has no room for this
# session or write (max_connections or a database's CONNECTION LIMIT reached, disk full, out of
# memory): worth retrying later, unlike an error in a statement. Class 08 (connection), class 57
# (shutdown, cannot connect now), 53100/53200/53300 of class 53 (not 53400, a statement over a
# configured limit such as temp_file_limit: the statement's fault), a connection asyncpg already
# knows is closed, and the socket's own errors. And asyncpg's InternalClientError: a connection whose
# session PostgreSQL ended (a restart, pg_terminate_backend) when the close has not reached the client
# yet has read the FATAL error but is still open; the next query on it fails with that error ("cannot
# switch to state ..."), and the pool drops the connection.
DB_UNAVAILABLE: tuple[type[BaseException], ...] = (
    asyncpg.exceptions.InternalClientError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.DiskFullError,
    asyncpg.exceptions.OutOfMemoryError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.InterfaceError,
    OSError,
    TimeoutError,
)


def db_unavailable(exc: BaseException) -> bool:
    """Whether an error means the database cannot be reached now (as opposed to a failed statement).
    A query cancelled by a statement timeout (class 57014) is a statement's failure, not an outage."""
    return isinstance(exc, DB_UNAVAILABLE) and not isinstance(exc, asyncpg.QueryCanceledError)


def database_outage(exc: BaseException) -> bool:
    """db_unavailable, narrowed for the server, where a socket error may also come from an outside
    service (a webhook, a model provider): a plain OSError or TimeoutError counts only when asyncpg
    raised it (connecting, or waiting for a pooled connection)."""
    if not db_unavailable(exc):
        return False
    if isinstance(exc, asyncpg.PostgresError | asyncpg.InterfaceError):
        return True
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_globals.get("__name__", "").startswith("asyncpg."):
            return True
        tb = tb.tb_next
    # An error raised from an outage (`raise ConnectionError(...) from exc`, as the relay does) is one too.
    return exc.__cause__ is not None and database_outage(exc.__cause__)


POOL_SIZE = 10  # default max connections of the app's pool (PARLEY_DB_POOL_SIZE)


class OutageLines(logging.Filter):
    """While the database is away (a restart, the connection limit) asyncpg's pool keeps reopening its
    floor connections and logs each failure with a whole traceback, a dozen per process per outage:
    for an outage (db_unavailable) the line says what failed, the error's type and text, without it.
    Anything else keeps its traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and db_unavailable(exc):
            record.msg, record.args = "%s (%s: %s)", (record.getMessage(), type(exc).__name__, exc)
            record.exc_info = record.exc_text = None
        return True


def _quiet_pool_outages() -> None:
    pool_log = logging.getLogger("asyncpg.pool")
    if not any(isinstance(f, OutageLines) for f in pool_log.filters):
        pool_log.addFilter(OutageLines())


async def create_pool(
    dsn: str, *, min_size: int = 2, max_size: int = POOL_SIZE, worker: str | None = None
) -> asyncpg.Pool:
    """The app's pool. Small on purpose: past ~5 backends per core, more connections add lock
    and scheduler churn in PostgreSQL, not throughput (bench/chat_flow.py; PARLEY_DB_POOL_SIZE).
    Transaction poolers (PgBouncer): nothing here keeps session state (see _keep_session); the
    statement cache follows PARLEY_DB_STATEMENT_CACHE (0 for PgBouncer < 1.21).
    `worker`: the server's name, which every connection then carries from its start as the session
    setting app.worker (parley.storing_server: the bot turns it stores are named after the server;
    set once per connection, nothing per transaction). Only for sessions of their own: a
    transaction pooler refuses the setting (Settings.pool_sessions_own). Its outages are logged a
    line each (OutageLines)."""
    _quiet_pool_outages()
    return await asyncpg.create_pool(
        dsn,
        statement_cache_size=db_statement_cache(),
        min_size=min_size,
        max_size=max_size,
        init=_init_connection,
        reset=_keep_session,
        command_timeout=60,
        max_inactive_connection_lifetime=300,
        server_settings={"app.worker": worker} if worker else None,
    )


@dataclass(frozen=True)
class Actor:
    """Who is acting: a signed-in user, an API key, a widget visitor, or the system."""

    tenant_id: UUID
    kind: str  # user | api_key | visitor | system
    actor_id: str | None = None
    session_id: UUID | None = None
    ip: str | None = None
    request_id: str | None = None
    min_role: str = "agent"


_TX_SECONDS = metrics.DB_QUERY.labels("transaction")
_STATEMENT_SECONDS = metrics.DB_QUERY.labels("statement")


class PoolBusy(TimeoutError):
    """Every connection of the pool stayed in use for db_acquire_timeout(): more requests than the pool
    serves (503 database_busy), not the database away. Before, such a request waited as long as the
    queue ahead of it, however long that was."""


def outage_error(exc: BaseException) -> ApiError | None:
    """What a client is told when `exc` is the database's doing, not the request's, on every transport
    (REST, both sockets, SSE): 503 database_busy when no pooled connection came free in time (PoolBusy,
    or an error raised from one, as the relay re-raises what it met), 503 database_unavailable for an
    outage (counted in parley_database_unavailable_total); None for anything else."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, PoolBusy):  # before the outage: every pooled connection in use is load
            return database_busy()
        cause = cause.__cause__
    if database_outage(exc):
        metrics.DB_UNAVAILABLE.inc()
        return database_unavailable()
    return None


@asynccontextmanager
async def acquire(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    """pool.acquire() for at most db_acquire_timeout() seconds (then PoolBusy, or the TimeoutError of a
    connection that could not be opened), its wait counted in parley_db_pool_wait_seconds."""
    started = time.perf_counter()
    try:
        conn = await pool.acquire(timeout=db_acquire_timeout())
    except TimeoutError as exc:
        if pool.get_size() >= pool.get_max_size():  # full: the wait was for a connection in use, not a connect
            raise PoolBusy(f"no pooled connection free in {db_acquire_timeout():g} s") from exc
        raise
    try:
        metrics.DB_POOL_WAIT.observe(time.perf_counter() - started)
        yield conn
    finally:
        await pool.release(conn)


@asynccontextmanager
async def tenant_tx(pool: asyncpg.Pool, actor: Actor) -> AsyncIterator[asyncpg.Connection]:
    """A transaction bound to one tenant; begin_request checks the session/key and role first."""
    logs.bind(tenant_id=actor.tenant_id)
    async with acquire(pool) as conn:
        with metrics.timed(_TX_SECONDS), tracing.child_span("db.transaction", actor_kind=actor.kind):
            async with conn.transaction():
                parent = tracing.traceparent()
                if parent is None:
                    await conn.fetchval(_BEGIN, *_request_args(actor))
                else:  # traces on: what this transaction enqueues in the outbox continues its span
                    await conn.fetchval(_BEGIN_TRACED, *_request_args(actor), parent)
                yield conn


_BEGIN = "SELECT parley.begin_request($1, $2, $3, $4, $5, $6, $7)"
_BEGIN_TRACED = _BEGIN + ", set_config('app.traceparent', $8, true)"


async def act_as(conn: asyncpg.Connection, actor: Actor) -> None:
    """Inside a tenant transaction, act as `actor` from here on (parley.begin_request again, with its
    checks; as post_visitor_messages does per message): what the server recorded as itself and what
    the actor does then commit together. Within a savepoint (`conn.transaction()`) the actor ends
    with it if it is rolled back."""
    await conn.fetchval(_BEGIN, *_request_args(actor))


@lru_cache(maxsize=256)
def in_request(query: str, nargs: int, traced: bool = False) -> str:
    """`query` (parameters $1..$nargs) as one statement that begins the request itself.

    begin_request takes parameters $nargs+1..$nargs+7 and is the outer side of a LATERAL join
    whose gate (`WHERE request.role IS NOT NULL`, a one-time filter) references it, so Postgres
    runs it first; the statement is its own transaction, so set_config(..., true) ends with it.
    `traced`: $nargs+8 is the span's traceparent, set as app.traceparent under the same gate.
    """
    p = ", ".join(f"${nargs + i}" for i in range(1, 8))
    if not traced:
        return (
            f"SELECT result.* FROM parley.begin_request({p}) AS request(role)"
            f" CROSS JOIN LATERAL (SELECT * FROM ({query}) AS q WHERE request.role IS NOT NULL OFFSET 0) AS result"
        )
    return (
        f"SELECT result.* FROM parley.begin_request({p}) AS request(role)"
        f" CROSS JOIN LATERAL set_config('app.traceparent', ${nargs + 8}, true) AS trace(parent)"
        f" CROSS JOIN LATERAL (SELECT * FROM ({query}) AS q"
        " WHERE request.role IS NOT NULL AND trace.parent IS NOT NULL OFFSET 0) AS result"
    )


def _request_args(actor: Actor) -> tuple:
    return (actor.tenant_id, actor.kind, actor.actor_id, actor.session_id, actor.ip, actor.request_id, actor.min_role)


async def tenant_fetch(pool: asyncpg.Pool, actor: Actor, query: str, *args) -> list[asyncpg.Record]:
    """Run one query as `actor` in a single round trip and its own transaction (hot paths).

    The same checks as tenant_tx (begin_request runs first, in the same statement); a
    statement that takes locks releases them as soon as it ends, not after a COMMIT round
    trip (a bot reply holds its conversation row and the tenant's event lock until then).
    """
    logs.bind(tenant_id=actor.tenant_id)
    async with acquire(pool) as conn:
        with metrics.timed(_STATEMENT_SECONDS), tracing.child_span("db.statement", actor_kind=actor.kind):
            parent = tracing.traceparent()
            if parent is None:
                return await conn.fetch(in_request(query, len(args)), *args, *_request_args(actor))
            return await conn.fetch(in_request(query, len(args), True), *args, *_request_args(actor), parent)


async def tenant_fetchrow(pool: asyncpg.Pool, actor: Actor, query: str, *args) -> asyncpg.Record | None:
    """tenant_fetch for a query that returns at most one row."""
    rows = await tenant_fetch(pool, actor, query, *args)
    return rows[0] if rows else None


async def tenant_fetchval(pool: asyncpg.Pool, actor: Actor, query: str, *args) -> Any:
    """tenant_fetch for a query that returns one value (None when it returns no row)."""
    rows = await tenant_fetch(pool, actor, query, *args)
    return rows[0][0] if rows else None
