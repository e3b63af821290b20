-- The actions registry: the one list of what can be done to a conversation (issue 12 §4).
-- Each action says who may do it (roles; API keys act as admin), in which conversation states
-- it is offered, its input (a JSON Schema: the limits are read from the functions that enforce
-- them), the SQL function that does it, and the surfaces that show it. Every surface renders
-- from here: the REST routes GET/POST /api/conversations/{id}/actions[/{key}], the console's
-- conversation buttons, the Telegram inline keyboard (event_delivery_payloads carries
-- channel_keyboard) and slash commands (setMyCommands), and the widget's visitor buttons
-- (the session's config.actions). perform_action is the one dispatcher: it checks the
-- catalog's rules, then calls the function, which keeps its own checks for direct callers.
--
-- The catalog is seeded here (re-applied on every migrate; migration 0033 has the tables).
-- Decisions: "start new" (new) is the widget's: it forgets the conversation and the visitor's
-- next message starts one (start_conversation, on the socket), so a page view never starts a
-- conversation; perform_action refuses it with 409. Asking for a person (human) and the
-- end-of-chat rating (rate) are conversation actions of the visitor; thumbs on one bot reply
-- are about a message, not the conversation, and stay out. A reply is a message, not an action.

GRANT SELECT ON parley.conversation_action_catalog, parley.conversation_action_labels
  TO parley_app, parley_jobs, parley_analyst;

INSERT INTO parley.conversation_action_catalog AS a
       (key, position, roles, states, input, function, args, surfaces, needs_person, assignee_only)
SELECT v.key, v.position, v.roles, v.states, v.input, v.function, v.args, v.surfaces, v.needs_person, v.assignee_only
  FROM (VALUES
  ('claim', 1, '{agent,admin,owner}'::text[], '{bot,waiting_human}'::text[],
   '{"type": "object", "properties": {}, "additionalProperties": false}'::jsonb,
   'parley.transition_conversation(uuid,text,uuid)', '{}'::text[],
   '{telegram_keyboard,telegram_command,console,api}'::text[], true, false),
  ('release', 2, '{agent,admin,owner}', '{waiting_human,human}',
   '{"type": "object", "properties": {}, "additionalProperties": false}',
   'parley.transition_conversation(uuid,text,uuid)', '{}',
   '{telegram_keyboard,telegram_command,console,api}', false, true),
  ('close', 3, '{agent,admin,owner}', '{bot,waiting_human,human}',
   '{"type": "object", "properties": {}, "additionalProperties": false}',
   'parley.transition_conversation(uuid,text,uuid)', '{}',
   '{telegram_keyboard,telegram_command,console,api}', false, false),
  ('reopen', 4, '{agent,admin,owner}', '{closed}',
   '{"type": "object", "properties": {}, "additionalProperties": false}',
   'parley.transition_conversation(uuid,text,uuid)', '{}',
   '{telegram_keyboard,telegram_command,console,api}', false, false),
  ('assign', 5, '{agent,admin,owner}', '{bot,waiting_human,human}',
   '{"type": "object", "required": ["user_id"], "additionalProperties": false,
     "properties": {"user_id": {"type": "string", "format": "uuid", "description": "a member''s user id"}}}',
   'parley.transition_conversation(uuid,text,uuid)', '{user_id}',
   '{console,api}', false, false),
  ('note', 6, '{agent,admin,owner}', '{bot,waiting_human,human,closed}',
   jsonb_build_object('type', 'object', 'required', jsonb_build_array('body'), 'additionalProperties', false,
     'properties', jsonb_build_object(
       'body', jsonb_build_object('type', 'string', 'minLength', 1, 'maxLength', parley.message_body_max('note'),
                                  'x-text', 'text', 'description', 'the note, never shown to the visitor'),
       'client_id', jsonb_build_object('type', 'string', 'minLength', 1, 'maxLength', 100,
                                       'description', 'idempotency key'))),
   'parley.add_note(uuid,text,text)', '{body,client_id}',
   '{telegram_command,console,api}', false, false),
  ('codename', 7, '{agent,admin,owner}', '{bot,waiting_human,human,closed}',
   jsonb_build_object('type', 'object', 'required', jsonb_build_array('codename'), 'additionalProperties', false,
     'properties', jsonb_build_object(
       'codename', jsonb_build_object('type', 'string', 'maxLength', parley.codename_max(), 'x-text', 'line',
                                      'description', 'how agents call the visitor; empty removes it'))),
   'parley.set_codename(uuid,text)', '{codename}',
   '{telegram_command,console,api}', false, false),
  ('human', 8, '{visitor}', '{bot}',
   '{"type": "object", "properties": {}, "additionalProperties": false}',
   'parley.transition_conversation(uuid,text,uuid)', '{}',
   '{widget}', false, false),
  ('rate', 9, '{visitor}', '{closed}',
   '{"type": "object", "required": ["score"], "additionalProperties": false,
     "properties": {"score": {"type": "integer", "minimum": 1, "maximum": 5},
                    "comment": {"type": "string", "maxLength": 2000}}}',
   'parley.rate_conversation(uuid,integer,text)', '{score,comment}',
   '{widget}', false, false),
  ('new', 10, '{visitor}', '{bot,waiting_human,human,closed}',
   '{"type": "object", "properties": {}, "additionalProperties": false}',
   NULL, '{}',
   '{widget}', false, false)
  ) v(key, position, roles, states, input, function, args, surfaces, needs_person, assignee_only)
