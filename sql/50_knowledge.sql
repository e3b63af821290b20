-- Knowledge: sources, documents, chunks and the embedding queue; hybrid retrieval.
-- Writes go through the functions below so checksum reuse, the tsvector config and
-- the queue stay consistent; reads are plain SELECTs under RLS.

SELECT parley.apply_tenant_policies('parley.knowledge_sources');
SELECT parley.apply_tenant_policies('parley.knowledge_documents');
SELECT parley.apply_tenant_policies('parley.knowledge_chunks');
SELECT parley.apply_tenant_policies('parley.embedding_jobs');
SELECT parley.apply_tenant_policies('parley.llm_settings');
SELECT parley.apply_tenant_policies('parley.assistant_turns');

GRANT SELECT, INSERT, UPDATE, DELETE ON parley.knowledge_sources, parley.knowledge_documents,
  parley.knowledge_chunks, parley.embedding_jobs, parley.llm_settings TO parley_app;
GRANT SELECT, INSERT ON parley.assistant_turns TO parley_app;
GRANT SELECT, UPDATE ON parley.knowledge_sources TO parley_jobs;
GRANT SELECT ON parley.knowledge_documents, parley.assistant_turns TO parley_jobs;
GRANT SELECT, UPDATE (embedding, embedding_model, updated_at) ON parley.knowledge_chunks TO parley_jobs;
GRANT SELECT, INSERT, UPDATE, DELETE ON parley.embedding_jobs TO parley_jobs;
GRANT SELECT ON parley.embedding_jobs TO parley_auth;

-- The chatbot's language picks the text-search configuration for its chunks and queries.
CREATE OR REPLACE FUNCTION parley.ts_config_for(p_language text) RETURNS regconfig
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
  SELECT CASE lower(split_part(split_part(coalesce(p_language, ''), '-', 1), '_', 1))
           WHEN 'en' THEN 'english' WHEN 'english' THEN 'english'
           WHEN 'es' THEN 'spanish' WHEN 'spanish' THEN 'spanish'
           WHEN 'fr' THEN 'french'  WHEN 'french' THEN 'french'
           WHEN 'de' THEN 'german'  WHEN 'german' THEN 'german'
           WHEN 'tr' THEN 'turkish' WHEN 'turkish' THEN 'turkish'
           ELSE 'simple' END::regconfig
$$;
COMMENT ON FUNCTION parley.ts_config_for(text) IS
  'Text-search configuration for a chatbot language (en/es/fr/de/tr or their English names); simple otherwise.';

CREATE OR REPLACE FUNCTION parley.chatbot_ts_config(p_chatbot_id uuid) RETURNS regconfig
LANGUAGE sql STABLE
AS $$
  SELECT parley.ts_config_for(b.config->>'language') FROM parley.chatbots b
   WHERE b.tenant_id = (SELECT parley.current_tenant_id()) AND b.id = p_chatbot_id
$$;
COMMENT ON FUNCTION parley.chatbot_ts_config(uuid) IS
  'Text-search configuration of a chatbot of the current tenant (NULL when it is not visible).';

-- Pages per site import: the plan's knowledge_pages (0 = unlimited, capped at 50,000).
CREATE OR REPLACE FUNCTION parley.knowledge_page_limit() RETURNS int
LANGUAGE sql STABLE
AS $$
  SELECT coalesce(nullif(least(l.knowledge_pages, 50000), 0), 50000)
    FROM parley.effective_limits((SELECT parley.current_tenant_id())) l
$$;
COMMENT ON FUNCTION parley.knowledge_page_limit() IS
  'Pages one knowledge source may import for the current tenant (effective_limits.knowledge_pages; 0 = unlimited, capped at 50,000).';

-- Weighted tsvector of one chunk: title A, heading path B, body C.
CREATE OR REPLACE FUNCTION parley.chunk_tsv(p_config regconfig, p_title text, p_heading_path text, p_text text)
RETURNS tsvector
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
  SELECT setweight(to_tsvector(p_config, coalesce(p_title, '')), 'A')
      || setweight(to_tsvector(p_config, coalesce(p_heading_path, '')), 'B')
      || setweight(to_tsvector(p_config, p_text), 'C')
$$;
COMMENT ON FUNCTION parley.chunk_tsv(regconfig, text, text, text) IS
  'The tsvector stored for a chunk: title weight A, heading path B, text C.';

