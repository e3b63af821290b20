-- The drainers' lease asks "does this destination have a pending delivery due now?" (a conversation
-- waiting for a retry holds only itself, so a destination is not held as a whole while one waits):
-- a probe of this index rather than a walk through the destination's pending rows.
-- depends: 0009.outbox

CREATE INDEX outbox__tenant_id_destination_id_next_attempt_at_pending_idx
  ON parley.outbox (tenant_id, destination_id, next_attempt_at) WHERE status = 'pending';
