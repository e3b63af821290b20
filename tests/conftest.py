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

from support import (  # noqa: F401
    ROOT,
    TEST_SECRET,
    TEMPLATE,
    _drop_database,
    make_settings,
    RunningServer,
    free_port,
    start_server,
    ServerThread,
    TEST_PASSWORD,
    _signup,
    _make_api_key,
)

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


@pytest.fixture(scope="session")
def template_db(pg_admin_url):
    from pyapp.migrate import migrate

    _drop_database(pg_admin_url, TEMPLATE)
    migrate(make_settings(with_database(pg_admin_url, TEMPLATE)))
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{TEMPLATE}" WITH is_template true')
    yield TEMPLATE
    _drop_database(pg_admin_url, TEMPLATE)


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


@pytest.fixture
def signup():
    """`await signup(server, email=None, tenant=None, join=None, role="agent")` -> dict of tokens and ids."""
    return _signup


@pytest.fixture
def make_api_key():
    """`await make_api_key(server, access_token, scopes=("read", "write"))` -> the API key."""
    return _make_api_key
