-- Conversations: chatbots, conversations, messages (monthly partitions), events, leads,
-- plan limits with per-tenant overrides, sharded usage counters and rate-limit windows.
-- Rules (functions, policies, grants) live in sql/40_chatbots.sql .. sql/43_usage.sql.
-- depends: 0001.tenancy

-- Composite (tenant_id, x) GIN indexes: messages are searched inside one tenant.
CREATE EXTENSION IF NOT EXISTS btree_gin SCHEMA parley;

-- Plan limits. 0 means unlimited; values are seeded in sql/42_limits.sql.
ALTER TABLE parley.plans
  ADD COLUMN max_chatbots           int NOT NULL DEFAULT 1    CHECK (max_chatbots >= 0),
  ADD COLUMN max_seats              int NOT NULL DEFAULT 3    CHECK (max_seats >= 0),
  ADD COLUMN max_open_conversations int NOT NULL DEFAULT 50   CHECK (max_open_conversations >= 0),
  ADD COLUMN msgs_per_min_chatbot   int NOT NULL DEFAULT 60   CHECK (msgs_per_min_chatbot >= 0),
  ADD COLUMN msgs_per_min_ip        int NOT NULL DEFAULT 20   CHECK (msgs_per_min_ip >= 0),
  ADD COLUMN ai_msgs_per_day        int NOT NULL DEFAULT 200  CHECK (ai_msgs_per_day >= 0),
  ADD COLUMN retention_days         int NOT NULL DEFAULT 30   CHECK (retention_days >= 0),
  ADD COLUMN allow_hide_branding    boolean NOT NULL DEFAULT false;

-- Per-tenant overrides set by the platform operator: NULL inherits the plan, 0 is unlimited.
CREATE TABLE parley.tenant_limits (
  tenant_id               uuid NOT NULL REFERENCES parley.tenants(id) ON DELETE CASCADE,
  max_chatbots            int CHECK (max_chatbots >= 0),
  max_seats               int CHECK (max_seats >= 0),
  max_open_conversations  int CHECK (max_open_conversations >= 0),
  msgs_per_min_chatbot    int CHECK (msgs_per_min_chatbot >= 0),
  msgs_per_min_ip         int CHECK (msgs_per_min_ip >= 0),
  ai_msgs_per_day         int CHECK (ai_msgs_per_day >= 0),
  retention_days          int CHECK (retention_days >= 0),
  allow_hide_branding     boolean,
  note                    text CHECK (length(note) <= 500),
  updated_at              timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id)
);

CREATE TABLE parley.chatbots (
  tenant_id        uuid NOT NULL REFERENCES parley.tenants(id) ON DELETE CASCADE,
  id               uuid NOT NULL DEFAULT gen_random_uuid(),
  name             text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
  -- Public (not secret) widget key, random and server-generated.
  public_key       text NOT NULL DEFAULT 'pk_' || replace(gen_random_uuid()::text, '-', '')
                                               || replace(gen_random_uuid()::text, '-', '')
                   CHECK (public_key ~ '^pk_[A-Za-z0-9_-]{16,80}$'),
  allowed_origins  text[] NOT NULL DEFAULT '{}' CHECK (cardinality(allowed_origins) <= 50),
  config           jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(config) = 'object'),
  created_at       timestamptz NOT NULL DEFAULT now(),
  updated_at       timestamptz NOT NULL DEFAULT now(),
  deleted_at       timestamptz,
  PRIMARY KEY (tenant_id, id),
  UNIQUE (tenant_id, public_key)
);
-- Global lookup of a widget key before the tenant is known (parley.widget_chatbot).
CREATE INDEX chatbots__public_key_idx ON parley.chatbots (public_key);

