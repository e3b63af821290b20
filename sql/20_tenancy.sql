-- Tenancy rules: row-level security and grants for tenants, users, members, invites,
-- API keys, settings. Every tenant-owned table: ENABLE + FORCE RLS, one policy per
-- command keyed on (SELECT parley.current_tenant_id()), evaluated once per query.

-- tenants: a tenant sees only itself.
ALTER TABLE parley.tenants ENABLE ROW LEVEL SECURITY;
ALTER TABLE parley.tenants FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS select_own ON parley.tenants;
CREATE POLICY select_own ON parley.tenants FOR SELECT
  USING (id = (SELECT parley.current_tenant_id()));
DROP POLICY IF EXISTS update_own ON parley.tenants;
CREATE POLICY update_own ON parley.tenants FOR UPDATE
  USING (id = (SELECT parley.current_tenant_id()))
  WITH CHECK (id = (SELECT parley.current_tenant_id()));
GRANT SELECT ON parley.tenants TO parley_app, parley_jobs;
GRANT UPDATE (name, deleted_at) ON parley.tenants TO parley_app;
GRANT SELECT ON parley.plans TO parley_app, parley_jobs, parley_auth;

-- users: global identities; the app sees the signed-in user and fellow members of the tenant.
ALTER TABLE parley.users ENABLE ROW LEVEL SECURITY;
ALTER TABLE parley.users FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS select_self_or_colleague ON parley.users;
CREATE POLICY select_self_or_colleague ON parley.users FOR SELECT
  USING (id = (SELECT parley.current_user_id())
         OR id IN (SELECT m.user_id FROM parley.members m
                    WHERE m.tenant_id = (SELECT parley.current_tenant_id())));
DROP POLICY IF EXISTS update_self ON parley.users;
CREATE POLICY update_self ON parley.users FOR UPDATE
  USING (id = (SELECT parley.current_user_id()))
  WITH CHECK (id = (SELECT parley.current_user_id()));
GRANT SELECT (id, email, name, email_verified_at, created_at) ON parley.users TO parley_app;
GRANT UPDATE (name) ON parley.users TO parley_app;
-- The outbox drainer builds an agent reply's body with the agent's name (author_display_name).
GRANT SELECT (id, name) ON parley.users TO parley_jobs;

-- Global tables only the auth functions touch (no app grants at all).
ALTER TABLE parley.refresh_tokens ENABLE ROW LEVEL SECURITY;
ALTER TABLE parley.refresh_tokens FORCE ROW LEVEL SECURITY;
ALTER TABLE parley.password_resets ENABLE ROW LEVEL SECURITY;
ALTER TABLE parley.password_resets FORCE ROW LEVEL SECURITY;
ALTER TABLE parley.login_throttle ENABLE ROW LEVEL SECURITY;
ALTER TABLE parley.login_throttle FORCE ROW LEVEL SECURITY;
GRANT SELECT, INSERT, UPDATE, DELETE ON parley.refresh_tokens, parley.password_resets,
  parley.login_throttle TO parley_auth;
GRANT SELECT, INSERT, UPDATE ON parley.users, parley.tenants TO parley_auth;
GRANT SELECT, INSERT, UPDATE ON parley.members, parley.invites, parley.api_keys TO parley_auth;

-- The standard tenant policies, applied to every plain tenant-owned table by one helper.
CREATE OR REPLACE FUNCTION parley.apply_tenant_policies(p_table regclass) RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
  EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', p_table);
  EXECUTE format('ALTER TABLE %s FORCE ROW LEVEL SECURITY', p_table);
  EXECUTE format('DROP POLICY IF EXISTS select_tenant ON %s', p_table);
  EXECUTE format('CREATE POLICY select_tenant ON %s FOR SELECT USING (tenant_id = (SELECT parley.current_tenant_id()))', p_table);
  EXECUTE format('DROP POLICY IF EXISTS insert_tenant ON %s', p_table);
  EXECUTE format('CREATE POLICY insert_tenant ON %s FOR INSERT WITH CHECK (tenant_id = (SELECT parley.current_tenant_id()))', p_table);
  EXECUTE format('DROP POLICY IF EXISTS update_tenant ON %s', p_table);
  EXECUTE format('CREATE POLICY update_tenant ON %s FOR UPDATE USING (tenant_id = (SELECT parley.current_tenant_id())) WITH CHECK (tenant_id = (SELECT parley.current_tenant_id()))', p_table);
  EXECUTE format('DROP POLICY IF EXISTS delete_tenant ON %s', p_table);
  EXECUTE format('CREATE POLICY delete_tenant ON %s FOR DELETE USING (tenant_id = (SELECT parley.current_tenant_id()))', p_table);
END $$;
COMMENT ON FUNCTION parley.apply_tenant_policies(regclass) IS
  'Enable and force RLS on a tenant-owned table and (re)create its four per-command tenant policies.';
REVOKE ALL ON FUNCTION parley.apply_tenant_policies(regclass) FROM PUBLIC;

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
