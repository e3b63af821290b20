-- Analyst views of the business (parley_analyst reads analytics only): subscriptions, revenue
-- by plan, plan changes, monthly usage and reported overage. No provider ids, no secrets.

GRANT SELECT ON parley.subscriptions, parley.plan_changes, parley.usage_reports, parley.plans TO parley_reporting;

SELECT parley.ensure_view('analytics.subscriptions', 'security_barrier = true', 'parley_reporting', $$
  SELECT s.tenant_id, s.provider, s.plan, s.billing_interval, s.status, s.current_period_end,
         s.cancel_at_period_end, s.extra_seats, s.grace_until, s.limited_at, s.updated_at
    FROM parley.subscriptions s$$);
COMMENT ON VIEW analytics.subscriptions IS
  'Every tenant''s subscription state (provider, plan, interval, status, period end, extra seats, grace), without provider ids.';
GRANT SELECT ON analytics.subscriptions TO parley_analyst;

SELECT parley.ensure_view('analytics.mrr_by_plan', 'security_barrier = true', 'parley_reporting', $$
  SELECT p.id AS plan, count(s.tenant_id) AS subscriptions,
         coalesce(sum(CASE s.billing_interval WHEN 'year' THEN (p.price_annual_cents + 10 * p.seat_price_cents * s.extra_seats) / 12.0
                                              ELSE p.price_monthly_cents + p.seat_price_cents * s.extra_seats END), 0)::bigint
           AS mrr_cents
    FROM parley.plans p
    LEFT JOIN parley.subscriptions s ON s.plan = p.id AND s.provider = 'stripe'
                                    AND parley.subscription_billed(s.status)
   GROUP BY p.id, p.sort_order ORDER BY p.sort_order$$);
COMMENT ON VIEW analytics.mrr_by_plan IS
  'Monthly recurring revenue by plan in USD cents from paying Stripe subscriptions (annual = a twelfth of the year''s price; extra seats included; overage not).';
GRANT SELECT ON analytics.mrr_by_plan TO parley_analyst;

SELECT parley.ensure_view('analytics.plan_changes', 'security_barrier = true', 'parley_reporting', $$
  SELECT c.tenant_id, c.id, c.at, c.from_plan, c.to_plan, c.billing_interval, c.source, c.actor_kind
    FROM parley.plan_changes c$$);
COMMENT ON VIEW analytics.plan_changes IS
  'Every plan change: when, from which plan to which, and through what (checkout, webhook, staff, downgrade, dunning).';
GRANT SELECT ON analytics.plan_changes TO parley_analyst;

SELECT parley.ensure_view('analytics.usage_monthly', 'security_barrier = true', 'parley_reporting', $$
  SELECT u.tenant_id, date_trunc('month', u.day)::date AS month,
         sum(u.messages)::bigint AS messages, sum(u.ai_messages)::bigint AS ai_messages,
         sum(u.conversations)::bigint AS conversations, max(u.active_seats)::bigint AS peak_active_seats
    FROM analytics.usage_daily u
   GROUP BY u.tenant_id, date_trunc('month', u.day)$$);
COMMENT ON VIEW analytics.usage_monthly IS
  'Usage per tenant per calendar month (UTC): messages, AI replies, conversations started, the busiest day''s active seats.';
GRANT SELECT ON analytics.usage_monthly TO parley_analyst;

SELECT parley.ensure_view('analytics.overage', 'security_barrier = true', 'parley_reporting', $$
  SELECT r.tenant_id, r.period_start, r.metric, r.day, r.quantity, r.reported_at IS NOT NULL AS reported,
         r.delivery_id IS NOT NULL AS queued, r.reported_at
    FROM parley.usage_reports r WHERE r.quantity > 0$$);
COMMENT ON VIEW analytics.overage IS
  'Overage billed per tenant, period, metric and day (units past the allowance): queued (its meter event is in the outbox) and reported (Stripe accepted it, at reported_at).';
GRANT SELECT ON analytics.overage TO parley_analyst;
