-- Jobs: the schedule the jobs process registers (from jobs/scheduled/) and claims from, and the
-- one cross-tenant list it needs to run per-tenant jobs.

CREATE OR REPLACE FUNCTION parley.job_tenant_ids() RETURNS SETOF uuid
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = ''
AS $$ SELECT t.id FROM parley.tenants t WHERE t.deleted_at IS NULL ORDER BY t.id $$;
COMMENT ON FUNCTION parley.job_tenant_ids() IS
  'Ids of live tenants, for the jobs process to open one tenant transaction per tenant; ids only.';
ALTER FUNCTION parley.job_tenant_ids() OWNER TO parley_auth;
REVOKE ALL ON FUNCTION parley.job_tenant_ids() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION parley.job_tenant_ids() TO parley_jobs;

-- Schedule ----------------------------------------------------------------------------

-- The jobs are declared in Python, one module each (jobs/scheduled/): name, interval, SQL.
-- The jobs process registers them here before it claims anything; the rows keep what only
-- operators set (enabled, external) and the run history.
CREATE OR REPLACE FUNCTION parley.register_jobs(p_names text[], p_every interval[])
RETURNS int
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = ''
AS $$
DECLARE
  v_added int;
  v_changed int;
BEGIN
  IF cardinality(p_names) IS DISTINCT FROM cardinality(p_every) THEN
    PERFORM parley.raise_error(422, 'invalid_jobs', 'One interval per job name.');
  END IF;
  -- Written only when something changed: runners start often, the rows rarely change.
  INSERT INTO parley.job_schedules (name, every)
  SELECT j.name, j.every FROM unnest(p_names, p_every) AS j(name, every)
   WHERE NOT EXISTS (SELECT 1 FROM parley.job_schedules s WHERE s.name = j.name)
  ON CONFLICT (name) DO NOTHING;
  GET DIAGNOSTICS v_added = ROW_COUNT;
  UPDATE parley.job_schedules s SET every = j.every
    FROM unnest(p_names, p_every) AS j(name, every)
   WHERE s.name = j.name AND s.every IS DISTINCT FROM j.every;
  GET DIAGNOSTICS v_changed = ROW_COUNT;
  RETURN v_added + v_changed;
END $$;
COMMENT ON FUNCTION parley.register_jobs(text[], interval[]) IS
  'Jobs process, at start: make parley.job_schedules hold one row per declared job (name, interval) from the Python registry (jobs/scheduled/); new rows are due at once, existing rows keep enabled, external, next_run_at and history. Rows of jobs no longer declared are left alone (an older runner may still be running them during a deploy) and never claimed by a newer one. Returns the rows added or changed.';
REVOKE ALL ON FUNCTION parley.register_jobs(text[], interval[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION parley.register_jobs(text[], interval[]) TO parley_jobs;

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

-- Lag ---------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION parley.jobs_lag(p_names text[]) RETURNS double precision
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = ''
AS $$
  SELECT coalesce(extract(epoch FROM now() - min(s.next_run_at))::float8, 0)
    FROM parley.job_schedules s
   WHERE s.name = ANY (p_names) AND s.enabled AND NOT s.external AND s.next_run_at <= now()
$$;
COMMENT ON FUNCTION parley.jobs_lag(text[]) IS
  'Jobs: seconds the oldest due job among p_names (enabled, not left to pg_cron) has waited past its next_run_at; 0 when none is due. What `parley jobs` reports as its lag.';
REVOKE ALL ON FUNCTION parley.jobs_lag(text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION parley.jobs_lag(text[]) TO parley_jobs;
