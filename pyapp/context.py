"""What every layer may know about the running application: its keys and the JSON shape.

The pool, the settings, whether to trust a proxy, the request id, and `json_dumps` live here
(not in the route registry) so the relay, the sockets and the console use them without
importing `pyapp.api`. This module imports nothing from `pyapp` but the settings type (`pyapp.config`, a leaf).
"""

from __future__ import annotations

import asyncio
import decimal
import ipaddress
import json
import os
import socket
import uuid
from typing import Any

import asyncpg
from aiohttp import web
from pydantic import BaseModel

from pyapp.config import Settings

POOL = web.AppKey("pool", asyncpg.Pool)
SETTINGS = web.AppKey("settings", Settings)
TRUST_PROXY = web.AppKey("trust_proxy", bool)
# The server's name: its pooled connections carry it (the bot turns they store are named after it) and
# its liveness lock is taken under it (pyapp/widget/turns.py, sql/53_bot_turns.sql).
WORKER = web.AppKey("worker", str)
EMBEDDER_WARM: web.AppKey[asyncio.Future] = web.AppKey(
    "embedder_warm"
)  # the embedding model loading at start (/readyz waits)
REQUEST_ID = web.RequestKey("request_id", str)
SESSION_TOKEN = web.RequestKey("session_token", str)


def server_name() -> str:
    """A name for one server (one app): its host, process and a random part, so that two apps in one
    process (tests) are two servers, and a server started again is a new one."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def client_ip(request: web.Request) -> str | None:
    """The peer address; X-Forwarded-For is trusted only when PARLEY_TRUST_PROXY is set.

    The last entry is the one our (single) proxy appended; earlier entries are whatever the
    client sent, so taking them would let anyone dodge per-address limits.
    """
    trust = request.app.get(TRUST_PROXY, False)
    if trust and request.headers.get("X-Forwarded-For"):
        return request.headers["X-Forwarded-For"].split(",")[-1].strip()
    return request.remote


def _default(value: Any) -> Any:
    if isinstance(value, uuid.UUID):
        return str(value)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if isinstance(value, bytes):
        return None  # hashes and other binary never go to clients
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, (ipaddress.IPv4Address, ipaddress.IPv6Address, ipaddress.IPv4Network, ipaddress.IPv6Network)):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def json_dumps(obj: Any) -> str:
    """JSON as every response and frame is written (uuids, datetimes, decimals, models)."""
    return json.dumps(obj, default=_default, ensure_ascii=False)
