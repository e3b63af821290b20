"""The scheduled jobs: each is one SQL function, run once globally or once per tenant.

The schedule itself (how often, enabled, run by pg_cron instead) lives in the table
parley.job_schedules (seeded by sql/63_jobs.sql); this module says what each name does.
Per-tenant jobs run inside a `system` tenant transaction, so RLS scopes every statement.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Awaitable, Callable

import asyncpg

from pyapp.db import Actor, tenant_tx

log = logging.getLogger("parley.jobs")


@dataclass(frozen=True)
class Job:
    name: str
    per_tenant: bool
    run: Callable[[asyncpg.Connection], Awaitable[object]]


def _embedding_model() -> str:
    from pyapp.knowledge.ingest import embedding_model_name

    return embedding_model_name()


async def _stale_embeddings(conn: asyncpg.Connection):
    model = _embedding_model()
    if not model:
        return 0
    return await conn.fetchval("SELECT parley.enqueue_stale_embeddings($1)", model)


JOBS: dict[str, Job] = {job.name: job for job in (
    Job("close_idle_conversations", True, lambda c: c.fetchval("SELECT parley.close_idle_conversations()")),
    Job("prune_rate_counters", True, lambda c: c.fetchval("SELECT parley.prune_rate_counters()")),
    Job("rollup_daily_stats", True, lambda c: c.fetchval("SELECT parley.rollup_daily_stats()")),
    Job("retention", True, lambda c: c.fetchval("SELECT parley.apply_retention()")),
    Job("maintain_partitions", False, lambda c: c.fetchval("SELECT parley.maintain_partitions()")),
    Job("enqueue_stale_embeddings", True, _stale_embeddings),
    Job("compact_usage", True, lambda c: c.fetchval("SELECT parley.compact_usage()")),
)}


async def tenant_ids(pool: asyncpg.Pool) -> list:
    return [r[0] for r in await pool.fetch("SELECT parley.job_tenant_ids()")]


async def run_job(pool: asyncpg.Pool, job: Job) -> dict:
    """Run one job now; per-tenant jobs get one short transaction per tenant (a failure stays local)."""
    if not job.per_tenant:
        async with pool.acquire() as conn:
            return {"result": _plain(await job.run(conn))}
    done, failed, total = 0, 0, 0
    for tenant_id in await tenant_ids(pool):
        try:
            async with tenant_tx(pool, Actor(tenant_id=tenant_id, kind="system", actor_id="jobs")) as conn:
                result = await job.run(conn)
            total += int(result or 0) if isinstance(result, (int, float)) else 0
            done += 1
        except asyncpg.PostgresError as exc:
            failed += 1
            log.warning("job %s failed for tenant %s: %s", job.name, tenant_id, exc)
    return {"tenants": done, "failed": failed, "total": total}


def _plain(value):
    return value if isinstance(value, (int, float, str, dict, list, type(None))) else str(value)


def disabled_jobs() -> set[str]:
    """PARLEY_JOBS_SKIP=name,name: jobs this process must not run (e.g. scheduled by pg_cron)."""
    return {n.strip() for n in os.environ.get("PARLEY_JOBS_SKIP", "").split(",") if n.strip()}
