-- The outbox: destinations (webhook endpoints, alert targets, channel threads), the deliveries
-- written in the same transaction as the state change that causes them (monthly partitions,
-- dropped whole once old: never grows without bound), every attempt in its own append-only
-- table, and token buckets for per-destination rate limits.
-- Rules (trigger, lease, take, record, replay) live in sql/80_outbox.sql.
-- depends: 0006.message_search_index

CREATE TABLE parley.outbox_destinations (
  tenant_id             uuid NOT NULL REFERENCES parley.tenants(id) ON DELETE CASCADE,
  id                    uuid NOT NULL DEFAULT gen_random_uuid(),
  kind                  text NOT NULL CHECK (kind IN ('webhook', 'email', 'slack', 'telegram')),
  name                  text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
  -- Where deliveries go (URL for webhook/slack, address for email); secrets live elsewhere.
  target                text NOT NULL CHECK (length(target) BETWEEN 1 AND 2048),
  config                jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(config) = 'object'),
  -- Domain event kinds (parley.events.kind) that write a delivery here; empty = none.
  event_kinds           text[] NOT NULL DEFAULT '{}' CHECK (cardinality(event_kinds) <= 50),
  -- Only events of this chatbot's conversations (NULL = every chatbot).
  chatbot_id            uuid,
  -- Ordered destinations send one delivery at a time in id order and stop at a failure.
  ordered               boolean NOT NULL DEFAULT false,
  -- Token buckets (parley.outbox_rate_buckets keys) every send here takes from.
  rate_keys             text[] NOT NULL DEFAULT '{}' CHECK (cardinality(rate_keys) <= 5),
  retry_window          interval NOT NULL DEFAULT interval '72 hours' CHECK (retry_window >= interval '72 hours'),
  pause_after           interval NOT NULL DEFAULT interval '5 days' CHECK (pause_after >= interval '1 hour'),
  status                text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'paused', 'disabled')),
  paused_reason         text CHECK (length(paused_reason) <= 1000),
  paused_at             timestamptz,
  failing_since         timestamptz,
  consecutive_failures  int NOT NULL DEFAULT 0,
  last_success_at       timestamptz,
  last_error            text CHECK (length(last_error) <= 1000),
  -- Nothing is sent here before this (retry_after of a 429, backoff, an empty token bucket).
  next_send_at          timestamptz NOT NULL DEFAULT '-infinity',
  leased_by             text CHECK (length(leased_by) <= 200),
  leased_until          timestamptz,
  created_at            timestamptz NOT NULL DEFAULT now(),
  updated_at            timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, id),
  FOREIGN KEY (tenant_id, chatbot_id) REFERENCES parley.chatbots (tenant_id, id) ON DELETE CASCADE
);
-- The drainers' cross-tenant scan for destinations that may send now.
CREATE INDEX outbox_destinations__next_send_at_idx ON parley.outbox_destinations (next_send_at)
  WHERE status = 'active';

-- One row per (event, destination); its delivery_key is the idempotency key every attempt and
-- every replay of it carries (webhook-id, Idempotency-Key).
CREATE SEQUENCE parley.outbox_id_seq AS bigint;
CREATE TABLE parley.outbox (
  tenant_id        uuid NOT NULL,
  id               bigint NOT NULL DEFAULT nextval('parley.outbox_id_seq'),
  created_at       timestamptz NOT NULL DEFAULT now(),
  destination_id   uuid NOT NULL,
  event_id         bigint,
  kind             text NOT NULL CHECK (length(kind) BETWEEN 1 AND 100),
  conversation_id  uuid,
  payload          jsonb NOT NULL CHECK (jsonb_typeof(payload) = 'object'),
  delivery_key     uuid NOT NULL DEFAULT gen_random_uuid(),
  status           text NOT NULL DEFAULT 'pending'
                   CHECK (status IN ('pending', 'delivered', 'failed', 'dead', 'replayed')),
  attempts         int NOT NULL DEFAULT 0,
  next_attempt_at  timestamptz NOT NULL DEFAULT now(),
  deadline         timestamptz NOT NULL,
  last_status_code int,
  last_error       text CHECK (length(last_error) <= 1000),
  finished_at      timestamptz,
  replay_of        bigint,
  -- No foreign key to the destination: its check would take a KEY SHARE lock on the destination
  -- row in every transaction that writes an event (multixacts on the chat hot path). Deleting
  -- a destination deletes its deliveries (parley.delete_destination).
  PRIMARY KEY (tenant_id, id, created_at)
) PARTITION BY RANGE (created_at);
ALTER SEQUENCE parley.outbox_id_seq OWNED BY parley.outbox.id;
-- The drain: a destination's pending deliveries in id order (small: rows leave it when done).
CREATE INDEX outbox__tenant_id_destination_id_id_pending_idx ON parley.outbox (tenant_id, destination_id, id)
  WHERE status = 'pending';
-- The delivery log and the dead-letter queue of a destination.
CREATE INDEX outbox__tenant_id_destination_id_status_id_idx ON parley.outbox (tenant_id, destination_id, status, id);
CREATE TABLE parley.outbox_default PARTITION OF parley.outbox DEFAULT;

-- Append-only: one row per attempt (status, latency, error, truncated response).
CREATE SEQUENCE parley.outbox_attempts_id_seq AS bigint;
CREATE TABLE parley.outbox_attempts (
  tenant_id        uuid NOT NULL,
  id               bigint NOT NULL DEFAULT nextval('parley.outbox_attempts_id_seq'),
  at               timestamptz NOT NULL DEFAULT now(),
  delivery_id      bigint NOT NULL,
  destination_id   uuid NOT NULL,
  attempt          int NOT NULL,
  outcome          text NOT NULL CHECK (outcome IN ('delivered', 'retry', 'failed')),
  status_code      int,
  latency_ms       int,
  error            text CHECK (length(error) <= 1000),
  request          jsonb CHECK (jsonb_typeof(request) = 'object'),
  response         text CHECK (length(response) <= 2000),
  worker           text CHECK (length(worker) <= 200),
  PRIMARY KEY (tenant_id, id, at)
) PARTITION BY RANGE (at);
ALTER SEQUENCE parley.outbox_attempts_id_seq OWNED BY parley.outbox_attempts.id;
CREATE INDEX outbox_attempts__tenant_id_delivery_id_idx ON parley.outbox_attempts (tenant_id, delivery_id);
CREATE TABLE parley.outbox_attempts_default PARTITION OF parley.outbox_attempts DEFAULT;

-- Token buckets: capacity tokens, refilled at per_second; a send takes one from every bucket
-- its destination names (Telegram: per chat, per group, per bot).
CREATE TABLE parley.outbox_rate_buckets (
  tenant_id    uuid NOT NULL REFERENCES parley.tenants(id) ON DELETE CASCADE,
  key          text NOT NULL CHECK (length(key) BETWEEN 1 AND 200),
  capacity     numeric NOT NULL CHECK (capacity >= 1),
  per_second   numeric NOT NULL CHECK (per_second > 0),
  tokens       numeric NOT NULL,
  refilled_at  timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, key)
);
