"""Billing test fixtures: workspaces reached through the real server, and SQL called on its parley_app
pool as the server calls it (service for the webhook, system for jobs, a signed-in member)."""
from __future__ import annotations

import uuid
from dataclasses import dataclass

import pytest
from pyapp.context import POOL
from pyapp.db import Actor, tenant_tx


@dataclass
class Tenant:
    server: object
    owner: dict

    @property
    def id(self) -> uuid.UUID:
        return uuid.UUID(self.owner["tenant_id"])

    @property
    def token(self) -> str:
        return self.owner["access_token"]

    def tx(self, kind: str = "service", actor_id: str | None = None, min_role: str = "visitor"):
        """A tenant transaction on the server's own pool, as the webhook (service) or jobs (system) open it."""
        return tenant_tx(self.server.app[POOL], Actor(tenant_id=self.id, kind=kind, actor_id=actor_id,
                                                      min_role=min_role))

    def member_tx(self, person: dict | None = None):
        """A transaction as a signed-in member (the owner by default), exactly as a route opens it."""
        from pyapp.context import SETTINGS
        from pyapp.security import decode_access_token

        person = person or self.owner
        claims = decode_access_token(self.server.app[SETTINGS].secret_key, person["access_token"])
        return tenant_tx(self.server.app[POOL], Actor(tenant_id=self.id, kind="user", actor_id=str(claims.user_id),
                                                      session_id=claims.session_id, min_role="agent"))

    async def call(self, method: str, path: str, **kw):
        kw.setdefault("token", self.token)
        return await self.server.call(method, path, **kw)


@pytest.fixture
def make_tenant(server, signup):
    async def make() -> Tenant:
        return Tenant(server, await signup(server))
    return make


@pytest.fixture
async def tenant(make_tenant) -> Tenant:
    return await make_tenant()


@pytest.fixture
async def jobs_pool(settings):
    """The jobs process's own login (parley_jobs), for the dunning sweep and the warnings job."""
    from pyapp.db import create_pool

    pool = await create_pool(settings.jobs_url, min_size=1, max_size=2)
    yield pool
    await pool.close()


@pytest.fixture
def jobs_tx(jobs_pool):
    """`jobs_tx(tenant_id)`: a system transaction for one tenant, as `parley jobs` opens it."""
    def open_tx(tenant_id):
        return tenant_tx(jobs_pool, Actor(tenant_id=tenant_id, kind="system", actor_id="jobs"))
    return open_tx
