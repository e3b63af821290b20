"""Telegram long polling (jobs/telegram_poll.py) against the fake Bot API on 127.0.0.1: a channel
connected by a server without a public URL polls; deleteWebhook before the first getUpdates; the
updates go through the webhook's handler (link, Claim, reply); the offset is kept in SQL and an
update fetched again after a lost offset acts once; one poller per channel; a webhook set again
(409) is shown and cleared; the inbound mode is switched by the API."""
import asyncio
import uuid

from jobs.telegram_poll import TelegramPoller
from pyapp.channels.envelope import Keyring
from pyapp.channels.telegram import TelegramAdapter, TelegramApi
from support.fakes.telegram import CHAT, TOKEN, message_update, press_update
from support.outbox import TEST_SECRET, make_workspace, start_conversation

THREAD = 777


def _poller(pool, fake, worker="p1", **kw) -> TelegramPoller:
    adapter = TelegramAdapter(TelegramApi(base=fake.url, timeout=30))
    return TelegramPoller(pool, worker, Keyring.from_settings(TEST_SECRET), adapter=adapter, **kw)


async def _polling_channel(ws, tg, owner_conn):
    """A channel connected without a public URL, whose bot had a webhook from before, and a
    conversation with its topic, waiting for a person."""
    tg.webhooks[TOKEN] = {"url": "https://old.example/hook", "secret_token": "x"}
    status, channel = await ws.call("POST", "/api/channels/telegram",
                                    json={"name": "Support", "bot_token": TOKEN, "chat_id": CHAT})
    assert status == 201, channel
    assert channel["inbound"] == "polling"
    conv = await start_conversation(ws.tenant)
    async with await ws.tenant.tx("service") as conn:
        await conn.execute("SELECT parley.transition_conversation($1, 'human')", conv)
    await owner_conn.execute("INSERT INTO parley.channel_threads (tenant_id, destination_id, conversation_id,"
                             " thread_ref) VALUES ($1, $2, $3, $4)", ws.tenant.id, uuid.UUID(channel["id"]), conv,
                             str(THREAD))
    return channel, conv


async def _offset(owner_conn, channel):
    return await owner_conn.fetchval("SELECT next_offset FROM parley.channel_polls WHERE destination_id = $1",
                                     uuid.UUID(channel["id"]))


async def test_polling_links_claims_and_replies_through_the_webhook_handler(ws, tg, owner_conn):
    channel, conv = await _polling_channel(ws, tg, owner_conn)
    status, code = await ws.call("POST", "/api/channels/telegram/link-code")
    assert status == 201
    await tg.push_update(TOKEN, message_update(41, f"/link {code['code']}", CHAT))
    await tg.push_update(TOKEN, press_update(42, "claim", CHAT, THREAD))
    await tg.push_update(TOKEN, message_update(43, "Hello from Telegram", CHAT, THREAD))
    poller = _poller(await ws.tenant.pool("app"), tg)
    try:
        assert await poller.poll_once() == 3
    finally:
        await poller.close()
    methods = [c.method for c in tg.calls]
    assert methods.index("deleteWebhook") < methods.index("getUpdates") and TOKEN not in tg.webhooks
    assert tg.answered_callbacks[0]["callback_query_id"] == "cb-42"
    assert await owner_conn.fetchval("SELECT status FROM parley.conversations WHERE id = $1", conv) == "human"
    rows = await owner_conn.fetch("SELECT author, body, author_id FROM parley.messages WHERE conversation_id = $1"
                                  " AND author = 'agent'", conv)
    assert [(r["author"], r["body"], str(r["author_id"])) for r in rows] == [
        ("agent", "Hello from Telegram", ws.owner["user_id"])]
    assert await _offset(owner_conn, channel) == 44
    # The offset was lost (say the process died before recording it): Telegram sends the update
    # again, and it acts once.
    await owner_conn.execute("UPDATE parley.channel_polls SET next_offset = 0")
    tg.updates[TOKEN] = [message_update(43, "Hello from Telegram", CHAT, THREAD)]
    poller = _poller(await ws.tenant.pool("app"), tg)
    try:
        assert await poller.poll_once() == 1
    finally:
        await poller.close()
    assert await owner_conn.fetchval("SELECT count(*) FROM parley.messages WHERE conversation_id = $1"
                                     " AND author = 'agent'", conv) == 1
    assert await _offset(owner_conn, channel) == 44


