"""The assistant end to end: a real server, a real visitor WebSocket, fake LLM servers."""
import asyncio
import uuid

import pytest
from pyapp.metrics import REGISTRY
from pyapp.providers.prompt import RULES
from support.assistant import bot_messages, open_visitor, use_llm
from support.fakes.llm_servers import Reply
from support.waits import day_clear


async def test_streams_then_stores_the_reply_once(server, bot, owner_conn, clients, fake_openai):
    fake_openai.script.append(Reply.text("Refunds are possible within 30 days of purchase [1]."))
    await use_llm(server, bot, "openai", fake_openai.base_url)
    session, v = await open_visitor(server, bot, clients)
    first_tokens = REGISTRY.get_sample_value("parley_bot_turn_seconds_count", {"phase": "first_token"}) or 0
    await v.send({"type": "message", "client_id": "c1", "body": "Can I get a refund?"})
    first = await v.expect(type="stream")
    final = await v.expect_message(author="bot")
    # /metrics' first-token histogram counted this turn (retrieval and whole answer: tests/ops/test_metrics.py)
    assert REGISTRY.get_sample_value("parley_bot_turn_seconds_count", {"phase": "first_token"}) == first_tokens + 1
    deltas = "".join(f["delta"] for f in v.frames if f.get("type") == "stream")
    assert final["stream_id"] == first["stream_id"]
    assert final["body"] == deltas.strip() == "Refunds are possible within 30 days of purchase [1]."
    assert final["citations"] == [{"n": 1, "title": "Help", "url": None}]
    stored = await bot_messages(owner_conn, session["conversation_id"])
    assert [m["author"] for m in stored] == ["bot"]
    assert stored[0]["meta"]["grounded"] is True
    # The prompt was grounded: rules plus the refund passage, the question last.
    request = fake_openai.requests[0].json
    assert RULES in request["messages"][0]["content"] and "30 days" in request["messages"][0]["content"]
    assert request["messages"][-1] == {"role": "user", "content": "Can I get a refund?"}
    assert await owner_conn.fetchval("SELECT parley_usage_ai FROM (SELECT sum(value) AS parley_usage_ai"
                                     " FROM parley.usage_counters WHERE metric = 'ai_messages') x") == 1


async def test_visitor_disconnect_mid_stream_still_stores_and_replays(server, bot, owner_conn, clients,
                                                                      fake_openai):
    fake_openai.script.append(Reply.text("Refunds take 5 to 10 business days [1].", delay=0.05))
    await use_llm(server, bot, "openai", fake_openai.base_url)
    session, v = await open_visitor(server, bot, clients)
    await v.send({"type": "message", "client_id": "c1", "body": "How long does a refund take?"})
    mine = await v.expect_message(author="visitor")
    await v.expect(type="stream")
    await v.close()  # gone mid-stream
    clients.remove(v)

    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while not (stored := await bot_messages(owner_conn, session["conversation_id"])):
        assert loop.time() < deadline, "the reply was never stored"
        await asyncio.sleep(0.05)
    assert stored[0]["body"] == "Refunds take 5 to 10 business days [1]."

    _, again = await open_visitor(server, bot, clients, session=session, last_seen_id=mine["id"])
    replayed = await again.expect_message(author="bot")
    assert replayed["body"] == stored[0]["body"] and replayed["stream_id"] == stored[0]["meta"]["stream_id"]


@pytest.mark.parametrize("phrase", ["Can I talk to a human please?", "Quiero hablar con una persona",
                                    "Je veux parler à un humain", "Kann ich mit einem Menschen sprechen?",
                                    "İnsanla konuşmak istiyorum", "agent"])
async def test_handoff_by_phrase_makes_no_llm_call(server, bot, owner_conn, clients, fake_openai, phrase):
    await use_llm(server, bot, "openai", fake_openai.base_url)
    session, v = await open_visitor(server, bot, clients)
    await v.send({"type": "message", "client_id": "c1", "body": phrase})
    await v.expect(type="lead_request")
    await v.expect(type="status", status="waiting_human")
    notice = await v.expect_message(author="system")
    assert "person" in notice["body"]
    assert fake_openai.requests == []
    assert await owner_conn.fetchval("SELECT status FROM parley.conversations WHERE id = $1",
                                     uuid.UUID(session["conversation_id"])) == "waiting_human"


