"""System messages page (/console/messages): what the assistant and the server say in a
conversation, per language, worded by the workspace (the same handlers as /api/system-texts)."""

from __future__ import annotations

from pydantic import ValidationError

from pyapp.console import bridge
from pyapp.console.web import Ctx, page, redirect
from pyapp.conversations import system_texts as api
from pyapp.errors import ApiError

LOCALES = [("en", "English"), ("es", "Español"), ("fr", "Français"), ("de", "Deutsch"), ("tr", "Türkçe")]
LABELS = {
    "handoff": "Handing over to a person",
    "unknown": "The bot does not know the answer",
    "ai_quota": "The assistant's daily allowance is used up",
    "assistant_unavailable": "The assistant is unavailable",
    "rate_limited": "The visitor writes too fast",
    "message_limit": "The conversation cannot take more messages",
    "conversation_limit": "No new conversation can start",
}
DONE = {"saved": "Saved.", "reset": "Back to the shipped text."}


def _locale(ctx: Ctx, value: str | None) -> str:
    return value if value in dict(LOCALES) else "en"


async def _page(ctx: Ctx, locale: str, *, status: int = 200, errors: dict | None = None):
    out = await bridge.call(
        ctx, api.list_system_texts, query=api.LocaleQuery.model_validate({"locale": locale}), min_role="admin"
    )
    return ctx.render(
        "system_texts.html",
        status=status,
        locale=locale,
        locales=LOCALES,
        labels=LABELS,
        texts=out.texts,
        errors=errors or {},
        flash=DONE.get(ctx.request.query.get("done", "")),
    )


@page("GET", "/console/messages", min_role="admin")
async def system_texts(ctx: Ctx):
    return await _page(ctx, _locale(ctx, ctx.request.query.get("locale")))


@page("POST", "/console/messages/{kind}/{locale}", min_role="admin")
async def save_system_text(ctx: Ctx):
    locale = _locale(ctx, ctx.request.match_info["locale"])
    kind = ctx.request.match_info["kind"]
    try:
        body = api.SystemTextIn.model_validate(
            {
                "body": str(ctx.form.get("body", "")),
                **{flag: ctx.form.get(flag) == "1" for flag in ("store", "to_widget", "to_channels", "pin")},
            }
        )
    except ValidationError:
        return await _page(
            ctx, locale, status=422, errors={kind: "Write 1 to 2,000 characters, without control characters."}
        )
    try:
        await bridge.call(ctx, api.put_system_text, body=body, min_role="admin")
    except ApiError as exc:
        if exc.status >= 500:
            raise
        return await _page(ctx, locale, status=exc.status, errors={kind: exc.message})
    return redirect(f"/console/messages?locale={locale}&done=saved#{kind}")


@page("POST", "/console/messages/{kind}/{locale}/reset", min_role="admin")
async def reset_system_text(ctx: Ctx):
    locale = _locale(ctx, ctx.request.match_info["locale"])
    await bridge.call(ctx, api.reset_system_text, min_role="admin")
    return redirect(f"/console/messages?locale={locale}&done=reset")
