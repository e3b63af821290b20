-- Knowledge and the assistant: per-chatbot sources, documents and chunks (full-text and
-- vector), the embedding queue, assistant turns, LLM provider settings, feedback and
-- ratings, daily rollups for analytics, and the schedule of the jobs process.
-- depends: 0003.conversations

-- A source is what a member added: pasted text, one URL, a sitemap, a crawl, an uploaded file.
-- Its status/progress row is what the console polls while an import runs.
CREATE TABLE parley.knowledge_sources (
  tenant_id         uuid NOT NULL,
  id                uuid NOT NULL DEFAULT gen_random_uuid(),
  chatbot_id        uuid NOT NULL,
  kind              text NOT NULL CHECK (kind IN ('text', 'url', 'sitemap', 'crawl', 'file')),
  title             text NOT NULL DEFAULT '' CHECK (length(title) <= 300),
  url               text CHECK (length(url) <= 2048),
  filename          text CHECK (length(filename) <= 255),
  options           jsonb NOT NULL DEFAULT '{}',
  status            text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'running', 'ready', 'failed')),
  progress          jsonb NOT NULL DEFAULT '{}',
  error             text,
  created_by        uuid,
  created_at        timestamptz NOT NULL DEFAULT now(),
  updated_at        timestamptz NOT NULL DEFAULT now(),
  last_imported_at  timestamptz,
  PRIMARY KEY (tenant_id, id),
  FOREIGN KEY (tenant_id, chatbot_id) REFERENCES parley.chatbots (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX knowledge_sources__tenant_id_chatbot_id_idx
  ON parley.knowledge_sources (tenant_id, chatbot_id, created_at DESC);

-- One page or file of a source; doc_key (the URL, or 'text'/the file name) makes a
-- re-import update the same document in place.
CREATE TABLE parley.knowledge_documents (
  tenant_id    uuid NOT NULL,
  id           uuid NOT NULL DEFAULT gen_random_uuid(),
  source_id    uuid NOT NULL,
  chatbot_id   uuid NOT NULL,
  doc_key      text NOT NULL CHECK (length(doc_key) <= 2048),
  url          text CHECK (length(url) <= 2048),
  title        text NOT NULL DEFAULT '' CHECK (length(title) <= 500),
  checksum     text NOT NULL,
  chars        int NOT NULL DEFAULT 0,
  created_at   timestamptz NOT NULL DEFAULT now(),
  updated_at   timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, id),
  UNIQUE (tenant_id, source_id, doc_key),
  FOREIGN KEY (tenant_id, source_id) REFERENCES parley.knowledge_sources (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX knowledge_documents__tenant_id_chatbot_id_idx ON parley.knowledge_documents (tenant_id, chatbot_id);

-- The unit of retrieval. tsv is built with the chatbot's text-search configuration at
-- write time; embedding is filled by the queue (NULL until then, FTS still finds it).
CREATE TABLE parley.knowledge_chunks (
  tenant_id        uuid NOT NULL,
  id               bigint GENERATED ALWAYS AS IDENTITY,
  chatbot_id       uuid NOT NULL,
  document_id      uuid NOT NULL,
  ordinal          int NOT NULL CHECK (ordinal >= 0),
  text             text NOT NULL CHECK (length(text) BETWEEN 1 AND 20000),
  heading_path     text NOT NULL DEFAULT '',
  title            text NOT NULL DEFAULT '',
  url              text,
  checksum         text NOT NULL,
  ts_config        regconfig NOT NULL DEFAULT 'simple',
  tsv              tsvector NOT NULL,
  embedding        public.vector(384),
  embedding_model  text,
  created_at       timestamptz NOT NULL DEFAULT now(),
  updated_at       timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, id),
  FOREIGN KEY (tenant_id, document_id) REFERENCES parley.knowledge_documents (tenant_id, id) ON DELETE CASCADE
);
-- Not unique: a re-import moves kept chunks to new ordinals in one statement.
CREATE INDEX knowledge_chunks__tenant_id_document_id_ordinal_idx ON parley.knowledge_chunks (tenant_id, document_id, ordinal);
-- Exact kNN and the FTS filter both start from the chatbot's rows (RLS keeps @@ from
-- being an index qual for the app role: see docs/knowledge.md).
CREATE INDEX knowledge_chunks__tenant_id_chatbot_id_idx ON parley.knowledge_chunks (tenant_id, chatbot_id);
CREATE INDEX knowledge_chunks__tsv_idx ON parley.knowledge_chunks USING gin (tsv);
CREATE INDEX knowledge_chunks__embedding_idx ON parley.knowledge_chunks USING hnsw (embedding public.vector_cosine_ops);