CREATE TABLE parley.conversations (
  tenant_id         uuid NOT NULL REFERENCES parley.tenants(id) ON DELETE CASCADE,
  id                uuid NOT NULL DEFAULT gen_random_uuid(),
  chatbot_id        uuid NOT NULL,
  status            text NOT NULL DEFAULT 'bot' CHECK (status IN ('bot', 'waiting_human', 'human', 'closed')),
  assignee_id       uuid,
  visitor_id        uuid NOT NULL,
  page_url          text CHECK (length(page_url) <= 2048),
  referrer          text CHECK (length(referrer) <= 2048),
  user_agent        text CHECK (length(user_agent) <= 512),
  locale            text CHECK (length(locale) <= 35),
  country           text CHECK (length(country) <= 2),
  ip                inet,
  created_at        timestamptz NOT NULL DEFAULT now(),
  last_activity_at  timestamptz NOT NULL DEFAULT now(),
  closed_at         timestamptz,
  bot_misses        int NOT NULL DEFAULT 0,
  last_message_id   bigint,
  PRIMARY KEY (tenant_id, id),
  FOREIGN KEY (tenant_id, chatbot_id) REFERENCES parley.chatbots (tenant_id, id),
  -- Removing a member unassigns their conversations.
  FOREIGN KEY (tenant_id, assignee_id) REFERENCES parley.members (tenant_id, user_id) ON DELETE SET NULL (assignee_id)
);
CREATE INDEX conversations__tenant_id_last_activity_at_idx ON parley.conversations (tenant_id, last_activity_at DESC);
CREATE INDEX conversations__tenant_id_status_last_activity_at_idx ON parley.conversations (tenant_id, status, last_activity_at DESC);
CREATE INDEX conversations__tenant_id_assignee_id_idx ON parley.conversations (tenant_id, assignee_id, last_activity_at DESC)
  WHERE assignee_id IS NOT NULL;
CREATE INDEX conversations__tenant_id_chatbot_id_created_at_idx ON parley.conversations (tenant_id, chatbot_id, created_at DESC);
CREATE INDEX conversations__tenant_id_visitor_id_idx ON parley.conversations (tenant_id, visitor_id);
-- Open conversations: the concurrent-open limit counts them, idle close scans them.
CREATE INDEX conversations__tenant_id_open_idx ON parley.conversations (tenant_id, last_activity_at)
  WHERE status <> 'closed';

-- Message ids come from one sequence; within a conversation they increase in commit order
-- because parley.post_message holds the conversation row lock until commit.
CREATE SEQUENCE parley.messages_id_seq AS bigint;
CREATE TABLE parley.messages (
  tenant_id        uuid NOT NULL,
  id               bigint NOT NULL DEFAULT nextval('parley.messages_id_seq'),
  created_at       timestamptz NOT NULL DEFAULT now(),
  conversation_id  uuid NOT NULL,
  author           text NOT NULL CHECK (author IN ('visitor', 'bot', 'agent', 'system', 'note')),
  author_id        uuid,
  body             text NOT NULL CHECK (length(body) <= 16000),
  client_id        text CHECK (length(client_id) BETWEEN 1 AND 100),
  meta             jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(meta) = 'object'),
  PRIMARY KEY (tenant_id, id, created_at),
  FOREIGN KEY (tenant_id, conversation_id) REFERENCES parley.conversations (tenant_id, id) ON DELETE CASCADE
) PARTITION BY RANGE (created_at);
ALTER SEQUENCE parley.messages_id_seq OWNED BY parley.messages.id;
CREATE INDEX messages__tenant_id_conversation_id_id_idx ON parley.messages (tenant_id, conversation_id, id);
-- Idempotent resends: checked under the conversation row lock (a unique index cannot span partitions).
CREATE INDEX messages__tenant_id_conversation_id_client_id_idx ON parley.messages (tenant_id, conversation_id, client_id)
  WHERE client_id IS NOT NULL;
-- Full-text search inside one tenant ('simple': no stemming, works for every language);
-- queried only by parley.search_conversation_ids with this exact expression.
CREATE INDEX messages__tenant_id_body_tsv_idx ON parley.messages
  USING gin (tenant_id, to_tsvector('simple'::regconfig, body));
CREATE TABLE parley.messages_default PARTITION OF parley.messages DEFAULT;

