-- Chatbots: the widget's configuration, its public key, and the one cross-tenant lookup
-- the widget needs before the tenant is known (parley.widget_chatbot, owned by parley_auth).

SELECT parley.apply_tenant_policies('parley.chatbots');
GRANT SELECT, INSERT, UPDATE ON parley.chatbots TO parley_app;
GRANT SELECT ON parley.chatbots TO parley_jobs, parley_auth;

-- A number from a jsonb value, or NULL when it is missing or not a number (config is user data).
CREATE OR REPLACE FUNCTION parley.jsonb_int(p_value jsonb) RETURNS int
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT CASE WHEN jsonb_typeof(p_value) = 'number' AND p_value::numeric BETWEEN -2147483648 AND 2147483647
                  THEN trunc(p_value::numeric)::int END $$;
COMMENT ON FUNCTION parley.jsonb_int(jsonb) IS 'An int from a jsonb number (truncated), NULL for anything else.';
GRANT EXECUTE ON FUNCTION parley.jsonb_int(jsonb) TO parley_app, parley_jobs, parley_auth;

-- Languages per chatbot: config.languages lists the languages it speaks (the first is its
-- default), config.language is 'auto' (the visitor's browser language among them) or one fixed
-- code, and config.texts.<code> holds the greeting and starters in that language (the top-level
-- greeting/starters are the fallback). The widget gets the texts of the visitor's language only.
CREATE OR REPLACE FUNCTION parley.chatbot_language(p_config jsonb, p_locale text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
  WITH c AS (
    SELECT ARRAY(SELECT x FROM jsonb_array_elements_text(
                   CASE WHEN jsonb_typeof(p_config->'languages') = 'array' THEN p_config->'languages'
                        ELSE '[]'::jsonb END) x) AS langs,
           nullif(coalesce(p_config->>'language', 'auto'), 'auto') AS fixed,
           lower(replace(btrim(coalesce(p_locale, '')), '_', '-')) AS loc
  )
  SELECT CASE
           WHEN c.fixed IS NOT NULL THEN c.fixed
           WHEN cardinality(c.langs) = 0 THEN 'auto'
           -- the locale itself, then its primary language, then a listed variant of that language
           ELSE coalesce((SELECT x FROM unnest(c.langs) WITH ORDINALITY u(x, n)
                           WHERE c.loc <> '' AND (lower(x) = c.loc OR lower(x) = split_part(c.loc, '-', 1)
                                                  OR split_part(lower(x), '-', 1) = split_part(c.loc, '-', 1))
                           ORDER BY lower(x) = c.loc DESC, lower(x) = split_part(c.loc, '-', 1) DESC, n
                           LIMIT 1), c.langs[1])
         END
    FROM c
$$;
COMMENT ON FUNCTION parley.chatbot_language(jsonb, text) IS
  'The language a chatbot speaks with a visitor whose browser says p_locale (e.g. de-DE): the fixed config.language if set; else, with a config.languages list, the locale (exact, then its primary subtag, then a listed variant of that language; case-insensitive, spelled as listed) when listed, otherwise the first listed; with no list, auto (the widget picks from the browser).';

CREATE OR REPLACE FUNCTION parley.spoken_language(p_config jsonb, p_locale text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT coalesce(nullif(parley.chatbot_language(p_config, p_locale), 'auto'), p_locale) $$;
COMMENT ON FUNCTION parley.spoken_language(jsonb, text) IS
  'The language the chatbot speaks with a visitor whose browser says p_locale: chatbot_language, and for auto without a list of languages the browser''s locale itself (NULL when unknown). What the assistant answers in and what system texts are said in.';

CREATE OR REPLACE FUNCTION parley.localize_widget_config(p_public jsonb, p_config jsonb, p_locale text)
RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
  SELECT p_public || jsonb_build_object(
           'language', l.lang,
           'greeting', coalesce(t.texts->>'greeting', p_public->>'greeting'),
           'starters', CASE WHEN jsonb_typeof(t.texts->'starters') = 'array' THEN t.texts->'starters'
                            ELSE p_public->'starters' END)
    FROM (SELECT parley.chatbot_language(p_config, p_locale) AS lang) l
    LEFT JOIN LATERAL (SELECT e.value AS texts
                         FROM jsonb_each(CASE WHEN jsonb_typeof(p_config->'texts') = 'object'
                                              THEN p_config->'texts' ELSE '{}'::jsonb END) e
                        -- auto (no list): the texts of the browser's primary language, if any
                        WHERE lower(e.key) = CASE WHEN l.lang = 'auto'
                                                  THEN split_part(lower(replace(coalesce(p_locale, ''), '_', '-')), '-', 1)
                                                  ELSE lower(l.lang) END
                          AND jsonb_typeof(e.value) = 'object'
                        LIMIT 1) t ON true
$$;
COMMENT ON FUNCTION parley.localize_widget_config(jsonb, jsonb, text) IS
  'A widget config (chatbot_public_config) for a visitor whose browser says p_locale: language = chatbot_language(config, locale), greeting and starters from config.texts.<language> (with language auto: of the locale''s primary language) when given there, else the chatbot''s default ones.';
GRANT EXECUTE ON FUNCTION parley.chatbot_language(jsonb, text), parley.localize_widget_config(jsonb, jsonb, text)
  TO parley_app, parley_auth;

-- The protocol's widget "config" (docs/protocol.md) with defaults filled in. Private keys
-- (persona, handoff, idle_close, unknown keys) never reach the browser.
CREATE OR REPLACE FUNCTION parley.chatbot_public_config(p_name text, p_config jsonb, p_allow_hide_branding boolean)
RETURNS jsonb
LANGUAGE sql IMMUTABLE
AS $$
  SELECT parley.localize_widget_config(jsonb_build_object(
    'name', p_name,
    'languages', CASE WHEN jsonb_typeof(p_config->'languages') = 'array' THEN p_config->'languages' ELSE '[]'::jsonb END,
    'greeting', coalesce(p_config->>'greeting', 'Hi! How can we help?'),
    -- 'auto' (the default): the visitor's browser language (widget catalogs en, es, fr, de, tr).
    'language', coalesce(p_config->>'language', 'auto'),
    'starters', CASE WHEN jsonb_typeof(p_config->'starters') = 'array' THEN p_config->'starters' ELSE '[]'::jsonb END,
    'branding', jsonb_build_object('primary_color', '#4f46e5', 'position', 'right', 'title', p_name,
                                   'avatar_url', NULL, 'launcher_icon', 'chat', 'hide_powered_by', false)
                || CASE WHEN jsonb_typeof(p_config->'branding') = 'object' THEN p_config->'branding' ELSE '{}'::jsonb END
                || CASE WHEN coalesce(p_allow_hide_branding, false) THEN '{}'::jsonb
                        ELSE jsonb_build_object('hide_powered_by', false) END,
    'lead_capture', jsonb_build_object('mode', 'never', 'after', 2)
                || CASE WHEN jsonb_typeof(p_config->'lead_capture') = 'object' THEN p_config->'lead_capture' ELSE '{}'::jsonb END,
    'nudges', CASE WHEN jsonb_typeof(p_config->'nudges') = 'array' THEN p_config->'nudges' ELSE '[]'::jsonb END,
    'max_nudges', coalesce(parley.jsonb_int(p_config->'max_nudges'), 1)), p_config, NULL)
$$;
COMMENT ON FUNCTION parley.chatbot_public_config(text, jsonb, boolean) IS
  'The widget-facing config of a chatbot (protocol shape, defaults filled) in its default language (localize_widget_config with no locale; widget sessions localize it for the visitor''s); hide_powered_by is forced false unless the plan allows hiding branding.';
GRANT EXECUTE ON FUNCTION parley.chatbot_public_config(text, jsonb, boolean) TO parley_app, parley_auth;

CREATE OR REPLACE FUNCTION parley.widget_chatbot(p_public_key text)
RETURNS TABLE (tenant_id uuid, chatbot_id uuid, name text, allowed_origins text[], config jsonb, public_config jsonb)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = ''
AS $$
BEGIN
  IF p_public_key IS NULL OR p_public_key !~ '^pk_[A-Za-z0-9_-]{16,80}$' THEN
    RETURN;
  END IF;
  -- Keys are random and server-generated; should two tenants ever hold the same one,
  -- refuse both rather than pick one (no row unless exactly one matches).
  RETURN QUERY
    SELECT c.tenant_id, c.id, c.name, c.allowed_origins, c.config,
           jsonb_set(parley.chatbot_public_config(c.name, c.config, l.allow_hide_branding), '{branding,powered_by}',
                     parley.widget_branding(c.tenant_id, c.config, l.allow_hide_branding))
      FROM parley.chatbots c
      JOIN parley.tenants t ON t.id = c.tenant_id AND t.deleted_at IS NULL AND t.suspended_at IS NULL
      CROSS JOIN LATERAL parley.effective_limits(c.tenant_id) l
     WHERE c.public_key = p_public_key AND c.deleted_at IS NULL
       AND (SELECT count(*) FROM parley.chatbots c2 WHERE c2.public_key = p_public_key) = 1;
END $$;
COMMENT ON FUNCTION parley.widget_chatbot(text) IS
  'Widget session bootstrap (POST /api/widget/sessions), before the tenant is known: the live chatbot with this public key and its tenant, allowed origins, full config and widget-facing config. Empty when unknown, deleted, or the tenant is deleted. Owned by parley_auth (cross-tenant); filters explicitly.';

-- Origins --------------------------------------------------------------------------------
-- The one rule for which pages may start the widget (widget sessions) and which the console's
-- install check reports as allowed. Browsers send Origin in one canonical form (RFC 6454:
-- lower-case scheme and host, IPv4 dotted decimal, IPv6 in brackets, no default port, no
-- path), so anything else is not an origin and is refused: no guessing at what a strange
-- spelling might resolve to.
CREATE OR REPLACE FUNCTION parley.normalize_origin(p_value text) RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
AS $$
DECLARE
  v_match text[];
  v_port int;
BEGIN
  v_match := regexp_match(lower(btrim(coalesce(p_value, ''))),
                          '^(https?)://([a-z0-9](?:[a-z0-9.-]*[a-z0-9])?|\[[0-9a-f:.]+\])(?::([1-9][0-9]{0,4}))?/?$');
  IF v_match IS NULL OR v_match[2] LIKE '%..%' THEN
    RETURN NULL;
  END IF;
  v_port := v_match[3]::int;
  IF v_port > 65535 THEN
    RETURN NULL;
  END IF;
  IF v_port IS NULL OR (v_match[1] = 'http' AND v_port = 80) OR (v_match[1] = 'https' AND v_port = 443) THEN
    RETURN v_match[1] || '://' || v_match[2];
  END IF;
  RETURN v_match[1] || '://' || v_match[2] || ':' || v_port;
END $$;
COMMENT ON FUNCTION parley.normalize_origin(text) IS
  'scheme://host[:port] in lower case without the default port (a trailing slash is dropped), or NULL when the value is not an http(s) origin in canonical form (no path, user info, trailing dot in the host, empty labels or port 0).';

CREATE OR REPLACE FUNCTION parley.origin_is_local(p_origin text) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
  SELECT coalesce(
    -- the host of a canonical origin: between :// and the optional :port
    substring(parley.normalize_origin(p_origin) FROM '^https?://(\[[^]]+\]|[^:]+)') ~
      ('^(localhost|[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*\.localhost'
       || '|127\.(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])'
       || '\.(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])|\[::1\])$'),
    false)
$$;
COMMENT ON FUNCTION parley.origin_is_local(text) IS
  'Whether an origin is a local development page, decided strictly on the canonical form: localhost, *.localhost, 127.0.0.0/8 in dotted decimal (127.0.0.2 included: every loopback address is the visitor''s own machine), [::1]. Not local: localhost. (trailing dot), 127.1, 2130706433, 0x7f.0.0.1, 0.0.0.0, [::ffff:127.0.0.1], anything not canonical.';

CREATE OR REPLACE FUNCTION parley.origin_is_public_name(p_origin text) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
  SELECT coalesce(
    -- a canonical origin whose host is a domain name: at least two labels, the last one starting
    -- with a letter (so no IPv4 in any notation, no bracketed IPv6), and not a local name
    substring(parley.normalize_origin(p_origin) FROM '^https?://([^:/]+)')
      ~ '^([a-z0-9](?:[a-z0-9-]*[a-z0-9])?\.)+[a-z](?:[a-z0-9-]*[a-z0-9])?$'
    AND NOT parley.origin_is_local(p_origin),
    false)
$$;
COMMENT ON FUNCTION parley.origin_is_public_name(text) IS
  'Whether an origin is a public site by its domain name: canonical (parley.normalize_origin), at least two labels, the last starting with a letter, and not local (parley.origin_is_local). IP literals in any notation (127.1, 2130706433, 0x7f.0.0.1, 0.0.0.0, [::ffff:127.0.0.1], 127.0.0.2) are not names.';

CREATE OR REPLACE FUNCTION parley.origin_allowed(p_allowed text[], p_origin text) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
  SELECT CASE
    -- No Origin header: not a browser page; accepted only while the list is empty.
    WHEN p_origin IS NULL THEN coalesce(cardinality(p_allowed), 0) = 0
    WHEN parley.normalize_origin(p_origin) IS NULL THEN false
    -- An empty list: the snippet works on any public site; local pages and bare addresses must be listed.
    WHEN coalesce(cardinality(p_allowed), 0) = 0 THEN parley.origin_is_public_name(p_origin)
    ELSE EXISTS (SELECT 1 FROM unnest(p_allowed) a
                  WHERE parley.normalize_origin(a) = parley.normalize_origin(p_origin))
  END
$$;
COMMENT ON FUNCTION parley.origin_allowed(text[], text) IS
  'May a page of this origin start the widget of a chatbot with these allowed origins? An empty list allows any public site by its domain name (parley.origin_is_public_name), so a pasted snippet works at once; local development pages (parley.origin_is_local, decided strictly: a loopback in disguise is not local, and not a name either) and pages on a bare IP address must be listed. Otherwise the origin must equal a listed one (both normalised: case, default port, trailing slash). NULL origin (no Origin header): only while the list is empty. Used by widget sessions and the console install check.';
GRANT EXECUTE ON FUNCTION parley.normalize_origin(text), parley.origin_is_local(text), parley.origin_is_public_name(text),
  parley.origin_allowed(text[], text) TO parley_app, parley_auth;

-- Managing chatbots is admin work: parley.require_role('admin') (the route gate is the first line of defence).
DROP FUNCTION IF EXISTS parley.require_chatbot_admin();

-- What naming a chatbot requires (a conversation, a lead, knowledge): a live one of the tenant.
CREATE OR REPLACE FUNCTION parley.require_live_chatbot(p_chatbot_id uuid) RETURNS void
LANGUAGE plpgsql STABLE
AS $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM parley.chatbots b
                  WHERE b.tenant_id = (SELECT parley.current_tenant_id()) AND b.id = p_chatbot_id
                    AND b.deleted_at IS NULL) THEN
    PERFORM parley.raise_error(404, 'not_found', 'No such chatbot.');
  END IF;
END $$;
COMMENT ON FUNCTION parley.require_live_chatbot(uuid) IS
  'Raise 404 not_found unless p_chatbot_id is a chatbot of the current tenant that is not deleted (as the caller sees it under RLS).';

CREATE OR REPLACE FUNCTION parley.check_chatbot_languages(p_config jsonb) RETURNS void
LANGUAGE plpgsql IMMUTABLE
AS $$
DECLARE
  v_code constant text := '^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$';
  v_lang jsonb;
  v_texts record;
  v_starter jsonb;
BEGIN
  IF p_config IS NULL THEN
    RETURN;
  END IF;
  IF p_config ? 'languages' AND p_config->'languages' <> 'null'::jsonb THEN
    IF jsonb_typeof(p_config->'languages') <> 'array' OR jsonb_array_length(p_config->'languages') > 10 THEN
      PERFORM parley.raise_error(422, 'invalid_config', 'languages must be a list of at most 10 language codes.');
    END IF;
    FOR v_lang IN SELECT x FROM jsonb_array_elements(p_config->'languages') x LOOP
      IF jsonb_typeof(v_lang) <> 'string' OR v_lang #>> '{}' !~ v_code OR length(v_lang #>> '{}') > 16 THEN
        PERFORM parley.raise_error(422, 'invalid_config', format('%s is not a language code (like en, de or pt-BR).', v_lang));
      END IF;
    END LOOP;
  END IF;
  IF p_config ? 'texts' AND p_config->'texts' <> 'null'::jsonb THEN
    IF jsonb_typeof(p_config->'texts') <> 'object' THEN
      PERFORM parley.raise_error(422, 'invalid_config', 'texts must map language codes to a greeting and starters.');
    END IF;
    FOR v_texts IN SELECT e.key, e.value FROM jsonb_each(p_config->'texts') e LOOP
      IF v_texts.key !~ v_code OR length(v_texts.key) > 16 OR jsonb_typeof(v_texts.value) <> 'object' THEN
        PERFORM parley.raise_error(422, 'invalid_config', format('texts.%s: a language code mapping to {"greeting", "starters"}.', left(v_texts.key, 20)));
      END IF;
      IF v_texts.value ? 'greeting' AND v_texts.value->'greeting' <> 'null'::jsonb THEN
        IF jsonb_typeof(v_texts.value->'greeting') <> 'string' OR length(v_texts.value->>'greeting') > 500 THEN
          PERFORM parley.raise_error(422, 'invalid_config', format('texts.%s.greeting: text of at most 500 characters.', v_texts.key));
        END IF;
        PERFORM parley.check_text(v_texts.value->>'greeting', 'invalid_config', format('texts.%s.greeting', v_texts.key));
      END IF;
      IF v_texts.value ? 'starters' AND v_texts.value->'starters' <> 'null'::jsonb THEN
        IF jsonb_typeof(v_texts.value->'starters') <> 'array' OR jsonb_array_length(v_texts.value->'starters') > 10 THEN
          PERFORM parley.raise_error(422, 'invalid_config', format('texts.%s.starters: at most 10 starters.', v_texts.key));
        END IF;
        FOR v_starter IN SELECT x FROM jsonb_array_elements(v_texts.value->'starters') x LOOP
          IF jsonb_typeof(v_starter) <> 'string' OR length(v_starter #>> '{}') > 200 THEN
            PERFORM parley.raise_error(422, 'invalid_config', format('texts.%s.starters: texts of at most 200 characters.', v_texts.key));
          END IF;
          PERFORM parley.check_text(v_starter #>> '{}', 'invalid_config', format('texts.%s.starters', v_texts.key));
        END LOOP;
      END IF;
    END LOOP;
  END IF;
END $$;
COMMENT ON FUNCTION parley.check_chatbot_languages(jsonb) IS
  'Validate a chatbot config''s languages (at most 10 language codes) and texts (per language code: greeting of at most 500 characters, at most 10 starters of at most 200, the text rule on each); 422 invalid_config.';

CREATE OR REPLACE FUNCTION parley.check_chatbot_fields(p_allowed_origins text[], p_config jsonb) RETURNS void
LANGUAGE plpgsql STABLE
AS $$
DECLARE
  v_origin text;
  v_allow boolean;
  v_label text;
  v_url text;
BEGIN
  IF p_config IS NOT NULL AND jsonb_typeof(p_config) <> 'object' THEN
    PERFORM parley.raise_error(422, 'invalid_config', 'config must be a JSON object.');
  END IF;
  IF p_config IS NOT NULL AND octet_length(p_config::text) > 65536 THEN
    PERFORM parley.raise_error(422, 'invalid_config', 'config is larger than 64 KiB.');
  END IF;
  PERFORM parley.check_chatbot_languages(p_config);
  FOREACH v_origin IN ARRAY coalesce(p_allowed_origins, '{}') LOOP
    IF v_origin IS NULL OR v_origin !~ '^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?$' THEN
      PERFORM parley.raise_error(422, 'invalid_origin',
        format('%s is not an origin (scheme://host[:port], no path).', coalesce(v_origin, 'null')));
    END IF;
  END LOOP;
  -- The credit line's override, read as the widget reads it (sql/96_branding.sql: a blank one
  -- inherits; one check; 402 below like hiding it).
  v_label := parley.branding_value(p_config #>> '{branding,powered_by_label}');
  v_url := parley.branding_value(p_config #>> '{branding,powered_by_url}');
  PERFORM parley.check_branding(v_label, v_url);
  IF p_config #> '{branding,hide_powered_by}' = 'true'::jsonb OR coalesce(v_label, v_url) IS NOT NULL THEN
    SELECT l.allow_hide_branding INTO v_allow FROM parley.effective_limits(parley.current_tenant_id()) l;
    IF NOT coalesce(v_allow, false) THEN
      PERFORM parley.raise_error(402, 'plan_limit', 'Your plan does not allow hiding the Parley branding.');
    END IF;
  END IF;
END $$;
COMMENT ON FUNCTION parley.check_chatbot_fields(text[], jsonb) IS
  'Validate allowed origins and config of a chatbot (422), and the plan''s allow_hide_branding (402).';

CREATE OR REPLACE FUNCTION parley.create_chatbot(p_name text, p_allowed_origins text[] DEFAULT '{}',
                                                 p_config jsonb DEFAULT '{}')
RETURNS parley.chatbots
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
  v_tenant uuid := parley.current_tenant_id();
  v_limit int;
  v_used bigint;
  v_row parley.chatbots;
BEGIN
  PERFORM parley.require_role('admin');
  PERFORM parley.check_chatbot_fields(p_allowed_origins, p_config);
  SELECT l.max_chatbots INTO v_limit FROM parley.effective_limits(v_tenant) l;
  -- Two admins creating the last allowed chatbot at once: the second counts after the first commits.
  PERFORM pg_advisory_xact_lock(7261005, hashtext(v_tenant::text));
  SELECT count(*) INTO v_used FROM parley.chatbots c WHERE c.tenant_id = v_tenant AND c.deleted_at IS NULL;
  IF parley.limit_reached(v_limit, v_used) THEN
    PERFORM parley.raise_error(402, 'plan_limit', format('Your plan allows %s chatbots.', v_limit));
  END IF;
  INSERT INTO parley.chatbots (tenant_id, name, allowed_origins, config)
  VALUES (v_tenant, btrim(p_name), coalesce(p_allowed_origins, '{}'), coalesce(p_config, '{}'))
  RETURNING * INTO v_row;
  PERFORM parley.write_audit('chatbot.create', 'chatbot', v_row.id::text, jsonb_build_object('name', v_row.name));
  RETURN v_row;
END $$;
COMMENT ON FUNCTION parley.create_chatbot(text, text[], jsonb) IS
  'Admin: create a chatbot with a fresh public key; 402 plan_limit at max_chatbots (live chatbots), 402 when hiding branding is not allowed, 422 on a bad origin or config.';

CREATE OR REPLACE FUNCTION parley.update_chatbot(p_chatbot_id uuid, p_name text DEFAULT NULL,
                                                 p_allowed_origins text[] DEFAULT NULL, p_config jsonb DEFAULT NULL)
RETURNS parley.chatbots
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
  v_row parley.chatbots;
  v_config jsonb;
BEGIN
  PERFORM parley.require_role('admin');
  SELECT * INTO v_row FROM parley.chatbots c
   WHERE c.tenant_id = parley.current_tenant_id() AND c.id = p_chatbot_id AND c.deleted_at IS NULL
   FOR UPDATE;
  IF NOT FOUND THEN
    PERFORM parley.raise_error(404, 'not_found', 'No such chatbot.');
  END IF;
  -- Top-level merge: keys in p_config replace the stored ones, a null value removes a key,
  -- every other key (including ones this version does not know) is kept.
  v_config := v_row.config;
  IF p_config IS NOT NULL THEN
    PERFORM parley.check_chatbot_fields(NULL, p_config);
    v_config := (v_config || p_config)
                - coalesce((SELECT array_agg(e.key) FROM jsonb_each(p_config) e WHERE e.value = 'null'::jsonb), '{}');
    PERFORM parley.check_chatbot_fields(NULL, v_config);
  END IF;
  PERFORM parley.check_chatbot_fields(p_allowed_origins, NULL);
  UPDATE parley.chatbots c
     SET name = coalesce(btrim(p_name), c.name),
         allowed_origins = coalesce(p_allowed_origins, c.allowed_origins),
         config = v_config,
         updated_at = now()
   WHERE c.tenant_id = v_row.tenant_id AND c.id = v_row.id
  RETURNING * INTO v_row;
  PERFORM parley.write_audit('chatbot.update', 'chatbot', v_row.id::text, '{}');
  RETURN v_row;
END $$;
COMMENT ON FUNCTION parley.update_chatbot(uuid, text, text[], jsonb) IS
  'Admin: change name, allowed origins and/or config of a live chatbot. Config is merged at the top level (null removes a key; unknown keys survive). 404 when missing or deleted.';

CREATE OR REPLACE FUNCTION parley.rotate_chatbot_key(p_chatbot_id uuid)
RETURNS parley.chatbots
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
  v_row parley.chatbots;
BEGIN
  PERFORM parley.require_role('admin');
  UPDATE parley.chatbots c
     SET public_key = 'pk_' || replace(gen_random_uuid()::text, '-', '') || replace(gen_random_uuid()::text, '-', ''),
         updated_at = now()
   WHERE c.tenant_id = parley.current_tenant_id() AND c.id = p_chatbot_id AND c.deleted_at IS NULL
  RETURNING * INTO v_row;
  IF NOT FOUND THEN
    PERFORM parley.raise_error(404, 'not_found', 'No such chatbot.');
  END IF;
  PERFORM parley.write_audit('chatbot.rotate_key', 'chatbot', v_row.id::text, '{}');
  RETURN v_row;
END $$;
COMMENT ON FUNCTION parley.rotate_chatbot_key(uuid) IS
  'Admin: give a chatbot a new public key (the old embed code stops working).';

CREATE OR REPLACE FUNCTION parley.delete_chatbot(p_chatbot_id uuid)
RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
  PERFORM parley.require_role('admin');
  -- Soft delete: conversations and leads keep pointing at it; the widget key stops working.
  UPDATE parley.chatbots c SET deleted_at = now(), updated_at = now()
   WHERE c.tenant_id = parley.current_tenant_id() AND c.id = p_chatbot_id AND c.deleted_at IS NULL;
  IF NOT FOUND THEN
    PERFORM parley.raise_error(404, 'not_found', 'No such chatbot.');
  END IF;
  PERFORM parley.write_audit('chatbot.delete', 'chatbot', p_chatbot_id::text, '{}');
END $$;
COMMENT ON FUNCTION parley.delete_chatbot(uuid) IS
  'Admin: soft-delete a chatbot (deleted_at); its widget key stops working and it no longer counts against max_chatbots.';

-- Owners and EXECUTE grants of the functions above (parley.secure_functions, 05_access.sql).
SELECT parley.secure_functions('parley_auth', '{parley_app}', 'parley.widget_chatbot(text)');
SELECT parley.secure_functions(NULL, '{parley_app}',
  'parley.check_chatbot_languages(jsonb)', 'parley.check_chatbot_fields(text[], jsonb)',
  'parley.create_chatbot(text, text[], jsonb)', 'parley.update_chatbot(uuid, text, text[], jsonb)',
  'parley.rotate_chatbot_key(uuid)', 'parley.delete_chatbot(uuid)');
