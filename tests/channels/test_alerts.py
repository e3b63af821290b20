"""Alert channels per chatbot through the outbox: e-mail (a real SMTP exchange with aiosmtpd) and
Slack (an incoming-webhook stand-in on 127.0.0.1) on handoff requests, new leads and negative
feedback; test-send; the owners' e-mail when a webhook endpoint is paused; the Slack URL sealed."""
import uuid

import pytest
from jobs.outbox import OutboxDrainer
from pyapp.channels.envelope import Keyring
from pyapp.channels.senders import EmailSender, SlackSender
from pyapp.mailer import SmtpMailer
from pyapp.webhooks.sender import WebhookSender
from support.outbox import TEST_SECRET, make_workspace, start_conversation


@pytest.fixture
def allow_local(monkeypatch):
    monkeypatch.setenv("PARLEY_FETCH_ALLOW_HOSTS", "127.0.0.1")


@pytest.fixture
async def ws(server, signup, settings, owner_conn):
    w = await make_workspace(server, signup, settings, owner_conn)
    yield w
    await w.close()


async def _drain(ws, smtp):
    senders = {"webhook": WebhookSender(allow_hosts=["127.0.0.1"]), "slack": SlackSender(allow_hosts=["127.0.0.1"]),
               "email": EmailSender(SmtpMailer(smtp.url, "parley@example.test"), "https://parley.example")}
    drainer = OutboxDrainer(await ws.tenant.pool("jobs"), "alerts", senders=senders,
                            keyring=Keyring.from_settings(TEST_SECRET))
    try:
        return await drainer.drain()
    finally:
        await drainer.close()


async def test_email_alert_on_handoff_and_test_send(ws, smtp):
    bot = ws.tenant.chatbot_id
    status, alert = await ws.call("POST", f"/api/chatbots/{bot}/alerts", json={
        "kind": "email", "email": "support@shop.example", "events": ["human_requested"]})
    assert status == 201, alert
    conv = await start_conversation(ws.tenant)
    async with await ws.tenant.tx("service") as conn:
        await conn.execute("SELECT 1 FROM parley.post_message($1, 'visitor', 'I want a human please')", conv)
        await conn.execute("SELECT parley.transition_conversation($1, 'human')", conv)
    assert await _drain(ws, smtp) == 1
    (rcpt, msg), = await smtp.wait_for(1)
    assert rcpt == ["support@shop.example"]
    assert msg["Subject"] == "[Parley] A visitor asked for a person"
    body = msg.get_content()
    assert f"https://parley.example/console/conversations/{conv}" in body
    status, _sent = await ws.call("POST", f"/api/alerts/{alert['id']}/test")
    assert status == 202
    await _drain(ws, smtp)
    (_, test_msg) = (await smtp.wait_for(2))[1]
    assert test_msg["Subject"].startswith("[Parley] Test alert") and "This alert channel works." in test_msg.get_content()


async def test_slack_alert_on_leads_and_negative_feedback(ws, smtp, sink, allow_local, owner_conn):
    bot = ws.tenant.chatbot_id
    hook = sink.url + "/T000/B000/XXXXsecretpart"
    status, alert = await ws.call("POST", f"/api/chatbots/{bot}/alerts", json={
        "kind": "slack", "slack_webhook_url": hook, "events": ["lead_captured", "negative_feedback"]})
    assert status == 201, alert
    assert "secretpart" not in str(alert) and hook not in str(alert)
    stored = await owner_conn.fetchrow("SELECT * FROM parley.outbox_destinations WHERE id = $1", uuid.UUID(alert["id"]))
    assert hook not in str(dict(stored))
    conv = await start_conversation(ws.tenant)
    async with await ws.tenant.tx("service") as conn:
        await conn.execute("SELECT 1 FROM parley.capture_lead($1, 'Ada', 'ada@example.test', NULL, '{}')", conv)
    await owner_conn.execute("INSERT INTO parley.conversation_ratings (tenant_id, conversation_id, chatbot_id, score, comment)"
                             " VALUES ($1, $2, $3, 1, 'useless')", ws.tenant.id, conv, bot)
    # A thumbs-up is no alert; a thumbs-down on a bot reply is.
    async with await ws.tenant.tx("service") as conn:
        reply = await conn.fetchval("SELECT id FROM parley.post_message($1, 'bot', 'We ship in 2 days.')", conv)
    for value in ("up", "down"):
        await owner_conn.execute(
            "INSERT INTO parley.message_feedback (tenant_id, message_id, conversation_id, chatbot_id, value, comment)"
            " VALUES ($1, $2, $3, $4, $5, 'wrong') ON CONFLICT (tenant_id, message_id) DO UPDATE SET value = $5",
            ws.tenant.id, reply, conv, bot, value)
    assert await _drain(ws, smtp) == 3
    texts = sorted(r.json()["text"] for r in sink.received)
    thumbs = [t for t in texts if "A visitor was unhappy" in t and "Rating" not in t]
    assert len(thumbs) == 1 and "wrong" in thumbs[0]
    texts = [t for t in texts if t not in thumbs]
    assert texts[0].startswith("*[Parley] A visitor was unhappy") and "Rating: 1/5" in texts[0] and "useless" in texts[0]
    assert texts[1].startswith("*[Parley] New lead") and all(r.path.endswith("secretpart") for r in sink.received)


