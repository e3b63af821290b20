-- Plan limits, per-tenant overrides, and the one resolver every enforcement point uses.
-- Semantics: a tenant_limits column that is NULL inherits the plan's value; 0 means unlimited
-- (for allow_hide_branding: NULL inherits, true/false override).

-- The plan catalog (one home: names, prices, allowances, limits). Prices in USD cents; the
-- annual price is a generated column (10 months); monthly allowances are billed past on
-- metered plans and hard caps on the others.
INSERT INTO parley.plans AS p (id, name, sort_order, public, max_chatbots, max_seats, max_open_conversations,
  msgs_per_min_chatbot, msgs_per_min_ip, ai_msgs_per_day, retention_days, allow_hide_branding,
  price_monthly_cents, seat_price_cents, max_extra_seats, metered, included_conversations, included_ai_messages,
  overage_cents_per_100, msgs_per_min_tenant, msgs_per_min_conversation, api_requests_per_min, allow_custom_domain)
VALUES
  --                               bots seats open  /bot  /ip  ai/day keep hide  $/mo  seat+ max+ meter conv/mo ai/mo  over/100 /tenant /conv /key domain
  ('free',        'Free',        0, true,  1,   3,   50,   60,  20,    200,  30, false,    0,   0,   0, false,   300,   1000,  0,   600,  120,   60, false),
  ('starter',     'Starter',     1, true,  3,  10,  500,  300,  30,   5000, 180, true,  2900, 900,  20, true,   2000,  20000, 50,  3000,  120,  300, false),
  ('pro',         'Pro',         2, true, 20,  50,    0, 1200,  60,  50000, 730, true,  9900, 900, 100, true,  10000, 100000, 40, 12000,  120, 1200, false),
  ('white_label', 'White label', 3, true, 50, 200,    0, 3000,  60, 200000, 730, true, 29900, 700, 500, true,  50000, 500000, 30, 30000,  120, 3000, true)
ON CONFLICT (id) DO UPDATE SET
  name = EXCLUDED.name, sort_order = EXCLUDED.sort_order, public = EXCLUDED.public,
  max_chatbots = EXCLUDED.max_chatbots, max_seats = EXCLUDED.max_seats,
  max_open_conversations = EXCLUDED.max_open_conversations, msgs_per_min_chatbot = EXCLUDED.msgs_per_min_chatbot,
  msgs_per_min_ip = EXCLUDED.msgs_per_min_ip, ai_msgs_per_day = EXCLUDED.ai_msgs_per_day,
  retention_days = EXCLUDED.retention_days, allow_hide_branding = EXCLUDED.allow_hide_branding,
  price_monthly_cents = EXCLUDED.price_monthly_cents, seat_price_cents = EXCLUDED.seat_price_cents,
  max_extra_seats = EXCLUDED.max_extra_seats, metered = EXCLUDED.metered,
  included_conversations = EXCLUDED.included_conversations, included_ai_messages = EXCLUDED.included_ai_messages,
  overage_cents_per_100 = EXCLUDED.overage_cents_per_100, msgs_per_min_tenant = EXCLUDED.msgs_per_min_tenant,
  msgs_per_min_conversation = EXCLUDED.msgs_per_min_conversation,
  api_requests_per_min = EXCLUDED.api_requests_per_min, allow_custom_domain = EXCLUDED.allow_custom_domain;
-- Pages one knowledge import may bring in (migration 0008; knowledge_page_limit, ingest_document).
UPDATE parley.plans p SET knowledge_pages = v.pages
FROM (VALUES ('free', 100), ('starter', 1000), ('pro', 5000), ('white_label', 20000)) AS v(id, pages)
WHERE p.id = v.id;
-- Abuse limits on visitors starting conversations (migration 0012; rules in check_visitor_start).
UPDATE parley.plans p SET max_open_conversations_per_ip = v.open_per_ip, conversations_per_min_chatbot = v.starts_per_min
FROM (VALUES
  --               open/ip  starts/min/bot
  ('free',            5,       20),
  ('starter',        10,      120),
  ('pro',            20,      600),
  ('white_label',    20,     1500)
) AS v(id, open_per_ip, starts_per_min)
WHERE p.id = v.id;