ON CONFLICT (key) DO UPDATE
   SET position = EXCLUDED.position, roles = EXCLUDED.roles, states = EXCLUDED.states, input = EXCLUDED.input,
       function = EXCLUDED.function, args = EXCLUDED.args, surfaces = EXCLUDED.surfaces,
       needs_person = EXCLUDED.needs_person, assignee_only = EXCLUDED.assignee_only;

-- Labels in the five widget languages, and in English what is said when it is done.
INSERT INTO parley.conversation_action_labels AS l (action, locale, label, done)
SELECT v.action, t.locale, t.label, CASE WHEN t.locale = 'en' THEN v.done END
  FROM (VALUES
  ('claim', 'Claimed.', '{"en": "Claim", "es": "Tomar", "fr": "Prendre en charge", "de": "Übernehmen", "tr": "Üstlen"}'::jsonb),
  ('release', 'Released.', '{"en": "Release to bot", "es": "Devolver al bot", "fr": "Rendre au bot", "de": "An den Bot zurückgeben", "tr": "Bota devret"}'),
  ('close', 'Closed.', '{"en": "Close", "es": "Cerrar", "fr": "Fermer", "de": "Schließen", "tr": "Kapat"}'),
  ('reopen', 'Reopened.', '{"en": "Reopen", "es": "Reabrir", "fr": "Rouvrir", "de": "Wieder öffnen", "tr": "Yeniden aç"}'),
  ('assign', 'Assigned.', '{"en": "Assign", "es": "Asignar", "fr": "Attribuer", "de": "Zuweisen", "tr": "Ata"}'),
  ('note', 'Noted.', '{"en": "Add private note", "es": "Añadir nota privada", "fr": "Ajouter une note privée", "de": "Private Notiz hinzufügen", "tr": "Özel not ekle"}'),
  ('codename', 'Codename set.', '{"en": "Set codename", "es": "Poner nombre en clave", "fr": "Définir un nom de code", "de": "Codenamen setzen", "tr": "Kod adı belirle"}'),
  ('human', 'Asked for a person.', '{"en": "Talk to a human", "es": "Hablar con una persona", "fr": "Parler à une personne", "de": "Mit einem Menschen sprechen", "tr": "Bir temsilciyle görüşün"}'),
  ('rate', 'Thanks for rating.', '{"en": "How was this conversation?", "es": "¿Qué tal fue esta conversación?", "fr": "Comment s’est passée cette conversation ?", "de": "Wie war dieses Gespräch?", "tr": "Bu görüşme nasıldı?"}'),
  ('new', 'New conversation.', '{"en": "New conversation", "es": "Nueva conversación", "fr": "Nouvelle conversation", "de": "Neue Unterhaltung", "tr": "Yeni konuşma"}')
  ) v(action, done, labels)
 CROSS JOIN LATERAL jsonb_each_text(v.labels) t(locale, label)
