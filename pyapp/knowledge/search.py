"""Knowledge search: the passages a question is grounded in (parley.knowledge_search).

Used by the "try a question" endpoint and by the assistant. The query is embedded before the
search transaction opens, and only when the chatbot has vectors at all.
"""

from __future__ import annotations

import logging
import uuid

from pyapp.knowledge.ingest import embed_query

log = logging.getLogger("parley.knowledge")

# NULL: no such chatbot; false: its vectors do not take part yet (none, or most passages still
# wait for theirs: parley.knowledge_uses_vectors), so the query is not embedded at all: no model
# load, no latency, full text only.
HAS_VECTORS = "SELECT parley.knowledge_uses_vectors(b.id) FROM parley.chatbots b WHERE b.id = $1"


async def query_vector(embedder, query: str):
    """The query's embedding, or None (no embedder, or it failed: retrieval falls back to full text)."""
    if embedder is None:
        return None
    try:
        return await embed_query(embedder, query)
    except Exception as exc:  # the embedder failing must not take retrieval down
        log.warning("query embedding failed, full text only: %s", exc)
        return None


async def search_passages(
    conn, chatbot_id: uuid.UUID, query: str, k: int, vector=None, model: str | None = None
) -> tuple[list[dict], str]:
    """knowledge_search, hybrid when a query vector is given (embed it before opening the transaction)."""
    found = await conn.fetch(
        "SELECT * FROM parley.knowledge_search($1, $2, $3, $4, $5)",
        chatbot_id,
        query,
        k,
        vector,
        model if vector is not None else None,
    )
    return [dict(r) for r in found], ("hybrid" if vector is not None else "fts")


def answerable(passages: list[dict]) -> bool:
    """Whether the passages answer the question at all: the decline rule of knowledge_search
    (parley.knowledge_answerable), the same on every row. No passage: decline."""
    return bool(passages) and bool(passages[0].get("answerable"))
