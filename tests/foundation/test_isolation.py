"""Tenant isolation: tenant A, through every account route and directly as parley_app, cannot
see or change tenant B.

The two-tenant world is built once for the module (read-only for B: every case checks that B
is unchanged afterwards). To cover a new route, add a Case to CASES; each case runs as A's
owner, admin, agent and API key.
"""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass

import asyncpg
import pytest
import pytest_asyncio
from pyapp.db import _init_connection
from pyapp.security import issue_access_token
from support.accounts import create_api_key, sign_up
from support.database import admin_url
from support.server import make_settings, start_server

pytestmark = pytest.mark.asyncio(loop_scope="module")

ACTORS = ("owner", "admin", "agent", "key", "token_for_b")


@dataclass(frozen=True)
class Case:
    """One attempt on B's data: `{b.<name>}` in path/body is replaced by B's value."""
    method: str
    path: str
    body: dict | None = None


CASES = [
    Case("GET", "/api/members"),
    Case("PATCH", "/api/members/{b.owner_id}", {"role": "agent"}),
    Case("PATCH", "/api/members/{b.agent_id}", {"role": "owner"}),
    Case("DELETE", "/api/members/{b.owner_id}"),
    Case("DELETE", "/api/members/{b.agent_id}"),
    Case("GET", "/api/invites"),
    Case("DELETE", "/api/invites/{b.invite_id}"),
    Case("POST", "/api/invites/accept", {"token": "{b.invite_token}"}),
    Case("POST", "/api/invites", {"email": "new@example.test", "role": "agent", "tenant_id": "{b.tenant_id}"}),
    Case("GET", "/api/keys"),
    Case("DELETE", "/api/keys/{b.key_id}"),
    Case("POST", "/api/keys", {"name": "x", "scopes": ["read"], "tenant_id": "{b.tenant_id}"}),
    Case("GET", "/api/settings"),
    Case("PUT", "/api/settings", {"values": {"b.secret": "pwned"}, "tenant_id": "{b.tenant_id}"}),
    Case("PUT", "/api/settings", {"values": {"b.setting": None}}),  # same key as B's: A's namespace only
    Case("GET", "/api/audit"),
    Case("GET", "/api/audit?actor={b.owner_id}"),
    Case("GET", "/api/audit?before={b.audit_after}&limit=200"),
    Case("POST", "/api/auth/switch", {"tenant_id": "{b.tenant_id}"}),
    Case("GET", "/api/me"),
    Case("GET", "/api/tenants"),
]


class World:
    def __init__(self):
        self.a: dict = {}
        self.b: dict = {}
        self.b_secrets: list[str] = []


