-- Plan limits, per-tenant overrides, and the one resolver every enforcement point uses.
-- Semantics: a tenant_limits column that is NULL inherits the plan's value; 0 means unlimited
-- (for allow_hide_branding: NULL inherits, true/false override).

UPDATE parley.plans p SET
  max_chatbots = v.max_chatbots, max_seats = v.max_seats, max_open_conversations = v.max_open_conversations,
  msgs_per_min_chatbot = v.msgs_per_min_chatbot, msgs_per_min_ip = v.msgs_per_min_ip,
  ai_msgs_per_day = v.ai_msgs_per_day, retention_days = v.retention_days, allow_hide_branding = v.allow_hide_branding
FROM (VALUES
  --           bots seats open  /min/bot /min/ip  ai/day  keep  hide branding
  ('free',        1,    3,   50,     60,     20,     200,   30, false),
  ('starter',     3,   10,  500,    300,     30,    5000,  180, true),
  ('pro',        20,   50,    0,   1200,     60,   50000,  730, true)
) AS v(id, max_chatbots, max_seats, max_open_conversations, msgs_per_min_chatbot, msgs_per_min_ip,
       ai_msgs_per_day, retention_days, allow_hide_branding)
WHERE p.id = v.id;

SELECT parley.apply_tenant_policies('parley.tenant_limits');
-- Tenants read their limits; only the platform operator (owner/superuser) sets overrides.
GRANT SELECT ON parley.tenant_limits TO parley_app, parley_jobs, parley_auth;

CREATE OR REPLACE FUNCTION parley.effective_limits(p_tenant_id uuid)
RETURNS TABLE (plan text, max_chatbots int, max_seats int, max_open_conversations int,
               msgs_per_min_chatbot int, msgs_per_min_ip int, ai_msgs_per_day int,
               retention_days int, allow_hide_branding boolean)
LANGUAGE sql STABLE
AS $$
  SELECT p.id,
         coalesce(o.max_chatbots, p.max_chatbots),
         coalesce(o.max_seats, p.max_seats),
         coalesce(o.max_open_conversations, p.max_open_conversations),
         coalesce(o.msgs_per_min_chatbot, p.msgs_per_min_chatbot),
         coalesce(o.msgs_per_min_ip, p.msgs_per_min_ip),
         coalesce(o.ai_msgs_per_day, p.ai_msgs_per_day),
         coalesce(o.retention_days, p.retention_days),
         coalesce(o.allow_hide_branding, p.allow_hide_branding)
    FROM parley.tenants t
    JOIN parley.plans p ON p.id = t.plan
    LEFT JOIN parley.tenant_limits o ON o.tenant_id = t.id
   WHERE t.id = p_tenant_id
$$;
COMMENT ON FUNCTION parley.effective_limits(uuid) IS
  'The limits in force for a tenant: per-tenant override (tenant_limits) where not NULL, else the plan''s value; 0 means unlimited. The single resolver used by every enforcement point. Under RLS the app sees only its own tenant (other tenants give no row).';
