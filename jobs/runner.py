"""`parley jobs`: run due scheduled SQL jobs and drain the embedding queue, as parley_jobs.

At start it registers the jobs of jobs/scheduled/ in parley.job_schedules; then it claims
due jobs from there one at a time (FOR UPDATE SKIP LOCKED, next_run_at moved forward in the
claiming statement), so any number of jobs processes can run side by side and none runs a
job twice. Rows marked `external` are left to pg_cron.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import time

import asyncpg
from pyapp.db import create_pool

from jobs.schedule import JOBS, disabled_jobs, register, run_job

log = logging.getLogger("parley.jobs")
IDLE_SLEEP_S = 2.0


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


async def run_due_jobs(pool: asyncpg.Pool, worker: str | None = None, *, only: list[str] | None = None) -> list[str]:
    """Claim and run every due job (one at a time); returns the names run. The jobs must be
    registered (`jobs.schedule.register`) first."""
    worker = worker or worker_name()
    skip = disabled_jobs()
    names = [n for n in (only or JOBS) if n not in skip]
    ran: list[str] = []
    while True:
        row = await pool.fetchrow("SELECT * FROM parley.claim_due_job($1, $2)", worker, names)
        if row is None:
            return ran
        job = JOBS[row["name"]]
        started = time.monotonic()
        try:
            result, status = await run_job(pool, job), "ok"
        except Exception as exc:  # a broken job must not stop the others
            log.exception("job %s failed", job.name)
            result, status = {"error": f"{type(exc).__name__}: {exc}"[:500]}, "error"
        result["ms"] = round((time.monotonic() - started) * 1000, 1)
        await pool.execute("SELECT parley.finish_job($1, $2, $3)", job.name, status, result)
        log.info(json.dumps({"job": job.name, "status": status, **result}, default=str))
        ran.append(job.name)


HEARTBEAT_FILE = os.environ.get("PARLEY_JOBS_HEARTBEAT", "/tmp/parley-jobs.alive")


def _touch_heartbeat() -> None:
    """A file whose mtime says the loop is alive: the container health check reads it."""
    try:
        with open(HEARTBEAT_FILE, "a"):
            os.utime(HEARTBEAT_FILE)
    except OSError:
        pass


async def main(settings, once: bool = False) -> int:
    """Loop until SIGTERM/SIGINT (or one pass with once=True); returns the exit code."""
    from pyapp.channels.envelope import Keyring
    from pyapp.knowledge.ingest import drain_embeddings
    from pyapp.outbox.registry import default_senders

    from jobs.metering import Metering
    from jobs.outbox import OutboxDrainer

    pool = await create_pool(settings.jobs_url, min_size=1, max_size=4)
    outbox_pool = await create_pool(settings.jobs_url, min_size=1, max_size=4)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    worker = worker_name()
    log.info("jobs process %s started", worker)
    drainer = OutboxDrainer(outbox_pool, worker, listen_dsn=settings.jobs_url, senders=default_senders(settings),
                            keyring=Keyring.from_settings(settings.secret_key))
    metering = Metering(settings)
    outbox_task = None if once else asyncio.create_task(drainer.run(stop))
    try:
        await register(pool)
        while not stop.is_set():
            ran = await run_due_jobs(pool, worker)
            if "report_overage" in ran:  # the SQL job wrote the rows; send them to Stripe
                await metering.send(pool)
            _touch_heartbeat()
            embedded = await drain_embeddings(pool, actor_kind="system", until_empty=once,
                                              max_batches=1_000_000 if once else 50)
            if once:
                await drainer.drain()
                break
            if not ran and not embedded:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), IDLE_SLEEP_S)
    finally:
        stop.set()
        if outbox_task is not None:
            await asyncio.gather(outbox_task, return_exceptions=True)
        await drainer.close()
        await metering.close()
        await outbox_pool.close()
        await pool.close()
    return 0
