"""Fixtures for knowledge, assistant and jobs tests: a tenant with a chatbot, app/jobs pools,
and the local embedding model loaded once per test session."""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest

from pyapp.db import Actor, create_pool, tenant_tx

CORPUS = Path(__file__).parent / "corpus"
ROOT = Path(__file__).resolve().parent.parent.parent


_EMBED_SERVER = """
import json, sys
from pyapp.providers.embeddings import LocalMiniLMEmbedder
model = LocalMiniLMEmbedder()
model._encode(["warm up"])
print(json.dumps({"model": model.model}), flush=True)
for line in sys.stdin:
    print(json.dumps(model._encode(json.loads(line))), flush=True)
"""


class SubprocessEmbedder:
    """The local MiniLM embedder (providers' LocalMiniLMEmbedder) in a child process.

    The model loads once per test session, and torch never enters the pytest process, so
    tests elsewhere that time a cold first model load are unaffected by test order."""

    def __init__(self):
        self.proc = subprocess.Popen([sys.executable, "-c", _EMBED_SERVER], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, cwd=ROOT)
        self.model = json.loads(self.proc.stdout.readline())["model"]
        self.lock = threading.Lock()

    def _call(self, texts: list[str]) -> list[list[float]]:
        with self.lock:
            self.proc.stdin.write(json.dumps(texts) + "\n")
            self.proc.stdin.flush()
            return json.loads(self.proc.stdout.readline())

    async def embed(self, texts):
        return await asyncio.to_thread(self._call, list(texts))

    async def embed_queries(self, texts):
        return await self.embed(texts)

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(10)


@pytest.fixture(scope="session")
def local_embedder():
    """all-MiniLM-L6-v2 from the package, loaded once per test session (in a child process)."""
    embedder = SubprocessEmbedder()
    yield embedder
    embedder.close()


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
