-- Metering: usage per tenant per day (the sharded counters of sql/43_usage.sql, summed),
-- the monthly usage feed, and overage on metered plans as increment-only reports, one per
-- tenant, period, metric and finished day, each with its idempotency key (`identifier`).

CREATE OR REPLACE FUNCTION parley.usage_days(p_from date, p_to date)
RETURNS TABLE (day date, messages bigint, ai_messages bigint, conversations bigint, active_seats bigint)
LANGUAGE sql STABLE
AS $$
  SELECT d::date, coalesce(u.messages, 0), coalesce(u.ai_messages, 0), coalesce(u.conversations, 0),
         coalesce(u.active_seats, 0)
    FROM generate_series(p_from, p_to - 1, interval '1 day') AS d
    LEFT JOIN parley.usage_by_day u  -- the one pivot (43_usage.sql)
      ON u.tenant_id = (SELECT parley.current_tenant_id()) AND u.day = d::date
   ORDER BY d
$$;
COMMENT ON FUNCTION parley.usage_days(date, date) IS
  'The current tenant''s usage per UTC day over [p_from, p_to), one row per day (zeros included): messages, AI replies, conversations started, active seats.';
REVOKE ALL ON FUNCTION parley.usage_days(date, date) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION parley.usage_days(date, date) TO parley_app, parley_jobs;

-- Overage of finished days not yet reported: for each metered metric and period, the
-- cumulative usage past the allowance, day by day; a day's quantity is the growth of that
-- overage (never negative). Rows are written once (ON CONFLICT DO NOTHING), so the day's
-- quantity and identifier never change; days with nothing to bill are marked reported.
CREATE OR REPLACE FUNCTION parley.claim_usage_reports(p_today date DEFAULT NULL)
RETURNS TABLE (period_start date, metric text, day date, quantity bigint, identifier text, customer_ref text)
LANGUAGE plpgsql VOLATILE
AS $$
#variable_conflict use_column
DECLARE
  v_tenant uuid := parley.current_tenant_id();
  v_today date := coalesce(p_today, (now() AT TIME ZONE 'UTC')::date);
  v_lim record;
  v_customer text;
BEGIN
  IF parley.current_actor_kind() <> 'system' THEN
    PERFORM parley.raise_error(403, 'forbidden', 'Only the jobs process reports usage.');
  END IF;
  SELECT * INTO v_lim FROM parley.effective_limits(v_tenant);
  SELECT s.customer_ref INTO v_customer FROM parley.subscriptions s
   WHERE s.tenant_id = v_tenant AND s.provider = 'stripe' AND s.status IN ('active', 'trialing', 'past_due');
  IF NOT v_lim.metered OR v_customer IS NULL THEN
    RETURN;
  END IF;
  INSERT INTO parley.usage_reports AS r (tenant_id, period_start, metric, day, quantity, identifier, reported_at)
  SELECT v_tenant, o.p, o.metric, o.day, o.inc,
         format('parley:%s:%s:%s:%s', v_tenant, o.p, o.metric, o.day),
         CASE WHEN o.inc = 0 THEN now() END
    FROM (
      SELECT c.p, c.metric, c.day,
             greatest(0, c.cum - c.allowance) - greatest(0, c.cum - c.used - c.allowance) AS inc
        FROM (
          SELECT parley.period_start(u.day) AS p, m.metric, u.day, m.allowance,
                 CASE m.metric WHEN 'conversations' THEN u.conversations ELSE u.ai_messages END AS used,
                 sum(CASE m.metric WHEN 'conversations' THEN u.conversations ELSE u.ai_messages END)
                   OVER (PARTITION BY m.metric, parley.period_start(u.day) ORDER BY u.day) AS cum
            FROM parley.usage_days(parley.period_start(((v_today - 1) - interval '1 month')::date), v_today) u
            CROSS JOIN (VALUES ('conversations', v_lim.included_conversations),
                               ('ai_messages', v_lim.included_ai_messages)) AS m(metric, allowance)
        ) c
       WHERE c.allowance > 0
    ) o
  ON CONFLICT (tenant_id, period_start, metric, day) DO NOTHING;
  RETURN QUERY
    SELECT r.period_start, r.metric, r.day, r.quantity, r.identifier, v_customer
      FROM parley.usage_reports r
     WHERE r.tenant_id = v_tenant AND r.reported_at IS NULL
     ORDER BY r.day, r.metric;
END $$;
COMMENT ON FUNCTION parley.claim_usage_reports(date) IS
  'Jobs: write the current tenant''s overage rows for finished days (before p_today, this and the previous period) on a metered plan with a Stripe customer, then return every row not yet reported with its idempotency key and the customer. A day is written once; a row whose report failed comes back with the same identifier, so the provider bills it once.';
REVOKE ALL ON FUNCTION parley.claim_usage_reports(date) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION parley.claim_usage_reports(date) TO parley_jobs;

CREATE OR REPLACE FUNCTION parley.mark_usage_reported(p_identifier text) RETURNS boolean
LANGUAGE sql VOLATILE
AS $$
  UPDATE parley.usage_reports r SET reported_at = now()
   WHERE r.tenant_id = (SELECT parley.current_tenant_id()) AND r.identifier = p_identifier AND r.reported_at IS NULL
  RETURNING true
$$;
COMMENT ON FUNCTION parley.mark_usage_reported(text) IS
  'Jobs: the provider accepted the report with this identifier; true when it was pending.';
REVOKE ALL ON FUNCTION parley.mark_usage_reported(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION parley.mark_usage_reported(text) TO parley_jobs;