ON CONFLICT (action, locale) DO UPDATE SET label = EXCLUDED.label, done = EXCLUDED.done;

------------------------------------------------------------------------------------------
-- Reading the catalog

CREATE OR REPLACE FUNCTION parley.action_label(p_key text, p_locale text) RETURNS text
LANGUAGE sql STABLE
AS $$
  SELECT coalesce(
    (SELECT l.label FROM parley.conversation_action_labels l
      WHERE l.action = p_key AND l.locale = parley.locale_language(p_locale)),
    (SELECT l.label FROM parley.conversation_action_labels l WHERE l.action = p_key AND l.locale = 'en'),
    p_key)
$$;
COMMENT ON FUNCTION parley.action_label(text, text) IS
  'An action''s label in the language of p_locale (de-AT → de), English when that language has none.';

CREATE OR REPLACE FUNCTION parley.action_done(p_key text, p_locale text) RETURNS text
LANGUAGE sql STABLE
AS $$
  SELECT coalesce(
    (SELECT l.done FROM parley.conversation_action_labels l
      WHERE l.action = p_key AND l.locale = parley.locale_language(p_locale)),
    (SELECT l.done FROM parley.conversation_action_labels l WHERE l.action = p_key AND l.locale = 'en'),
    'Done.')
$$;
COMMENT ON FUNCTION parley.action_done(text, text) IS
  'What is said when an action is done (a Telegram button''s answer), in p_locale''s language, else English.';

CREATE OR REPLACE FUNCTION parley.action_catalog(p_surface text DEFAULT NULL, p_locale text DEFAULT 'en')
RETURNS jsonb
LANGUAGE sql STABLE
AS $$
  SELECT coalesce(jsonb_agg(jsonb_build_object(
           'key', a.key, 'label', parley.action_label(a.key, p_locale), 'roles', to_jsonb(a.roles),
           'states', to_jsonb(a.states), 'input', a.input, 'function', a.function, 'args', to_jsonb(a.args),
           'surfaces', to_jsonb(a.surfaces),
           'needs_person', a.needs_person, 'assignee_only', a.assignee_only) ORDER BY a.position), '[]'::jsonb)
    FROM parley.conversation_action_catalog a
   WHERE p_surface IS NULL OR p_surface = ANY (a.surfaces)
$$;
COMMENT ON FUNCTION parley.action_catalog(text, text) IS
  'The actions catalog (all, or those shown on p_surface), in order, labelled in p_locale''s language: [{key, label, roles, states, input (JSON Schema), function, args (the input properties it is called with, in order), surfaces, needs_person, assignee_only}]. What surfaces render their command lists and buttons from.';

CREATE OR REPLACE FUNCTION parley.offered_actions(p_status text, p_assignee uuid, p_surface text, p_role text,
                                                  p_person boolean, p_user uuid, p_locale text)
RETURNS jsonb
LANGUAGE sql STABLE
AS $$
  SELECT coalesce(jsonb_agg(jsonb_build_object('key', a.key, 'label', parley.action_label(a.key, p_locale),
                                               'input', a.input) ORDER BY a.position), '[]'::jsonb)
    FROM parley.conversation_action_catalog a
   WHERE p_status = ANY (a.states) AND p_role = ANY (a.roles)
     AND (p_surface IS NULL OR p_surface = ANY (a.surfaces))
     AND (NOT a.needs_person OR p_person)
     AND (NOT a.assignee_only OR p_assignee IS NULL OR p_user IS NULL OR p_assignee = p_user
          OR parley.role_rank(p_role) >= parley.role_rank('admin'))
