"""The test databases: one PostgreSQL per run, a migrated template, a fresh copy per test.

Per-test isolation is `CREATE DATABASE ... TEMPLATE parley_template_<pid>` (file copy of a
small database, tens of milliseconds), so tests never share rows and never sleep.
"""
from __future__ import annotations

import os
import uuid
from pathlib import Path

import asyncpg
import psycopg
import pytest

from pyapp.config import Settings, with_database

from support.server import make_settings

ROOT = Path(__file__).resolve().parents[2]
# One template per test run: several people (and CI jobs) share the embedded test cluster.
TEMPLATE = f"parley_template_{os.getpid()}"


def drop_database(admin_url: str, name: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{name}" WITH is_template false') if conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() else None
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


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

    drop_database(pg_admin_url, TEMPLATE)
    migrate(make_settings(with_database(pg_admin_url, TEMPLATE)))
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{TEMPLATE}" WITH is_template true')
    yield TEMPLATE
    drop_database(pg_admin_url, TEMPLATE)


@pytest.fixture
def fresh_db(pg_admin_url, template_db):
    """A private copy of the migrated template for this test; dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}" STRATEGY FILE_COPY')
    yield with_database(pg_admin_url, name)
    drop_database(pg_admin_url, name)


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
