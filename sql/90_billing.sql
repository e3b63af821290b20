-- Billing: subscriptions, the one plan-change function, allowances (monthly, on the
-- subscription's own billing period), soft warnings, the dunning sweep and the tenant's billing overview.
-- Payment providers (Stripe) are reached by the server; everything they change lands here
-- through parley.change_plan, whoever calls it (webhook, staff, the tenant's own downgrade).

SELECT parley.apply_tenant_policies('parley.subscriptions');
SELECT parley.apply_tenant_policies('parley.plan_changes');
SELECT parley.apply_tenant_policies('parley.usage_warnings');
SELECT parley.apply_tenant_policies('parley.billing_events');
SELECT parley.apply_tenant_policies('parley.usage_reports');
-- Writes go through the functions below (definer for plan and subscription state).
GRANT SELECT ON parley.subscriptions, parley.plan_changes, parley.usage_warnings TO parley_app, parley_jobs;
GRANT INSERT ON parley.billing_events TO parley_app;
GRANT SELECT ON parley.billing_events TO parley_app;
GRANT SELECT, INSERT, UPDATE ON parley.usage_warnings TO parley_jobs;
GRANT UPDATE (notified_at) ON parley.usage_warnings TO parley_app;
GRANT SELECT, INSERT, UPDATE ON parley.usage_reports TO parley_jobs;
GRANT SELECT ON parley.usage_reports TO parley_app;

CREATE OR REPLACE FUNCTION parley.usage_between(p_metric text, p_from date, p_to date)
RETURNS bigint
LANGUAGE sql STABLE
AS $$
  SELECT coalesce(sum(u.value), 0)::bigint FROM parley.usage_counters u
   WHERE u.tenant_id = (SELECT parley.current_tenant_id()) AND u.metric = p_metric
     AND u.day >= p_from AND u.day < p_to
$$;
COMMENT ON FUNCTION parley.usage_between(text, date, date) IS
  'The current tenant''s total of p_metric over the UTC days [p_from, p_to).';

-- Allowance periods follow the subscription's own billing period: monthly periods anchored on
-- the day its current period started (an annual subscription's allowances renew monthly on that
-- day too); without a provider period (Free, staff-assigned) calendar months, UTC.
CREATE OR REPLACE FUNCTION parley.allowance_period(p_day date DEFAULT NULL, OUT period_start date, OUT period_end date)
LANGUAGE plpgsql STABLE
AS $$
DECLARE
  v_day date := coalesce(p_day, (now() AT TIME ZONE 'UTC')::date);
  v_anchor date;
  v_n int;
BEGIN
  SELECT (s.current_period_start AT TIME ZONE 'UTC')::date INTO v_anchor FROM parley.subscriptions s
   WHERE s.tenant_id = parley.current_tenant_id() AND s.provider = 'stripe' AND s.current_period_start IS NOT NULL;
  IF v_anchor IS NULL THEN
    period_start := date_trunc('month', v_day)::date;
    period_end := (period_start + interval '1 month')::date;
    RETURN;
  END IF;
  v_n := ((extract(year FROM v_day) - extract(year FROM v_anchor)) * 12
          + extract(month FROM v_day) - extract(month FROM v_anchor))::int;
  IF (v_anchor + v_n * interval '1 month')::date > v_day THEN
    v_n := v_n - 1;
  END IF;
  period_start := (v_anchor + v_n * interval '1 month')::date;
  period_end := (v_anchor + (v_n + 1) * interval '1 month')::date;
END $$;
COMMENT ON FUNCTION parley.allowance_period(date) IS
  'The current tenant''s allowance period [period_start, period_end) holding p_day (default today, UTC): monthly from the day its Stripe subscription''s current period started (annual subscriptions renew allowances monthly on that day), else the calendar month.';

CREATE OR REPLACE FUNCTION parley.period_start(p_day date DEFAULT NULL) RETURNS date
LANGUAGE sql STABLE
AS $$ SELECT (parley.allowance_period(p_day)).period_start $$;
COMMENT ON FUNCTION parley.period_start(date) IS
  'First day of the current tenant''s allowance period holding p_day (default today): see parley.allowance_period.';
GRANT EXECUTE ON FUNCTION parley.period_start(date) TO parley_app, parley_jobs;
-- Both ends of the period are to_jsonb(parley.allowance_period()).
DROP FUNCTION IF EXISTS parley.period_end(date);

-- Monthly allowances: a hard cap on plans without overage (Free), nothing on metered plans.
CREATE OR REPLACE FUNCTION parley.check_allowance(p_metric text) RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
  v_lim record;
  v_allowance int;
  v_period record;
BEGIN
  SELECT * INTO v_lim FROM parley.effective_limits(parley.current_tenant_id());
  IF v_lim.metered THEN
    RETURN;
  END IF;
  SELECT * INTO v_period FROM parley.allowance_period();
  v_allowance := CASE p_metric WHEN 'conversations' THEN v_lim.included_conversations
                               WHEN 'ai_messages' THEN v_lim.included_ai_messages END;
  IF coalesce(v_allowance, 0) = 0 THEN
    RETURN;
  END IF;
  -- Concurrent writers at the edge count one after another (the caller's bump_usage follows).
  PERFORM parley.lock_limit('usage:' || p_metric);
  IF parley.limit_reached(v_allowance, parley.usage_between(p_metric, v_period.period_start, v_period.period_end)) THEN
    PERFORM parley.raise_error(402, 'plan_limit',
      format('This period''s allowance of %s %s is used up; upgrade for more.', v_allowance,
             CASE p_metric WHEN 'conversations' THEN 'conversations' ELSE 'AI replies' END));
  END IF;
END $$;
COMMENT ON FUNCTION parley.check_allowance(text) IS
  'Raise 402 plan_limit when the current tenant has used this allowance period''s (parley.allowance_period) allowance of p_metric (conversations, ai_messages) on a plan without overage; metered plans are billed past it instead.';

-- The meters: each allowance with what is used of it now.
CREATE OR REPLACE FUNCTION parley.usage_meters()
RETURNS TABLE (metric text, period text, used bigint, allowance int, percent int)
LANGUAGE sql STABLE
AS $$
  WITH l AS (SELECT * FROM parley.effective_limits(parley.current_tenant_id())),
  p AS (SELECT a.period_start AS s, a.period_end AS e FROM parley.allowance_period() a),
  m(metric, period, used, allowance) AS (
    SELECT 'conversations', 'month',
           parley.usage_between('conversations', p.s, p.e), l.included_conversations FROM l, p
    UNION ALL
    SELECT 'ai_messages', 'month',
           parley.usage_between('ai_messages', p.s, p.e), l.included_ai_messages FROM l, p
    UNION ALL
    SELECT 'ai_messages_today', 'day', parley.usage_on('ai_messages'), l.ai_msgs_per_day FROM l
    UNION ALL
    SELECT 'seats', 'now', (SELECT count(*) FROM parley.members), l.max_seats FROM l
    UNION ALL
    SELECT 'chatbots', 'now', (SELECT count(*) FROM parley.chatbots c WHERE c.deleted_at IS NULL), l.max_chatbots FROM l
    UNION ALL
    SELECT 'open_conversations', 'now', (SELECT count(*) FROM parley.conversations c WHERE c.status <> 'closed'),
           l.max_open_conversations FROM l)
  SELECT m.metric, m.period, m.used, m.allowance,
         CASE WHEN coalesce(m.allowance, 0) = 0 THEN NULL ELSE (100 * m.used / m.allowance)::int END
    FROM m
$$;
COMMENT ON FUNCTION parley.usage_meters() IS
  'The current tenant''s meters: used vs allowance (0 = unlimited, percent NULL) for this month''s conversations and AI replies, today''s AI replies, seats, chatbots and open conversations.';

-- Soft warnings: the 80 % and 100 % marks of each allowance, kept once per period, so the
-- owners are told once (the outbox mails rows with notified_at NULL).
CREATE OR REPLACE FUNCTION parley.record_usage_warnings() RETURNS int
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
  v_new jsonb;
  v_n int;
BEGIN
  WITH added AS (
    INSERT INTO parley.usage_warnings (tenant_id, period_start, metric, threshold, used, allowance)
    SELECT parley.current_tenant_id(),
           CASE m.period WHEN 'day' THEN (now() AT TIME ZONE 'UTC')::date ELSE parley.period_start() END,
           m.metric, t.threshold, m.used, m.allowance
      FROM parley.usage_meters() m
      CROSS JOIN (VALUES (80), (100)) AS t(threshold)
     WHERE m.percent >= t.threshold
    ON CONFLICT DO NOTHING
    RETURNING metric, threshold, used, allowance, period_start)
  SELECT count(*), jsonb_agg(to_jsonb(a) ORDER BY a.metric, a.threshold) INTO v_n, v_new FROM added a;
  IF v_n > 0 THEN
    -- One e-mail to the owners for what this run found (each threshold is found once a period).
    PERFORM parley.notify_owners('notice.usage_warning', jsonb_build_object(
      'warnings', v_new, 'plan', (SELECT t.plan FROM parley.tenants t WHERE t.id = parley.current_tenant_id()))
      || (SELECT to_jsonb(p) FROM parley.allowance_period() p));
    UPDATE parley.usage_warnings w SET notified_at = now()
     WHERE w.tenant_id = parley.current_tenant_id() AND w.notified_at IS NULL;
  END IF;
  RETURN v_n;
END $$;
COMMENT ON FUNCTION parley.record_usage_warnings() IS
  'Jobs: record the current tenant''s allowances that reached 80 % or 100 % (once per allowance period, metric and threshold) and queue one e-mail to the workspace owners through the outbox (parley.notify_owners, notice.usage_warning) listing them; notified_at is set then. Returns rows added.';

-- The one function that changes a tenant's plan and subscription state, with every side
-- effect: tenants.plan, the subscription row, the grace period, plan_changes, the period's
-- warnings (new allowances warn afresh) and the audit trail. Definer: the app may not
-- write tenants.plan or subscriptions itself; who may call it for what is checked here.
CREATE OR REPLACE FUNCTION parley.change_plan(p_plan text, p_source text, p_state jsonb DEFAULT '{}')
RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = ''
AS $$
DECLARE
  v_tenant uuid := parley.current_tenant_id();
  v_kind text := parley.current_actor_kind();
  v_from text;
  v_sub parley.subscriptions;
  v_state jsonb := coalesce(p_state, '{}');
  v_status text;
  v_synced timestamptz := (v_state->>'synced_at')::timestamptz;
  v_grace timestamptz;
  v_allowed boolean;
BEGIN
  IF v_tenant IS NULL THEN
    PERFORM parley.raise_error(401, 'unauthenticated', 'No tenant in this transaction.');
  END IF;
  -- Who may do what: the provider's webhook and checkout return run as the server
  -- (service), staff as staff, the dunning sweep as jobs; a member may only go down to a
  -- free plan (upgrades are paid through checkout).
  v_allowed := CASE p_source
                 WHEN 'webhook' THEN v_kind = 'service'
                 WHEN 'checkout' THEN v_kind = 'service'
                 WHEN 'staff' THEN v_kind = 'staff'
                 WHEN 'dunning' THEN v_kind IN ('system', 'service')
                 WHEN 'downgrade' THEN v_kind = 'user'
                 ELSE false END;
  IF NOT v_allowed THEN
    PERFORM parley.raise_error(403, 'forbidden', 'This actor cannot change the plan this way.');
  END IF;
  IF p_source = 'downgrade' THEN
    PERFORM parley.require_role('admin');
    IF (SELECT p.price_monthly_cents FROM parley.plans p WHERE p.id = p_plan) IS DISTINCT FROM 0 THEN
      PERFORM parley.raise_error(402, 'payment_required', 'Paid plans are bought through checkout.');
    END IF;
  END IF;
  IF NOT EXISTS (SELECT 1 FROM parley.plans p WHERE p.id = p_plan AND (p.public OR p_source IN ('staff', 'webhook'))) THEN
    PERFORM parley.raise_error(422, 'unknown_plan', 'No such plan.');
  END IF;
  -- The state's interval, status, provider and seats are guarded by parley.subscriptions' CHECKs
  -- (the one list of each; a violation is a 422 invalid like any CHECK's).

  -- FOR NO KEY UPDATE (what the UPDATE of plan below takes anyway), not FOR UPDATE: the webhook's
  -- transaction has already inserted its billing_events row, whose foreign key holds the tenant's
  -- row FOR KEY SHARE; two deliveries of one tenant at once each waited for the other's key share
  -- (a deadlock, answered 409 retry: bench/races.py, tests/billing/test_stripe_races.py).
  SELECT t.plan INTO v_from FROM parley.tenants t WHERE t.id = v_tenant FOR NO KEY UPDATE;
  SELECT * INTO v_sub FROM parley.subscriptions s WHERE s.tenant_id = v_tenant;
  -- A provider state read earlier than the one applied already is stale (deliveries race).
  IF v_synced IS NOT NULL AND v_sub.provider_synced_at IS NOT NULL AND v_synced < v_sub.provider_synced_at THEN
    RETURN jsonb_build_object('applied', false, 'plan', v_from);
  END IF;

  v_status := coalesce(v_state->>'status', 'active');
  IF parley.subscription_delinquent(v_status) THEN
    -- Grace starts at the first failure (the event's time when the provider gives one).
    v_grace := coalesce(v_sub.grace_until,
                        coalesce((v_state->>'delinquent_since')::timestamptz, now())
                          + parley.server_setting('grace_period', NULL::interval));
  END IF;

  INSERT INTO parley.subscriptions AS s (tenant_id, provider, plan, billing_interval, status, current_period_start,
      current_period_end, extra_seats, cancel_at_period_end, grace_until, limited_at, customer_ref,
      subscription_ref, provider_synced_at, updated_at)
  VALUES (v_tenant, coalesce(v_state->>'provider', 'none'), p_plan, coalesce(v_state->>'interval', 'month'), v_status,
          (v_state->>'current_period_start')::timestamptz, (v_state->>'current_period_end')::timestamptz,
          coalesce((v_state->>'extra_seats')::int, 0), coalesce((v_state->>'cancel_at_period_end')::boolean, false),
          v_grace, CASE WHEN v_grace IS NOT NULL THEN v_sub.limited_at END,
          coalesce(v_state->>'customer_ref', v_sub.customer_ref), v_state->>'subscription_ref', v_synced, now())
  ON CONFLICT (tenant_id) DO UPDATE SET
    provider = EXCLUDED.provider, plan = EXCLUDED.plan, billing_interval = EXCLUDED.billing_interval,
    status = EXCLUDED.status, current_period_start = EXCLUDED.current_period_start,
    current_period_end = EXCLUDED.current_period_end, extra_seats = EXCLUDED.extra_seats,
    cancel_at_period_end = EXCLUDED.cancel_at_period_end, grace_until = EXCLUDED.grace_until,
    limited_at = EXCLUDED.limited_at, customer_ref = EXCLUDED.customer_ref,
    subscription_ref = EXCLUDED.subscription_ref,
    provider_synced_at = coalesce(EXCLUDED.provider_synced_at, s.provider_synced_at), updated_at = now();

  -- A paid conversion earns the referrer's credit (once; sql/94_referrals.sql); a tenant that
  -- now has a Stripe customer gets its own earned credits queued.
  IF v_status = 'active' AND coalesce(v_state->>'provider', 'none') = 'stripe'
     AND (SELECT p.price_monthly_cents FROM parley.plans p WHERE p.id = p_plan) > 0 THEN
    PERFORM parley.earn_referral_credit(p_plan);
  END IF;
  PERFORM parley.queue_referral_credits(v_tenant);
  -- Custom domains end with a plan that has none (sql/95_domains.sql).
  IF NOT (SELECT p.allow_custom_domain FROM parley.plans p WHERE p.id = p_plan) THEN
    PERFORM parley.disable_custom_domains(format('the %s plan has no custom domains', p_plan));
  END IF;

  IF v_from IS DISTINCT FROM p_plan THEN
    UPDATE parley.tenants t SET plan = p_plan WHERE t.id = v_tenant;
    INSERT INTO parley.plan_changes (tenant_id, from_plan, to_plan, billing_interval, source, actor_kind)
    VALUES (v_tenant, v_from, p_plan, coalesce(v_state->>'interval', 'month'), p_source, v_kind);
    DELETE FROM parley.usage_warnings w WHERE w.tenant_id = v_tenant AND w.period_start >= parley.period_start();
    PERFORM parley.write_audit('billing.plan_changed', 'tenant', v_tenant::text,
      jsonb_build_object('from', v_from, 'to', p_plan, 'source', p_source, 'status', v_status));
  ELSIF v_sub.status IS DISTINCT FROM v_status THEN
    PERFORM parley.write_audit('billing.status_changed', 'tenant', v_tenant::text,
      jsonb_build_object('plan', p_plan, 'from', v_sub.status, 'to', v_status, 'source', p_source,
                         'grace_until', v_grace));
  END IF;
  RETURN jsonb_build_object('applied', true, 'plan', p_plan, 'from', v_from, 'status', v_status,
                            'grace_until', v_grace);
END $$;
COMMENT ON FUNCTION parley.change_plan(text, text, jsonb) IS
  'Set the current tenant''s plan and subscription state (p_state: provider, interval, status, current_period_start/end, extra_seats, cancel_at_period_end, customer_ref, subscription_ref, synced_at, delinquent_since) with every side effect: tenants.plan, subscriptions (grace period from the first delinquency: the grace_period setting), plan_changes, this period''s warnings reset, audit. p_source: webhook/checkout (service), staff (staff), dunning (jobs), downgrade (an admin, to a free plan only). A state read before the one applied (synced_at) is ignored: {"applied": false}.';

-- The payment provider's customer of this tenant, stored before checkout so the portal and
-- later checkouts reuse it.
CREATE OR REPLACE FUNCTION parley.attach_billing_customer(p_customer_ref text) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = ''
AS $$
DECLARE
  v_tenant uuid := parley.current_tenant_id();
BEGIN
  PERFORM parley.require_role('admin');
  IF p_customer_ref IS NULL OR length(p_customer_ref) NOT BETWEEN 1 AND 255 THEN
    PERFORM parley.raise_error(422, 'invalid', 'Customer reference missing.');
  END IF;
  INSERT INTO parley.subscriptions AS s (tenant_id, plan, customer_ref)
  SELECT t.id, t.plan, p_customer_ref FROM parley.tenants t WHERE t.id = v_tenant
  ON CONFLICT (tenant_id) DO UPDATE SET customer_ref = EXCLUDED.customer_ref, updated_at = now()
   WHERE s.customer_ref IS NULL;
  PERFORM parley.queue_referral_credits(v_tenant);
END $$;
COMMENT ON FUNCTION parley.attach_billing_customer(text) IS
  'Record the payment provider''s customer id of the current tenant (admin; only when none is stored yet).';

-- Provider events: applied once per event id.
CREATE OR REPLACE FUNCTION parley.claim_billing_event(p_event_id text, p_type text, p_created timestamptz)
RETURNS boolean
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
  v_new boolean;
BEGIN
  IF parley.current_actor_kind() <> 'service' THEN
    PERFORM parley.raise_error(403, 'forbidden', 'Only the server records provider events.');
  END IF;
  INSERT INTO parley.billing_events (tenant_id, event_id, type, created)
  VALUES (parley.current_tenant_id(), p_event_id, p_type, p_created)
  ON CONFLICT DO NOTHING
  RETURNING true INTO v_new;
  RETURN coalesce(v_new, false);
END $$;
COMMENT ON FUNCTION parley.claim_billing_event(text, text, timestamptz) IS
  'Webhook dedupe: true the first time this provider event id is seen for the current tenant (in the transaction that applies it), false for a replay.';

-- Dunning: a delinquent subscription whose grace ended is marked limited (Free limits in
-- effective_limits, from grace_until on even before this runs); p_now is the clock.
CREATE OR REPLACE FUNCTION parley.sweep_grace(p_now timestamptz DEFAULT now()) RETURNS int
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = ''
AS $$
DECLARE
  v_tenant uuid := parley.current_tenant_id();
  v_n int;
BEGIN
  IF parley.current_actor_kind() NOT IN ('system', 'service') THEN
    PERFORM parley.raise_error(403, 'forbidden', 'Only the jobs process sweeps grace periods.');
  END IF;
  UPDATE parley.subscriptions s SET limited_at = p_now, updated_at = now()
   WHERE s.tenant_id = v_tenant AND parley.subscription_delinquent(s.status)
     AND s.grace_until <= p_now AND s.limited_at IS NULL;
  GET DIAGNOSTICS v_n = ROW_COUNT;
  IF v_n > 0 THEN
    PERFORM parley.write_audit('billing.limited', 'tenant', v_tenant::text,
      jsonb_build_object('at', p_now, 'reason', 'grace period ended'));
  END IF;
  RETURN v_n;
END $$;
COMMENT ON FUNCTION parley.sweep_grace(timestamptz) IS
  'Jobs: mark the current tenant''s delinquent subscription limited once its grace period ended by p_now (its limits become Free''s; no data is removed); audited as billing.limited. Returns 1 when it did.';

-- What the billing page and GET /api/billing show.
CREATE OR REPLACE FUNCTION parley.plan_catalog() RETURNS jsonb
LANGUAGE sql STABLE
AS $$
  SELECT coalesce(jsonb_agg(jsonb_build_object(
           'id', p.id, 'name', p.name, 'price_monthly_cents', p.price_monthly_cents,
           'price_annual_cents', p.price_annual_cents, 'seat_price_cents', p.seat_price_cents,
           'max_extra_seats', p.max_extra_seats, 'metered', p.metered,
           'included_conversations', p.included_conversations, 'included_ai_messages', p.included_ai_messages,
           'overage_cents_per_100', p.overage_cents_per_100, 'max_chatbots', p.max_chatbots,
           'max_seats', p.max_seats, 'max_open_conversations', p.max_open_conversations,
           'ai_msgs_per_day', p.ai_msgs_per_day, 'retention_days', p.retention_days,
           'allow_hide_branding', p.allow_hide_branding, 'allow_custom_domain', p.allow_custom_domain)
         ORDER BY p.sort_order), '[]')
    FROM parley.plans p WHERE p.public
$$;
COMMENT ON FUNCTION parley.plan_catalog() IS
  'The public plans with prices (USD cents; annual = 10 months), extra seats, allowances and limits, in display order.';
GRANT EXECUTE ON FUNCTION parley.plan_catalog() TO parley_app, parley_jobs;

CREATE OR REPLACE FUNCTION parley.billing_overview() RETURNS jsonb
LANGUAGE sql STABLE
AS $$
  SELECT jsonb_build_object(
    'tenant_id', t.id,
    'plan', t.plan,
    'limited', l.limited,
    'limits', to_jsonb(l) - 'plan' - 'limited',
    'subscription', (SELECT jsonb_build_object(
        'provider', s.provider, 'plan', s.plan, 'interval', s.billing_interval, 'status', s.status,
        'current_period_end', s.current_period_end, 'cancel_at_period_end', s.cancel_at_period_end,
        'grace_until', s.grace_until, 'limited_at', s.limited_at, 'extra_seats', s.extra_seats,
        'has_customer', s.customer_ref IS NOT NULL)
        FROM parley.subscriptions s WHERE s.tenant_id = t.id),
    'meters', (SELECT coalesce(jsonb_agg(to_jsonb(m)), '[]') FROM parley.usage_meters() m),
    'warnings', (SELECT coalesce(jsonb_agg(jsonb_build_object(
        'metric', m.metric, 'level', CASE WHEN m.percent >= 100 THEN 'limit' ELSE 'warning' END,
        'used', m.used, 'allowance', m.allowance, 'percent', m.percent)), '[]')
        FROM parley.usage_meters() m WHERE m.percent >= 80)) || to_jsonb(p)
    FROM parley.tenants t, parley.effective_limits(t.id) l, parley.allowance_period() p
   WHERE t.id = parley.current_tenant_id()
$$;
COMMENT ON FUNCTION parley.billing_overview() IS
  'The current tenant''s plan, limits (limited = past its grace period), subscription (no provider ids), allowance period (period_start, period_end), meters and live warnings (80 % warning, 100 % limit).';

-- The console's banner on every page: the most urgent billing state, or NULL.
CREATE OR REPLACE FUNCTION parley.billing_banner() RETURNS jsonb
LANGUAGE sql STABLE
AS $$
  SELECT CASE
    WHEN l.limited THEN jsonb_build_object('level', 'limit',
      'message', 'Payment is overdue: the Free plan''s limits apply until it is paid. Nothing has been deleted.')
    WHEN s.grace_until IS NOT NULL THEN jsonb_build_object('level', 'warning',
      'message', format('The last payment failed: update the payment method before %s to keep your plan.',
                        to_char(s.grace_until AT TIME ZONE 'UTC', 'YYYY-MM-DD')))
    WHEN w.threshold = 100 THEN jsonb_build_object('level', 'limit',
      'message', 'An allowance of your plan is used up.')
    WHEN w.threshold = 80 THEN jsonb_build_object('level', 'warning',
      'message', 'You have used 80 % of an allowance of your plan.')
  END
    FROM parley.effective_limits(parley.current_tenant_id()) l
    LEFT JOIN parley.subscriptions s ON s.tenant_id = (SELECT parley.current_tenant_id())
    LEFT JOIN LATERAL (
      SELECT max(w.threshold) AS threshold FROM parley.usage_warnings w
       WHERE w.tenant_id = (SELECT parley.current_tenant_id()) AND w.period_start >= parley.period_start()
         AND (w.metric <> 'ai_messages_today' OR w.period_start = (now() AT TIME ZONE 'UTC')::date)) w ON true
$$;
COMMENT ON FUNCTION parley.billing_banner() IS
  'The console banner for the current tenant: limited (grace over), payment failed (in grace), or an allowance at 100 % / 80 % this period (recorded by the record_usage_warnings job); NULL when all is well.';

-- Owners and callers (parley.secure_functions, sql/05_access.sql).
SELECT parley.secure_functions(NULL, '{parley_app, parley_jobs}',
  'parley.usage_between(text, date, date)', 'parley.allowance_period(date)', 'parley.check_allowance(text)',
  'parley.usage_meters()', 'parley.billing_overview()');
SELECT parley.secure_functions(NULL, '{parley_jobs}', 'parley.record_usage_warnings()');
SELECT parley.secure_functions('parley_owner', '{parley_app, parley_jobs}',
  'parley.change_plan(text, text, jsonb)', 'parley.sweep_grace(timestamptz)');
SELECT parley.secure_functions('parley_owner', '{parley_app}', 'parley.attach_billing_customer(text)');
SELECT parley.secure_functions(NULL, '{parley_app}',
  'parley.claim_billing_event(text, text, timestamptz)', 'parley.billing_banner()');
