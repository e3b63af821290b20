-- Referrals: every tenant has a stable share code (tenants.referral_code); a workspace created
-- at sign-up with `?ref=<code>` is attributed to the code's tenant once, in the sign-up
-- transaction; when it first pays (an active Stripe subscription to a paid plan, applied by
-- parley.change_plan) the referrer earns a credit (setting referral_credit_cents, 10 USD),
-- capped per referrer (setting referral_cap_cents, 100 USD), once per referred tenant. Earned
-- credits go to Stripe as a customer balance transaction through the outbox (destination kind
-- 'stripe', idempotency key per referrer and referred tenant), as soon as the referrer has a
-- Stripe customer; Stripe's answer sets applied_at.

SELECT parley.apply_tenant_policies('parley.referral_credits');
GRANT SELECT ON parley.referral_credits TO parley_app, parley_jobs;
GRANT SELECT, INSERT, UPDATE ON parley.referral_credits TO parley_auth;
GRANT SELECT (referral_code) ON parley.tenants TO parley_app;
GRANT SELECT, INSERT ON parley.outbox_destinations TO parley_auth;
GRANT INSERT ON parley.outbox TO parley_auth;
GRANT USAGE ON SEQUENCE parley.outbox_id_seq TO parley_auth;
GRANT SELECT ON parley.subscriptions, parley.plans TO parley_auth;

-- Sign-up (auth transaction, after parley.sign_up): attribute the new workspace to a code.
CREATE OR REPLACE FUNCTION parley.attribute_referral(p_tenant_id uuid, p_code text) RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = ''
AS $$
DECLARE
  v_user uuid := parley.current_user_id();
  v_referrer uuid;
  v_new boolean;
BEGIN
  -- Only a workspace created in this very transaction, by the person acting in it: an older
  -- workspace cannot be attributed later, nor someone else's.
  IF v_user IS NULL OR NOT EXISTS (
       SELECT 1 FROM parley.tenants t JOIN parley.members m ON m.tenant_id = t.id
        WHERE t.id = p_tenant_id AND t.created_at = now() AND m.user_id = v_user AND m.role = 'owner') THEN
    PERFORM parley.raise_error(403, 'forbidden', 'Referrals are attributed when a workspace is created.');
  END IF;
  IF p_code IS NULL OR lower(btrim(p_code)) !~ '^[a-z0-9]{8,32}$' THEN
    RETURN false;
  END IF;
  SELECT t.id INTO v_referrer FROM parley.tenants t
   WHERE t.referral_code = lower(btrim(p_code)) AND t.deleted_at IS NULL AND t.id <> p_tenant_id;
  -- Unknown codes and referring oneself (the new owner already belongs to the referrer) earn nothing.
  IF v_referrer IS NULL
     OR EXISTS (SELECT 1 FROM parley.members m WHERE m.tenant_id = v_referrer AND m.user_id = v_user) THEN
    RETURN false;
  END IF;
  INSERT INTO parley.referral_credits (tenant_id, referred_tenant_id) VALUES (v_referrer, p_tenant_id)
  ON CONFLICT DO NOTHING
  RETURNING true INTO v_new;
  IF v_new THEN
    PERFORM parley.write_audit('referral.signed_up', 'tenant', p_tenant_id::text, '{}', v_referrer);
  END IF;
  RETURN coalesce(v_new, false);
END $$;
COMMENT ON FUNCTION parley.attribute_referral(uuid, text) IS
  'Sign-up: attribute the workspace created in this transaction by the acting person (its owner) to the tenant whose referral_code is p_code (once; audited in the referrer''s trail as referral.signed_up). False for an unknown code or a self-referral (the person is a member of the referrer); 403 for any other workspace. Definer: the referrer is another tenant.';

-- Earned credits of a referrer become Stripe balance deliveries once it has a Stripe customer.
CREATE OR REPLACE FUNCTION parley.queue_referral_credits(p_referrer uuid) RETURNS int
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = ''
AS $$
DECLARE
  v_customer text;
  v_dest uuid;
  v_row parley.referral_credits;
  v_id bigint;
  v_n int := 0;
