-- Usage: per-tenant daily counters (messages, ai_messages, conversations, active_seats).
--
-- Design: a single counter row per tenant/day/metric would be a hot row: every message of
-- a busy tenant would queue on its row lock until the previous writer commits. Instead each
-- metric has up to 16 shard rows per tenant and day; a writer upserts the shard chosen by
-- its backend pid (pg_backend_pid() % 16), so concurrent transactions on different
-- connections almost never touch the same row, and an upsert (INSERT ... ON CONFLICT DO
-- UPDATE) is exact under concurrency: colliding writers simply wait for each other. Readers
-- sum the shards (at most 16 rows through the primary key). Past days can be folded into
-- shard 0 by parley.compact_usage. active_seats counts first appearances of a user on a day
-- (usage_seats, ON CONFLICT DO NOTHING), so it is exact too.

SELECT parley.apply_tenant_policies('parley.usage_counters');
SELECT parley.apply_tenant_policies('parley.usage_seats');
GRANT SELECT, INSERT, UPDATE ON parley.usage_counters, parley.usage_seats TO parley_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON parley.usage_counters, parley.usage_seats TO parley_jobs;

CREATE OR REPLACE FUNCTION parley.bump_usage(p_metric text, p_n bigint DEFAULT 1)
RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
  IF coalesce(p_n, 0) = 0 THEN
    RETURN;
  END IF;
  INSERT INTO parley.usage_counters AS u (tenant_id, day, metric, shard, value)
  VALUES (parley.current_tenant_id(), (now() AT TIME ZONE 'UTC')::date, p_metric, pg_backend_pid() % 16, p_n)
  ON CONFLICT (tenant_id, day, metric, shard) DO UPDATE SET value = u.value + EXCLUDED.value;
END $$;
COMMENT ON FUNCTION parley.bump_usage(text, bigint) IS
  'Add p_n to today''s (UTC) counter of p_metric for the current tenant, in the shard row of this backend (no single hot row).';

-- Renamed: parley.lock_limit (sql/42_limits.sql) guards every counted limit, usage caps included.
DROP FUNCTION IF EXISTS parley.lock_usage_cap(text);

CREATE OR REPLACE FUNCTION parley.note_active_seat(p_user_id uuid)
RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
  v_new boolean;
BEGIN
  IF p_user_id IS NULL THEN
    RETURN;
  END IF;
  INSERT INTO parley.usage_seats (tenant_id, day, user_id)
  VALUES (parley.current_tenant_id(), (now() AT TIME ZONE 'UTC')::date, p_user_id)
  ON CONFLICT DO NOTHING
  RETURNING true INTO v_new;
  IF v_new THEN
    PERFORM parley.bump_usage('active_seats', 1);
  END IF;
END $$;
COMMENT ON FUNCTION parley.note_active_seat(uuid) IS
  'Record that a member acted today (UTC); the first time per day bumps the active_seats counter.';

CREATE OR REPLACE FUNCTION parley.usage_on(p_metric text, p_day date DEFAULT NULL)
RETURNS bigint
LANGUAGE sql STABLE
AS $$
  -- The day in a sub-SELECT: under RLS, timezone() is not leakproof, so written inline it
  -- would filter every day of the tenant's history instead of bounding the index scan.
  SELECT coalesce(sum(u.value), 0)::bigint FROM parley.usage_counters u
   WHERE u.tenant_id = parley.current_tenant_id() AND u.metric = p_metric
     AND u.day = (SELECT coalesce(p_day, (now() AT TIME ZONE 'UTC')::date))
$$;
COMMENT ON FUNCTION parley.usage_on(text, date) IS
  'The current tenant''s total of p_metric on a day (default today, UTC): the sum of its shard rows.';