$$;
COMMENT ON FUNCTION parley.offered_actions(text, uuid, text, text, boolean, uuid, text) IS
  'The catalog''s rule of what is offered: the actions for a conversation in p_status (assigned to p_assignee) to someone of p_role (a person signed in: p_person, user p_user, NULL when not known) on p_surface (NULL: any), labelled in p_locale: [{key, label, input}] in order. assignee_only actions of an assigned conversation are offered to its assignee and admins (and when the person is not known).';

CREATE OR REPLACE FUNCTION parley.acting_role() RETURNS text
LANGUAGE sql STABLE
AS $$ SELECT CASE WHEN parley.current_actor_kind() = 'visitor' THEN 'visitor' ELSE parley.current_member_role() END $$;
COMMENT ON FUNCTION parley.acting_role() IS
  'The role the actions catalog matches: visitor for a widget transaction, else the member role begin_request resolved (API keys: admin).';

CREATE OR REPLACE FUNCTION parley.conversation_actions(p_conversation_id uuid, p_surface text DEFAULT NULL,
                                                       p_locale text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql STABLE
AS $$
DECLARE
  v_visitor boolean := parley.current_actor_kind() = 'visitor';
  v_row record;
BEGIN
  PERFORM parley.require_own_conversation(p_conversation_id);
  SELECT c.status, c.assignee_id, c.locale, b.config INTO v_row
    FROM parley.conversations c
    LEFT JOIN parley.chatbots b ON b.tenant_id = c.tenant_id AND b.id = c.chatbot_id
   WHERE c.tenant_id = parley.current_tenant_id() AND c.id = p_conversation_id;
  IF NOT FOUND THEN
    PERFORM parley.raise_error(404, 'not_found', 'No such conversation.');
  END IF;
  RETURN parley.offered_actions(
    v_row.status, v_row.assignee_id, p_surface, parley.acting_role(),
    parley.current_user_id() IS NOT NULL, parley.current_user_id(),
    coalesce(p_locale, CASE WHEN v_visitor THEN parley.spoken_language(v_row.config, v_row.locale) ELSE 'en' END));
END $$;
COMMENT ON FUNCTION parley.conversation_actions(uuid, text, text) IS
  'The actions the current member or visitor may take now on this conversation (on p_surface, NULL: any), from the catalog (offered_actions): [{key, label, input}]. Labels in p_locale, else the language the chatbot speaks with the visitor (visitors) or English (members). 404 when not visible, 403 when a visitor names another conversation.';

CREATE OR REPLACE FUNCTION parley.widget_actions(p_config jsonb, p_locale text) RETURNS jsonb
LANGUAGE sql STABLE
AS $$
  SELECT coalesce(jsonb_agg(jsonb_build_object('key', a.key,
                                               'label', parley.action_label(a.key, parley.spoken_language(p_config, p_locale)),
                                               'states', to_jsonb(a.states)) ORDER BY a.position), '[]'::jsonb)
    FROM parley.conversation_action_catalog a
   WHERE 'widget' = ANY (a.surfaces) AND 'visitor' = ANY (a.roles)
$$;
COMMENT ON FUNCTION parley.widget_actions(jsonb, text) IS
  'The widget''s visitor buttons (config.actions of a widget session): [{key, label, states}] of the catalog''s widget actions, labelled in the language the chatbot speaks with this browser (spoken_language). The widget shows each while the conversation''s status is in states (before the first message: as bot).';

CREATE OR REPLACE FUNCTION parley.channel_keyboard(p_event_kind text, p_status text) RETURNS jsonb
LANGUAGE sql STABLE
AS $$
  SELECT CASE WHEN p_event_kind IN ('human_requested', 'claimed', 'assigned', 'released', 'closed', 'reopened')
              THEN parley.offered_actions(p_status, NULL, 'telegram_keyboard', 'agent', true, NULL, 'en') END
$$;
COMMENT ON FUNCTION parley.channel_keyboard(text, text) IS
  'The buttons under a channel post of a conversation event: after a change of state (human_requested, claimed, assigned, released, closed, reopened), the catalog''s telegram_keyboard actions an agent may take in the conversation''s status when the post is built ([{key, label, input}]); NULL for other events (no buttons).';

------------------------------------------------------------------------------------------
-- The dispatcher

CREATE OR REPLACE FUNCTION parley.check_action_input(p_action parley.conversation_action_catalog, p_input jsonb)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
AS $$
DECLARE
  v_key text;
  v_prop jsonb;
  v_value jsonb;
  v_label text := initcap(p_action.key);
BEGIN
  IF p_input IS NULL OR jsonb_typeof(p_input) <> 'object' THEN
    PERFORM parley.raise_error(422, 'invalid_input', format('%s takes a JSON object.', v_label));
  END IF;
  FOR v_key IN SELECT jsonb_array_elements_text(coalesce(p_action.input->'required', '[]')) LOOP
    IF NOT p_input ? v_key THEN
      PERFORM parley.raise_error(422, 'invalid_input', format('%s needs %s.', v_label, v_key));
    END IF;
  END LOOP;
  FOR v_key, v_value IN SELECT e.key, e.value FROM jsonb_each(p_input) e LOOP
    v_prop := p_action.input->'properties'->v_key;
    IF v_prop IS NULL THEN
      PERFORM parley.raise_error(422, 'invalid_input', format('%s takes no %s.', v_label, v_key));
    END IF;
    -- Shapes only: lengths, ranges and the text rule are the called function's (its own codes).
    IF (v_prop->>'type' = 'string' AND jsonb_typeof(v_value) <> 'string')
       OR (v_prop->>'type' = 'integer' AND (jsonb_typeof(v_value) <> 'number' OR v_value::text !~ '^-?[0-9]{1,9}$'))
       OR (v_prop->>'format' = 'uuid' AND (v_value #>> '{}') !~* '^[0-9a-f]{8}-([0-9a-f]{4}-){3}[0-9a-f]{12}$') THEN
      PERFORM parley.raise_error(422, 'invalid_input',
        format('%s: %s must be %s.', v_label, v_key, coalesce(v_prop->>'format', v_prop->>'type')));
    END IF;
  END LOOP;
END $$;
COMMENT ON FUNCTION parley.check_action_input(parley.conversation_action_catalog, jsonb) IS
  'Raise 422 invalid_input unless p_input is an object with the action''s required properties, no others, each of its schema type (string, integer, uuid format). Lengths, ranges and the text rule are left to the function the action calls, so they answer with that rule''s own code (body_too_long, invalid_codename, invalid_rating, not_a_member …).';

CREATE OR REPLACE FUNCTION parley.perform_action(p_conversation_id uuid, p_action text, p_input jsonb DEFAULT '{}',
                                                 p_surface text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
  v_action parley.conversation_action_catalog;
  v_role text := parley.acting_role();
  v_visitor boolean := parley.current_actor_kind() = 'visitor';
  v_conv parley.conversations;
  v_call text;
BEGIN
  SELECT * INTO v_action FROM parley.conversation_action_catalog a
   WHERE a.key = p_action AND (p_surface IS NULL OR p_surface = ANY (a.surfaces));
  IF NOT FOUND THEN
    PERFORM parley.raise_error(404, 'unknown_action', format('There is no action %L here.', left(p_action, 40)));
  END IF;
  IF v_role IS NULL OR NOT v_role = ANY (v_action.roles) THEN
    PERFORM parley.raise_error(403, 'forbidden',
      format('%s is for %s.', parley.action_label(p_action, 'en'), array_to_string(v_action.roles, ', ')));
  END IF;
  IF v_action.needs_person AND parley.current_user_id() IS NULL THEN
    PERFORM parley.raise_error(403, 'forbidden', format('%s needs a signed-in person, not an API key.',
                                                      parley.action_label(p_action, 'en')));
  END IF;
  IF v_action.function IS NULL THEN
    PERFORM parley.raise_error(409, 'surface_action',
      'This is done by the widget: the visitor''s next message starts a new conversation.');
  END IF;
  PERFORM parley.check_action_input(v_action, coalesce(p_input, '{}'));
  v_conv := parley.lock_conversation(p_conversation_id);
  IF NOT v_conv.status = ANY (v_action.states) THEN
    PERFORM parley.raise_error(409, 'invalid_transition',
      format('%s is not possible while the conversation is %s.', parley.action_label(p_action, 'en'),
             replace(v_conv.status, '_', ' ')));
  END IF;
  -- The function and its arguments come from the catalog, which only the owner writes: the
  -- conversation id, the action's key when the function's second parameter is p_action (the
  -- transitions), then each argument: the input's property cast to the type the function declares.
  SELECT format('SELECT 1 FROM %I.%I($1%s%s)', n.nspname, p.proname, CASE WHEN k.keyed THEN ', $3' END,
                (SELECT string_agg(format(', ($2->>%L)::%s', a.name,
                                          format_type(p.proargtypes[a.i + k.keyed::int], NULL)), '' ORDER BY a.i)
                   FROM unnest(v_action.args) WITH ORDINALITY a(name, i)))
    INTO v_call
    FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
   CROSS JOIN LATERAL (SELECT coalesce(p.proargnames[2] = 'p_action', false) AS keyed) k
   WHERE p.oid = to_regprocedure(v_action.function);
  EXECUTE v_call USING p_conversation_id, coalesce(p_input, '{}'), v_action.key;
  SELECT * INTO v_conv FROM parley.conversations c
   WHERE c.tenant_id = v_conv.tenant_id AND c.id = v_conv.id;
  RETURN jsonb_build_object(
    'action', v_action.key,
    'done', parley.action_done(v_action.key, 'en'),
    'status', v_conv.status,
    'conversation', CASE WHEN v_visitor THEN NULL ELSE parley.conversation_json(v_conv) END,
    'actions', parley.conversation_actions(p_conversation_id, p_surface));
END $$;
COMMENT ON FUNCTION parley.perform_action(uuid, text, jsonb, text) IS
  'The one dispatcher of conversation actions (REST, console, Telegram, the widget socket): the catalog''s action p_action (shown on p_surface when given; else 404 unknown_action), checked for the acting role (403), a signed-in person when it needs one (403), its input''s shape (422 invalid_input), the conversation (404; a visitor''s own only, 403) and its state (409 invalid_transition), then its function called with the conversation id (and the action''s key, for a function taking p_action: transition_conversation) and the input''s properties in the catalog''s order (raising its own 4xx: body_too_long, invalid_codename, not_a_member, invalid_rating …). Returns {action, done (what is said when done, English), status, conversation (members: conversation_json), actions (what is offered now, on p_surface)}. The widget''s own action (new) gives 409 surface_action.';

GRANT EXECUTE ON FUNCTION parley.action_label(text, text), parley.action_done(text, text), parley.action_catalog(text, text),
  parley.offered_actions(text, uuid, text, text, boolean, uuid, text), parley.acting_role(),
  parley.conversation_actions(uuid, text, text), parley.widget_actions(jsonb, text),
  parley.channel_keyboard(text, text), parley.check_action_input(parley.conversation_action_catalog, jsonb),
  parley.perform_action(uuid, text, jsonb, text)
  TO parley_app;
GRANT EXECUTE ON FUNCTION parley.action_label(text, text), parley.action_catalog(text, text),
  parley.offered_actions(text, uuid, text, text, boolean, uuid, text), parley.channel_keyboard(text, text)
  TO parley_jobs;
