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
from pyapp.channels.telegram_connect import BOT_TOKEN, ToTell, check_bot, connect, set_inbound, tell_telegram
from pyapp.conversations.routes import Strict
from pyapp.outbox import destinations

TAGS = ("channels",)
route = api.group(tags=TAGS)


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


@route("POST", "/api/channels/telegram", body=TelegramIn, response=TelegramOut, status=201, min_role="admin")
async def connect_telegram(call: Call):
    """Connect a Telegram bot and a support group with topics: each conversation gets a topic there."""
    b = call.body
    me = await check_bot(b.bot_token)
    public_url = call.settings.public_url
    async with call.tx() as conn:
        told = await connect(
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
        shown = await conn.fetchval("SELECT parley.telegram_channel_json($1)", told.channel_id)
    return await _told(public_url, told, shown)


async def _told(public_url: str, told: ToTell | None, shown: dict) -> dict:
    """Tell Telegram once committed; the channel is connected all the same, with what Telegram refused
    (the webhook before the command menu) as its last error."""
    refused = await tell_telegram(public_url, told) if told else {}
    return {**shown, "last_error": next(iter(refused.values()))} if refused else shown


class InboundIn(Strict):
    mode: Literal["webhook", "polling"] = Field(
        description="webhook: Telegram calls this server (needs PARLEY_PUBLIC_URL); polling: parley jobs asks"
    )


@route("PUT", "/api/channels/telegram/{channel_id}/inbound", body=InboundIn, response=TelegramOut, min_role="admin")
async def put_inbound(call: Call):
    """How the channel's updates arrive: by webhook (the server needs a public URL) or by long polling
    from `parley jobs` (it deletes the webhook first)."""
    channel_id = call.uuid_param("channel_id")
    public_url = call.settings.public_url
    keyring = Keyring.from_settings(call.settings.secret_key)
    async with call.tx() as conn:
        shown, told = await set_inbound(conn, keyring, call.member.tenant_id, channel_id, call.body.mode, public_url)
    return await _told(public_url, told, shown)


class LinkCodeOut(BaseModel):
    code: str
    expires_in: int


@route("POST", "/api/channels/telegram/link-code", response=LinkCodeOut, status=201)
async def link_code(call: Call):
    """A one-time code (10 minutes) to send as `/link CODE` in the Telegram group: your Telegram
    account then acts as you there (replies, claim, close, notes)."""
    async with call.tx() as conn:
        return {"code": await conn.fetchval("SELECT parley.create_channel_link_code('telegram')"), "expires_in": 600}


@route("GET", "/api/channels/telegram", response=TelegramListOut, min_role="admin")
async def list_telegram(call: Call):
    """The workspace's Telegram channels and their health."""
    async with call.tx() as conn:
        return {"channels": await destinations.listed(conn, "telegram_channel_json", "telegram")}


@route("DELETE", "/api/channels/telegram/{channel_id}", status=204, min_role="admin")
async def delete_telegram(call: Call):
    """Disconnect a Telegram channel (its topics stay in the group)."""
    async with call.tx() as conn:
        await destinations.delete(
            conn, "telegram_channel_json", call.uuid_param("channel_id"), "No such Telegram channel."
        )