CREATE OR REPLACE FUNCTION parley.compact_usage(p_before date DEFAULT NULL)
RETURNS int
LANGUAGE sql VOLATILE
AS $$
  -- Fold the shards of finished days into shard 0 (one row per tenant/day/metric).
  WITH gone AS (
    DELETE FROM parley.usage_counters u
     WHERE u.tenant_id = parley.current_tenant_id() AND u.shard <> 0
       AND u.day < coalesce(p_before, (now() AT TIME ZONE 'UTC')::date)
    RETURNING u.tenant_id, u.day, u.metric, u.value
  ), sums AS (
    SELECT g.tenant_id, g.day, g.metric, sum(g.value)::bigint AS value FROM gone g GROUP BY 1, 2, 3
  ), folded AS (
    INSERT INTO parley.usage_counters AS u (tenant_id, day, metric, shard, value)
    SELECT s.tenant_id, s.day, s.metric, 0, s.value FROM sums s
    ON CONFLICT (tenant_id, day, metric, shard) DO UPDATE SET value = u.value + EXCLUDED.value
    RETURNING 1)
  SELECT count(*)::int FROM folded
$$;
COMMENT ON FUNCTION parley.compact_usage(date) IS
  'Jobs: fold the current tenant''s usage shards of days before p_before (default today) into shard 0; returns rows written.';

-- The one pivot of the counters: a row per tenant and UTC day, a column per metric, shards
-- summed. security_invoker, so the app sees its own tenant (RLS); the analysts' view and the
-- metering feed (91_metering.sql) read it too. (It replaces parley.usage_daily, one row per
-- metric, which three readers each pivoted for themselves.)
DROP VIEW IF EXISTS parley.usage_daily;
SELECT parley.ensure_view('parley.usage_by_day', 'security_invoker = true', NULL, $$
  SELECT u.tenant_id, u.day,
         coalesce(sum(u.value) FILTER (WHERE u.metric = 'messages'), 0)::bigint AS messages,
         coalesce(sum(u.value) FILTER (WHERE u.metric = 'ai_messages'), 0)::bigint AS ai_messages,
         coalesce(sum(u.value) FILTER (WHERE u.metric = 'conversations'), 0)::bigint AS conversations,
         coalesce(sum(u.value) FILTER (WHERE u.metric = 'active_seats'), 0)::bigint AS active_seats
    FROM parley.usage_counters u
   GROUP BY u.tenant_id, u.day$$);
COMMENT ON VIEW parley.usage_by_day IS
  'Usage per tenant and UTC day (shards summed): messages, AI replies, conversations started, active seats. The app sees its own tenant only (security_invoker, RLS).';
GRANT SELECT ON parley.usage_by_day TO parley_app, parley_jobs, parley_reporting;

-- Analysts: every tenant's daily usage, the same pivot read as parley_reporting (which reads
-- past RLS): a security_invoker view is checked as the querying role, so the analysts' view
-- reaches it through this definer function.
GRANT SELECT ON parley.usage_counters TO parley_reporting;
CREATE OR REPLACE FUNCTION analytics.usage_by_day()
RETURNS TABLE (tenant_id uuid, day date, messages bigint, ai_messages bigint, conversations bigint, active_seats bigint)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = ''
AS $$ SELECT u.tenant_id, u.day, u.messages, u.ai_messages, u.conversations, u.active_seats FROM parley.usage_by_day u $$;
COMMENT ON FUNCTION analytics.usage_by_day() IS
  'Every tenant''s parley.usage_by_day, for analytics.usage_daily (definer, owned by parley_reporting: no message bodies or secrets here, only counts).';
SELECT parley.ensure_view('analytics.usage_daily', 'security_barrier = true', 'parley_reporting', $$
  SELECT u.tenant_id, u.day, u.messages, u.ai_messages, u.conversations, u.active_seats
    FROM analytics.usage_by_day() u$$);
COMMENT ON VIEW analytics.usage_daily IS
  'Daily usage per tenant for analysts: messages, AI messages, conversations started and active seats (UTC days, shards summed).';
GRANT SELECT ON analytics.usage_daily TO parley_analyst;

-- Owners and EXECUTE grants of the functions above (parley.secure_functions, 05_access.sql).
SELECT parley.secure_functions(NULL, '{parley_app, parley_jobs}', 'parley.bump_usage(text, bigint)',
  'parley.note_active_seat(uuid)', 'parley.usage_on(text, date)');
SELECT parley.secure_functions(NULL, '{parley_jobs}', 'parley.compact_usage(date)');
SELECT parley.secure_functions('parley_reporting', '{parley_analyst}', 'analytics.usage_by_day()');
