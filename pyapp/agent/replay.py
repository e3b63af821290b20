"""What the agent socket and the SSE stream share: replay from the events table, credential re-checks."""

from __future__ import annotations

import asyncpg

from pyapp.auth import check_member
from pyapp.context import json_dumps
from pyapp.db import Actor
from pyapp.errors import ApiError, from_postgres
from pyapp.realtime.frames import BATCH, event_json, read_events
from pyapp.realtime.sinks import Sink

RECHECK_SECONDS = 60.0  # a live stream re-checks its credential this often
MAX_REPLAY = 10_000  # events replayed on resume; beyond that the client reloads (error replay_truncated)


async def replay_events(
    pool: asyncpg.Pool, actor: Actor, after: int, sink: Sink, *, limit: int = MAX_REPLAY
) -> tuple[int, bool]:
    """Send every event after `after` as the member sees it (checked by begin_request).

    Returns (events sent, truncated). Event ids sent are remembered in `sink.replayed` so the
    relay's held copies are dropped.
    """
    sent = 0
    while True:
        rows = await read_events(pool, actor, after, retries=19)
        for row in rows:
            ev = event_json(row)
            after = max(after, int(ev["id"]))
            sink.replayed.add(int(ev["id"]))
            sink.push(_replay_item(sink, ev), bounded=False)
            sent += 1
        if len(rows) < BATCH:
            return sent, False
        if sent >= limit:
            return sent, True


def _replay_item(sink: Sink, ev: dict):
    if sink.kind == "sse":
        return f"id: {ev['id']}\ndata: {json_dumps(ev)}\n\n".encode()
    return json_dumps({"type": "event", "event": ev})


async def recheck(pool: asyncpg.Pool, actor: Actor) -> ApiError | None:
    """None while the credential is still good, else the reason to hang up."""
    try:
        await check_member(pool, actor)
        return None
    except asyncpg.PostgresError as exc:
        mapped = from_postgres(exc)
        if mapped is None or mapped.status >= 500:
            return None  # a database hiccup is not a reason to drop a member
        return mapped
    except (TimeoutError, OSError):
        return None
