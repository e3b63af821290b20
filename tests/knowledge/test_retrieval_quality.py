"""Retrieval quality on a small help-centre corpus: hybrid hit@3 must be at least 0.9.

30 documents, 42 questions phrased the way visitors ask (often without the documents'
words); each names the document that answers it. The FTS-only figure is printed beside the
hybrid one (docs/knowledge.md records both).
"""
import json

from pyapp.knowledge import extract, ingest
from support.knowledge import CORPUS, corpus_documents


async def _load_corpus(tenant, embedder) -> dict:
    """Ingest every corpus document as its own source; returns document_id → corpus name."""
    names = {}
    async with await tenant.tx() as conn:
        for name, text in corpus_documents():
            source = await conn.fetchrow("SELECT * FROM parley.create_knowledge_source($1, 'file', $2, NULL, $3)",
                                         tenant.chatbot_id, name, f"{name}.md")
            doc = extract.extract(text.encode(), filename=f"{name}.md")
            result = await ingest.ingest_document(conn, source["id"], f"{name}.md", doc)
            names[result["document_id"]] = name
    pool = await tenant.pool()
    await ingest.drain_embeddings(pool, actor_kind="service", embedder=embedder, until_empty=True, max_batches=100)
    return names


async def _hit_rate(tenant, names, questions, embedder, k=3) -> tuple[float, list]:
    hits, misses = 0, []
    async with await tenant.tx() as conn:
        for item in questions:
            vector = (await embedder.embed_queries([item["q"]]))[0] if embedder else None
            found = await conn.fetch("SELECT document_id FROM parley.knowledge_search($1, $2, $3, $4)",
                                     tenant.chatbot_id, item["q"], k, vector)
            docs = [names[str(r["document_id"])] for r in found]
            if item["doc"] in docs:
                hits += 1
            else:
                misses.append((item["q"], item["doc"], docs))
    return hits / len(questions), misses


async def test_hybrid_hit_at_3(tenant, local_embedder):
    names = await _load_corpus(tenant, local_embedder)
    questions = json.loads((CORPUS / "questions.json").read_text())
    assert len(questions) >= 40 and len(corpus_documents()) == 30
    async with await tenant.tx() as conn:
        assert await conn.fetchval("SELECT parley.embedding_backlog()") == 0

    hybrid, hybrid_misses = await _hit_rate(tenant, names, questions, local_embedder)
    fts, fts_misses = await _hit_rate(tenant, names, questions, None)
    print(f"\nretrieval hit@3: hybrid={hybrid:.3f} fts_only={fts:.3f} ({len(questions)} questions)")
    for miss in hybrid_misses:
        print("  hybrid miss:", miss)
    assert hybrid >= 0.9, hybrid_misses
    assert hybrid >= fts
