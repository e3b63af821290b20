"""knowledge_search as the app role: RLS scoping, the definer full-text step (its index, its tenant
filter, under attack), term statistics, and the large-chatbot HNSW path."""
import random

from pyapp.knowledge import extract, ingest
from support.knowledge import make_tenant

FTS_STEP = """EXPLAIN (COSTS OFF)
  SELECT c.id FROM parley.knowledge_chunks c
   WHERE c.tenant_id = parley.current_tenant_id() AND c.chatbot_id = $1 AND c.tsv @@ to_tsquery('simple', 'alpha')
   ORDER BY ts_rank_cd(c.tsv, to_tsquery('simple', 'alpha'), 1) DESC LIMIT 20"""


async def _bulk(owner_conn, tenant, n):
    source = await owner_conn.fetchval(
        "INSERT INTO parley.knowledge_sources (tenant_id, chatbot_id, kind) VALUES ($1, $2, 'text') RETURNING id",
        tenant.id, tenant.chatbot_id)
    doc = await owner_conn.fetchval(
        "INSERT INTO parley.knowledge_documents (tenant_id, source_id, chatbot_id, doc_key, checksum)"
        " VALUES ($1, $2, $3, 'd', 'x') RETURNING id", tenant.id, source, tenant.chatbot_id)
    await owner_conn.execute(
        """INSERT INTO parley.knowledge_chunks (tenant_id, chatbot_id, document_id, ordinal, text, checksum, ts_config,
                                                tsv, embedding, embedding_model)
           SELECT $1, $2, $3, g, 'alpha beta ' || g, md5(g::text), 'simple', to_tsvector('simple', 'alpha beta ' || g),
                  (SELECT array_agg(random() - 0.5) FROM generate_series(1, 384) WHERE g > 0)::vector, 'random'
             FROM generate_series(1, $4::int) g""", tenant.id, tenant.chatbot_id, doc, n)
    await owner_conn.execute("ANALYZE parley.knowledge_chunks")


async def test_rls_scopes_search_and_plan_uses_the_chatbot_index(settings, owner_conn, tenant):
    other = await make_tenant(settings, owner_conn)
    await _bulk(owner_conn, tenant, 800)
    await _bulk(owner_conn, other, 800)
    async with await tenant.tx() as conn:
        plan = "\n".join(r[0] for r in await conn.fetch(FTS_STEP, tenant.chatbot_id))
        assert "knowledge_chunks__tenant_id_chatbot_id_idx" in plan, plan
        assert "Seq Scan" not in plan, plan
        assert len(await conn.fetch("SELECT * FROM parley.knowledge_search($1, 'alpha', 5)", tenant.chatbot_id)) == 5
        # Another tenant's chatbot id finds nothing, with or without a vector.
        vector = [random.uniform(-1, 1) for _ in range(384)]
        assert await conn.fetch("SELECT * FROM parley.knowledge_search($1, 'alpha', 5, $2)", other.chatbot_id,
                                vector) == []
    await other.close()


CANDIDATES = """EXPLAIN (COSTS OFF)
  SELECT c.id FROM parley.knowledge_chunks c
   WHERE c.chatbot_id = $1 AND c.tsv @@ to_tsquery('simple', '''417''') AND c.tenant_id = $2"""