CREATE OR REPLACE FUNCTION parley.create_knowledge_source(
  p_chatbot_id uuid, p_kind text, p_title text DEFAULT '', p_url text DEFAULT NULL,
  p_filename text DEFAULT NULL, p_options jsonb DEFAULT '{}')
RETURNS parley.knowledge_sources
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
  v_row parley.knowledge_sources;
BEGIN
  PERFORM parley.require_live_chatbot(p_chatbot_id);
  INSERT INTO parley.knowledge_sources (tenant_id, chatbot_id, kind, title, url, filename, options, created_by)
  VALUES (parley.current_tenant_id(), p_chatbot_id, p_kind, coalesce(p_title, ''), p_url, p_filename,
          coalesce(p_options, '{}'), parley.current_user_id())
  RETURNING * INTO v_row;
  PERFORM parley.write_audit('knowledge_source.create', 'knowledge_source', v_row.id::text,
                             jsonb_build_object('kind', p_kind, 'url', p_url, 'filename', p_filename));
  RETURN v_row;
END $$;
COMMENT ON FUNCTION parley.create_knowledge_source(uuid, text, text, text, text, jsonb) IS
  'Add a knowledge source (text, url, sitemap, crawl, file) to a chatbot of the current tenant; status pending until imported.';

CREATE OR REPLACE FUNCTION parley.set_source_progress(
  p_source_id uuid, p_status text, p_progress jsonb DEFAULT NULL, p_error text DEFAULT NULL)
RETURNS void
LANGUAGE sql VOLATILE
AS $$
  UPDATE parley.knowledge_sources s
     SET status = p_status,
         progress = CASE WHEN p_progress IS NULL THEN s.progress ELSE s.progress || p_progress END,
         error = p_error,
         updated_at = now(),
         last_imported_at = CASE WHEN p_status IN ('ready', 'failed') THEN now() ELSE s.last_imported_at END
   WHERE s.tenant_id = (SELECT parley.current_tenant_id()) AND s.id = p_source_id
$$;
COMMENT ON FUNCTION parley.set_source_progress(uuid, text, jsonb, text) IS
  'Record an import''s status and merge its progress counters (what the console polls).';

-- The chunks of a document as rows: ordinal, checksum (title + heading path + text) and
-- rank among identical chunks, so duplicates pair up one to one.
CREATE OR REPLACE FUNCTION parley.chunk_rows(p_title text, p_chunks jsonb)
RETURNS TABLE (ordinal int, text text, heading_path text, checksum text, dup int)
LANGUAGE sql IMMUTABLE
AS $$
  SELECT x.ordinal, x.text, x.heading_path, x.checksum,
         (row_number() OVER (PARTITION BY x.checksum ORDER BY x.ordinal))::int
    FROM (SELECT (row_number() OVER (ORDER BY e.ord) - 1)::int AS ordinal, e.c->>'text' AS text,
                 coalesce(e.c->>'heading_path', '') AS heading_path,
                 encode(sha256(convert_to(coalesce(p_title, '') || E'\x1f' || coalesce(e.c->>'heading_path', '')
                                          || E'\x1f' || (e.c->>'text'), 'UTF8')), 'hex') AS checksum
            FROM jsonb_array_elements(p_chunks) WITH ORDINALITY AS e(c, ord)
           WHERE length(coalesce(e.c->>'text', '')) > 0) x
$$;
COMMENT ON FUNCTION parley.chunk_rows(text, jsonb) IS
  'Rows of a chunk array [{text, heading_path}] with ordinal, content checksum and rank among identical chunks.';

-- Replace one document's chunks. Chunks are matched to the stored ones by checksum:
-- unchanged chunks keep their embedding and only move ordinal; new ones are inserted
-- and queued for embedding; vanished ones are deleted.
CREATE OR REPLACE FUNCTION parley.ingest_document(
  p_source_id uuid, p_doc_key text, p_url text, p_title text, p_chunks jsonb)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
  v_tenant uuid := parley.current_tenant_id();
  v_chatbot uuid;
  v_config regconfig;
  v_doc uuid;
  v_keep_ids bigint[];
  v_keep_ord int[];
  v_added int;
  v_removed int;
