"""knowledge_search as the app role: RLS scoping, the plan it gets, and the large-chatbot HNSW path."""
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
