-- Roles, extensions and the schema. Run by `parley migrate` as the administrative
-- connection (superuser or CREATEROLE) before the migrations; everything after this
-- file runs as parley_owner so the app roles never own anything.

-- The roles, as data: NOLOGIN roles own things, LOGIN roles (NOINHERIT) are what the processes
-- connect as. Login roles get their attributes re-asserted on every migrate, so they can never
-- become the owner or each other.
DO $$
DECLARE
  r record;
BEGIN
  FOR r IN SELECT * FROM (VALUES
    ('parley_owner', false, 'NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS'),
    -- Owns only the few SECURITY DEFINER functions that must look across tenants before a
    -- tenant is known (sign-in, API-key and invite lookups); each filters explicitly.
    ('parley_auth', false, 'NOSUPERUSER NOCREATEDB NOCREATEROLE BYPASSRLS'),
    -- Owns the analyst views in schema analytics: they read across tenants (platform
    -- analytics) but expose only the columns each view selects.
    ('parley_reporting', false, 'NOSUPERUSER NOCREATEDB NOCREATEROLE BYPASSRLS'),
    -- Owns only the functions that delete personal data (sql/66_gdpr.sql): erasing a visitor in
    -- the current tenant, purging a deleted tenant past its grace. Row-level security applies.
    ('parley_purge', false, 'NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS'),
    ('parley_app', true, 'NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS NOINHERIT'),
    ('parley_jobs', true, 'NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS NOINHERIT'),
    ('parley_analyst', true, 'NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS NOINHERIT')) v(name, login, attributes)
  LOOP
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = r.name) THEN
      EXECUTE format('CREATE ROLE %I %s %s', r.name, CASE WHEN r.login THEN 'LOGIN' ELSE 'NOLOGIN' END, r.attributes);
    ELSIF r.login THEN
      EXECUTE format('ALTER ROLE %I %s', r.name, r.attributes);
    END IF;
  END LOOP;
END $$;

-- parley_owner may hand function ownership to parley_auth, parley_reporting and parley_purge (and nothing else).
GRANT parley_auth, parley_reporting, parley_purge TO parley_owner;

ALTER ROLE parley_analyst SET default_transaction_read_only = on;

CREATE EXTENSION IF NOT EXISTS vector;

CREATE SCHEMA IF NOT EXISTS parley AUTHORIZATION parley_owner;
CREATE SCHEMA IF NOT EXISTS analytics AUTHORIZATION parley_owner;
ALTER SCHEMA parley OWNER TO parley_owner;
ALTER SCHEMA analytics OWNER TO parley_owner;

-- Nobody creates objects in public; the app roles only use what is granted.
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA parley TO parley_app, parley_jobs, parley_auth, parley_reporting, parley_purge;
GRANT USAGE, CREATE ON SCHEMA analytics TO parley_reporting;
-- Needed only so parley_owner can hand it function ownership (ALTER ... OWNER requires it).
GRANT CREATE ON SCHEMA parley TO parley_auth, parley_purge;
GRANT USAGE ON SCHEMA analytics TO parley_analyst;
REVOKE ALL ON SCHEMA parley FROM parley_analyst;
