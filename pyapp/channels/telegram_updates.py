"""One Telegram update, handled the same way whether it came by webhook (telegram_inbound.py) or
by long polling (jobs/telegram_poll.py).

As the server in the channel's tenant, parley.accept_channel_update dedupes on update_id and
resolves the topic's conversation and the sender's linked member; the action runs as that member
(actor kind 'channel') through the functions the API calls: a message in a topic → agent_reply;
a button or a slash command → parley.perform_action, the actions registry's one dispatcher
(sql/57_actions.sql: which actions exist, who may do them in which state, and what a command's
argument is: /note TEXT, /codename NAME); /link CODE links the sender. Button presses are
answered with answerCallbackQuery, with the action's "done" text or the rule that refused it.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import asyncpg

from pyapp.channels.adapter import LINK_COMMAND, Inbound
from pyapp.channels.envelope import Keyring, SecretUnavailable, open_secrets
from pyapp.channels.telegram import TelegramAdapter
from pyapp.db import Actor, act_as, tenant_tx
from pyapp.errors import from_postgres
from pyapp.outbox.senders import Destination

log = logging.getLogger("parley.channels.telegram")


async def channel_secrets(pool: asyncpg.Pool, keyring: Keyring, service: Actor, channel_id: uuid.UUID):
    """The channel's opened webhook secrets, bot tokens and config (empty lists when they cannot be opened)."""
    async with tenant_tx(pool, service) as conn:
        try:
            expected = await open_secrets(conn, keyring, service.tenant_id, channel_id, "signing")
            tokens = await open_secrets(conn, keyring, service.tenant_id, channel_id, "token")
        except SecretUnavailable:
            expected, tokens = [], []
        config = await conn.fetchval("SELECT d.config FROM parley.outbox_destinations d WHERE d.id = $1", channel_id)
    return expected, tokens, config or {}


def channel_destination(channel_id: uuid.UUID, config: dict[str, Any], tokens: list[str]) -> Destination:
    return Destination(id=channel_id, kind="telegram", target="", config=config, ordered=True, secrets=tuple(tokens))


async def handle_update(
    pool: asyncpg.Pool,
    adapter: TelegramAdapter,
    service: Actor,
    destination: Destination,
    update: dict[str, Any],
) -> dict[str, Any]:
    """Handle one update of the channel ``destination`` (its token opened) as ``service`` (the server
    in the channel's tenant); returns what the webhook answers Telegram."""
    channel_id = destination.id
    inbound = adapter.parse_update(update, str(destination.config.get("bot_username") or ""))
    if inbound is None:
        return {"ok": True, "ignored": "not a message or action"}
    # The update is recorded and acted on in one transaction: recorded apart, an update whose action
    # then failed (the database gone mid-way) was refused as a duplicate when Telegram sent it again,
    # and the operator's reply was lost. A concurrent copy waits for this one and is then a duplicate.
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
            return {"ok": True, "duplicate": True}
        if inbound.command == LINK_COMMAND and seen["own_chat"] and inbound.user:
            linked = await conn.fetchval(
                "SELECT parley.link_channel_member('telegram', $1, $2)", inbound.user, inbound.argument
            )
            return {"ok": True, "linked": linked is not None}
        outcome = await _act(conn, service, inbound, seen)
    if inbound.callback_id:
        try:
            await adapter.answer_action(destination, inbound.callback_id, outcome)
        except Exception as exc:  # the action is done; the button stops spinning by itself
            log.warning("answerCallbackQuery for channel %s failed: %s", channel_id, type(exc).__name__)
    return {"ok": True, "result": outcome}


async def _act(conn: asyncpg.Connection, service: Actor, inbound: Inbound, seen: dict) -> str:
    """Run the update's action as the linked member, in a savepoint of the update's transaction (a
    refused action leaves the update recorded); a short outcome text (shown on a button)."""
    if not seen["own_chat"] or seen["conversation_id"] is None:
        return "This is not a conversation's topic."
    if seen["user_id"] is None:
        return "Link your Telegram account first: /link CODE (the code is in the console)."
    conversation_id = uuid.UUID(str(seen["conversation_id"]))
    member = Actor(
        tenant_id=service.tenant_id, kind="channel", actor_id=str(seen["user_id"]), request_id=service.request_id
    )
    client_id = f"telegram:{inbound.update_id}"
    try:
        async with conn.transaction():
            await act_as(conn, member)
            if inbound.command is None:
                if not inbound.text or inbound.callback_id:
                    return "Unknown action."
                await conn.execute(
                    "SELECT 1 FROM parley.agent_reply($1, $2, $3)", conversation_id, inbound.text, client_id
                )
                return "Sent."
            surface = "telegram_keyboard" if inbound.callback_id else "telegram_command"
            args = await conn.fetchval(
                "SELECT a.args FROM parley.conversation_action_catalog a WHERE a.key = $1", inbound.command
            )
            data: dict[str, str] = {}
            if args:  # a command's argument is the action's first input (the note, the codename)
                data[args[0]] = inbound.argument
                if "client_id" in args:
                    data["client_id"] = client_id
            done = await conn.fetchval(
                "SELECT parley.perform_action($1, $2, $3, $4)", conversation_id, inbound.command, data, surface
            )
    except asyncpg.PostgresError as exc:
        error = from_postgres(exc)
        if error is None or error.code in ("retry", "busy"):
            raise  # not done, and worth doing: the update is not recorded either, Telegram sends it again
        return error.message[:200]
    return str(done["done"])
