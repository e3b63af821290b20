-- Console: what the operator console keeps for itself: canned replies (saved per
-- tenant, inserted by typing "/") and each agent's read position per conversation
-- (unread counts in the inbox). Rules live in sql/70_console.sql.
-- depends: 0004.knowledge

CREATE TABLE parley.canned_replies (
  tenant_id   uuid NOT NULL REFERENCES parley.tenants(id) ON DELETE CASCADE,
  id          uuid NOT NULL DEFAULT gen_random_uuid(),
  shortcut    text NOT NULL CHECK (shortcut ~ '^[a-z0-9][a-z0-9_-]{0,31}$'),
  body        text NOT NULL CHECK (length(body) BETWEEN 1 AND 4000),
  created_by  uuid,
  created_at  timestamptz NOT NULL DEFAULT now(),
  updated_at  timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, id),
  UNIQUE (tenant_id, shortcut)
);

-- One row per (agent, conversation) once the agent has opened it; unread = the
-- conversation's last visible message is newer than last_read_message_id.
CREATE TABLE parley.conversation_reads (
  tenant_id             uuid NOT NULL,
  user_id               uuid NOT NULL,
  conversation_id       uuid NOT NULL,
  last_read_message_id  bigint NOT NULL DEFAULT 0,
  read_at               timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, user_id, conversation_id),
  FOREIGN KEY (tenant_id, conversation_id) REFERENCES parley.conversations (tenant_id, id) ON DELETE CASCADE,
  FOREIGN KEY (tenant_id, user_id) REFERENCES parley.members (tenant_id, user_id) ON DELETE CASCADE
);
CREATE INDEX conversation_reads__tenant_id_conversation_id_idx
  ON parley.conversation_reads (tenant_id, conversation_id);
