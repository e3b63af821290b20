"""Retrieval quality on a small help-centre corpus: hybrid hit@3 must be at least 0.9.

30 documents, 42 questions phrased the way visitors ask (often without the documents'
words); each names the document that answers it. The FTS-only figure is printed beside the
hybrid one (docs/knowledge.md records both).
"""
from support.knowledge import corpus_documents
from tests.knowledge.pydocs import evaluation as ev


async def test_hybrid_hit_at_3(tenant, local_embedder):
    pool = await tenant.pool()
    names = await ev.ingest_texts(pool, tenant.id, tenant.chatbot_id, ev.help_documents(), local_embedder)
    questions = [q for q in ev.help_questions() if q.answerable]
    assert len(questions) >= 40 and len(corpus_documents()) == 30
    async with await tenant.tx() as conn:
        assert await conn.fetchval("SELECT parley.embedding_backlog()") == 0

    page = ev.page_by_document(names)
    figures = {}
    for mode, embedder in (("hybrid", local_embedder), ("fts", None)):
        report = await ev.evaluate(pool, tenant.id, tenant.chatbot_id, questions, "", embedder, page=page)
        figures[mode] = sum(1 for o in report.outcomes if (o.rank() or 99) <= 3) / len(questions)
        misses = [(o.question.text, o.question.pages, o.pages[:3]) for o in report.outcomes if (o.rank() or 99) > 3]
        if mode == "hybrid":
            hybrid_misses = misses
    print(f"\nretrieval hit@3: hybrid={figures['hybrid']:.3f} fts_only={figures['fts']:.3f} ({len(questions)} questions)")
    for miss in hybrid_misses:
        print("  hybrid miss:", miss)
    assert figures["hybrid"] >= 0.9, hybrid_misses
    assert figures["hybrid"] >= figures["fts"]
