"""The assistant end to end: an owner with a chatbot that knows a little, and its visitors."""
from __future__ import annotations

import uuid

import pytest

from support.realtime import create_chatbot, visitor, widget_session

KNOWLEDGE = ("# Refund policy\n\nYou can ask for your money back within 30 days of purchase. Refunds go to the "
             "original payment method and take 5 to 10 business days.\n\n# Shipping\n\nStandard delivery takes "
             "2 to 4 working days.")


@pytest.fixture
async def bot(server, signup, owner_conn, monkeypatch):
    """An owner, a chatbot (handoff after 2 misses) with a little knowledge, the fakes allowed."""
    monkeypatch.setenv("PARLEY_FETCH_ALLOW_HOSTS", "127.0.0.1")
    for key in ("PARLEY_LLM", "PARLEY_LLM_PROVIDER"):
        monkeypatch.delenv(key, raising=False)
    owner = await signup(server)
    chatbot = await create_chatbot(owner_conn, owner["tenant_id"], config={
        "language": "en", "handoff": {"miss_threshold": 2},
        "lead_capture": {"mode": "before_handoff", "fields": ["name", "email"]}})
    status, src = await server.call("POST", f"/api/chatbots/{chatbot['chatbot_id']}/knowledge/sources",
                                    json={"kind": "text", "title": "Help", "text": KNOWLEDGE},
                                    token=owner["access_token"])
    assert status == 201, src
    return {**owner, **chatbot}


async def use_llm(server, bot, provider, url):
    status, out = await server.call("PUT", "/api/assistant/llm", json={
        "provider": provider, "base_url": url, "model": "fake-model", "api_key": "test-key"},
        token=bot["access_token"])
    assert status == 200, out
    assert out["has_key"] is True and "api_key" not in out


async def open_visitor(server, bot, clients, session=None, last_seen_id=0):
    session = session or await widget_session(server, bot["key"])
    v = await visitor(server, session, last_seen_id)
    clients.append(v)
    return session, v


async def bot_messages(owner_conn, conversation_id):
    return await owner_conn.fetch("SELECT id, author, body, meta FROM parley.messages WHERE conversation_id = $1"
                                  " AND author IN ('bot', 'system') ORDER BY id", uuid.UUID(conversation_id))
