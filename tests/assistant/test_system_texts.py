"""System message templates: shipped in five languages, worded per workspace through the API and
the console, said by the assistant and the widget socket, with placeholders, flags and a rate
limit in SQL, and another workspace's wording out of reach."""
import uuid

from pyapp.context import POOL
from pyapp.db import Actor, tenant_tx
from support.assistant import open_visitor
from support.console import ConsoleClient

LOCALES = {"en", "es", "fr", "de", "tr"}
KINDS = {"handoff", "unknown", "ai_quota", "assistant_unavailable", "rate_limited", "message_limit",
         "conversation_limit"}


def service_tx(server, tenant_id):
    """A tenant transaction as the server itself (how the assistant and the socket say system texts)."""
    return tenant_tx(server.app[POOL], Actor(uuid.UUID(str(tenant_id)), kind="service", actor_id="test"))


async def test_every_kind_ships_in_every_widget_language(owner_conn):
    rows = await owner_conn.fetch("SELECT kind, locale FROM parley.system_text_defaults")
    assert {(r["kind"], r["locale"]) for r in rows} == {(k, loc) for k in KINDS for loc in LOCALES}


async def test_a_workspace_words_the_decline_its_way(server, bot, owner_conn, clients, signup):
    status, out = await server.call("PUT", "/api/system-texts/unknown/en", token=bot["access_token"], json={
        "body": "No idea, sorry{customer_name}. Shall I get someone?"})
    assert status == 200 and out["custom"] is True and out["to_widget"] is True
    _session, v = await open_visitor(server, bot, clients)
    await v.send({"type": "message", "client_id": "c1", "body": "What's the airspeed of a swallow?"})
    reply = await v.expect_message(author="bot")
    assert reply["body"] == "No idea, sorry. Shall I get someone?" and reply["offer_human"] is True

    # Another workspace keeps the shipped text and cannot read or change this one's.
    other = await signup(server)
    status, texts = await server.call("GET", "/api/system-texts?locale=en", token=other["access_token"])
    unknown = next(t for t in texts["texts"] if t["kind"] == "unknown")
    assert unknown["custom"] is False and unknown["body"].startswith("I'm sorry, I don't know")
    status, _ = await server.call("DELETE", "/api/system-texts/unknown/en", token=other["access_token"])
    assert status == 200
    assert await owner_conn.fetchval("SELECT count(*) FROM parley.system_texts WHERE tenant_id = $1",
                                     uuid.UUID(str(bot["tenant_id"]))) == 1

    # Back to the shipped text.
    status, out = await server.call("DELETE", "/api/system-texts/unknown/en", token=bot["access_token"])
    assert status == 200 and out["custom"] is False
    actions = [r["action"] for r in await owner_conn.fetch(
        "SELECT action FROM parley.audit_log WHERE tenant_id = $1 AND action LIKE 'system_text.%' ORDER BY id",
        uuid.UUID(str(bot["tenant_id"])))]
    assert actions == ["system_text.update", "system_text.reset"]


async def test_placeholders_locale_fallback_and_a_handoff_kept_from_channels(server, bot, owner_conn):
    conv = await owner_conn.fetchval(
        "INSERT INTO parley.conversations (tenant_id, chatbot_id, visitor_id, codename, status)"
        " VALUES ($1, $2, gen_random_uuid(), 'Blue Fox', 'bot') RETURNING id",
        uuid.UUID(str(bot["tenant_id"])), uuid.UUID(str(bot["chatbot_id"])))
    await owner_conn.execute("INSERT INTO parley.leads (tenant_id, conversation_id, chatbot_id, name)"
                             " VALUES ($1, $2, $3, 'Ana')", uuid.UUID(str(bot["tenant_id"])), conv,
                             uuid.UUID(str(bot["chatbot_id"])))
    status, _ = await server.call("PUT", "/api/system-texts/handoff/de", token=bot["access_token"], json={
        "body": "Einen Moment, {customer_name} ({codename}) – {agent_name}!", "to_channels": False, "pin": True})
    assert status == 200
    async with service_tx(server, bot["tenant_id"]) as conn:
        said = await conn.fetchval("SELECT parley.post_system_text($1, 'handoff', 'de-AT')", conv)
        assert said["posted"] is True and said["locale"] == "de"
        assert said["body"] == "Einen Moment, Ana (Blue Fox) – !"
        # A language that is not shipped: English.
        assert (await conn.fetchval("SELECT parley.system_text('handoff', 'ja', NULL)"))["locale"] == "en"
    meta = await owner_conn.fetchval("SELECT meta FROM parley.messages WHERE id = $1", said["message_id"])
    assert meta["notice"] == "handoff" and meta["to_channels"] is False and meta["pin"] is True


