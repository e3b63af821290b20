"""`/api/assistant/llm`: the LLM provider of the tenant or of one chatbot (keys stored encrypted, never returned)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Literal

from pydantic import BaseModel, Field

from pyapp.api import Call, api, rows
from pyapp.assistant.secrets import seal_llm_key
from pyapp.errors import ApiError, not_found
from pyapp.net import FetchError, vet_url
from pyapp.net.safe_fetch import allow_hosts_from_env
from pyapp.providers.http import ProviderError


class LLMSettingsIn(BaseModel):
    chatbot_id: uuid.UUID | None = None
    provider: Literal["openai", "anthropic", "none"]
    base_url: str | None = Field(default=None, max_length=500)
    model: str | None = Field(default=None, max_length=200)
    api_key: str | None = Field(default=None, max_length=500)


@api.route("GET", "/api/assistant/llm", tags=("assistant",))
async def list_llm_settings(call: Call):
    """The LLM providers set for the tenant (chatbot_id null) and per chatbot; keys are never returned."""
    async with call.tx() as conn:
        return rows(
            await conn.fetch(
                """SELECT id, chatbot_id, provider, base_url, model, api_key_enc IS NOT NULL AS has_key, updated_at
                 FROM parley.llm_settings ORDER BY chatbot_id NULLS FIRST"""
            )
        )


@api.route("PUT", "/api/assistant/llm", body=LLMSettingsIn, min_role="admin", tags=("assistant",))
async def put_llm_settings(call: Call):
    """Set the tenant's (or one chatbot's) LLM provider; the API key is stored encrypted."""
    body: LLMSettingsIn = call.body
    if body.base_url:
        try:
            await vet_url(body.base_url, allow_hosts=allow_hosts_from_env())
        except FetchError as exc:
            raise ApiError(422, "url_not_allowed", f"This provider URL cannot be used: {exc.message}") from None
    async with call.tx() as conn:
        if body.chatbot_id and not await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM parley.chatbots WHERE id = $1)", body.chatbot_id
        ):
            raise not_found("chatbot")
        enc = (
            await seal_llm_key(conn, call.settings.secret_key, call.member.tenant_id, body.chatbot_id, body.api_key)
            if body.api_key
            else None
        )
        existing = await conn.fetchval(
            "SELECT id FROM parley.llm_settings WHERE chatbot_id IS NOT DISTINCT FROM $1", body.chatbot_id
        )
        if existing:
            await conn.execute(
                """UPDATE parley.llm_settings SET provider = $2, base_url = $3, model = $4,
                          api_key_enc = coalesce($5, api_key_enc), updated_at = now() WHERE id = $1""",
                existing,
                body.provider,
                body.base_url,
                body.model,
                enc,
            )
        else:
            await conn.execute(
                """INSERT INTO parley.llm_settings (tenant_id, chatbot_id, provider, base_url, model, api_key_enc)
                   VALUES (parley.current_tenant_id(), $1, $2, $3, $4, $5)""",
                body.chatbot_id,
                body.provider,
                body.base_url,
                body.model,
                enc,
            )
        await conn.execute(
            "SELECT parley.write_audit('llm_settings.set', 'chatbot', $1, $2)",
            str(body.chatbot_id) if body.chatbot_id else None,
            {"provider": body.provider, "base_url": body.base_url, "model": body.model, "key_set": enc is not None},
        )
        return dict(
            await conn.fetchrow(
                """SELECT id, chatbot_id, provider, base_url, model, api_key_enc IS NOT NULL AS has_key, updated_at
                 FROM parley.llm_settings WHERE chatbot_id IS NOT DISTINCT FROM $1""",
                body.chatbot_id,
            )
        )


class LLMTestIn(BaseModel):
    chatbot_id: uuid.UUID | None = None


@api.route("POST", "/api/assistant/llm/test", body=LLMTestIn, min_role="admin", tags=("assistant",))
async def test_llm_settings(call: Call):
    """Send the stored provider a tiny request; `ok` with the reply, or the provider's error in words."""
    from pyapp.assistant.provider import llm_from_row

    body: LLMTestIn = call.body
    async with call.tx() as conn:
        row = await conn.fetchrow(
            """SELECT provider, base_url, model, api_key_enc, chatbot_id FROM parley.llm_settings
                WHERE chatbot_id IS NOT DISTINCT FROM $1""",
            body.chatbot_id,
        )
        if row is None:
            raise not_found("llm_settings")
        if row["provider"] == "none":
            return {"ok": False, "code": "no_provider", "message": "No AI model is set (provider: none)."}
        try:
            llm = await llm_from_row(conn, call.settings, call.member.tenant_id, row)
        except FetchError as exc:
            return {
                "ok": False,
                "code": "url_not_allowed",
                "message": f"This provider URL cannot be used: {exc.message}",
            }
    reply = []
    try:
        async with asyncio.timeout(20):
            async for delta in llm.stream_chat([{"role": "user", "content": "Reply with the word OK."}], max_tokens=5):
                reply.append(delta)
    except ProviderError as exc:
        return {"ok": False, "code": exc.code, "message": exc.message, "status": exc.status}
    except (TimeoutError, FetchError) as exc:
        return {"ok": False, "code": "unreachable", "message": f"The provider did not answer: {exc}"}
    return {"ok": True, "reply": "".join(reply)[:200]}