async def _snapshot_b(conn, tenant_id) -> dict:
    """Everything of B an attack could change, read as the superuser."""
    q = {
        "members": "SELECT user_id, role FROM parley.members WHERE tenant_id = $1 ORDER BY 1",
        "invites": "SELECT id, revoked_at, accepted_at FROM parley.invites WHERE tenant_id = $1 ORDER BY 1",
        "keys": "SELECT id, name, revoked_at, scopes FROM parley.api_keys WHERE tenant_id = $1 ORDER BY 1",
        "settings": "SELECT key, value FROM parley.tenant_settings WHERE tenant_id = $1 ORDER BY 1",
        "tenant": "SELECT name, deleted_at, plan FROM parley.tenants WHERE id = $1",
        "audit": "SELECT count(*) FROM parley.audit_log WHERE tenant_id = $1",
    }
    return {k: [tuple(r) for r in await conn.fetch(sql, tenant_id)] for k, sql in q.items()}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(pg_server, database_stock):
    dbname = database_stock.take()
    settings = make_settings(admin_url(pg_server, dbname))
    server = await start_server(settings)
    admin_conn = await asyncpg.connect(settings.admin_url)
    await _init_connection(admin_conn)
    w = World()
    w.settings, w.server, w.admin_conn = settings, server, admin_conn
    for side in ("a", "b"):
        owner = await sign_up(server, plan="pro")
        admin = await sign_up(server, join=owner, role="admin")
        agent = await sign_up(server, join=owner, role="agent")
        key = await create_api_key(server, owner["access_token"])
        _status, invite = await server.call("POST", "/api/invites", json={"email": f"{side}-new@example.test"},
                                            token=owner["access_token"])
        _status, keys = await server.call("GET", "/api/keys", token=owner["access_token"])
        _status, _ = await server.call("PUT", "/api/settings", json={"values": {f"{side}.setting": side}},
                                       token=owner["access_token"])
        getattr(w, side).update(
            owner=owner, admin=admin, agent=agent, key=key, tenant_id=owner["tenant_id"],
            owner_id=owner["user_id"], admin_id=admin["user_id"], agent_id=agent["user_id"],
            invite_id=invite["id"], invite_token=invite["token"], key_id=keys["keys"][0]["id"],
            emails=[owner["email"], admin["email"], agent["email"]])
    w.b["audit_after"] = await admin_conn.fetchval("SELECT max(id) + 1 FROM parley.audit_log")
    w.b_secrets = [w.b[k] for k in ("tenant_id", "owner_id", "admin_id", "agent_id", "invite_id", "key_id")]
    w.b_secrets += w.b["emails"] + ["b.setting"]
    # A token signed with the right secret for A's owner and session, naming tenant B: membership is
    # checked per request, so even a token minted for the wrong tenant gets nothing.
    _status, me = await server.call("GET", "/api/me", token=w.a["owner"]["access_token"])
    w.a["token_for_b"], _ = issue_access_token(settings.secret_key, user_id=w.a["owner_id"],
                                               tenant_id=w.b["tenant_id"], session_id=me["session_id"], ttl=300)
    yield w
    await admin_conn.close()
    await server.close()
    database_stock.give_back(dbname)


def _fill(value, b: dict):
    if isinstance(value, str):
        for k, v in b.items():
            if isinstance(v, (str, int)):
                value = value.replace(f"{{b.{k}}}", str(v))
        return value
    if isinstance(value, dict):
        return {k: _fill(v, b) for k, v in value.items()}
    return value


def _token(w: World, actor: str) -> str:
    if actor in ("owner", "admin", "agent"):
        return w.a[actor]["access_token"]
    return w.a[actor]


@pytest.mark.parametrize("actor", ACTORS)
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.method} {c.path}")
async def test_a_cannot_reach_b_through_the_api(world, case, actor):
    before = await _snapshot_b(world.admin_conn, uuid.UUID(world.b["tenant_id"]))
    status, body = await world.server.call(case.method, _fill(case.path, world.b), json=_fill(case.body, world.b),
                                           token=_token(world, actor))
    assert status < 500, body
    assert status in (200, 401, 403, 404, 422), (status, body)
    if case.method in ("PATCH", "DELETE") or "{b." in json.dumps(case.body or {}):
        assert status != 200 and status != 204, (status, body)
    text = json.dumps(body)
    leaked = [s for s in world.b_secrets if s in text]
    assert not leaked, (status, body)
    after = await _snapshot_b(world.admin_conn, uuid.UUID(world.b["tenant_id"]))
    assert after == before


async def test_b_still_works(world):
    """The attacks above left B fully usable (guards against a vacuous pass)."""
    status, body = await world.server.call("GET", "/api/members", token=world.b["owner"]["access_token"])
    assert status == 200 and len(body["members"]) == 3
    status, body = await world.server.call("GET", "/api/keys", token=world.b["admin"]["access_token"])
    assert status == 200 and body["keys"][0]["revoked_at"] is None


TENANT_TABLES = """
SELECT c.oid::regclass::text AS name
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = 'parley' AND c.relkind IN ('r', 'p') AND NOT c.relispartition
   AND EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped)
   AND has_any_column_privilege('parley_app', c.oid, 'SELECT')
 ORDER BY 1
"""


async def _app_conn(w: World):
    conn = await asyncpg.connect(w.settings.app_url)
    await _init_connection(conn)
    return conn


