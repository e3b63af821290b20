-- Request context: who is acting, for which tenant. Set per transaction with
-- set_config(..., true) by pyapp.db.tenant_tx; empty after the transaction ends,
-- so every reader turns '' into NULL and policies fail closed.

CREATE OR REPLACE FUNCTION parley.current_tenant_id() RETURNS uuid
LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT nullif(current_setting('app.tenant_id', true), '')::uuid $$;
COMMENT ON FUNCTION parley.current_tenant_id() IS
  'Tenant of the current transaction (app.tenant_id set with SET LOCAL semantics); NULL when unset, so RLS policies fail closed.';

CREATE OR REPLACE FUNCTION parley.current_user_id() RETURNS uuid
LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT nullif(current_setting('app.user_id', true), '')::uuid $$;
COMMENT ON FUNCTION parley.current_user_id() IS
  'Signed-in user of the current transaction, or NULL for API keys, visitors and jobs.';

CREATE OR REPLACE FUNCTION parley.current_actor_kind() RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT coalesce(nullif(current_setting('app.actor_kind', true), ''), 'system') $$;
COMMENT ON FUNCTION parley.current_actor_kind() IS
  'Kind of actor for the audit trail: user, api_key, visitor or system (the default).';

CREATE OR REPLACE FUNCTION parley.current_actor_id() RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT nullif(current_setting('app.actor_id', true), '') $$;
COMMENT ON FUNCTION parley.current_actor_id() IS 'Id of the acting user, API key or visitor, for the audit trail.';

CREATE OR REPLACE FUNCTION parley.current_request_ip() RETURNS inet
LANGUAGE plpgsql STABLE
AS $$
BEGIN
  RETURN nullif(current_setting('app.ip', true), '')::inet;
EXCEPTION WHEN invalid_text_representation THEN
  RETURN NULL;
END $$;
COMMENT ON FUNCTION parley.current_request_ip() IS 'Client address of the current request, for audit and rate limits.';

CREATE OR REPLACE FUNCTION parley.current_request_id() RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT nullif(current_setting('app.request_id', true), '') $$;
COMMENT ON FUNCTION parley.current_request_id() IS 'Request id of the HTTP request that opened this transaction.';

CREATE OR REPLACE FUNCTION parley.raise_error(p_status int, p_code text, p_message text) RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
  -- SQLSTATE PT<status> carries the HTTP status; HINT carries the stable error code.
  RAISE EXCEPTION USING ERRCODE = 'PT' || p_status::text, MESSAGE = p_message, HINT = p_code;
END $$;
COMMENT ON FUNCTION parley.raise_error(int, text, text) IS
  'Raise an error the server maps to an HTTP response: SQLSTATE PT<status>, HINT = stable code.';

-- Monthly range partitions for the append-heavy tables, created ahead by migrate and the jobs process.
CREATE OR REPLACE FUNCTION parley.ensure_monthly_partitions(p_table regclass, p_months_ahead int DEFAULT 3)
RETURNS int
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
  v_month date := date_trunc('month', now())::date;
  v_created int := 0;
  v_name text;
  v_schema text;
  v_rel text;
BEGIN
  SELECT n.nspname, c.relname INTO v_schema, v_rel
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = p_table;
  FOR i IN 0..p_months_ahead LOOP
    v_name := format('%s_%s', v_rel, to_char(v_month + make_interval(months => i), 'YYYY_MM'));
    IF to_regclass(format('%I.%I', v_schema, v_name)) IS NULL THEN
      EXECUTE format('CREATE TABLE %I.%I PARTITION OF %s FOR VALUES FROM (%L) TO (%L)',
                     v_schema, v_name, p_table,
                     v_month + make_interval(months => i), v_month + make_interval(months => i + 1));
      v_created := v_created + 1;
    END IF;
  END LOOP;
  RETURN v_created;
END $$;
COMMENT ON FUNCTION parley.ensure_monthly_partitions(regclass, int) IS
  'Create the monthly partitions of a range-partitioned table from this month to p_months_ahead months ahead; returns how many were created.';

-- Dropping expired partitions is parley.drop_expired_partitions (sql/62_retention.sql, by each
-- table's retention); the earlier drop-by-date copy, never called, is gone.
DROP FUNCTION IF EXISTS parley.drop_partitions_before(regclass, timestamptz);

SELECT parley.secure_functions(NULL, NULL, 'parley.ensure_monthly_partitions(regclass, int)');
