"""Connecting a Telegram bot and forum group, and how its updates arrive: the steps the API
(telegram_routes.py) and the console page (telegram_console.py) share. Rules in SQL
(parley.connect_telegram, set_telegram_inbound); the token is checked with getMe, then sealed under
the tenant's data key (never stored, shown or logged in clear)."""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg

from pyapp.channels.adapter import LINK_COMMAND, ChannelError
from pyapp.channels.envelope import Keyring, open_secrets, store_secret
from pyapp.channels.telegram import TelegramApi
from pyapp.errors import ApiError

BOT_TOKEN = r"^[0-9]{1,20}:[A-Za-z0-9_-]{30,100}$"


@dataclass(frozen=True)
class ToTell:
    """What Telegram is told once the transaction has committed (``tell_telegram``): where to send the
    channel's updates (webhook mode on a public server) and, for a bot just connected, its command menu."""

    channel_id: uuid.UUID
    token: str
    hook_secret: str | None = None  # None: no webhook to set (polling)
    commands: list[dict[str, str]] | None = None  # None: the menu is left as it is


async def check_bot(token: str) -> dict[str, Any]:
    """getMe with the token: who the bot is; 422 when Telegram does not know the token."""
    api = TelegramApi()
    try:
        me = await api.call(token, "getMe", {})
    except ChannelError as exc:
        if exc.outcome == "failed":
            raise ApiError(422, "invalid_bot_token", "Telegram does not accept this bot token.") from None
        raise ApiError(502, "telegram_unavailable", "Telegram did not answer; try again.") from None
    finally:
        await api.close()
    if not isinstance(me, dict) or not me.get("is_bot") or not isinstance(me.get("id"), int):
        raise ApiError(422, "invalid_bot_token", "This token does not belong to a bot.")
    return me


async def connect(
    conn: asyncpg.Connection,
    keyring: Keyring,
    tenant_id: uuid.UUID,
    *,
    public_url: str,
    name: str,
    bot_token: str,
    chat_id: int,
    chatbot_id: uuid.UUID | None,
    me: dict[str, Any],
) -> ToTell:
    """In the caller's transaction: the channel (parley.connect_telegram), its sealed token and webhook
    secret, polling when the server has no public URL. Returns what to tell Telegram once committed
    (the webhook, the command menu)."""
    channel_id = uuid.uuid4()
    await conn.fetchval(
        "SELECT parley.connect_telegram($1, $2, $3, $4, $5, $6)",
        channel_id,
        name,
        chat_id,
        me["id"],
        str(me.get("username") or ""),
        chatbot_id,
    )
    await store_secret(conn, keyring, tenant_id, channel_id, "token", bot_token, hint=bot_token[-4:])
    # The secret Telegram sends back in X-Telegram-Bot-Api-Secret-Token with every update.
    hook_secret = secrets.token_urlsafe(32)
    await store_secret(conn, keyring, tenant_id, channel_id, "signing", hook_secret, hint=None)
    if not public_url:  # Telegram cannot reach us: parley jobs polls instead
        await conn.execute("SELECT parley.set_telegram_inbound($1, 'polling')", channel_id)
    return ToTell(
        channel_id, bot_token, hook_secret=hook_secret if public_url else None, commands=await bot_commands(conn)
    )


async def set_inbound(
    conn: asyncpg.Connection, keyring: Keyring, tenant_id: uuid.UUID, channel_id: uuid.UUID, mode: str, public_url: str
) -> tuple[dict, ToTell | None]:
    """Switch how updates arrive (parley.set_telegram_inbound); for webhook mode also the webhook to
    tell Telegram once committed. 409 webhook without a public URL."""
    if mode == "webhook" and not public_url:
        raise ApiError(409, "no_public_url", "Telegram can only call a server with a public URL (PARLEY_PUBLIC_URL).")
    shown = await conn.fetchval("SELECT parley.set_telegram_inbound($1, $2)", channel_id, mode)
    if mode != "webhook":
        return shown, None
    tokens = await open_secrets(conn, keyring, tenant_id, channel_id, "token")
    hooks = await open_secrets(conn, keyring, tenant_id, channel_id, "signing")
    return shown, ToTell(channel_id, tokens[0], hook_secret=hooks[0]) if tokens and hooks else None


async def tell_telegram(public_url: str, told: ToTell) -> dict[str, str]:
    """After the commit: setWebhook to this server's public URL for the channel, and setMyCommands for
    the support group's members. The channel works without them (each can be set again), so what
    Telegram refused is returned in words, by what was not set ("webhook", "command menu")."""
    calls: list[tuple[str, str, dict[str, Any]]] = []
    if told.hook_secret is not None and public_url:
        webhook = {
            "url": f"{public_url.rstrip('/')}/api/channels/telegram/{told.channel_id}/webhook",
            "secret_token": told.hook_secret,
            "allowed_updates": ["message", "callback_query"],
        }
        calls.append(("webhook", "setWebhook", webhook))
    if told.commands is not None:
        menu = {"commands": told.commands, "scope": {"type": "all_group_chats"}}
        calls.append(("command menu", "setMyCommands", menu))
    refused: dict[str, str] = {}
    api = TelegramApi()
    try:
        for what, method, params in calls:
            try:
                await api.call(told.token, method, params)
            except ChannelError as exc:
                refused[what] = str(exc)[:300]
    finally:
        await api.close()
    return refused


async def bot_commands(conn: asyncpg.Connection) -> list[dict[str, str]]:
    """The bot's command menu: the registry's Telegram commands (parley.action_catalog), then /link."""
    catalog = await conn.fetchval("SELECT parley.action_catalog('telegram_command', 'en')")
    commands = [
        {
            "command": a["key"],
            "description": a["label"] + (f" (/{a['key']} {a['args'][0].upper()})" if a["args"] else ""),
        }
        for a in catalog
    ]
    return [
        *commands,
        {"command": LINK_COMMAND, "description": "Link your Telegram account (/link CODE from the console)"},
    ]