BEGIN
  SELECT s.customer_ref INTO v_customer FROM parley.subscriptions s
   WHERE s.tenant_id = p_referrer AND s.customer_ref IS NOT NULL;
  IF v_customer IS NULL OR NOT EXISTS (
       SELECT 1 FROM parley.referral_credits r
        WHERE r.tenant_id = p_referrer AND r.status = 'earned' AND r.amount_cents > 0 AND r.delivery_id IS NULL) THEN
    RETURN 0;
  END IF;
  v_dest := parley.stripe_destination(p_referrer);
  FOR v_row IN SELECT * FROM parley.referral_credits r
                WHERE r.tenant_id = p_referrer AND r.status = 'earned' AND r.amount_cents > 0
                  AND r.delivery_id IS NULL
                ORDER BY r.earned_at FOR UPDATE LOOP
    INSERT INTO parley.outbox (tenant_id, destination_id, kind, payload, deadline)
    VALUES (p_referrer, v_dest, 'billing.referral_credit', jsonb_build_object(
              'type', 'billing.referral_credit', 'customer', v_customer, 'amount_cents', v_row.amount_cents,
              'currency', 'usd', 'referred_tenant_id', v_row.referred_tenant_id,
              'idempotency_key', format('parley-referral-%s-%s', p_referrer, v_row.referred_tenant_id)),
            now() + interval '30 days')
    RETURNING id INTO v_id;
    UPDATE parley.referral_credits r SET delivery_id = v_id
     WHERE r.tenant_id = p_referrer AND r.referred_tenant_id = v_row.referred_tenant_id;
    v_n := v_n + 1;
  END LOOP;
  RETURN v_n;
END $$;
COMMENT ON FUNCTION parley.queue_referral_credits(uuid) IS
  'Internal: queue every earned, not yet queued credit of p_referrer as an outbox delivery to its Stripe customer''s balance (destination kind stripe, parley.stripe_destination; idempotency key parley-referral-<referrer>-<referred>). Nothing without a Stripe customer; returns how many were queued.';

-- The referred tenant pays (called by parley.change_plan): its referrer earns, once, capped.
CREATE OR REPLACE FUNCTION parley.earn_referral_credit(p_plan text) RETURNS int
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = ''
AS $$
DECLARE
  v_referred uuid := parley.current_tenant_id();
  v_row parley.referral_credits;
  v_total bigint;
  v_amount int;
BEGIN
  SELECT * INTO v_row FROM parley.referral_credits r
   WHERE r.referred_tenant_id = v_referred AND r.status = 'pending' FOR UPDATE;
  IF NOT FOUND THEN
    RETURN NULL;
  END IF;
  -- One referrer's conversions are counted one at a time, so the cap holds under concurrency.
  PERFORM pg_advisory_xact_lock(hashtextextended('parley.referral_credits:' || v_row.tenant_id::text, 0));
  SELECT coalesce(sum(r.amount_cents), 0) INTO v_total FROM parley.referral_credits r WHERE r.tenant_id = v_row.tenant_id;
  v_amount := least(parley.server_setting('referral_credit_cents', NULL::int),
                    greatest(parley.server_setting('referral_cap_cents', NULL::int) - v_total, 0))::int;
  UPDATE parley.referral_credits r
     SET status = CASE WHEN v_amount > 0 THEN 'earned' ELSE 'capped' END, amount_cents = v_amount,
         earned_at = now(), earned_plan = p_plan
   WHERE r.tenant_id = v_row.tenant_id AND r.referred_tenant_id = v_referred;
  PERFORM parley.write_audit('referral.credit_earned', 'tenant', v_referred::text,
    jsonb_build_object('amount_cents', v_amount, 'plan', p_plan, 'capped', v_amount = 0), v_row.tenant_id);
  PERFORM parley.queue_referral_credits(v_row.tenant_id);
  RETURN v_amount;
