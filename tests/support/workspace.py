"""Helpers for the conversation tests: a workspace (tenant + owner) reached through the real
server, and tenant transactions on the server's own parley_app pool for SQL-level steps
(visitor messages, concurrency) exactly as the realtime code makes them."""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import pytest

from pyapp.context import POOL
from pyapp.db import Actor, tenant_tx

VISITOR_IP = "203.0.113.7"


@dataclass
class Workspace:
    server: object
    owner: dict
    agents: list[dict] = field(default_factory=list)

    @property
    def tenant_id(self) -> uuid.UUID:
        return uuid.UUID(self.owner["tenant_id"])

    @property
    def token(self) -> str:
        return self.owner["access_token"]

    @property
    def pool(self):
        return self.server.app[POOL]

    async def call(self, method: str, path: str, *, json=None, token: str | None = None):
        return await self.server.call(method, path, json=json, token=token or self.token)

    def tx(self, kind: str = "service", actor_id: str | None = None, ip: str | None = None):
        return tenant_tx(self.pool, Actor(tenant_id=self.tenant_id, kind=kind, actor_id=actor_id, ip=ip,
                                          min_role="visitor"))

    def visitor_tx(self, conversation_id, ip: str = VISITOR_IP):
        return self.tx("visitor", str(conversation_id), ip)

    async def chatbot(self, name: str = "Helper", **extra) -> dict:
        status, body = await self.call("POST", "/api/chatbots", json={"name": name, **extra})
        assert status == 201, body
        return body

    async def start(self, chatbot_id, ip: str = VISITOR_IP) -> uuid.UUID:
        """A visitor opens the widget: start_conversation as the server does it."""
        async with self.tx() as conn:
            row = await conn.fetchrow(
                "SELECT * FROM parley.start_conversation($1, $2, 'https://shop.test/p', NULL, 'UA', 'en-US', $3::inet, 'de')",
                uuid.UUID(str(chatbot_id)), uuid.uuid4(), ip)
        return row["id"]

    async def visitor_says(self, conversation_id, body: str, client_id: str | None = None, ip: str = VISITOR_IP):
        async with self.visitor_tx(conversation_id, ip) as conn:
            return await conn.fetchrow("SELECT * FROM parley.post_message($1, 'visitor', $2, $3)",
                                       conversation_id, body, client_id)

    async def add_agent(self, signup, role: str = "agent") -> dict:
        agent = await signup(self.server, join=self.owner, role=role)
        self.agents.append(agent)
        return agent


@pytest.fixture
def make_workspace(server, signup, owner_conn):
    async def make(plan: str = "free", agents: int = 0) -> Workspace:
        owner = await signup(server)
        ws = Workspace(server, owner)
        if plan != "free":
            await owner_conn.execute("UPDATE parley.tenants SET plan = $1 WHERE id = $2", plan, ws.tenant_id)
        for _ in range(agents):
            await ws.add_agent(signup)
        return ws
    return make


@pytest.fixture
async def ws(make_workspace) -> Workspace:
    """A free-plan workspace with its owner and one agent."""
    return await make_workspace(agents=1)


async def override_limits(owner_conn, tenant_id, **values):
    """Set (or with None, clear) the tenant's plan-limit overrides in parley.tenant_limits."""
    cols = ", ".join(values)
    params = ", ".join(f"${i + 2}" for i in range(len(values)))
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in values)
    await owner_conn.execute(
        f"INSERT INTO parley.tenant_limits (tenant_id, {cols}) VALUES ($1, {params}) "
        f"ON CONFLICT (tenant_id) DO UPDATE SET {updates}", tenant_id, *values.values())
