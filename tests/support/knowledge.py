"""Knowledge, assistant and jobs tests: a tenant with a chatbot arranged as the superuser, its
app/jobs pools, the retrieval corpus. The directories' conftest.py pick `tenant` and
`no_ambient_embedder` from here; the local model is `support.embedder`."""
from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
from pyapp.db import Actor, create_pool, tenant_tx

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "tests" / "knowledge" / "corpus"


class Tenant:
    """A tenant with one chatbot, arranged as the superuser; writes as the app or jobs role."""

    def __init__(self, settings, owner_conn, tenant_id, chatbot_id):
        self.settings = settings
        self.owner = owner_conn
        self.id = tenant_id
        self.chatbot_id = chatbot_id
        self.pools = {}

    async def pool(self, role: str = "app"):
        if role not in self.pools:
            url = self.settings.app_url if role == "app" else self.settings.jobs_url
            self.pools[role] = await create_pool(url, min_size=1, max_size=4)
        return self.pools[role]

    async def tx(self, kind: str = "service"):
        pool = await self.pool("jobs" if kind == "system" else "app")
        return tenant_tx(pool, Actor(tenant_id=self.id, kind=kind, actor_id="test"))

    async def close(self):
        for pool in self.pools.values():
            await pool.close()


async def make_tenant(settings, owner_conn, *, language: str = "en", config: dict | None = None,
                      plan: str = "free") -> Tenant:
    tenant_id = await owner_conn.fetchval(
        "INSERT INTO parley.tenants (slug, name, plan) VALUES ($1, 'Test', $2) RETURNING id",
        f"t-{uuid.uuid4().hex[:12]}", plan)
    chatbot_id = await owner_conn.fetchval(
        "INSERT INTO parley.chatbots (tenant_id, name, config) VALUES ($1, 'Bot', $2) RETURNING id",
        tenant_id, {"language": language, **(config or {})})
    return Tenant(settings, owner_conn, tenant_id, chatbot_id)


@pytest.fixture
async def tenant(settings, owner_conn):
    t = await make_tenant(settings, owner_conn)
    yield t
    await t.close()


def corpus_documents() -> list[tuple[str, str]]:
    return sorted((p.stem, p.read_text()) for p in (CORPUS / "docs").glob("*.md"))


@pytest.fixture(autouse=True)
def no_ambient_embedder(monkeypatch):
    """Tests choose their embedder explicitly; none is picked up from the environment."""
    from pyapp.knowledge import ingest

    monkeypatch.setattr(ingest, "_EMBEDDER", False)
    os.environ.pop("PARLEY_EMBED_WORKER", None)
