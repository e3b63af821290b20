-- Operations: the `ops` schema DBAs read in psql (partitions, retention status), and the
-- indexes per-tenant retention deletes by age with.
-- depends: 0006.message_search_index

CREATE SCHEMA IF NOT EXISTS ops AUTHORIZATION parley_owner;
GRANT USAGE, CREATE ON SCHEMA ops TO parley_reporting;

-- Rows past a tenant's retention, oldest first, in batches (parley.apply_retention); the
-- old partitions these reach are the ones not yet droppable whole.
CREATE INDEX messages__tenant_id_created_at_idx ON parley.messages (tenant_id, created_at);
CREATE INDEX events__tenant_id_at_idx ON parley.events (tenant_id, at);
