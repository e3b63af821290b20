"""The scheduled jobs: one module per job in `jobs/scheduled/`, found here.

A job module's name is the job's name, and its `JOB` says everything else once: how often it
runs, whether once globally or once per tenant, and the SQL it runs (or, for a job that must ask
the outside world between SQL calls, the coroutine that does, e.g. recheck_domains' DNS lookups). The jobs process writes
names and intervals into parley.job_schedules (`register`, through parley.register_jobs) before
it claims anything; the table keeps only what operators set (enabled, external = run by pg_cron)
and the run history. Per-tenant jobs run inside a `system` tenant transaction, so RLS scopes
every statement.
"""

from __future__ import annotations

import importlib
import logging
import os
import pkgutil
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import timedelta
from types import ModuleType
from typing import Any

import asyncpg
from pyapp.db import Actor, tenant_tx

import jobs.scheduled

log = logging.getLogger("parley.jobs")

BACKLOG_BUDGET_S = 20.0  # how long a run of a job with `again` may go on calling while calls find work


@dataclass(frozen=True)
class Job:
    every: timedelta
    per_tenant: bool
    sql: str = ""  # one statement calling one parley function; $1.. come from `args`
    # The statement's arguments, read when the job runs; None skips this run (nothing to do).
    args: Callable[[], tuple | None] = tuple
    name: str = ""  # set by discovery: the module's name
    # A job that must ask the outside world between its SQL calls (DNS): run instead of `sql`
    # with the jobs pool and the process's settings; SQL still decides everything.
    work: Callable[[asyncpg.Pool, Any], Awaitable[dict]] | None = None
    # A job that works off a backlog a batch at a time (retention, the purge): while this says the
    # last call's result found work (rows deleted), the same call again (for the same tenant), each
    # in its own short transaction, until the run has taken BACKLOG_BUDGET_S. None: one call a run.
    again: Callable[[Any], bool] | None = None

    async def run(self, conn: asyncpg.Connection):
        args = self.args()
        if args is None:
            return 0
        return await conn.fetchval(self.sql, *args)


def discover(package: ModuleType = jobs.scheduled) -> dict[str, Job]:
    """Every `JOB` of the package's modules (jobs/scheduled/), by module name."""
    found: dict[str, Job] = {}
    for info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        job = getattr(module, "JOB", None)
        if not isinstance(job, Job) or bool(job.sql) == (job.work is not None):
            raise TypeError(f"{module.__name__} declares no JOB = Job(...) with either sql or work")
        found[info.name] = replace(job, name=info.name)
    return dict(sorted(found.items()))


JOBS: dict[str, Job] = discover()


async def register(pool: asyncpg.Pool, jobs: dict[str, Job] | None = None) -> None:
    """Write the registry's names and intervals into parley.job_schedules (idempotent)."""
    jobs = JOBS if jobs is None else jobs
    await pool.execute(
        "SELECT parley.register_jobs($1::text[], $2::interval[])", list(jobs), [job.every for job in jobs.values()]
    )


async def tenant_ids(pool: asyncpg.Pool) -> list:
    return [r[0] for r in await pool.fetch("SELECT parley.job_tenant_ids()")]


async def run_job(pool: asyncpg.Pool, job: Job, settings: Any = None, budget_s: float | None = None) -> dict:
    """Run one job now; per-tenant jobs get one short transaction per tenant (a failure stays local).
    A job with `again` calls again while its last call found work, for up to `budget_s`
    (BACKLOG_BUDGET_S) in all; `calls` counts the calls when there were more than one per tenant."""
    if job.work is not None:
        return await job.work(pool, settings)
    deadline = time.monotonic() + (BACKLOG_BUDGET_S if budget_s is None else budget_s)

    async def calls(transaction) -> list[Any]:
        """The job's call, in a fresh `transaction()` each time, again while `again` says so."""
        results: list[Any] = []
        while not results or (job.again is not None and job.again(results[-1]) and time.monotonic() < deadline):
            async with transaction() as conn:
                results.append(await job.run(conn))
        return results

    if not job.per_tenant:
        results = await calls(pool.acquire)
        if len(results) == 1:
            return {"result": _plain(results[0])}
        return {"result": sum(int(r or 0) for r in results), "calls": len(results)}
    done, failed, total, made = 0, 0, 0, 0
    tenants = await tenant_ids(pool)
    for tenant_id in tenants:
        try:
            results = await calls(
                lambda t=tenant_id: tenant_tx(pool, Actor(tenant_id=t, kind="system", actor_id="jobs"))
            )
            made += len(results)
            total += sum(int(r or 0) for r in results if isinstance(r, (int, float)))
            done += 1
        except asyncpg.PostgresError as exc:
            failed += 1
            log.warning("job %s failed for tenant %s: %s", job.name, tenant_id, exc)
    out = {"tenants": done, "failed": failed, "total": total}
    return out | {"calls": made} if made > len(tenants) else out


def _plain(value):
    return value if isinstance(value, (int, float, str, dict, list, type(None))) else str(value)


def disabled_jobs() -> set[str]:
    """PARLEY_JOBS_SKIP=name,name: jobs this process must not run (e.g. scheduled by pg_cron)."""
    return {n.strip() for n in os.environ.get("PARLEY_JOBS_SKIP", "").split(",") if n.strip()}
