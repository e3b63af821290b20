-- Knowledge at documentation-site size (issue 16): per-chatbot term statistics so rare terms
-- weigh more in full-text ranking, a full-text index led by the chatbot (used by the search
-- function, which filters the tenant itself), the plan's page limit for site imports, and what
-- incremental re-crawls and "continue" need (validators per document, the crawl frontier).
-- depends: 0006.message_search_index

-- How many chunks of a chatbot contain each lexeme (document frequency), kept by a statement
-- trigger on knowledge_chunks (sql/50_knowledge.sql), and how many chunks the chatbot has.
CREATE TABLE parley.knowledge_terms (
  tenant_id   uuid NOT NULL,
  chatbot_id  uuid NOT NULL,
  term        text NOT NULL,
  chunks      int NOT NULL,
  PRIMARY KEY (tenant_id, chatbot_id, term),
  FOREIGN KEY (tenant_id, chatbot_id) REFERENCES parley.chatbots (tenant_id, id) ON DELETE CASCADE
);

CREATE TABLE parley.knowledge_stats (
  tenant_id   uuid NOT NULL,
  chatbot_id  uuid NOT NULL,
  chunks      int NOT NULL,
  PRIMARY KEY (tenant_id, chatbot_id),
  FOREIGN KEY (tenant_id, chatbot_id) REFERENCES parley.chatbots (tenant_id, id) ON DELETE CASCADE
);

INSERT INTO parley.knowledge_terms (tenant_id, chatbot_id, term, chunks)
SELECT c.tenant_id, c.chatbot_id, l.lexeme, count(*)
  FROM parley.knowledge_chunks c, unnest(c.tsv) AS l
 GROUP BY 1, 2, 3;
INSERT INTO parley.knowledge_stats (tenant_id, chatbot_id, chunks)
SELECT c.tenant_id, c.chatbot_id, count(*) FROM parley.knowledge_chunks c GROUP BY 1, 2;

-- The full-text index the search function can use: led by the chatbot (btree_gin), so a
-- term common in other chatbots costs nothing here. It replaces the tsv-only index, which
-- the app role could not use under RLS (PITFALLS).
DROP INDEX parley.knowledge_chunks__tsv_idx;
CREATE INDEX knowledge_chunks__chatbot_id_tsv_idx ON parley.knowledge_chunks USING gin (chatbot_id, tsv);

-- Pages per site import, by plan (0 = unlimited), overridable per tenant.
ALTER TABLE parley.plans ADD COLUMN knowledge_pages int NOT NULL DEFAULT 500 CHECK (knowledge_pages >= 0);
ALTER TABLE parley.tenant_limits ADD COLUMN knowledge_pages int CHECK (knowledge_pages >= 0);

-- Incremental re-crawl: the validators the page came with (sent back as If-None-Match /
-- If-Modified-Since) and its links (followed when it answers 304), and the frontier a crawl stopped at when it reached its page limit.
ALTER TABLE parley.knowledge_documents
  ADD COLUMN etag text CHECK (length(etag) <= 500),
  ADD COLUMN last_modified text CHECK (length(last_modified) <= 100),
  ADD COLUMN links text[] NOT NULL DEFAULT '{}';
ALTER TABLE parley.knowledge_sources ADD COLUMN frontier text[] NOT NULL DEFAULT '{}';
