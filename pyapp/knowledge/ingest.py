"""Knowledge ingestion: documents → chunks in SQL (checksums decide what to re-embed), and
the embedding queue drain shared by `parley jobs` and the dev worker in `parley serve`.

Text extraction and chunking are the providers' (pyapp.knowledge.extract / .chunking);
this module decides what becomes a document, writes it with parley.ingest_document, and
turns queued chunks into vectors with the configured embedder.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from typing import Any

import asyncpg
from pgvector import Vector

from pyapp.db import Actor, tenant_tx

log = logging.getLogger("parley.knowledge")

EMBED_BATCH = 32
# Back-pressure: imports are refused (API, 429) or paused (crawls) while a tenant has more
# chunks than this waiting for an embedding.
MAX_BACKLOG = int(os.environ.get("PARLEY_EMBED_MAX_BACKLOG", "20000"))
MAX_CHUNKS_PER_DOCUMENT = 2000


# ----------------------------------------------------------------------------- embedder

_EMBEDDER: Any = None


def embedding_model_name() -> str | None:
    """The model that makes vectors in this process (recorded on every chunk); None when off."""
    from pyapp.providers.embeddings import configured_model_name

    return configured_model_name()


def get_embedder():
    """The process-wide embedder (the local model loads once), or None when embeddings are off."""
    global _EMBEDDER
    if _EMBEDDER is None:
        from pyapp.providers.embeddings import embedder_from_env

        _EMBEDDER = embedder_from_env() or False
    return _EMBEDDER or None


def set_embedder(embedder) -> None:
    """Tests and the benchmark install an embedder explicitly (None = off)."""
    global _EMBEDDER
    _EMBEDDER = embedder if embedder is not None else False


def passage_text(title: str, heading_path: str, text: str) -> str:
    """What is embedded for a chunk: its title and heading path give the text its context."""
    head = " > ".join(p for p in (title, heading_path) if p)
    return f"{head}\n{text}" if head else text


async def embed_query(embedder, query: str):
    return (await embedder.embed_queries([query]))[0]


# ----------------------------------------------------------------------------- documents

_NO_WINDOW = object()
_WINDOW: Any = _NO_WINDOW


def passage_window():
    """The embedding model's window (pyapp.providers.embeddings.passage_window), looked up once."""
    global _WINDOW
    if _WINDOW is _NO_WINDOW:
        from pyapp.providers.embeddings import passage_window as configured

        _WINDOW = configured()
    return _WINDOW


def chunk_document(doc, window=_NO_WINDOW) -> list[dict]:
    """[{text, heading_path}] for parley.ingest_document, from an extracted Document. With an
    embedding window, every passage fits it as embedded (title and heading path included)."""
    from pyapp.knowledge.chunking import chunk_document as split
    from pyapp.knowledge.chunking import fit_window

    chunks = split(doc)
    window = passage_window() if window is _NO_WINDOW else window
    if window is not None:
        chunks = fit_window(
            chunks,
            lambda texts: window.tokens(texts),
            window.limit,
            lambda c: passage_text(doc.title or "", " > ".join(c.heading_path), c.text),
        )
    return [{"text": c.text, "heading_path": " > ".join(c.heading_path)} for c in chunks[:MAX_CHUNKS_PER_DOCUMENT]]


async def ingest_document(conn: asyncpg.Connection, source_id: uuid.UUID, doc_key: str, doc) -> dict:
    """Write one extracted document of a source (inside the caller's tenant transaction)."""
    chunks = await asyncio.to_thread(chunk_document, doc)  # a 10 MB document: over a second of CPU, off the loop
    return await conn.fetchval(
        "SELECT parley.ingest_document($1, $2, $3, $4, $5)",
        source_id,
        doc_key,
        doc.url,
        (doc.title or "")[:500],
        chunks,
    )


async def backlog(conn: asyncpg.Connection) -> int:
    return await conn.fetchval("SELECT parley.embedding_backlog()")


# ----------------------------------------------------------------------------- queue


def _actor(tenant_id: uuid.UUID, actor_kind: str) -> Actor:
    return Actor(tenant_id=tenant_id, kind=actor_kind, actor_id="embedder")


async def drain_tenant(
    pool: asyncpg.Pool, tenant_id: uuid.UUID, embedder, *, actor_kind: str, batch: int = EMBED_BATCH
) -> int:
    """Lease one batch of a tenant's queue, embed it outside any transaction, store it."""
    async with tenant_tx(pool, _actor(tenant_id, actor_kind)) as conn:
        jobs = await conn.fetch("SELECT * FROM parley.claim_embedding_jobs($1)", batch)
    if not jobs:
        return 0
    ids = [j["chunk_id"] for j in jobs]
    try:
        vectors = await embedder.embed([passage_text(j["title"], j["heading_path"], j["text"]) for j in jobs])
    except Exception as exc:  # provider down or refusing: back off, keep the jobs
        log.warning("embedding failed for %d chunks of tenant %s: %s", len(ids), tenant_id, exc)
        async with tenant_tx(pool, _actor(tenant_id, actor_kind)) as conn:
            await conn.execute("SELECT parley.fail_embedding_jobs($1, $2)", ids, f"{type(exc).__name__}: {exc}")
        return 0
    async with tenant_tx(pool, _actor(tenant_id, actor_kind)) as conn:
        await conn.execute(
            "SELECT parley.store_embeddings($1, $2, $3)", ids, [Vector(list(v)) for v in vectors], embedder.model
        )
    return len(ids)


async def drain_embeddings(
    pool: asyncpg.Pool, *, actor_kind: str, embedder=None, until_empty: bool = False, max_batches: int = 50
) -> int:
    """One fair pass over the tenants with due jobs (a batch each); with until_empty, passes
    repeat until the queue is empty or max_batches batches ran. Returns chunks embedded."""
    embedder = embedder or get_embedder()
    if embedder is None:
        return 0
    done, batches = 0, 0
    while batches < max_batches:
        tenants = await pool.fetch("SELECT tenant_id FROM parley.embedding_queue_tenants(100)")
        if not tenants:
            break
        progressed = 0
        for row in tenants:
            n = await drain_tenant(pool, row["tenant_id"], embedder, actor_kind=actor_kind)
            progressed += n
            batches += 1
        done += progressed
        if not progressed or not until_empty:
            break
    return done


class EmbeddingWorker:
    """The in-process queue worker of `parley serve` (dev convenience; production runs `parley jobs`)."""

    def __init__(self, pool: asyncpg.Pool, *, idle_sleep: float = 1.0):
        self.pool = pool
        self.idle_sleep = idle_sleep
        self.task: asyncio.Task | None = None
        self.wake = asyncio.Event()

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run(), name="parley-embedding-worker")

    def poke(self) -> None:
        self.wake.set()

    async def stop(self) -> None:
        if self.task:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task

    async def _run(self) -> None:
        while True:
            try:
                started = time.monotonic()
                n = await drain_embeddings(self.pool, actor_kind="service", max_batches=10)
                if n:
                    log.info("embedded %d chunks in %.0f ms", n, (time.monotonic() - started) * 1000)
                    continue
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("embedding worker pass failed")
            self.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), self.idle_sleep * 5)
