"""`parley partitions`: list, create ahead, drop expired. The rules (ranges, how long each table
keeps rows, what has expired) are SQL's: ops.partitions and parley.drop_expired_partitions."""

from __future__ import annotations

import asyncpg

OWNER_ROLE = "parley_owner"  # partitions are the owner's, like the tables they belong to


async def list_partitions(conn: asyncpg.Connection, table: str | None = None) -> list[dict]:
    rows = await conn.fetch(
        "SELECT table_name, partition_name, range_from, range_to, is_default, row_estimate, bytes, size,"
        "       extract(day FROM keep)::int AS keep_days, expired"
        "  FROM ops.partitions WHERE $1::text IS NULL OR table_name = $1",
        table,
    )
    return [dict(r) for r in rows]  # keep_days None: kept forever


async def create_ahead(conn: asyncpg.Connection, months: int, table: str | None = None) -> dict[str, int]:
    """Monthly partitions from this month to `months` ahead for every range-partitioned table."""
    created: dict[str, int] = {}
    async with conn.transaction():
        await conn.execute(f"SET LOCAL ROLE {OWNER_ROLE}")
        tables = await conn.fetch(
            "SELECT DISTINCT table_name FROM ops.partitions WHERE $1::text IS NULL OR table_name = $1 ORDER BY 1", table
        )
        for (name,) in tables:
            created[name] = await conn.fetchval(
                "SELECT parley.ensure_monthly_partitions($1::regclass, $2)", name, months
            )
    return created


async def drop_expired(conn: asyncpg.Connection, *, dry_run: bool, table: str | None = None) -> list[dict]:
    rows = await conn.fetch("SELECT * FROM parley.drop_expired_partitions($1, $2::regclass)", dry_run, table)
    return [dict(r) for r in rows]


def _cell(value) -> str:
    if value is None:
        return "-"
    if hasattr(value, "strftime"):
        return value.strftime("%Y-%m-%d")
    return str(value)


def render(rows: list[dict]) -> str:
    """A plain table for a terminal: one line per partition."""
    head = ["table", "partition", "from", "to", "rows", "size", "keep", "expired"]
    body = [
        [
            r["table_name"],
            r["partition_name"],
            _cell(r["range_from"]) if not r["is_default"] else "(default)",
            _cell(r["range_to"]),
            _cell(r["row_estimate"]),
            r["size"],
            "forever" if r["keep_days"] is None else f"{r['keep_days']} days",
            "yes" if r["expired"] else "",
        ]
        for r in rows
    ]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body, strict=True)]
    return "\n".join(
        "  ".join(str(x).ljust(w) for x, w in zip(line, widths, strict=True)).rstrip() for line in [head, *body]
    )
