"""Rows for SQL-level tests, made in SQL through the product's own functions (no HTTP server,
no password hashing): `rows.tenant()` signs a person up with a workspace (parley.sign_up, as the
server does after hashing), `rows.member()` adds someone with a session (as the schema owner:
the invite routes have their own tests), `rows.chatbot()` is parley.create_chatbot as an admin,
`rows.conversation()` parley.start_conversation as the server, `rows.message()`
parley.post_message as the conversation's visitor. Each is committed, so every session sees it;
the app's steps run on a parley_app pool like the server's.

`tenant_conn` is a parley_app connection inside a transaction that `parley.begin_request` has
bound to a freshly made tenant's owner (`sql_tenant`); it is rolled back after the test.
"""
from __future__ import annotations

import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass

import asyncpg
import pytest
from pyapp.db import Actor, create_pool, tenant_tx
from pyapp.security import issue_access_token, new_opaque_token

from support.server import TEST_SECRET

VISITOR_IP = "203.0.113.7"
REFRESH_TTL = 3600


@dataclass(frozen=True)
class Person:
    """A member of a workspace with a live session (and an access token the server accepts)."""
    user_id: uuid.UUID
    tenant_id: uuid.UUID
    session_id: uuid.UUID
    email: str
    role: str

    @property
    def actor(self) -> Actor:
        return Actor(tenant_id=self.tenant_id, kind="user", actor_id=str(self.user_id), session_id=self.session_id,
                     min_role="agent")

    def access_token(self, secret: str = TEST_SECRET, ttl: int = 900) -> str:
        return issue_access_token(secret, user_id=self.user_id, tenant_id=self.tenant_id,
                                  session_id=self.session_id, ttl=ttl)[0]


class Rows:
    def __init__(self, pool: asyncpg.Pool, owner_conn: asyncpg.Connection):
        self.pool = pool  # parley_app, as the server's
        self.owner_conn = owner_conn  # the schema owner, for what no app function does (a plan)

    async def tenant(self, plan: str = "free", name: str = "Test User") -> Person:
        """A new workspace and its owner (parley.sign_up); `plan` moves it to another plan."""
        slug = f"t-{uuid.uuid4().hex[:12]}"
        email = f"owner-{uuid.uuid4().hex[:12]}@example.test"
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT parley.begin_auth_request(NULL, NULL, NULL, NULL)")
            session = await conn.fetchval("SELECT parley.sign_up($1, 'not-a-hash', $2, $3, $4, $5, $6)",
                                          email, name, f"Workspace {slug}", slug, new_opaque_token()[1], REFRESH_TTL)
        owner = Person(uuid.UUID(str(session["user"]["id"])), uuid.UUID(str(session["tenant"]["id"])),
                       uuid.UUID(str(session["session_id"])), email, "owner")
        if plan != "free":
            await self.owner_conn.execute("UPDATE parley.tenants SET plan = $1 WHERE id = $2", plan, owner.tenant_id)
        return owner

    async def member(self, tenant: Person, role: str = "agent", name: str = "Test User") -> Person:
        """Someone else in `tenant`'s workspace with `role`, signed in there (no plan check: the
        invite routes have their own tests)."""
        email = f"{role}-{uuid.uuid4().hex[:12]}@example.test"
        async with self.owner_conn.transaction():
            user_id = await self.owner_conn.fetchval(
                "INSERT INTO parley.users (email, name, password_hash) VALUES ($1, $2, 'not-a-hash')"
                " RETURNING id", email, name)
            await self.owner_conn.execute("INSERT INTO parley.members (tenant_id, user_id, role) VALUES ($1, $2, $3)",
                                          tenant.tenant_id, user_id, role)
            session_id = await self.owner_conn.fetchval(
                "SELECT (parley.open_session($1, $2, $3, $4) ->> 'session_id')::uuid", user_id,
                new_opaque_token()[1], REFRESH_TTL, tenant.tenant_id)
        return Person(user_id, tenant.tenant_id, session_id, email, role)

    async def chatbot(self, admin: Person, name: str = "Helper", origins=(), config: dict | None = None) -> dict:
        """parley.create_chatbot as `admin` (the plan's chatbot limit applies)."""
        async with tenant_tx(self.pool, admin.actor) as conn:
            row = await conn.fetchrow("SELECT id, name, public_key, allowed_origins, config"
                                      " FROM parley.create_chatbot($1, $2, $3)", name, list(origins), config or {})
        return dict(row)

    async def conversation(self, tenant_id, chatbot_id, ip: str = VISITOR_IP) -> uuid.UUID:
        """A visitor opens the widget: parley.start_conversation as the server does it."""
        async with tenant_tx(self.pool, Actor(tenant_id=tenant_id, kind="service", min_role="visitor")) as conn:
            row = await conn.fetchrow(
                "SELECT * FROM parley.start_conversation($1, $2, 'https://shop.test/p', NULL, 'UA', 'en-US',"
                " $3::inet, 'de')", uuid.UUID(str(chatbot_id)), uuid.uuid4(), ip)
        return row["id"]

    async def message(self, tenant_id, conversation_id, body: str, client_id: str | None = None,
                      ip: str = VISITOR_IP) -> asyncpg.Record:
        """The conversation's visitor says `body`: parley.post_message as that visitor."""
        actor = Actor(tenant_id=tenant_id, kind="visitor", actor_id=str(conversation_id), ip=ip, min_role="visitor")
        async with tenant_tx(self.pool, actor) as conn:
            return await conn.fetchrow("SELECT * FROM parley.post_message($1, 'visitor', $2, $3)",
                                       conversation_id, body, client_id)


@pytest.fixture
async def app_pool(settings):
    """A parley_app pool on the test database, like the server's."""
    pool = await create_pool(settings.app_url, min_size=1)
    yield pool
    await pool.close()


@pytest.fixture
async def connect(settings):
    """`await connect()`: a parley_app connection of its own, as the server's (or the admin's with
    `connect(settings.admin_url)`), for tests that interleave sessions; closed after the test."""
    from pyapp.db import _init_connection

    opened: list[asyncpg.Connection] = []

    async def open_one(url: str | None = None) -> asyncpg.Connection:
        conn = await asyncpg.connect(url or settings.app_url)
        await _init_connection(conn)
        opened.append(conn)
        return conn

    yield open_one
    for conn in opened:
        await conn.close()


@pytest.fixture
def rows(app_pool, owner_conn) -> Rows:
    return Rows(app_pool, owner_conn)


@pytest.fixture
async def sql_tenant(rows) -> Person:
    """A fresh workspace's owner (see Rows.tenant)."""
    return await rows.tenant()


@asynccontextmanager
async def bound(conn: asyncpg.Connection, person: Person):
    """A transaction on `conn` that parley.begin_request has bound to `person` in their tenant,
    rolled back when the block ends (whatever happened in it)."""
    tx = conn.transaction()
    await tx.start()
    try:
        actor = person.actor
        await conn.fetchval("SELECT parley.begin_request($1, $2, $3, $4, $5, $6, $7)", actor.tenant_id, actor.kind,
                            actor.actor_id, actor.session_id, actor.ip, actor.request_id, actor.min_role)
        yield conn
    finally:
        await tx.rollback()


@pytest.fixture
async def tenant_conn(settings, sql_tenant):
    """A parley_app connection in a transaction begun (parley.begin_request) as `sql_tenant`'s
    owner; rolled back after the test."""
    from pyapp.db import _init_connection

    conn = await asyncpg.connect(settings.app_url)
    try:
        await _init_connection(conn)
        async with bound(conn, sql_tenant):
            yield conn
    finally:
        await conn.close()
