"""The outbox API and console page: destinations' health, the log, replay, resume; admins only;
another workspace's ids are 404."""
import uuid

from support.console import ConsoleClient
from support.knowledge import Tenant
from support.outbox import add_destination, make_drainer, post, start_conversation


async def _workspace(server, signup, owner_conn, settings):
    owner = await signup(server)
    tid = uuid.UUID(owner["tenant_id"])
    bot = await owner_conn.fetchval("INSERT INTO parley.chatbots (tenant_id, name) VALUES ($1, 'Bot') RETURNING id", tid)
    return owner, Tenant(settings, owner_conn, tid, bot)


async def test_log_replay_and_resume_through_the_api(server, signup, owner_conn, settings, sink):
    owner, tenant = await _workspace(server, signup, owner_conn, settings)
    agent = await signup(server, join=owner, role="agent")
    dest = await add_destination(owner_conn, tenant, sink.url)
    conv = await start_conversation(tenant)
    sink.script = [(410, {}, 0)]
    await post(tenant, conv, "gone", "fine")
    drainer = make_drainer(await tenant.pool("jobs"))
    try:
        await drainer.drain()
        tok = owner["access_token"]
        status, body = await server.call("GET", "/api/outbox/destinations", token=tok)
        assert status == 200 and body["destinations"][0]["failed"] == 1 and body["destinations"][0]["pending"] == 0
        status, body = await server.call("GET", "/api/outbox/deliveries?status=failed", token=tok)
        assert status == 200 and [d["last_status_code"] for d in body["deliveries"]] == [410]
        failed_id = body["deliveries"][0]["id"]
        status, one = await server.call("GET", f"/api/outbox/deliveries/{failed_id}", token=tok)
        assert status == 200 and one["attempts_log"][0]["status_code"] == 410
        assert one["attempts_log"][0]["response"] == "answer 410" and one["payload"]["data"]["message"]["body"] == "gone"

        # Agents see none of it; bad ids are 404, not 500.
        assert (await server.call("GET", "/api/outbox/deliveries", token=agent["access_token"]))[0] == 403
        assert (await server.call("POST", f"/api/outbox/deliveries/{failed_id}/replay",
                                  token=agent["access_token"]))[0] == 403
        for bad in ("abc", "99999999999999999999", "0"):
            status, err = await server.call("GET", f"/api/outbox/deliveries/{bad}", token=tok)
            assert status == 404 and err["error"]["code"] == "not_found"
        assert (await server.call("GET", "/api/outbox/deliveries?limit=0", token=tok))[0] == 422

        status, body = await server.call("POST", f"/api/outbox/deliveries/{failed_id}/replay", token=tok)
        assert status == 202
        assert (await server.call("POST", f"/api/outbox/deliveries/{body['id']}/replay", token=tok))[0] == 409
        assert await drainer.drain() == 1
        assert sink.received[-1].msg_id == sink.received[0].msg_id or \
            sink.received[-1].json()["data"]["message"]["body"] == "gone"
        ids = [r.msg_id for r in sink.received if r.json()["data"]["message"]["body"] == "gone"]
        assert len(ids) == 2 and ids[0] == ids[1]

        await owner_conn.execute("UPDATE parley.outbox_destinations SET status = 'paused', paused_reason = 'x'"
                                 " WHERE id = $1", dest)
        status, _ = await server.call("POST", f"/api/outbox/destinations/{dest}/resume", token=tok)
        assert status == 204
        status, body = await server.call("POST", f"/api/outbox/destinations/{dest}/replay",
                                         json={"include_failed": True}, token=tok)
        assert status == 200 and body == {"replayed": 0}

        # Another workspace: every id of this one is unknown there.
        other = await signup(server)
        otok = other["access_token"]
        assert (await server.call("GET", f"/api/outbox/deliveries/{failed_id}", token=otok))[0] == 404
        assert (await server.call("POST", f"/api/outbox/deliveries/{failed_id}/replay", token=otok))[0] == 404
        assert (await server.call("POST", f"/api/outbox/destinations/{dest}/resume", token=otok))[0] == 404
        assert (await server.call("POST", f"/api/outbox/destinations/{dest}/replay", json={}, token=otok))[0] == 404
        status, body = await server.call("GET", "/api/outbox/deliveries", token=otok)
        assert status == 200 and body["deliveries"] == []
    finally:
        await drainer.close()
        await tenant.close()


async def test_console_page_shows_health_and_replays(server, signup, owner_conn, settings, sink):
    owner, tenant = await _workspace(server, signup, owner_conn, settings)
    dest = await add_destination(owner_conn, tenant, sink.url, name="Orders hook")
    conv = await start_conversation(tenant)
    await post(tenant, conv, "a message")
    await owner_conn.execute("UPDATE parley.outbox SET status = 'dead', last_error = 'HTTP 503' WHERE tenant_id = $1",
                             tenant.id)
    await owner_conn.execute("UPDATE parley.outbox_destinations SET status = 'paused',"
                             " paused_reason = 'Failing since yesterday: 503 <b>down</b>' WHERE id = $1", dest)
    client = ConsoleClient(server.base_url)
    try:
        await client.sign_in(owner["email"], owner["password"])
        status, html, _ = await client.get("/console/outbox")
        assert status == 200 and "Orders hook" in html and "Failing since yesterday" in html
        assert "<b>down</b>" not in html  # escaped
        status, html, _ = await client.post(f"/console/outbox/destinations/{dest}/replay")
        assert status == 200 and "Queued again." in html
        assert await owner_conn.fetchval("SELECT count(*) FROM parley.outbox WHERE tenant_id = $1 AND status = 'pending'",
                                         tenant.id) == 1
        status, html, _ = await client.post(f"/console/outbox/destinations/{dest}/resume")
        assert status == 200 and "Destination resumed." in html
        first = await owner_conn.fetchval("SELECT min(id) FROM parley.outbox WHERE tenant_id = $1", tenant.id)
        status, html, _ = await client.get(f"/console/outbox/deliveries/{first}")
        assert status == 200 and "a message" in html
    finally:
        await client.close()
        await tenant.close()
