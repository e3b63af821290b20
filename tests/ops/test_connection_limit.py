"""PostgreSQL with no room for another session (max_connections, or the database's CONNECTION
LIMIT, both SQLSTATE 53300): the server answers 503 `database_unavailable` with Retry-After, the
visitor socket closes with 1013 after that error frame, `parley jobs` waits and reconnects, and
both serve again by themselves once sessions are free. Before, REST answered a generic 500 and
the jobs process ended with TooManyConnectionsError; a visitor socket whose tenant's event feed
could not be read closed with 1011 (internal error), logged with its stack trace.

The limit is the test database's own (ALTER DATABASE ... CONNECTION LIMIT 0, which binds every
role but superusers, as max_connections binds every role but the reserved ones), and the app's
open sessions are ended so that the next request must open one."""
from pyapp.client import ParleyError
from support.cli import jobs_process, json_line
from support.realtime import Client, create_chatbot, visitor, widget_session
from support.waits import until


async def _no_room(owner_conn, roles: list[str]) -> None:
    """Refuse new sessions on this database to all but superusers, and end those of `roles`."""
    db = await owner_conn.fetchval("SELECT current_database()")
    await owner_conn.execute(f'ALTER DATABASE "{db}" CONNECTION LIMIT 0')
    await owner_conn.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE datname = current_database() AND usename = ANY($1::text[])", roles)


async def _room_again(owner_conn) -> None:
    db = await owner_conn.fetchval("SELECT current_database()")
    await owner_conn.execute(f'ALTER DATABASE "{db}" CONNECTION LIMIT -1')


async def test_server_at_the_connection_limit_answers_503_and_recovers(server, signup, owner_conn, settings):
    from pyapp.config import APP_ROLE

    owner = await signup(server)
    bot = await create_chatbot(owner_conn, owner["tenant_id"])
    sess = await widget_session(server, bot["key"])
    vis = await visitor(server, sess)
    await _no_room(owner_conn, [APP_ROLE])
    try:
        # Several calls: the first ones may meet the ended sessions, the next ones must open a new one.
        for _ in range(4):
            try:
                await server.client(owner["access_token"]).list_conversations()
                raise AssertionError("answered while no session could be opened")
            except ParleyError as exc:
                assert (exc.status, exc.code, exc.retry_after) == (503, "database_unavailable", 5), exc
        status, body = await server.call("POST", "/api/widget/sessions", json={"chatbot_key": bot["key"]},
                                         headers={"Origin": "https://shop.example"})
        assert (status, body["error"]["code"]) == (503, "database_unavailable"), body
        # The open visitor socket writing: told, then closed with a retryable code.
        await vis.send({"type": "message", "client_id": "c-1", "body": "anyone there?"})
        assert (await vis.expect(type="error"))["code"] == "database_unavailable"
        assert await vis.expect_closed() == 1013
        # Its reconnect: the chatbot is known (cached), but the tenant's event feed cannot be read.
        fresh = await Client.connect(server.base_url, "/ws/visitor")
        try:
            await fresh.send({"type": "hello", "token": sess["token"], "last_seen_id": 0})
            assert (await fresh.expect(type="error"))["code"] == "database_unavailable"
            assert await fresh.expect_closed() == 1013
        finally:
            await fresh.close()
    finally:
        await _room_again(owner_conn)
        await vis.close()

    async def answers():
        try:
            await server.client(owner["access_token"]).list_conversations()
        except ParleyError as exc:
            assert exc.code == "database_unavailable", exc
            return False
        return True

    await until(answers, timeout=30, what="REST to answer again once sessions are free")
    again = await visitor(server, sess)
    try:
        await again.send({"type": "message", "client_id": "c-2", "body": "back?"})
        assert (await again.expect_message("back?", author="visitor"))["client_id"] == "c-2"
    finally:
        await again.close()


async def test_jobs_wait_out_the_connection_limit(settings, owner_conn, tmp_path):
    from pyapp.config import JOBS_ROLE

    async with jobs_process(settings, tmp_path) as (proc, out):
        first = await out.wait_for(lambda line: "jobs_lag_s" in json_line(line))
        await _no_room(owner_conn, [JOBS_ROLE])
        try:
            # It keeps retrying (with backoff) instead of ending: three attempts refused.
            await out.wait_for(lambda line: json_line(line).get("attempt") == 3, start=first)
            assert proc.returncode is None, "\n".join(out.lines[-30:])
        finally:
            await _room_again(owner_conn)
        back = await out.wait_for(lambda line: json_line(line).get("reconnected") is True, start=first)
        assert json_line(out.lines[back])["jobs_lag_s"] >= 0
        assert proc.returncode is None
