-- Installation settings: one catalog of every setting an operator may change (name, type, default,
-- meaning) and one reader. A setting's value is, first found: what the server wrote from its
-- environment at start (parley.server_settings, e.g. PARLEY_BRANDING_LABEL), the database setting
-- parley.<name> (ALTER DATABASE … SET parley.<name> = …), the catalog's default.
-- A new setting is one row below; its domain reads it with parley.server_setting(name, NULL::type).

-- Everyone reads the environment's values; only parley_auth functions write them.
SELECT parley.force_row_security('parley.server_settings');
SELECT parley.ensure_policy('parley.server_settings', 'select_all', 'FOR SELECT USING (true)');
SELECT parley.ensure_policy('parley.server_settings', 'write_auth',
  $$FOR ALL USING (current_user = 'parley_auth') WITH CHECK (current_user = 'parley_auth')$$);
GRANT SELECT ON parley.server_settings TO parley_app, parley_jobs, parley_auth;
GRANT INSERT, UPDATE, DELETE ON parley.server_settings TO parley_auth;

SELECT parley.ensure_view('parley.server_setting_catalog', NULL, NULL, $$
  SELECT c.name, c.type,
         coalesce(s.value, nullif(current_setting('parley.' || c.name, true), ''), c.default_value) AS value,
         CASE WHEN s.value IS NOT NULL THEN 'environment'
              WHEN nullif(current_setting('parley.' || c.name, true), '') IS NOT NULL THEN 'database'
              ELSE 'default' END AS source,
         c.default_value, c.description
    FROM (VALUES
      ('grace_period', 'interval'::regtype, '7 days',
       'How long a delinquent subscription keeps its plan''s limits (sql/90_billing.sql).'),
      ('purge_grace', 'interval', '30 days',
       'How long a deleted workspace can be restored before it is purged (sql/66_gdpr.sql).'),
      ('referral_credit_cents', 'integer', '1000',
       'Referral credit per paid conversion, USD cents (sql/94_referrals.sql).'),
      ('referral_cap_cents', 'integer', '10000',
       'Most referral credit one referrer can earn, USD cents (sql/94_referrals.sql).'),
      ('domain_recheck_every', 'interval', '24 hours',
       'How often an active or failing custom domain is re-checked (sql/95_domains.sql).'),
      ('domain_grace', 'interval', '72 hours',
       'How long a failing custom domain is still served before it is disabled (sql/95_domains.sql).'),
      ('domain_grace_checks', 'integer', '3',
       'Failed re-checks in a row (after domain_grace too) before a failing custom domain is disabled (sql/95_domains.sql).'),
      ('branding_label', 'text', NULL,
       'The installation''s "Powered by" label; unset: the widget''s own "Powered by Parley" in the visitor''s language (sql/96_branding.sql).'),
      ('branding_url', 'text', NULL,
       'The installation''s "Powered by" link; unset: no link (sql/96_branding.sql).'),
      ('bot_turn_lease', 'interval', '20 seconds',
       'How long a bot turn stays with the server running it without a renewal (renewed every third of it); then another server picks it up (sql/53_bot_turns.sql).'),
      ('bot_turn_attempts', 'integer', '3',
       'Runs a bot turn gets, the first and the pick-ups after a server died, before it is given up with the assistant_unavailable notice (sql/53_bot_turns.sql).'),
      ('bot_turn_max_age', 'interval', '10 minutes',
       'A bot turn picked up later than this after its question is given up, not answered: the visitor gets the assistant_unavailable notice offering a person (sql/53_bot_turns.sql).')
    ) AS c(name, type, default_value, description)
    LEFT JOIN parley.server_settings s ON s.name = c.name$$);
COMMENT ON VIEW parley.server_setting_catalog IS
  'Every installation setting: its type, effective value and where that comes from (environment: parley.server_settings, written by the server at start; database: ALTER DATABASE … SET parley.<name>; default), the default and what it does.';
GRANT SELECT ON parley.server_setting_catalog TO parley_app, parley_jobs, parley_auth;

CREATE OR REPLACE FUNCTION parley.server_setting(p_name text, p_type anyelement) RETURNS anyelement
LANGUAGE plpgsql STABLE
AS $$
DECLARE
  v_setting record;
BEGIN
  SELECT c.type, c.value INTO v_setting FROM parley.server_setting_catalog c WHERE c.name = p_name;
  IF NOT FOUND OR v_setting.type <> pg_typeof(p_type) THEN
    RAISE EXCEPTION 'parley.server_setting_catalog has no % setting %', pg_typeof(p_type), p_name;
  END IF;
  RETURN v_setting.value;  -- converted to the catalog's type
END $$;
COMMENT ON FUNCTION parley.server_setting(text, anyelement) IS
  'The effective value of installation setting p_name as the catalog''s type, which p_type (a NULL of that type) names: parley.server_setting(''domain_grace'', NULL::interval). Raises for a name the catalog does not hold or a different type.';
GRANT EXECUTE ON FUNCTION parley.server_setting(text, anyelement) TO parley_app, parley_jobs, parley_auth;

-- One reader function per setting, before the catalog.
DROP FUNCTION IF EXISTS parley.grace_period(), parley.referral_credit_cents(), parley.referral_cap_cents(),
  parley.domain_recheck_every(), parley.domain_grace(), parley.domain_grace_checks();
