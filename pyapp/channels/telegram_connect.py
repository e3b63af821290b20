"""Connecting a Telegram bot and forum group, and how its updates arrive: the steps the API
(telegram_routes.py) and the console page (telegram_console.py) share. Rules in SQL
(parley.connect_telegram, set_telegram_inbound); the token is checked with getMe, then sealed under
the tenant's data key (never stored, shown or logged in clear)."""

from __future__ import annotations

import secrets
import uuid
from typing import Any

import asyncpg

from pyapp.channels.adapter import LINK_COMMAND, ChannelError
from pyapp.channels.envelope import Keyring, open_secrets, store_secret
from pyapp.channels.telegram import TelegramApi
from pyapp.errors import ApiError

BOT_TOKEN = r"^[0-9]{1,20}:[A-Za-z0-9_-]{30,100}$"


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
) -> tuple[uuid.UUID, str]:
    """In the caller's transaction: the channel (parley.connect_telegram), its sealed token and webhook
    secret, polling when the server has no public URL. Returns the channel id and the webhook secret
    (for ``set_webhook`` once committed)."""
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
    return channel_id, hook_secret


async def set_inbound(
    conn: asyncpg.Connection, keyring: Keyring, tenant_id: uuid.UUID, channel_id: uuid.UUID, mode: str, public_url: str
) -> tuple[dict, tuple[str, str] | None]:
    """Switch how updates arrive (parley.set_telegram_inbound); for webhook mode also the (token,
    webhook secret) to call ``set_webhook`` with once committed. 409 webhook without a public URL."""
    if mode == "webhook" and not public_url:
        raise ApiError(409, "no_public_url", "Telegram can only call a server with a public URL (PARLEY_PUBLIC_URL).")
    shown = await conn.fetchval("SELECT parley.set_telegram_inbound($1, $2)", channel_id, mode)
    if mode != "webhook":
        return shown, None
    tokens = await open_secrets(conn, keyring, tenant_id, channel_id, "token")
    hooks = await open_secrets(conn, keyring, tenant_id, channel_id, "signing")
    return shown, (tokens[0], hooks[0]) if tokens and hooks else None


async def set_webhook(public_url: str, channel_id: uuid.UUID, token: str, hook_secret: str) -> str | None:
    """setWebhook to this server's public URL for the channel; the error in words, None when set."""
    api = TelegramApi()
    try:
        await api.call(
            token,
            "setWebhook",
            {
                "url": f"{public_url.rstrip('/')}/api/channels/telegram/{channel_id}/webhook",
                "secret_token": hook_secret,
                "allowed_updates": ["message", "callback_query"],
            },
        )
    except ChannelError as exc:
        return str(exc)[:300]
    finally:
        await api.close()
    return None


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


async def set_commands(token: str, commands: list[dict[str, str]]) -> str | None:
    """setMyCommands for the support group's members; the error in words, None when set."""
    api = TelegramApi()
    try:
        await api.call(token, "setMyCommands", {"commands": commands, "scope": {"type": "all_group_chats"}})
    except ChannelError as exc:
        return str(exc)[:300]
    finally:
        await api.close()
    return None
