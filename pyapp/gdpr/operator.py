"""`parley gdpr …` for operators: the same SQL as the API, run as the jobs role's `system` actor in
the tenant's own transaction (begin_request: row-level security and the audit trail apply)."""

from __future__ import annotations

import uuid
from pathlib import Path

import asyncpg

from pyapp.db import Actor, create_pool, tenant_tx

from .archive import archive_chunks, begin_export


async def resolve_tenant(admin_url: str, ref: str) -> uuid.UUID | None:
    """A tenant by slug or id (deleted ones too), read as the administrator."""
    conn = await asyncpg.connect(admin_url)
    try:
        return await conn.fetchval(
            "SELECT id FROM parley.tenants WHERE slug = lower($1) OR id::text = lower($1)", ref.strip()
        )
    finally:
        await conn.close()


def _system(tenant_id: uuid.UUID) -> Actor:
    return Actor(tenant_id=tenant_id, kind="system", actor_id="cli", min_role="admin")


async def export_to(jobs_url: str, tenant_id: uuid.UUID, out: Path, conversation_id, email) -> dict:
    """Write the export zip to `out` (chunk by chunk); returns its scope."""
    pool = await create_pool(jobs_url, min_size=1, max_size=1)
    try:
        async with tenant_tx(pool, _system(tenant_id)) as conn:
            scope = await begin_export(conn, conversation_id, email)
            with out.open("wb") as f:
                async for chunk in archive_chunks(conn, scope):
                    f.write(chunk)
        return scope
    finally:
        await pool.close()


async def erase(jobs_url: str, tenant_id: uuid.UUID, conversation_id, email) -> dict:
    pool = await create_pool(jobs_url, min_size=1, max_size=1)
    try:
        async with tenant_tx(pool, _system(tenant_id)) as conn:
            return await conn.fetchval("SELECT parley.gdpr_erase_visitor($1, $2)", conversation_id, email)
    finally:
        await pool.close()


async def purge(admin_url: str, jobs_url: str, now: uuid.UUID | None, batch: int) -> int:
    """Purge every deleted tenant past its grace (with `now`, that deleted tenant at once), batch by batch."""
    if now is not None:
        admin = await asyncpg.connect(admin_url)
        try:
            ended = await admin.execute(
                "UPDATE parley.tenants SET purge_after = now() WHERE id = $1 AND deleted_at IS NOT NULL", now
            )
        finally:
            await admin.close()
        if ended == "UPDATE 0":
            raise LookupError("that workspace is not deleted: delete it first (DELETE /api/tenant or staff)")
    conn = await asyncpg.connect(jobs_url)
    total = 0
    try:
        while deleted := await conn.fetchval("SELECT parley.purge_deleted_tenants($1)", batch):
            total += deleted
    finally:
        await conn.close()
    return total