BEGIN
  SELECT s.chatbot_id INTO v_chatbot FROM parley.knowledge_sources s
   WHERE s.tenant_id = v_tenant AND s.id = p_source_id;
  IF v_chatbot IS NULL THEN
    PERFORM parley.raise_error(404, 'not_found', 'No such knowledge source.');
  END IF;
  -- An import still running when its chatbot is deleted stops at its next page (404).
  PERFORM parley.require_live_chatbot(v_chatbot);
  IF jsonb_typeof(p_chunks) IS DISTINCT FROM 'array' THEN
    PERFORM parley.raise_error(422, 'invalid', 'Chunks must be an array.');
  END IF;
  v_config := coalesce(parley.chatbot_ts_config(v_chatbot), 'simple');
  -- The plan's page limit: a source holds at most knowledge_page_limit() documents (a re-import
  -- and a running import of one source count in turn).
  PERFORM parley.lock_limit('pages:' || p_source_id);
  IF NOT EXISTS (SELECT 1 FROM parley.knowledge_documents d
                  WHERE d.tenant_id = v_tenant AND d.source_id = p_source_id AND d.doc_key = p_doc_key)
     AND (SELECT count(*) FROM parley.knowledge_documents d
           WHERE d.tenant_id = v_tenant AND d.source_id = p_source_id) >= parley.knowledge_page_limit() THEN
    PERFORM parley.raise_error(402, 'plan_limit',
      format('Your plan imports at most %s pages per source; upgrade to import more.', parley.knowledge_page_limit()));
  END IF;

  INSERT INTO parley.knowledge_documents AS d (tenant_id, source_id, chatbot_id, doc_key, url, title, checksum, chars)
  SELECT v_tenant, p_source_id, v_chatbot, p_doc_key, p_url, coalesce(p_title, ''),
         encode(sha256(convert_to(coalesce(string_agg(r.checksum, ',' ORDER BY r.ordinal), ''), 'UTF8')), 'hex'),
         coalesce(sum(length(r.text)), 0)
    FROM parley.chunk_rows(p_title, p_chunks) r
  ON CONFLICT (tenant_id, source_id, doc_key) DO UPDATE
     SET url = EXCLUDED.url, title = EXCLUDED.title, checksum = EXCLUDED.checksum,
         chars = EXCLUDED.chars, updated_at = now()
  RETURNING d.id INTO v_doc;

  -- Pair stored chunks with incoming ones by (checksum, rank among equals).
  SELECT coalesce(array_agg(s.id), '{}'), coalesce(array_agg(i.ordinal), '{}')
    INTO v_keep_ids, v_keep_ord
    FROM (SELECT c.id, c.checksum, row_number() OVER (PARTITION BY c.checksum ORDER BY c.ordinal, c.id) AS rn
            FROM parley.knowledge_chunks c WHERE c.tenant_id = v_tenant AND c.document_id = v_doc) s
    JOIN parley.chunk_rows(p_title, p_chunks) i ON i.checksum = s.checksum AND i.dup = s.rn;

  DELETE FROM parley.knowledge_chunks c
   WHERE c.tenant_id = v_tenant AND c.document_id = v_doc AND NOT (c.id = ANY (v_keep_ids));
  GET DIAGNOSTICS v_removed = ROW_COUNT;

  UPDATE parley.knowledge_chunks c
     SET ordinal = p.ordinal, url = p_url, updated_at = now(),
         tsv = CASE WHEN c.ts_config = v_config THEN c.tsv ELSE parley.chunk_tsv(v_config, c.title, c.heading_path, c.text) END,
         ts_config = v_config
    FROM unnest(v_keep_ids, v_keep_ord) AS p(chunk_id, ordinal)
   WHERE c.tenant_id = v_tenant AND c.id = p.chunk_id
     AND (c.ordinal <> p.ordinal OR c.url IS DISTINCT FROM p_url OR c.ts_config <> v_config);

  WITH added AS (
    INSERT INTO parley.knowledge_chunks (tenant_id, chatbot_id, document_id, ordinal, text, heading_path, title,
                                         url, checksum, ts_config, tsv)
    SELECT v_tenant, v_chatbot, v_doc, i.ordinal, i.text, i.heading_path, coalesce(p_title, ''), p_url, i.checksum,
           v_config, parley.chunk_tsv(v_config, p_title, i.heading_path, i.text)
      FROM parley.chunk_rows(p_title, p_chunks) i
     WHERE NOT (i.ordinal = ANY (v_keep_ord))
    RETURNING id)
  INSERT INTO parley.embedding_jobs (tenant_id, chunk_id)
  SELECT v_tenant, id FROM added;
  GET DIAGNOSTICS v_added = ROW_COUNT;

  RETURN jsonb_build_object('document_id', v_doc, 'added', v_added,
                            'unchanged', cardinality(v_keep_ids), 'removed', v_removed);
