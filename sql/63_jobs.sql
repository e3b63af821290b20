-- Jobs: the schedule the jobs process claims from (jobs/), and the one cross-tenant list it
-- needs to run per-tenant jobs.

CREATE OR REPLACE FUNCTION parley.job_tenant_ids() RETURNS SETOF uuid
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = ''
AS $$ SELECT t.id FROM parley.tenants t WHERE t.deleted_at IS NULL ORDER BY t.id $$;
COMMENT ON FUNCTION parley.job_tenant_ids() IS
  'Ids of live tenants, for the jobs process to open one tenant transaction per tenant; ids only.';
ALTER FUNCTION parley.job_tenant_ids() OWNER TO parley_auth;
REVOKE ALL ON FUNCTION parley.job_tenant_ids() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION parley.job_tenant_ids() TO parley_jobs;

-- Schedule ----------------------------------------------------------------------------

INSERT INTO parley.job_schedules (name, every) VALUES
  ('close_idle_conversations', interval '1 minute'),
  ('prune_rate_counters',      interval '5 minutes'),
  ('rollup_daily_stats',       interval '10 minutes'),
  ('retention',                interval '1 hour'),
  ('maintain_partitions',      interval '1 day'),
  ('enqueue_stale_embeddings', interval '1 hour'),
  ('compact_usage',            interval '1 day')
ON CONFLICT (name) DO UPDATE SET every = EXCLUDED.every;

REVOKE ALL ON parley.job_schedules FROM parley_app;
GRANT SELECT, UPDATE (next_run_at, claimed_by, last_started_at, last_finished_at, last_status, last_result, runs)
  ON parley.job_schedules TO parley_jobs;

-- Claim the most overdue job: the row is locked (others skip it) and its next_run_at
-- moved forward in the same committed statement, so a second runner never gets it.
CREATE OR REPLACE FUNCTION parley.claim_due_job(p_worker text, p_only text[] DEFAULT NULL)
RETURNS TABLE (name text, every interval, runs bigint)
LANGUAGE sql VOLATILE
AS $$
  UPDATE parley.job_schedules s
     SET next_run_at = now() + s.every, claimed_by = p_worker, last_started_at = now(),
         last_status = 'running', runs = s.runs + 1
   WHERE s.name = (SELECT d.name FROM parley.job_schedules d
                    WHERE d.enabled AND NOT d.external AND d.next_run_at <= now()
                      AND (p_only IS NULL OR d.name = ANY (p_only))
                    ORDER BY d.next_run_at
                    LIMIT 1
                    FOR UPDATE SKIP LOCKED)
     AND s.next_run_at <= now()
  RETURNING s.name, s.every, s.runs
$$;
COMMENT ON FUNCTION parley.claim_due_job(text, text[]) IS
  'Jobs: claim one due scheduled job (FOR UPDATE SKIP LOCKED, next_run_at moved forward before commit) so concurrent runners never run it twice; empty when nothing is due.';

CREATE OR REPLACE FUNCTION parley.finish_job(p_name text, p_status text, p_result jsonb DEFAULT '{}')
RETURNS void
LANGUAGE sql VOLATILE
AS $$
  UPDATE parley.job_schedules s
     SET last_finished_at = now(), last_status = p_status, last_result = p_result
   WHERE s.name = p_name
$$;
COMMENT ON FUNCTION parley.finish_job(text, text, jsonb) IS 'Jobs: record how a claimed scheduled job ended (ok or error) and its result.';
REVOKE ALL ON FUNCTION parley.claim_due_job(text, text[]), parley.finish_job(text, text, jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION parley.claim_due_job(text, text[]), parley.finish_job(text, text, jsonb) TO parley_jobs;