async def test_definer_full_text_uses_its_index_and_only_the_callers_tenant(settings, owner_conn, tenant):
    other = await make_tenant(settings, owner_conn)
    await _bulk(owner_conn, tenant, 800)
    await _bulk(owner_conn, other, 800)
    # knowledge_fts's candidate query for a rare term, as its owner (parley_auth, no RLS) plans it: the GIN index.
    await owner_conn.execute("SET enable_seqscan = off")  # 1,600 rows: make the planner show its index choice
    plan = "\n".join(r[0] for r in await owner_conn.fetch(CANDIDATES, tenant.chatbot_id, tenant.id))
    await owner_conn.execute("RESET enable_seqscan")
    assert "knowledge_chunks__chatbot_id_tsv_idx" in plan, plan
    terms = (["alpha"], [1.0], [800])
    async with await tenant.tx() as conn:
        mine = await conn.fetch("SELECT * FROM parley.knowledge_fts($1, $2, $3, $4, 10)", tenant.chatbot_id, *terms)
        assert len(mine) == 10
        # The definer bypasses RLS: called directly with another tenant's chatbot it still finds nothing,
        # and the statistics it reads are the caller's own.
        assert await conn.fetch("SELECT * FROM parley.knowledge_fts($1, $2, $3, $4, 10)", other.chatbot_id,
                                *terms) == []
        assert await conn.fetch("SELECT * FROM parley.knowledge_terms WHERE chatbot_id = $1", other.chatbot_id) == []
    # Without a tenant in the transaction: nothing either.
    async with owner_conn.transaction():
        await owner_conn.execute("SET LOCAL ROLE parley_app")
        assert await owner_conn.fetch("SELECT * FROM parley.knowledge_fts($1, $2, $3, $4, 10)", tenant.chatbot_id,
                                      *terms) == []
    await other.close()


async def test_term_statistics_follow_every_write(settings, owner_conn, tenant):
    async with await tenant.tx() as conn:
        source = await conn.fetchrow("SELECT * FROM parley.create_knowledge_source($1, 'text', 'Notes')",
                                     tenant.chatbot_id)
        await ingest.ingest_document(conn, source["id"], "text", extract.extract_text(
            "# Zebra care\n\nZebras eat grass.\n\n# Lions\n\nLions eat zebras at night."))
        counts = {r["term"]: r["chunks"] for r in await conn.fetch("SELECT term, chunks FROM parley.knowledge_terms")}
        total = await conn.fetchval("SELECT chunks FROM parley.knowledge_stats WHERE chatbot_id = $1",
                                    tenant.chatbot_id)
        stored = await conn.fetchval("SELECT count(*) FROM parley.knowledge_chunks")
        assert total == stored and counts["eat"] == stored and counts["lion"] < stored
        # A re-import that changes one passage moves the counts; deleting the source empties them.
        await ingest.ingest_document(conn, source["id"], "text", extract.extract_text(
            "# Zebra care\n\nZebras eat grass.\n\n# Tigers\n\nTigers sleep all day."))
        counts = {r["term"]: r["chunks"] for r in await conn.fetch("SELECT term, chunks FROM parley.knowledge_terms")}
        assert counts.get("lion", 0) == 0 and counts["tiger"] >= 1
        assert await conn.fetchval("SELECT parley.delete_knowledge_source($1)", source["id"])
        assert await conn.fetchval("SELECT chunks FROM parley.knowledge_stats WHERE chatbot_id = $1",
                                   tenant.chatbot_id) == 0
        assert await conn.fetchval("SELECT coalesce(max(chunks), 0) FROM parley.knowledge_terms") == 0


async def test_question_words_are_never_operators(tenant):
    async with await tenant.tx() as conn:
        source = await conn.fetchrow("SELECT * FROM parley.create_knowledge_source($1, 'text', 'Notes')",
                                     tenant.chatbot_id)
        await ingest.ingest_document(conn, source["id"], "text", extract.extract_text(
            "# Exports\n\nExport the report as CSV or PDF from the menu."))
        for question in ("csv or pdf", "export -pdf", '"export" & !csv', "csv | pdf <-> export", "or and not"):
            rows = await conn.fetch("SELECT fts_coverage FROM parley.knowledge_search($1, $2, 3)", tenant.chatbot_id,
                                    question)
            assert rows or question == "or and not", question  # no syntax error, plain words matched
        assert await conn.fetch("SELECT * FROM parley.knowledge_search($1, 'export -pdf', 3)", tenant.chatbot_id)


