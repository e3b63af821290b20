-- The message search index without a pending list: with GIN's fastupdate, inserts queue their
-- entries and the insert that finds the list over gin_pending_list_limit merges it into the
-- index (185 ms in the chat benchmark), holding its conversation and the tenant's event
-- lock meanwhile, which stalls that tenant's live delivery. Direct inserts cost no more that
-- we could measure for chat-sized messages. Partitions created later inherit the option.
-- depends: 0005.console

DROP INDEX parley.messages__tenant_id_body_tsv_idx;
CREATE INDEX messages__tenant_id_body_tsv_idx ON parley.messages
  USING gin (tenant_id, to_tsvector('simple'::regconfig, body)) WITH (fastupdate = off);
