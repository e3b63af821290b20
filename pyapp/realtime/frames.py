"""Stored events as clients see them: read once per process, serialised once per audience."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg

from pyapp.context import json_dumps
from pyapp.db import Actor, tenant_fetch

BATCH = 500  # events read per service transaction


async def read_events(pool: asyncpg.Pool, actor: Actor, after: int, *, retries: int = 0) -> list[asyncpg.Record]:
    """parley.events_after in one statement (one round trip; its barrier ends before the read).

    While a writer keeps its transaction open, events_after gives up after 250 ms
    (LockNotAvailableError); `retries` more attempts are made 0.25 s apart before it propagates.
    """
    for attempt in range(retries + 1):
        try:
            return await tenant_fetch(pool, actor, "SELECT * FROM parley.events_after($1, $2)", after, BATCH)
        except asyncpg.LockNotAvailableError:
            if attempt == retries:
                raise
            await asyncio.sleep(0.25)
    raise AssertionError("unreachable")


def event_json(row: Any) -> dict:
    """One row of parley.events_after as the agent protocol shows it (None fields left out)."""
    rec = dict(row)
    out = {"id": rec.get("id"), "kind": rec.get("kind"), "conversation_id": rec.get("conversation_id")}
    for key in ("at", "message_id", "actor_kind", "actor_id", "data", "message", "conversation"):
        if rec.get(key) is not None:
            out[key] = rec[key]
    return out


class PreparedEvent:
    """An event read once per process, with its frames serialised once (lazily) for every sink.

    `data` is the members' view (event_json); `visitor_frame` is what the conversation's visitor
    is sent, exactly as SQL shaped it (events_after's visitor column, parley.visitor_frame), or
    None: nothing here decides what a visitor may see.
    """

    __slots__ = ("_agent", "_sse", "_visitor", "conversation_id", "data", "id", "tenant_id", "visitor_frame")

    def __init__(self, tenant_id: uuid.UUID, data: dict, visitor_frame: dict | None = None) -> None:
        self.tenant_id = tenant_id
        self.id = int(data["id"])
        conv = data.get("conversation_id")
        self.conversation_id = uuid.UUID(str(conv)) if conv else None
        self.data = data
        self.visitor_frame = visitor_frame
        self._agent: str | None = None
        self._sse: bytes | None = None
        self._visitor: tuple[int | None, str] | None = None

    @classmethod
    def from_row(cls, tenant_id: uuid.UUID, row: Any) -> PreparedEvent:
        """One row of parley.events_after."""
        return cls(tenant_id, event_json(row), row["visitor"])

    @property
    def agent_text(self) -> str:
        if self._agent is None:
            self._agent = json_dumps({"type": "event", "event": self.data})
        return self._agent

    @property
    def sse_bytes(self) -> bytes:
        if self._sse is None:
            self._sse = f"id: {self.id}\ndata: {json_dumps(self.data)}\n\n".encode()
        return self._sse

    @property
    def visitor_text(self) -> tuple[int | None, str] | None:
        """(message id or None, frame text) for the visitor, or None when the visitor is sent nothing."""
        if self._visitor is None and self.visitor_frame is not None:
            self._visitor = ((self.visitor_frame.get("message") or {}).get("id"), json_dumps(self.visitor_frame))
        return self._visitor
