-- Telegram inbound: updates seen (deduplicated on update_id), members' Telegram users linked by a
-- one-time code, the codes. Rules in sql/85_telegram_inbound.sql.
-- depends: 0017.telegram

CREATE TABLE parley.channel_updates (
  tenant_id       uuid NOT NULL,
  destination_id  uuid NOT NULL,
  update_id       bigint NOT NULL,
  received_at     timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, destination_id, update_id),
  FOREIGN KEY (tenant_id, destination_id) REFERENCES parley.outbox_destinations (tenant_id, id) ON DELETE CASCADE
);
-- Pruning: updates older than Telegram's own retention (24 h) are never sent again.
CREATE INDEX channel_updates__tenant_id_received_at_idx ON parley.channel_updates (tenant_id, received_at);

CREATE TABLE parley.channel_member_links (
  tenant_id         uuid NOT NULL,
  kind              text NOT NULL CHECK (kind IN ('telegram')),
  external_user_id  text NOT NULL CHECK (length(external_user_id) BETWEEN 1 AND 100),
  user_id           uuid NOT NULL,
  created_at        timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, kind, external_user_id),
  FOREIGN KEY (tenant_id, user_id) REFERENCES parley.members (tenant_id, user_id) ON DELETE CASCADE
);
CREATE INDEX channel_member_links__tenant_id_user_id_idx ON parley.channel_member_links (tenant_id, user_id);

CREATE TABLE parley.channel_link_codes (
  tenant_id   uuid NOT NULL,
  code_hash   bytea NOT NULL CHECK (length(code_hash) = 32),
  user_id     uuid NOT NULL,
  expires_at  timestamptz NOT NULL,
  PRIMARY KEY (tenant_id, code_hash),
  FOREIGN KEY (tenant_id, user_id) REFERENCES parley.members (tenant_id, user_id) ON DELETE CASCADE
);

-- Members acting from a channel (begin_request's 'channel' actor) are audited as such.
ALTER TABLE parley.audit_log DROP CONSTRAINT audit_log_actor_kind_check;
ALTER TABLE parley.audit_log ADD CONSTRAINT audit_log_actor_kind_check
  CHECK (actor_kind IN ('user', 'api_key', 'system', 'visitor', 'service', 'staff', 'channel'));
