"""Long polling for Telegram channels without a webhook (servers without a public URL).

`parley jobs` runs one TelegramPoller. It leases the polling channels (parley.lease_channel_polls:
one poller per channel across processes, the lease renewed by every round and expiring when the
process dies) and keeps one task per leased channel: deleteWebhook once, then getUpdates from the
offset kept in SQL, every update handed to the webhook's own handler
(pyapp/channels/telegram_updates.py, which dedupes on update_id), then the offset moved past the
updates handled. An update whose handling fails stops the round before it: it is fetched again.

The poller works as the server (parley_app, actor kind 'service'), like the webhook it stands in for.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import uuid

import asyncpg
from pyapp.channels.adapter import ChannelError
from pyapp.channels.envelope import Keyring
from pyapp.channels.telegram import TelegramAdapter, TelegramApi
from pyapp.channels.telegram_updates import channel_destination, channel_secrets, handle_update
from pyapp.db import Actor, db_unavailable, tenant_tx

log = logging.getLogger("parley.jobs.telegram_poll")

POLL_TIMEOUT_S = 25  # getUpdates waits this long for an update (Telegram allows up to 50)
LEASE_S = 60  # a dead poller's channels are polled again after this
SCAN_S = 5.0  # how often new polling channels are looked for
ERROR_PAUSE_S = 5.0  # after a failed round
MAX_CHANNELS = 50  # channels polled at once per process

_STATE = """SELECT p.next_offset, p.webhook_cleared FROM parley.channel_polls p WHERE p.destination_id = $1"""
_RECORD = "SELECT parley.record_channel_poll($1, $2, $3, $4, $5, $6)"


class TelegramPoller:
    def __init__(
        self,
        pool: asyncpg.Pool,
        worker: str,
        keyring: Keyring,
        *,
        adapter: TelegramAdapter | None = None,
        poll_timeout: int = POLL_TIMEOUT_S,
        lease_s: int = LEASE_S,
        scan_s: float = SCAN_S,
        error_pause_s: float = ERROR_PAUSE_S,
    ):
        self.pool = pool  # the server's role: the update handler acts as the server and as members
        self.worker = worker
        self.keyring = keyring
        self.adapter = adapter or TelegramAdapter(TelegramApi(timeout=poll_timeout + 15))
        self.poll_timeout = poll_timeout
        self.lease_s = lease_s
        self.scan_s = scan_s
        self.error_pause_s = error_pause_s
        self.active: dict[uuid.UUID, asyncio.Task] = {}
        self.handled = 0

    async def run(self, stop: asyncio.Event) -> None:
        """Poll every leased channel until stop is set."""
        try:
            while not stop.is_set():
                try:
                    await self._lease(stop)
                except Exception as exc:  # the database away: the channels wait, updates stay at Telegram
                    log.warning("telegram poll lease failed: %s", type(exc).__name__)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.scan_s)
        finally:
            for task in list(self.active.values()):
                task.cancel()
            await asyncio.gather(*self.active.values(), return_exceptions=True)

    async def poll_once(self, timeout: int = 0) -> int:
        """One round for every polling channel free now (tests, `parley jobs --once`); updates handled."""
        before = self.handled
        rows = await self.pool.fetch(
            "SELECT * FROM parley.lease_channel_polls($1, $2, $3)", self.worker, MAX_CHANNELS, self.lease_s
        )
        for row in rows:
            service = self._service(row["tenant_id"])
            try:
                await self._round(service, row["destination_id"], timeout)
            finally:
                await self._release(service, row["destination_id"])
        return self.handled - before

    async def _lease(self, stop: asyncio.Event) -> None:
        room = MAX_CHANNELS - len(self.active)
        if room <= 0:
            return
        rows = await self.pool.fetch(
            "SELECT * FROM parley.lease_channel_polls($1, $2, $3)", self.worker, room, self.lease_s
        )
        for row in rows:
            channel_id = row["destination_id"]
            task = asyncio.create_task(self._keep_polling(self._service(row["tenant_id"]), channel_id, stop))
            self.active[channel_id] = task
            task.add_done_callback(functools.partial(self._forget, channel_id))

    def _forget(self, channel_id: uuid.UUID, _task: asyncio.Task) -> None:
        self.active.pop(channel_id, None)

    def _service(self, tenant_id: uuid.UUID) -> Actor:
        return Actor(tenant_id=tenant_id, kind="service", actor_id=f"telegram-poll:{self.worker}"[:200])

    async def _keep_polling(self, service: Actor, channel_id: uuid.UUID, stop: asyncio.Event) -> None:
        try:
            while not stop.is_set():
                try:
                    leased = await self._round(service, channel_id, self.poll_timeout)
                except Exception as exc:
                    if not db_unavailable(exc):
                        log.exception("telegram poll of channel %s", channel_id)
                    leased = True
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), self.error_pause_s)
                if not leased:
                    return
        finally:
            with contextlib.suppress(Exception):  # the lease expires by itself
                await self._release(service, channel_id)

    async def _round(self, service: Actor, channel_id: uuid.UUID, timeout: int) -> bool:
        """One getUpdates of one channel and its updates handled; False when the lease is gone."""
        _expected, tokens, config = await channel_secrets(self.pool, self.keyring, service, channel_id)
        async with tenant_tx(self.pool, service) as conn:
            state = await conn.fetchrow(_STATE, channel_id)
        if state is None:  # switched to webhook or disconnected meanwhile
            return False
        offset, cleared = state["next_offset"], state["webhook_cleared"]
        destination = channel_destination(channel_id, config, tokens)
        error = None
        try:
            if not tokens:
                raise ChannelError("retry", "The bot token cannot be opened (key-encryption key missing?).")
            if not cleared:
                await self.adapter.delete_webhook(tokens[0])
                cleared = True
            updates = await self.adapter.get_updates(tokens[0], offset, timeout)
            for update in sorted(updates, key=lambda u: u.get("update_id") or 0):
                update_id = update.get("update_id")
                if not isinstance(update_id, int) or update_id < offset:
                    continue
                await handle_update(self.pool, self.adapter, service, destination, update)
                offset = update_id + 1
                self.handled += 1
        except ChannelError as exc:
            error = str(exc)[:1000]
            if exc.status_code == 409:  # a webhook was set again (by hand, or another install)
                cleared = False
        finally:
            async with tenant_tx(self.pool, service) as conn:
                leased = await conn.fetchval(_RECORD, channel_id, self.worker, offset, cleared, error, self.lease_s)
        if error is not None:
            log.warning("telegram poll of channel %s: %s", channel_id, error)
            await asyncio.sleep(self.error_pause_s if timeout else 0)
        return bool(leased)

    async def _release(self, service: Actor, channel_id: uuid.UUID) -> None:
        async with tenant_tx(self.pool, service) as conn:
            await conn.execute("SELECT parley.release_channel_poll($1, $2)", channel_id, self.worker)

    async def close(self) -> None:
        await self.adapter.close()
