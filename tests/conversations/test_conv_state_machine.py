"""The conversation state machine through the REST API and the SQL the realtime code calls."""
import asyncio

import asyncpg
import pytest
from support.waits import blocked_on_lock


async def test_lifecycle_and_invalid_transitions(ws, owner_conn):
    bot = await ws.chatbot()
    conv = await ws.start(bot["id"])
    agent = ws.agents[0]
    base = f"/api/conversations/{conv}"

    # bot: release is not a transition from bot
    status, body = await ws.call("POST", base + "/release", token=agent["access_token"])
    assert (status, body["error"]["code"]) == (409, "invalid_transition")

    # visitor asks for a human: bot → waiting_human (asking twice is harmless)
    async with ws.visitor_tx(conv) as conn:
        assert (await conn.fetchrow("SELECT * FROM parley.transition_conversation($1, 'human')", conv))["status"] == "waiting_human"
        assert (await conn.fetchrow("SELECT * FROM parley.transition_conversation($1, 'human')", conv))["status"] == "waiting_human"

    # agent claims: waiting_human → human
    status, body = await ws.call("POST", base + "/claim", token=agent["access_token"])
    assert status == 200, body
    assert (body["status"], body["assignee_id"]) == ("human", agent["user_id"])
    # the owner (another agent) cannot claim it now
    status, body = await ws.call("POST", base + "/claim")
    assert (status, body["error"]["code"]) == (409, "invalid_transition")
    # nor reply into it
    status, body = await ws.call("POST", base + "/reply", json={"body": "mine now"})
    assert (status, body["error"]["code"]) == (409, "invalid_transition")
    # a visitor cannot ask for a human while with one
    async with ws.visitor_tx(conv) as conn:
        with pytest.raises(asyncpg.PostgresError) as exc:
            await conn.fetchrow("SELECT * FROM parley.transition_conversation($1, 'human')", conv)
    assert exc.value.sqlstate == "PT409"

    # the assignee replies, then hands back to the bot
    status, msg = await ws.call("POST", base + "/reply", json={"body": "Hello, Ann here"}, token=agent["access_token"])
    assert status == 201 and msg["author"] == "agent" and msg["author_id"] == agent["user_id"]
    status, body = await ws.call("POST", base + "/release", token=agent["access_token"])
    assert (status, body["status"], body["assignee_id"]) == (200, "bot", None)

    # reply by the owner to an unassigned conversation claims it implicitly
    status, msg = await ws.call("POST", base + "/reply", json={"body": "Owner here"})
    assert status == 201
    status, body = await ws.call("GET", base)
    assert (body["conversation"]["status"], body["conversation"]["assignee_id"]) == ("human", ws.owner["user_id"])

    # assign to the agent, then to a non-member (422)
    status, body = await ws.call("POST", base + "/assign", json={"user_id": agent["user_id"]})
    assert (status, body["assignee_id"]) == (200, agent["user_id"])
    status, body = await ws.call("POST", base + "/assign", json={"user_id": "00000000-0000-0000-0000-000000000001"})
    assert (status, body["error"]["code"]) == (422, "not_a_member")

    # close; closed refuses close, claim, reply, release, assign; the bot cannot write
    status, body = await ws.call("POST", base + "/close")
    assert (status, body["status"]) == (200, "closed") and body["closed_at"]
    for action, payload in (("close", None), ("claim", None), ("release", None),
                            ("reply", {"body": "x"}), ("assign", {"user_id": agent["user_id"]})):
        status, body = await ws.call("POST", f"{base}/{action}", json=payload)
        assert (status, body["error"]["code"]) == (409, "invalid_transition"), action
    async with ws.tx() as conn:
        with pytest.raises(asyncpg.PostgresError) as exc:
            await conn.fetchrow("SELECT * FROM parley.post_message($1, 'bot', 'late answer')", conv)
    assert exc.value.sqlstate == "PT409"
    # notes are allowed on a closed conversation
    status, note = await ws.call("POST", base + "/notes", json={"body": "follow up Monday"})
    assert status == 201 and note["author"] == "note"

    # reopen by an agent: human, assigned to them; reopen of an open conversation is 409
    status, body = await ws.call("POST", base + "/reopen", token=agent["access_token"])
    assert (status, body["status"], body["assignee_id"]) == (200, "human", agent["user_id"])
    status, body = await ws.call("POST", base + "/reopen")
    assert (status, body["error"]["code"]) == (409, "invalid_transition")

    # a visitor message to a closed conversation reopens it with the bot
    await ws.call("POST", base + "/close")
    await ws.visitor_says(conv, "hello again?")
    status, body = await ws.call("GET", base)
    assert (body["conversation"]["status"], body["conversation"]["assignee_id"]) == ("bot", None)

    kinds = [r["kind"] for r in await owner_conn.fetch(
        "SELECT kind FROM parley.events WHERE conversation_id = $1 ORDER BY id", conv)]
    assert kinds == ["conversation_started", "human_requested", "claimed", "message_added", "released",
                     "claimed", "message_added", "assigned", "closed", "note_added", "reopened",
                     "closed", "reopened", "message_added"]


