-- Analytics served from the daily rollup (issue 17, finding 9): the rollup gains the human
-- requests and first human response times of the conversations started that day, and each
-- tenant's rollup state records when it last ran, so readers take finished days from the
-- rollup and only the days since from the rows. Rules in sql/60_statistics.sql.
-- depends: 0006.message_search_index

ALTER TABLE parley.daily_stats
  ADD COLUMN human_requests int NOT NULL DEFAULT 0,
  ADD COLUMN first_response_s int[] NOT NULL DEFAULT '{}';

CREATE TABLE parley.daily_stats_state (
  tenant_id  uuid NOT NULL REFERENCES parley.tenants(id) ON DELETE CASCADE,
  rolled_at  timestamptz NOT NULL,
  PRIMARY KEY (tenant_id)
);
