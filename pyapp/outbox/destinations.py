"""Reading and deleting destinations of one kind, as each kind's own JSON function shows them
(parley.webhook_endpoint_json, alert_channel_json, telegram_channel_json): the API routes and the
console pages of webhooks, alerts and Telegram channels share these."""

from __future__ import annotations

import uuid

import asyncpg

from pyapp.errors import ApiError

# The JSON functions a destination kind is shown by (constants: they are spliced into SQL).
SHOWN_BY = frozenset({"webhook_endpoint_json", "alert_channel_json", "telegram_channel_json"})


def _shown_by(name: str) -> str:
    if name not in SHOWN_BY:
        raise ValueError(f"not a destination JSON function: {name}")
    return name


async def listed(conn: asyncpg.Connection, shown_by: str, kind: str) -> list[dict]:
    """Every destination of `kind` in the current tenant, oldest first, as `shown_by` shows it."""
    rows = await conn.fetch(
        f"SELECT parley.{_shown_by(shown_by)}(d.id) AS j FROM parley.outbox_destinations d"
        " WHERE d.kind = $1 ORDER BY d.created_at, d.id",
        kind,
    )
    return [r["j"] for r in rows]


async def shown(conn: asyncpg.Connection, shown_by: str, destination_id: uuid.UUID, missing: str) -> dict:
    """One destination as `shown_by` shows it; 404 `missing` when that function does not show it
    (another tenant's, unknown, or a destination of another kind)."""
    row = await conn.fetchval(f"SELECT parley.{_shown_by(shown_by)}($1)", destination_id)
    if row is None:
        raise ApiError(404, "not_found", missing)
    return row


async def delete(conn: asyncpg.Connection, shown_by: str, destination_id: uuid.UUID, missing: str) -> None:
    """Delete a destination `shown_by` shows (so a webhook route cannot delete a Telegram channel)."""
    await shown(conn, shown_by, destination_id, missing)
    await conn.execute("SELECT parley.delete_destination($1)", destination_id)
