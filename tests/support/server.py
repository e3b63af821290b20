"""A real Parley server on 127.0.0.1 for tests: `server` (in the test's loop) and
`server_thread` (its own thread and loop, for sync clients such as Playwright)."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import threading
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from pyapp.config import Settings

from support.waits import Output

TEST_SECRET = "test-secret-key-for-parley-tests-only"


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

    def client(self, token: str | None = None):
        """The Python client (pyapp/client) on this server, sharing its session, acting with `token`."""
        from pyapp.client import ParleyClient

        return ParleyClient(self.base_url, token, session=self.http)

    async def close(self):
        await self.http.close()
        await self.runner.cleanup()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def start_server(settings: Settings, port: int | None = None) -> RunningServer:
    from pyapp.app import create_app, make_runner

    app = create_app(settings)
    runner = make_runner(app, access_log=None)
    await runner.setup()
    port = port or free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    return RunningServer(app, runner, port)


ROOT = Path(__file__).resolve().parents[2]


class ServeProcess:
    """`parley serve` as its own process on a fixed port (so clients reconnect to the restarted one),
    for faults that take a process down (SIGKILL). `call` is RunningServer's, over the session given
    to `start`. `env`: more environment for the process."""

    def __init__(self, settings: Settings, port: int, env: dict | None = None):
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"
        self.env = {**os.environ, "DATABASE_URL": settings.admin_url, "PARLEY_SECRET_KEY": TEST_SECRET,
                    "PARLEY_EMBED_WARM": "0", "PYTHONPATH": str(ROOT), **(env or {})}
        self.proc: asyncio.subprocess.Process | None = None
        self.out: Output | None = None
        self.http: aiohttp.ClientSession | None = None

    async def start(self, http: aiohttp.ClientSession) -> None:
        """Start it and return once it listens (its "listening on" log line)."""
        self.http = http
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "pyapp.cli", "serve", "--port", str(self.port), cwd=ROOT, env=self.env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        self.out = Output(self.proc.stdout)  # read all along, so the pipe never fills
        await self.out.wait_for(lambda line: "listening on" in line)

    async def call(self, method: str, path: str, *, json=None, token: str | None = None, headers: dict | None = None):
        """Returns (status, parsed JSON)."""
        assert self.http is not None, "start it first"
        hdrs = {**(headers or {}), **({"Authorization": f"Bearer {token}"} if token else {})}
        async with self.http.request(method, self.base_url + path, json=json, headers=hdrs) as resp:
            return resp.status, await resp.json()

    async def kill9(self) -> None:
        """SIGKILL, and return once it is gone (its port free for a restart)."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await asyncio.wait_for(self.proc.wait(), 10)
        if self.out is not None:
            await self.out.task


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

    def start(self) -> ServerThread:
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
async def server(settings):
    srv = await start_server(settings)
    yield srv
    await srv.close()


@pytest.fixture
def server_thread(settings):
    srv = ServerThread(settings).start()
    yield srv
    srv.stop()
