"""Every query the console runs, by name, from queries.sql (`-- name: x` + a one-line description).

They run inside the page's tenant transaction as parley_app, so RLS scopes them to the
tenant; none of them filters by tenant itself.
"""

from __future__ import annotations

import re
from pathlib import Path

import asyncpg

_FILE = Path(__file__).with_name("queries.sql")
_NAME = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.M)


def _load() -> dict[str, str]:
    text = _FILE.read_text()
    parts = _NAME.split(text)
    out: dict[str, str] = {}
    for i in range(1, len(parts), 2):
        out[parts[i]] = parts[i + 1].strip().rstrip(";")
    return out


QUERIES = _load()


def sql(name: str) -> str:
    return QUERIES[name]


async def fetch(conn: asyncpg.Connection, name: str, *args) -> list[asyncpg.Record]:
    return await conn.fetch(QUERIES[name], *args)


async def fetchrow(conn: asyncpg.Connection, name: str, *args) -> asyncpg.Record | None:
    return await conn.fetchrow(QUERIES[name], *args)


async def fetchval(conn: asyncpg.Connection, name: str, *args):
    return await conn.fetchval(QUERIES[name], *args)


async def execute(conn: asyncpg.Connection, name: str, *args) -> str:
    return await conn.execute(QUERIES[name], *args)