SELECT parley.apply_tenant_policies('parley.tenant_limits');
-- Tenants read their limits; only the platform operator (owner/superuser) sets overrides.
GRANT SELECT ON parley.tenant_limits TO parley_app, parley_jobs, parley_auth;

GRANT SELECT ON parley.subscriptions TO parley_auth;

-- Subscription statuses (the CHECK on parley.subscriptions.status lists them all): the one home of
-- which count as delinquent (payment failing: grace, then Free's limits) and which are billed
-- (Stripe charges and meters them). Plain IMMUTABLE SQL, so callers' queries inline them into the
-- same `status = ANY (…)` test they wrote before. sql/90_billing.sql writes the statuses.
CREATE OR REPLACE FUNCTION parley.subscription_delinquent(p_status text) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT p_status IN ('past_due', 'unpaid', 'incomplete') $$;
COMMENT ON FUNCTION parley.subscription_delinquent(text) IS
  'True for the subscription statuses whose payment is failing (past_due, unpaid, incomplete): grace starts, then Free''s limits (effective_limits, sweep_grace). The only list of them.';

CREATE OR REPLACE FUNCTION parley.subscription_billed(p_status text) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT p_status IN ('active', 'trialing', 'past_due') $$;
COMMENT ON FUNCTION parley.subscription_billed(text) IS
  'True for the subscription statuses the provider still bills (active, trialing, past_due): usage is metered and the price counts in revenue. Billed and not delinquent is paying. The only list of them.';

-- The result grew columns (billing, visitor starts, knowledge pages): an old shape is dropped once, then replaced in place.
DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_proc WHERE oid = to_regprocedure('parley.effective_limits(uuid)')
              AND NOT ('{conversations_per_min_chatbot,knowledge_pages}'::text[] <@ proargnames)) THEN
    DROP FUNCTION parley.effective_limits(uuid);
  END IF;
END $$;

CREATE OR REPLACE FUNCTION parley.effective_limits(p_tenant_id uuid)
RETURNS TABLE (plan text, max_chatbots int, max_seats int, max_open_conversations int,
               msgs_per_min_chatbot int, msgs_per_min_ip int, ai_msgs_per_day int,
               retention_days int, allow_hide_branding boolean,
               msgs_per_min_tenant int, msgs_per_min_conversation int, api_requests_per_min int,
               included_conversations int, included_ai_messages int, metered boolean,
               allow_custom_domain boolean, limited boolean,
               max_open_conversations_per_ip int, conversations_per_min_chatbot int, knowledge_pages int)