async def test_candidates_come_from_the_rarest_terms_within_the_budget(settings, owner_conn, tenant):
    await _bulk(owner_conn, tenant, 200)
    doc = await owner_conn.fetchval("SELECT id FROM parley.knowledge_documents WHERE tenant_id = $1", tenant.id)
    texts = ["zeta omega one", "zeta omega two", "zeta omega three", "zeta four", "zeta five",
             "omega six", "omega seven", "omega eight", "omega nine"]
    await owner_conn.execute(
        """INSERT INTO parley.knowledge_chunks (tenant_id, chatbot_id, document_id, ordinal, text, checksum, ts_config, tsv)
           SELECT $1, $2, $3, 1000 + n, t, md5(t), 'simple', to_tsvector('simple', t)
             FROM unnest($4::text[]) WITH ORDINALITY AS u(t, n)""", tenant.id, tenant.chatbot_id, doc, texts)

    async def search():
        async with await tenant.tx() as conn:
            return [(r["text"], r["fts_coverage"]) for r in await conn.fetch(
                "SELECT text, fts_coverage FROM parley.knowledge_search($1, 'zeta omega', 10)", tenant.chatbot_id)]

    everything = await search()  # the default budget holds both terms' postings (5 + 7 chunks)
    assert {t for t, _ in everything} == set(texts)
    # A budget of 5 postings: the rarest term (zeta, 5 chunks) fits, omega (7 more) does not. Only
    # zeta's chunks are candidates, and omega still counts in their score.
    await owner_conn.execute("CREATE OR REPLACE FUNCTION parley.knowledge_fts_budget() RETURNS int"
                             " LANGUAGE sql IMMUTABLE AS $$ SELECT 5 $$")
    found = await search()
    assert {t for t, _ in found} == set(texts[:5])
    assert [c for _, c in found[:3]] == [1.0] * 3 and {t for t, _ in found[:3]} == set(texts[:3])
    # A budget below the rarest term's count still reads that term.
    await owner_conn.execute("CREATE OR REPLACE FUNCTION parley.knowledge_fts_budget() RETURNS int"
                             " LANGUAGE sql IMMUTABLE AS $$ SELECT 1 $$")
    assert await search() == found


async def test_large_chatbot_uses_hnsw_iterative_scan(settings, owner_conn, tenant, monkeypatch):
    await _bulk(owner_conn, tenant, 300)
    # Pretend the exact-search ceiling is tiny so this chatbot takes the HNSW path.
    await owner_conn.execute("CREATE OR REPLACE FUNCTION parley.exact_knn_limit() RETURNS int"
                             " LANGUAGE sql IMMUTABLE AS $$ SELECT 10 $$")
    async with await tenant.tx() as conn:
        target = await conn.fetchrow("SELECT id, embedding FROM parley.knowledge_chunks ORDER BY id LIMIT 1")
        found = await conn.fetch("SELECT chunk_id, vector_distance FROM parley.knowledge_search($1, 'zzz', 5, $2)",
                                 tenant.chatbot_id, target["embedding"])
        assert len(found) == 5 and found[0]["chunk_id"] == target["id"] and found[0]["vector_distance"] < 1e-6


async def test_language_config_stems_queries(settings, owner_conn):
    german = await make_tenant(settings, owner_conn, language="de")
    async with await german.tx() as conn:
        source = await conn.fetchrow("SELECT * FROM parley.create_knowledge_source($1, 'text', 'Versand')",
                                     german.chatbot_id)
        await ingest.ingest_document(conn, source["id"], "text",
                                     extract.extract_text("Die Lieferungen dauern drei Werktage."))
        found = await conn.fetch("SELECT fts_rank FROM parley.knowledge_search($1, 'Lieferung', 3)", german.chatbot_id)
        assert len(found) == 1
        assert await conn.fetchval("SELECT DISTINCT ts_config::text FROM parley.knowledge_chunks") == "german"
    await german.close()