async def test_the_running_poller_waits_on_getupdates_and_one_poller_per_channel(ws, tg, owner_conn):
    channel, _conv = await _polling_channel(ws, tg, owner_conn)
    _status, code = await ws.call("POST", "/api/channels/telegram/link-code")
    await tg.push_update(TOKEN, message_update(7, f"/link {code['code']}", CHAT))
    pool = await ws.tenant.pool("app")
    stop = asyncio.Event()
    first = _poller(pool, tg, "p1", poll_timeout=5, scan_s=0.05)
    second = _poller(pool, tg, "p2", poll_timeout=5, scan_s=0.05)
    running = asyncio.create_task(first.run(stop))
    try:
        await tg.wait_for(lambda: first.handled == 1)
        # A second process finds the channel leased: it polls nothing.
        calls = len(tg.calls)
        assert await second.poll_once() == 0 and len(tg.calls) == calls
        # The first one is waiting in getUpdates: a press arrives and is answered right away.
        await tg.push_update(TOKEN, press_update(8, "claim", CHAT, THREAD))
        await tg.wait_for(lambda: tg.answered_callbacks)
        # Recorded before it asks again: the next getUpdates confirms both.
        await tg.wait_for(lambda: [p for p in tg.polls if p["offset"] == 9])
    finally:
        stop.set()
        await running
        await first.close()
        await second.close()
    assert tg.answered_callbacks[0]["text"] == "Claimed."
    assert await _offset(owner_conn, channel) == 9


async def test_a_webhook_set_again_is_shown_then_cleared_and_the_mode_is_switched(ws, tg, owner_conn):
    channel, _conv = await _polling_channel(ws, tg, owner_conn)
    pool = await ws.tenant.pool("app")
    poller = _poller(pool, tg, error_pause_s=0)
    try:
        await poller.poll_once()
        tg.webhooks[TOKEN] = {"url": "https://elsewhere.example/hook", "secret_token": "y"}
        await poller.poll_once()
        status, listed = await ws.call("GET", "/api/channels/telegram")
        (shown,) = listed["channels"]
        assert shown["inbound"] == "polling" and "409" in shown["poll_error"], shown
        assert TOKEN not in str(listed)
        await tg.push_update(TOKEN, message_update(5, "hi", CHAT))
        assert await poller.poll_once() == 1  # deleted the webhook again, then polled
        status, listed = await ws.call("GET", "/api/channels/telegram")
        assert listed["channels"][0]["poll_error"] is None
    finally:
        await poller.close()
    # Without a public URL Telegram cannot call this server: webhook mode is refused.
    status, body = await ws.call("PUT", f"/api/channels/telegram/{channel['id']}/inbound", json={"mode": "webhook"})
    assert status == 409 and body["error"]["code"] == "no_public_url"
    status, body = await ws.call("PUT", f"/api/channels/telegram/{channel['id']}/inbound", json={"mode": "carrier"})
    assert status == 422
    status, _other = await ws.call("PUT", f"/api/channels/telegram/{uuid.uuid4()}/inbound", json={"mode": "polling"})
    assert status == 404


async def test_another_tenants_poller_state_is_out_of_reach(ws, tg, owner_conn, server, signup, settings):
    channel, _conv = await _polling_channel(ws, tg, owner_conn)
    other = await make_workspace(server, signup, settings, owner_conn)
    try:
        async with await other.tenant.tx("service") as conn:
            assert await conn.fetch("SELECT * FROM parley.channel_polls") == []
            assert await conn.fetchval("SELECT parley.record_channel_poll($1, 'p1', 99, true, NULL, 60)",
                                       uuid.UUID(channel["id"])) is None
        status, _body = await other.call("PUT", f"/api/channels/telegram/{channel['id']}/inbound",
                                         json={"mode": "webhook"})
        assert status in (404, 409)
        status, _body = await other.call("PUT", f"/api/channels/telegram/{channel['id']}/inbound",
                                         json={"mode": "polling"})
        assert status == 404
    finally:
        await other.close()
    assert await _offset(owner_conn, channel) == 0
