-- Widget branding defaults: the "Powered by" label and link a widget shows, resolved once in
-- SQL: the chatbot's own (config.branding.powered_by_label / powered_by_url) → the workspace's
-- default (parley.tenant_branding) → the server's (PARLEY_BRANDING_LABEL / PARLEY_BRANDING_URL from
-- its environment, else the database settings parley.branding_label / parley.branding_url).

SELECT parley.apply_tenant_policies('parley.tenant_branding');
GRANT SELECT ON parley.tenant_branding TO parley_app, parley_auth;

-- What a credit line's label or link is, as every writer stores it and the widget reads it: trimmed,
-- and blank is NULL (inherit the next level's).
CREATE OR REPLACE FUNCTION parley.branding_value(p_value text) RETURNS text
LANGUAGE sql IMMUTABLE
AS $$ SELECT nullif(btrim(p_value), '') $$;
COMMENT ON FUNCTION parley.branding_value(text) IS
  'A "Powered by" label or link as it counts (chatbot override, workspace default, server default alike): trimmed; empty or blank is NULL, which inherits. So a blank override is neither refused nor taken for one (check_chatbot_fields'' 402), and the widget shows what was checked.';
GRANT EXECUTE ON FUNCTION parley.branding_value(text) TO parley_app, parley_auth;

-- The one check of a credit line's label and link (workspace default and chatbot override alike).
CREATE OR REPLACE FUNCTION parley.check_branding(p_label text, p_url text) RETURNS void
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
  IF p_label IS NOT NULL THEN
    PERFORM parley.check_text(p_label, 'invalid_branding', 'The label', true);
    IF length(btrim(p_label)) NOT BETWEEN 1 AND 60 THEN
      PERFORM parley.raise_error(422, 'invalid_branding', 'The label is 1 to 60 characters.');
    END IF;
  END IF;
  IF p_url IS NOT NULL AND (length(p_url) > 2048 OR p_url !~ '^https?://[^\s/?#]+[^\s]*$') THEN
    PERFORM parley.raise_error(422, 'invalid_branding', 'The link is an http(s) address.');
  END IF;
END $$;
COMMENT ON FUNCTION parley.check_branding(text, text) IS
  'Raise 422 invalid_branding unless the "Powered by" label (text rule, 1-60 characters) and link (http or https, at most 2048) are acceptable; NULLs pass (inherit).';
GRANT EXECUTE ON FUNCTION parley.check_branding(text, text) TO parley_app, parley_auth;

CREATE OR REPLACE FUNCTION parley.sync_server_branding(p_label text, p_url text) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = ''
AS $$
DECLARE
  v_label text := parley.branding_value(p_label);
  v_url text := parley.branding_value(p_url);
BEGIN
  PERFORM parley.check_branding(v_label, v_url);
  DELETE FROM parley.server_settings s
   WHERE (s.name = 'branding_label' AND v_label IS NULL) OR (s.name = 'branding_url' AND v_url IS NULL);
  INSERT INTO parley.server_settings AS s (name, value)
  SELECT x.name, x.value FROM (VALUES ('branding_label', v_label), ('branding_url', v_url)) AS x(name, value)
   WHERE x.value IS NOT NULL
  ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value, updated_at = now()
   WHERE s.value IS DISTINCT FROM EXCLUDED.value;
  RETURN parley.server_branding();
END $$;
COMMENT ON FUNCTION parley.sync_server_branding(text, text) IS
  'Server start: the installation''s default credit line from its environment (PARLEY_BRANDING_LABEL, PARLEY_BRANDING_URL; NULL or empty = unset, the database settings apply), checked like any credit line (422 invalid_branding); returns parley.server_branding().';

CREATE OR REPLACE FUNCTION parley.server_branding() RETURNS jsonb
LANGUAGE sql STABLE
AS $$
  SELECT jsonb_build_object('label', parley.server_setting('branding_label', NULL::text),
                            'url', parley.server_setting('branding_url', NULL::text))
$$;
COMMENT ON FUNCTION parley.server_branding() IS
  'The installation''s default credit line, field by field (settings branding_label / branding_url of parley.server_setting_catalog): the server''s environment (PARLEY_BRANDING_LABEL / PARLEY_BRANDING_URL, parley.server_settings), else the database settings parley.branding_label / parley.branding_url (ALTER DATABASE ... SET); a NULL label is the widget''s own "Powered by Parley" in the visitor''s language, a NULL url no link.';
GRANT EXECUTE ON FUNCTION parley.server_branding() TO parley_app, parley_auth;

-- The one resolution: chatbot override → workspace default → server default, field by field; the
-- first two only on plans that allow replacing the Parley branding (allow_hide_branding), so a
-- downgrade brings the server's back without touching what was set.
CREATE OR REPLACE FUNCTION parley.widget_branding(p_tenant_id uuid, p_config jsonb, p_allow boolean) RETURNS jsonb
LANGUAGE sql STABLE
AS $$
  SELECT CASE WHEN coalesce(p_allow, false) THEN
           jsonb_build_object(
             'label', coalesce(parley.branding_value(p_config #>> '{branding,powered_by_label}'), b.label, s->>'label'),
             'url', coalesce(parley.branding_value(p_config #>> '{branding,powered_by_url}'), b.url, s->>'url'))
         ELSE s END
    FROM parley.server_branding() s
    LEFT JOIN parley.tenant_branding b ON b.tenant_id = p_tenant_id
$$;
COMMENT ON FUNCTION parley.widget_branding(uuid, jsonb, boolean) IS
  'The credit line a chatbot''s widget shows ({label, url}): the chatbot''s config.branding.powered_by_label / powered_by_url, else the workspace''s default (tenant_branding), else the server''s (server_branding); the first two only when p_allow (the plan''s allow_hide_branding).';
GRANT EXECUTE ON FUNCTION parley.widget_branding(uuid, jsonb, boolean) TO parley_app, parley_auth;

CREATE OR REPLACE FUNCTION parley.get_default_branding() RETURNS jsonb
LANGUAGE sql STABLE
AS $$
  SELECT jsonb_build_object(
    'label', b.label, 'url', b.url,
    'allowed', (SELECT l.allow_hide_branding FROM parley.effective_limits(parley.current_tenant_id()) l),
    'server', parley.server_branding(),
    'effective', parley.widget_branding(parley.current_tenant_id(), '{}',
                   (SELECT l.allow_hide_branding FROM parley.effective_limits(parley.current_tenant_id()) l)))
    FROM (SELECT 1) x LEFT JOIN parley.tenant_branding b ON b.tenant_id = parley.current_tenant_id()
$$;
COMMENT ON FUNCTION parley.get_default_branding() IS
  'The current workspace''s default credit line (label, url; NULL = inherit), whether its plan lets it replace Parley''s, the server default and what its widgets show without a chatbot override.';
GRANT EXECUTE ON FUNCTION parley.get_default_branding() TO parley_app;

CREATE OR REPLACE FUNCTION parley.set_default_branding(p_label text, p_url text) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = ''
AS $$
DECLARE
  v_label text := parley.branding_value(p_label);
  v_url text := parley.branding_value(p_url);
BEGIN
  PERFORM parley.require_role('admin');
  PERFORM parley.check_branding(v_label, v_url);
  IF (v_label IS NOT NULL OR v_url IS NOT NULL)
     AND NOT (SELECT l.allow_hide_branding FROM parley.effective_limits(parley.current_tenant_id()) l) THEN
    PERFORM parley.raise_error(402, 'plan_limit', 'Your plan does not allow replacing the Parley branding.');
  END IF;
  INSERT INTO parley.tenant_branding AS b (tenant_id, label, url)
  VALUES (parley.current_tenant_id(), v_label, v_url)
  ON CONFLICT (tenant_id) DO UPDATE SET label = EXCLUDED.label, url = EXCLUDED.url, updated_at = now();
  PERFORM parley.write_audit('branding.default_changed', 'tenant', parley.current_tenant_id()::text,
                             jsonb_build_object('label', v_label, 'url', v_url));
  RETURN parley.get_default_branding();
END $$;
COMMENT ON FUNCTION parley.set_default_branding(text, text) IS
  'Admins: the workspace''s default "Powered by" label and link for its widgets (NULL or empty = inherit the server''s); 422 invalid_branding (check_branding), 402 plan_limit unless the plan allows replacing the branding; audited.';

-- Owners and callers (parley.secure_functions, sql/05_access.sql).
SELECT parley.secure_functions('parley_auth', '{parley_app}', 'parley.sync_server_branding(text, text)');
SELECT parley.secure_functions('parley_owner', '{parley_app}', 'parley.set_default_branding(text, text)');
