"""More requests than the pool serves (found by bench/connections.py): a request that waits longer than
PARLEY_DB_ACQUIRE_TIMEOUT for a pooled connection is answered 503 database_busy with Retry-After, not
held for as long as the queue ahead of it (before: for ever, while the connections stayed in use), and
the server serves again as soon as a connection is free."""
from __future__ import annotations

import asyncio

import pytest
from pyapp.context import POOL
from support.realtime import Client, SseClient, create_chatbot, widget_session
from support.server import start_server
from support.waits import blocked_on_lock


@pytest.fixture
async def small_pool(settings, monkeypatch):
    monkeypatch.setenv("PARLEY_DB_ACQUIRE_TIMEOUT", "0.5")
    settings.extra["db_pool_size"] = 2
    srv = await start_server(settings)
    yield srv
    await srv.close()


async def test_a_request_that_gets_no_pooled_connection_in_time_is_told_the_database_is_busy(
        small_pool, signup, owner_conn):
    owner = await signup(small_pool)
    bot = await create_chatbot(owner_conn, owner["tenant_id"])
    session = await widget_session(small_pool, bot["key"])
    pool = small_pool.app[POOL]
    held = [await pool.acquire() for _ in range(2)]  # every connection in use (a long transaction, say)
    try:
        status, body = await asyncio.wait_for(
            small_pool.call("GET", "/api/conversations", token=owner["access_token"]), 10)
        assert status == 503 and body["error"]["code"] == "database_busy"
        async with small_pool.http.get(small_pool.base_url + "/api/me",
                                       headers={"Authorization": f"Bearer {owner['access_token']}"}) as resp:
            assert resp.status == 503 and resp.headers["Retry-After"] == "1"
        async with small_pool.http.post(small_pool.base_url + "/api/auth/login",  # no tenant yet: the same
                                        json={"email": owner["email"], "password": "x" * 12}) as resp:
            assert resp.status == 503 and (await resp.json())["error"]["code"] == "database_busy"
        visitor = await Client.connect(small_pool.base_url, "/ws/visitor")  # a socket: told, and 1013 (retry)
        await visitor.send({"type": "hello", "token": session["token"], "last_seen_id": 0})
        assert (await visitor.expect(type="error"))["code"] == "database_busy"
        assert await visitor.expect_closed() == 1013
        await visitor.close()
    finally:
        for conn in held:
            await pool.release(conn)
    status, _ = await small_pool.call("GET", "/api/conversations", token=owner["access_token"])
    assert status == 200


async def test_an_event_stream_whose_replay_gets_no_pooled_connection_says_the_database_is_busy(
        small_pool, signup, owner_conn):
    """GET /api/events is answered 200 before it reads the tenant's events; when its replay then waits
    too long for a pooled connection the stream ends with an error event database_busy (as the sockets
    say before 1013), not database_unavailable, nor cut off with a traceback in the log (before: the
    TimeoutError left the handler unhandled)."""
    owner = await signup(small_pool)
    pool = small_pool.app[POOL]
    first = await SseClient.connect(small_pool, owner["access_token"])  # the tenant's feed is ready
    await first.expect(lambda e: "retry" in e)
    held: list = []
    waiting = None
    async with owner_conn.transaction():
        # The second stream's credential check (parley.begin_request reads the session's refresh token)
        # waits behind this lock, holding one of the pool's two connections.
        await owner_conn.execute("LOCK TABLE parley.refresh_tokens IN ACCESS EXCLUSIVE MODE")
        second = asyncio.ensure_future(SseClient.connect(small_pool, owner["access_token"], last_event_id=0))
        await blocked_on_lock(owner_conn)
        held.append(await pool.acquire())  # the other connection
        waiting = asyncio.ensure_future(pool.acquire())  # queued first for the one the check frees
    try:
        held.append(await asyncio.wait_for(waiting, 10))
        stream = await asyncio.wait_for(second, 10)
        assert stream.resp.status == 200
        error = await stream.expect(lambda e: e.get("event") == "error")
        assert error["data"] == {"code": "database_busy"}
        await stream.close()
    finally:
        if waiting is not None and not waiting.done():
            waiting.cancel()
        for conn in held:
            await pool.release(conn)
        await first.close()


async def test_a_pool_that_cannot_reopen_its_connections_logs_a_line_not_a_traceback(settings, owner_conn):
    """asyncpg's pool reopens the connections it keeps (min_size) while the database refuses them (here
    the database's connection limit, as at a restart or max_connections) and logged a whole traceback
    for every try; pyapp.db.OutageLines makes each one line naming the error."""
    import logging
    import sys

    import asyncpg
    from pyapp.db import OutageLines, create_pool

    seen: asyncio.Queue[logging.LogRecord] = asyncio.Queue()

    class Catch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.put_nowait(record)

    catch = Catch()
    logging.getLogger("asyncpg.pool").addHandler(catch)
    db = await owner_conn.fetchval("SELECT current_database()")
    pool = await create_pool(settings.app_url, min_size=2, max_size=2)
    try:
        await owner_conn.execute(f'ALTER DATABASE "{db}" CONNECTION LIMIT 0')  # parley_app may not connect
        await owner_conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND usename = 'parley_app'")
        record = await asyncio.wait_for(seen.get(), 10)
        assert record.exc_info is None and "TooManyConnectionsError" in record.getMessage(), record.getMessage()
        assert "floor" in record.getMessage()
    finally:
        logging.getLogger("asyncpg.pool").removeHandler(catch)
        await owner_conn.execute(f'ALTER DATABASE "{db}" CONNECTION LIMIT -1')
        pool.terminate()
    # Anything else keeps its traceback.
    try:
        await owner_conn.execute("SELECT 1/0")
    except asyncpg.PostgresError:
        other = logging.LogRecord("asyncpg.pool", logging.WARNING, __file__, 0, "failed", None, sys.exc_info())
    assert OutageLines().filter(other) and other.exc_info is not None and other.getMessage() == "failed"
