-- The staff back-office: the operators of this installation (verified emails listed in
-- PARLEY_ADMIN_EMAILS, member sessions only) act across tenants. Inside a tenant they act
-- through begin_request as actor kind 'staff' (role owner), so every function, policy and
-- the audit trail apply as for the tenant's own people, with actor staff; the cross-tenant
-- reads (stats, search, audit) are the definer functions below, each checking staff itself.

SELECT parley.force_row_security('parley.staff_emails');
SELECT parley.ensure_policy('parley.staff_emails', 'all_auth',
  $$FOR ALL USING (current_user = 'parley_auth') WITH CHECK (current_user = 'parley_auth')$$);
GRANT SELECT, INSERT, DELETE ON parley.staff_emails TO parley_auth;
GRANT SELECT (suspended_at) ON parley.tenants TO parley_app;

CREATE OR REPLACE FUNCTION parley.sync_staff_emails(p_emails text[]) RETURNS int
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = ''
AS $$
DECLARE
  v_n int;
BEGIN
  DELETE FROM parley.staff_emails s WHERE s.email <> ALL (SELECT lower(trim(e)) FROM unnest(p_emails) e);
  INSERT INTO parley.staff_emails (email)
  SELECT DISTINCT lower(trim(e)) FROM unnest(p_emails) e WHERE trim(e) ~ '^[^@\s]+@[^@\s]+$'
  ON CONFLICT DO NOTHING;
  SELECT count(*) INTO v_n FROM parley.staff_emails;
  RETURN v_n;
END $$;
COMMENT ON FUNCTION parley.sync_staff_emails(text[]) IS
  'Server start: make the staff list exactly the configured emails (PARLEY_ADMIN_EMAILS, lower-cased); returns how many there are.';

-- Staff: a live session of a person whose email is listed and verified (the password-reset
-- mail proves the mailbox), so signing up first with an operator's address gains nothing.
CREATE OR REPLACE FUNCTION parley.is_staff(p_user_id uuid, p_session_id uuid) RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = ''
AS $$
  SELECT EXISTS (
    SELECT 1 FROM parley.users u JOIN parley.staff_emails s ON s.email = lower(u.email)
     WHERE u.id = p_user_id AND u.email_verified_at IS NOT NULL
       AND EXISTS (SELECT 1 FROM parley.refresh_tokens r
                    WHERE r.family_id = p_session_id AND r.user_id = p_user_id
                      AND r.revoked_at IS NULL AND r.expires_at > now()))
$$;
COMMENT ON FUNCTION parley.is_staff(uuid, uuid) IS
  'True when the person has a verified email on the staff list and this session is alive.';

-- A cross-tenant staff transaction (no tenant): the first call before the reads below.
CREATE OR REPLACE FUNCTION parley.begin_staff_request(p_user_id uuid, p_session_id uuid, p_ip text,
                                                      p_request_id text) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = ''
AS $$
BEGIN
  IF NOT parley.is_staff(p_user_id, p_session_id) THEN
    PERFORM parley.raise_error(403, 'not_staff', 'This needs an operator of this installation.');
  END IF;
  PERFORM set_config('app.tenant_id', '', true);
  PERFORM set_config('app.actor_kind', 'staff', true);
  PERFORM set_config('app.actor_id', p_user_id::text, true);
  PERFORM set_config('app.user_id', p_user_id::text, true);
  PERFORM set_config('app.session_id', p_session_id::text, true);
  PERFORM set_config('app.ip', coalesce(p_ip, ''), true);
  PERFORM set_config('app.request_id', coalesce(p_request_id, ''), true);
END $$;
COMMENT ON FUNCTION parley.begin_staff_request(uuid, uuid, text, text) IS
  'First call of a cross-tenant staff transaction: 403 not_staff unless parley.is_staff; sets the actor (staff, no tenant).';

CREATE OR REPLACE FUNCTION parley.require_operator() RETURNS void
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = ''
AS $$
BEGIN
  IF parley.current_actor_kind() <> 'staff'
     OR NOT parley.is_staff(parley.current_actor_id()::uuid, nullif(current_setting('app.session_id', true), '')::uuid) THEN
    PERFORM parley.raise_error(403, 'not_staff', 'This needs an operator of this installation.');
  END IF;
END $$;
COMMENT ON FUNCTION parley.require_operator() IS
  'Raise 403 not_staff unless this transaction was begun by staff (begin_staff_request or begin_request as staff) and still is.';

