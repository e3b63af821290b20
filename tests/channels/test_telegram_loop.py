"""The full loop through Telegram, against the fake Bot API and the real server, database and
WebSockets: a visitor asks for a person → a topic appears with Claim/Release/Close → an agent
linked by a one-time code presses Claim → replies in the topic → the visitor sees the reply on
/ws/visitor → the agent types /close@bot. And the webhook's guards: secret token, update_id
dedupe, unlinked senders, another tenant's channel."""
from __future__ import annotations

import asyncio
import uuid

import pytest
from jobs.outbox import OutboxDrainer
from pyapp.channels.adapter import ChannelSender
from pyapp.channels.envelope import Keyring
from pyapp.channels.telegram import TelegramAdapter, TelegramApi
from support.fakes.telegram import CHAT, OTHER_TOKEN, TOKEN, message_update, press_update
from support.realtime import clients, create_chatbot, placeholder_bot, tenant, visitor, widget_session  # noqa: F401
from support.server import TEST_SECRET
from support.waits import until

AGENT_TG = 5550001


@pytest.fixture
def tg(tg, public_url):
    """The fake Bot API, with a server that has a public URL (connecting a bot sets its webhook)."""
    return tg


async def _connect(server, token, bot_token=TOKEN):
    status, body = await server.call("POST", "/api/channels/telegram", token=token,
                                     json={"name": "Support", "bot_token": bot_token, "chat_id": CHAT})
    assert status == 201, body
    return body


def _hook(tg, channel, bot_token=TOKEN):
    hook = tg.webhooks[bot_token]
    assert hook["url"] == f"https://parley.example/api/channels/telegram/{channel['id']}/webhook"
    return hook["secret_token"]


async def _update(server, channel, secret, update):
    return await server.call("POST", f"/api/channels/telegram/{channel['id']}/webhook", json=update,
                             headers={"X-Telegram-Bot-Api-Secret-Token": secret} if secret is not None else {})


def _message(update_id, text, thread=None, user=AGENT_TG):
    return message_update(update_id, text, CHAT, thread, user)


def _press(update_id, data, thread, user=AGENT_TG):
    return press_update(update_id, data, CHAT, thread, user)