REVOKE ALL ON FUNCTION parley.effective_limits(uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION parley.effective_limits(uuid) TO parley_app, parley_jobs, parley_auth;

-- Is `p_used` already at a limit? 0 (unlimited) never is.
CREATE OR REPLACE FUNCTION parley.limit_reached(p_limit int, p_used bigint) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT coalesce(p_limit, 0) > 0 AND p_used >= p_limit $$;
COMMENT ON FUNCTION parley.limit_reached(int, bigint) IS
  'True when p_used has reached p_limit; a limit of 0 (or NULL) is unlimited.';
GRANT EXECUTE ON FUNCTION parley.limit_reached(int, bigint) TO parley_app, parley_jobs, parley_auth;

-- Per-minute rate windows (visitor messages per chatbot and per client address).
-- Design: fixed one-minute windows; each backend increments its own shard row
-- (pg_backend_pid() % 8) with an upsert and the check sums the shards of the current
-- window, so concurrent writers of one busy chatbot do not queue on a single row lock.
-- The price: concurrent checks may overshoot the limit by at most (concurrent writers - 1)
-- at the edge of a window, which is acceptable for abuse protection.
CREATE OR REPLACE FUNCTION parley.hit_rate_limit(p_scope text, p_key text, p_limit int)
RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
  v_tenant uuid := parley.current_tenant_id();
  v_window timestamptz := date_trunc('minute', now());
  v_used bigint;
BEGIN
  IF coalesce(p_limit, 0) = 0 OR p_key IS NULL THEN
    RETURN;
  END IF;
  SELECT coalesce(sum(r.hits), 0) INTO v_used FROM parley.rate_counters r
   WHERE r.tenant_id = v_tenant AND r.scope = p_scope AND r.key = p_key AND r.window_start = v_window;
  IF parley.limit_reached(p_limit, v_used) THEN
    PERFORM parley.raise_error(429, 'rate_limited',
      format('Too many messages (%s per minute per %s); wait a moment.', p_limit, p_scope));
  END IF;
  INSERT INTO parley.rate_counters AS r (tenant_id, scope, key, window_start, shard, hits)
  VALUES (v_tenant, p_scope, p_key, v_window, pg_backend_pid() % 8, 1)
  ON CONFLICT (tenant_id, scope, key, window_start, shard) DO UPDATE SET hits = r.hits + 1;
END $$;
COMMENT ON FUNCTION parley.hit_rate_limit(text, text, int) IS
  'Count one hit in the current one-minute window of (scope, key) for the current tenant, or raise 429 rate_limited when the window already holds p_limit hits (0 = unlimited). Sharded by backend so writers do not serialise.';
REVOKE ALL ON FUNCTION parley.hit_rate_limit(text, text, int) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION parley.hit_rate_limit(text, text, int) TO parley_app;

SELECT parley.apply_tenant_policies('parley.rate_counters');
GRANT SELECT, INSERT, UPDATE ON parley.rate_counters TO parley_app;
GRANT SELECT, DELETE ON parley.rate_counters TO parley_jobs;

CREATE OR REPLACE FUNCTION parley.prune_rate_counters(p_older_than interval DEFAULT '10 minutes')
RETURNS int
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
  v_n int;
BEGIN
  DELETE FROM parley.rate_counters r
   WHERE r.tenant_id = parley.current_tenant_id() AND r.window_start < now() - p_older_than;
  GET DIAGNOSTICS v_n = ROW_COUNT;
  RETURN v_n;
END $$;
COMMENT ON FUNCTION parley.prune_rate_counters(interval) IS
  'Jobs: delete the current tenant''s rate windows older than p_older_than; returns how many rows went.';
REVOKE ALL ON FUNCTION parley.prune_rate_counters(interval) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION parley.prune_rate_counters(interval) TO parley_jobs;

-- Seats: enforced where a membership is created, whoever creates it (signup, invites, admin).
CREATE OR REPLACE FUNCTION parley.check_seat_limit() RETURNS trigger
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
  v_limit int;
  v_used bigint;
BEGIN
  SELECT l.max_seats INTO v_limit FROM parley.effective_limits(NEW.tenant_id) l;
  IF coalesce(v_limit, 0) = 0 THEN
    RETURN NEW;
  END IF;
  -- Two concurrent invites accepted into a full tenant: one waits for the other's count.
  PERFORM pg_advisory_xact_lock(7261004, hashtext(NEW.tenant_id::text));
  SELECT count(*) INTO v_used FROM parley.members m WHERE m.tenant_id = NEW.tenant_id;
  IF parley.limit_reached(v_limit, v_used) THEN
    PERFORM parley.raise_error(402, 'plan_limit',
      format('Your plan allows %s seats; upgrade to add more people.', v_limit));
  END IF;
  RETURN NEW;
END $$;
COMMENT ON FUNCTION parley.check_seat_limit() IS
  'BEFORE INSERT trigger on members: raise 402 plan_limit when the tenant already uses max_seats seats (effective_limits; 0 = unlimited).';
REVOKE ALL ON FUNCTION parley.check_seat_limit() FROM PUBLIC;

DROP TRIGGER IF EXISTS t20_seat_limit ON parley.members;
CREATE TRIGGER t20_seat_limit BEFORE INSERT ON parley.members
  FOR EACH ROW EXECUTE FUNCTION parley.check_seat_limit();
