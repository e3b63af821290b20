-- Tenant settings and deletion.

CREATE OR REPLACE FUNCTION parley.get_tenant_settings() RETURNS jsonb
LANGUAGE plpgsql STABLE
AS $$
BEGIN
  PERFORM parley.require_role('admin');
  RETURN jsonb_build_object(
    'tenant', (SELECT jsonb_build_object('id', t.id, 'slug', t.slug, 'name', t.name, 'plan', t.plan,
                                         'role', parley.current_member_role(), 'created_at', t.created_at)
                 FROM parley.tenants t WHERE t.id = parley.current_tenant_id()),
    'values', coalesce((SELECT jsonb_object_agg(s.key, s.value ORDER BY s.key) FROM parley.tenant_settings s),
                       '{}'::jsonb));
END $$;
COMMENT ON FUNCTION parley.get_tenant_settings() IS 'The current workspace and its settings as {key: value} (admin+).';

CREATE OR REPLACE FUNCTION parley.put_tenant_settings(p_name text, p_values jsonb) RETURNS jsonb
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
  v_key text;
  v_value jsonb;
BEGIN
  PERFORM parley.require_role('admin');
  IF p_values IS NOT NULL AND jsonb_typeof(p_values) <> 'object' THEN
    PERFORM parley.raise_error(422, 'invalid_settings', 'Settings must be an object of key: value.');
  END IF;
  IF p_name IS NOT NULL THEN
    UPDATE parley.tenants SET name = p_name WHERE id = parley.current_tenant_id() AND name <> p_name;
  END IF;
  FOR v_key, v_value IN SELECT e.key, e.value FROM jsonb_each(coalesce(p_values, '{}')) e LOOP
    IF v_value = 'null'::jsonb THEN
      DELETE FROM parley.tenant_settings WHERE key = v_key;
    ELSE
      INSERT INTO parley.tenant_settings AS s (tenant_id, key, value)
      VALUES (parley.current_tenant_id(), v_key, v_value)
      ON CONFLICT (tenant_id, key) DO UPDATE SET value = EXCLUDED.value, updated_at = now()
        WHERE s.value IS DISTINCT FROM EXCLUDED.value;
    END IF;
  END LOOP;
  RETURN parley.get_tenant_settings();
END $$;
COMMENT ON FUNCTION parley.put_tenant_settings(text, jsonb) IS
  'Rename the current workspace and merge settings (admin+): keys given are set, a null value removes the key, keys not given are kept (other features store settings here too).';

CREATE OR REPLACE FUNCTION parley.delete_tenant() RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
  PERFORM parley.require_role('owner');
  UPDATE parley.tenants SET deleted_at = now(), purge_after = now() + parley.tenant_purge_grace()
   WHERE id = parley.current_tenant_id() AND deleted_at IS NULL;
  IF FOUND THEN
    PERFORM parley.write_audit('tenant.deleted', 'tenant', parley.current_tenant_id()::text,
                               jsonb_build_object('purge_after', now() + parley.tenant_purge_grace()));
  END IF;
END $$;
COMMENT ON FUNCTION parley.delete_tenant() IS
  'Delete the current workspace (owner, or staff acting in it): deleted_at is set and audited, begin_request and API-key lookups refuse it from then on, and once its grace (tenant_purge_grace, 30 days) is over parley.purge_deleted_tenants deletes every row of it; an owner can restore it until then (restore_tenant).';
-- Invoker functions: run under RLS in the tenant transaction, by the server.
DO $$
DECLARE
  v_fn text;
BEGIN
  FOREACH v_fn IN ARRAY ARRAY['parley.get_tenant_settings()', 'parley.put_tenant_settings(text, jsonb)', 'parley.delete_tenant()']
  LOOP
    EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', v_fn);
    EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO parley_app', v_fn);
  END LOOP;
END $$;
