"""Credentials that must not work: forged, expired, unsigned, mis-addressed or revoked tokens and keys."""
from __future__ import annotations

import base64
import json
import time
import uuid

import jwt
import pytest
from pyapp.api import RouteSpec, api
from pyapp.security import ACCESS_AUDIENCE, issue_access_token
from support.server import TEST_SECRET, start_server


def _claims(user: dict, session_id: str, **override) -> dict:
    now = int(time.time())
    claims = {"sub": user["user_id"], "tid": user["tenant_id"], "sid": session_id, "aud": ACCESS_AUDIENCE,
              "iat": now, "exp": now + 300, "jti": "x"}
    claims.update(override)
    return {k: v for k, v in claims.items() if v is not None}


def _tamper(token: str, **changes) -> str:
    """Change claims but keep the original signature."""
    head, payload, sig = token.split(".")
    data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    data.update(changes)
    forged = base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")
    return f"{head}.{forged}.{sig}"


async def _session_id(server, user) -> str:
    status, me = await server.call("GET", "/api/me", token=user["access_token"])
    assert status == 200
    return me["session_id"]


@pytest.mark.filterwarnings("ignore:The HMAC key")
async def test_bad_access_tokens_are_401(server, signup):
    user = await signup(server)
    other = await signup(server)
    sid = await _session_id(server, user)
    bad = {
        "tampered": _tamper(user["access_token"], tid=other["tenant_id"]),
        "expired": issue_access_token(TEST_SECRET, user_id=user["user_id"], tenant_id=user["tenant_id"],
                                      session_id=sid, ttl=-60)[0],
        "alg_none": jwt.encode(_claims(user, sid), key=None, algorithm="none"),
        "wrong_secret": jwt.encode(_claims(user, sid), "not-the-secret-but-long-enough-for-hs256!", algorithm="HS256"),
        "wrong_audience": jwt.encode(_claims(user, sid, aud="someone-else"), TEST_SECRET, algorithm="HS256"),
        "no_audience": jwt.encode({k: v for k, v in _claims(user, sid).items() if k != "aud"}, TEST_SECRET,
                                  algorithm="HS256"),
        "other_alg": jwt.encode(_claims(user, sid), TEST_SECRET, algorithm="HS512"),
        "no_session": jwt.encode({k: v for k, v in _claims(user, sid).items() if k != "sid"}, TEST_SECRET,
                                 algorithm="HS256"),
        "unknown_session": issue_access_token(TEST_SECRET, user_id=user["user_id"], tenant_id=user["tenant_id"],
                                              session_id=uuid.uuid4(), ttl=300)[0],
        "other_users_session": issue_access_token(TEST_SECRET, user_id=other["user_id"],
                                                  tenant_id=other["tenant_id"], session_id=sid, ttl=300)[0],
        "garbage": "not.a.jwt",
    }
    for name, token in bad.items():
        for path in ("/api/members", "/api/me", "/api/tenants"):
            status, body = await server.call("GET", path, token=token)
            assert status == 401, (name, path, body)
            assert body["error"]["code"] in ("invalid_token", "session_revoked"), (name, body)
    status, _ = await server.call("GET", "/api/members")
    assert status == 401
    status, _ = await server.call("GET", "/api/members", token=user["access_token"])  # the real one still works
    assert status == 200


async def test_revoked_sessions_are_401(server, signup):
    user = await signup(server)
    status, _ = await server.call("POST", "/api/auth/logout", token=user["access_token"])
    assert status == 204
    for path in ("/api/members", "/api/me"):
        status, body = await server.call("GET", path, token=user["access_token"])
        assert (status, body["error"]["code"]) == (401, "session_revoked")

    status, second = await server.call("POST", "/api/auth/login", json={"email": user["email"],
                                                                        "password": user["password"]})
    status, rotated = await server.call("POST", "/api/auth/refresh", json={"refresh_token": second["refresh_token"]})
    assert status == 200
    # (a repeat while its successor is unused is a parallel refresh: tests/hardening/test_sessions.py)
    status, newest = await server.call("POST", "/api/auth/refresh", json={"refresh_token": rotated["refresh_token"]})
    assert status == 200
    status, body = await server.call("POST", "/api/auth/refresh", json={"refresh_token": second["refresh_token"]})
    assert (status, body["error"]["code"]) == (401, "refresh_reused")
    for token in (second["access_token"], rotated["access_token"], newest["access_token"]):
        status, body = await server.call("GET", "/api/members", token=token)
        assert (status, body["error"]["code"]) == (401, "session_revoked")


