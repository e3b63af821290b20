"""Presence: which members are online, kept in parley.member_presence (sql/47_presence.sql).

A member is online while it has an agent socket or an event stream open on some instance. The
relay tells this instance's `Presence` when a member's stream attaches or detaches; the first
one writes the member's row for this instance, the last one removes it, and while any is open
the row is refreshed every `BEAT` seconds, so an instance that dies stops counting after SQL's
presence_window(). A failed write is logged and never breaks the stream: presence only decides
whether a visitor is told that nobody is available.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

import asyncpg

from pyapp.db import Actor, tenant_tx

log = logging.getLogger("parley.presence")

BEAT = 30.0  # seconds between refreshes (presence_window() is 90 s)


class Presence:
    def __init__(
        self,
        pool: asyncpg.Pool,
        instance_id: str,
        spawn: Callable[[Coroutine[Any, Any, Any]], asyncio.Task],
        *,
        beat: float = BEAT,
    ) -> None:
        self.pool = pool
        self.instance_id = instance_id
        self._spawn = spawn
        self.beat = beat
        self._members: dict[tuple[uuid.UUID, str], tuple[Actor, int]] = {}
        self._beating: asyncio.Task | None = None
        self.closed = False

    @staticmethod
    def _counts(actor: Actor | None) -> bool:
        return actor is not None and actor.kind == "user" and actor.actor_id is not None

    async def _write(self, actor: Actor, online: bool) -> None:
        try:
            async with tenant_tx(self.pool, actor) as conn:
                await conn.execute("SELECT parley.set_presence($1, $2)", self.instance_id, online)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            log.warning("presence of a member not recorded: %s", type(exc).__name__)

    async def join(self, actor: Actor | None) -> None:
        """A member's stream opened here: the first one marks the member online."""
        if not self._counts(actor):
            return
        assert actor is not None and actor.actor_id is not None
        key = (actor.tenant_id, actor.actor_id)
        known, n = self._members.get(key, (actor, 0))
        self._members[key] = (known, n + 1)
        if n == 0:
            await self._write(actor, True)
        if self._beating is None or self._beating.done():
            self._beating = self._spawn(self._beat())

    def leave(self, actor: Actor | None) -> None:
        """A member's stream closed here: after the last one the member's row for this instance goes."""
        if not self._counts(actor) or self.closed:
            return
        assert actor is not None and actor.actor_id is not None
        key = (actor.tenant_id, actor.actor_id)
        known, n = self._members.get(key, (actor, 0))
        if n > 1:
            self._members[key] = (known, n - 1)
            return
        self._members.pop(key, None)
        self._spawn(self._write(known, False))

    async def close(self) -> None:
        """The instance is stopping: its members are no longer online here (before the pool closes)."""
        self.closed = True
        members, self._members = self.online(), {}
        if members:
            await asyncio.wait_for(asyncio.gather(*(self._write(a, False) for a in members)), 5)

    def online(self) -> list[Actor]:
        return [a for a, _ in self._members.values()]

    async def _beat(self) -> None:
        while self._members:
            await asyncio.sleep(self.beat)
            for actor in self.online():
                await self._write(actor, True)