CREATE OR REPLACE FUNCTION parley.staff_stats() RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = ''
AS $$
BEGIN
  PERFORM parley.require_operator();
  RETURN jsonb_build_object(
    'tenants', (SELECT count(*) FROM parley.tenants t WHERE t.deleted_at IS NULL),
    'suspended', (SELECT count(*) FROM parley.tenants t WHERE t.deleted_at IS NULL AND t.suspended_at IS NOT NULL),
    'users', (SELECT count(*) FROM parley.users),
    'by_plan', (SELECT coalesce(jsonb_object_agg(x.plan, x.n), '{}') FROM
                 (SELECT t.plan, count(*) AS n FROM parley.tenants t WHERE t.deleted_at IS NULL GROUP BY t.plan) x),
    'paying', (SELECT count(*) FROM parley.subscriptions s
                WHERE s.provider = 'stripe' AND parley.subscription_billed(s.status)
                  AND NOT parley.subscription_delinquent(s.status)),
    'delinquent', (SELECT count(*) FROM parley.subscriptions s WHERE parley.subscription_delinquent(s.status)),
    'mrr_cents', (SELECT coalesce(sum(CASE s.billing_interval WHEN 'year' THEN p.price_annual_cents / 12
                                                             ELSE p.price_monthly_cents END), 0)
                    FROM parley.subscriptions s JOIN parley.plans p ON p.id = s.plan
                   WHERE s.provider = 'stripe' AND parley.subscription_billed(s.status)),
    'messages_today', (SELECT coalesce(sum(u.value), 0) FROM parley.usage_counters u
                        WHERE u.metric = 'messages' AND u.day = (now() AT TIME ZONE 'UTC')::date));
END $$;
COMMENT ON FUNCTION parley.staff_stats() IS
  'Staff: installation-wide counts (tenants, suspended, users, tenants per plan, paying, delinquent, MRR in cents, messages today).';
GRANT SELECT ON parley.subscriptions, parley.usage_counters, parley.audit_log TO parley_auth;

CREATE OR REPLACE FUNCTION parley.staff_find_tenants(p_query text, p_limit int DEFAULT 50) RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = ''
AS $$
DECLARE
  v_q text := lower(coalesce(p_query, ''));
BEGIN
  PERFORM parley.require_operator();
  RETURN (SELECT coalesce(jsonb_agg(jsonb_build_object(
           'id', t.id, 'slug', t.slug, 'name', t.name, 'plan', t.plan, 'created_at', t.created_at,
           'suspended_at', t.suspended_at, 'status', s.status, 'members', (SELECT count(*) FROM parley.members m
                                                                         WHERE m.tenant_id = t.id))
           ORDER BY t.created_at DESC), '[]')
    FROM (SELECT * FROM parley.tenants t
           WHERE t.deleted_at IS NULL
             AND (v_q = '' OR t.id::text = v_q OR strpos(lower(t.slug), v_q) > 0 OR strpos(lower(t.name), v_q) > 0
                  OR EXISTS (SELECT 1 FROM parley.members m JOIN parley.users u ON u.id = m.user_id
                              WHERE m.tenant_id = t.id AND strpos(lower(u.email), v_q) > 0))
           ORDER BY t.created_at DESC LIMIT least(greatest(coalesce(p_limit, 50), 1), 200)) t
    LEFT JOIN parley.subscriptions s ON s.tenant_id = t.id);
END $$;
COMMENT ON FUNCTION parley.staff_find_tenants(text, int) IS
  'Staff: live tenants whose id, slug, name or a member''s email contains p_query (all when empty), newest first, with plan, subscription status, suspension and member count.';

CREATE OR REPLACE FUNCTION parley.staff_audit(p_tenant_id uuid DEFAULT NULL, p_limit int DEFAULT 100) RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = ''
AS $$
BEGIN
  PERFORM parley.require_operator();
  RETURN (SELECT coalesce(jsonb_agg(to_jsonb(a) ORDER BY a.at DESC, a.id DESC), '[]')
    FROM (SELECT l.tenant_id, l.id, l.at, l.actor_kind, l.actor_id, l.action, l.target_kind, l.target_id,
                 l.request_id, l.details
            FROM parley.audit_log l
           WHERE p_tenant_id IS NULL OR l.tenant_id = p_tenant_id
           ORDER BY l.at DESC, l.id DESC LIMIT least(greatest(coalesce(p_limit, 100), 1), 500)) a);
END $$;
COMMENT ON FUNCTION parley.staff_audit(uuid, int) IS
  'Staff: the newest audit rows of every tenant (or one), without ip addresses.';

-- Inside a tenant (begin_request as staff): overrides and suspension, audited with actor staff.
CREATE OR REPLACE FUNCTION parley.staff_set_limits(p_limits jsonb) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = ''
AS $$
DECLARE
  v_tenant uuid := parley.current_tenant_id();
  v_before jsonb;
  v_row parley.tenant_limits;
