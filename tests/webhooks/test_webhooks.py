"""Customer webhooks end to end: endpoints through the API, deliveries signed per Standard
Webhooks and checked by a sink that verifies on its own, secret rotation with overlap, the SSRF
guard at creation and at delivery, no redirects, tamper and replay cases, secrets kept out of
logs, audit rows, errors and dumps, and other workspaces kept out."""
import logging
import subprocess
from pathlib import Path

import pytest
from support.fakes.webhook_sink import verify
from support.outbox import make_drainer, make_workspace, post, start_conversation


@pytest.fixture
def allow_local(monkeypatch):
    """The sink runs on 127.0.0.1, which the SSRF guard refuses unless allow-listed (tests only)."""
    monkeypatch.setenv("PARLEY_FETCH_ALLOW_HOSTS", "127.0.0.1")


@pytest.fixture
async def ws(server, signup, settings, owner_conn):
    w = await make_workspace(server, signup, settings, owner_conn)
    yield w
    await w.close()


async def _endpoint(ws, sink, kinds=("message_added",)):
    status, ep = await ws.call("POST", "/api/webhooks", json={"name": "Orders", "url": sink.url,
                                                            "event_kinds": list(kinds)})
    assert status == 201, ep
    return ep


async def _drain(ws):
    drainer = make_drainer(await ws.tenant.pool("jobs"))
    try:
        return await drainer.drain()
    finally:
        await drainer.close()


async def test_signed_delivery_verified_independently(ws, sink, allow_local):
    ep = await _endpoint(ws, sink)
    assert ep["secret"].startswith("whsec_") and ep["secrets"][0]["hint"] == ep["secret"][-4:]
    status, again = await ws.call("GET", f"/api/webhooks/{ep['id']}")
    assert status == 200 and again.get("secret") is None  # shown once
    sink.secrets = [ep["secret"]]
    conv = await start_conversation(ws.tenant)
    await post(ws.tenant, conv, "Where is my order?")
    assert await _drain(ws) == 1
    got = sink.received[0]
    assert got.valid is True
    assert got.headers["webhook-id"].startswith("msg_") and got.headers["webhook-timestamp"].isdigit()
    assert got.json()["type"] == "conversation.message_added"
    assert got.json()["data"]["message"]["body"] == "Where is my order?"

    # Tamper cases, on the very bytes that arrived: each one fails the receiver's check.
    h = dict(got.headers)
    assert verify(ep["secret"], h, got.body)
    assert not verify(ep["secret"], h, got.body.replace(b"order", b"ORDER"))
    assert not verify(ep["secret"], {**h, "webhook-id": "msg_other"}, got.body)
    assert not verify("whsec_" + "A" * 32, h, got.body)
    # Replayed later (an attacker resending a captured request): the timestamp is too old.
    assert not verify(ep["secret"], h, got.body, now=int(h["webhook-timestamp"]) + 301)

    # The delivery log through the endpoint, and a replay keeps the webhook-id.
    status, log = await ws.call("GET", f"/api/webhooks/{ep['id']}/deliveries")
    assert status == 200 and log["deliveries"][0]["status"] == "delivered"
    status, _ = await ws.call("POST", f"/api/outbox/deliveries/{log['deliveries'][0]['id']}/replay")
    assert status == 202
    await _drain(ws)
    assert sink.received[1].msg_id == got.msg_id and sink.received[1].valid is True


async def test_rotation_signs_with_both_secrets_during_the_overlap(ws, sink, allow_local, owner_conn):
    ep = await _endpoint(ws, sink, kinds=("human_requested",))
    old = ep["secret"]
    status, rotated = await ws.call("POST", f"/api/webhooks/{ep['id']}/rotate-secret", json={"overlap_hours": 24})
    assert status == 200 and rotated["secret"] != old and len(rotated["secrets"]) == 2
    new = rotated["secret"]
    status, _test = await ws.call("POST", f"/api/webhooks/{ep['id']}/test")
    assert status == 202
    await _drain(ws)
    got = sink.received[0]
    assert got.json()["type"] == "webhook.test"
    assert len(got.headers["webhook-signature"].split(" ")) == 2
    assert verify(old, got.headers, got.body) and verify(new, got.headers, got.body)
    # With no overlap the old secret ends at once.
    status, rotated = await ws.call("POST", f"/api/webhooks/{ep['id']}/rotate-secret", json={"overlap_hours": 0})
    newest = rotated["secret"]
    assert [s["hint"] for s in rotated["secrets"]] == [newest[-4:]]
    await ws.call("POST", f"/api/webhooks/{ep['id']}/test")
    await _drain(ws)
    last = sink.received[-1]
    assert verify(newest, last.headers, last.body) and not verify(new, last.headers, last.body)
    assert not verify(old, last.headers, last.body)


