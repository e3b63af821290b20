"""Tenants never see or touch each other's chatbots, conversations, leads or events; a visitor
acts only on its own conversation."""
import asyncpg
import pytest


async def test_agent_of_a_cannot_read_or_act_on_b(make_workspace, owner_conn):
    a = await make_workspace()
    b = await make_workspace()
    b_bot = await b.chatbot()
    b_conv = await b.start(b_bot["id"])
    await b.visitor_says(b_conv, "B's secret question")
    status, b_lead = await b.call("POST", f"/api/conversations/{b_conv}/lead", json={"email": "x@b.test"})
    assert status == 201
    before = {t: await owner_conn.fetch(f"SELECT * FROM parley.{t} WHERE tenant_id = $1 ORDER BY 2", b.tenant_id)
              for t in ("chatbots", "conversations", "messages", "leads", "events")}

    conv = f"/api/conversations/{b_conv}"
    for method, path, payload in [
        ("GET", conv, None),
        ("POST", conv + "/claim", None),
        ("POST", conv + "/reply", {"body": "hi"}),
        ("POST", conv + "/notes", {"body": "hi"}),
        ("POST", conv + "/assign", {"user_id": a.owner["user_id"]}),
        ("POST", conv + "/release", None),
        ("POST", conv + "/close", None),
        ("POST", conv + "/reopen", None),
        ("POST", conv + "/lead", {"email": "a@a.test"}),
        ("GET", f"/api/chatbots/{b_bot['id']}", None),
        ("PATCH", f"/api/chatbots/{b_bot['id']}", {"name": "pwned"}),
        ("POST", f"/api/chatbots/{b_bot['id']}/rotate-key", None),
        ("DELETE", f"/api/chatbots/{b_bot['id']}", None),
        ("GET", f"/api/leads/{b_lead['id']}", None),
        ("PATCH", f"/api/leads/{b_lead['id']}", {"status": "contacted"}),
        ("DELETE", f"/api/leads/{b_lead['id']}", None),
    ]:
        status, body = await a.call(method, path, json=payload)
        assert status == 404, (method, path, status, body)

    # lists and searches of A show nothing of B
    assert (await a.call("GET", "/api/conversations"))[1]["conversations"] == []
    assert (await a.call("GET", "/api/conversations?q=secret"))[1]["conversations"] == []
    assert (await a.call("GET", "/api/chatbots"))[1]["chatbots"] == []
    assert (await a.call("GET", "/api/leads"))[1]["leads"] == []
    status, text = await a.call("GET", "/api/leads.csv")
    assert text.strip().count("\n") == 0  # header only
    # SQL the realtime relay uses: A's service transaction sees none of B's events or messages
    async with a.tx() as conn:
        assert await conn.fetch("SELECT * FROM parley.events_after(0, 100)") == []
        for sql, arg in (("SELECT * FROM parley.visible_messages($1, 0)", b_conv),
                         ("SELECT * FROM parley.start_conversation($1, gen_random_uuid())", b_bot["id"]),
                         ("SELECT * FROM parley.post_message($1, 'bot', 'hi')", b_conv)):
            with pytest.raises(asyncpg.PostgresError) as exc:
                async with conn.transaction():  # a savepoint per attempt
                    await conn.fetch(sql, arg)
            assert exc.value.sqlstate == "PT404", sql
        assert await conn.fetch("SELECT * FROM parley.widget_chatbot($1)", b_bot["public_key"])  # public by design

    after = {t: await owner_conn.fetch(f"SELECT * FROM parley.{t} WHERE tenant_id = $1 ORDER BY 2", b.tenant_id)
             for t in before}
    assert after == before


