-- Metering: usage per tenant per day (the sharded counters of sql/43_usage.sql, summed),
-- the monthly usage feed, and overage on metered plans as increment-only reports, one per
-- tenant, period, metric and finished day, each with its idempotency key (`identifier`),
-- delivered to Stripe through the outbox (destination kind stripe).

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

-- Overage of finished days: for each metered metric and period, the cumulative usage past the
-- allowance, day by day; a day's quantity is the growth of that overage (never negative). Rows
-- are written once (ON CONFLICT DO NOTHING), so the day's quantity and identifier never change;
-- days with nothing to bill are marked reported. Each row to bill becomes one outbox delivery
-- (kind billing.meter_event) to the tenant's Stripe destination, in the same transaction: the
-- drainer sends it as a Billing Meter event whose identifier (and Idempotency-Key) is the row's,
-- so a resend after a crash is dropped by Stripe and the day is billed once.
DROP FUNCTION IF EXISTS parley.claim_usage_reports(date);
DROP FUNCTION IF EXISTS parley.mark_usage_reported(text);

CREATE OR REPLACE FUNCTION parley.stripe_destination(p_tenant_id uuid) RETURNS uuid
LANGUAGE sql VOLATILE
AS $$ SELECT parley.system_destination(p_tenant_id, 'stripe', 'stripe', 'Stripe', true) $$;
COMMENT ON FUNCTION parley.stripe_destination(uuid) IS
  'The tenant''s one outbox destination of kind stripe (customer balance credits, meter events; ordered), made on first use (parley.system_destination: one even when two transactions ask first at once); its id.';

