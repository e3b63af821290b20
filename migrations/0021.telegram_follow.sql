-- Telegram for agents, continued (issue 12): a conversation's codename (agents' name for the
-- visitor, /codename), the codename_set event, topic titles kept per thread (renamed when the
-- visitor's name or codename becomes known), how many parts of a split post a channel already
-- has (a retry sends only the rest), and long polling (getUpdates) for channels without a
-- webhook, its offset kept here. Rules in sql/84_telegram.sql, sql/86_telegram_polling.sql.
-- depends: 0019.telegram_inbound

ALTER TABLE parley.conversations ADD COLUMN codename text CHECK (length(codename) BETWEEN 1 AND 64);

ALTER TABLE parley.events DROP CONSTRAINT events_kind_check;
ALTER TABLE parley.events ADD CONSTRAINT events_kind_check
  CHECK (kind IN ('conversation_started', 'message_added', 'human_requested', 'claimed', 'released', 'assigned',
                  'closed', 'reopened', 'lead_captured', 'note_added', 'codename_set'));

-- The title the channel's thread has now (NULL: the one it was created with, unknown).
ALTER TABLE parley.channel_threads ADD COLUMN title text CHECK (length(title) BETWEEN 1 AND 128);

-- Parts of a split post (Telegram: 4096 UTF-16 units each) already delivered by earlier attempts.
ALTER TABLE parley.outbox ADD COLUMN parts_sent int NOT NULL DEFAULT 0 CHECK (parts_sent >= 0);

-- A channel that fetches its updates (getUpdates) instead of receiving a webhook: one poller at a
-- time (a lease that expires when the poller dies), the next update_id to ask for.
CREATE TABLE parley.channel_polls (
  tenant_id        uuid NOT NULL,
  destination_id   uuid NOT NULL,
  next_offset      bigint NOT NULL DEFAULT 0,
  -- deleteWebhook was called (getUpdates and a webhook exclude each other).
  webhook_cleared  boolean NOT NULL DEFAULT false,
  polled_at        timestamptz,
  last_error       text CHECK (length(last_error) <= 1000),
  leased_by        text CHECK (length(leased_by) <= 200),
  leased_until     timestamptz,
  created_at       timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, destination_id),
  FOREIGN KEY (tenant_id, destination_id) REFERENCES parley.outbox_destinations (tenant_id, id) ON DELETE CASCADE
);

-- Existing Telegram channels post renames (a lead's name, a codename) too.
UPDATE parley.outbox_destinations
   SET event_kinds = event_kinds || ARRAY['lead_captured', 'codename_set']
 WHERE kind = 'telegram' AND NOT 'codename_set' = ANY (event_kinds);
