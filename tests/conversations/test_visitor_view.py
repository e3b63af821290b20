"""What a visitor is sent of each event is decided once, in SQL: events_after's visitor column
(parley.visitor_frame). The relay reads as the service actor, which sees notes and meta; these
tests read the way it does and check that nothing staff-only can reach the visitor's frame."""
import json


async def read_as_relay(ws, after: int = 0) -> list:
    async with ws.tx(actor_id="relay") as conn:
        return await conn.fetch("SELECT * FROM parley.events_after($1, 1000)", after)


async def test_every_event_kind_gives_the_visitor_its_frame_and_never_a_note(ws):
    agent = ws.agents[0]
    bot = await ws.chatbot()
    conv = await ws.start(bot["id"])
    base = f"/api/conversations/{conv}"
    await ws.visitor_says(conv, "Where is my order?", "c-1")
    async with ws.tx(actor_id="bot") as conn:  # the bot's reply, stored as BotTurn.reply does
        await conn.fetchrow("SELECT * FROM parley.post_message($1, 'bot', 'Let me look.', NULL, $2)",
                            conv, {"stream_id": "s-1", "internal": "staff only"})
    async with ws.visitor_tx(conv) as conn:
        await conn.fetchrow("SELECT * FROM parley.transition_conversation($1, 'human')", conv)
    steps = [("notes", {"body": "VIP customer, staff only"}, None), ("claim", None, agent),
             ("reply", {"body": "Ann here"}, agent), ("release", None, agent),
             ("assign", {"user_id": agent["user_id"]}, None), ("close", None, None),
             ("notes", {"body": "closed; staff only"}, None), ("reopen", None, agent), ("close", None, None)]
    for action, body, who in steps:
        status, out = await ws.call("POST", f"{base}/{action}", json=body,
                                    token=who["access_token"] if who else None)
        assert status in (200, 201), (action, out)
    await ws.visitor_says(conv, "hello again?", "c-2")

    rows = [r for r in await read_as_relay(ws) if r["conversation_id"] == conv]
    async with ws.visitor_tx(conv) as conn:
        visible = {r["id"]: r["message"] for r in await conn.fetch("SELECT * FROM parley.visible_messages($1, 0)", conv)}
    statuses = []
    for r in rows:
        frame = r["visitor"]
        if r["kind"] == "message_added":
            # The same visitor shape as the replay on hello: one definition (message_json(m, true)).
            assert frame == {"type": "message", "message": visible[r["message_id"]]}, r
        elif frame is not None:
            # a handoff while nobody of the team is online also says so (sql/47_presence.sql)
            expected = {"type", "status", "available"} if r["kind"] == "human_requested" else {"type", "status"}
            assert set(frame) == expected and frame["type"] == "status", r
            assert frame.get("available", False) is False
            statuses.append((r["kind"], frame["status"]))
        text = json.dumps(frame)
        assert "staff only" not in text and "author_id" not in text and "meta" not in text, r
    assert [r["visitor"] for r in rows if r["kind"] in ("note_added", "conversation_started")] == [None, None, None]
    assert statuses == [("human_requested", "waiting_human"), ("claimed", "human"), ("released", "bot"),
                        ("assigned", "human"), ("closed", "closed"), ("reopened", "human"), ("closed", "closed"),
                        ("reopened", "bot")]
    assert [m["body"] for m in visible.values()] == ["Where is my order?", "Let me look.", "Ann here", "hello again?"]


async def test_a_note_is_nothing_to_a_visitor_even_as_a_message_event(ws, owner_conn):
    """Should a note ever be announced as message_added (a bug elsewhere), the frame is still empty."""
    bot = await ws.chatbot()
    conv = await ws.start(bot["id"])
    await ws.call("POST", f"/api/conversations/{conv}/notes", json={"body": "staff only"})
    frames = await owner_conn.fetch(
        "SELECT parley.visitor_frame(k, '{}', m) AS f FROM parley.messages m,"
        " unnest(ARRAY['message_added', 'note_added']) k WHERE m.conversation_id = $1 AND m.author = 'note'", conv)
    assert [r["f"] for r in frames] == [None, None]
    assert await owner_conn.fetchval("SELECT parley.visitor_frame('message_added', '{}', NULL::parley.messages)") is None
    assert await owner_conn.fetchval("SELECT parley.visitor_frame('tag_added', '{}', NULL)") is None
