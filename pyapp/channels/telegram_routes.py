"""Telegram channels API: connect a bot and a forum group (the token checked with getMe, then
sealed under the tenant's data key, never stored, shown or logged in clear), list, delete.
Rules in sql/84_telegram.sql; delivery in the outbox (pyapp/channels/telegram.py)."""

from __future__ import annotations

import secrets
import uuid
from typing import Any, Literal

from pydantic import BaseModel, Field

from pyapp.api import Call, api
from pyapp.channels.adapter import ChannelError
from pyapp.channels.envelope import Keyring, open_secrets, seal_for
from pyapp.channels.telegram import TelegramApi
from pyapp.conversations.routes import Strict
from pyapp.errors import ApiError
from pyapp.outbox import destinations

TAGS = ("channels",)
BOT_TOKEN = r"^[0-9]{1,20}:[A-Za-z0-9_-]{30,100}$"


class TelegramIn(Strict):
    name: str = Field("Telegram", min_length=1, max_length=100)
    bot_token: str = Field(pattern=BOT_TOKEN, description="The token @BotFather gave (write-only)")
    chat_id: int = Field(description="The support group's id (a supergroup with topics: -100…)")
    chatbot_id: uuid.UUID | None = Field(None, description="Only this chatbot's conversations (default: all)")


class TelegramOut(BaseModel):
    id: uuid.UUID
    name: str
    chat_id: int
    bot_username: str
    chatbot_id: uuid.UUID | None = None
    status: str
    paused_reason: str | None = None
    last_error: str | None = None
    last_success_at: Any = None
    created_at: Any
    token_hint: str | None = None
    inbound: Literal["webhook", "polling"] = "webhook"
    polled_at: Any = None
    poll_error: str | None = None


class TelegramListOut(BaseModel):
    channels: list[TelegramOut]


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


@api.route(
    "POST", "/api/channels/telegram", body=TelegramIn, response=TelegramOut, status=201, min_role="admin", tags=TAGS
)
async def connect_telegram(call: Call):
    """Connect a Telegram bot and a support group with topics: each conversation gets a topic there."""
    b = call.body
    me = await check_bot(b.bot_token)
    channel_id = uuid.uuid4()
    async with call.tx() as conn:
        row = await conn.fetchval(
            "SELECT parley.connect_telegram($1, $2, $3, $4, $5, $6)",
            channel_id,
            b.name,
            b.chat_id,
            me["id"],
            str(me.get("username") or ""),
            b.chatbot_id,
        )
        key_id, sealed = await seal_for(
            conn,
            Keyring.from_settings(call.settings.secret_key),
            call.member.tenant_id,
            channel_id,
            "token",
            b.bot_token,
        )
        await conn.execute(
            "SELECT parley.store_channel_secret($1, 'token', $2, $3, $4, NULL)",
            channel_id,
            key_id,
            sealed,
            b.bot_token[-4:],
        )
        # The secret Telegram sends back in X-Telegram-Bot-Api-Secret-Token with every update.
        hook_secret = secrets.token_urlsafe(32)
        key_id, sealed = await seal_for(
            conn,
            Keyring.from_settings(call.settings.secret_key),
            call.member.tenant_id,
            channel_id,
            "signing",
            hook_secret,
        )
        await conn.execute(
            "SELECT parley.store_channel_secret($1, 'signing', $2, $3, NULL, NULL)", channel_id, key_id, sealed
        )
        if not call.settings.public_url:  # Telegram cannot reach us: parley jobs polls instead
            await conn.execute("SELECT parley.set_telegram_inbound($1, 'polling')", channel_id)
        shown = await conn.fetchval("SELECT parley.telegram_channel_json($1)", channel_id) or row
    if call.settings.public_url:
        error = await _set_webhook(call, channel_id, b.bot_token, hook_secret)
        if error:  # connected all the same: the webhook can be set again
            shown = {**shown, "last_error": error}
    return shown


async def _set_webhook(call: Call, channel_id: uuid.UUID, token: str, hook_secret: str) -> str | None:
    """setWebhook to this server's public URL for the channel; the error in words, None when set."""
    api = TelegramApi()
    try:
        await api.call(
            token,
            "setWebhook",
            {
                "url": f"{call.settings.public_url.rstrip('/')}/api/channels/telegram/{channel_id}/webhook",
                "secret_token": hook_secret,
                "allowed_updates": ["message", "callback_query"],
            },
        )
    except ChannelError as exc:
        return str(exc)[:300]
    finally:
        await api.close()
    return None


class InboundIn(Strict):
    mode: Literal["webhook", "polling"] = Field(
        description="webhook: Telegram calls this server (needs PARLEY_PUBLIC_URL); polling: parley jobs asks"
    )


@api.route(
    "PUT",
    "/api/channels/telegram/{channel_id}/inbound",
    body=InboundIn,
    response=TelegramOut,
    min_role="admin",
    tags=TAGS,
)
async def set_inbound(call: Call):
    """How the channel's updates arrive: by webhook (the server needs a public URL) or by long polling
    from `parley jobs` (it deletes the webhook first)."""
    channel_id = call.uuid_param("channel_id")
    mode = call.body.mode
    if mode == "webhook" and not call.settings.public_url:
        raise ApiError(409, "no_public_url", "Telegram can only call a server with a public URL (PARLEY_PUBLIC_URL).")
    keyring = Keyring.from_settings(call.settings.secret_key)
    async with call.tx() as conn:
        shown = await conn.fetchval("SELECT parley.set_telegram_inbound($1, $2)", channel_id, mode)
        tokens = (
            await open_secrets(conn, keyring, call.member.tenant_id, channel_id, "token") if mode == "webhook" else []
        )
        hooks = await open_secrets(conn, keyring, call.member.tenant_id, channel_id, "signing") if tokens else []
    if tokens and hooks:
        error = await _set_webhook(call, channel_id, tokens[0], hooks[0])
        if error:
            shown = {**shown, "last_error": error}
    return shown


class LinkCodeOut(BaseModel):
    code: str
    expires_in: int


@api.route("POST", "/api/channels/telegram/link-code", response=LinkCodeOut, status=201, tags=TAGS)
async def link_code(call: Call):
    """A one-time code (10 minutes) to send as `/link CODE` in the Telegram group: your Telegram
    account then acts as you there (replies, claim, close, notes)."""
    async with call.tx() as conn:
        return {"code": await conn.fetchval("SELECT parley.create_channel_link_code('telegram')"), "expires_in": 600}


@api.route("GET", "/api/channels/telegram", response=TelegramListOut, min_role="admin", tags=TAGS)
async def list_telegram(call: Call):
    """The workspace's Telegram channels and their health."""
    async with call.tx() as conn:
        return {"channels": await destinations.listed(conn, "telegram_channel_json", "telegram")}


@api.route("DELETE", "/api/channels/telegram/{channel_id}", status=204, min_role="admin", tags=TAGS)
async def delete_telegram(call: Call):
    """Disconnect a Telegram channel (its topics stay in the group)."""
    async with call.tx() as conn:
        await destinations.delete(
            conn, "telegram_channel_json", call.uuid_param("channel_id"), "No such Telegram channel."
        )
