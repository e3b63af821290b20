"""How both sockets (agent and visitor) end when their handler fails."""

from __future__ import annotations

import logging
from collections.abc import Callable

import asyncpg
from aiohttp import web

from pyapp.context import json_dumps
from pyapp.db import outage_error
from pyapp.errors import ApiError, from_postgres

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
    """Whether `exc` is a database outage or a busy pool (pyapp.db.outage_error); if so the client got
    that error frame (database_unavailable or database_busy) when still open and the socket closed
    with 1013, so it reconnects instead of giving up."""
    err = outage_error(exc)
    if err is None:
        return False
    if not ws.closed:
        await ws.send_str(json_dumps({"type": "error", "code": err.code, "message": err.message}))
        await ws.close(code=TRY_AGAIN_LATER, message=b"database unavailable")
    return True
