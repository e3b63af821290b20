-- Custom domains (plans with allow_custom_domain): a tenant claims a hostname, proves it in DNS
-- (TXT _parley.<host> = its token, and a CNAME to the configured target or an A record to its
-- addresses), and the verified name routes widget traffic to it (parley.domain_routes, global:
-- the Host is known before the tenant). Staff may force-activate or disable; a plan change that
-- loses allow_custom_domain disables every domain (parley.change_plan).

SELECT parley.apply_tenant_policies('parley.custom_domains');
GRANT SELECT ON parley.custom_domains TO parley_app, parley_jobs;
GRANT SELECT, INSERT, UPDATE, DELETE ON parley.custom_domains TO parley_auth;

ALTER TABLE parley.domain_routes ENABLE ROW LEVEL SECURITY;
ALTER TABLE parley.domain_routes FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS all_auth ON parley.domain_routes;
CREATE POLICY all_auth ON parley.domain_routes FOR ALL USING (current_user = 'parley_auth')
  WITH CHECK (current_user = 'parley_auth');
GRANT SELECT, INSERT, DELETE ON parley.domain_routes TO parley_auth;