-- Chunks waiting for an embedding; drained with FOR UPDATE SKIP LOCKED by the jobs
-- process (and the dev worker in `parley serve`).
CREATE TABLE parley.embedding_jobs (
  tenant_id    uuid NOT NULL,
  chunk_id     bigint NOT NULL,
  enqueued_at  timestamptz NOT NULL DEFAULT now(),
  not_before   timestamptz NOT NULL DEFAULT now(),
  attempts     int NOT NULL DEFAULT 0,
  last_error   text,
  PRIMARY KEY (tenant_id, chunk_id),
  FOREIGN KEY (tenant_id, chunk_id) REFERENCES parley.knowledge_chunks (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX embedding_jobs__tenant_id_not_before_idx ON parley.embedding_jobs (tenant_id, not_before);

-- LLM provider per tenant (chatbot_id NULL) or per chatbot; the key is AES-GCM
-- encrypted by the server with a key derived from its secret, never stored in clear.
CREATE TABLE parley.llm_settings (
  tenant_id    uuid NOT NULL,
  id           uuid NOT NULL DEFAULT gen_random_uuid(),
  chatbot_id   uuid,
  provider     text NOT NULL CHECK (provider IN ('openai', 'anthropic', 'none')),
  base_url     text CHECK (length(base_url) <= 500),
  model        text CHECK (length(model) <= 200),
  api_key_enc  bytea,
  updated_at   timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, id),
  FOREIGN KEY (tenant_id, chatbot_id) REFERENCES parley.chatbots (tenant_id, id) ON DELETE CASCADE
);
CREATE UNIQUE INDEX llm_settings__tenant_id_chatbot_id_idx
  ON parley.llm_settings (tenant_id, coalesce(chatbot_id, '00000000-0000-0000-0000-000000000000'::uuid));

-- One row per visitor question the assistant answered (or refused): the source of
-- miss counting, top/unanswered questions and AI analytics. question_norm is the only
-- text kept here (lower-cased, punctuation stripped, truncated).
CREATE TABLE parley.assistant_turns (
  tenant_id         uuid NOT NULL,
  id                bigint GENERATED ALWAYS AS IDENTITY,
  chatbot_id        uuid NOT NULL,
  conversation_id   uuid NOT NULL,
  question_message_id bigint,
  reply_message_id  bigint,
  question_norm     text NOT NULL DEFAULT '',
  outcome           text NOT NULL CHECK (outcome IN ('answered', 'unknown', 'quota', 'error', 'handoff')),
  grounded          boolean NOT NULL DEFAULT false,
  provider          text,
  passages          int NOT NULL DEFAULT 0,
  first_token_ms    int,
  total_ms          int,
  created_at        timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, id),
  FOREIGN KEY (tenant_id, conversation_id) REFERENCES parley.conversations (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX assistant_turns__tenant_id_conversation_id_idx ON parley.assistant_turns (tenant_id, conversation_id, id DESC);
CREATE INDEX assistant_turns__tenant_id_created_at_idx ON parley.assistant_turns (tenant_id, created_at);

-- Thumbs on one bot message (one vote per message; a second vote replaces the first).
CREATE TABLE parley.message_feedback (
  tenant_id        uuid NOT NULL,
  message_id       bigint NOT NULL,
  conversation_id  uuid NOT NULL,
  chatbot_id       uuid NOT NULL,
  value            text NOT NULL CHECK (value IN ('up', 'down')),
  comment          text NOT NULL DEFAULT '' CHECK (length(comment) <= 2000),
  triaged_at       timestamptz,
  triaged_by       uuid,
  created_at       timestamptz NOT NULL DEFAULT now(),
  updated_at       timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, message_id),
  FOREIGN KEY (tenant_id, conversation_id) REFERENCES parley.conversations (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX message_feedback__tenant_id_value_idx ON parley.message_feedback (tenant_id, value, created_at DESC);

-- End-of-chat rating, one per conversation (a second rating replaces the first).
CREATE TABLE parley.conversation_ratings (
  tenant_id        uuid NOT NULL,
  conversation_id  uuid NOT NULL,
  chatbot_id       uuid NOT NULL,
  score            int NOT NULL CHECK (score BETWEEN 1 AND 5),
  comment          text NOT NULL DEFAULT '' CHECK (length(comment) <= 2000),
  created_at       timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, conversation_id),
  FOREIGN KEY (tenant_id, conversation_id) REFERENCES parley.conversations (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX conversation_ratings__tenant_id_created_at_idx ON parley.conversation_ratings (tenant_id, created_at);

-- Per-day rollup per chatbot, written by the jobs process; the analyst views read it.
CREATE TABLE parley.daily_stats (
  tenant_id              uuid NOT NULL,
  chatbot_id             uuid NOT NULL,
  day                    date NOT NULL,
  conversations          int NOT NULL DEFAULT 0,
  closed                 int NOT NULL DEFAULT 0,
  closed_without_human   int NOT NULL DEFAULT 0,
  ai_turns               int NOT NULL DEFAULT 0,
  ai_unanswered          int NOT NULL DEFAULT 0,
  ratings                int NOT NULL DEFAULT 0,
  rating_sum             int NOT NULL DEFAULT 0,
  thumbs_up              int NOT NULL DEFAULT 0,
  thumbs_down            int NOT NULL DEFAULT 0,
  computed_at            timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, chatbot_id, day)
);

-- Global: the schedule of the jobs process. A runner claims a due row by moving its
-- next_run_at forward in a committed transaction (FOR UPDATE SKIP LOCKED), so two
-- runners never run the same job twice; external = scheduled by pg_cron instead.
CREATE TABLE parley.job_schedules (
  name              text PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9_]{1,62}$'),
  every             interval NOT NULL,
  next_run_at       timestamptz NOT NULL DEFAULT now(),
  enabled           boolean NOT NULL DEFAULT true,
  external          boolean NOT NULL DEFAULT false,
  claimed_by        text,
  last_started_at   timestamptz,
  last_finished_at  timestamptz,
  last_status       text,
  last_result       jsonb,
  runs              bigint NOT NULL DEFAULT 0
);
