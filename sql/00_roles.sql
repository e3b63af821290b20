-- Roles, extensions and the schema. Run by `parley migrate` as the administrative
-- connection (superuser or CREATEROLE) before the migrations; everything after this
-- file runs as parley_owner so the app roles never own anything.
DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'parley_owner') THEN
    CREATE ROLE parley_owner NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS;
  END IF;
  -- Owns only the few SECURITY DEFINER functions that must look across tenants before a
  -- tenant is known (sign-in, API-key and invite lookups); each filters explicitly.
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'parley_auth') THEN
    CREATE ROLE parley_auth NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE BYPASSRLS;
  END IF;
  -- Owns the analyst views in schema analytics: they read across tenants (platform
  -- analytics) but expose only the columns each view selects.
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'parley_reporting') THEN
    CREATE ROLE parley_reporting NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE BYPASSRLS;
  END IF;
  -- Owns only the functions that delete personal data (sql/66_gdpr.sql): erasing a visitor in
  -- the current tenant, purging a deleted tenant past its grace. Row-level security applies.
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'parley_purge') THEN
    CREATE ROLE parley_purge NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS;
  END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'parley_app') THEN
    CREATE ROLE parley_app LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS NOINHERIT;
  END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'parley_jobs') THEN
    CREATE ROLE parley_jobs LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS NOINHERIT;
  END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'parley_analyst') THEN
    CREATE ROLE parley_analyst LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS NOINHERIT;
  END IF;
END $$;

-- parley_owner may hand function ownership to parley_auth, parley_reporting and parley_purge (and nothing else).
GRANT parley_auth, parley_reporting, parley_purge TO parley_owner;

-- Login roles must never be able to become the owner or each other.
ALTER ROLE parley_app NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS NOINHERIT;
ALTER ROLE parley_jobs NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS NOINHERIT;
ALTER ROLE parley_analyst NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS NOINHERIT;
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
