"""Test harness: one embedded cluster per run, a migrated template database, a fresh copy per test.

Per-test isolation is `CREATE DATABASE ... TEMPLATE parley_template` (file copy of a
small database, tens of milliseconds), so tests never share rows and never sleep.
"""
from __future__ import annotations

import asyncio
import os
import socket
import threading
import uuid
from pathlib import Path

import aiohttp
import asyncpg
import psycopg
import pytest
from aiohttp import web

from pyapp.config import Settings, with_database

ROOT = Path(__file__).resolve().parent.parent
TEST_SECRET = "test-secret-key-for-parley-tests-only"
# One template per test run: several people (and CI jobs) share the embedded test cluster.
TEMPLATE = f"parley_template_{os.getpid()}"


@pytest.fixture(scope="session")
def pg_admin_url():
    """Admin URL of the test server: TEST_DATABASE_URL, or a dedicated embedded cluster."""
    external = os.environ.get("TEST_DATABASE_URL")
    if external:
        yield external
        return
    from pyapp.embedded import EmbeddedCluster

    cluster = EmbeddedCluster(ROOT / ".parley" / "test-cluster")
    cluster.start()
    yield cluster.admin_url("postgres")


def _drop_database(admin_url: str, name: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{name}" WITH is_template false') if conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() else None
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def template_db(pg_admin_url):
    from pyapp.migrate import migrate

    _drop_database(pg_admin_url, TEMPLATE)
    migrate(make_settings(with_database(pg_admin_url, TEMPLATE)))
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{TEMPLATE}" WITH is_template true')
    yield TEMPLATE
    _drop_database(pg_admin_url, TEMPLATE)


def make_settings(admin_url: str, **overrides) -> Settings:
    # Cheap argon2 parameters: only tests set this (load_settings never does).
    extra = {"argon2_fast": True, **overrides.pop("extra", {})}
    return Settings(admin_url=admin_url, secret_key=TEST_SECRET, host="127.0.0.1", port=0,
                    embedded=False, extra=extra, **overrides)


@pytest.fixture
def fresh_db(pg_admin_url, template_db):
    """A private copy of the migrated template for this test; dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}" STRATEGY FILE_COPY')
    yield with_database(pg_admin_url, name)
    _drop_database(pg_admin_url, name)


@pytest.fixture
def settings(fresh_db) -> Settings:
    return make_settings(fresh_db)


@pytest.fixture
async def owner_conn(settings):
    """A superuser connection to the test database, for arranging and reading back facts."""
    from pyapp.db import _init_connection

    conn = await asyncpg.connect(settings.admin_url)
    await _init_connection(conn)
    yield conn
    await conn.close()


class RunningServer:
    """A real Parley server on 127.0.0.1 with a client session for calling it."""

    def __init__(self, app: web.Application, runner: web.AppRunner, port: int):
        self.app = app
        self.runner = runner
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"
        self.http = aiohttp.ClientSession()

    async def call(self, method: str, path: str, *, json=None, token: str | None = None,
                   headers: dict | None = None, data=None):
        """Returns (status, parsed JSON or text)."""
        hdrs = dict(headers or {})
        if token:
            hdrs["Authorization"] = f"Bearer {token}"
        async with self.http.request(method, self.base_url + path, json=json, data=data, headers=hdrs) as resp:
            if resp.content_type == "application/json":
                return resp.status, await resp.json()
            return resp.status, await resp.text()

    async def close(self):
        await self.http.close()
        await self.runner.cleanup()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def start_server(settings: Settings, port: int | None = None) -> RunningServer:
    from pyapp.app import create_app

    app = create_app(settings)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = port or free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    return RunningServer(app, runner, port)


@pytest.fixture
async def server(settings):
    srv = await start_server(settings)
    yield srv
    await srv.close()


class ServerThread:
    """The same server in a background thread with its own loop, for sync clients (Playwright)."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.server: RunningServer | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(start_server(self.settings))
        self.ready.set()
        self.loop.run_forever()

    def start(self) -> "ServerThread":
        self.thread.start()
        self.ready.wait(30)
        return self

    @property
    def base_url(self) -> str:
        return self.server.base_url

    def run(self, coro, timeout: float = 30):
        """Run a coroutine on the server's loop (e.g. an API call) and wait for it."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self):
        asyncio.run_coroutine_threadsafe(self.server.close(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture
def server_thread(settings):
    srv = ServerThread(settings).start()
    yield srv
    srv.stop()


# ---- accounts helpers, for any test that needs a signed-in person or an API key ----------

TEST_PASSWORD = "correct horse battery staple"


async def _signup(server, email: str | None = None, tenant: str | None = None, *, join: dict | None = None,
                  role: str = "agent", name: str = "Test User", password: str = TEST_PASSWORD,
                  plan: str | None = None) -> dict:
    """Sign up through the API. Returns access_token, refresh_token, tenant_id, user_id, email, password.

    Default: a new workspace (slug `tenant` or random) owned by the new person; `plan` moves it
    to another plan (e.g. "pro" for more seats than free's 3). With `join=<another signup
    result>`, the person instead joins that workspace with `role` (invited by that
    owner/admin) and the tokens are for it.
    """
    email = email or f"user-{uuid.uuid4().hex[:12]}@example.test"
    body = {"email": email, "password": password, "name": name}
    if join is None:
        slug = tenant or f"t-{uuid.uuid4().hex[:12]}"
        body.update(tenant_name=f"Workspace {slug}", slug=slug)
    status, out = await server.call("POST", "/api/auth/signup", json=body)
    assert status == 201, out
    if join is not None:
        status, invite = await server.call("POST", "/api/invites", json={"email": email, "role": role},
                                           token=join["access_token"])
        assert status == 201, invite
        status, joined = await server.call("POST", "/api/invites/accept", json={"token": invite["token"]},
                                           token=out["access_token"])
        assert status == 200, joined
        status, switched = await server.call("POST", "/api/auth/switch", json={"tenant_id": join["tenant_id"]},
                                             token=out["access_token"])
        assert status == 200, switched
        out["access_token"] = switched["access_token"]
        out["tenant"] = switched["tenant"]
    if plan is not None and join is None:
        from pyapp.api import SETTINGS

        conn = await asyncpg.connect(server.app[SETTINGS].admin_url)
        try:
            await conn.execute("UPDATE parley.tenants SET plan = $1 WHERE id = $2", plan, uuid.UUID(out["tenant"]["id"]))
        finally:
            await conn.close()
    return {"access_token": out["access_token"], "refresh_token": out["refresh_token"],
            "tenant_id": out["tenant"]["id"], "user_id": out["user"]["id"], "email": email,
            "password": password}


async def _make_api_key(server, token: str, scopes=("read", "write"), name: str = "test key") -> str:
    """Create an API key as the signed-in admin/owner `token`; returns the full key."""
    status, out = await server.call("POST", "/api/keys", json={"name": name, "scopes": list(scopes)}, token=token)
    assert status == 201, out
    return out["key"]


@pytest.fixture
def signup():
    """`await signup(server, email=None, tenant=None, join=None, role="agent")` -> dict of tokens and ids."""
    return _signup


@pytest.fixture
def make_api_key():
    """`await make_api_key(server, access_token, scopes=("read", "write"))` -> the API key."""
    return _make_api_key