async def test_full_loop_claim_reply_close_from_telegram(server, tenant, clients, tg, owner_conn, jobs_pool):  # noqa: F811
    token = tenant["access_token"]
    channel = await _connect(server, token)
    secret = _hook(tg, channel)
    await owner_conn.execute("UPDATE parley.outbox_rate_buckets SET capacity = 100, tokens = 100, per_second = 100"
                             " WHERE tenant_id = $1", uuid.UUID(tenant["tenant_id"]))
    # The agent links their Telegram account with a one-time code from the API.
    status, code = await server.call("POST", "/api/channels/telegram/link-code", token=token)
    assert status == 201, code
    status, linked = await _update(server, channel, secret, _message(1, f"/link {code['code']}"))
    assert status == 200 and linked["linked"] is True, linked
    status, again = await _update(server, channel, secret, _message(2, f"/link {code['code']}", user=666))
    assert again["linked"] is False  # one use only

    stop = asyncio.Event()
    drainer = OutboxDrainer(jobs_pool, "tg-loop", poll_s=0.05, keyring=Keyring.from_settings(TEST_SECRET),
                            senders={"telegram": ChannelSender(TelegramAdapter(TelegramApi(base=tg.url)))})
    running = asyncio.create_task(drainer.run(stop))
    try:
        sess = await widget_session(server, tenant["key"])
        vis = await visitor(server, sess)
        clients.append(vis)
        await vis.send({"type": "message", "client_id": "c-1", "body": "My parcel is late"})
        await vis.expect_message("My parcel is late", author="visitor")
        # The bot answers first (asked for a person before that, its answer would follow the handoff).
        await vis.expect_message(author="bot")
        await vis.send({"type": "human"})
        assert (await vis.expect(type="status"))["status"] == "waiting_human"
        (ask,) = await tg.wait_for(lambda: [m for m in tg.messages if m.get("reply_markup")])
        thread = ask["message_thread_id"]
        # The drainer remembers the topic once the batch is sent: wait for that before acting in it.
        await until(lambda: owner_conn.fetchval("SELECT count(*) FROM parley.channel_threads WHERE thread_ref = $1",
                                                str(thread)))
        texts = [m["text"] for m in tg.sent(CHAT, thread)]
        # The visitor's message and the bot's answer queued together go as one post.
        assert texts[0].startswith("Visitor: My parcel is late") and texts[-1] == "The visitor asked for a person."

        # Someone not linked presses Claim: told to link, nothing changes.
        status, out = await _update(server, channel, secret, _press(10, "claim", thread, user=777))
        assert status == 200 and "Link your Telegram account" in out["result"]
        status, out = await _update(server, channel, secret, _press(11, "claim", thread))
        assert status == 200 and out["result"] == "Claimed."
        assert (await vis.expect(type="status"))["status"] == "human"
        assert [a["callback_query_id"] for a in tg.answered_callbacks] == ["cb-10", "cb-11"]

        status, out = await _update(server, channel, secret, _message(12, "Hi, Ana here. Let me check.", thread))
        assert status == 200 and out["result"] == "Sent."
        got = await vis.expect_message("Hi, Ana here. Let me check.", author="agent")
        # Telegram sends an update again when unsure: the same update_id does nothing twice.
        status, dup = await _update(server, channel, secret, _message(12, "Hi, Ana here. Let me check.", thread))
        assert status == 200 and dup["duplicate"] is True
        status, out = await _update(server, channel, secret, _message(13, "/note VIP customer", thread))
        assert out["result"] == "Noted."
        status, out = await _update(server, channel, secret, _message(20, "/codename Falcon", thread))
        assert out["result"] == "Codename set."
        # The topic follows: renamed through the outbox, before the "Codename: Falcon." post.
        await tg.wait_for(lambda: [m for m in tg.sent(CHAT, thread) if m["text"] == "Codename: Falcon."])
        assert [t.name for t in tg.topics.values()] == ["Falcon"]
        status, out = await _update(server, channel, secret, _message(14, "/close@parley_support_bot", thread))
        assert out["result"] == "Closed."
        assert (await vis.expect(type="status"))["status"] == "closed"
        await tg.wait_for(lambda: all(t.closed for t in tg.topics.values()))
        # A command for another bot in the group is not ours.
        status, out = await _update(server, channel, secret, _message(15, "/reopen@other_bot", thread))
        assert out.get("ignored")
    finally:
        stop.set()
        await running
        await drainer.close()
    rows = await owner_conn.fetch("SELECT author, body, author_id FROM parley.messages WHERE conversation_id = $1"
                                  " ORDER BY id", uuid.UUID(sess["conversation_id"]))
    agent_rows = [r for r in rows if r["author"] in ("agent", "note")]
    assert [(r["author"], r["body"]) for r in agent_rows] == [("agent", "Hi, Ana here. Let me check."),
                                                              ("note", "VIP customer")]
    assert all(str(r["author_id"]) == tenant["user_id"] for r in agent_rows)
    assert got["body"] == "Hi, Ana here. Let me check."
    # The note stays private: the visitor never got it.
    assert not [f for f in vis.frames if "VIP customer" in str(f)]


async def test_webhook_refuses_a_wrong_secret_and_another_tenants_channel(server, tenant, signup, owner_conn, tg):  # noqa: F811
    channel = await _connect(server, tenant["access_token"])
    secret = _hook(tg, channel)
    other = await signup(server)
    await create_chatbot(owner_conn, other["tenant_id"])
    other_channel = await _connect(server, other["access_token"], bot_token=OTHER_TOKEN)
    other_secret = _hook(tg, other_channel, OTHER_TOKEN)
    for bad in (None, "", secret[:-1] + ("A" if secret[-1] != "A" else "B"), other_secret):
        status, body = await _update(server, channel, bad, _message(1, "hello"))
        assert status == 401 and body["error"]["code"] == "invalid_secret_token", (bad, body)
    status, body = await _update(server, {"id": "00000000-0000-0000-0000-000000000000"}, secret, _message(1, "x"))
    assert status == 404
    status, body = await _update(server, {"id": "not-a-uuid"}, secret, _message(1, "x"))
    assert status == 404
    # Another tenant's member cannot link to this tenant with their own code.
    status, code = await server.call("POST", "/api/channels/telegram/link-code", token=other["access_token"])
    status, out = await _update(server, channel, secret, _message(2, f"/link {code['code']}"))
    assert status == 200 and out["linked"] is False
    status, out = await _update(server, channel, secret, {"update_id": 3, "edited_message": {}})
    assert status == 200 and out["ignored"]
