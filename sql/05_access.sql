-- Who may run and read what: the two helpers every later sql/ file uses for the envelope of its
-- functions and tables, so "owned by, not for PUBLIC, executable by" and "RLS on and forced" are
-- each written once. Called only by `parley migrate` (as parley_owner), never by the app roles.

CREATE OR REPLACE FUNCTION parley.secure_functions(
  p_owner name, p_grantees name[], VARIADIC p_functions regprocedure[]) RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
  v_fn regprocedure;
  v_role name;
BEGIN
  FOREACH v_fn IN ARRAY p_functions LOOP
    IF p_owner IS NOT NULL THEN
      EXECUTE format('ALTER FUNCTION %s OWNER TO %I', v_fn, p_owner);
    END IF;
    EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', v_fn);
    FOREACH v_role IN ARRAY coalesce(p_grantees, '{}') LOOP
      EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %I', v_fn, v_role);
    END LOOP;
  END LOOP;
END $$;
COMMENT ON FUNCTION parley.secure_functions(name, name[], regprocedure[]) IS
  'For sql/ files: give each function to p_owner (NULL keeps the owner), revoke EXECUTE from PUBLIC and grant it to each of p_grantees (none: only the owner and superusers run it).';

CREATE OR REPLACE FUNCTION parley.force_row_security(VARIADIC p_tables regclass[]) RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
  v_table regclass;
BEGIN
  FOREACH v_table IN ARRAY p_tables LOOP
    -- ALTER TABLE takes an ACCESS EXCLUSIVE lock even when nothing changes: only when needed.
    CONTINUE WHEN (SELECT c.relrowsecurity AND c.relforcerowsecurity FROM pg_class c WHERE c.oid = v_table);
    EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', v_table);
    EXECUTE format('ALTER TABLE %s FORCE ROW LEVEL SECURITY', v_table);
  END LOOP;
END $$;
COMMENT ON FUNCTION parley.force_row_security(regclass[]) IS
  'For sql/ files: enable and force row-level security on each table, so even its owner reads it only through policies. A table that already has both is left alone (no lock).';

-- Policies and triggers without locks on a re-apply: CREATE/DROP POLICY and DROP TRIGGER take an
-- ACCESS EXCLUSIVE lock on the table (CREATE TRIGGER a SHARE ROW EXCLUSIVE one), so a deploy that
-- recreated them all queued behind any open transaction and stalled every request behind itself.
-- The declared object is built on an empty scratch copy of the table (same name and columns, in
-- pg_temp) and compared with the live one as PostgreSQL stores it; only a difference touches the table.
CREATE OR REPLACE FUNCTION parley.scratch_copy(p_table regclass) RETURNS regclass
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
  v_name name := (SELECT relname FROM pg_class WHERE oid = p_table);
  v_scratch regclass := to_regclass(format('pg_temp.%I', v_name));
BEGIN
  -- One per table and transaction (a re-apply compares several policies of each table).
  IF v_scratch IS NOT NULL AND obj_description(v_scratch, 'pg_class') = p_table::oid::text THEN
    RETURN v_scratch;
  ELSIF v_scratch IS NOT NULL THEN
    EXECUTE format('DROP TABLE %s', v_scratch);
  END IF;
  EXECUTE format('CREATE TEMP TABLE %I (LIKE %s) ON COMMIT DROP', v_name, p_table);
  v_scratch := format('pg_temp.%I', v_name)::regclass;
  EXECUTE format('COMMENT ON TABLE %s IS %L', v_scratch, p_table::oid::text);
  RETURN v_scratch;
END $$;
COMMENT ON FUNCTION parley.scratch_copy(regclass) IS
  'For ensure_policy / ensure_trigger: an empty temporary table with p_table''s name and columns, dropped at commit and reused within the transaction (the caller drops what it builds on it), to build a declared policy or trigger on and compare with the live one without locking p_table.';

CREATE OR REPLACE FUNCTION parley.ensure_policy(p_table regclass, p_name name, p_definition text) RETURNS boolean
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
  v_exists boolean := EXISTS (SELECT FROM pg_policy WHERE polrelid = p_table AND polname = p_name);
  v_scratch regclass;
  v_same boolean;
