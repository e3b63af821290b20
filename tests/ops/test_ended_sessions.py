"""A pooled connection whose session PostgreSQL ended (pg_terminate_backend, a restart) when the
close has not reached the server yet: asyncpg has read the FATAL error but still holds the socket,
and the next request on that connection fails with InternalClientError ("cannot switch to state
15; another operation (2) is in progress"). The request is answered 503 database_unavailable and
the connection is dropped: the next request answers. Before, 500 internal (seen in
bench/faults.py after a PostgreSQL restart and after sessions were ended at the connection limit)."""
from urllib.parse import urlsplit, urlunsplit

from pyapp.client import ParleyError
from pyapp.config import APP_ROLE
from support.proxy import HoldingProxy
from support.server import make_settings, start_server
from support.waits import until


async def test_a_request_on_a_session_postgresql_ended_answers_503(settings, signup, owner_conn):
    url = urlsplit(settings.admin_url)
    proxy = await HoldingProxy(url.hostname, url.port).start()
    proxied = make_settings(urlunsplit(url._replace(netloc=f"{url.netloc.rsplit('@', 1)[0]}@127.0.0.1:{proxy.port}")))
    server = await start_server(proxied)
    try:
        owner = await signup(server)
        api = server.client(owner["access_token"])
        await api.list_conversations()
        open_sessions = await owner_conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND usename = $1", APP_ROLE)
        assert open_sessions >= 1
        proxy.hold()
        await owner_conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                                 " WHERE datname = current_database() AND usename = $1", APP_ROLE)
        await proxy.wait_held(open_sessions)  # every pooled session: ended, its close held back
        statuses = []
        for _ in range(open_sessions):
            try:
                await api.list_conversations()
                statuses.append((200, "ok"))
            except ParleyError as exc:
                statuses.append((exc.status, exc.code))
        assert all(s == (503, "database_unavailable") or s == (200, "ok") for s in statuses), statuses
        assert (503, "database_unavailable") in statuses, statuses
        proxy.release()

        async def answers():
            try:
                await api.list_conversations()
            except ParleyError as exc:
                assert exc.code == "database_unavailable", exc
                return False
            return True

        await until(answers, timeout=30, what="REST to answer on fresh sessions")
    finally:
        proxy.release()
        await server.close()
        await proxy.close()