END $$;
COMMENT ON FUNCTION parley.ingest_document(uuid, text, text, text, jsonb) IS
  'Upsert one document of a source (by doc_key) with its chunks [{text, heading_path}]; unchanged chunks (same checksum) keep their embeddings, new ones are queued. 404 when the source''s chatbot is deleted (an import running meanwhile stops). Returns {document_id, added, unchanged, removed}.';

CREATE OR REPLACE FUNCTION parley.knowledge_document_fetched(p_document_id uuid, p_etag text, p_last_modified text,
                                                             p_links text[])
RETURNS void
LANGUAGE sql VOLATILE
AS $$
  UPDATE parley.knowledge_documents d
     SET etag = left(p_etag, 500), last_modified = left(p_last_modified, 100), links = coalesce(p_links, '{}')
   WHERE d.tenant_id = (SELECT parley.current_tenant_id()) AND d.id = p_document_id
$$;
COMMENT ON FUNCTION parley.knowledge_document_fetched(uuid, text, text, text[]) IS
  'Record what a fetched page came with: its validators (sent back as If-None-Match / If-Modified-Since on the next crawl) and its same-site links (followed when the page answers 304).';

CREATE OR REPLACE FUNCTION parley.set_source_frontier(p_source_id uuid, p_frontier text[])
RETURNS void
LANGUAGE sql VOLATILE
AS $$
  UPDATE parley.knowledge_sources s SET frontier = coalesce(p_frontier, '{}'), updated_at = now()
   WHERE s.tenant_id = (SELECT parley.current_tenant_id()) AND s.id = p_source_id
$$;
COMMENT ON FUNCTION parley.set_source_frontier(uuid, text[]) IS
  'The pages an import had not reached when it stopped at its page limit (empty when it finished); "continue" imports them.';

CREATE OR REPLACE FUNCTION parley.prune_source_documents(p_source_id uuid, p_keep_keys text[])
RETURNS int
LANGUAGE sql VOLATILE
AS $$
  WITH gone AS (
    DELETE FROM parley.knowledge_documents d
     WHERE d.tenant_id = (SELECT parley.current_tenant_id()) AND d.source_id = p_source_id
       AND NOT (d.doc_key = ANY (p_keep_keys))
    RETURNING 1)
  SELECT count(*)::int FROM gone
$$;
COMMENT ON FUNCTION parley.prune_source_documents(uuid, text[]) IS
  'After a full re-import of a source, delete its documents (and their chunks) that were not seen again.';

CREATE OR REPLACE FUNCTION parley.delete_knowledge_source(p_source_id uuid) RETURNS boolean
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
  v_chunks int;
BEGIN
  SELECT count(*) INTO v_chunks FROM parley.knowledge_chunks c
    JOIN parley.knowledge_documents d ON d.tenant_id = c.tenant_id AND d.id = c.document_id
   WHERE d.tenant_id = (SELECT parley.current_tenant_id()) AND d.source_id = p_source_id;
  DELETE FROM parley.knowledge_sources s
   WHERE s.tenant_id = (SELECT parley.current_tenant_id()) AND s.id = p_source_id;
  IF NOT FOUND THEN
    RETURN false;
  END IF;
  PERFORM parley.write_audit('knowledge_source.delete', 'knowledge_source', p_source_id::text,
                             jsonb_build_object('chunks', v_chunks));
  RETURN true;
END $$;
COMMENT ON FUNCTION parley.delete_knowledge_source(uuid) IS
  'Delete a source with every document, chunk and queued embedding of it (cascade); false when not found.';

-- Embedding queue ------------------------------------------------------------------