BEGIN
  IF v_exists AND p_definition IS NOT NULL THEN
    v_scratch := parley.scratch_copy(p_table);
    EXECUTE format('CREATE POLICY %I ON %s %s', p_name, v_scratch, p_definition);
    SELECT live.polcmd = want.polcmd AND live.polpermissive = want.polpermissive
           AND ARRAY(SELECT unnest(live.polroles) ORDER BY 1) = ARRAY(SELECT unnest(want.polroles) ORDER BY 1)
           AND pg_get_expr(live.polqual, live.polrelid) IS NOT DISTINCT FROM pg_get_expr(want.polqual, want.polrelid)
           AND pg_get_expr(live.polwithcheck, live.polrelid) IS NOT DISTINCT FROM pg_get_expr(want.polwithcheck, want.polrelid)
      INTO v_same
      FROM pg_policy live, pg_policy want
     WHERE live.polrelid = p_table AND live.polname = p_name AND want.polrelid = v_scratch AND want.polname = p_name;
    EXECUTE format('DROP POLICY %I ON %s', p_name, v_scratch);
    IF v_same THEN
      RETURN false;
    END IF;
  END IF;
  IF v_exists THEN
    EXECUTE format('DROP POLICY %I ON %s', p_name, p_table);
  END IF;
  IF p_definition IS NOT NULL THEN
    EXECUTE format('CREATE POLICY %I ON %s %s', p_name, p_table, p_definition);
  END IF;
  RETURN v_exists OR p_definition IS NOT NULL;
END $$;
COMMENT ON FUNCTION parley.ensure_policy(regclass, name, text) IS
  'For sql/ files: make policy p_name on p_table what p_definition declares (the text after "CREATE POLICY <name> ON <table>": [AS RESTRICTIVE] [FOR <command>] [TO <roles>] [USING (...)] [WITH CHECK (...)]); NULL: the policy must not exist. Touches the table (ACCESS EXCLUSIVE lock) only when the live policy is missing, extra, or differs in command, permissiveness, roles or deparsed expressions; returns whether it did.';

CREATE OR REPLACE FUNCTION parley.ensure_trigger(p_table regclass, p_name name, p_when text, p_action text)
RETURNS boolean
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
  v_live oid := (SELECT oid FROM pg_trigger WHERE tgrelid = p_table AND tgname = p_name);
  v_on text := (SELECT format(' ON %s.%s ', quote_ident(n.nspname), quote_ident(c.relname))
                  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = p_table);
  v_scratch regclass;
  v_same boolean;
BEGIN
  IF v_live IS NOT NULL AND p_when IS NOT NULL THEN
    v_scratch := parley.scratch_copy(p_table);
    EXECUTE format('CREATE TRIGGER %I %s ON %s %s', p_name, p_when, v_scratch, p_action);
    -- pg_get_triggerdef names the table schema-qualified (the scratch's schema as pg_temp, or
    -- pg_temp_<n> before PostgreSQL 16): the table's name is the one difference.
    SELECT live.tgenabled = 'O' AND pg_get_triggerdef(live.oid) IN (
             replace(pg_get_triggerdef(want.oid), format(' ON pg_temp.%s ', quote_ident(c.relname)), v_on),
             replace(pg_get_triggerdef(want.oid), format(' ON %s.%s ', quote_ident(n.nspname), quote_ident(c.relname)), v_on))
      INTO v_same
      FROM pg_trigger live, pg_trigger want JOIN pg_class c ON c.oid = want.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE live.oid = v_live AND want.tgrelid = v_scratch AND want.tgname = p_name;
    EXECUTE format('DROP TRIGGER %I ON %s', p_name, v_scratch);
    IF v_same THEN
      RETURN false;
    END IF;
  END IF;
  IF v_live IS NOT NULL THEN
    EXECUTE format('DROP TRIGGER %I ON %s', p_name, p_table);
  END IF;
  IF p_when IS NOT NULL THEN
    EXECUTE format('CREATE TRIGGER %I %s ON %s %s', p_name, p_when, p_table, p_action);
  END IF;
  RETURN v_live IS NOT NULL OR p_when IS NOT NULL;
