-- Channel threads: the thread a channel destination keeps per conversation (a Telegram forum
-- topic). Written by the drainer when an adapter creates the thread; rules in sql/84_telegram.sql.
-- depends: 0016.channel_secrets

CREATE TABLE parley.channel_threads (
  tenant_id        uuid NOT NULL,
  destination_id   uuid NOT NULL,
  conversation_id  uuid NOT NULL,
  -- The channel's own id for the thread (Telegram: message_thread_id).
  thread_ref       text NOT NULL CHECK (length(thread_ref) BETWEEN 1 AND 200),
  created_at       timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, destination_id, conversation_id),
  FOREIGN KEY (tenant_id, destination_id) REFERENCES parley.outbox_destinations (tenant_id, id) ON DELETE CASCADE
);
-- Inbound: which conversation a thread of a destination belongs to.
CREATE UNIQUE INDEX channel_threads__tenant_id_destination_id_thread_ref_idx
  ON parley.channel_threads (tenant_id, destination_id, thread_ref);
