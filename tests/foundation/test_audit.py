"""The audit trail: who did what, from where, in which request; and its paginated reader."""
from __future__ import annotations

import uuid

RID = "req-audit-0001"


async def _rows(owner_conn, tenant_id: str, action: str) -> list[dict]:
    return [dict(r) for r in await owner_conn.fetch(
        "SELECT actor_kind, actor_id, action, target_kind, target_id, host(ip) AS ip, request_id, details "
        "FROM parley.audit_log WHERE tenant_id = $1 AND action = $2 ORDER BY id", uuid.UUID(tenant_id), action)]


async def test_account_changes_are_audited_with_actor_ip_and_request(server, signup, owner_conn):
    hdr = {"X-Request-Id": RID}
    owner = await signup(server, plan="pro")
    tid, me = owner["tenant_id"], owner["user_id"]

    async def call(method, path, json=None, token=owner["access_token"]):
        status, body = await server.call(method, path, json=json, token=token, headers=hdr)
        assert status < 400, body
        return body

    def check(rows, *, actor=me, kind="user", rid=RID):
        assert rows, "no audit row"
        row = rows[-1]
        assert (row["actor_kind"], row["actor_id"], row["ip"]) == (kind, actor, "127.0.0.1"), row
        assert row["request_id"] == rid if rid else row["request_id"], row
        return row

    for action in ("auth.sign_up", "tenant.insert", "member.insert"):
        rows = await _rows(owner_conn, tid, action)
        assert rows and rows[0]["actor_id"] == me and rows[0]["ip"] == "127.0.0.1", action

    await server.call("POST", "/api/auth/login", json={"email": owner["email"], "password": "wrong"}, headers=hdr)
    check(await _rows(owner_conn, tid, "auth.sign_in_failed"))
    await call("POST", "/api/auth/login", json={"email": owner["email"], "password": owner["password"]}, token=None)
    check(await _rows(owner_conn, tid, "auth.sign_in"))

    invite = await call("POST", "/api/invites", json={"email": "new.person@example.test", "role": "admin"})
    row = check(await _rows(owner_conn, tid, "invite.insert"))
    assert row["target_id"] == invite["id"] and "token_hash" not in row["details"]["row"]
    await call("DELETE", f"/api/invites/{invite['id']}")
    check(await _rows(owner_conn, tid, "invite.update"))

    joiner = await signup(server, join=owner, role="agent")
    check(await _rows(owner_conn, tid, "member.insert"), actor=joiner["user_id"], rid=None)  # the helper's own request
    await call("PATCH", f"/api/members/{joiner['user_id']}", json={"role": "admin"})
    row = check(await _rows(owner_conn, tid, "member.update"))
    assert row["details"]["before"]["role"] == "agent" and row["details"]["after"]["role"] == "admin"
    await call("DELETE", f"/api/members/{joiner['user_id']}")
    check(await _rows(owner_conn, tid, "member.delete"))

    key = await call("POST", "/api/keys", json={"name": "ci", "scopes": ["read"]})
    row = check(await _rows(owner_conn, tid, "api_key.insert"))
    assert row["target_id"] == key["id"] and "key_hash" not in row["details"]["row"]
    await call("DELETE", f"/api/keys/{key['id']}")
    check(await _rows(owner_conn, tid, "api_key.update"))

    await call("PUT", "/api/settings", json={"name": "New name", "values": {"lang": "en"}})
    check(await _rows(owner_conn, tid, "setting.insert"))
    row = check(await _rows(owner_conn, tid, "tenant.update"))
    assert row["details"]["after"]["name"] == "New name"
    await call("PUT", "/api/settings", json={"values": {"lang": None}})
    check(await _rows(owner_conn, tid, "setting.delete"))

    await call("DELETE", "/api/tenant")
    check(await _rows(owner_conn, tid, "tenant.deleted"))


async def test_audit_reader_paginates_and_filters(server, signup):
    owner = await signup(server)
    for i in range(4):
        status, _ = await server.call("PUT", "/api/settings", json={"values": {f"k{i}": i}},
                                      token=owner["access_token"])
        assert status == 200
    status, everything = await server.call("GET", "/api/audit?limit=200", token=owner["access_token"])
    assert status == 200 and everything["next_before"] is None
    all_ids = [e["id"] for e in everything["items"]]
    assert all_ids == sorted(all_ids, reverse=True) and len(all_ids) >= 7

    seen, before = [], None
    while True:
        query = "/api/audit?limit=3" + (f"&before={before}" if before else "")
        status, page = await server.call("GET", query, token=owner["access_token"])
        assert status == 200 and len(page["items"]) <= 3
        seen += [e["id"] for e in page["items"]]
        before = page["next_before"]
        if before is None:
            break
    assert seen == all_ids

    status, page = await server.call("GET", "/api/audit?action=setting.insert", token=owner["access_token"])
    assert [e["details"]["row"]["key"] for e in page["items"]] == ["k3", "k2", "k1", "k0"]
    status, page = await server.call("GET", f"/api/audit?actor={owner['user_id']}&limit=200",
                                     token=owner["access_token"])
    assert len(page["items"]) == len(all_ids)
    status, page = await server.call("GET", f"/api/audit?actor={uuid.uuid4()}", token=owner["access_token"])
    assert page == {"items": [], "next_before": None}
    for bad in ("limit=0", "limit=201", "before=-1", "before=abc", "limit=99999999999999999999999"):
        status, body = await server.call("GET", f"/api/audit?{bad}", token=owner["access_token"])
        assert status == 422, (bad, body)
