"""The pool and the one helper that opens every tenant-scoped transaction.

Tenant, actor, ip and request id are set with set_config(..., true) (SET LOCAL) by
parley.begin_request inside the transaction, so a pooled connection never carries
them to the next request.
"""
from __future__ import annotations

import json
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import AsyncIterator
from uuid import UUID

import asyncpg
from pgvector.asyncpg import register_vector


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    await conn.set_type_codec("json", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    try:
        await register_vector(conn)
    except ValueError:
        pass  # vector extension not installed in this database


async def create_pool(dsn: str, *, min_size: int = 2, max_size: int = 20) -> asyncpg.Pool:
    return await asyncpg.create_pool(dsn, min_size=min_size, max_size=max_size, init=_init_connection,
                                     command_timeout=60, max_inactive_connection_lifetime=300)


_ROLE: ContextVar[str] = ContextVar("parley_role", default="system")


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


@asynccontextmanager
async def tenant_tx(pool: asyncpg.Pool, actor: Actor) -> AsyncIterator[asyncpg.Connection]:
    """A transaction bound to one tenant; begin_request checks the session/key and role first."""
    async with pool.acquire() as conn:
        async with conn.transaction():
            role = await conn.fetchval(
                "SELECT parley.begin_request($1, $2, $3, $4, $5, $6, $7)",
                actor.tenant_id, actor.kind, actor.actor_id, actor.session_id,
                actor.ip, actor.request_id, actor.min_role)
            # Pool connection proxies take no attributes (__slots__): keep the role per task.
            reset = _ROLE.set(role)
            try:
                yield conn
            finally:
                _ROLE.reset(reset)


def role_of(conn: asyncpg.Connection) -> str:
    """The member role begin_request resolved for this transaction (or api_key / visitor / system)."""
    return _ROLE.get()