async def test_revoked_and_expired_api_keys_are_401(server, signup, make_api_key, owner_conn):
    owner = await signup(server)
    revoked = await make_api_key(server, owner["access_token"], name="revoked")
    expired = await make_api_key(server, owner["access_token"], name="expired")
    status, keys = await server.call("GET", "/api/keys", token=owner["access_token"])
    ids = {k["name"]: k["id"] for k in keys["keys"]}
    for key in (revoked, expired):
        status, _ = await server.call("GET", "/api/members", token=key)
        assert status == 200
    await server.call("DELETE", f"/api/keys/{ids['revoked']}", token=owner["access_token"])
    await owner_conn.execute("UPDATE parley.api_keys SET expires_at = now() - interval '1 second' WHERE id = $1",
                             uuid.UUID(ids["expired"]))
    for key in (revoked, expired, "prl_deadbeef_" + "x" * 43):
        status, body = await server.call("GET", "/api/members", token=key)
        assert (status, body["error"]["code"]) == (401, "invalid_api_key")


async def test_api_keys_cannot_use_account_takeover_routes(server, signup, make_api_key):
    owner = await signup(server)
    key = await make_api_key(server, owner["access_token"])
    attempts = [("GET", "/api/keys", None), ("POST", "/api/keys", {"name": "k2"}),
                ("GET", "/api/invites", None), ("POST", "/api/invites", {"email": "x@example.test"}),
                ("PATCH", f"/api/members/{owner['user_id']}", {"role": "agent"}),
                ("DELETE", f"/api/members/{owner['user_id']}", None),
                ("GET", "/api/settings", None), ("PUT", "/api/settings", {"values": {}}),
                ("DELETE", "/api/tenant", None)]
    for method, path, body in attempts:
        status, out = await server.call(method, path, json=body, token=key)
        assert (status, out["error"]["code"]) == (403, "api_key_not_allowed"), (method, path)
    for method, path in (("GET", "/api/me"), ("POST", "/api/auth/switch"), ("POST", "/api/auth/logout")):
        status, out = await server.call(method, path, json={} if method == "POST" else None, token=key)
        assert status == 401, (method, path, out)


@pytest.fixture
async def probe_server(settings, monkeypatch):
    """A server with one extra key-friendly write route, to test scopes apart from any feature."""
    async def probe(call):
        return {"actor": call.actor.kind, "scopes": list(call.scopes)}

    spec = RouteSpec("POST", "/api/test/probe", probe, "member", "agent", True, None, None, None, 200, "probe", ())
    monkeypatch.setattr(api, "routes", [*api.routes, spec])
    srv = await start_server(settings)
    yield srv
    await srv.close()


async def test_key_scopes(probe_server, signup, make_api_key):
    owner = await signup(probe_server)
    reader = await make_api_key(probe_server, owner["access_token"], scopes=["read"])
    writer = await make_api_key(probe_server, owner["access_token"], scopes=["write"])
    status, body = await probe_server.call("POST", "/api/test/probe", token=reader)
    assert (status, body["error"]["code"]) == (403, "insufficient_scope")
    status, body = await probe_server.call("GET", "/api/members", token=reader)
    assert status == 200
    status, body = await probe_server.call("POST", "/api/test/probe", token=writer)
    assert (status, body) == (200, {"actor": "api_key", "scopes": ["write"]})
    status, body = await probe_server.call("GET", "/api/members", token=writer)
    assert (status, body["error"]["code"]) == (403, "insufficient_scope")