async def test_app_role_without_tenant_sees_nothing(world):
    tables = [r["name"] for r in await world.admin_conn.fetch(TENANT_TABLES)] + ["parley.tenants", "parley.users"]
    assert "parley.members" in tables and "parley.audit_log" in tables
    conn = await _app_conn(world)
    try:
        for table in tables:
            cols = await world.admin_conn.fetch(
                "SELECT attname FROM pg_attribute WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped "
                "AND has_column_privilege('parley_app', attrelid, attnum, 'SELECT') LIMIT 1", table)
            count = await conn.fetchval(f"SELECT count(*) FROM (SELECT {cols[0]['attname']} FROM {table}) x")
            assert count == 0, table
    finally:
        await conn.close()


async def test_app_role_with_tenant_a_sees_only_a(world):
    a, b = uuid.UUID(world.a["tenant_id"]), uuid.UUID(world.b["tenant_id"])
    conn = await _app_conn(world)
    try:
        async with conn.transaction():
            await conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(a))
            for (table,) in await world.admin_conn.fetch(TENANT_TABLES):
                assert await conn.fetchval(f"SELECT count(*) FROM {table} WHERE tenant_id <> $1", a) == 0, table
            assert await conn.fetchval("SELECT count(*) FROM parley.members") == 3
            assert await conn.fetchval("SELECT count(*) FROM parley.tenants WHERE id = $1", b) == 0
            b_users = [uuid.UUID(world.b[k]) for k in ("owner_id", "admin_id", "agent_id")]
            assert await conn.fetchval("SELECT count(*) FROM parley.users WHERE id = ANY($1)", b_users) == 0
    finally:
        await conn.close()


WRITES = [
    ("UPDATE parley.members SET role = 'agent' WHERE tenant_id = $1", "0 rows"),
    ("DELETE FROM parley.members WHERE tenant_id = $1", "0 rows"),
    ("UPDATE parley.api_keys SET revoked_at = now() WHERE tenant_id = $1", "0 rows"),
    ("UPDATE parley.invites SET revoked_at = now() WHERE tenant_id = $1", "0 rows"),
    ("DELETE FROM parley.tenant_settings WHERE tenant_id = $1", "0 rows"),
    ("UPDATE parley.tenant_settings SET value = '\"x\"' WHERE tenant_id = $1", "0 rows"),
    ("UPDATE parley.tenants SET name = 'pwned' WHERE id = $1", "0 rows"),
    ("INSERT INTO parley.tenant_settings (tenant_id, key, value) VALUES ($1, 'evil', '1')", "error"),
    ("INSERT INTO parley.api_keys (tenant_id, name, prefix, key_hash, scopes) VALUES ($1, 'x', 'p', '\\x00', '{read}')",
     "error"),
    ("INSERT INTO parley.members (tenant_id, user_id, role) SELECT $1, user_id, 'owner' FROM parley.members", "error"),
    ("UPDATE parley.tenant_settings SET tenant_id = $1", "error"),  # moving A's row to B: WITH CHECK
    ("UPDATE parley.audit_log SET action = 'x' WHERE tenant_id = $1", "error"),
    ("DELETE FROM parley.audit_log WHERE tenant_id = $1", "error"),
    ("INSERT INTO parley.audit_log (tenant_id, actor_kind, action) VALUES ($1, 'system', 'x')", "error"),
]


@pytest.mark.parametrize("sql,expect", WRITES, ids=[w[0][:60] for w in WRITES])
async def test_app_role_cannot_write_b(world, sql, expect):
    a, b = uuid.UUID(world.a["tenant_id"]), uuid.UUID(world.b["tenant_id"])
    before = await _snapshot_b(world.admin_conn, b)
    conn = await _app_conn(world)
    try:
        tx = conn.transaction()
        await tx.start()
        try:
            await conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(a))
            if expect == "error":
                with pytest.raises(asyncpg.PostgresError) as info:
                    await conn.execute(sql, b)
                assert info.value.sqlstate in ("42501", "23514", "PT409"), info.value
            else:
                result = await conn.execute(sql, b)
                assert result.endswith(" 0"), result
        finally:
            await tx.rollback()
    finally:
        await conn.close()
    assert await _snapshot_b(world.admin_conn, b) == before