END $$;
COMMENT ON FUNCTION parley.earn_referral_credit(text) IS
  'Internal to parley.change_plan: the current tenant converted to paid plan p_plan; if it was referred and has not converted before, its referrer earns the referral_credit_cents setting (less what the referral_cap_cents cap leaves; 0 = capped), audited in the referrer''s trail, and queued to Stripe. Returns the amount, NULL when nothing was pending.';

-- Stripe confirmed a balance transaction (the outbox marked the delivery delivered).
CREATE OR REPLACE FUNCTION parley.on_referral_credit_delivered() RETURNS trigger
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = ''
AS $$
BEGIN
  UPDATE parley.referral_credits r SET applied_at = coalesce(NEW.finished_at, now())
   WHERE r.tenant_id = NEW.tenant_id AND r.delivery_id = NEW.id AND r.applied_at IS NULL;
  RETURN NULL;
END $$;
COMMENT ON FUNCTION parley.on_referral_credit_delivered() IS
  'Trigger: a billing.referral_credit delivery was delivered, so its credit is applied (applied_at).';
SELECT parley.ensure_trigger('parley.outbox', 't60_referral_credit_delivered', 'AFTER UPDATE OF status',
  $$FOR EACH ROW WHEN (NEW.kind = 'billing.referral_credit' AND NEW.status = 'delivered')
    EXECUTE FUNCTION parley.on_referral_credit_delivered()$$);

-- What the billing page shows: the share code and this tenant's credits.
CREATE OR REPLACE FUNCTION parley.referral_summary() RETURNS jsonb
LANGUAGE sql STABLE
AS $$
  SELECT jsonb_build_object(
    'code', t.referral_code,
    'credit_cents', parley.server_setting('referral_credit_cents', NULL::int),
    'cap_cents', parley.server_setting('referral_cap_cents', NULL::int),
    'signed_up', (SELECT count(*) FROM parley.referral_credits r WHERE r.tenant_id = t.id),
    'converted', (SELECT count(*) FROM parley.referral_credits r WHERE r.tenant_id = t.id AND r.status <> 'pending'),
    'earned_cents', (SELECT coalesce(sum(r.amount_cents), 0) FROM parley.referral_credits r WHERE r.tenant_id = t.id),
    'applied_cents', (SELECT coalesce(sum(r.amount_cents), 0) FROM parley.referral_credits r
                       WHERE r.tenant_id = t.id AND r.applied_at IS NOT NULL))
    FROM parley.tenants t WHERE t.id = parley.current_tenant_id()
$$;
COMMENT ON FUNCTION parley.referral_summary() IS
  'The current tenant''s referral code, the credit per paid conversion and the cap (cents), how many workspaces signed up with the code and converted, credit earned and applied to its Stripe balance (cents).';

-- Analysts: the ledger, without customer ids.
GRANT SELECT ON parley.referral_credits TO parley_reporting;
SELECT parley.ensure_view('analytics.referral_credits', 'security_barrier = true', 'parley_reporting', $$
  SELECT r.tenant_id AS referrer_tenant_id, r.referred_tenant_id, r.signed_up_at, r.status, r.amount_cents,
         r.earned_at, r.earned_plan, r.applied_at
    FROM parley.referral_credits r$$);
COMMENT ON VIEW analytics.referral_credits IS
  'Referral ledger: who referred whom, when the referred workspace signed up and first paid (plan), the credit (USD cents; 0 when capped) and when Stripe applied it to the referrer''s balance.';
GRANT SELECT ON analytics.referral_credits TO parley_analyst;

-- Owners and callers (parley.secure_functions, sql/05_access.sql).
SELECT parley.secure_functions('parley_auth', '{parley_app}', 'parley.attribute_referral(uuid, text)');
SELECT parley.secure_functions('parley_auth', '{parley_owner}',
  'parley.queue_referral_credits(uuid)', 'parley.earn_referral_credit(text)');
SELECT parley.secure_functions('parley_auth', NULL, 'parley.on_referral_credit_delivered()');
SELECT parley.secure_functions(NULL, '{parley_app}', 'parley.referral_summary()');
