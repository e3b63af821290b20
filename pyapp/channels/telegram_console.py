"""Console page /console/telegram: every member sees the workspace's Telegram channels and their
health and gets a one-time link code for their own Telegram account; admins connect a bot and a
group, choose how updates arrive (webhook or polling) and disconnect. The same SQL and steps as
/api/channels/telegram (pyapp/channels/telegram_connect.py)."""

from __future__ import annotations

import uuid

import asyncpg

from pyapp.channels.envelope import Keyring
from pyapp.channels.telegram_connect import BOT_TOKEN, check_bot, connect, set_inbound, tell_telegram
from pyapp.console.web import FIRST_VIEW, Ctx, Shown, button, form_page, page, redirect
from pyapp.errors import ApiError
from pyapp.outbox import destinations

MISSING = "No such Telegram channel."
DONE = {
    "connected": "Telegram channel connected.",
    "deleted": "Telegram channel disconnected.",
    "inbound": "Updates now arrive the new way.",
}


async def _page(ctx: Ctx, shown: Shown = FIRST_VIEW, code: str | None = None):
    channels = await destinations.listed(ctx.conn, "telegram_channel_json", "telegram")
    chatbots = await ctx.conn.fetch("SELECT id, name FROM parley.chatbots WHERE deleted_at IS NULL ORDER BY name")
    linked = await ctx.conn.fetchval(
        "SELECT count(*) FROM parley.channel_member_links l WHERE l.user_id = $1 AND l.kind = 'telegram'", ctx.user_id
    )
    return form_page(
        ctx,
        "telegram.html",
        shown,
        DONE,
        channels=channels,
        chatbots=chatbots,
        linked=linked,
        code=code,
        public_url=ctx.settings.public_url,
        bot_token_pattern=BOT_TOKEN,
    )


@page("GET", "/console/telegram")
async def telegram(ctx: Ctx):
    return await _page(ctx)


@page("POST", "/console/telegram/link-code")
async def link_code(ctx: Ctx):
    code = await ctx.conn.fetchval("SELECT parley.create_channel_link_code('telegram')")
    return await _page(ctx, code=code)


@page("POST", "/console/telegram", min_role="admin")
async def create(ctx: Ctx):
    f = ctx.form
    form = {"name": f.get("name", ""), "chat_id": f.get("chat_id", ""), "chatbot_id": f.get("chatbot_id", "")}
    token = (f.get("bot_token") or "").strip()
    try:
        try:
            chat_id = int((f.get("chat_id") or "").strip())
        except ValueError:
            raise ApiError(422, "invalid_chat_id", "Give the group's id: a number that starts with -100.") from None
        try:
            chatbot_id = uuid.UUID(f["chatbot_id"]) if f.get("chatbot_id") else None
        except ValueError:
            raise ApiError(422, "invalid_chatbot", "Choose a chatbot.") from None
        me = await check_bot(token) if token else None
        if me is None:
            raise ApiError(422, "invalid_bot_token", "Paste the token @BotFather gave you.")
        async with ctx.savepoint() as conn:
            told = await connect(
                conn,
                Keyring.from_settings(ctx.settings.secret_key),
                ctx.tenant,
                public_url=ctx.settings.public_url,
                name=(f.get("name") or "Telegram").strip() or "Telegram",
                bot_token=token,
                chat_id=chat_id,
                chatbot_id=chatbot_id,
                me=me,
            )
    except (ApiError, asyncpg.PostgresError) as exc:
        return await _page(ctx, Shown.refused(exc, form))
    refused = await tell_telegram(ctx.settings.public_url, told)
    if refused:
        missing = "; ".join(f"the {what} is not set: {error}" for what, error in refused.items())
        return await _page(ctx, Shown(flash=f"Connected, but {missing}"))
    return redirect("/console/telegram?done=connected")


@page("POST", "/console/telegram/{channel_id}/inbound", min_role="admin")
async def inbound(ctx: Ctx):
    channel_id = ctx.uuid("channel_id")
    try:
        async with ctx.savepoint() as conn:
            _shown, told = await set_inbound(
                conn,
                Keyring.from_settings(ctx.settings.secret_key),
                ctx.tenant,
                channel_id,
                ctx.form.get("mode", ""),
                ctx.settings.public_url,
            )
    except (ApiError, asyncpg.PostgresError) as exc:
        return await _page(ctx, Shown.refused(exc, {}))
    refused = await tell_telegram(ctx.settings.public_url, told) if told else {}
    if refused:
        return await _page(ctx, Shown(flash=f"The webhook is not set: {refused['webhook']}"))
    return redirect("/console/telegram?done=inbound")


@button("/console/telegram/{channel_id}/delete", "/console/telegram?done=deleted", min_role="admin")
async def delete(ctx: Ctx, channel_id: uuid.UUID) -> None:
    await destinations.delete(ctx.conn, "telegram_channel_json", channel_id, MISSING)
