-- Custom domains (plans with allow_custom_domain): a tenant claims a hostname, proves it in DNS
-- (TXT _parley.<host> = its token, and a CNAME to the configured target or an A record to its
-- addresses), and the verified name routes widget traffic to it (parley.domain_routes, global:
-- the Host is known before the tenant). Staff may force-activate or disable; a plan change that
-- loses allow_custom_domain disables every domain (parley.change_plan). Active domains are
-- re-checked daily by the jobs process: failing (still served, owners e-mailed), then disabled
-- after the grace (parley.record_domain_recheck, at the end of this file).

SELECT parley.apply_tenant_policies('parley.custom_domains');
GRANT SELECT ON parley.custom_domains TO parley_app, parley_jobs;
GRANT SELECT, INSERT, UPDATE, DELETE ON parley.custom_domains TO parley_auth;

SELECT parley.force_row_security('parley.domain_routes');
SELECT parley.ensure_policy('parley.domain_routes', 'all_auth',
  $$FOR ALL USING (current_user = 'parley_auth') WITH CHECK (current_user = 'parley_auth')$$);
GRANT SELECT, INSERT, DELETE ON parley.domain_routes TO parley_auth;

CREATE OR REPLACE FUNCTION parley.normalize_hostname(p_value text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
  SELECT CASE WHEN v ~ '^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z][a-z0-9-]{0,61}[a-z0-9]$' AND length(v) <= 253
                   AND v !~ '(^|\.)(localhost|local|internal|localdomain|invalid|test|example|onion)$'
              THEN v END
    FROM (SELECT rtrim(lower(btrim(coalesce(p_value, ''))), '.') AS v) x
$$;
COMMENT ON FUNCTION parley.normalize_hostname(text) IS
  'A custom domain as stored: lower case, no trailing dot, at least two DNS labels (letters, digits, inner dashes), a top-level label that is not a number (no IP addresses), not a reserved or local name (localhost, .local, .internal, .test, .example, .invalid, .onion); NULL when it is not one.';
GRANT EXECUTE ON FUNCTION parley.normalize_hostname(text) TO parley_app, parley_auth;

CREATE OR REPLACE FUNCTION parley.domain_txt_name(p_hostname text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT '_parley.' || p_hostname $$;
COMMENT ON FUNCTION parley.domain_txt_name(text) IS 'Where the ownership TXT record of a custom domain lives: _parley.<hostname>.';
GRANT EXECUTE ON FUNCTION parley.domain_txt_name(text) TO parley_app, parley_auth;

CREATE OR REPLACE FUNCTION parley.custom_domain_json(p_hostname text) RETURNS jsonb
LANGUAGE sql STABLE
AS $$
  SELECT jsonb_build_object(
    'hostname', d.hostname, 'status', d.status, 'created_at', d.created_at, 'checked_at', d.checked_at,
    'check', d.check_result, 'verified_at', d.verified_at, 'activated_by', d.activated_by,
    'disabled_at', d.disabled_at, 'disabled_reason', d.disabled_reason,
    'failing_since', d.failing_since, 'failed_checks', d.failed_checks,
    'disabled_after', d.failing_since + parley.server_setting('domain_grace', NULL::interval),
    'txt', jsonb_build_object('name', parley.domain_txt_name(d.hostname), 'value', 'parley-verify=' || d.token))
    FROM parley.custom_domains d
   WHERE d.tenant_id = parley.current_tenant_id() AND d.hostname = p_hostname
$$;
COMMENT ON FUNCTION parley.custom_domain_json(text) IS
  'A custom domain of the current tenant as the API shows it (a failing one: since when, how many re-checks failed, when it is disabled unless fixed), with the ownership TXT record to create (name, value); NULL when unknown. The routing record (CNAME to the server''s target, or A records) is configuration the server adds.';
GRANT EXECUTE ON FUNCTION parley.custom_domain_json(text) TO parley_app;

-- The one lookup of a claim the writers below change: by its normalized name, locked.
CREATE OR REPLACE FUNCTION parley.lock_custom_domain(p_hostname text) RETURNS parley.custom_domains
LANGUAGE sql VOLATILE
AS $$
  SELECT d.* FROM parley.custom_domains d
   WHERE d.tenant_id = parley.current_tenant_id() AND d.hostname = parley.normalize_hostname(p_hostname)
     FOR UPDATE
$$;
COMMENT ON FUNCTION parley.lock_custom_domain(text) IS
  'Internal: the current tenant''s claim of p_hostname (normalize_hostname), locked FOR UPDATE until the transaction ends; NULL when it has none.';

-- The global route of a verified name (definer: the table is parley_auth's alone).
CREATE OR REPLACE FUNCTION parley.set_domain_route(p_hostname text, p_active boolean) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = ''
AS $$
DECLARE
  v_tenant uuid := parley.current_tenant_id();
  v_owner uuid;
BEGIN
  IF v_tenant IS NULL OR NOT EXISTS (SELECT 1 FROM parley.custom_domains d
                                      WHERE d.tenant_id = v_tenant AND d.hostname = p_hostname) THEN
    PERFORM parley.raise_error(404, 'not_found', 'No such domain.');
  END IF;
  IF NOT p_active THEN
    DELETE FROM parley.domain_routes r WHERE r.hostname = p_hostname AND r.tenant_id = v_tenant;
    RETURN;
  END IF;
  INSERT INTO parley.domain_routes (hostname, tenant_id) VALUES (p_hostname, v_tenant)
  ON CONFLICT (hostname) DO NOTHING;
  SELECT r.tenant_id INTO v_owner FROM parley.domain_routes r WHERE r.hostname = p_hostname;
  IF v_owner IS DISTINCT FROM v_tenant THEN
    PERFORM parley.raise_error(409, 'domain_taken', 'This domain is already in use by another workspace.');
  END IF;
END $$;
COMMENT ON FUNCTION parley.set_domain_route(text, boolean) IS
  'Internal: route p_hostname (a claim of the current tenant) to it, or remove its route; 409 domain_taken when another workspace already has the name routed.';

CREATE OR REPLACE FUNCTION parley.claim_domain(p_hostname text) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = ''
AS $$
DECLARE
  v_host text := parley.normalize_hostname(p_hostname);
BEGIN
  PERFORM parley.require_role('admin');
  IF NOT (SELECT l.allow_custom_domain FROM parley.effective_limits(parley.current_tenant_id()) l) THEN
    PERFORM parley.raise_error(402, 'plan_limit', 'Custom domains come with the White label plan.');
  END IF;
  IF v_host IS NULL THEN
    PERFORM parley.raise_error(422, 'invalid_hostname', 'Give a public host name such as chat.example.com.');
  END IF;
  PERFORM parley.lock_limit('custom_domains');
  IF (SELECT count(*) FROM parley.custom_domains d WHERE d.tenant_id = parley.current_tenant_id()) >= 5 THEN
    PERFORM parley.raise_error(409, 'too_many_domains', 'A workspace has at most 5 custom domains.');
  END IF;
  INSERT INTO parley.custom_domains (tenant_id, hostname, token)
  VALUES (parley.current_tenant_id(), v_host, replace(gen_random_uuid()::text, '-', ''))
  ON CONFLICT (tenant_id, hostname) DO NOTHING;
  PERFORM parley.write_audit('domain.claimed', 'domain', v_host, '{}');
  RETURN parley.custom_domain_json(v_host);
END $$;
COMMENT ON FUNCTION parley.claim_domain(text) IS
  'Admins on a plan with allow_custom_domain: claim a host name (normalize_hostname; at most 5 per workspace) with a fresh verification token; pending until verified. Claiming again returns the claim unchanged. 402 plan_limit, 422 invalid_hostname, 409 too_many_domains.';

-- Writes go through these definer functions (owned by parley_owner, under the tenant's RLS):
-- the app role only reads claims, so a domain is active only through a check or staff.

-- The one rule of what proves a domain: the TXT record at _parley.<host> holds parley-verify=<token>,
-- and the name routes to this installation (a CNAME to the target, or, when it has no CNAME (e.g.
-- a zone apex), an A/AAAA address of the target's). Used by the admin's check and the re-check job.
CREATE OR REPLACE FUNCTION parley.domain_check_verdict(p_token text, p_observed jsonb, p_expected jsonb)
RETURNS jsonb
LANGUAGE sql IMMUTABLE
AS $$
  SELECT jsonb_build_object(
    'txt', EXISTS (SELECT 1 FROM jsonb_array_elements_text(coalesce(p_observed->'txt', '[]')) t
                    WHERE btrim(t) = 'parley-verify=' || p_token),
    'routed', coalesce((c.cname IS NOT NULL AND c.cname = rtrim(lower(p_expected->>'target'), '.'))
              OR (c.cname IS NULL AND EXISTS (
                    SELECT 1 FROM jsonb_array_elements_text(coalesce(p_observed->'addresses', '[]')) a
                     WHERE a IN (SELECT jsonb_array_elements_text(coalesce(p_expected->'addresses', '[]'))))), false),
    'observed', p_observed, 'error', p_observed->'error')
    FROM (SELECT rtrim(lower(p_observed->>'cname'), '.') AS cname) c
$$;
COMMENT ON FUNCTION parley.domain_check_verdict(text, jsonb, jsonb) IS
  'What the DNS showed (p_observed: txt strings at _parley.<host>, cname, addresses, error) against what routes here (p_expected: target, addresses) for a domain whose token is p_token: {txt, routed, observed, error}; both true prove it.';

-- The one change of a domain's status: its route follows (active: routed; disabled: not; a failing
-- domain keeps its route through the grace), the columns p_changes names change with it, one audit row.
DROP FUNCTION IF EXISTS parley.domain_recovered(text, jsonb);
CREATE OR REPLACE FUNCTION parley.move_custom_domain(p_hostname text, p_status text, p_changes jsonb,
                                                    p_audit text, p_details jsonb) RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
  IF p_status IN ('active', 'disabled') THEN
    PERFORM parley.set_domain_route(p_hostname, p_status = 'active');
  END IF;
  UPDATE parley.custom_domains d
     SET (status, verified_at, activated_by, failing_since, failed_checks, disabled_at, disabled_reason) =
         (SELECT n.status, n.verified_at, n.activated_by, n.failing_since, n.failed_checks, n.disabled_at,
                 n.disabled_reason
            FROM jsonb_populate_record(d, p_changes || jsonb_build_object('status', p_status)) n)
   WHERE d.tenant_id = parley.current_tenant_id() AND d.hostname = p_hostname;
  PERFORM parley.write_audit(p_audit, 'domain', p_hostname, p_details);
END $$;
COMMENT ON FUNCTION parley.move_custom_domain(text, text, jsonb, text, jsonb) IS
  'Internal: set a custom domain of the current tenant to p_status (its route added when active, removed when disabled; 409 domain_taken from set_domain_route), with the columns p_changes names (verified_at, activated_by, failing_since, failed_checks, disabled_at, disabled_reason; the others kept), audited as p_audit with p_details.';

-- What a DNS check (the admin's or the re-check job's) showed, stored; a failing domain that
-- proves itself again is active again. Returns the verdict.
CREATE OR REPLACE FUNCTION parley.store_domain_check(p_dom parley.custom_domains, p_observed jsonb, p_expected jsonb)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
  v_result jsonb := parley.domain_check_verdict(p_dom.token, p_observed, p_expected);
BEGIN
  UPDATE parley.custom_domains d SET checked_at = now(), check_result = v_result
   WHERE d.tenant_id = p_dom.tenant_id AND d.hostname = p_dom.hostname;
  IF (v_result->>'txt')::boolean AND (v_result->>'routed')::boolean AND p_dom.status = 'failing' THEN
    PERFORM parley.move_custom_domain(p_dom.hostname, 'active', '{"failing_since": null, "failed_checks": 0}',
                                      'domain.recovered', v_result - 'observed');
  END IF;
  RETURN v_result;
END $$;
COMMENT ON FUNCTION parley.store_domain_check(parley.custom_domains, jsonb, jsonb) IS
  'Internal: store the verdict (domain_check_verdict) of a DNS check of the current tenant''s domain p_dom (locked by the caller) and return it; a failing domain it proves is active again, its failure count reset, audited as domain.recovered.';

-- The DNS check's verdict. The server asks the resolver; the rule is here: the TXT record at
-- _parley.<host> holds parley-verify=<token>, and the name routes to this installation (a CNAME
-- to the target, or, when it has no CNAME (e.g. a zone apex), an A/AAAA address of the target's).
CREATE OR REPLACE FUNCTION parley.record_domain_check(p_hostname text, p_observed jsonb, p_expected jsonb)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = ''
AS $$
DECLARE
  v_dom parley.custom_domains;
  v_result jsonb;
BEGIN
  PERFORM parley.require_role('admin');
  v_dom := parley.lock_custom_domain(p_hostname);
  IF v_dom.hostname IS NULL THEN
    PERFORM parley.raise_error(404, 'not_found', 'No such domain.');
  END IF;
  v_result := parley.store_domain_check(v_dom, p_observed, p_expected);
  IF (v_result->>'txt')::boolean AND (v_result->>'routed')::boolean AND v_dom.status = 'pending'
     AND (SELECT l.allow_custom_domain FROM parley.effective_limits(v_dom.tenant_id) l) THEN
    PERFORM parley.move_custom_domain(v_dom.hostname, 'active',
                                      jsonb_build_object('verified_at', now(), 'activated_by', 'dns'),
                                      'domain.verified', v_result - 'observed');
  END IF;
  RETURN parley.custom_domain_json(v_dom.hostname);
END $$;
COMMENT ON FUNCTION parley.record_domain_check(text, jsonb, jsonb) IS
  'Admins: store what the DNS showed for a pending domain (p_observed: txt strings at _parley.<host>, cname, addresses, error) against what routes here (p_expected: target, addresses) and activate it when the TXT holds parley-verify=<token> and the name is a CNAME to the target or (without CNAME) has one of its addresses, on a plan that allows custom domains (the rule: parley.domain_check_verdict); a failing domain that proves itself again is active again. A disabled domain stays disabled (staff, a plan change or the re-check did it). Returns the domain.';

CREATE OR REPLACE FUNCTION parley.remove_domain(p_hostname text) RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = ''
AS $$
DECLARE
  v_dom parley.custom_domains;
BEGIN
  PERFORM parley.require_role('admin');
  v_dom := parley.lock_custom_domain(p_hostname);
  IF v_dom.hostname IS NULL THEN
    RETURN false;
  END IF;
  PERFORM parley.set_domain_route(v_dom.hostname, false);
  DELETE FROM parley.custom_domains d WHERE d.tenant_id = v_dom.tenant_id AND d.hostname = v_dom.hostname;
  PERFORM parley.write_audit('domain.removed', 'domain', v_dom.hostname, '{}');
  RETURN true;
END $$;
COMMENT ON FUNCTION parley.remove_domain(text) IS 'Admins: drop a custom domain claim and its route; false when there was none.';

-- Staff (inside the tenant, actor staff): force a domain active (no DNS check) or disable it.
CREATE OR REPLACE FUNCTION parley.staff_set_domain(p_hostname text, p_status text, p_reason text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = ''
AS $$
DECLARE
  v_dom parley.custom_domains;
BEGIN
  PERFORM parley.require_operator();
  IF p_status NOT IN ('active', 'disabled') THEN
    PERFORM parley.raise_error(422, 'invalid_status', 'A domain is set active or disabled.');
  END IF;
  v_dom := parley.lock_custom_domain(p_hostname);
  IF v_dom.hostname IS NULL THEN
    PERFORM parley.raise_error(404, 'not_found', 'No such domain.');
  END IF;
  PERFORM parley.move_custom_domain(v_dom.hostname, p_status,
    jsonb_build_object('failing_since', NULL, 'failed_checks', 0)
      || CASE WHEN p_status = 'active'
              THEN jsonb_build_object('verified_at', coalesce(v_dom.verified_at, now()), 'activated_by', 'staff',
                                      'disabled_at', NULL, 'disabled_reason', NULL)
              ELSE jsonb_build_object('disabled_at', now(),
                                      'disabled_reason', left(coalesce(p_reason, 'disabled by the operator'), 200)) END,
    'staff.domain_' || p_status, jsonb_build_object('reason', left(p_reason, 200)));
  RETURN parley.custom_domain_json(v_dom.hostname);
END $$;
COMMENT ON FUNCTION parley.staff_set_domain(text, text, text) IS
  'Staff, inside the tenant: force a claimed domain active (routed without a DNS check; 409 domain_taken when another workspace has it) or disable it (route removed, reason kept); audited as staff.domain_active / staff.domain_disabled.';

-- A plan change that loses custom domains (parley.change_plan) disables them all.
CREATE OR REPLACE FUNCTION parley.disable_custom_domains(p_reason text) RETURNS int
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = ''
AS $$
DECLARE
  v_tenant uuid := parley.current_tenant_id();
  v_n int;
BEGIN
  DELETE FROM parley.domain_routes r WHERE r.tenant_id = v_tenant;
  UPDATE parley.custom_domains d SET status = 'disabled', disabled_at = now(), disabled_reason = left(p_reason, 200)
   WHERE d.tenant_id = v_tenant AND d.status <> 'disabled';
  GET DIAGNOSTICS v_n = ROW_COUNT;
  IF v_n > 0 THEN
    PERFORM parley.write_audit('domain.disabled', 'tenant', v_tenant::text, jsonb_build_object('domains', v_n, 'reason', p_reason));
  END IF;
  RETURN v_n;
END $$;
COMMENT ON FUNCTION parley.disable_custom_domains(text) IS
  'Internal to parley.change_plan: disable every custom domain of the current tenant (routes removed, reason kept, audited) when its new plan has no custom domains; returns how many.';

-- Before any tenant is known: which tenant serves widget traffic on this Host (NULL: none).
CREATE OR REPLACE FUNCTION parley.domain_tenant(p_host text) RETURNS uuid
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = ''
AS $$
  SELECT r.tenant_id FROM parley.domain_routes r
    JOIN parley.tenants t ON t.id = r.tenant_id AND t.deleted_at IS NULL AND t.suspended_at IS NULL
    CROSS JOIN LATERAL parley.effective_limits(r.tenant_id) l
   WHERE r.hostname = parley.normalize_hostname(p_host) AND l.allow_custom_domain
$$;
COMMENT ON FUNCTION parley.domain_tenant(text) IS
  'The tenant an active custom domain routes to, or NULL (unknown, disabled, tenant deleted or suspended, or its plan, e.g. limited after the grace period, no longer allows custom domains). Answers the widget''s Host check and the reverse proxy''s on-demand TLS question.';

CREATE OR REPLACE FUNCTION parley.active_domain() RETURNS text
LANGUAGE sql STABLE
AS $$
  SELECT d.hostname FROM parley.custom_domains d
   WHERE d.tenant_id = (SELECT parley.current_tenant_id()) AND d.status IN ('active', 'failing')
     AND (SELECT l.allow_custom_domain FROM parley.effective_limits(parley.current_tenant_id()) l)
   ORDER BY d.verified_at, d.hostname LIMIT 1
$$;
COMMENT ON FUNCTION parley.active_domain() IS
  'The current tenant''s active custom domain (the first verified; a failing one still counts during its grace) that embed snippets use, or NULL.';
GRANT EXECUTE ON FUNCTION parley.active_domain() TO parley_app;

-- Re-verification: the jobs process re-checks every active or failing domain once a day
-- (jobs/scheduled/recheck_domains.py). A domain whose DNS no longer proves it goes 'failing'
-- (still served; owners e-mailed) and is disabled after domain_grace_checks failed re-checks in a
-- row spanning domain_grace (owners e-mailed again; both settings of parley.server_setting_catalog);
-- proving it again makes it active. A resolver that does not answer proves nothing either way: it is not counted.
CREATE OR REPLACE FUNCTION parley.domains_due_for_recheck(p_limit int)
RETURNS TABLE (tenant_id uuid, hostname text, txt_name text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = ''
AS $$
  SELECT d.tenant_id, d.hostname, parley.domain_txt_name(d.hostname)
    FROM parley.custom_domains d JOIN parley.tenants t ON t.id = d.tenant_id AND t.deleted_at IS NULL
   WHERE d.status IN ('active', 'failing')
     AND (d.checked_at IS NULL OR d.checked_at <= now() - parley.server_setting('domain_recheck_every', NULL::interval))
   ORDER BY d.checked_at NULLS FIRST, d.tenant_id, d.hostname
   LIMIT p_limit
$$;
COMMENT ON FUNCTION parley.domains_due_for_recheck(int) IS
  'Jobs: up to p_limit active or failing custom domains of live tenants not checked for the domain_recheck_every setting, oldest check first: tenant id, host name and where its TXT record lives (names only).';

GRANT EXECUTE ON FUNCTION parley.workspace_owner_emails() TO parley_owner;
CREATE OR REPLACE FUNCTION parley.record_domain_recheck(p_hostname text, p_observed jsonb, p_expected jsonb)
RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = ''
AS $$
DECLARE
  v_dom parley.custom_domains;
  v_result jsonb;
  v_grace_ends timestamptz;
BEGIN
  IF parley.current_actor_kind() IS DISTINCT FROM 'system' THEN
    PERFORM parley.raise_error(403, 'forbidden', 'Only the jobs process re-checks domains.');
  END IF;
  v_dom := parley.lock_custom_domain(p_hostname);
  IF v_dom.status IS NULL OR v_dom.status NOT IN ('active', 'failing') THEN
    RETURN NULL;  -- removed or disabled meanwhile
  END IF;
  v_result := parley.store_domain_check(v_dom, p_observed, p_expected);
  IF (v_result->>'txt')::boolean AND (v_result->>'routed')::boolean THEN
    RETURN 'active';
  END IF;
  IF p_observed ? 'error' THEN
    RETURN v_dom.status;  -- the resolver did not answer: no proof either way, not counted
  END IF;
  IF v_dom.status = 'active' THEN
    PERFORM parley.move_custom_domain(v_dom.hostname, 'failing',
                                      jsonb_build_object('failing_since', now(), 'failed_checks', 1),
                                      'domain.failing', v_result - 'observed');
    PERFORM parley.notify_owners('notice.domain_failing', jsonb_build_object(
      'hostname', v_dom.hostname, 'txt', v_result->'txt', 'routed', v_result->'routed',
      'txt_name', parley.domain_txt_name(v_dom.hostname), 'failing_since', now(),
      'disabled_after', now() + parley.server_setting('domain_grace', NULL::interval)));
    RETURN 'failing';
  END IF;
  v_grace_ends := v_dom.failing_since + parley.server_setting('domain_grace', NULL::interval);
  IF v_dom.failed_checks + 1 < parley.server_setting('domain_grace_checks', NULL::int) OR now() < v_grace_ends THEN
    UPDATE parley.custom_domains d SET failed_checks = d.failed_checks + 1
     WHERE d.tenant_id = v_dom.tenant_id AND d.hostname = v_dom.hostname;
    RETURN 'failing';
  END IF;
  PERFORM parley.move_custom_domain(v_dom.hostname, 'disabled', jsonb_build_object(
      'failed_checks', v_dom.failed_checks + 1, 'disabled_at', now(),
      'disabled_reason', left(format('The DNS records no longer prove this domain (since %s).',
                                     to_char(v_dom.failing_since AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI "UTC"')), 200)),
    'domain.disabled', jsonb_build_object('reason', 'dns', 'failing_since', v_dom.failing_since,
                                          'failed_checks', v_dom.failed_checks + 1));
  PERFORM parley.notify_owners('notice.domain_disabled', jsonb_build_object(
    'hostname', v_dom.hostname, 'txt', v_result->'txt', 'routed', v_result->'routed',
    'txt_name', parley.domain_txt_name(v_dom.hostname), 'failing_since', v_dom.failing_since));
  RETURN 'disabled';
END $$;
COMMENT ON FUNCTION parley.record_domain_recheck(text, jsonb, jsonb) IS
  'Jobs (system actor), inside the tenant: store a re-check of an active or failing domain (parley.domain_check_verdict). Proven: active again. Not proven: an active domain goes failing (still served; audited domain.failing; owners e-mailed notice.domain_failing); a failing one counts the failure and, after domain_grace_checks failures in a row and domain_grace since it began failing (settings), is disabled (route removed, reason kept, audited domain.disabled, owners e-mailed notice.domain_disabled). A resolver error is stored but not counted. Returns the status after, NULL when the domain is no longer active or failing.';

-- Staff: every workspace's custom domains, for the back-office (console and API).
CREATE OR REPLACE FUNCTION parley.staff_domains(p_query text DEFAULT '', p_limit int DEFAULT 100) RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = ''
AS $$
DECLARE
  v_q text := lower(btrim(coalesce(p_query, '')));
BEGIN
  PERFORM parley.require_operator();
  RETURN (SELECT coalesce(jsonb_agg(jsonb_build_object(
           'tenant_id', x.tenant_id, 'tenant_slug', x.slug, 'tenant_name', x.name, 'plan', x.plan,
           'hostname', x.hostname, 'status', x.status, 'activated_by', x.activated_by, 'created_at', x.created_at,
           'verified_at', x.verified_at, 'checked_at', x.checked_at, 'failing_since', x.failing_since,
           'failed_checks', x.failed_checks, 'disabled_reason', x.disabled_reason,
           'routed', EXISTS (SELECT 1 FROM parley.domain_routes r
                              WHERE r.hostname = x.hostname AND r.tenant_id = x.tenant_id))
           ORDER BY x.hostname, x.created_at), '[]')
    FROM (SELECT d.*, t.slug, t.name, t.plan FROM parley.custom_domains d
            JOIN parley.tenants t ON t.id = d.tenant_id AND t.deleted_at IS NULL
           WHERE v_q = '' OR strpos(d.hostname, v_q) > 0 OR d.status = v_q OR t.id::text = v_q
              OR strpos(lower(t.slug), v_q) > 0
           ORDER BY d.hostname, d.created_at LIMIT least(greatest(coalesce(p_limit, 100), 1), 500)) x);
END $$;
COMMENT ON FUNCTION parley.staff_domains(text, int) IS
  'Staff: custom domains of live workspaces whose host name or workspace slug contains p_query, or whose status or workspace id is p_query (all when empty), by host name: workspace, plan, status, how it was activated, checks, failing state, disable reason and whether it is routed.';

-- Owners and callers (parley.secure_functions, sql/05_access.sql).
-- Internal steps of the writers below (their owner, parley_owner, runs them; nobody else).
SELECT parley.secure_functions(NULL, NULL, 'parley.lock_custom_domain(text)',
  'parley.move_custom_domain(text, text, jsonb, text, jsonb)',
  'parley.store_domain_check(parley.custom_domains, jsonb, jsonb)');
SELECT parley.secure_functions('parley_auth', '{parley_app, parley_owner}', 'parley.set_domain_route(text, boolean)');
SELECT parley.secure_functions('parley_owner', '{parley_app}',
  'parley.claim_domain(text)', 'parley.record_domain_check(text, jsonb, jsonb)', 'parley.remove_domain(text)',
  'parley.staff_set_domain(text, text, text)');
SELECT parley.secure_functions('parley_auth', '{parley_owner}', 'parley.disable_custom_domains(text)');
SELECT parley.secure_functions('parley_auth', '{parley_app}',
  'parley.domain_tenant(text)', 'parley.staff_domains(text, int)');
SELECT parley.secure_functions('parley_auth', '{parley_jobs}', 'parley.domains_due_for_recheck(int)');
SELECT parley.secure_functions('parley_owner', '{parley_jobs}', 'parley.record_domain_recheck(text, jsonb, jsonb)');
