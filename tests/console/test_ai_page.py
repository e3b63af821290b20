"""The AI model page: save a provider, test the connection against the fake LLM, the key write-only."""
from __future__ import annotations

import html as htmllib

from support.fakes.llm_servers import Reply

KEY = "sk-secret-console-key-123"


async def _signed_in(server, signup, console_client, monkeypatch):
    monkeypatch.setenv("PARLEY_FETCH_ALLOW_HOSTS", "127.0.0.1")
    for key in ("PARLEY_LLM", "PARLEY_LLM_PROVIDER"):
        monkeypatch.delenv(key, raising=False)
    owner = await signup(server)
    c = console_client()
    await c.sign_in(owner["email"], owner["password"])
    return owner, c


async def test_save_and_test_connection(server, signup, console_client, monkeypatch, fake_openai):
    owner, c = await _signed_in(server, signup, console_client, monkeypatch)
    status, text, _ = await c.get("/console/ai")
    assert status == 200 and "No key is set." in text and 'href="/console/ai"' in text
    fake_openai.api_key = KEY
    fake_openai.default_reply = Reply.text("OK")
    status, text, _ = await c.post("/console/ai", {"provider": "openai", "base_url": fake_openai.base_url,
                                                      "model": "fake-model", "api_key": KEY})
    assert status == 200 and "AI model saved." in text and "A key is set." in text
    assert KEY not in text and fake_openai.base_url in text
    status, text, _ = await c.post("/console/ai/test", {})
    assert status == 200 and "Connected: the model answered" in text and "OK" in text
    sent = fake_openai.requests[-1]
    assert sent.headers["Authorization"] == f"Bearer {KEY}" and sent.json["model"] == "fake-model"
    assert KEY not in text
    # the API reads the same setting; the key is never returned
    status, listed = await server.call("GET", "/api/assistant/llm", token=owner["access_token"])
    assert listed[0]["has_key"] is True and KEY not in str(listed)


async def test_failing_connection_says_why(server, signup, console_client, monkeypatch, fake_openai):
    _, c = await _signed_in(server, signup, console_client, monkeypatch)
    fake_openai.api_key = "the-right-key"
    await c.post("/console/ai", {"provider": "openai", "base_url": fake_openai.base_url, "model": "m",
                                 "api_key": "a-wrong-key"})
    status, text, _ = await c.post("/console/ai/test", {})
    assert status == 200 and "The test failed" in text and "HTTP 401" in text
    assert "Incorrect API key" in htmllib.unescape(text)
    assert "a-wrong-key" not in text


async def test_base_url_or_provider_change_needs_the_key(server, signup, console_client, monkeypatch,
                                                         fake_openai, fake_anthropic):
    owner, c = await _signed_in(server, signup, console_client, monkeypatch)
    await c.post("/console/ai", {"provider": "openai", "base_url": fake_openai.base_url, "model": "m",
                                 "api_key": KEY})
    status, text, _ = await c.post("/console/ai", {"provider": "openai", "base_url": fake_anthropic.base_url,
                                                   "model": "m", "api_key": ""})
    assert status == 422 and "Enter the API key again" in text
    status, text, _ = await c.post("/console/ai", {"provider": "anthropic", "base_url": fake_openai.base_url,
                                                   "model": "m", "api_key": ""})
    assert status == 422 and "Enter the API key again" in text
    status, listed = await server.call("GET", "/api/assistant/llm", token=owner["access_token"])
    assert (listed[0]["provider"], listed[0]["base_url"]) == ("openai", fake_openai.base_url)
    # same endpoint, new model: the key stays
    status, text, _ = await c.post("/console/ai", {"provider": "openai", "base_url": fake_openai.base_url,
                                                   "model": "other", "api_key": ""})
    assert status == 200 and "A key is set." in text


async def test_internal_url_and_agents_are_refused(server, signup, console_client, monkeypatch):
    owner, c = await _signed_in(server, signup, console_client, monkeypatch)
    status, text, _ = await c.post("/console/ai", {"provider": "openai", "base_url": "http://169.254.169.254/v1",
                                                   "model": "m", "api_key": KEY})
    assert status == 422 and "cannot be used" in text and KEY not in text
    agent = await signup(server, join=owner, role="agent")
    a = console_client()
    await a.sign_in(agent["email"], agent["password"])
    status, _, _ = await a.get("/console/ai")
    assert status == 403