-- Payments were off (or Stripe refused the API key) when a delivery was tried: the drainer
-- paused the destination with one of the reasons p_reasons; the jobs process, starting with
-- payments on (the operator's configuration fixed), resumes every such destination.
GRANT UPDATE (status, paused_reason, paused_at, failing_since, consecutive_failures, next_send_at, updated_at)
   ON parley.outbox_destinations TO parley_auth;
GRANT UPDATE (next_attempt_at) ON parley.outbox TO parley_auth;
DROP FUNCTION IF EXISTS parley.resume_stripe_destinations(text);
CREATE OR REPLACE FUNCTION parley.resume_stripe_destinations(p_reasons text[]) RETURNS int
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = ''
AS $$
DECLARE
  v_n int;
BEGIN
  WITH resumed AS (
    UPDATE parley.outbox_destinations d
       SET status = 'active', paused_reason = NULL, paused_at = NULL, failing_since = NULL,
           consecutive_failures = 0, next_send_at = '-infinity', updated_at = now()
     WHERE d.kind = 'stripe' AND d.status = 'paused' AND d.paused_reason = ANY (p_reasons)
    RETURNING d.tenant_id, d.id
  ), due AS (
    UPDATE parley.outbox o SET next_attempt_at = now()
      FROM resumed r
     WHERE o.tenant_id = r.tenant_id AND o.destination_id = r.id AND o.status = 'pending'
    RETURNING 1
  )
  SELECT count(*) INTO v_n FROM resumed;
  RETURN v_n;
END $$;
COMMENT ON FUNCTION parley.resume_stripe_destinations(text[]) IS
  'Jobs process, at start with payments on: resume every tenant''s stripe destination paused with one of p_reasons (the drainer''s reasons for the operator''s configuration: payments off, API key refused), its waiting deliveries due now (the drainers'' next poll takes them); returns how many.';

CREATE OR REPLACE FUNCTION parley.queue_usage_reports(p_today date DEFAULT NULL) RETURNS int
LANGUAGE plpgsql VOLATILE
AS $$
#variable_conflict use_column
DECLARE
  v_tenant uuid := parley.current_tenant_id();
  v_today date := coalesce(p_today, (now() AT TIME ZONE 'UTC')::date);
  v_lim record;
  v_customer text;
  v_dest uuid;
  v_n int;
BEGIN
  IF parley.current_actor_kind() <> 'system' THEN
    PERFORM parley.raise_error(403, 'forbidden', 'Only the jobs process reports usage.');
  END IF;
  SELECT * INTO v_lim FROM parley.effective_limits(v_tenant);
  SELECT s.customer_ref INTO v_customer FROM parley.subscriptions s
   WHERE s.tenant_id = v_tenant AND s.provider = 'stripe' AND parley.subscription_billed(s.status);
  IF NOT v_lim.metered OR v_customer IS NULL THEN
    RETURN 0;
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
  IF NOT EXISTS (SELECT 1 FROM parley.usage_reports r
                  WHERE r.tenant_id = v_tenant AND r.reported_at IS NULL AND r.delivery_id IS NULL) THEN
    RETURN 0;
  END IF;
  v_dest := parley.stripe_destination(v_tenant);
  -- Stripe takes meter events up to 35 days old: a delivery not through by then is dead.
  WITH todo AS (
    SELECT r.period_start, r.metric, r.day, r.quantity, r.identifier, nextval('parley.outbox_id_seq') AS id
      FROM parley.usage_reports r
     WHERE r.tenant_id = v_tenant AND r.reported_at IS NULL AND r.delivery_id IS NULL
     ORDER BY r.day, r.metric
       FOR UPDATE
  ), queued AS (
    INSERT INTO parley.outbox (tenant_id, id, destination_id, kind, payload, deadline)
    SELECT v_tenant, t.id, v_dest, 'billing.meter_event', jsonb_build_object(
             'type', 'billing.meter_event', 'customer', v_customer, 'metric', t.metric, 'value', t.quantity,
             'timestamp', extract(epoch FROM (t.day + time '12:00') AT TIME ZONE 'UTC')::bigint,
             'period_start', t.period_start, 'day', t.day, 'identifier', t.identifier),
           least(now() + interval '30 days', (t.day + 35)::timestamp AT TIME ZONE 'UTC')
      FROM todo t
    RETURNING 1
  )
  UPDATE parley.usage_reports r SET delivery_id = t.id
    FROM todo t
   WHERE r.tenant_id = v_tenant AND r.period_start = t.period_start AND r.metric = t.metric AND r.day = t.day;
  GET DIAGNOSTICS v_n = ROW_COUNT;
  PERFORM pg_notify('parley_outbox', v_tenant::text);
  RETURN v_n;
END $$;
COMMENT ON FUNCTION parley.queue_usage_reports(date) IS
  'Jobs (system actor): write the current tenant''s overage rows for finished days (before p_today, this and the previous period) on a metered plan with a Stripe customer, and queue every row to bill and not yet queued as one outbox delivery (kind billing.meter_event, destination kind stripe: customer, metric, value, the day''s noon as timestamp, identifier parley:<tenant>:<period>:<metric>:<day> = the idempotency key; deadline 30 days, at most 35 days after the day). A day is written and queued once. Returns how many were queued; NOTIFY parley_outbox when any.';

-- Stripe accepted a meter event (the drainer marked its delivery delivered): the day is reported.
CREATE OR REPLACE FUNCTION parley.on_usage_report_delivered() RETURNS trigger
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
  UPDATE parley.usage_reports r SET reported_at = coalesce(NEW.finished_at, now())
   WHERE r.tenant_id = NEW.tenant_id AND r.period_start = (NEW.payload->>'period_start')::date
     AND r.metric = NEW.payload->>'metric' AND r.day = (NEW.payload->>'day')::date
     AND r.delivery_id = NEW.id AND r.reported_at IS NULL;
  RETURN NULL;
END $$;
COMMENT ON FUNCTION parley.on_usage_report_delivered() IS
  'Trigger: a billing.meter_event delivery was delivered, so its usage report is reported (reported_at).';
SELECT parley.ensure_trigger('parley.outbox', 't61_usage_report_delivered', 'AFTER UPDATE OF status',
  $$FOR EACH ROW WHEN (NEW.kind = 'billing.meter_event' AND NEW.status = 'delivered')
    EXECUTE FUNCTION parley.on_usage_report_delivered()$$);

-- Owners and callers (parley.secure_functions, sql/05_access.sql).
SELECT parley.secure_functions(NULL, '{parley_app, parley_jobs}', 'parley.usage_days(date, date)');
SELECT parley.secure_functions(NULL, '{parley_jobs, parley_auth}', 'parley.stripe_destination(uuid)');
SELECT parley.secure_functions('parley_auth', '{parley_jobs}', 'parley.resume_stripe_destinations(text[])');
SELECT parley.secure_functions(NULL, '{parley_jobs}', 'parley.queue_usage_reports(date)');
SELECT parley.secure_functions(NULL, NULL, 'parley.on_usage_report_delivered()');
