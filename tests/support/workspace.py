"""A workspace for the conversation tests: a tenant with its owner (and agents) made in SQL
(`support.rows`: real sessions, tokens the server accepts), tenant transactions on a parley_app
pool for SQL-level steps (visitor messages, concurrency) exactly as the realtime code makes
them, and the real server for HTTP calls, started on the first call (a test that never calls
the API never starts one)."""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import pytest
from pyapp.db import Actor, tenant_tx

from support.rows import VISITOR_IP, Person, Rows
from support.server import start_server


def _as_signup(person: Person) -> dict:
    """A person in the shape of `support.accounts.sign_up`'s result."""
    return {"access_token": person.access_token(), "refresh_token": None, "tenant_id": str(person.tenant_id),
            "user_id": str(person.user_id), "email": person.email, "password": None}


@dataclass
class Workspace:
    rows: Rows
    settings: object
    owner_person: Person
    server: object = None  # the test's `server` if it has one, else started by the first call
    agents: list[dict] = field(default_factory=list)
    owner: dict = field(init=False)
    _started: list = field(default_factory=list)

    def __post_init__(self):
        self.owner = _as_signup(self.owner_person)

    @property
    def tenant_id(self) -> uuid.UUID:
        return self.owner_person.tenant_id

    @property
    def token(self) -> str:
        return self.owner["access_token"]

    @property
    def pool(self):
        return self.rows.pool

    async def api(self):
        """The real server on this test's database."""
        if self.server is None:
            self.server = await start_server(self.settings)
            self._started.append(self.server)
        return self.server

    async def call(self, method: str, path: str, *, json=None, token: str | None = None):
        return await (await self.api()).call(method, path, json=json, token=token or self.token)

    def tx(self, kind: str = "service", actor_id: str | None = None, ip: str | None = None):
        return tenant_tx(self.pool, Actor(tenant_id=self.tenant_id, kind=kind, actor_id=actor_id, ip=ip,
                                          min_role="visitor"))

    def visitor_tx(self, conversation_id, ip: str = VISITOR_IP):
        return self.tx("visitor", str(conversation_id), ip)

    async def chatbot(self, name: str = "Helper", allowed_origins=(), config: dict | None = None) -> dict:
        """parley.create_chatbot as the owner (what POST /api/chatbots runs); ids as the API gives them."""
        row = await self.rows.chatbot(self.owner_person, name, allowed_origins, config)
        return {**row, "id": str(row["id"])}

    async def start(self, chatbot_id, ip: str = VISITOR_IP) -> uuid.UUID:
        """A visitor opens the widget: start_conversation as the server does it."""
        return await self.rows.conversation(self.tenant_id, chatbot_id, ip)

    async def visitor_says(self, conversation_id, body: str, client_id: str | None = None, ip: str = VISITOR_IP):
        return await self.rows.message(self.tenant_id, conversation_id, body, client_id, ip)

    async def add_agent(self, signup=None, role: str = "agent") -> dict:
        """Another member: through the invite API with `signup` (the seat limit applies), else made in SQL."""
        if signup is not None:
            agent = await signup(await self.api(), join=self.owner, role=role)
        else:
            agent = _as_signup(await self.rows.member(self.owner_person, role))
        self.agents.append(agent)
        return agent

    async def close(self):
        for server in self._started:
            await server.close()


@pytest.fixture
async def _workspaces():
    made: list[Workspace] = []
    yield made
    for ws in made:
        await ws.close()


@pytest.fixture
def make_workspace(request, rows, settings, _workspaces):
    """`await make_workspace(plan="free", agents=0)` -> Workspace (on the test's `server`, if it has one)."""
    # Resolved here, outside the event loop: a test naming `server` shares it with its workspaces.
    server = request.getfixturevalue("server") if "server" in request.fixturenames else None

    async def make(plan: str = "free", agents: int = 0) -> Workspace:
        ws = Workspace(rows, settings, await rows.tenant(plan), server)
        _workspaces.append(ws)
        for _ in range(agents):
            await ws.add_agent()
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