async def test_each_documents_best_passage_comes_before_another_passage_of_the_same_document(tenant):
    # A long page matched by several of its passages filled the top k with itself, so the one
    # passage of another page that also answers never showed (knowledge_per_document).
    def section(n: int) -> str:
        return f"## Freezing part {n}\n\n" + " ".join(
            [f"Vacuum freezes old row versions to prevent transaction id wraparound, step {n}."] * 8)

    long_page = "# Routine vacuuming\n\n" + "\n\n".join(section(n) for n in range(1, 4))
    other_page = "# Server settings\n\nautovacuum_freeze_max_age sets when a vacuum freezes rows against wraparound."
    documents = {}
    async with await tenant.tx() as conn:
        for name, text in (("vacuuming", long_page), ("settings", other_page)):
            source = await conn.fetchval("SELECT s.id FROM parley.create_knowledge_source($1, 'file', $2, NULL, $3) s",
                                         tenant.chatbot_id, name, f"{name}.md")
            stored = await ingest.ingest_document(conn, source, f"{name}.md",
                                                  extract.extract(text.encode(), filename=f"{name}.md"))
            documents[str(stored["document_id"])] = name
        passages = await conn.fetchval("SELECT count(*) FROM parley.knowledge_chunks WHERE chatbot_id = $1",
                                       tenant.chatbot_id)
        assert passages >= 4, passages
        query = "vacuum freezes wraparound"
        top = [documents[str(r["document_id"])] for r in
               await conn.fetch("SELECT * FROM parley.knowledge_search($1, $2, 2)", tenant.chatbot_id, query)]
        assert top == ["vacuuming", "settings"], top
        # The top k is still filled from the same document when no other one matches.
        every = [documents[str(r["document_id"])] for r in
                 await conn.fetch("SELECT * FROM parley.knowledge_search($1, $2, 10)", tenant.chatbot_id, query)]
        assert sorted(every) == ["settings"] + ["vacuuming"] * (passages - 1), every
        assert every[:2] == ["vacuuming", "settings"], every


async def test_vectors_take_part_once_a_fifth_of_the_passages_have_theirs(owner_conn, tenant):
    """An import's first minutes: most passages wait in the embedding queue, and a question's nearest
    vectors are those of the few embedded so far. Until at most 80 % wait, the search is full text
    alone (the decline rule's full-text form; no cosine), then hybrid."""
    await _bulk(owner_conn, tenant, 100)
    await owner_conn.execute(
        "WITH waiting AS (UPDATE parley.knowledge_chunks SET embedding = NULL WHERE tenant_id = $1 AND ordinal > 10"
        " RETURNING tenant_id, id) INSERT INTO parley.embedding_jobs (tenant_id, chunk_id) SELECT * FROM waiting",
        tenant.id)
    vector = [random.uniform(-1, 1) for _ in range(384)]

    async def signals():
        async with await tenant.tx() as conn:
            ready = await conn.fetchval("SELECT parley.knowledge_vectors_ready($1, 100)", tenant.chatbot_id)
            # The server embeds a question only when they take part (the same rule, with the chatbot's count).
            assert await conn.fetchval("SELECT parley.knowledge_uses_vectors($1)", tenant.chatbot_id) is ready
            rows = await conn.fetch("SELECT vector_distance, signals FROM parley.knowledge_search($1, 'alpha', 5, $2)",
                                    tenant.chatbot_id, vector)
        return ready, {r["vector_distance"] is None for r in rows}, rows[0]["signals"]["cosine"]

    assert await signals() == (False, {True}, None)  # 90 of 100 waiting
    await owner_conn.execute("DELETE FROM parley.embedding_jobs WHERE tenant_id = $1 AND chunk_id IN"
                             " (SELECT id FROM parley.knowledge_chunks WHERE tenant_id = $1 AND ordinal <= 20)", tenant.id)
    ready, no_distance, cosine = await signals()  # 80 waiting: the ten embedded take part
    assert ready is True and no_distance != {True} and cosine is not None
