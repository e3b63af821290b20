"""A misbehaving model seen from the visitor's socket: one that never finishes its answer, and one
that streams past any max_tokens. The turn ends with the assistant_unavailable notice at the
answer's time limit (the conversation's next question is answered), and an answer longer than a
bot message may be is cut there, stored as streamed. Before, the first held the conversation's
bot turns for as long as the model kept streaming, and the second was refused by the messages'
length check after streaming it all (an error logged, the answer lost, a notice instead). And an
answer streamed while PostgreSQL restarts is stored once it is back (it was dropped: the visitor had
seen it streamed, nobody could see it after)."""
import uuid

import asyncpg
from pyapp.context import SETTINGS
from pyapp.providers.llm import LLM
from pyapp.types import BOT_MESSAGE_BODY_MAX
from support.assistant import bot_messages, open_visitor, use_llm
from support.database import postgres_down
from support.fakes.llm_servers import Reply
from support.waits import until


async def test_a_never_ending_answer_ends_with_a_notice_and_frees_the_conversation(
        server, bot, owner_conn, clients, fake_openai, monkeypatch):
    monkeypatch.setattr(LLM, "answer_timeout", 1.0)
    fake_openai.script.extend([Reply(chunks=["tick "] * 100_000, delay=0.02),  # 2,000 s of deltas
                               Reply.text("Refunds are possible within 30 days of purchase [1].")])
    await use_llm(server, bot, "openai", fake_openai.base_url)
    session, v = await open_visitor(server, bot, clients)
    await v.send({"type": "message", "client_id": "c1", "body": "Can I get a refund?"})
    notice = await v.expect_message(author="system")
    assert "unavailable" in notice["body"]
    await v.send({"type": "message", "client_id": "c2", "body": "Can I get a refund within a month?"})
    answer = await v.expect_message("Refunds are possible within 30 days of purchase [1].", author="bot")
    stored = await bot_messages(owner_conn, session["conversation_id"])
    assert [(m["author"], m["meta"].get("notice")) for m in stored] == [("system", "assistant_unavailable"),
                                                                       ("bot", None)]
    assert stored[1]["id"] == answer["id"]


async def test_a_stalled_answer_ends_with_the_notice_at_the_idle_limit(
        server, bot, owner_conn, clients, fake_openai):
    """The model stops sending text mid-answer (its socket open): the visitor gets the notice, offering
    a person, once PARLEY_LLM_IDLE_TIMEOUT has passed (1 s here), not after the 60 s read timeout; the
    half answer is not stored (it would read as the bot's whole answer in the transcript)."""
    server.app[SETTINGS].extra["llm_idle_timeout"] = 1.0
    fake_openai.script.append(Reply(chunks=["Refunds are", " possible", " within"], hang_after=1))
    await use_llm(server, bot, "openai", fake_openai.base_url)
    session, v = await open_visitor(server, bot, clients)
    await v.send({"type": "message", "client_id": "c1", "body": "Can I get a refund?"})
    assert (await v.expect(type="stream"))["delta"] == "Refunds are"
    notice = await v.expect_message(author="system", timeout=15)
    assert "unavailable" in notice["body"] and notice.get("offer_human") is True
    stored = await bot_messages(owner_conn, session["conversation_id"])
    assert [(m["author"], m["meta"].get("notice")) for m in stored] == [("system", "assistant_unavailable")]


async def test_an_answer_past_the_bot_message_limit_is_cut_there_and_stored(
        server, bot, owner_conn, clients, fake_openai):
    fake_openai.script.append(Reply(chunks=["refund " * 143] * 40))  # 40,040 characters, 1,001 a delta
    await use_llm(server, bot, "openai", fake_openai.base_url)
    session, v = await open_visitor(server, bot, clients)
    await v.send({"type": "message", "client_id": "c1", "body": "Can I get a refund?"})
    final = await v.expect_message(author="bot")
    streamed = "".join(f["delta"] for f in v.frames if f.get("type") == "stream")
    assert len(streamed) == BOT_MESSAGE_BODY_MAX
    assert final["body"] == streamed.strip()
    stored = await bot_messages(owner_conn, session["conversation_id"])
    assert [(m["author"], m["body"]) for m in stored] == [("bot", streamed.strip())]


async def test_an_answer_streamed_during_a_database_restart_is_stored_once(
        server, bot, owner_conn, clients, fake_openai, settings, pg_server):
    text = "We are open from nine to six on weekdays, and on Saturday mornings too."
    fake_openai.script.append(Reply.text(text, delay=0.1))
    await use_llm(server, bot, "openai", fake_openai.base_url)
    session, v = await open_visitor(server, bot, clients)
    await owner_conn.close()  # the fixture's connection would not survive the stop
    await v.send({"type": "message", "client_id": "c1", "body": "When are you open?"})
    await v.expect(type="stream")
    async with postgres_down(pg_server):
        # The rest streams from the model meanwhile; the answer is to be stored now, with no database.
        await v.expect(lambda f: f.get("type") == "typing" and f.get("on") is False)
    check = await asyncpg.connect(settings.admin_url)
    try:
        async def stored():
            return await check.fetch("SELECT body, client_id FROM parley.messages WHERE conversation_id = $1"
                                     " AND author IN ('bot', 'system')", uuid.UUID(session["conversation_id"]))

        await until(stored, timeout=30, what="the answer stored after the restart")
        rows = await stored()
        assert [r["body"] for r in rows] == [text] and rows[0]["client_id"].startswith("bot:")
    finally:
        await check.close()
