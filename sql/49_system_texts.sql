-- System message templates: what the assistant and the server say as "system" in a
-- conversation (handoff, "I don't know", limits), per tenant and locale. The shipped texts are
-- parley.system_text_defaults (migration 0029, the five widget languages); a tenant's own rows
-- in parley.system_texts override them. Placeholders {customer_name} (the lead's name),
-- {agent_name} (the assignee's) and {codename} are filled here. Flags: store (kept in the
-- transcript), to_widget (the visitor sees it; false = not posted at all), to_channels (a
-- stored text is posted to the agents' channels), pin (pinned in the channel's topic).

SELECT parley.apply_tenant_policies('parley.system_texts');
GRANT SELECT ON parley.system_text_defaults TO parley_app, parley_jobs, parley_analyst;
GRANT SELECT, INSERT, UPDATE, DELETE ON parley.system_texts TO parley_app;
GRANT SELECT ON parley.system_texts TO parley_jobs;

CREATE OR REPLACE FUNCTION parley.system_texts_per_minute() RETURNS int
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT 6 $$;
COMMENT ON FUNCTION parley.system_texts_per_minute() IS
  'At most this many system texts per conversation per minute; more are dropped (not an error: the visitor''s own message was accepted).';

CREATE OR REPLACE FUNCTION parley.locale_language(p_locale text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT lower(split_part(split_part(coalesce(p_locale, ''), '-', 1), '_', 1)) $$;
COMMENT ON FUNCTION parley.locale_language(text) IS
  'The language of a locale, as the shipped texts are keyed: de-DE, de_AT, DE → de ('''' for NULL).';
GRANT EXECUTE ON FUNCTION parley.locale_language(text) TO parley_app, parley_jobs;

CREATE OR REPLACE FUNCTION parley.system_text(p_kind text, p_locale text, p_conversation_id uuid DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql STABLE
AS $$
DECLARE
  v_locale text;
  v_row record;
  v_customer text;
  v_agent text;
  v_codename text;
BEGIN
  -- The language of the locale asked for ('de-DE' → 'de') when it is shipped, else English.
  v_locale := parley.locale_language(p_locale);
  IF NOT EXISTS (SELECT 1 FROM parley.system_text_defaults d WHERE d.kind = p_kind AND d.locale = v_locale) THEN
    v_locale := 'en';
  END IF;
  SELECT coalesce(t.body, d.body) AS body, coalesce(t.store, d.store) AS store,
         coalesce(t.to_widget, d.to_widget) AS to_widget, coalesce(t.to_channels, d.to_channels) AS to_channels,
         coalesce(t.pin, d.pin) AS pin, t.tenant_id IS NOT NULL AS custom
    INTO v_row
    FROM parley.system_text_defaults d
    LEFT JOIN parley.system_texts t
      ON t.tenant_id = parley.current_tenant_id() AND t.kind = d.kind AND t.locale = d.locale
   WHERE d.kind = p_kind AND d.locale = v_locale;
  IF NOT FOUND THEN
    PERFORM parley.raise_error(404, 'unknown_system_text', format('There is no system text %L.', p_kind));
  END IF;
  IF p_conversation_id IS NOT NULL THEN
    SELECT l.name, u.name, c.codename INTO v_customer, v_agent, v_codename
      FROM parley.conversations c
      LEFT JOIN parley.leads l ON l.tenant_id = c.tenant_id AND l.conversation_id = c.id
      LEFT JOIN parley.users u ON u.id = c.assignee_id
     WHERE c.tenant_id = parley.current_tenant_id() AND c.id = p_conversation_id;
  END IF;
  RETURN jsonb_build_object(
    'kind', p_kind, 'locale', v_locale, 'custom', v_row.custom,
    'body', CASE WHEN p_conversation_id IS NULL THEN v_row.body  -- as written, for editing
                 ELSE replace(replace(replace(v_row.body, '{customer_name}', coalesce(v_customer, '')),
                                      '{agent_name}', coalesce(v_agent, '')),
                              '{codename}', coalesce(v_codename, '')) END,
    'store', v_row.store, 'to_widget', v_row.to_widget, 'to_channels', v_row.to_channels, 'pin', v_row.pin);
END $$;
COMMENT ON FUNCTION parley.system_text(text, text, uuid) IS
  'The current tenant''s system text of this kind in this locale''s language (de-DE → de; its own wording, else the shipped one; a language not shipped falls back to English), placeholders {customer_name}, {agent_name}, {codename} filled from the conversation when one is given (as written otherwise), with its flags: {kind, locale, custom, body, store, to_widget, to_channels, pin}. 404 unknown_system_text.';

DROP FUNCTION IF EXISTS parley.post_system_text(uuid, text, text, jsonb);
CREATE OR REPLACE FUNCTION parley.post_system_text(
  p_conversation_id uuid, p_kind text, p_locale text, p_meta jsonb DEFAULT '{}', p_client_id text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
  v_text jsonb := parley.system_text(p_kind, p_locale, p_conversation_id);
  v_message parley.messages;
BEGIN
  IF NOT (v_text->>'to_widget')::boolean THEN
    RETURN v_text || '{"posted": false}';
  END IF;
  BEGIN
    PERFORM parley.hit_rate_limit('system_text', p_conversation_id::text, parley.system_texts_per_minute());
  EXCEPTION WHEN SQLSTATE 'PT429' THEN
    RETURN v_text || '{"posted": false, "limited": true}';
  END;
  IF NOT (v_text->>'store')::boolean THEN
    RETURN v_text || '{"posted": false}';  -- the caller shows it once, unstored
  END IF;
  SELECT * INTO v_message FROM parley.post_message(
    p_conversation_id, 'system', v_text->>'body', p_client_id,
    jsonb_build_object('notice', p_kind, 'to_channels', (v_text->>'to_channels')::boolean,
                       'pin', (v_text->>'pin')::boolean) || coalesce(p_meta, '{}'));
  RETURN v_text || jsonb_build_object('posted', true, 'message_id', v_message.id);
END $$;
COMMENT ON FUNCTION parley.post_system_text(uuid, text, text, jsonb, text) IS
  'Say a system text in a conversation as its flags ask: stored through post_message (meta: notice = kind, to_channels, pin; p_meta adds to or overrides them; idempotent on p_client_id as post_message is: a bot turn''s notice is stored under its question''s key, bot:<question id>) when store and to_widget; nothing when to_widget is false; at most system_texts_per_minute() per conversation (then {posted: false, limited: true}). Returns system_text''s object with posted (and message_id); an unstored text is for the caller to show once.';

CREATE OR REPLACE FUNCTION parley.list_system_texts(p_locale text) RETURNS jsonb
LANGUAGE sql STABLE
AS $$
  SELECT coalesce(jsonb_agg(parley.system_text(d.kind, d.locale) ORDER BY d.kind), '[]'::jsonb)
    FROM parley.system_text_defaults d WHERE d.locale = p_locale
$$;
COMMENT ON FUNCTION parley.list_system_texts(text) IS
  'Every system text of the current tenant in one shipped locale (placeholders unfilled), each marked custom when the tenant changed it.';

CREATE OR REPLACE FUNCTION parley.put_system_text(
  p_kind text, p_locale text, p_body text, p_store boolean, p_to_widget boolean, p_to_channels boolean, p_pin boolean)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
  v_before jsonb;
BEGIN
  PERFORM parley.require_role('admin');
  IF NOT EXISTS (SELECT 1 FROM parley.system_text_defaults d WHERE d.kind = p_kind AND d.locale = p_locale) THEN
    PERFORM parley.raise_error(404, 'unknown_system_text', 'There is no such system text or locale.');
  END IF;
  IF p_body IS NULL OR length(btrim(p_body)) = 0 OR length(p_body) > 2000 THEN
    PERFORM parley.raise_error(422, 'invalid_body', 'Write 1 to 2,000 characters.');
  END IF;
  PERFORM parley.check_text(p_body, 'invalid_body', 'The text');
  v_before := parley.system_text(p_kind, p_locale);
  INSERT INTO parley.system_texts AS t (tenant_id, kind, locale, body, store, to_widget, to_channels, pin)
  VALUES (parley.current_tenant_id(), p_kind, p_locale, p_body, p_store, p_to_widget, p_to_channels, p_pin)
  ON CONFLICT (tenant_id, kind, locale) DO UPDATE
    SET body = EXCLUDED.body, store = EXCLUDED.store, to_widget = EXCLUDED.to_widget,
        to_channels = EXCLUDED.to_channels, pin = EXCLUDED.pin, updated_at = now();
  PERFORM parley.write_audit('system_text.update', 'system_text', p_kind || ':' || p_locale,
                             jsonb_build_object('before', v_before - 'custom', 'after', parley.system_text(p_kind, p_locale) - 'custom'));
  RETURN parley.system_text(p_kind, p_locale);
END $$;
COMMENT ON FUNCTION parley.put_system_text(text, text, text, boolean, boolean, boolean, boolean) IS
  'Set the current tenant''s wording and flags of one system text in one shipped locale (admin+; the text rule applies; 1-2,000 characters). Audited with before and after.';

CREATE OR REPLACE FUNCTION parley.reset_system_text(p_kind text, p_locale text) RETURNS jsonb
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
  PERFORM parley.require_role('admin');
  DELETE FROM parley.system_texts t
   WHERE t.tenant_id = parley.current_tenant_id() AND t.kind = p_kind AND t.locale = p_locale;
  IF FOUND THEN
    PERFORM parley.write_audit('system_text.reset', 'system_text', p_kind || ':' || p_locale, '{}');
  END IF;
  RETURN parley.system_text(p_kind, p_locale);
END $$;
COMMENT ON FUNCTION parley.reset_system_text(text, text) IS
  'Go back to the shipped wording and flags of one system text in one locale (admin+); returns it.';
