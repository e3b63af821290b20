"""Telegram channels API: connect a bot and a forum group (the token checked with getMe, then
sealed under the tenant's data key, never stored, shown or logged in clear; pyapp/channels/
telegram_connect.py), how updates arrive (webhook or polling), list, delete, link codes.
Rules in sql/84_telegram.sql; delivery in the outbox (pyapp/channels/telegram.py)."""

from __future__ import annotations

import uuid
from typing import Any, Literal

from pydantic import BaseModel, Field

from pyapp.api import Call, api
from pyapp.channels.envelope import Keyring
from pyapp.channels.telegram_connect import (
    BOT_TOKEN,
    bot_commands,
    check_bot,
    connect,
    set_commands,
    set_inbound,
    set_webhook,
)
from pyapp.conversations.routes import Strict
from pyapp.outbox import destinations

TAGS = ("channels",)


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


@api.route(
    "POST", "/api/channels/telegram", body=TelegramIn, response=TelegramOut, status=201, min_role="admin", tags=TAGS
)
async def connect_telegram(call: Call):
    """Connect a Telegram bot and a support group with topics: each conversation gets a topic there."""
    b = call.body
    me = await check_bot(b.bot_token)
    public_url = call.settings.public_url
    async with call.tx() as conn:
        channel_id, hook_secret = await connect(
            conn,
            Keyring.from_settings(call.settings.secret_key),
            call.member.tenant_id,
            public_url=public_url,
            name=b.name,
            bot_token=b.bot_token,
            chat_id=b.chat_id,
            chatbot_id=b.chatbot_id,
            me=me,
        )
        shown = await conn.fetchval("SELECT parley.telegram_channel_json($1)", channel_id)
        commands = await bot_commands(conn)
    command_error = await set_commands(b.bot_token, commands)
    if command_error:  # connected all the same: only the command menu is missing
        shown = {**shown, "last_error": command_error}
    if public_url:
        error = await set_webhook(public_url, channel_id, b.bot_token, hook_secret)
        if error:  # connected all the same: the webhook can be set again
            shown = {**shown, "last_error": error}
    return shown


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
async def put_inbound(call: Call):
    """How the channel's updates arrive: by webhook (the server needs a public URL) or by long polling
    from `parley jobs` (it deletes the webhook first)."""
    channel_id = call.uuid_param("channel_id")
    public_url = call.settings.public_url
    keyring = Keyring.from_settings(call.settings.secret_key)
    async with call.tx() as conn:
        shown, hook = await set_inbound(conn, keyring, call.member.tenant_id, channel_id, call.body.mode, public_url)
    if hook:
        error = await set_webhook(public_url, channel_id, *hook)
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
