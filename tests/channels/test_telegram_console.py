"""Console page /console/telegram over plain HTTP (no browser), against the fake Bot API: an admin
connects a bot and a group (token checked, never shown back), sees its health, switches how updates
arrive and disconnects it; every member gets a link code, and linking through a polled `/link CODE`
shows as linked; an agent sees the channels read-only and cannot connect, switch or disconnect."""
import re
import uuid

from jobs.telegram_poll import TelegramPoller
from pyapp.channels.envelope import Keyring
from pyapp.channels.telegram import TelegramAdapter, TelegramApi
from support.accounts import sign_up
from support.console import ConsoleClient
from support.fakes.telegram import CHAT, TOKEN, message_update
from support.outbox import TEST_SECRET


async def _client(ws, person):
    client = ConsoleClient(ws.server.base_url)
    await client.sign_in(person["email"], person["password"])
    return client


async def test_admin_connects_sees_health_switches_and_disconnects(ws, tg, owner_conn):
    client = await _client(ws, ws.owner)
    try:
        status, html, _ = await client.get("/console/telegram")
        assert status == 200 and "Connect a bot and a group" in html and "@BotFather" in html
        assert "long polling" in html  # no public URL on this server
        bad = "111111:" + "z" * 35
        status, html, _ = await client.post("/console/telegram", {"name": "Support", "bot_token": bad,
                                                                  "chat_id": str(CHAT)})
        assert status == 422 and 'id="telegram-error"' in html and "z" * 35 not in html
        status, html, _ = await client.post("/console/telegram", {"name": "Support", "bot_token": TOKEN,
                                                                  "chat_id": "42"})
        assert status == 422 and "-100" in html and TOKEN not in html
        status, html, _ = await client.post("/console/telegram", {"name": "Support", "bot_token": TOKEN,
                                                                  "chat_id": str(CHAT), "chatbot_id": ""})
        assert status == 200 and "Telegram channel connected." in html, html[:2000]
        assert "@parley_support_bot" in html and f"…{TOKEN[-4:]}" in html and TOKEN.split(":")[1] not in html
        assert "polling" in html and "not polled yet" in html
        _, listed = await ws.call("GET", "/api/channels/telegram")
        (channel,) = listed["channels"]
        # Paused by the outbox (the bot was removed): the reason is on the page.
        await owner_conn.execute("UPDATE parley.outbox_destinations SET status = 'paused', paused_reason ="
                                 " 'The bot cannot post in the group' WHERE id = $1", uuid.UUID(channel["id"]))
        status, html, _ = await client.get("/console/telegram")
        assert "Paused: The bot cannot post in the group" in html and "Resume" in html
        status, html, _ = await client.post(f"/console/telegram/{channel['id']}/inbound", {"mode": "webhook"})
        assert status == 409 and "public URL" in html
        status, html, _ = await client.post(f"/console/telegram/{uuid.uuid4()}/delete")
        assert status == 404
        status, html, _ = await client.post(f"/console/telegram/{channel['id']}/delete")
        assert status == 200 and "Telegram channel disconnected." in html and "@parley_support_bot" not in html
    finally:
        await client.close()


async def test_members_link_their_account_and_agents_only_read(ws, tg, owner_conn, server):
    status, channel = await ws.call("POST", "/api/channels/telegram",
                                    json={"name": "Support", "bot_token": TOKEN, "chat_id": CHAT})
    assert status == 201
    agent = await sign_up(server, join=ws.owner, role="agent")
    client = await _client(ws, agent)
    try:
        status, html, _ = await client.get("/console/telegram")
        assert status == 200 and "@parley_support_bot" in html and "Not linked yet." in html
        assert "Connect a bot and a group" not in html and "Disconnect" not in html and TOKEN[-4:] not in html
        assert 'href="/console/telegram"' in html  # in the agent's navigation
        for path, form in (("/console/telegram", {"bot_token": TOKEN, "chat_id": str(CHAT)}),
                           (f"/console/telegram/{channel['id']}/inbound", {"mode": "polling"}),
                           (f"/console/telegram/{channel['id']}/delete", {})):
            status, html, _ = await client.post(path, form)
            assert status == 403, (path, status)
        status, html, _ = await client.post("/console/telegram/link-code")
        assert status == 200
        code = re.search(r'id="link-code">/link ([0-9A-F]+)<', html).group(1)
        # The agent sends it in the group; parley jobs polls it (no public URL here).
        await tg.push_update(TOKEN, message_update(1, f"/link {code}", CHAT, user=4242))
        poller = TelegramPoller(await ws.tenant.pool("app"), "p1", Keyring.from_settings(TEST_SECRET),
                                adapter=TelegramAdapter(TelegramApi(base=tg.url)))
        try:
            assert await poller.poll_once() == 1
        finally:
            await poller.close()
        status, html, _ = await client.get("/console/telegram")
        assert "Your Telegram account is linked" in html
        assert await owner_conn.fetchval("SELECT user_id FROM parley.channel_member_links WHERE external_user_id"
                                         " = '4242'") == uuid.UUID(agent["user_id"])
    finally:
        await client.close()
