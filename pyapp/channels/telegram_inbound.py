"""POST /api/channels/telegram/{channel_id}/webhook: updates from Telegram for one channel.

The channel's tenant is looked up by its id (parley.telegram_channel_tenant); the
X-Telegram-Bot-Api-Secret-Token header must equal the channel's webhook secret (sealed as its
'signing' secret, compared in constant time) or the answer is 401. The update itself is handled
by pyapp/channels/telegram_updates.py, as long polling does. Telegram gets 200 for every update
it should not send again (duplicates, unlinked senders, refused actions)."""

from __future__ import annotations

import hmac
import uuid

from aiohttp import web

from pyapp.channels.envelope import Keyring
from pyapp.channels.telegram import TelegramAdapter
from pyapp.channels.telegram_updates import channel_destination, channel_secrets, handle_update
from pyapp.context import POOL, REQUEST_ID, SETTINGS
from pyapp.db import Actor
from pyapp.errors import ApiError
from pyapp.inputs import parse_json

HEADER = "X-Telegram-Bot-Api-Secret-Token"
ADAPTER = web.AppKey("telegram_adapter", TelegramAdapter)


def _channel_id(request: web.Request) -> uuid.UUID:
    try:
        return uuid.UUID(request.match_info["channel_id"])
    except ValueError:
        raise ApiError(404, "not_found", "No such channel.") from None


async def webhook(request: web.Request) -> web.Response:
    channel_id = _channel_id(request)
    pool = request.app[POOL]
    tenant_id = await pool.fetchval("SELECT parley.telegram_channel_tenant($1)", channel_id)
    if tenant_id is None:
        raise ApiError(404, "not_found", "No such channel.")
    given = request.headers.get(HEADER, "")
    keyring = Keyring.from_settings(request.app[SETTINGS].secret_key)
    service = Actor(tenant_id=tenant_id, kind="service", actor_id="telegram", request_id=request.get(REQUEST_ID))
    expected, tokens, config = await channel_secrets(pool, keyring, service, channel_id)
    if not given or not any(hmac.compare_digest(given.encode(), e.encode()) for e in expected):
        raise ApiError(401, "invalid_secret_token", "The secret token does not match this channel.")
    update = parse_json(await request.read())
    if not isinstance(update, dict):
        raise ApiError(400, "invalid_update", "An update is a JSON object.")
    destination = channel_destination(channel_id, config, tokens)
    return web.json_response(await handle_update(pool, request.app[ADAPTER], service, destination, update))


def setup(app: web.Application) -> None:
    adapter = TelegramAdapter()
    app[ADAPTER] = adapter
    app.router.add_post("/api/channels/telegram/{channel_id}/webhook", webhook)

    async def close(app: web.Application):
        await adapter.close()

    app.on_cleanup.append(close)