async def test_a_paused_webhook_endpoint_emails_the_owners(ws, smtp, sink, allow_local, owner_conn):
    status, ep = await ws.call("POST", "/api/webhooks", json={"url": sink.url, "event_kinds": ["message_added"]})
    assert status == 201
    await owner_conn.execute("UPDATE parley.outbox_destinations SET failing_since = now() - interval '5 days 1 minute'"
                             " WHERE id = $1", uuid.UUID(ep["id"]))
    sink.script = [(503, {}, 0)]
    conv = await start_conversation(ws.tenant)
    async with await ws.tenant.tx("service") as conn:
        await conn.execute("SELECT 1 FROM parley.post_message($1, 'bot', 'hello')", conv)
    await _drain(ws, smtp)
    (rcpt, msg), = await smtp.wait_for(1)
    assert rcpt == [ws.owner["email"]]
    assert msg["Subject"] == "[Parley] A webhook endpoint was paused" and "503" in msg.get_content()
    status, now = await ws.call("GET", f"/api/webhooks/{ep['id']}")
    assert now["status"] == "paused"


async def test_alert_validation_roles_and_other_workspaces(ws, server, signup):
    bot = ws.tenant.chatbot_id
    for body in ({"kind": "email", "email": "not-an-address", "events": ["lead_captured"]},
                 {"kind": "email", "email": "a@b.example", "events": []},
                 {"kind": "email", "email": "a@b.example", "events": ["claimed"]},
                 {"kind": "slack", "events": ["lead_captured"]},
                 {"kind": "slack", "slack_webhook_url": "http://169.254.169.254/x", "events": ["lead_captured"]},
                 {"kind": "sms", "email": "a@b.example", "events": ["lead_captured"]}):
        status, err = await ws.call("POST", f"/api/chatbots/{bot}/alerts", json=body)
        assert status == 422 and "error" in err, (body, status, err)
    status, alert = await ws.call("POST", f"/api/chatbots/{bot}/alerts", json={
        "kind": "email", "email": "a@b.example", "events": ["lead_captured"]})
    assert status == 201
    other = await signup(server)
    agent = await signup(server, join=ws.owner, role="agent")
    for token, expected in ((other["access_token"], 404), (agent["access_token"], 403)):
        assert (await server.call("POST", f"/api/alerts/{alert['id']}/test", token=token))[0] == expected
        assert (await server.call("DELETE", f"/api/alerts/{alert['id']}", token=token))[0] == expected
        status, _ = await server.call("POST", f"/api/chatbots/{bot}/alerts", token=token, json={
            "kind": "email", "email": "x@y.example", "events": ["lead_captured"]})
        assert status == expected
    status, body = await server.call("GET", f"/api/chatbots/{bot}/alerts", token=other["access_token"])
    assert status == 404
    status, body = await ws.call("GET", f"/api/chatbots/{bot}/alerts")
    assert [a["id"] for a in body["alerts"]] == [alert["id"]]
    assert (await ws.call("DELETE", f"/api/alerts/{alert['id']}"))[0] == 204


async def test_console_page_adds_tests_and_deletes(ws, smtp):
    from support.console import ConsoleClient

    client = ConsoleClient(ws.server.base_url)
    try:
        await client.sign_in(ws.owner["email"], ws.owner["password"])
        status, html, _ = await client.get("/console/alerts")
        assert status == 200 and "Add an alert channel" in html
        status, html, _ = await client.post("/console/alerts", {"chatbot_id": str(ws.tenant.chatbot_id), "kind": "email",
                                                                "email": "bad", "event_lead_captured": "1"})
        assert status == 422 and 'id="alert-error"' in html
        status, html, _ = await client.post("/console/alerts", {"chatbot_id": str(ws.tenant.chatbot_id), "kind": "email",
                                                                "email": "desk@shop.example",
                                                                "event_human_requested": "1"})
        assert status == 200 and "Alert channel added." in html and "desk@shop.example" in html
        _, body = await ws.call("GET", f"/api/chatbots/{ws.tenant.chatbot_id}/alerts")
        alert = body["alerts"][0]
        status, html, _ = await client.post(f"/console/alerts/{alert['id']}/test")
        assert status == 200 and "Test alert queued." in html
        await _drain(ws, smtp)
        (rcpt, msg), = await smtp.wait_for(1)
        assert rcpt == ["desk@shop.example"] and msg["Subject"].startswith("[Parley] Test alert")
        status, html, _ = await client.post(f"/console/alerts/{alert['id']}/delete")
        assert status == 200 and "Alert channel deleted." in html
    finally:
        await client.close()
