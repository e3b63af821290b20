"""The decline rule on small knowledge bases (issue 16): the demo tenant's five passages and
the tests' 30-document help centre. The rule's cosine thresholds were set on a 19,407-passage
documentation site; on a small knowledge base they sit lower (parley.knowledge_size_shift),
agreement of the two lists counts only with enough documents, and a chatbot without a
language (the `simple` configuration) ignores the stop words of the shipped languages.
"""
import json

from support.knowledge import make_tenant
from tests.knowledge.pydocs import evaluation as ev


async def _ask(tenant, embedder, question: str) -> tuple[bool, dict]:
    vector = (await embedder.embed_queries([question]))[0]
    async with await tenant.tx() as conn:
        row = await conn.fetchrow("SELECT answerable, signals FROM parley.knowledge_search($1, $2, 5, $3)",
                                  tenant.chatbot_id, question, vector)
    signals = row["signals"]
    return row["answerable"], json.loads(signals) if isinstance(signals, str) else signals


async def test_demo_answers_its_hours_and_declines_what_it_does_not_know(settings, owner_conn, local_embedder):
    from pyapp.widget.demo import DEMO_KNOWLEDGE

    demo = await make_tenant(settings, owner_conn, language="auto")  # as seeded: no language of its own
    try:
        await ev.ingest_texts(await demo.pool(), demo.id, demo.chatbot_id, [("demo", DEMO_KNOWLEDGE)], local_embedder)
        ok, signals = await _ask(demo, local_embedder, "What are your support hours?")
        # "what", "are", "your" are stop words: both remaining terms are in the "Opening hours" passage.
        assert ok and signals["coverage"] == 1 and signals["chunks"] == 5, signals
        ok, signals = await _ask(demo, local_embedder, "When are you open?")
        assert ok, signals
        for question in ("What is your phone number?", "tell me a joke", "Are you hiring?"):
            ok, signals = await _ask(demo, local_embedder, question)
            assert not ok, (question, signals)
    finally:
        await demo.close()


async def test_decline_figures_on_the_help_centre(tenant, local_embedder):
    pool = await tenant.pool()
    names = await ev.ingest_texts(pool, tenant.id, tenant.chatbot_id, ev.help_documents(), local_embedder)
    questions = ev.help_questions()
    report = await ev.evaluate(pool, tenant.id, tenant.chatbot_id, questions, "", local_embedder,
                               page=ev.page_by_document(names))
    figures = report.figures()
    print(f"\nhelp centre ({figures['answerable']}+{figures['unanswerable']} questions): {ev.line(figures)}")
    # Measured when set (both halves): declined 0.909, wrongly declined 0.048 (before the size-aware
    # rule: 1.000 and 0.286).
    assert figures["declined"] >= 0.85 and figures["wrong_declines"] <= 0.10
    assert figures["hit5"] >= 0.95


async def test_stop_words_and_size_shift(tenant):
    async with await tenant.tx() as conn:
        words = await conn.fetch("SELECT w, parley.knowledge_stop_word(w) AS stop FROM unnest($1::text[]) w",
                                 ["what", "your", "die", "de", "hours", "refund", "open"])
        assert {r["w"]: r["stop"] for r in words} == {
            "what": True, "your": True, "die": True, "de": True, "hours": False, "refund": False, "open": False}
        shifts = await conn.fetch("SELECT n, parley.knowledge_size_shift(n) AS s FROM unnest(ARRAY[1, 5, 34, 500, 20000]) n")
        values = [r["s"] for r in shifts]
        assert values == sorted(values, reverse=True) and abs(values[-1]) < 1e-9 and values[1] > 0.2
        # On the simple configuration a question keeps its content words only.
        terms = await conn.fetch("SELECT term FROM parley.knowledge_query_terms($1, 'simple', 'What are your support hours?')",
                                 tenant.chatbot_id)
        assert sorted(r["term"] for r in terms) == ["hours", "support"]
