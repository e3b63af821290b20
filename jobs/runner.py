"""`parley jobs`: run due scheduled SQL jobs and drain the embedding queue, as parley_jobs; drain the
outbox (jobs/outbox.py) and poll Telegram channels without a webhook (jobs/telegram_poll.py).

At start it registers the jobs of jobs/scheduled/ in parley.job_schedules; then it claims
due jobs from there one at a time (FOR UPDATE SKIP LOCKED, next_run_at moved forward in the
claiming statement), so any number of jobs processes can run side by side and none runs a
job twice. Rows marked `external` are left to pg_cron.

It survives the database going away (restart, failover, lost connection): the pass that failed
is abandoned, the process waits with exponential backoff (0.5 s doubling to 30 s, with jitter)
and tries again until PostgreSQL answers; it exits only on SIGTERM/SIGINT. Every minute, and
whenever it reconnects, it logs its lag: how long the oldest due job has waited to be claimed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import signal
import socket
import time

import asyncpg
from pyapp import metrics, tracing
from pyapp.db import create_pool, db_unavailable

from jobs.schedule import JOBS, disabled_jobs, register, run_job

log = logging.getLogger("parley.jobs")
IDLE_SLEEP_S = 2.0
BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 30.0
LAG_EVERY_S = 60.0


class Backoff:
    """Exponential backoff with full jitter, reset by a success."""

    def __init__(self, first: float = BACKOFF_FIRST_S, cap: float = BACKOFF_MAX_S):
        self.first, self.cap, self.failures = first, cap, 0

    def next_delay(self) -> float:
        self.failures += 1
        return random.uniform(self.first / 2, min(self.cap, self.first * 2 ** (self.failures - 1)))

    def reset(self) -> None:
        self.failures = 0


async def lag_seconds(pool: asyncpg.Pool, names: list[str] | None = None) -> float:
    """How long the oldest due job this process runs has waited (0 when none is due)."""
    return float(await pool.fetchval("SELECT parley.jobs_lag($1)", names or list(JOBS)))


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


async def run_due_jobs(
    pool: asyncpg.Pool, worker: str | None = None, *, only: list[str] | None = None, settings=None
) -> list[str]:
    """Claim and run every due job (one at a time); returns the names run. The jobs must be
    registered (`jobs.schedule.register`) first; `settings` reach the jobs that work outside SQL."""
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
            result, status = await run_job(pool, job, settings), "ok"
        except Exception as exc:  # a broken job must not stop the others
            if db_unavailable(exc):
                raise  # not the job's fault: the runner waits for the database and claims again
            log.exception("job %s failed", job.name)
            result, status = {"error": f"{type(exc).__name__}: {exc}"[:500]}, "error"
        result["ms"] = round((time.monotonic() - started) * 1000, 1)
        metrics.JOB_RUNS.labels(job.name, "ok" if status == "ok" else "failed").inc()
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
    """Loop until SIGTERM/SIGINT (or one pass with once=True); returns the exit code.
    With PARLEY_JOBS_METRICS_BIND (host:port) the process serves its own /metrics there."""
    from pyapp.ops.metrics import serve_metrics

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    backoff = Backoff()
    tracing.configure(service="parley-jobs")  # only when OTEL_EXPORTER_OTLP_ENDPOINT is set
    held: dict = {}  # the pool, once there is one: the metrics listener reads the database with it
    bind = settings.extra.get("jobs_metrics_bind")
    listener = None if once or not bind else await serve_metrics(lambda: held.get("pool"), bind)
    try:
        pools = await _pools_when_reachable(settings, stop, backoff, once)
        if pools is None:
            return 0 if stop.is_set() else 2
        held["pool"] = pools[0]
        return await _loop(settings, stop, backoff, pools, once)
    finally:
        if listener is not None:
            await listener.cleanup()
        tracing.shutdown()


async def _loop(settings, stop: asyncio.Event, backoff: Backoff, pools, once: bool) -> int:
    from pyapp.channels.envelope import Keyring
    from pyapp.knowledge.ingest import drain_embeddings
    from pyapp.outbox.registry import default_senders

    from jobs.outbox import OutboxDrainer
    from jobs.telegram_poll import TelegramPoller

    pool, outbox_pool = pools
    worker = worker_name()
    log.info("jobs process %s started", worker)
    senders = default_senders(settings)
    drainer = OutboxDrainer(
        outbox_pool,
        worker,
        listen_dsn=settings.jobs_listen_url,
        senders=senders,
        keyring=Keyring.from_settings(settings.secret_key),
    )
    outbox_task = None if once else asyncio.create_task(drainer.run(stop))
    # Telegram long polling acts as the server (the webhook it stands in for): the app's role.
    app_pool = await create_pool(settings.app_url, min_size=1, max_size=4)
    poller = TelegramPoller(app_pool, worker, Keyring.from_settings(settings.secret_key))
    poll_task = None if once else asyncio.create_task(poller.run(stop))
    registered = False
    lag_logged = 0.0
    try:
        while not stop.is_set():
            try:
                if not registered:
                    await register(pool)
                    await resume_payment_deliveries(pool, senders)
                    registered = True
                ran = await run_due_jobs(pool, worker, settings=settings)
                _touch_heartbeat()
                if backoff.failures or time.monotonic() - lag_logged >= LAG_EVERY_S:
                    log.info(
                        json.dumps(
                            {"jobs_lag_s": round(await lag_seconds(pool), 1), "reconnected": bool(backoff.failures)}
                        )
                    )
                    lag_logged = time.monotonic()
                backoff.reset()
                embedded = await drain_embeddings(
                    pool, actor_kind="system", until_empty=once, max_batches=1_000_000 if once else 50
                )
                if once:
                    await drainer.drain()
                    await poller.poll_once()
                    break
            except Exception as exc:
                if once or not db_unavailable(exc):
                    raise
                await _wait_for_database(stop, backoff, exc, "database unavailable")
                continue
            if not ran and not embedded:
                await _sleep_unless_stopped(stop, IDLE_SLEEP_S)
    finally:
        stop.set()
        if outbox_task is not None:
            await asyncio.gather(outbox_task, return_exceptions=True)
        if poll_task is not None:
            await asyncio.gather(poll_task, return_exceptions=True)
        await drainer.close()
        await poller.close()
        await app_pool.close()
        await outbox_pool.close()
        await pool.close()
    return 0


async def resume_payment_deliveries(pool: asyncpg.Pool, senders: dict) -> int:
    """With payments on, resume the Stripe destinations a drainer paused for the operator's configuration
    (payments off, the API key refused): a start is when that configuration changes."""
    from pyapp.billing.sender import OPERATOR_PAUSES

    stripe_sender = senders.get("stripe")
    if stripe_sender is None or not getattr(stripe_sender, "live", False):
        return 0
    resumed = int(await pool.fetchval("SELECT parley.resume_stripe_destinations($1)", list(OPERATOR_PAUSES)))
    if resumed:
        log.info("resumed %d Stripe destination(s) held for the payments configuration", resumed)
    return resumed


async def _sleep_unless_stopped(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


async def _wait_for_database(stop: asyncio.Event, backoff: Backoff, exc: Exception, what: str) -> None:
    """Log the failed attempt (one JSON line) and wait the backoff's next delay, or until stopped."""
    delay = backoff.next_delay()
    metrics.JOBS_DB_RETRIES.inc()
    error = f"{type(exc).__name__}: {exc}"[:300]
    log.warning(json.dumps({"jobs": what, "error": error, "attempt": backoff.failures, "retry_in_s": round(delay, 2)}))
    await _sleep_unless_stopped(stop, delay)


async def _pools_when_reachable(settings, stop: asyncio.Event, backoff: Backoff, once: bool):
    """The two pools, retried with backoff while the database is unreachable at start (once: no retry).
    None when stopped first (or, with once, when the database is down)."""
    while not stop.is_set():
        pool = None
        try:
            pool = await create_pool(settings.jobs_url, min_size=1, max_size=4)
            outbox_pool = await create_pool(settings.jobs_url, min_size=1, max_size=4)
            backoff.reset()
            return pool, outbox_pool
        except Exception as exc:
            if pool is not None:
                await pool.close()
            if not db_unavailable(exc):
                raise
            if once:
                log.error("cannot reach the database: %s", exc)
                return None
            await _wait_for_database(stop, backoff, exc, "database unavailable at start")
    return None