CREATE OR REPLACE FUNCTION parley.embedding_backlog() RETURNS bigint
LANGUAGE sql STABLE
AS $$ SELECT count(*) FROM parley.embedding_jobs j WHERE j.tenant_id = (SELECT parley.current_tenant_id()) $$;
COMMENT ON FUNCTION parley.embedding_backlog() IS
  'Chunks of the current tenant waiting for an embedding (imports are refused above a limit: back-pressure).';

-- Which tenants have due embedding work: the one cross-tenant read of the queue, so a
-- worker can then drain each tenant inside its own tenant transaction.
CREATE OR REPLACE FUNCTION parley.embedding_queue_tenants(p_limit int DEFAULT 100)
RETURNS TABLE (tenant_id uuid, due bigint)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = ''
AS $$
  SELECT j.tenant_id, count(*) FROM parley.embedding_jobs j
   WHERE j.not_before <= now()
   GROUP BY j.tenant_id
   ORDER BY min(j.not_before)
   LIMIT p_limit
$$;
COMMENT ON FUNCTION parley.embedding_queue_tenants(int) IS
  'Tenants with due embedding jobs (oldest first) and how many; ids only, for the queue workers.';

-- Lease a batch: claimed rows are skipped by other workers (SKIP LOCKED) and hidden for
-- p_lease; store_embeddings deletes them, a crashed worker's lease simply expires.
CREATE OR REPLACE FUNCTION parley.claim_embedding_jobs(p_limit int, p_lease interval DEFAULT '5 minutes')
RETURNS TABLE (chunk_id bigint, title text, heading_path text, text text, attempts int)
LANGUAGE sql VOLATILE
AS $$
  WITH due AS (
    SELECT j.tenant_id, j.chunk_id FROM parley.embedding_jobs j
     WHERE j.tenant_id = (SELECT parley.current_tenant_id()) AND j.not_before <= now()
     ORDER BY j.not_before
     LIMIT p_limit
     FOR UPDATE SKIP LOCKED),
  leased AS (
    UPDATE parley.embedding_jobs j
       SET not_before = now() + p_lease, attempts = j.attempts + 1
      FROM due WHERE j.tenant_id = due.tenant_id AND j.chunk_id = due.chunk_id
    RETURNING j.chunk_id, j.attempts)
  SELECT c.id, c.title, c.heading_path, c.text, l.attempts
    FROM leased l JOIN parley.knowledge_chunks c
      ON c.tenant_id = (SELECT parley.current_tenant_id()) AND c.id = l.chunk_id
$$;
COMMENT ON FUNCTION parley.claim_embedding_jobs(int, interval) IS
  'Lease up to p_limit due embedding jobs of the current tenant (FOR UPDATE SKIP LOCKED) and return the chunk text to embed.';

CREATE OR REPLACE FUNCTION parley.store_embeddings(p_chunk_ids bigint[], p_embeddings vector[], p_model text)
RETURNS int
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
  v_n int;
BEGIN
  UPDATE parley.knowledge_chunks c
     SET embedding = u.e, embedding_model = p_model, updated_at = now()
    FROM unnest(p_chunk_ids, p_embeddings) AS u(id, e)
   WHERE c.tenant_id = (SELECT parley.current_tenant_id()) AND c.id = u.id;
  GET DIAGNOSTICS v_n = ROW_COUNT;
  DELETE FROM parley.embedding_jobs j
   WHERE j.tenant_id = (SELECT parley.current_tenant_id()) AND j.chunk_id = ANY (p_chunk_ids);
  RETURN v_n;
END $$;
COMMENT ON FUNCTION parley.store_embeddings(bigint[], vector[], text) IS
  'Store embeddings (with the model that made them) for leased chunks and remove their jobs.';

CREATE OR REPLACE FUNCTION parley.fail_embedding_jobs(p_chunk_ids bigint[], p_error text)
RETURNS void
LANGUAGE sql VOLATILE
AS $$
  UPDATE parley.embedding_jobs j
     SET last_error = left(p_error, 500),
         not_before = now() + least(interval '1 hour', interval '10 seconds' * power(2, j.attempts))
   WHERE j.tenant_id = (SELECT parley.current_tenant_id()) AND j.chunk_id = ANY (p_chunk_ids)
$$;
COMMENT ON FUNCTION parley.fail_embedding_jobs(bigint[], text) IS
  'Record an embedding failure and back off exponentially (capped at an hour).';