LANGUAGE sql STABLE
AS $$
  -- A delinquent subscription past its grace period (or marked limited by the dunning
  -- sweep) gets the Free plan's limits, overrides ignored, no overage; retention keeps the
  -- longer of the two, so being limited never deletes data.
  SELECT t.plan,
         CASE WHEN d.limited THEN f.max_chatbots ELSE coalesce(o.max_chatbots, p.max_chatbots) END,
         CASE WHEN d.limited THEN f.max_seats
              ELSE coalesce(o.max_seats, p.max_seats + CASE WHEN p.max_seats > 0
                                                            THEN least(coalesce(s.extra_seats, 0), p.max_extra_seats)
                                                            ELSE 0 END) END,
         CASE WHEN d.limited THEN f.max_open_conversations
              ELSE coalesce(o.max_open_conversations, p.max_open_conversations) END,
         CASE WHEN d.limited THEN f.msgs_per_min_chatbot ELSE coalesce(o.msgs_per_min_chatbot, p.msgs_per_min_chatbot) END,
         CASE WHEN d.limited THEN f.msgs_per_min_ip ELSE coalesce(o.msgs_per_min_ip, p.msgs_per_min_ip) END,
         CASE WHEN d.limited THEN f.ai_msgs_per_day ELSE coalesce(o.ai_msgs_per_day, p.ai_msgs_per_day) END,
         coalesce(o.retention_days, p.retention_days),
         CASE WHEN d.limited THEN f.allow_hide_branding ELSE coalesce(o.allow_hide_branding, p.allow_hide_branding) END,
         CASE WHEN d.limited THEN f.msgs_per_min_tenant ELSE coalesce(o.msgs_per_min_tenant, p.msgs_per_min_tenant) END,
         CASE WHEN d.limited THEN f.msgs_per_min_conversation
              ELSE coalesce(o.msgs_per_min_conversation, p.msgs_per_min_conversation) END,
         CASE WHEN d.limited THEN f.api_requests_per_min ELSE coalesce(o.api_requests_per_min, p.api_requests_per_min) END,
         CASE WHEN d.limited THEN f.included_conversations
              ELSE coalesce(o.included_conversations, p.included_conversations) END,
         CASE WHEN d.limited THEN f.included_ai_messages ELSE coalesce(o.included_ai_messages, p.included_ai_messages) END,
         p.metered AND NOT d.limited,
         p.allow_custom_domain AND NOT d.limited,
         d.limited,
         coalesce(o.max_open_conversations_per_ip, p.max_open_conversations_per_ip),
         coalesce(o.conversations_per_min_chatbot, p.conversations_per_min_chatbot),
         CASE WHEN d.limited THEN f.knowledge_pages ELSE coalesce(o.knowledge_pages, p.knowledge_pages) END
    FROM parley.tenants t
    JOIN parley.plans p ON p.id = t.plan
    JOIN parley.plans f ON f.id = 'free'
    LEFT JOIN parley.tenant_limits o ON o.tenant_id = t.id
    LEFT JOIN parley.subscriptions s ON s.tenant_id = t.id
    CROSS JOIN LATERAL (
      SELECT coalesce(parley.subscription_delinquent(s.status)
                      AND (s.limited_at IS NOT NULL OR s.grace_until <= now()), false) AS limited) d
   WHERE t.id = p_tenant_id
$$;
COMMENT ON FUNCTION parley.effective_limits(uuid) IS
  'The limits in force for a tenant: per-tenant override (tenant_limits) where not NULL, else the plan''s value (max_seats plus the subscription''s extra seats); 0 means unlimited. A delinquent subscription past its grace period is limited: Free''s limits, no overage, retention unchanged. The single resolver used by every enforcement point. Under RLS the app sees only its own tenant (other tenants give no row).';

-- Is `p_used` already at a limit? 0 (unlimited) never is.
CREATE OR REPLACE FUNCTION parley.limit_reached(p_limit int, p_used bigint) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT coalesce(p_limit, 0) > 0 AND p_used >= p_limit $$;
COMMENT ON FUNCTION parley.limit_reached(int, bigint) IS
  'True when p_used has reached p_limit; a limit of 0 (or NULL) is unlimited.';
GRANT EXECUTE ON FUNCTION parley.limit_reached(int, bigint) TO parley_app, parley_jobs, parley_auth;

-- A counted limit (rows of a kind, or usage against a cap) is checked by counting and then
-- writing; concurrent writers at the edge each count before the others commit and all pass (seen
-- with AI replies, allowances, alert channels, domains, open conversations per address:
-- bench/races.py). The enforcing function takes this lock before it counts and keeps it to
-- commit, after its own write: writers at one limit of one tenant then count one after another.
-- Taken only while the limit applies. Lock order: after the conversation row, before usage rows,
-- rate rows' successors and the tenant's event lock.
CREATE OR REPLACE FUNCTION parley.lock_limit(p_what text) RETURNS void
LANGUAGE sql VOLATILE
AS $$ SELECT pg_advisory_xact_lock(7261013, hashtext(parley.current_tenant_id()::text || ':' || p_what)) $$;
COMMENT ON FUNCTION parley.lock_limit(text) IS
  'Take the current tenant''s lock on the counted limit p_what (e.g. usage:ai_messages, webhook_endpoints; advisory 7261013, to commit) before counting against it: checks and the writes they guard run one after another, so concurrent writers cannot pass the limit together.';

