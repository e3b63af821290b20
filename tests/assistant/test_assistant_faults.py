"""A misbehaving model seen from the visitor's socket: one that never finishes its answer, and one
that streams past any max_tokens. The turn ends with the assistant_unavailable notice at the
answer's time limit (the conversation's next question is answered), and an answer longer than a
bot message may be is cut there, stored as streamed. Before, the first held the conversation's
bot turns for as long as the model kept streaming, and the second was refused by the messages'
length check after streaming it all (an error logged, the answer lost, a notice instead)."""
from pyapp.providers.llm import LLM
from pyapp.types import BOT_MESSAGE_BODY_MAX
from support.assistant import bot_messages, open_visitor, use_llm
from support.fakes.llm_servers import Reply


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
