"""Signed-in people and API keys through the real API, for tests that need them.

`sign_up` / `create_api_key` are plain coroutines (usable from a server thread) calling the API
through the Python client (pyapp/client: an error answer raises ParleyError); the
`signup` / `make_api_key` fixtures hand them to tests.
"""
from __future__ import annotations

import uuid

import asyncpg
import pytest

TEST_PASSWORD = "correct horse battery staple"


async def sign_up(server, email: str | None = None, tenant: str | None = None, *, join: dict | None = None,
                  role: str = "agent", name: str = "Test User", password: str = TEST_PASSWORD,
                  plan: str | None = None) -> dict:
    """Sign up through the API. Returns access_token, refresh_token, tenant_id, user_id, email, password.

    Default: a new workspace (slug `tenant` or random) owned by the new person; `plan` moves it
    to another plan (e.g. "pro" for more seats than free's 3). With `join=<another signup
    result>`, the person instead joins that workspace with `role` (invited by that
    owner/admin) and the tokens are for it.
    """
    email = email or f"user-{uuid.uuid4().hex[:12]}@example.test"
    body = {"email": email, "password": password, "name": name}
    if join is None:
        slug = tenant or f"t-{uuid.uuid4().hex[:12]}"
        body.update(tenant_name=f"Workspace {slug}", slug=slug)
    out = await server.client().sign_up(body=body)
    if join is not None:
        invite = await server.client(join["access_token"]).create_invite(body={"email": email, "role": role})
        joiner = server.client(out["access_token"])
        await joiner.accept_invite(body={"token": invite["token"]})
        switched = await joiner.switch_tenant(body={"tenant_id": join["tenant_id"]})
        out["access_token"] = switched["access_token"]
        out["tenant"] = switched["tenant"]
    if plan is not None and join is None:
        from pyapp.context import SETTINGS

        conn = await asyncpg.connect(server.app[SETTINGS].admin_url)
        try:
            await conn.execute("UPDATE parley.tenants SET plan = $1 WHERE id = $2", plan, uuid.UUID(out["tenant"]["id"]))
        finally:
            await conn.close()
    return {"access_token": out["access_token"], "refresh_token": out["refresh_token"],
            "tenant_id": out["tenant"]["id"], "user_id": out["user"]["id"], "email": email,
            "password": password}


async def create_api_key(server, token: str, scopes=("read", "write"), name: str = "test key") -> str:
    """Create an API key as the signed-in admin/owner `token`; returns the full key."""
    out = await server.client(token).create_api_key(body={"name": name, "scopes": list(scopes)})
    return out["key"]


@pytest.fixture
def signup():
    """`await signup(server, email=None, tenant=None, join=None, role="agent")` -> dict of tokens and ids."""
    return sign_up


@pytest.fixture
def make_api_key():
    """`await make_api_key(server, access_token, scopes=("read", "write"))` -> the API key."""
    return create_api_key