-- Per-minute rate limits (visitor messages per chatbot, address, conversation and tenant; new
-- conversations; API keys; system texts): at most p_limit hits in any 60 seconds. Hits are counted
-- in 10-second buckets and a hit is refused while the buckets of the last minute (the current one
-- and the six before it) hold p_limit: a limit is never passed across a minute's turn (fixed
-- one-minute windows let a client send the limit at 00:59 and again at 01:00), at the price of
-- refusing up to 10 s longer than an exact count would. Each backend increments its own shard row
-- (pg_backend_pid() % 8) with an upsert and the check sums the shards, so concurrent writers of
-- one busy chatbot do not queue on a single row lock; concurrent checks may overshoot the limit
-- by at most (concurrent writers - 1), which is acceptable for abuse protection.
CREATE OR REPLACE FUNCTION parley.rate_bucket(p_at timestamptz) RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT date_bin(interval '10 seconds', p_at, timestamptz '2000-01-01 00:00:00+00') $$;
COMMENT ON FUNCTION parley.rate_bucket(timestamptz) IS
  'The 10-second bucket of rate_counters that p_at counts in (its start); hit_rate_limit sums the current bucket and the six before it.';

CREATE OR REPLACE FUNCTION parley.hit_rate_limit(p_scope text, p_key text, p_limit int)
RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
  v_tenant uuid := parley.current_tenant_id();
  v_bucket timestamptz := parley.rate_bucket(now());
  v_used bigint;
  v_frees timestamptz;
BEGIN
  IF coalesce(p_limit, 0) = 0 OR p_key IS NULL THEN
    RETURN;
  END IF;
  SELECT coalesce(sum(r.hits), 0) INTO v_used FROM parley.rate_counters r
   WHERE r.tenant_id = v_tenant AND r.scope = p_scope AND r.key = p_key
     AND r.window_start >= v_bucket - interval '60 seconds';
  IF parley.limit_reached(p_limit, v_used) THEN
    -- The client may retry once enough of the oldest hits have left the minute: a bucket stops
    -- counting 70 s after it began.
    SELECT b.window_start + interval '70 seconds' INTO v_frees
      FROM (SELECT r.window_start, v_used - sum(sum(r.hits)) OVER (ORDER BY r.window_start) AS still
              FROM parley.rate_counters r
             WHERE r.tenant_id = v_tenant AND r.scope = p_scope AND r.key = p_key
               AND r.window_start >= v_bucket - interval '60 seconds'
             GROUP BY r.window_start) b
     WHERE b.still < p_limit ORDER BY b.window_start LIMIT 1;
    RAISE EXCEPTION USING ERRCODE = 'PT429', HINT = 'rate_limited',
      MESSAGE = CASE WHEN p_scope = 'api_key'
                     THEN format('Too many requests (%s per minute per API key); wait a moment.', p_limit)
                     ELSE format('Too many messages (%s per minute per %s); wait a moment.', p_limit, p_scope) END,
      DETAIL = 'retry_after=' || greatest(1, ceil(extract(epoch FROM coalesce(v_frees, v_bucket + interval '70 seconds')
                                                                   - clock_timestamp())))::int;
  END IF;
  INSERT INTO parley.rate_counters AS r (tenant_id, scope, key, window_start, shard, hits)
  VALUES (v_tenant, p_scope, p_key, v_bucket, pg_backend_pid() % 8, 1)
  ON CONFLICT (tenant_id, scope, key, window_start, shard) DO UPDATE SET hits = r.hits + 1;
END $$;
COMMENT ON FUNCTION parley.hit_rate_limit(text, text, int) IS
  'Count one hit of (scope, key) for the current tenant (scopes: chatbot, ip, tenant, conversation, api_key, system_text), or raise 429 rate_limited with DETAIL retry_after=<seconds until enough hits have left the minute> (the server''s Retry-After) when the last minute (rate_bucket: the current 10-second bucket and the six before it) already holds p_limit hits (0 = unlimited): never more than p_limit in any 60 seconds. Sharded by backend so writers do not serialise.';

-- Starting a conversation from the widget (parley.start_conversation as a visitor). Widget
-- sessions write nothing, so page views cost no conversation; what a visitor can start is
-- bounded per address (rate and open conversations) and per chatbot (rate), so one address
-- cannot fill the tenant's max_open_conversations for everyone.
CREATE OR REPLACE FUNCTION parley.count_open_conversations_from(p_ip inet) RETURNS bigint
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = ''
AS $$
  SELECT count(*) FROM parley.conversations c
   WHERE c.tenant_id = parley.current_tenant_id() AND c.ip = p_ip AND c.status <> 'closed'
