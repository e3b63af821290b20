"""Handoff after misses, one rule in SQL (store_message): the bot's ungrounded answers in a row
(meta.grounded = false) count in conversations.bot_misses; a grounded answer or a person taking
part starts again; at handoff.miss_threshold the answer's own transaction hands off."""


async def _bot_says(ws, conv, grounded: bool | None):
    meta = {} if grounded is None else {"grounded": grounded}
    async with ws.tx("service") as conn:
        await conn.fetchrow("SELECT * FROM parley.post_message($1, 'bot', 'an answer', NULL, $2)", conv, meta)
        return await conn.fetchrow("SELECT status, bot_misses FROM parley.conversations WHERE id = $1", conv)


async def test_misses_in_a_row_hand_off(ws, owner_conn):
    bot = await ws.chatbot(config={"handoff": {"miss_threshold": 3}})
    conv = await ws.start(bot["id"])
    assert tuple(await _bot_says(ws, conv, False)) == ("bot", 1)
    assert tuple(await _bot_says(ws, conv, None)) == ("bot", 1)  # a reply without grounding (placeholder) is neither
    assert tuple(await _bot_says(ws, conv, True)) == ("bot", 0)  # a grounded answer starts again
    assert tuple(await _bot_says(ws, conv, False)) == ("bot", 1)
    assert tuple(await _bot_says(ws, conv, False)) == ("bot", 2)
    assert tuple(await _bot_says(ws, conv, False)) == ("waiting_human", 0)
    kinds = [tuple(r) for r in await owner_conn.fetch(
        "SELECT kind, data->>'reason' FROM parley.events WHERE conversation_id = $1 ORDER BY id DESC LIMIT 2", conv)]
    assert kinds == [("human_requested", "bot_misses"), ("message_added", None)]


async def test_a_person_taking_part_starts_the_count_again(ws):
    bot = await ws.chatbot(config={"handoff": {"miss_threshold": 2}})
    conv = await ws.start(bot["id"])
    assert tuple(await _bot_says(ws, conv, False)) == ("bot", 1)
    status, _ = await ws.call("POST", f"/api/conversations/{conv}/claim")
    assert status == 200
    status, _ = await ws.call("POST", f"/api/conversations/{conv}/release")
    assert status == 200
    assert tuple(await _bot_says(ws, conv, False)) == ("bot", 1)  # not 2: no handoff
    async with ws.visitor_tx(conv) as conn:
        await conn.fetchrow("SELECT * FROM parley.transition_conversation($1, 'human')", conv)
    status, _ = await ws.call("POST", f"/api/conversations/{conv}/release")
    assert status == 200
    assert tuple(await _bot_says(ws, conv, False)) == ("bot", 1)


async def test_two_misses_hand_off_by_default(ws):
    bot = await ws.chatbot()  # no handoff.miss_threshold: 2
    conv = await ws.start(bot["id"])
    assert tuple(await _bot_says(ws, conv, False)) == ("bot", 1)
    assert tuple(await _bot_says(ws, conv, False)) == ("waiting_human", 0)


async def test_threshold_zero_never_hands_off(ws):
    never = await ws.chatbot(config={"handoff": {"miss_threshold": 0}})
    conv = await ws.start(never["id"])
    for n in range(1, 4):
        assert tuple(await _bot_says(ws, conv, False)) == ("bot", n)
