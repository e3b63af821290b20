"""Helpers shared by the test suites: `from support import ...` (tests/ is on sys.path).

Kept out of conftest.py: several conftest.py files exist and `import conftest` picks
whichever comes first on sys.path.
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


def _drop_database(admin_url: str, name: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{name}" WITH is_template false') if conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() else None
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def make_settings(admin_url: str, **overrides) -> Settings:
    # Cheap argon2 parameters: only tests set this (load_settings never does).
    extra = {"argon2_fast": True, **overrides.pop("extra", {})}
    return Settings(admin_url=admin_url, secret_key=TEST_SECRET, host="127.0.0.1", port=0,
                    embedded=False, extra=extra, **overrides)


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
        from pyapp.context import SETTINGS

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