@pytest.mark.parametrize("url", [
    "http://127.0.0.1/hook", "http://127.1/hook", "http://2130706433/hook", "http://0x7f000001/hook",
    "http://[::1]/hook", "http://[::ffff:127.0.0.1]/hook", "http://169.254.169.254/latest/meta-data",
    "http://localhost./hook", "http://metadata.google.internal/", "http://user@example.com@127.0.0.1/",
    "ftp://example.com/hook", "http://10.0.0.1/hook", "http://[fd00:ec2::254]/",
])
async def test_ssrf_guard_at_creation(ws, url):
    status, err = await ws.call("POST", "/api/webhooks", json={"url": url, "event_kinds": ["message_added"]})
    assert status == 422, (url, err)
    assert err["error"]["code"] in ("url_not_allowed", "url_unreachable", "invalid_url", "validation_failed")


async def test_ssrf_guard_at_delivery_and_no_redirects(ws, sink, allow_local, monkeypatch, owner_conn):
    ep = await _endpoint(ws, sink)
    # A redirect is an answer, not an instruction: not followed, retried later.
    sink.script = [(302, {"Location": "http://169.254.169.254/latest/meta-data"}, 0)]
    conv = await start_conversation(ws.tenant)
    await post(ws.tenant, conv, "one")
    await _drain(ws)
    assert len(sink.received) == 1
    row = await owner_conn.fetchrow("SELECT status, last_status_code FROM parley.outbox WHERE destination_id = $1",
                                    __import__("uuid").UUID(ep["id"]))
    assert tuple(row) == ("pending", 302)
    # The address is vetted again at every delivery: once it is no longer allowed, nothing is sent
    # and the endpoint is paused with the reason.
    monkeypatch.delenv("PARLEY_FETCH_ALLOW_HOSTS")
    await owner_conn.execute("UPDATE parley.outbox SET next_attempt_at = now()")
    await owner_conn.execute("UPDATE parley.outbox_destinations SET next_send_at = '-infinity'")
    from jobs.outbox import OutboxDrainer
    from pyapp.webhooks.sender import WebhookSender
    from support.outbox import TEST_SECRET, Keyring
    drainer = OutboxDrainer(await ws.tenant.pool("jobs"), "strict", senders={"webhook": WebhookSender()},
                            keyring=Keyring.from_settings(TEST_SECRET))
    try:
        await drainer.drain()
    finally:
        await drainer.close()
    assert len(sink.received) == 1
    _status, now = await ws.call("GET", f"/api/webhooks/{ep['id']}")
    assert now["status"] == "paused" and "not allowed" in now["paused_reason"]


async def test_timeout_is_a_retry(ws, sink, allow_local, owner_conn):
    from jobs.outbox import OutboxDrainer
    from pyapp.webhooks.sender import WebhookSender
    from support.outbox import TEST_SECRET, Keyring

    await _endpoint(ws, sink)
    sink.script = [(200, {}, 1.0)]
    conv = await start_conversation(ws.tenant)
    await post(ws.tenant, conv, "slow")
    drainer = OutboxDrainer(await ws.tenant.pool("jobs"), "t", keyring=Keyring.from_settings(TEST_SECRET),
                            senders={"webhook": WebhookSender(allow_hosts=["127.0.0.1"], timeout=0.3)})
    try:
        await drainer.drain()
    finally:
        await drainer.close()
    row = await owner_conn.fetchrow("SELECT status, last_error FROM parley.outbox")
    assert row["status"] == "pending" and "no answer within 0.3s" in row["last_error"]


async def test_secrets_stay_out_of_logs_audit_errors_and_dumps(ws, sink, allow_local, owner_conn, caplog,
                                                               settings):
    caplog.set_level(logging.DEBUG)
    ep = await _endpoint(ws, sink)
    _, rotated = await ws.call("POST", f"/api/webhooks/{ep['id']}/rotate-secret", json={})
    secrets = [ep["secret"], rotated["secret"]]
    sink.secrets = secrets
    conv = await start_conversation(ws.tenant)
    await post(ws.tenant, conv, "hello")
    await _drain(ws)
    assert sink.received[0].valid
    status, err = await ws.call("PATCH", f"/api/webhooks/{ep['id']}", json={"url": "http://10.1.2.3/x"})
    assert status == 422
    texts = [caplog.text, str(err)]
    texts += [str(dict(r)) for r in await owner_conn.fetch("SELECT * FROM parley.audit_log")]
    texts += [str(dict(r)) for r in await owner_conn.fetch("SELECT * FROM parley.outbox_attempts")]
    texts += [str(dict(r)) for r in await owner_conn.fetch("SELECT * FROM parley.outbox")]


    from pyapp.embedded import POSTGRES_BIN_PATH
    dump = subprocess.run([str(Path(POSTGRES_BIN_PATH) / "pg_dump"), "--data-only", settings.admin_url],
                          capture_output=True, text=True, timeout=120, check=False)
    assert dump.returncode == 0, dump.stderr[-500:]
    assert "destination_secrets" in dump.stdout
    texts.append(dump.stdout)
    for secret in secrets:
        for text in texts:
            assert secret not in text and secret[6:] not in text


