"""The AI model page: the workspace's LLM provider (the same handlers as /api/assistant/llm)."""

from __future__ import annotations

import asyncpg
from pydantic import ValidationError

from pyapp.assistant import routes
from pyapp.console import bridge
from pyapp.console.web import Ctx, form_errors, page, redirect
from pyapp.errors import ApiError, from_postgres

PROVIDERS = [
    ("none", "None (answers quote the knowledge base)"),
    ("openai", "OpenAI-compatible"),
    ("anthropic", "Anthropic"),
]
MESSAGES = {"saved": "AI model saved."}


async def _ai_page(ctx: Ctx, *, status=200, values=None, errors=None, flash=None, result=None):
    current = await ctx.conn.fetchrow(
        """SELECT provider, base_url, model, api_key_enc IS NOT NULL AS has_key, updated_at
             FROM parley.llm_settings WHERE chatbot_id IS NULL"""
    )
    if values is None:
        values = {
            "provider": current["provider"] if current else "none",
            "base_url": (current["base_url"] or "") if current else "",
            "model": (current["model"] or "") if current else "",
        }
    done = ctx.request.query.get("done")
    return ctx.render(
        "ai.html",
        status=status,
        current=current,
        values=values,
        errors=errors or {},
        providers=PROVIDERS,
        result=result,
        flash=flash or MESSAGES.get(done or ""),
    )


@page("GET", "/console/ai", min_role="admin")
async def ai(ctx: Ctx):
    return await _ai_page(ctx)


@page("POST", "/console/ai", min_role="admin")
async def save_ai(ctx: Ctx):
    values = {k: str(ctx.form.get(k, "")).strip() for k in ("provider", "base_url", "model")}
    api_key = str(ctx.form.get("api_key", "")).strip()
    try:
        body = routes.LLMSettingsIn.model_validate(
            {
                "provider": values["provider"],
                "base_url": values["base_url"] or None,
                "model": values["model"] or None,
                "api_key": api_key or None,
            }
        )
    except ValidationError as exc:
        return await _ai_page(ctx, status=422, values=values, errors=form_errors(exc))
    try:
        try:
            await bridge.call(ctx, routes.put_llm_settings, body=body, min_role="admin")
        except asyncpg.PostgresError as exc:  # a SQL rule (the key must follow its endpoint)
            raise (from_postgres(exc) or exc) from None
    except ApiError as exc:
        field = {"llm_key_required": "api_key", "url_not_allowed": "base_url"}.get(exc.code, "__all__")
        return await _ai_page(ctx, status=exc.status, values=values, errors={field: exc.message})
    return redirect("/console/ai?done=saved")


@page("POST", "/console/ai/test", min_role="admin")
async def test_ai(ctx: Ctx):
    try:
        result = await bridge.call(ctx, routes.test_llm_settings, body=routes.LLMTestIn(), min_role="admin")
    except ApiError as exc:
        result = {
            "ok": False,
            "code": exc.code,
            "message": "Save a provider first." if exc.status == 404 else exc.message,
        }
    return await _ai_page(ctx, result=result)