$$;
COMMENT ON FUNCTION parley.count_open_conversations_from(inet) IS
  'Open (not closed) conversations of the current tenant started from one client address. Owned by parley_auth and filtered by the current tenant explicitly: a visitor transaction sees only its own conversation under RLS.';

CREATE OR REPLACE FUNCTION parley.check_visitor_start(p_chatbot_id uuid, p_ip inet) RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
  v_lim record;
BEGIN
  SELECT * INTO v_lim FROM parley.effective_limits(parley.current_tenant_id());
  PERFORM parley.hit_rate_limit('ip', 'session:' || coalesce(host(p_ip), 'unknown'), v_lim.msgs_per_min_ip);
  PERFORM parley.hit_rate_limit('chatbot', 'start:' || p_chatbot_id::text, v_lim.conversations_per_min_chatbot);
  IF p_ip IS NOT NULL AND coalesce(v_lim.max_open_conversations_per_ip, 0) > 0 THEN
    PERFORM parley.lock_limit('open_from:' || host(p_ip));  -- starts from one address count in turn
  END IF;
  IF p_ip IS NOT NULL
     AND parley.limit_reached(v_lim.max_open_conversations_per_ip, parley.count_open_conversations_from(p_ip)) THEN
    PERFORM parley.raise_error(429, 'too_many_conversations',
      format('This address already has %s open conversations; continue one of them or wait until one is closed.',
             v_lim.max_open_conversations_per_ip));
  END IF;
END $$;
COMMENT ON FUNCTION parley.check_visitor_start(uuid, inet) IS
  'Limits on a visitor starting a conversation (called by start_conversation for visitor actors, after the tenant''s open-conversation lock): 429 rate_limited beyond msgs_per_min_ip starts per address or conversations_per_min_chatbot starts per chatbot per minute; 429 too_many_conversations when the address already has max_open_conversations_per_ip open conversations (0 = unlimited).';

SELECT parley.apply_tenant_policies('parley.rate_counters');
GRANT SELECT, INSERT, UPDATE ON parley.rate_counters TO parley_app, parley_auth;
GRANT SELECT, DELETE ON parley.rate_counters TO parley_jobs;

CREATE OR REPLACE FUNCTION parley.prune_rate_counters(p_older_than interval DEFAULT '10 minutes')
RETURNS int
LANGUAGE sql VOLATILE
AS $$
  WITH gone AS (
    DELETE FROM parley.rate_counters r
     WHERE r.tenant_id = parley.current_tenant_id() AND r.window_start < now() - p_older_than
    RETURNING 1)
  SELECT count(*)::int FROM gone
$$;
COMMENT ON FUNCTION parley.prune_rate_counters(interval) IS
  'Jobs: delete the current tenant''s rate windows older than p_older_than; returns how many rows went.';

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

SELECT parley.ensure_trigger('parley.members', 't20_seat_limit', 'BEFORE INSERT',
  $$FOR EACH ROW EXECUTE FUNCTION parley.check_seat_limit()$$);

-- Owners and EXECUTE grants of the functions above (parley.secure_functions, 05_access.sql).
SELECT parley.secure_functions(NULL, '{parley_app, parley_jobs, parley_auth, parley_reporting, parley_analyst}',
                               'parley.subscription_delinquent(text)', 'parley.subscription_billed(text)');
SELECT parley.secure_functions(NULL, '{parley_app, parley_jobs, parley_auth}', 'parley.effective_limits(uuid)',
                               'parley.lock_limit(text)');
SELECT parley.secure_functions(NULL, '{parley_app, parley_auth}', 'parley.hit_rate_limit(text, text, int)', 'parley.rate_bucket(timestamptz)');
SELECT parley.secure_functions('parley_auth', '{parley_app}', 'parley.count_open_conversations_from(inet)');
SELECT parley.secure_functions(NULL, '{parley_app}', 'parley.check_visitor_start(uuid, inet)');
SELECT parley.secure_functions(NULL, '{parley_jobs}', 'parley.prune_rate_counters(interval)');
SELECT parley.secure_functions(NULL, NULL, 'parley.check_seat_limit()');