END $$;
COMMENT ON FUNCTION parley.ensure_trigger(regclass, name, text, text) IS
  'For sql/ files: make trigger p_name on p_table the one "CREATE TRIGGER <name> <p_when> ON <table> <p_action>" declares (p_when: BEFORE/AFTER and the events; p_action: [REFERENCING ...] FOR EACH ... [WHEN (...)] EXECUTE FUNCTION ...); p_when NULL: the trigger must not exist. Touches the table only when the live trigger is missing, extra, disabled or deparses differently; returns whether it did.';

-- Views alike: CREATE OR REPLACE VIEW and ALTER VIEW ... OWNER TO lock the view (ACCESS EXCLUSIVE)
-- even when nothing changes, so every request reading it (server_setting_catalog: the plan limits)
-- queued behind a deploy that waited for one long reader.
CREATE OR REPLACE FUNCTION parley.ensure_view(p_view text, p_options text, p_owner name, p_query text)
RETURNS boolean
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
  v_live regclass := to_regclass(p_view);
  v_with text := CASE WHEN p_options IS NOT NULL THEN format(' WITH (%s)', p_options) ELSE '' END;
  v_scratch regclass;
  v_same boolean := false;
BEGIN
  IF v_live IS NOT NULL THEN
    -- The declared view as a temporary one, deparsed beside the live one.
    EXECUTE format('CREATE TEMP VIEW parley_scratch_view%s AS %s', v_with, p_query);
    v_scratch := 'pg_temp.parley_scratch_view'::regclass;
    SELECT pg_get_viewdef(live.oid) = pg_get_viewdef(want.oid) AND live.reloptions IS NOT DISTINCT FROM want.reloptions
           AND ARRAY(SELECT (a.attname, a.atttypid, a.atttypmod, a.attcollation)::text FROM pg_attribute a
                      WHERE a.attrelid = live.oid AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum)
             = ARRAY(SELECT (a.attname, a.atttypid, a.atttypmod, a.attcollation)::text FROM pg_attribute a
                      WHERE a.attrelid = want.oid AND a.attnum > 0 ORDER BY a.attnum)
      INTO v_same
      FROM pg_class live, pg_class want WHERE live.oid = v_live AND want.oid = v_scratch;
    EXECUTE format('DROP VIEW %s', v_scratch);
  END IF;
  IF NOT v_same THEN
    BEGIN
      EXECUTE format('CREATE OR REPLACE VIEW %s%s AS %s', p_view, v_with, p_query);
    EXCEPTION WHEN invalid_table_definition THEN  -- columns dropped or renamed: replacing cannot do it
      EXECUTE format('DROP VIEW %s', p_view);     -- (refused while other views depend on it)
      EXECUTE format('CREATE VIEW %s%s AS %s', p_view, v_with, p_query);
    END;
  END IF;
  IF p_owner IS NOT NULL AND (SELECT relowner FROM pg_class WHERE oid = p_view::regclass) <> p_owner::regrole THEN
    EXECUTE format('ALTER VIEW %s OWNER TO %I', p_view, p_owner);
    v_same := false;
  END IF;
  RETURN NOT v_same;
END $$;
COMMENT ON FUNCTION parley.ensure_view(text, text, name, text) IS
  'For sql/ files: make view p_view (schema-qualified name) the one "CREATE VIEW <p_view> [WITH (p_options)] AS p_query" declares, owned by p_owner (NULL: whoever creates it). Touches the view (ACCESS EXCLUSIVE lock) only when it is missing, deparses differently, has other options or columns, or another owner; a change of columns replacing cannot make drops and recreates it. Returns whether it did anything. Grants and comments stay the caller''s statements (they take no lock readers wait for).';

SELECT parley.secure_functions(NULL, NULL, 'parley.secure_functions(name, name[], regprocedure[])',
                               'parley.force_row_security(regclass[])', 'parley.scratch_copy(regclass)',
                               'parley.ensure_policy(regclass, name, text)',
                               'parley.ensure_trigger(regclass, name, text, text)',
                               'parley.ensure_view(text, text, name, text)');