async def test_not_to_the_widget_says_nothing_and_the_rate_limit_drops_the_rest(server, bot, owner_conn):
    conv = await owner_conn.fetchval(
        "INSERT INTO parley.conversations (tenant_id, chatbot_id, visitor_id, status)"
        " VALUES ($1, $2, gen_random_uuid(), 'bot') RETURNING id",
        uuid.UUID(str(bot["tenant_id"])), uuid.UUID(str(bot["chatbot_id"])))
    status, _ = await server.call("PUT", "/api/system-texts/ai_quota/en", token=bot["access_token"],
                                  json={"body": "Quota.", "to_widget": False})
    assert status == 200
    async with service_tx(server, bot["tenant_id"]) as conn:
        said = await conn.fetchval("SELECT parley.post_system_text($1, 'ai_quota', 'en')", conv)
        assert said["posted"] is False
        results = [await conn.fetchval("SELECT parley.post_system_text($1, 'handoff', 'en')", conv)
                   for _ in range(8)]
    per_minute = await owner_conn.fetchval("SELECT parley.system_texts_per_minute()")
    assert [r["posted"] for r in results] == [True] * per_minute + [False] * (8 - per_minute)
    assert results[-1]["limited"] is True
    assert await owner_conn.fetchval("SELECT count(*) FROM parley.messages WHERE conversation_id = $1", conv) \
        == per_minute


async def test_bad_input_and_roles(server, bot, signup):
    token = bot["access_token"]
    for path, body, code in [
        ("/api/system-texts/unknown/en", {"body": ""}, 422),
        ("/api/system-texts/unknown/en", {"body": "x" * 2001}, 422),
        ("/api/system-texts/unknown/en", {"body": "bad \u202e text"}, 422),
        ("/api/system-texts/nope/en", {"body": "Hi"}, 404),
        ("/api/system-texts/unknown/xx", {"body": "Hi"}, 404),
    ]:
        status, out = await server.call("PUT", path, json=body, token=token)
        assert status == code, (path, out)
        assert "error" in out
    agent = await signup(server, join=bot, role="agent")
    status, out = await server.call("GET", "/api/system-texts", token=agent["access_token"])
    assert status == 403


async def test_console_messages_page_round_trip(server, bot):
    client = ConsoleClient(server.base_url)
    try:
        await client.sign_in(bot["email"], bot["password"])
        status, page, _ = await client.get("/console/messages?locale=fr")
        assert status == 200 and "Je vous mets en relation" in page
        status, page, _ = await client.post("/console/messages/handoff/fr", {
            "body": "Un instant, {agent_name} arrive.", "to_widget": "1", "store": "1"})
        assert status == 200 and "Saved." in page, page[page.find("<main"):][:1500]
        assert "Un instant, {agent_name} arrive." in page, page[page.find('id="handoff"'):][:800]
        status, out = await server.call("GET", "/api/system-texts?locale=fr", token=bot["access_token"])
        handoff = next(t for t in out["texts"] if t["kind"] == "handoff")
        assert handoff["custom"] and handoff["to_channels"] is False and handoff["pin"] is False
        status, page, _ = await client.post("/console/messages/handoff/fr/reset")
        assert status == 200 and "Je vous mets en relation" in page
    finally:
        await client.close()
