"""Waiting on real signals, with a deadline, instead of sleeping and hoping: a backend blocked on
a lock (pg_blocking_pids), notifications delivered up to now (a marker NOTIFY behind them), a
condition read from the database or the test's own state."""
from __future__ import annotations

import asyncio
import inspect
import uuid

import asyncpg

TIMEOUT = 10.0
POLL = 0.01
MARKER_CHANNEL = "parley_test_marker"


async def until(check, *, timeout: float = TIMEOUT, what: str = "the condition"):
    """Poll `check()` (sync or async) until it returns something truthy; return that."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        out = check()
        if inspect.isawaitable(out):
            out = await out
        if out:
            return out
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(POLL)


async def blocked_on_lock(owner_conn: asyncpg.Connection, pid: int | None = None, *,
                          user: str = "parley_app", timeout: float = TIMEOUT) -> int:
    """Wait until backend `pid` (or any backend of `user` on this database) waits for a lock another
    session holds; returns its pid."""
    query = ("SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND cardinality(pg_blocking_pids(pid)) > 0"
             + (" AND pid = $1" if pid is not None else " AND usename = $1") + " LIMIT 1")
    return await until(lambda: owner_conn.fetchval(query, pid if pid is not None else user), timeout=timeout,
                       what=f"backend {pid or user} to wait for a lock")


async def notifications_delivered(listener: asyncpg.Connection, sender: asyncpg.Connection, *,
                                  timeout: float = TIMEOUT) -> None:
    """Return once `listener` has been handed every notification committed before this call: a
    marker sent now on another channel comes after them (one queue, commit order)."""
    marker = uuid.uuid4().hex
    arrived = asyncio.Event()

    def on_marker(conn, pid, channel, payload):
        if payload == marker:
            arrived.set()

    await listener.add_listener(MARKER_CHANNEL, on_marker)
    try:
        await sender.execute("SELECT pg_notify($1, $2)", MARKER_CHANNEL, marker)
        await asyncio.wait_for(arrived.wait(), timeout)
    finally:
        await listener.remove_listener(MARKER_CHANNEL, on_marker)


class Output:
    """The lines a child process writes, and a wait for the first one matching."""

    def __init__(self, stream: asyncio.StreamReader):
        self.lines: list[str] = []
        self.changed = asyncio.Condition()
        self.task = asyncio.create_task(self._read(stream))

    async def _read(self, stream):
        while line := await stream.readline():
            async with self.changed:
                self.lines.append(line.decode(errors="replace").rstrip())
                self.changed.notify_all()

    async def wait_for(self, predicate, timeout: float = 60, start: int = 0) -> int:
        """Index of the first line from `start` on that satisfies predicate."""
        try:
            async with asyncio.timeout(timeout), self.changed:
                while True:
                    for i in range(start, len(self.lines)):
                        if predicate(self.lines[i]):
                            return i
                    await self.changed.wait()
        except TimeoutError:
            raise AssertionError("no such line; the last ones:\n" + "\n".join(self.lines[-20:])) from None


async def day_clear(conn: asyncpg.Connection, *, margin: float = 30.0) -> None:
    """Return once the database clock has `margin` seconds or more left in its UTC day: quotas count
    in UTC days (parley.usage_on), so a test that fills a day's quota and expects the next use
    refused would see a fresh day instead if midnight passed in between. The signal waited on is
    the clock itself: when too little of the day is left, this waits for the next one. (Rate limits
    need no such wait: parley.hit_rate_limit counts the last 60 seconds, whatever the clock says.)"""
    left = await conn.fetchval(
        "SELECT extract(epoch FROM date_trunc('day', now_utc) + interval '1 day' - now_utc)::float8"
        " FROM (SELECT clock_timestamp() AT TIME ZONE 'UTC') t(now_utc)")
    if left < margin:
        await asyncio.sleep(left + 0.05)
