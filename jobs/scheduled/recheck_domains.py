"""Re-verify active custom domains once a day (sql/95_domains.sql): a domain whose DNS no longer
proves it goes 'failing', then 'disabled' after its grace; owners are e-mailed through the outbox.

The DNS is asked outside any transaction (dnspython, the configured resolver); each verdict is
parley.record_domain_recheck's, in that tenant's system transaction.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import asyncpg
from pyapp.db import Actor, tenant_tx
from pyapp.domains.dns import DomainConfig, DomainDns, domain_config

from jobs.schedule import Job

log = logging.getLogger("parley.jobs.domains")
BATCH = 200  # domains per run; the rest wait for the next hourly run


async def recheck(pool: asyncpg.Pool, settings: Any) -> dict:
    rows = await pool.fetch("SELECT * FROM parley.domains_due_for_recheck($1)", BATCH)
    counts: dict[str, int] = {"checked": 0, "failed": 0}
    if not rows:
        return counts
    checker = DomainDns(domain_config(settings) if settings is not None else DomainConfig())
    expected = await checker.expected()
    for row in rows:
        observed = await checker.observe(row["hostname"], row["txt_name"])
        actor = Actor(tenant_id=row["tenant_id"], kind="system", actor_id="jobs")
        try:
            async with tenant_tx(pool, actor) as conn:
                status = await conn.fetchval(
                    "SELECT parley.record_domain_recheck($1, $2, $3)", row["hostname"], observed, expected
                )
        except asyncpg.PostgresError as exc:
            counts["failed"] += 1
            log.warning("re-check of a domain of tenant %s failed: %s", row["tenant_id"], type(exc).__name__)
            continue
        counts["checked"] += 1
        if status is not None:
            counts[status] = counts.get(status, 0) + 1
    return counts


JOB = Job(every=timedelta(hours=1), per_tenant=False, work=recheck)
