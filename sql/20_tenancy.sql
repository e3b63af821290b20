-- Tenancy rules: row-level security and grants for tenants, users, members, invites,
-- API keys, settings. Every tenant-owned table: ENABLE + FORCE RLS, one policy per
-- command keyed on (SELECT parley.current_tenant_id()), evaluated once per query.

-- The standard tenant policies: one per command, keyed on the transaction's tenant. Every plain
-- tenant-owned table takes all four; tables with other rules take the commands they allow (a
-- command left out has no policy, so it is refused) and write their special policies after.
DROP FUNCTION IF EXISTS parley.apply_tenant_policies(regclass);
CREATE OR REPLACE FUNCTION parley.apply_tenant_policies(
  p_table regclass, p_commands text[] DEFAULT ARRAY['select', 'insert', 'update', 'delete'],
  p_tenant_column name DEFAULT 'tenant_id') RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
  v_command text;
  v_own text := format('%I = (SELECT parley.current_tenant_id())', p_tenant_column);
BEGIN
  PERFORM parley.force_row_security(p_table);
  FOREACH v_command IN ARRAY ARRAY['select', 'insert', 'update', 'delete'] LOOP
    PERFORM parley.ensure_policy(p_table, v_command || '_tenant', CASE WHEN v_command = ANY (p_commands) THEN
      format('FOR %s ', upper(v_command))
      || CASE v_command WHEN 'insert' THEN format('WITH CHECK (%s)', v_own)
                        WHEN 'update' THEN format('USING (%s) WITH CHECK (%s)', v_own, v_own)
                        ELSE format('USING (%s)', v_own) END END);
  END LOOP;
END $$;
COMMENT ON FUNCTION parley.apply_tenant_policies(regclass, text[], name) IS
  'Enable and force RLS on a tenant-owned table and make its per-command tenant policies <command>_tenant on p_tenant_column = (SELECT parley.current_tenant_id()): all four by default, else only p_commands (the others are dropped, so refused). What already is so is left alone (parley.ensure_policy: no lock on a re-apply).';
SELECT parley.secure_functions(NULL, NULL, 'parley.apply_tenant_policies(regclass, text[], name)');

-- tenants: a tenant sees and renames only itself.
SELECT parley.ensure_policy('parley.tenants', 'select_own', NULL), parley.ensure_policy('parley.tenants', 'update_own', NULL);
SELECT parley.apply_tenant_policies('parley.tenants', ARRAY['select', 'update'], 'id');
GRANT SELECT ON parley.tenants TO parley_app, parley_jobs;
GRANT UPDATE (name, deleted_at) ON parley.tenants TO parley_app;
GRANT SELECT ON parley.plans TO parley_app, parley_jobs, parley_auth;

-- users: global identities; the app sees the signed-in user and fellow members of the tenant.
SELECT parley.force_row_security('parley.users');
SELECT parley.ensure_policy('parley.users', 'select_self_or_colleague', $$FOR SELECT
  USING (id = (SELECT parley.current_user_id())
         OR id IN (SELECT m.user_id FROM parley.members m
                    WHERE m.tenant_id = (SELECT parley.current_tenant_id())))$$);
SELECT parley.ensure_policy('parley.users', 'update_self', $$FOR UPDATE
  USING (id = (SELECT parley.current_user_id()))
  WITH CHECK (id = (SELECT parley.current_user_id()))$$);
GRANT SELECT (id, email, name, email_verified_at, created_at) ON parley.users TO parley_app;
GRANT UPDATE (name) ON parley.users TO parley_app;
-- The outbox drainer builds an agent reply's body with the agent's name (author_display_name).
GRANT SELECT (id, name) ON parley.users TO parley_jobs;

-- Global tables only the auth functions touch (no app grants at all).
SELECT parley.force_row_security('parley.refresh_tokens', 'parley.password_resets', 'parley.login_throttle');
GRANT SELECT, INSERT, UPDATE, DELETE ON parley.refresh_tokens, parley.password_resets,
  parley.login_throttle TO parley_auth;
GRANT SELECT, INSERT, UPDATE ON parley.users, parley.tenants TO parley_auth;
GRANT SELECT, INSERT, UPDATE ON parley.members, parley.invites, parley.api_keys TO parley_auth;

SELECT parley.apply_tenant_policies('parley.members');
SELECT parley.apply_tenant_policies('parley.invites');
SELECT parley.apply_tenant_policies('parley.api_keys');
SELECT parley.apply_tenant_policies('parley.tenant_settings');

GRANT SELECT, INSERT, UPDATE, DELETE ON parley.members TO parley_app;
GRANT SELECT (tenant_id, id, email, role, invited_by, created_at, expires_at, accepted_at, accepted_by, revoked_at),
      INSERT, UPDATE (revoked_at) ON parley.invites TO parley_app;
GRANT SELECT (tenant_id, id, name, prefix, scopes, created_by, created_at, last_used_at, expires_at, revoked_at),
      INSERT, UPDATE (revoked_at, name) ON parley.api_keys TO parley_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON parley.tenant_settings TO parley_app;
GRANT SELECT ON parley.members, parley.tenant_settings TO parley_jobs;