async def test_visitor_is_confined_to_its_conversation(ws, owner_conn):
    bot = await ws.chatbot()
    mine = await ws.start(bot["id"])
    other = await ws.start(bot["id"])
    await ws.visitor_says(other, "someone else's words")
    async with ws.visitor_tx(mine) as conn:
        for sql, args in [
            ("SELECT * FROM parley.post_message($1, 'visitor', 'sneaky')", (other,)),
            ("SELECT * FROM parley.visible_messages($1, 0)", (other,)),
            ("SELECT * FROM parley.transition_conversation($1, 'human')", (other,)),
            ("SELECT * FROM parley.transition_conversation($1, 'close')", (other,)),
            ("SELECT id FROM parley.capture_lead($1, 'n', 'e@x.test', NULL)", (other,)),
            ("SELECT * FROM parley.post_message($1, 'agent', 'pretending')", (mine,)),
            ("SELECT * FROM parley.post_message($1, 'bot', 'pretending')", (mine,)),
            ("SELECT * FROM parley.add_note($1, 'note')", (mine,)),
            ("SELECT * FROM parley.transition_conversation($1, 'claim')", (mine,)),
            ("SELECT * FROM parley.events_after(0, 10)", ()),
            ("SELECT * FROM parley.list_conversations()", ()),
        ]:
            with pytest.raises(asyncpg.PostgresError) as exc:
                async with conn.transaction():  # a savepoint per attempt
                    await conn.fetch(sql, *args)
            assert exc.value.sqlstate == "PT403", sql
    assert await owner_conn.fetchval("SELECT count(*) FROM parley.messages WHERE conversation_id = $1", other) == 1
    assert await owner_conn.fetchval("SELECT count(*) FROM parley.messages WHERE conversation_id = $1", mine) == 0


async def test_agent_cannot_manage_chatbots(ws):
    agent = ws.agents[0]["access_token"]
    bot = await ws.chatbot()
    assert (await ws.call("POST", "/api/chatbots", json={"name": "x"}, token=agent))[0] == 403
    assert (await ws.call("PATCH", f"/api/chatbots/{bot['id']}", json={"name": "x"}, token=agent))[0] == 403
    assert (await ws.call("DELETE", f"/api/chatbots/{bot['id']}", token=agent))[0] == 403
    status, body = await ws.call("GET", f"/api/chatbots/{bot['id']}", token=agent)
    assert status == 200 and body["name"] == "Helper"


async def test_visitor_transaction_sees_only_its_own_rows_even_with_raw_sql(ws):
    """RLS, not just the stored functions, confines a visitor to its conversation (no notes)."""
    bot = await ws.chatbot()
    mine, other = await ws.start(bot["id"]), await ws.start(bot["id"])
    await ws.visitor_says(mine, "my question")
    await ws.visitor_says(other, "someone else's words")
    status, out = await ws.call("POST", f"/api/conversations/{mine}/notes", json={"body": "internal note"})
    assert status == 201, out
    async with ws.visitor_tx(mine) as conn:
        convs = await conn.fetch("SELECT id FROM parley.conversations")
        bodies = [r["body"] for r in await conn.fetch("SELECT body FROM parley.messages")]
    assert [r["id"] for r in convs] == [mine]
    assert bodies == ["my question"]
    async with ws.tx() as conn:  # the server itself still sees the whole tenant
        assert await conn.fetchval("SELECT count(*) FROM parley.conversations") == 2


async def test_a_new_visitor_session_sees_only_the_conversation_it_starts(ws):
    bot = await ws.chatbot()
    await ws.start(bot["id"])
    async with ws.tx("visitor") as conn:  # no conversation yet, as in POST /api/widget/sessions
        row = await conn.fetchrow(
            "SELECT * FROM parley.start_conversation($1, $2, NULL, NULL, NULL, NULL, NULL, NULL)",
            bot["id"] if not isinstance(bot["id"], str) else __import__("uuid").UUID(bot["id"]),
            __import__("uuid").uuid4())
        visible = await conn.fetch("SELECT id FROM parley.conversations")
    assert [r["id"] for r in visible] == [row["id"]]
