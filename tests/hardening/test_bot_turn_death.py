"""A server killed with SIGKILL while the model holds its answer: the question is answered by another
server, once, and the visitor, reconnected there, gets it (sql/53_bot_turns.sql). Before, the turn
lived in the killed server's memory: nobody answered (bench/faults.py: 2 of 452 bot questions)."""
from __future__ import annotations

import aiohttp
from support.assistant import bot_messages
from support.fakes.llm_servers import Reply
from support.realtime import create_chatbot, visitor, widget_session
from support.server import TEST_SECRET, ServeProcess, free_port

ANSWER = "Refunds take five business days."


async def test_a_question_whose_server_was_killed_is_answered_once_by_another(
        settings, rows, owner_conn, fake_openai):
    owner = await rows.tenant()
    bot = await create_chatbot(owner_conn, owner.tenant_id, config={"language": "en"})
    # A short lease, so the dead server's turn is free in seconds rather than 20 (the second server
    # starts once the first is dead, so no pick-up can come early on a loaded machine).
    await owner_conn.execute("INSERT INTO parley.server_settings (name, value) VALUES ('bot_turn_lease', '2 seconds')")
    fake_openai.script.append(Reply(chunks=["Refunds", " take", " ages"], hang_after=1))  # held mid-answer
    fake_openai.default_reply = Reply.text(ANSWER)
    env = {"PARLEY_FETCH_ALLOW_HOSTS": "127.0.0.1", "PARLEY_BOT_TURN_PICK_EVERY": "0.5"}
    first, second = ServeProcess(settings, free_port(), env), ServeProcess(settings, free_port(), env)
    clients = []
    async with aiohttp.ClientSession() as http:
        try:
            await first.start(http)
            status, out = await first.call("PUT", "/api/assistant/llm", token=owner.access_token(TEST_SECRET), json={
                "provider": "openai", "base_url": fake_openai.base_url, "model": "fake-model", "api_key": "test-key"})
            assert status == 200, out
            session = await widget_session(first, bot["key"])
            v = await visitor(first, session)
            clients.append(v)
            await v.send({"type": "message", "client_id": "c1", "body": "Can I get a refund?"})
            question = await v.expect_message(author="visitor")
            assert (await v.expect(type="stream", timeout=30))["delta"] == "Refunds"
            await first.kill9()  # the model still holds the rest of the answer
            await second.start(http)  # (only now: nothing could take the turn while the first one lived)
            again = await visitor(second, session, last_seen_id=question["id"])  # the widget reconnects
            clients.append(again)
            answer = await again.expect_message(ANSWER, author="bot", timeout=30)
            said = await bot_messages(owner_conn, session["conversation_id"])
            assert [(m["id"], m["body"]) for m in said] == [(answer["id"], ANSWER)]
            stored = await owner_conn.fetchval("SELECT client_id FROM parley.messages WHERE id = $1", answer["id"])
            assert stored == f"bot:{question['id']}"
            assert await owner_conn.fetchval("SELECT count(*) FROM parley.bot_turns") == 0
            assert len(fake_openai.requests) == 2  # the killed server's run, and the one that answered
        finally:
            for c in clients:
                await c.close()
            await first.kill9()
            await second.kill9()