async def test_other_workspaces_and_agents_are_kept_out(ws, sink, allow_local, server, signup):
    ep = await _endpoint(ws, sink)
    other = await signup(server)
    agent = await signup(server, join=ws.owner, role="agent")
    for token, expected in ((other["access_token"], 404), (agent["access_token"], 403)):
        for method, path, body in (("GET", f"/api/webhooks/{ep['id']}", None),
                                   ("PATCH", f"/api/webhooks/{ep['id']}", {"enabled": False}),
                                   ("POST", f"/api/webhooks/{ep['id']}/rotate-secret", {}),
                                   ("POST", f"/api/webhooks/{ep['id']}/test", None),
                                   ("GET", f"/api/webhooks/{ep['id']}/deliveries", None),
                                   ("DELETE", f"/api/webhooks/{ep['id']}", None)):
            status, _ = await server.call(method, path, json=body, token=token)
            assert status == expected, (method, path, status)
    status, body = await server.call("GET", "/api/webhooks", token=other["access_token"])
    assert status == 200 and body["endpoints"] == []
    status, _ = await ws.call("GET", f"/api/webhooks/{ep['id']}")
    assert status == 200


async def test_validation_errors_are_4xx(ws, allow_local, sink):
    for body in ({"url": sink.url, "event_kinds": []}, {"url": sink.url, "event_kinds": ["nope"]},
                 {"url": sink.url}, {"url": "not a url", "event_kinds": ["closed"]},
                 {"url": sink.url, "event_kinds": ["closed"], "name": ""},
                 {"url": sink.url + "\u0000", "event_kinds": ["closed"]}):
        status, err = await ws.call("POST", "/api/webhooks", json=body)
        assert 400 <= status < 500 and "error" in err, (body, status, err)
    ep = await _endpoint(ws, sink, kinds=("closed",))
    status, out = await ws.call("PATCH", f"/api/webhooks/{ep['id']}", json={"enabled": False})
    assert status == 200 and out["status"] == "disabled"
    status, out = await ws.call("PATCH", f"/api/webhooks/{ep['id']}", json={"event_kinds": ["closed", "reopened"],
                                                                          "enabled": True})
    assert status == 200 and out["status"] == "active" and out["event_kinds"] == ["closed", "reopened"]
    status, _ = await ws.call("DELETE", f"/api/webhooks/{ep['id']}")
    assert status == 204
    assert (await ws.call("GET", f"/api/webhooks/{ep['id']}"))[0] == 404


async def test_console_page_creates_tests_rotates_and_refuses_internal_urls(ws, sink, allow_local, monkeypatch):
    from support.console import ConsoleClient

    client = ConsoleClient(ws.server.base_url)
    try:
        await client.sign_in(ws.owner["email"], ws.owner["password"])
        status, html, _ = await client.get("/console/webhooks")
        assert status == 200 and "Add an endpoint" in html
        status, html, _ = await client.post("/console/webhooks", {"name": "CRM", "url": sink.url,
                                                                  "kind_closed": "1", "kind_message_added": "1"})
        assert status == 201 and 'id="webhook-secret-value">whsec_' in html
        secret = html.split('id="webhook-secret-value">')[1].split("<")[0]
        status, html, _ = await client.get("/console/webhooks")
        assert secret not in html and "CRM" in html
        _, body = await ws.call("GET", "/api/webhooks")
        ep = body["endpoints"][0]
        assert sorted(ep["event_kinds"]) == ["closed", "message_added"]
        status, html, _ = await client.post(f"/console/webhooks/{ep['id']}/test")
        assert status == 200 and "Test event queued." in html
        await _drain(ws)
        got = sink.received[0]
        assert verify(secret, got.headers, got.body) and got.json()["type"] == "webhook.test"
        status, html, _ = await client.post(f"/console/webhooks/{ep['id']}/enabled", {"enabled": "0"})
        assert status == 200 and "Endpoint updated." in html
        assert (await ws.call("GET", f"/api/webhooks/{ep['id']}"))[1]["status"] == "disabled"
        status, html, _ = await client.post(f"/console/webhooks/{ep['id']}/enabled", {"enabled": "1"})
        assert (await ws.call("GET", f"/api/webhooks/{ep['id']}"))[1]["status"] == "active"
        status, html, _ = await client.post(f"/console/webhooks/{ep['id']}/rotate")
        assert status == 200 and "whsec_" in html
        monkeypatch.delenv("PARLEY_FETCH_ALLOW_HOSTS")
        status, html, _ = await client.post("/console/webhooks", {"url": "http://169.254.169.254/", "kind_closed": "1"})
        assert status == 422 and 'id="webhook-error"' in html
        status, html, _ = await client.post(f"/console/webhooks/{ep['id']}/delete")
        assert status == 200 and "Endpoint deleted." in html
    finally:
        await client.close()