async def test_transcript_shows_notes_to_agents_but_never_to_visitors(ws):
    bot = await ws.chatbot()
    conv = await ws.start(bot["id"])
    await ws.visitor_says(conv, "Where is my order?")
    await ws.call("POST", f"/api/conversations/{conv}/notes", json={"body": "VIP customer"})
    await ws.call("POST", f"/api/conversations/{conv}/reply", json={"body": "Let me check."})
    status, body = await ws.call("GET", f"/api/conversations/{conv}")
    assert status == 200
    assert [m["author"] for m in body["messages"]] == ["visitor", "note", "agent"]
    async with ws.visitor_tx(conv) as conn:
        rows = await conn.fetch("SELECT * FROM parley.visible_messages($1, 0)", conv)
        after = await conn.fetch("SELECT * FROM parley.visible_messages($1, $2)", conv, rows[0]["id"])
    assert [r["author"] for r in rows] == ["visitor", "agent"]
    assert [r["body"] for r in after] == ["Let me check."]
    assert "meta" not in rows[1]["message"] and "author_id" not in rows[1]["message"]
    assert rows[1]["message"]["author_name"] == "Test User"


async def test_idempotent_resend(ws, owner_conn):
    bot = await ws.chatbot()
    conv = await ws.start(bot["id"])
    first = await ws.visitor_says(conv, "hi", client_id="c-1")
    again = await ws.visitor_says(conv, "hi", client_id="c-1")
    assert again["id"] == first["id"]
    async with ws.visitor_tx(conv) as conn:  # how the caller tells a resend apart
        dup = await conn.fetchval("SELECT m.created_at < now() FROM parley.post_message($1, 'visitor', 'hi', 'c-1') m", conv)
    assert dup is True
    s1, m1 = await ws.call("POST", f"/api/conversations/{conv}/reply", json={"body": "hello", "client_id": "a-1"})
    s2, m2 = await ws.call("POST", f"/api/conversations/{conv}/reply", json={"body": "hello", "client_id": "a-1"})
    assert (s1, s2) == (201, 201) and m1["id"] == m2["id"]
    assert await owner_conn.fetchval("SELECT count(*) FROM parley.messages WHERE conversation_id = $1", conv) == 2
    assert await owner_conn.fetchval(
        "SELECT count(*) FROM parley.events WHERE conversation_id = $1 AND kind = 'message_added'", conv) == 2
    # concurrent resends of one client_id store one row (the conversation lock serialises them)
    await asyncio.gather(*(ws.visitor_says(conv, "burst", client_id="c-2") for _ in range(6)))
    assert await owner_conn.fetchval(
        "SELECT count(*) FROM parley.messages WHERE conversation_id = $1 AND client_id = 'c-2'", conv) == 1


async def test_concurrent_claim_exactly_one_wins(ws, owner_conn):
    second = await ws.add_agent()
    first = ws.agents[0]
    bot = await ws.chatbot()
    conv = await ws.start(bot["id"])
    from pyapp.db import Actor, tenant_tx

    def agent_tx(agent):
        return tenant_tx(ws.pool, Actor(tenant_id=ws.tenant_id, kind="user", actor_id=agent["user_id"],
                                        session_id=_session_of(agent)))

    # Interleaved step by step: A claims inside an open transaction; B's claim must wait for
    # A's row lock, then see A's claim and fail.
    async with agent_tx(first) as a:
        row = await a.fetchrow("SELECT * FROM parley.transition_conversation($1, 'claim')", conv)
        assert str(row["assignee_id"]) == first["user_id"]

        async def b_claims():
            async with agent_tx(second) as b:
                return await b.fetchrow("SELECT * FROM parley.transition_conversation($1, 'claim')", conv)
        b_task = asyncio.create_task(b_claims())
        await blocked_on_lock(owner_conn)
        assert not b_task.done()  # blocked on A's lock
    with pytest.raises(asyncpg.PostgresError) as exc:
        await b_task
    assert exc.value.sqlstate == "PT409"

    # And racing through the API: exactly one 200, one 409.
    conv2 = await ws.start(bot["id"])
    results = await asyncio.gather(*(ws.call("POST", f"/api/conversations/{conv2}/claim", token=a["access_token"])
                                     for a in (first, second)))
    assert sorted(s for s, _ in results) == [200, 409]
    winner = next(b for s, b in results if s == 200)
    assert await owner_conn.fetchval("SELECT assignee_id::text FROM parley.conversations WHERE id = $1", conv2) \
        == winner["assignee_id"]
    assert await owner_conn.fetchval(
        "SELECT count(*) FROM parley.events WHERE conversation_id = $1 AND kind = 'claimed'", conv2) == 1


def _session_of(agent):
    from pyapp.security import decode_access_token
    from support.server import TEST_SECRET
    return decode_access_token(TEST_SECRET, agent["access_token"]).session_id


async def test_message_validation(ws):
    bot = await ws.chatbot()
    conv = await ws.start(bot["id"])
    base = f"/api/conversations/{conv}"
    for payload in ({"body": ""}, {"body": "   "}, {"body": "x" * 4001}, {"body": "nul\x00byte"},
                    {"body": "evil\u202eflip"}, {"body": "ok", "client_id": "has space"}, {"body": "ok", "extra": 1}):
        status, body = await ws.call("POST", base + "/reply", json=payload)
        assert (status, body["error"]["code"]) == (422, "validation_failed"), payload
    status, _ = await ws.call("POST", base + "/reply", json={"body": "x" * 4000})
    assert status == 201
    async with ws.visitor_tx(conv) as conn:
        with pytest.raises(asyncpg.PostgresError) as exc:
            await conn.fetchrow("SELECT * FROM parley.post_message($1, 'visitor', $2)", conv, "y" * 4001)
    assert (exc.value.sqlstate, exc.value.hint) == ("PT422", "body_too_long")
    status, body = await ws.call("POST", "/api/conversations/not-a-uuid/claim")
    assert status == 404
