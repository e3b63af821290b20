"""Telegram renders and dispatches the actions registry (sql/57_actions.sql), against the fake Bot
API and the real server: connecting a bot sets its command menu from the catalog (setMyCommands);
each post after a change of state carries only the buttons valid then (Claim on an open one,
Release/Close when claimed, Reopen when closed); buttons and commands go through
parley.perform_action, so its rules answer: an action not on Telegram, one the state refuses,
bad input."""
from __future__ import annotations

import asyncio
import uuid

from support.fakes.telegram import CHAT, TOKEN, message_update, press_update
from support.outbox import telegram_drainer
from support.realtime import create_chatbot, tenant, widget_session  # noqa: F401
from support.waits import until

AGENT_TG = 5550001


def _buttons(message) -> list[tuple[str, str]]:
    markup = message.get("reply_markup") or {}
    return [(b["text"], b["callback_data"]) for row in markup.get("inline_keyboard", []) for b in row]


async def test_keyboard_and_commands_come_from_the_catalog(server, tenant, tg, public_url, owner_conn, jobs_pool):  # noqa: F811
    token = tenant["access_token"]
    status, channel = await server.call("POST", "/api/channels/telegram", token=token,
                                        json={"name": "Support", "bot_token": TOKEN, "chat_id": CHAT})
    assert status == 201, channel
    assert [c["command"] for c in tg.commands[TOKEN]] == ["claim", "release", "close", "reopen", "note", "codename",
                                                         "link"]
    assert tg.commands[TOKEN][4]["description"] == "Add private note (/note BODY)"
    secret = tg.webhooks[TOKEN]["secret_token"]
    tenant_id = uuid.UUID(tenant["tenant_id"])
    await owner_conn.execute("UPDATE parley.outbox_rate_buckets SET capacity = 100, tokens = 100, per_second = 100"
                             " WHERE tenant_id = $1", tenant_id)

    async def update(body):
        status, out = await server.call("POST", f"/api/channels/telegram/{channel['id']}/webhook", json=body,
                                        headers={"X-Telegram-Bot-Api-Secret-Token": secret})
        assert status == 200, out
        return out

    status, code = await server.call("POST", "/api/channels/telegram/link-code", token=token)
    assert (await update(message_update(1, f"/link {code['code']}", CHAT, None, AGENT_TG)))["linked"] is True

    stop = asyncio.Event()
    drainer = telegram_drainer(jobs_pool, tg, "tg-actions", poll_s=0.05)
    running = asyncio.create_task(drainer.run(stop))
    try:
        conv = await widget_session(server, tenant["key"])
        # the config the widget renders its visitor buttons from: the registry's, in its language
        assert [(a["key"], a["label"]) for a in conv["config"]["actions"]] == [
            ("human", "Talk to a human"), ("rate", "How was this conversation?"), ("new", "New conversation")]
        conv_id = conv["conversation_id"]
        status, _ = await server.call("POST", f"/api/conversations/{conv_id}/actions/close", token=token)
        await until(lambda: owner_conn.fetchval("SELECT count(*) FROM parley.channel_threads"))
        thread = int(await owner_conn.fetchval("SELECT thread_ref FROM parley.channel_threads"))

        async def post_after(n: int, text: str):
            """The post of this text (after n posts in the topic), once the drainer sent it. Its buttons
            are the ones valid when the drainer built it."""
            (found,) = await tg.wait_for(lambda: [m for m in tg.sent(CHAT, thread)[n:] if m["text"] == text][:1])
            return found

        closed = await post_after(0, "Closed.")
        assert _buttons(closed) == [("Reopen", "reopen")]
        status, _ = await server.call("POST", f"/api/conversations/{conv_id}/actions/reopen", token=token)
        reopened = await post_after(0, "Reopened.")  # reopened by the owner: with an agent
        assert _buttons(reopened) == [("Release to bot", "release"), ("Close", "close")]

        out = await update(press_update(10, "release", CHAT, thread, AGENT_TG))
        assert out["result"] == "Released."
        released = await post_after(2, "Released: waiting for a person.")
        assert _buttons(released) == [("Claim", "claim"), ("Close", "close")]
        out = await update(press_update(11, "release", CHAT, thread, AGENT_TG))  # a stale button
        assert out["result"] == "Release to bot is not possible while the conversation is bot."
        out = await update(press_update(12, "claim", CHAT, thread, AGENT_TG))
        assert out["result"] == "Claimed."
        claimed = await post_after(3, "Claimed.")
        assert _buttons(claimed) == [("Release to bot", "release"), ("Close", "close")]
        assert [a["text"] for a in tg.answered_callbacks] == [
            "Released.", "Release to bot is not possible while the conversation is bot.", "Claimed."]

        # Commands: not every action is on Telegram; input rules are the SQL functions'.
        for n, text, result in (
            (20, "/assign someone", "There is no action 'assign' here."),
            (21, "/human", "There is no action 'human' here."),
            (22, "/explode", "There is no action 'explode' here."),
            (23, "/note", "The message is empty."),
            (24, "/codename " + "x" * 65, "A codename is at most 64 characters."),
            (25, "/reopen", "Reopen is not possible while the conversation is human."),
            (26, "/note Called back, waiting for the invoice", "Noted."),
            (27, "/close@parley_support_bot", "Closed."),
        ):
            out = await update(message_update(n, text, CHAT, thread, AGENT_TG))
            assert out["result"] == result, (text, out)
        closed = await post_after(4, "Closed.")
        assert _buttons(closed) == [("Reopen", "reopen")]
        out = await update(press_update(28, "reopen", CHAT, thread, AGENT_TG))
        assert out["result"] == "Reopened."
        reopened = await post_after(5, "Reopened.")  # reopened by the linked agent: theirs
        assert _buttons(reopened) == [("Release to bot", "release"), ("Close", "close")]
        await tg.wait_for(lambda: [t for t in tg.topics.values() if not t.closed])
    finally:
        stop.set()
        await running
        await drainer.close()
    notes = await owner_conn.fetch("SELECT body, client_id FROM parley.messages WHERE conversation_id = $1"
                                   " AND author = 'note'", uuid.UUID(conv_id))
    assert [(r["body"], r["client_id"]) for r in notes] == [("Called back, waiting for the invoice", "telegram:26")]
