-- The days since the rollup's last run are counted from the rows (parley.day_stats_from_rows):
-- conversations by (tenant, start time), so that count reads one day of a tenant's
-- conversations, not all of them (400,000 in bench/history.py).
-- depends: 0027.analytics_rollups

CREATE INDEX conversations__tenant_id_created_at_idx ON parley.conversations (tenant_id, created_at);
