"""How both sockets (agent and visitor) end when their handler fails."""

from __future__ import annotations

import logging
from collections.abc import Callable

import asyncpg
from aiohttp import web

from pyapp import metrics
from pyapp.context import json_dumps
from pyapp.db import PoolBusy, database_outage
from pyapp.errors import ApiError, database_busy, database_unavailable, from_postgres

log = logging.getLogger("parley.realtime")


async def close_after(ws: web.WebSocketResponse, exc: Exception, name: str, refused: Callable[[int], bool]) -> None:
    """A refusal the SQL rules raised is told to the client as an error frame, then the socket
    closes (4403 when `refused(status)`, else 1011); a database outage closes it with 1013 (see
    closed_for_outage); anything else is logged and closes 1011."""
    if await closed_for_outage(ws, exc):
        return
    if isinstance(exc, asyncpg.PostgresError):
        mapped = from_postgres(exc) or ApiError(500, "internal", "Internal error.")
        if mapped.status >= 500:
            log.error("%s failed", name, exc_info=exc)
        if not ws.closed:
            await ws.send_str(json_dumps({"type": "error", "code": mapped.code, "message": mapped.message}))
            await ws.close(code=4403 if refused(mapped.status) else 1011)
        return
    log.error("%s failed", name, exc_info=exc)
    if not ws.closed:
        await ws.close(code=1011, message=b"internal error")


TRY_AGAIN_LATER = 1013  # RFC 6455: a retryable close; clients reconnect with their backoff


async def closed_for_outage(ws: web.WebSocketResponse, exc: BaseException) -> bool:
    """Whether `exc` is a database outage; if so the client got a `database_unavailable` error frame
    (`database_busy` when no pooled connection came free in time) when still open and the socket
    closed with 1013, so it reconnects instead of giving up."""
    if not database_outage(exc):
        return False
    busy = _pool_busy(exc)
    if not busy:
        metrics.DB_UNAVAILABLE.inc()
    if not ws.closed:
        err = database_busy() if busy else database_unavailable()
        await ws.send_str(json_dumps({"type": "error", "code": err.code, "message": err.message}))
        await ws.close(code=TRY_AGAIN_LATER, message=b"database unavailable")
    return True


def _pool_busy(exc: BaseException | None) -> bool:
    """Whether `exc` is, or was raised from, pyapp.db.PoolBusy (the relay re-raises what it met)."""
    while exc is not None:
        if isinstance(exc, PoolBusy):
            return True
        exc = exc.__cause__
    return False
