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


# Status a visitor sees after each kind of event (events_after's `conversation` is the
# conversation's *current* summary, so the kind, not the summary, says what happened then).
_STATUS_BY_KIND = {"human_requested": "waiting_human", "claimed": "human", "assigned": "human",
                   "released": "bot", "closed": "closed"}
_VISITOR_HIDDEN = ("author_id", "meta")


def visitor_message(message: dict) -> dict:
    """A stored message as visitors see it: parley.message_json(m, true), i.e. no author ids, no meta."""
    return {k: v for k, v in message.items() if k not in _VISITOR_HIDDEN}


def visitor_frames(ev: dict) -> list[dict]:
    """What the visitor of the event's conversation sees of it (maybe nothing; never notes)."""
    kind = ev.get("kind")
    if kind == "message_added":
        msg = ev.get("message")
        if not isinstance(msg, dict) or msg.get("author") == "note":
            return []
        return [{"type": "message", "message": visitor_message(msg)}]
    if kind == "reopened":
        status = (ev.get("data") or {}).get("status") or "bot"
        return [{"type": "status", "status": status}]
    if kind in _STATUS_BY_KIND:
        return [{"type": "status", "status": _STATUS_BY_KIND[kind]}]
    return []


class PreparedEvent:
    """An event read once per process, with its frames serialised once (lazily) for every sink."""

    __slots__ = ("id", "tenant_id", "conversation_id", "data", "_agent", "_sse", "_visitor")

    def __init__(self, tenant_id: uuid.UUID, data: dict) -> None:
        self.tenant_id = tenant_id
        self.id = int(data["id"])
        conv = data.get("conversation_id")
        self.conversation_id = uuid.UUID(str(conv)) if conv else None
        self.data = data
        self._agent: str | None = None
        self._sse: bytes | None = None
        self._visitor: list[tuple[int | None, str]] | None = None

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
    def visitor_texts(self) -> list[tuple[int | None, str]]:
        """(message id or None, frame text) pairs."""
        if self._visitor is None:
            self._visitor = [((f.get("message") or {}).get("id"), json_dumps(f)) for f in visitor_frames(self.data)]
        return self._visitor
