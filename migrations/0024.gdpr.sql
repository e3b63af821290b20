-- GDPR: a deleted workspace is purged for real after a grace period, and the purge leaves a
-- record without personal data.
-- depends: 0006.message_search_index

-- When a deleted workspace's rows may be purged (deleted_at + grace); NULL while it is live.
-- Restoring it during the grace clears both.
ALTER TABLE parley.tenants ADD COLUMN purge_after timestamptz;
CREATE INDEX tenants__purge_after_idx ON parley.tenants (purge_after) WHERE purge_after IS NOT NULL;

-- What was purged and when: ids and times only (the tenant's name and slug go with it).
CREATE TABLE parley.tenant_purges (
  tenant_id     uuid PRIMARY KEY,
  deleted_at    timestamptz,
  purge_after   timestamptz NOT NULL,
  purged_at     timestamptz NOT NULL DEFAULT now()
);