-- Changing the embedding model re-embeds: queue every chunk made by another model.
CREATE OR REPLACE FUNCTION parley.enqueue_stale_embeddings(p_model text, p_limit int DEFAULT 5000)
RETURNS int
LANGUAGE sql VOLATILE
AS $$
  WITH stale AS (
    INSERT INTO parley.embedding_jobs (tenant_id, chunk_id)
    SELECT c.tenant_id, c.id FROM parley.knowledge_chunks c
     WHERE c.tenant_id = (SELECT parley.current_tenant_id())
       AND c.embedding_model IS DISTINCT FROM p_model
       AND NOT EXISTS (SELECT 1 FROM parley.embedding_jobs j WHERE j.tenant_id = c.tenant_id AND j.chunk_id = c.id)
     LIMIT p_limit
    ON CONFLICT DO NOTHING
    RETURNING 1)
  SELECT count(*)::int FROM stale
$$;
COMMENT ON FUNCTION parley.enqueue_stale_embeddings(text, int) IS
  'Queue re-embedding of the current tenant''s chunks whose embedding was made by another model (or none).';

-- The one count of a source's documents and chunks (the API's source list and the console's).
CREATE OR REPLACE FUNCTION parley.knowledge_source_counts(p_tenant_id uuid, p_source_id uuid)
RETURNS TABLE (documents bigint, chunks bigint, chunks_embedded bigint)
LANGUAGE sql STABLE
AS $$
  SELECT (SELECT count(*) FROM parley.knowledge_documents d WHERE d.tenant_id = p_tenant_id AND d.source_id = p_source_id),
         count(c.*), count(c.*) FILTER (WHERE c.embedding IS NOT NULL)
    FROM parley.knowledge_chunks c
    JOIN parley.knowledge_documents d ON d.tenant_id = c.tenant_id AND d.id = c.document_id
   WHERE d.tenant_id = p_tenant_id AND d.source_id = p_source_id
$$;
COMMENT ON FUNCTION parley.knowledge_source_counts(uuid, uuid) IS
  'Documents, chunks and embedded chunks of one knowledge source (one row; RLS applies). Use it LATERAL beside parley.knowledge_sources.';

-- A stored LLM key is sent only to the host and provider it was entered for: moving the
-- setting to another base URL or provider needs the key again (issue 15 item 4), on every
-- path to the table. Switching to 'none' forgets the key.
CREATE OR REPLACE FUNCTION parley.llm_key_follows_endpoint() RETURNS trigger
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
  IF (NEW.provider IS DISTINCT FROM OLD.provider OR NEW.base_url IS DISTINCT FROM OLD.base_url)
     AND OLD.api_key_enc IS NOT NULL AND NEW.api_key_enc IS NOT DISTINCT FROM OLD.api_key_enc THEN
    IF NEW.provider = 'none' THEN
      NEW.api_key_enc := NULL;
    ELSE
      PERFORM parley.raise_error(422, 'llm_key_required',
        'Enter the API key again to change the provider or the base URL.');
    END IF;
  END IF;
  RETURN NEW;
END $$;
COMMENT ON FUNCTION parley.llm_key_follows_endpoint() IS
  'BEFORE UPDATE trigger on llm_settings: a new provider or base_url with the old encrypted key is refused (422 llm_key_required), so a key cannot be redirected to another host without entering it again; provider none drops the key.';
SELECT parley.ensure_trigger('parley.llm_settings', 't10_llm_key_follows_endpoint', 'BEFORE UPDATE',
  $$FOR EACH ROW EXECUTE FUNCTION parley.llm_key_follows_endpoint()$$);

-- Owners and EXECUTE grants of the functions above (parley.secure_functions, 05_access.sql).
SELECT parley.secure_functions('parley_auth', '{parley_app, parley_jobs}', 'parley.embedding_queue_tenants(int)');
SELECT parley.secure_functions(NULL, '{parley_app, parley_jobs}', 'parley.claim_embedding_jobs(int, interval)',
  'parley.store_embeddings(bigint[], vector[], text)', 'parley.fail_embedding_jobs(bigint[], text)',
  'parley.enqueue_stale_embeddings(text, int)');
SELECT parley.secure_functions(NULL, '{parley_app}', 'parley.knowledge_source_counts(uuid, uuid)');