async def test_a_yes_after_the_offer_hands_off_then_silent_until_released(server, bot, owner_conn, clients):
    # No LLM configured: the extractive answerer. An unanswerable question: "I don't know", with an
    # offer of a person (a button in the widget); the visitor's "yes" hands off.
    session, v = await open_visitor(server, bot, clients)
    conv = uuid.UUID(session["conversation_id"])
    await v.send({"type": "message", "client_id": "c1", "body": "What's the airspeed of a swallow?"})
    first = await v.expect_message(author="bot")
    assert "don't know" in first["body"] and first["citations"] == [] and first["offer_human"] is True
    await v.send({"type": "message", "client_id": "c2", "body": "Yes please!"})
    await v.expect(type="status", status="waiting_human")
    await v.expect_message(author="system")
    assert await owner_conn.fetchval("SELECT status FROM parley.conversations WHERE id = $1", conv) == "waiting_human"

    # While waiting for / owned by a human the bot stays silent.
    await v.send({"type": "message", "client_id": "c3", "body": "Can I get a refund?"})
    await v.expect_message(author="visitor", body="Can I get a refund?")
    count = len(await bot_messages(owner_conn, session["conversation_id"]))

    status, _ = await server.call("POST", f"/api/conversations/{conv}/release", token=bot["access_token"])
    assert status == 200
    await v.expect(type="status", status="bot")
    await v.send({"type": "message", "client_id": "c4", "body": "Can I get my money back?"})
    answer = await v.expect_message(author="bot")
    assert "30 days" in answer["body"] and answer["citations"][0]["n"] == 1
    assert len(await bot_messages(owner_conn, session["conversation_id"])) == count + 1
    assert await owner_conn.fetchval("SELECT status FROM parley.conversations WHERE id = $1", conv) == "bot"


async def test_quota_refusal_makes_no_llm_call(server, bot, owner_conn, clients, fake_openai):
    await use_llm(server, bot, "openai", fake_openai.base_url)
    await owner_conn.execute("INSERT INTO parley.tenant_limits (tenant_id, ai_msgs_per_day) VALUES ($1, 1)",
                             uuid.UUID(bot["tenant_id"]))
    await day_clear(owner_conn)
    await owner_conn.execute("INSERT INTO parley.usage_counters (tenant_id, day, metric, shard, value)"
                             " VALUES ($1, (now() AT TIME ZONE 'UTC')::date, 'ai_messages', 0, 1)",
                             uuid.UUID(bot["tenant_id"]))
    session, v = await open_visitor(server, bot, clients)
    await v.send({"type": "message", "client_id": "c1", "body": "Can I get a refund?"})
    notice = await v.expect_message(author="system")
    assert "for today" in notice["body"]
    stored = await bot_messages(owner_conn, session["conversation_id"])
    assert [(m["author"], m["meta"]["notice"]) for m in stored] == [("system", "ai_quota")]
    assert fake_openai.requests == []


async def test_anthropic_provider(server, bot, owner_conn, clients, fake_anthropic):
    fake_anthropic.script.append(Reply.text("Standard delivery takes 2 to 4 working days [1]."))
    await use_llm(server, bot, "anthropic", fake_anthropic.base_url)
    _session, v = await open_visitor(server, bot, clients)
    await v.send({"type": "message", "client_id": "c1", "body": "How long does shipping take?"})
    await v.expect(type="stream")
    final = await v.expect_message(author="bot")
    assert final["body"] == "Standard delivery takes 2 to 4 working days [1]."
    assert fake_anthropic.requests[0].path == "/v1/messages"
    assert fake_anthropic.requests[0].headers.get("x-api-key") == "test-key"


async def test_provider_failure_gives_a_clear_notice(server, bot, owner_conn, clients, fake_openai):
    fake_openai.default_reply = Reply.server_error(500)
    await use_llm(server, bot, "openai", fake_openai.base_url)
    session, v = await open_visitor(server, bot, clients)
    await v.send({"type": "message", "client_id": "c1", "body": "Can I get a refund?"})
    notice = await v.expect_message(author="system")
    assert "unavailable" in notice["body"]
    stored = await bot_messages(owner_conn, session["conversation_id"])
    assert [(m["author"], m["meta"].get("notice")) for m in stored] == [("system", "assistant_unavailable")]


async def test_extractive_answer_without_llm_cites(server, bot, clients):
    _, v = await open_visitor(server, bot, clients)
    await v.send({"type": "message", "client_id": "c1", "body": "How many days do I have to ask for a refund?"})
    answer = await v.expect_message(author="bot")
    assert "30 days" in answer["body"] and "[1]" in answer["body"]
    assert answer["citations"] == [{"n": 1, "title": "Help", "url": None}]


