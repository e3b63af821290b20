-- Accounts: remember which workspace a person and each session are working in,
-- constrain API-key scopes, and let the server's own 'service' actor be audited.
-- depends: 0001.tenancy

-- The workspace a person used last: sign-in lands there.
ALTER TABLE parley.users
  ADD COLUMN last_tenant_id uuid REFERENCES parley.tenants(id) ON DELETE SET NULL;

-- The workspace a session (refresh-token family) is switched to: refresh keeps it.
ALTER TABLE parley.refresh_tokens
  ADD COLUMN tenant_id uuid REFERENCES parley.tenants(id) ON DELETE SET NULL;
CREATE INDEX refresh_tokens__tenant_id_idx ON parley.refresh_tokens (tenant_id);
CREATE INDEX users__last_tenant_id_idx ON parley.users (last_tenant_id);

-- Outstanding reset tokens are invalidated together when one is used.
CREATE INDEX password_resets__user_id_idx ON parley.password_resets (user_id);

ALTER TABLE parley.api_keys
  ADD CONSTRAINT api_keys_scopes_check
  CHECK (scopes <@ ARRAY['read', 'write']::text[] AND cardinality(scopes) >= 1);

-- begin_request accepts a 'service' actor (the server acting inside a tenant); its audit rows must fit.
ALTER TABLE parley.audit_log DROP CONSTRAINT audit_log_actor_kind_check;
ALTER TABLE parley.audit_log
  ADD CONSTRAINT audit_log_actor_kind_check
  CHECK (actor_kind IN ('user', 'api_key', 'system', 'visitor', 'service'));
