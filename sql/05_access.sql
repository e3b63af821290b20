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
    EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', v_table);
    EXECUTE format('ALTER TABLE %s FORCE ROW LEVEL SECURITY', v_table);
  END LOOP;
END $$;
COMMENT ON FUNCTION parley.force_row_security(regclass[]) IS
  'For sql/ files: enable and force row-level security on each table, so even its owner reads it only through policies.';

SELECT parley.secure_functions(NULL, NULL, 'parley.secure_functions(name, name[], regprocedure[])',
                               'parley.force_row_security(regclass[])');
