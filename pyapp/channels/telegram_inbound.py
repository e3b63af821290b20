"""POST /api/channels/telegram/{channel_id}/webhook: updates from Telegram for one channel.

The channel's tenant is looked up by its id (parley.telegram_channel_tenant); the
X-Telegram-Bot-Api-Secret-Token header must equal the channel's webhook secret (sealed as its
'signing' secret, compared in constant time) or the answer is 401. Then, as the server in that
tenant, parley.accept_channel_update dedupes on update_id and resolves the topic's conversation
and the sender's linked member; the action runs as that member (actor kind 'channel') through
the functions the API calls: a message in a topic → agent_reply; /claim /close /release
/reopen and the buttons → the transitions; /note → add_note; /link CODE links the sender.
Button presses are answered with answerCallbackQuery. Telegram gets 200 for every update it
should not send again (duplicates, unlinked senders, refused actions)."""

from __future__ import annotations

import hmac
import logging
import uuid

import asyncpg
from aiohttp import web

from pyapp.channels.adapter import Inbound
from pyapp.channels.envelope import Keyring, SecretUnavailable, open_secrets
from pyapp.channels.telegram import TelegramAdapter
from pyapp.context import POOL, REQUEST_ID, SETTINGS
from pyapp.db import Actor, tenant_tx
from pyapp.errors import ApiError, from_postgres
from pyapp.inputs import parse_json
from pyapp.outbox.senders import Destination

log = logging.getLogger("parley.channels.telegram")
HEADER = "X-Telegram-Bot-Api-Secret-Token"
ADAPTER = web.AppKey("telegram_adapter", TelegramAdapter)

TRANSITIONS = {
    "claim": "parley.claim_conversation($1)",
    "close": "parley.close_conversation($1)",
    "release": "parley.release_conversation($1)",
    "reopen": "parley.reopen_conversation($1)",
}
DONE = {"claim": "Claimed.", "close": "Closed.", "release": "Released.", "reopen": "Reopened.", "note": "Noted."}


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
    async with tenant_tx(pool, service) as conn:
        try:
            expected = await open_secrets(conn, keyring, tenant_id, channel_id, "signing")
            tokens = await open_secrets(conn, keyring, tenant_id, channel_id, "token")
        except SecretUnavailable:
            expected, tokens = [], []
        config = await conn.fetchval("SELECT d.config FROM parley.outbox_destinations d WHERE d.id = $1", channel_id)
    if not given or not any(hmac.compare_digest(given.encode(), e.encode()) for e in expected):
        raise ApiError(401, "invalid_secret_token", "The secret token does not match this channel.")
    update = parse_json(await request.read())
    if not isinstance(update, dict):
        raise ApiError(400, "invalid_update", "An update is a JSON object.")
    adapter = request.app[ADAPTER]
    destination = Destination(
        id=channel_id, kind="telegram", target="", config=config or {}, ordered=True, secrets=tuple(tokens)
    )
    inbound = adapter.parse_update(update, str((config or {}).get("bot_username") or ""))
    if inbound is None:
        return web.json_response({"ok": True, "ignored": "not a message or action"})
    async with tenant_tx(pool, service) as conn:
        seen = await conn.fetchval(
            "SELECT parley.accept_channel_update($1, $2, $3, $4, $5)",
            channel_id,
            inbound.update_id,
            inbound.chat,
            inbound.thread,
            inbound.user,
        )
        if seen["duplicate"]:
            return web.json_response({"ok": True, "duplicate": True})
        if inbound.command == "link" and seen["own_chat"] and inbound.user:
            linked = await conn.fetchval(
                "SELECT parley.link_channel_member('telegram', $1, $2)", inbound.user, inbound.argument
            )
            return web.json_response({"ok": True, "linked": linked is not None})
    outcome = await _act(pool, tenant_id, inbound, seen, request.get(REQUEST_ID))
    if inbound.callback_id:
        try:
            await adapter.answer_action(destination, inbound.callback_id, outcome)
        except Exception as exc:  # the action is done; the button stops spinning by itself
            log.warning("answerCallbackQuery for channel %s failed: %s", channel_id, type(exc).__name__)
    return web.json_response({"ok": True, "result": outcome})


async def _act(pool, tenant_id, inbound: Inbound, seen: dict, request_id) -> str:
    """Run the update's action as the linked member; a short outcome text (shown on a button)."""
    if not seen["own_chat"] or seen["conversation_id"] is None:
        return "This is not a conversation's topic."
    if seen["user_id"] is None:
        return "Link your Telegram account first: /link CODE (the code is in the console)."
    conversation_id = uuid.UUID(str(seen["conversation_id"]))
    member = Actor(tenant_id=tenant_id, kind="channel", actor_id=str(seen["user_id"]), request_id=request_id)
    client_id = f"telegram:{inbound.update_id}"
    try:
        async with tenant_tx(pool, member) as conn:
            if inbound.command in TRANSITIONS:
                await conn.execute(f"SELECT 1 FROM {TRANSITIONS[inbound.command]}", conversation_id)
            elif inbound.command == "note":
                if not inbound.argument:
                    return "Write the note after /note."
                await conn.execute(
                    "SELECT 1 FROM parley.add_note($1, $2, $3)", conversation_id, inbound.argument, client_id
                )
            elif inbound.command is None and inbound.text and not inbound.callback_id:
                await conn.execute(
                    "SELECT 1 FROM parley.agent_reply($1, $2, $3)", conversation_id, inbound.text, client_id
                )
                return "Sent."
            else:
                return "Unknown action."
    except asyncpg.PostgresError as exc:
        error = from_postgres(exc)
        if error is None:
            raise
        return error.message[:200]
    return DONE[inbound.command]


def setup(app: web.Application) -> None:
    adapter = TelegramAdapter()
    app[ADAPTER] = adapter
    app.router.add_post("/api/channels/telegram/{channel_id}/webhook", webhook)

    async def close(app: web.Application):
        await adapter.close()

    app.on_cleanup.append(close)
