"""Prometheus metrics of this process (prometheus-client), one registry per process.

A leaf: it imports nothing from `pyapp`, so the pool helpers, the sockets, the responder and the
jobs process all count into it. No series carries a tenant, a conversation or a user: every
label takes values from a short fixed list (socket kind, author, outcome, channel kind, phase,
status class), so the number of series is bounded whatever the traffic. Figures that live in
the database (outbox depth and age, jobs lag, messages stored) are read from SQL when scraped
(`parley.metrics_snapshot`), not counted here, so every server shows the same value.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)

REGISTRY = CollectorRegistry()
ProcessCollector(registry=REGISTRY)  # CPU seconds, resident memory, open file descriptors

# Latencies from a millisecond (a pooled query) to two minutes (a slow model's whole answer).
_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)

SOCKETS_OPEN = Gauge(
    "parley_sockets_open", "Open realtime connections, by kind (visitor, agent, agent_sse)", ["kind"], registry=REGISTRY
)
HTTP_REQUESTS = Counter(
    "parley_http_requests_total",
    "HTTP requests answered, by method and status class",
    ["method", "status"],
    registry=REGISTRY,
)
HTTP_SECONDS = Histogram(
    "parley_http_request_seconds", "Time to answer an HTTP request", buckets=_SECONDS, registry=REGISTRY
)
MESSAGES = Counter(
    "parley_messages_total",
    "Messages stored through this process, by author (visitor, agent, bot)",
    ["author"],
    registry=REGISTRY,
)
BOT_TURNS = Counter("parley_bot_turns_total", "Bot turns, by outcome", ["outcome"], registry=REGISTRY)
BOT_SECONDS = Histogram(
    "parley_bot_turn_seconds",
    "Bot turn latency from the visitor's message, by phase (retrieval done, first token, whole answer)",
    ["phase"],
    buckets=_SECONDS,
    registry=REGISTRY,
)
LIMITED = Counter(
    "parley_rate_limited_total",
    "Requests and frames refused by a rate or plan limit (HTTP 402/429), by code",
    ["code"],
    registry=REGISTRY,
)
DB_UNAVAILABLE = Counter(
    "parley_database_unavailable_total",
    "Requests and frames answered database_unavailable (outage)",
    registry=REGISTRY,
)
DB_POOL_WAIT = Histogram(
    "parley_db_pool_wait_seconds",
    "Wait for a pooled connection (tenant transactions and statements)",
    buckets=_SECONDS,
    registry=REGISTRY,
)
DB_QUERY = Histogram(
    "parley_db_query_seconds",
    "A tenant transaction or single-statement request, from its connection to its end",
    ["kind"],
    buckets=_SECONDS,
    registry=REGISTRY,
)
DB_POOL = Gauge(
    "parley_db_pool_connections", "The app pool's connections, by state (open, idle, max)", ["state"], registry=REGISTRY
)
DATABASE_UP = Gauge("parley_database_up", "1 when the scrape could read the database, else 0", registry=REGISTRY)
OUTBOX_PENDING = Gauge("parley_outbox_pending", "Deliveries waiting in the outbox (all tenants)", registry=REGISTRY)
OUTBOX_OLDEST = Gauge(
    "parley_outbox_oldest_pending_seconds", "Age of the oldest pending delivery (0 when none)", registry=REGISTRY
)
JOBS_LAG = Gauge(
    "parley_jobs_lag_seconds",
    "How long the oldest due scheduled job has waited past its time (0 when none)",
    registry=REGISTRY,
)
MESSAGES_STORED = Gauge(
    "parley_messages_inserted",
    "Rows inserted into parley.messages since the database's statistics were reset",
    registry=REGISTRY,
)
# The jobs process: outbox sends by destination kind (webhook, slack, telegram, ...).
CHANNEL_SENDS = Counter(
    "parley_channel_sends_total",
    "Outbox delivery attempts, by destination kind and outcome",
    ["kind", "outcome"],
    registry=REGISTRY,
)
CHANNEL_SECONDS = Histogram(
    "parley_channel_send_seconds",
    "One delivery attempt's latency (webhooks included), by destination kind",
    ["kind"],
    buckets=_SECONDS,
    registry=REGISTRY,
)
CHANNEL_RETRY_AFTER = Histogram(
    "parley_channel_retry_after_seconds",
    "retry_after a destination asked for (429), by destination kind",
    ["kind"],
    buckets=(1, 2, 5, 10, 30, 60, 120, 300, 900, 3600),
    registry=REGISTRY,
)
JOB_RUNS = Counter(
    "parley_job_runs_total",
    "Scheduled job runs, by job and outcome (ok, failed)",
    ["job", "outcome"],
    registry=REGISTRY,
)
JOBS_DB_RETRIES = Counter(
    "parley_jobs_database_retries_total", "Passes of the jobs process abandoned in an outage", registry=REGISTRY
)


def status_class(status: int) -> str:
    return f"{status // 100}xx"


def count_refusal(status: int, code: str) -> None:
    """A client error raised by SQL: limits (402, 429) are counted by their stable code."""
    if status in (402, 429):
        LIMITED.labels(code).inc()


@contextmanager
def timed(histogram: Any) -> Iterator[None]:
    """Observe the block's duration (seconds, monotonic) in `histogram` (a labelled child or not)."""
    started = time.perf_counter()
    try:
        yield
    finally:
        histogram.observe(time.perf_counter() - started)


def tracked(kind: str, handler: Callable[[Any], Awaitable[Any]]) -> Callable[[Any], Awaitable[Any]]:
    """A socket or stream handler counted in parley_sockets_open{kind} while it runs."""
    gauge = SOCKETS_OPEN.labels(kind)

    async def run(request: Any) -> Any:
        gauge.inc()
        try:
            return await handler(request)
        finally:
            gauge.dec()

    run.__name__ = getattr(handler, "__name__", "handler")
    return run


def exposition() -> tuple[bytes, str]:
    """The registry in Prometheus' text format, and its content type."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
