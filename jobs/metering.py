"""Overage on metered plans, reported to Stripe as Billing Meter events.

The scheduled job `report_overage` (jobs/scheduled/) writes the rows in SQL; the runner then
calls `Metering.send`. Per tenant: one short transaction claims the finished days' overage rows (SQL decides what is
owed: parley.claim_usage_reports), then each row is sent with its identifier as Stripe's
dedupe key, then marked reported. A crash between the two resends the same identifier on the
next run, which Stripe drops, so a day is billed once however often the job runs.
"""

from __future__ import annotations

import datetime as dt
import logging

import asyncpg
import stripe
from pyapp.billing.config import billing_config
from pyapp.billing.gateway import Gateway
from pyapp.db import Actor, tenant_tx

log = logging.getLogger("parley.jobs.metering")


async def report_overage(pool: asyncpg.Pool, gateway: Gateway, today: dt.date | None = None) -> dict:
    """Report every tenant's pending overage; returns counts (sent, failed tenants)."""
    if not gateway.live:
        return {"sent": 0, "skipped": "payments disabled"}
    sent = failed = 0
    for (tenant_id,) in await pool.fetch("SELECT parley.job_tenant_ids()"):
        actor = Actor(tenant_id=tenant_id, kind="system", actor_id="jobs")
        try:
            async with tenant_tx(pool, actor) as conn:
                rows = await conn.fetch("SELECT * FROM parley.claim_usage_reports($1)", today)
            for row in rows:
                day = row["day"]
                await gateway.meter_event(
                    event_name=gateway.config.meters[row["metric"]],
                    customer=row["customer_ref"],
                    value=row["quantity"],
                    identifier=row["identifier"],
                    timestamp=int(dt.datetime(day.year, day.month, day.day, 12, tzinfo=dt.UTC).timestamp()),
                )
                async with tenant_tx(pool, actor) as conn:
                    await conn.fetchval("SELECT parley.mark_usage_reported($1)", row["identifier"])
                sent += 1
        except (asyncpg.PostgresError, stripe.StripeError) as exc:
            failed += 1
            log.warning("overage report failed for tenant %s: %s", tenant_id, type(exc).__name__)
    return {"sent": sent, "failed": failed}


class Metering:
    """The jobs process's sender: runs after the scheduled `report_overage` job wrote the rows."""

    def __init__(self, settings):
        self.gateway = Gateway(billing_config(settings))

    async def send(self, pool: asyncpg.Pool) -> dict:
        result = await report_overage(pool, self.gateway)
        log.info("overage reports: %s", result)
        return result

    async def close(self) -> None:
        await self.gateway.close()
