-- Metrics: the figures /metrics reads from the database when scraped (pyapp/ops/metrics.py).
-- Across tenants, aggregated: no tenant's rows or ids leave this function.

-- What the snapshot needs from other domains (their own grants stay where they are).
GRANT EXECUTE ON FUNCTION parley.jobs_lag(text[]) TO parley_auth;
GRANT SELECT (name) ON parley.job_schedules TO parley_auth;

CREATE OR REPLACE FUNCTION parley.metrics_snapshot()
RETURNS TABLE (outbox_pending bigint, outbox_oldest_s double precision, jobs_lag_s double precision,
               messages_inserted bigint)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = ''
AS $$
  SELECT p.n, coalesce(extract(epoch FROM now() - p.oldest)::float8, 0),
         parley.jobs_lag(ARRAY(SELECT s.name FROM parley.job_schedules s)),
         (SELECT coalesce(sum(t.n_tup_ins), 0)::bigint
            FROM pg_catalog.pg_stat_user_tables t
            JOIN pg_catalog.pg_inherits i ON i.inhrelid = t.relid
           WHERE i.inhparent = 'parley.messages'::regclass)
    FROM (SELECT count(*) AS n, min(o.created_at) AS oldest
            FROM parley.outbox o WHERE o.status = 'pending') p
$$;
COMMENT ON FUNCTION parley.metrics_snapshot() IS
  'Metrics scrape (server and jobs roles): pending outbox deliveries of all tenants and the age in seconds of the oldest (0 when none; the pending partial index keeps it cheap), the jobs lag of every scheduled job (parley.jobs_lag), and rows ever inserted into parley.messages per the statistics collector (resets with the statistics, drops with a dropped partition). Aggregates only: no tenant id, no row.';
ALTER FUNCTION parley.metrics_snapshot() OWNER TO parley_auth;
REVOKE ALL ON FUNCTION parley.metrics_snapshot() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION parley.metrics_snapshot() TO parley_app, parley_jobs;