async def test_llm_keys_are_encrypted_at_rest(server, bot, owner_conn, fake_openai):
    await use_llm(server, bot, "openai", fake_openai.base_url)
    blob = await owner_conn.fetchval("SELECT api_key_enc FROM parley.llm_settings")
    assert b"test-key" not in bytes(blob)
    status, listed = await server.call("GET", "/api/assistant/llm", token=bot["access_token"])
    assert status == 200 and listed[0]["has_key"] is True and "api_key_enc" not in listed[0]
    status, body = await server.call("PUT", "/api/assistant/llm", json={
        "provider": "openai", "base_url": "http://169.254.169.254/v1", "model": "m"}, token=bot["access_token"])
    assert (status, body["error"]["code"]) == (422, "url_not_allowed")


async def test_a_key_is_not_redirected_to_a_new_host_without_entering_it(server, bot, owner_conn,
                                                                         fake_openai, fake_anthropic):
    await use_llm(server, bot, "openai", fake_openai.base_url)
    before = await owner_conn.fetchrow("SELECT base_url, api_key_enc FROM parley.llm_settings")
    for change in ({"provider": "openai", "base_url": fake_anthropic.base_url},
                   {"provider": "anthropic", "base_url": fake_openai.base_url}):
        status, body = await server.call("PUT", "/api/assistant/llm", json={**change, "model": "m"},
                                         token=bot["access_token"])
        assert (status, body["error"]["code"]) == (422, "llm_key_required")
    assert await owner_conn.fetchrow("SELECT base_url, api_key_enc FROM parley.llm_settings") == before
    status, body = await server.call("PUT", "/api/assistant/llm", json={
        "provider": "openai", "base_url": fake_openai.base_url, "model": "other"}, token=bot["access_token"])
    assert status == 200 and body["has_key"] is True and body["model"] == "other"
    status, body = await server.call("PUT", "/api/assistant/llm", json={
        "provider": "openai", "base_url": fake_anthropic.base_url, "model": "m", "api_key": "new-key"},
        token=bot["access_token"])
    assert status == 200 and body["has_key"] is True and body["base_url"] == fake_anthropic.base_url
    status, body = await server.call("PUT", "/api/assistant/llm", json={"provider": "none"},
                                     token=bot["access_token"])
    assert status == 200 and body["has_key"] is False


async def test_a_yes_without_an_offer_is_just_a_message(server, bot, owner_conn, clients):
    session, v = await open_visitor(server, bot, clients)
    await v.send({"type": "message", "client_id": "c1", "body": "Can I get my money back?"})
    answer = await v.expect_message(author="bot")
    assert "30 days" in answer["body"] and "offer_human" not in answer
    await v.send({"type": "message", "client_id": "c2", "body": "yes"})
    await v.expect_message(author="bot")
    assert await owner_conn.fetchval("SELECT status FROM parley.conversations WHERE id = $1",
                                     uuid.UUID(session["conversation_id"])) == "bot"


async def test_two_misses_hand_off_by_default(server, bot, owner_conn, clients, fake_openai):
    await owner_conn.execute("UPDATE parley.chatbots SET config = config - 'handoff' WHERE id = $1", bot["chatbot_id"])
    fake_openai.script.extend([Reply.text("Hmm, maybe ask around."), Reply.text("I am not sure about that.")])
    await use_llm(server, bot, "openai", fake_openai.base_url)
    _session, v = await open_visitor(server, bot, clients)
    await v.send({"type": "message", "client_id": "c1", "body": "What's the airspeed of a swallow?"})
    first = await v.expect_message(author="bot")
    assert first["body"] == "Hmm, maybe ask around."
    await v.send({"type": "message", "client_id": "c2", "body": "Who painted the Mona Lisa?"})
    await v.expect_message("I am not sure about that.", author="bot")
    await v.expect(type="status", status="waiting_human")
    assert "person" in (await v.expect_message(author="system"))["body"]


@pytest.mark.parametrize("text,yes", [
    ("yes", True), ("Yes please!", True), ("sure", True), ("yeah ok", True),
    ("sí, por favor", True), ("Claro", True), ("oui merci", True), ("D'accord.", True),
    ("Ja, gerne", True), ("ja bitte", True), ("Evet lütfen", True), ("tamam", True),
    ("no", False), ("nein danke", False), ("yes but what does shipping to Norway cost", False),
    ("What are your opening hours?", False), ("", False), ("hayır", False)])
def test_says_yes_in_the_five_widget_languages(text, yes):
    from pyapp.assistant.responder import says_yes
    assert says_yes(text) is yes


def test_language_auto_is_the_visitors():
    from pyapp.assistant.responder import language_of
    assert language_of({}, "de-DE") == "de" and language_of({"language": "auto"}, "tr") == "tr"
    assert language_of({"language": "fr"}, "de-DE") == "fr" and language_of({"language": "auto"}, "pt-BR") == "en"
