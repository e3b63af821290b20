-- The audit trail: append-only, written only by SQL (this function, called from
-- triggers and stored functions), never by the app roles directly.

SELECT parley.apply_tenant_policies('parley.audit_log', ARRAY['select']);
SELECT parley.ensure_policy('parley.audit_log', 'insert_tenant_or_auth', $$FOR INSERT
  WITH CHECK (tenant_id = (SELECT parley.current_tenant_id()) OR current_user = 'parley_auth')$$);
REVOKE ALL ON parley.audit_log FROM parley_app, parley_jobs;
GRANT SELECT ON parley.audit_log TO parley_app;
GRANT INSERT ON parley.audit_log TO parley_auth;

CREATE OR REPLACE FUNCTION parley.write_audit(
  p_action text, p_target_kind text DEFAULT NULL, p_target_id text DEFAULT NULL,
  p_details jsonb DEFAULT '{}', p_tenant_id uuid DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = ''
AS $$
DECLARE
  v_tenant uuid := coalesce(p_tenant_id, parley.current_tenant_id());
BEGIN
  IF v_tenant IS NULL THEN
    RETURN;  -- nothing tenant-scoped happened (e.g. a failed sign-in for an unknown email)
  END IF;
  INSERT INTO parley.audit_log (tenant_id, actor_kind, actor_id, action, target_kind, target_id, ip, request_id, details)
  VALUES (v_tenant, parley.current_actor_kind(), parley.current_actor_id(), p_action, p_target_kind, p_target_id,
          parley.current_request_ip(), parley.current_request_id(), coalesce(p_details, '{}'));
END $$;
COMMENT ON FUNCTION parley.write_audit(text, text, text, jsonb, uuid) IS
  'Append one audit row for the current (or given) tenant with the actor, ip and request id of the transaction. Owned by parley_auth so a sign-in can be audited for each tenant of the user; the app cannot insert audit rows itself.';
SELECT parley.secure_functions('parley_auth', '{parley_app, parley_jobs}', 'parley.write_audit(text, text, text, jsonb, uuid)');

-- A generic row-change auditor for the tenancy tables; secrets (hashes) never reach details.
CREATE OR REPLACE FUNCTION parley.audit_row_change() RETURNS trigger
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = ''
AS $$
DECLARE
  v_row jsonb := to_jsonb(coalesce(NEW, OLD)) - 'key_hash' - 'token_hash' - 'password_hash';
  v_old jsonb := CASE WHEN TG_OP = 'UPDATE' THEN to_jsonb(OLD) - 'key_hash' - 'token_hash' - 'password_hash' END;
  v_target text := coalesce(v_row->>'id', v_row->>'user_id', v_row->>'key');
  v_tenant uuid := coalesce((v_row->>'tenant_id')::uuid, CASE WHEN TG_TABLE_NAME = 'tenants' THEN (v_row->>'id')::uuid END);
BEGIN
  -- An UPDATE that changed nothing (e.g. setting the plan a tenant already has) is no event:
  -- it used to leave a tenant.update row with identical before and after.
  IF TG_OP = 'UPDATE' AND v_old = v_row THEN
    RETURN NULL;
  END IF;
  PERFORM parley.write_audit(
    TG_ARGV[0] || '.' || lower(TG_OP),
    TG_ARGV[0], v_target,
    CASE WHEN TG_OP = 'UPDATE' THEN jsonb_build_object('before', v_old, 'after', v_row)
         ELSE jsonb_build_object('row', v_row) END,
    v_tenant);
  RETURN NULL;
END $$;
COMMENT ON FUNCTION parley.audit_row_change() IS
  'AFTER trigger: audit an insert/update/delete of a tenancy row as <kind>.<op>, with hashes stripped; an update that changed nothing (hashes aside) is not audited.';
SELECT parley.secure_functions('parley_auth', NULL, 'parley.audit_row_change()');

-- The audited tenancy tables, as data: the kind each row change is audited as, and which updates
-- count (api_keys: not the last_used_at bump of every request).
DO $$
DECLARE
  r record;
BEGIN
  FOR r IN SELECT * FROM (VALUES
    ('parley.members'::regclass, 'member', 'UPDATE'), ('parley.invites', 'invite', 'UPDATE'),
    ('parley.api_keys', 'api_key', 'UPDATE OF name, revoked_at, scopes, expires_at'),
    ('parley.tenant_settings', 'setting', 'UPDATE'), ('parley.tenants', 'tenant', 'UPDATE')) v(tbl, kind, updates)
  LOOP
    PERFORM parley.ensure_trigger(r.tbl, 't90_audit', format('AFTER INSERT OR %s OR DELETE', r.updates),
                                  format('FOR EACH ROW EXECUTE FUNCTION parley.audit_row_change(%L)', r.kind));
  END LOOP;
END $$;

-- Analysts see the trail without secrets or free-text details.
SELECT parley.ensure_view('analytics.audit_events', 'security_barrier = true', 'parley_reporting', $$
  SELECT tenant_id, id, at, actor_kind, actor_id, action, target_kind, target_id, request_id
    FROM parley.audit_log$$);
COMMENT ON VIEW analytics.audit_events IS 'Audit trail for analysts: who did what to which object, without ip addresses or details.';
GRANT SELECT ON parley.audit_log TO parley_reporting;
GRANT SELECT ON analytics.audit_events TO parley_analyst;

---------------------------------------------------------------------------------------------
-- Audit trail reader
---------------------------------------------------------------------------------------------

-- What an audit row changed, for people: one {field, before, after} per top-level field that
-- differs when the details carry a before and an after (row updates), else one {field, value}
-- per detail.
CREATE OR REPLACE FUNCTION parley.audit_changes(p_details jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
  SELECT CASE
    WHEN jsonb_typeof(p_details->'before') = 'object' AND jsonb_typeof(p_details->'after') = 'object' THEN
      coalesce((SELECT jsonb_agg(jsonb_build_object('field', k, 'before', p_details->'before'->k,
                                                    'after', p_details->'after'->k) ORDER BY k)
                  FROM (SELECT jsonb_object_keys(p_details->'before') UNION
                        SELECT jsonb_object_keys(p_details->'after')) f(k)
                 WHERE (p_details->'before'->k) IS DISTINCT FROM (p_details->'after'->k)), '[]'::jsonb)
    WHEN jsonb_typeof(p_details) = 'object' THEN
      coalesce((SELECT jsonb_agg(jsonb_build_object('field', e.key, 'value', e.value) ORDER BY e.key)
                  FROM jsonb_each(p_details) e), '[]'::jsonb)
    ELSE '[]'::jsonb
  END
$$;
COMMENT ON FUNCTION parley.audit_changes(jsonb) IS
  'An audit row''s details as a list for people: [{field, before, after}] for the fields that differ when details has before and after objects (row updates), else [{field, value}] per top-level detail.';
GRANT EXECUTE ON FUNCTION parley.audit_changes(jsonb) TO parley_app;

CREATE OR REPLACE FUNCTION parley.list_audit(
  p_before bigint, p_limit int, p_action text DEFAULT NULL, p_actor_id text DEFAULT NULL) RETURNS jsonb
LANGUAGE plpgsql STABLE
AS $$
DECLARE
  v_limit int := greatest(1, least(coalesce(p_limit, 50), 200));
  v_items jsonb;
  v_count int;
  v_last bigint;
BEGIN
  PERFORM parley.require_role('admin');
  SELECT coalesce(jsonb_agg(to_jsonb(a) ORDER BY a.id DESC), '[]'::jsonb), count(*), min(a.id)
    INTO v_items, v_count, v_last
    FROM (SELECT l.id, l.at, l.actor_kind, l.actor_id, l.action, l.target_kind, l.target_id,
                 host(l.ip) AS ip, l.request_id, l.details, parley.audit_changes(l.details) AS changes
            FROM parley.audit_log l
           WHERE l.tenant_id = parley.current_tenant_id()
             AND (p_before IS NULL OR l.id < p_before)
             AND (p_action IS NULL OR l.action = p_action)
             AND (p_actor_id IS NULL OR l.actor_id = p_actor_id)
           ORDER BY l.id DESC
           LIMIT v_limit) a;
  RETURN jsonb_build_object('items', v_items,
                            'next_before', CASE WHEN v_count = v_limit THEN v_last END);
END $$;
COMMENT ON FUNCTION parley.list_audit(bigint, int, text, text) IS
  'The current workspace''s audit trail, newest first (admin+): keyset pagination on id (pass next_before back as p_before), optional exact action and actor filters; limit 1..200. Each item has its details and their readable changes (parley.audit_changes).';
SELECT parley.secure_functions(NULL, '{parley_app}', 'parley.list_audit(bigint, int, text, text)');