-- Every domain event, the table the realtime relay and SSE resume read (NOTIFY only wakes them).
CREATE SEQUENCE parley.events_id_seq AS bigint;
CREATE TABLE parley.events (
  tenant_id        uuid NOT NULL,
  id               bigint NOT NULL DEFAULT nextval('parley.events_id_seq'),
  at               timestamptz NOT NULL DEFAULT now(),
  kind             text NOT NULL CHECK (kind IN ('conversation_started', 'message_added', 'human_requested', 'claimed',
                                                 'released', 'assigned', 'closed', 'reopened', 'lead_captured',
                                                 'note_added')),
  conversation_id  uuid,
  message_id       bigint,
  actor_kind       text NOT NULL,
  actor_id         text,
  data             jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(data) = 'object'),
  PRIMARY KEY (tenant_id, id, at),
  FOREIGN KEY (tenant_id, conversation_id) REFERENCES parley.conversations (tenant_id, id) ON DELETE CASCADE
) PARTITION BY RANGE (at);
ALTER SEQUENCE parley.events_id_seq OWNED BY parley.events.id;
CREATE INDEX events__tenant_id_conversation_id_id_idx ON parley.events (tenant_id, conversation_id, id);
CREATE TABLE parley.events_default PARTITION OF parley.events DEFAULT;

CREATE TABLE parley.leads (
  tenant_id        uuid NOT NULL REFERENCES parley.tenants(id) ON DELETE CASCADE,
  id               uuid NOT NULL DEFAULT gen_random_uuid(),
  chatbot_id       uuid,
  conversation_id  uuid,
  name             text CHECK (length(name) <= 200),
  email            text CHECK (length(email) <= 320),
  phone            text CHECK (length(phone) <= 50),
  custom           jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(custom) = 'object'),
  status           text NOT NULL DEFAULT 'new' CHECK (status IN ('new', 'contacted', 'qualified', 'won', 'lost')),
  created_at       timestamptz NOT NULL DEFAULT now(),
  updated_at       timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, id),
  FOREIGN KEY (tenant_id, chatbot_id) REFERENCES parley.chatbots (tenant_id, id),
  FOREIGN KEY (tenant_id, conversation_id) REFERENCES parley.conversations (tenant_id, id) ON DELETE SET NULL (conversation_id)
);
-- One lead per conversation: a second lead form updates it.
CREATE UNIQUE INDEX leads__tenant_id_conversation_id_idx ON parley.leads (tenant_id, conversation_id)
  WHERE conversation_id IS NOT NULL;
CREATE INDEX leads__tenant_id_created_at_idx ON parley.leads (tenant_id, created_at DESC);
CREATE INDEX leads__tenant_id_status_idx ON parley.leads (tenant_id, status, created_at DESC);

-- Usage: N shard rows per tenant/day/metric (shard = backend pid mod N), summed on read,
-- so concurrent writers rarely touch the same row. See sql/43_usage.sql.
CREATE TABLE parley.usage_counters (
  tenant_id  uuid NOT NULL REFERENCES parley.tenants(id) ON DELETE CASCADE,
  day        date NOT NULL,
  metric     text NOT NULL CHECK (metric IN ('messages', 'ai_messages', 'conversations', 'active_seats')),
  shard      smallint NOT NULL CHECK (shard >= 0),
  value      bigint NOT NULL DEFAULT 0,
  PRIMARY KEY (tenant_id, day, metric, shard)
);
-- Who was an active seat on a day (the active_seats counter counts first appearances).
CREATE TABLE parley.usage_seats (
  tenant_id  uuid NOT NULL REFERENCES parley.tenants(id) ON DELETE CASCADE,
  day        date NOT NULL,
  user_id    uuid NOT NULL,
  PRIMARY KEY (tenant_id, day, user_id)
);

-- Fixed one-minute rate windows for visitor messages, sharded like usage counters.
CREATE TABLE parley.rate_counters (
  tenant_id     uuid NOT NULL REFERENCES parley.tenants(id) ON DELETE CASCADE,
  scope         text NOT NULL CHECK (scope IN ('chatbot', 'ip')),
  key           text NOT NULL,
  window_start  timestamptz NOT NULL,
  shard         smallint NOT NULL CHECK (shard >= 0),
  hits          int NOT NULL DEFAULT 0,
  PRIMARY KEY (tenant_id, scope, key, window_start, shard)
);