BEGIN
  PERFORM parley.require_operator();
  IF v_tenant IS NULL OR jsonb_typeof(p_limits) <> 'object' THEN
    PERFORM parley.raise_error(422, 'invalid', 'Give the limits as an object.');
  END IF;
  -- Two staff changes at once merge one after the other (the second reads what the first wrote).
  PERFORM pg_advisory_xact_lock(7261011, hashtext(v_tenant::text));
  SELECT to_jsonb(l) INTO v_before FROM parley.tenant_limits l WHERE l.tenant_id = v_tenant;
  -- Only known columns; a key with null inherits the plan again, 0 is unlimited.
  v_row := jsonb_populate_record(NULL::parley.tenant_limits,
    coalesce(v_before, '{}') || (p_limits - 'tenant_id' - 'updated_at')
      || jsonb_build_object('tenant_id', v_tenant, 'updated_at', now()));
  -- The whole row is replaced, every column of the table (no list here to fall behind a migration).
  DELETE FROM parley.tenant_limits l WHERE l.tenant_id = v_tenant;
  INSERT INTO parley.tenant_limits SELECT (v_row).*;
  PERFORM parley.write_audit('staff.limits_changed', 'tenant', v_tenant::text,
    jsonb_build_object('before', v_before, 'after', to_jsonb(v_row)));
  RETURN (SELECT to_jsonb(l) FROM parley.effective_limits(v_tenant) l);
END $$;
COMMENT ON FUNCTION parley.staff_set_limits(jsonb) IS
  'Staff, inside the tenant: merge p_limits into its tenant_limits overrides (null = inherit the plan, 0 = unlimited; unknown keys ignored; values checked by the table), audited as staff.limits_changed; returns the effective limits.';

CREATE OR REPLACE FUNCTION parley.staff_suspend(p_suspended boolean, p_reason text DEFAULT NULL) RETURNS timestamptz
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = ''
AS $$
DECLARE
  v_tenant uuid := parley.current_tenant_id();
  v_at timestamptz;
BEGIN
  PERFORM parley.require_operator();
  UPDATE parley.tenants t SET suspended_at = CASE WHEN p_suspended THEN coalesce(t.suspended_at, now()) END
   WHERE t.id = v_tenant RETURNING t.suspended_at INTO v_at;
  PERFORM parley.write_audit(CASE WHEN p_suspended THEN 'staff.suspended' ELSE 'staff.unsuspended' END,
    'tenant', v_tenant::text, jsonb_build_object('reason', left(p_reason, 500)));
  RETURN v_at;
END $$;
COMMENT ON FUNCTION parley.staff_suspend(boolean, text) IS
  'Staff, inside the tenant: suspend (members, keys and the widget are refused; data kept) or unsuspend it; audited as staff.suspended / staff.unsuspended with the reason.';

-- GET /api/tenants?ids=: a batch fetch for proxies that map chatbot → workspace → plan (the widget's
-- session names the tenant). Staff see any workspace; anyone else only those they belong to; the
-- rest are left out, indistinguishable from ids that do not exist. API keys never reach it (a key
-- belongs to one workspace: GET /api/billing answers for it).
CREATE OR REPLACE FUNCTION parley.tenants_by_ids(p_ids uuid[]) RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = ''
AS $$
DECLARE
  v_user uuid := parley.current_user_id();
  v_staff boolean;
BEGIN
  IF v_user IS NULL THEN
    PERFORM parley.raise_error(401, 'unauthenticated', 'Sign in first.');
  END IF;
  IF coalesce(cardinality(p_ids), 0) NOT BETWEEN 1 AND 100 THEN
    PERFORM parley.raise_error(422, 'invalid_ids', 'Give 1 to 100 workspace ids.');
  END IF;
  v_staff := parley.is_staff(v_user, parley.current_session_id());
  RETURN coalesce((
    SELECT jsonb_agg(jsonb_build_object('id', t.id, 'slug', t.slug, 'name', t.name, 'plan', t.plan, 'role', m.role,
                                        'created_at', t.created_at, 'suspended', t.suspended_at IS NOT NULL)
                     ORDER BY array_position(p_ids, t.id))
      FROM parley.tenants t
      LEFT JOIN parley.members m ON m.tenant_id = t.id AND m.user_id = v_user
     WHERE t.id = ANY (p_ids) AND t.deleted_at IS NULL AND (m.user_id IS NOT NULL OR v_staff)), '[]'::jsonb);
END $$;
COMMENT ON FUNCTION parley.tenants_by_ids(uuid[]) IS
  'The signed-in person''s view of up to 100 workspaces by id (id, slug, name, plan, their role, created, suspended), in the order asked: staff any live workspace, others only those they are a member of; the rest are left out. Definer: other tenants'' rows are outside RLS.';

-- Owners and callers (parley.secure_functions, sql/05_access.sql).
SELECT parley.secure_functions('parley_auth', '{parley_app}',
  'parley.sync_staff_emails(text[])', 'parley.is_staff(uuid, uuid)',
  'parley.begin_staff_request(uuid, uuid, text, text)', 'parley.staff_stats()',
  'parley.staff_find_tenants(text, int)', 'parley.staff_audit(uuid, int)', 'parley.tenants_by_ids(uuid[])');
SELECT parley.secure_functions('parley_auth', '{parley_app, parley_owner}', 'parley.require_operator()');
SELECT parley.secure_functions('parley_owner', '{parley_app}',
  'parley.staff_set_limits(jsonb)', 'parley.staff_suspend(boolean, text)');
