"""Which LLM answers a chatbot: its own provider, else the tenant's, else the global one (or none)."""

from __future__ import annotations

import os
import uuid

import asyncpg

from pyapp.assistant.secrets import open_llm_key
from pyapp.net import guarded_session, vet_url
from pyapp.net.safe_fetch import allow_hosts_from_env
from pyapp.providers.http import RetryPolicy
from pyapp.providers.llm import AnthropicLLM, OpenAICompatibleLLM, get_llm


def global_llm(settings):
    """The env-wide LLM: PARLEY_LLM (or PARLEY_LLM_PROVIDER) = openai | anthropic | none."""
    env = dict(os.environ)
    if env.get("PARLEY_LLM_PROVIDER") and not env.get("PARLEY_LLM"):
        env["PARLEY_LLM"] = env["PARLEY_LLM_PROVIDER"]
    return get_llm(settings, env=env)


async def resolve_llm(conn: asyncpg.Connection, settings, tenant_id: uuid.UUID, chatbot_id: uuid.UUID):
    """The chatbot's own provider, else the tenant default, else the global one (None = no LLM),
    with the installation's idle limit between deltas (PARLEY_LLM_IDLE_TIMEOUT)."""
    llm = await _resolve_llm(conn, settings, tenant_id, chatbot_id)
    idle = (getattr(settings, "extra", None) or {}).get("llm_idle_timeout")
    if llm is not None and idle:
        llm.idle_timeout = float(idle)
    return llm


async def _resolve_llm(conn: asyncpg.Connection, settings, tenant_id: uuid.UUID, chatbot_id: uuid.UUID):
    row = await conn.fetchrow(
        """SELECT provider, base_url, model, api_key_enc, chatbot_id FROM parley.llm_settings
            WHERE tenant_id = parley.current_tenant_id() AND (chatbot_id = $1 OR chatbot_id IS NULL)
            ORDER BY chatbot_id NULLS LAST LIMIT 1""",
        chatbot_id,
    )
    if row is None:
        return global_llm(settings)
    return await llm_from_row(conn, settings, tenant_id, row)


async def llm_from_row(conn: asyncpg.Connection, settings, tenant_id: uuid.UUID, row):
    """The client for one llm_settings row (None for provider none); the base URL is vetted."""
    if row["provider"] == "none":
        return None
    cls = OpenAICompatibleLLM if row["provider"] == "openai" else AnthropicLLM
    base_url = row["base_url"] or (
        "https://api.openai.com/v1" if row["provider"] == "openai" else "https://api.anthropic.com"
    )
    allow = allow_hosts_from_env()
    await vet_url(base_url, allow_hosts=allow)  # a tenant's URL: no internal targets (clear error early)
    # ...and the connection itself is vetted too, so DNS rebinding between the check and the call
    # cannot reach an internal address.
    api_key = await open_llm_key(conn, settings.secret_key, tenant_id, row["chatbot_id"], row["api_key_enc"])
    return cls(
        base_url,
        api_key,
        row["model"] or "default",
        retry=RetryPolicy(max_retries=1, max_wait=5.0),
        session_factory=lambda: guarded_session(allow_hosts=allow),
    )
