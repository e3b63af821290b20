"""GET /metrics (Prometheus text format): not public by default.

- `PARLEY_METRICS_TOKEN` set: the main listener serves /metrics to `Authorization: Bearer <token>`
  (compared in constant time); anyone else gets 401.
- `PARLEY_METRICS_BIND=host:port`: a second listener serves only /metrics there (a private
  interface, or 127.0.0.1 for a sidecar), without the token unless one is also set.
- Neither: /metrics answers 404.

The jobs process has no HTTP server of its own: with `PARLEY_JOBS_METRICS_BIND=host:port` it
starts the same small listener (`serve_metrics`) for its own counters (job runs, outbox sends,
retry_after, database retries). Database figures (outbox depth and age, jobs lag, messages stored)
are read from SQL at each scrape by whichever process is scraped, with a 2 s limit; if the
database cannot be read, `parley_database_up` is 0 and the rest is still served.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import AsyncIterator

import asyncpg
from aiohttp import web

from pyapp import metrics
from pyapp.auth import bearer_token
from pyapp.context import POOL, SETTINGS
from pyapp.errors import ApiError

log = logging.getLogger("parley.metrics")
SCRAPE_TIMEOUT_S = 2.0


def parse_bind(value: str) -> tuple[str, int]:
    """`host:port` (IPv6 as `[::1]:9100`); a bare port means 127.0.0.1."""
    host, sep, port = value.rpartition(":")
    if not sep:
        host, port = "127.0.0.1", value
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"not host:port: {value!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


async def refresh_from_database(pool: asyncpg.Pool | None) -> None:
    """Set the gauges read at scrape time: the pool's connections and parley.metrics_snapshot()."""
    if pool is None:
        metrics.DATABASE_UP.set(0)
        return
    metrics.DB_POOL.labels("open").set(pool.get_size())
    metrics.DB_POOL.labels("idle").set(pool.get_idle_size())
    metrics.DB_POOL.labels("max").set(pool.get_max_size())
    try:
        snap = await pool.fetchrow("SELECT * FROM parley.metrics_snapshot()", timeout=SCRAPE_TIMEOUT_S)
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
        log.warning("metrics: database not read: %s", type(exc).__name__)
        metrics.DATABASE_UP.set(0)
        return
    metrics.DATABASE_UP.set(1)
    metrics.OUTBOX_PENDING.set(snap["outbox_pending"])
    metrics.OUTBOX_OLDEST.set(snap["outbox_oldest_s"])
    metrics.JOBS_LAG.set(snap["jobs_lag_s"])
    metrics.MESSAGES_STORED.set(snap["messages_inserted"])


async def _exposition(pool: asyncpg.Pool | None) -> web.Response:
    await refresh_from_database(pool)
    body, content_type = metrics.exposition()
    return web.Response(body=body, headers={"Content-Type": content_type})


def _check_token(request: web.Request, token: str) -> None:
    given = bearer_token(request) or ""
    if not hmac.compare_digest(given.encode(), token.encode()):
        raise ApiError(401, "unauthenticated", "The metrics token is missing or wrong.")


async def metrics_endpoint(request: web.Request) -> web.Response:
    """/metrics on the main listener: only with PARLEY_METRICS_TOKEN, and only to its bearer."""
    token = request.app[SETTINGS].extra.get("metrics_token")
    if not token:
        raise ApiError(404, "not_found", "Metrics are not served here.")
    _check_token(request, token)
    return await _exposition(request.app.get(POOL))


async def serve_metrics(pool_of, bind: str, token: str | None = None) -> web.AppRunner:
    """A listener serving only /metrics on `bind` (host:port); `pool_of()` gives the pool to read
    the database figures with (None while there is none). Returns its runner (cleanup() stops it)."""

    async def handler(request: web.Request) -> web.Response:
        if token:
            try:
                _check_token(request, token)
            except ApiError as exc:
                return web.json_response(exc.body(), status=exc.status)
        return await _exposition(pool_of())

    app = web.Application()
    app.router.add_get("/metrics", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    host, port = parse_bind(bind)
    await web.TCPSite(runner, host, port).start()
    log.info("metrics served on %s:%s", host, port)
    return runner


def setup(app: web.Application) -> None:
    app.router.add_get("/metrics", metrics_endpoint)
    bind = app[SETTINGS].extra.get("metrics_bind")
    if not bind:
        return

    async def listener(app: web.Application) -> AsyncIterator[None]:
        runner = await serve_metrics(lambda: app.get(POOL), bind, app[SETTINGS].extra.get("metrics_token"))
        yield
        await runner.cleanup()

    app.cleanup_ctx.append(listener)
