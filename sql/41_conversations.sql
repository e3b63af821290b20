-- Conversations: the state machine and its helpers (reading, search and the lists: 41_inbox.sql). Messages are in
-- 44_messages.sql, events and the NOTIFY contract (ordering, lock order) in 45_events.sql,
-- leads in 46_leads.sql.
--
-- State machine (every other transition raises 409 invalid_transition):
--   bot ──request_human──▶ waiting_human ──claim / assign / agent reply──▶ human
--   bot ──claim / assign / agent reply──▶ human
--   waiting_human, human ──release──▶ bot
--   bot, waiting_human, human ──close (or idle close)──▶ closed
--   closed ──reopen──▶ human (assigned to the reopening agent) or bot (anyone else)
--   closed ──visitor message──▶ bot (a returning visitor continues the same conversation;
--                                    subject to max_open_conversations)
--
-- Every transition locks the conversation row first (lock_conversation) and writes its events
-- through parley.emit_event; the lock order all writers keep is in 45_events.sql. The ones a
-- member or the visitor asks for by name (human, claim, assign, release, close, reopen) are rows
-- of parley.conversation_transitions, applied by transition_conversation; an agent's reply and a
-- returning visitor move the state in post_message (44_messages.sql), idle close here.
--
-- Bot handoff after misses: bot_misses counts the bot's ungrounded answers in a row (a bot
-- message with meta.grounded = false; store_message, 44_messages.sql). A grounded answer and
-- every transition a person takes part in (request, claim, assign, release, reopen, an agent's
-- reply, a returning visitor) start it again at 0; at the chatbot's handoff.miss_threshold the
-- conversation goes to waiting_human in the same transaction as the answer.

SELECT parley.apply_tenant_policies('parley.conversations');

-- Visitors: a widget transaction (actor kind 'visitor', actor id = its conversation) sees only
-- its own conversation, that conversation's messages without notes, and its lead, whatever
-- SQL runs in it. RESTRICTIVE, so these narrow the tenant policies rather than widen them.
SELECT parley.ensure_policy('parley.conversations', 'select_visitor_own', $$AS RESTRICTIVE FOR SELECT
  USING ((SELECT parley.current_actor_kind()) <> 'visitor' OR id::text = (SELECT parley.current_actor_id()))$$);

GRANT SELECT, INSERT,
      UPDATE (status, assignee_id, last_activity_at, closed_at, bot_misses, last_message_id, codename)
   ON parley.conversations TO parley_app;
GRANT SELECT, UPDATE, DELETE ON parley.conversations TO parley_jobs;
-- Cross-tenant readers owned by parley_auth (search within the caller's tenant, idle sweep).
GRANT SELECT ON parley.conversations TO parley_auth;

------------------------------------------------------------------------------------------
-- Helpers

CREATE OR REPLACE FUNCTION parley.require_staff() RETURNS void
LANGUAGE plpgsql STABLE
AS $$
BEGIN
  IF parley.current_actor_kind() = 'visitor' OR parley.actor_role_rank() < parley.role_rank('agent') THEN
    PERFORM parley.raise_error(403, 'forbidden', 'Only members of the workspace can do this.');
  END IF;
END $$;
COMMENT ON FUNCTION parley.require_staff() IS 'Raise 403 for visitors (and anyone below the agent role).';

-- A visitor transaction acts on, and reads, only the conversation in its widget token (actor_id);
-- every function that takes a conversation checks this first (RLS alone would answer 404).
CREATE OR REPLACE FUNCTION parley.require_own_conversation(p_conversation_id uuid) RETURNS void
LANGUAGE plpgsql STABLE
AS $$
BEGIN
  IF parley.current_actor_kind() = 'visitor' AND parley.current_actor_id() IS DISTINCT FROM p_conversation_id::text THEN
    PERFORM parley.raise_error(403, 'forbidden', 'Visitors can only act on their own conversation.');
  END IF;
END $$;
COMMENT ON FUNCTION parley.require_own_conversation(uuid) IS
  'Raise 403 when a visitor transaction names a conversation other than its own (members, API keys, the server and jobs: no check here).';

CREATE OR REPLACE FUNCTION parley.lock_conversation(p_conversation_id uuid)
RETURNS parley.conversations
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
  v_conv parley.conversations;
BEGIN
  PERFORM parley.require_own_conversation(p_conversation_id);
  SELECT * INTO v_conv FROM parley.conversations c
   WHERE c.tenant_id = parley.current_tenant_id() AND c.id = p_conversation_id
   FOR UPDATE;
  IF NOT FOUND THEN
    PERFORM parley.raise_error(404, 'not_found', 'No such conversation.');
  END IF;
  RETURN v_conv;
END $$;
COMMENT ON FUNCTION parley.lock_conversation(uuid) IS
  'Lock a conversation of the current tenant FOR UPDATE (held to commit: serialises its writers) and return it; 404 when not visible, 403 when a visitor names another conversation.';

DROP FUNCTION IF EXISTS parley.move_conversation(parley.conversations, text, uuid, text, jsonb);

-- The JSON builders are plain expressions with no sub-SELECT, so Postgres inlines them into
-- the calling query (see 44_messages.sql); the name lookup they need is a small plpgsql
-- function, which returns at once when there is nothing to look up.
CREATE OR REPLACE FUNCTION parley.user_display_name(p_user_id uuid) RETURNS text
LANGUAGE plpgsql STABLE
AS $$
DECLARE
  v_name text;
BEGIN
  IF p_user_id IS NULL THEN
    RETURN NULL;
  END IF;
  SELECT nullif(u.name, '') INTO v_name FROM parley.users u WHERE u.id = p_user_id;
  RETURN v_name;
END $$;
COMMENT ON FUNCTION parley.user_display_name(uuid) IS
  'A user''s name as colleagues see it (NULL when empty, unknown, or not visible under RLS).';
CREATE OR REPLACE FUNCTION parley.conversation_json(p_conv parley.conversations)
RETURNS jsonb
LANGUAGE sql STABLE
AS $$
  SELECT jsonb_build_object(
           'id', p_conv.id, 'chatbot_id', p_conv.chatbot_id, 'status', p_conv.status,
           'assignee_id', p_conv.assignee_id,
           'assignee_name', parley.user_display_name(p_conv.assignee_id),
           'visitor_id', p_conv.visitor_id, 'page_url', p_conv.page_url, 'referrer', p_conv.referrer,
           'locale', p_conv.locale, 'country', p_conv.country, 'created_at', p_conv.created_at,
           'last_activity_at', p_conv.last_activity_at, 'closed_at', p_conv.closed_at,
           'bot_misses', p_conv.bot_misses, 'last_message_id', p_conv.last_message_id,
           'codename', p_conv.codename)
$$;
COMMENT ON FUNCTION parley.conversation_json(parley.conversations) IS
  'Conversation summary for agents and the relay (no ip or user agent). Inlined into the caller (no sub-SELECT).';

CREATE OR REPLACE FUNCTION parley.check_open_conversation_limit() RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = ''
AS $$
DECLARE
  v_tenant uuid := parley.current_tenant_id();
  v_limit int;
  v_open bigint;
BEGIN
  SELECT l.max_open_conversations INTO v_limit FROM parley.effective_limits(v_tenant) l;
  IF coalesce(v_limit, 0) = 0 THEN
    RETURN;
  END IF;
  -- Starts and reopens of one tenant count one after another (exact at the edge).
  PERFORM pg_advisory_xact_lock(7261006, hashtext(v_tenant::text));
  SELECT count(*) INTO v_open FROM parley.conversations c WHERE c.tenant_id = v_tenant AND c.status <> 'closed';
  IF parley.limit_reached(v_limit, v_open) THEN
    PERFORM parley.raise_error(402, 'plan_limit',
      format('This workspace already has %s open conversations, the most its plan allows.', v_limit));
  END IF;
END $$;
COMMENT ON FUNCTION parley.check_open_conversation_limit() IS
  'Raise 402 plan_limit when the current tenant already has max_open_conversations conversations not closed (0 = unlimited). Owned by parley_auth and filtered by the current tenant explicitly: a visitor transaction sees only its own conversation, yet must be counted against the whole tenant.';
GRANT SELECT ON parley.conversations, parley.tenant_limits TO parley_auth;

CREATE OR REPLACE FUNCTION parley.clean_text(p_value text, p_max int) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT nullif(left(btrim(p_value), p_max), '') $$;
COMMENT ON FUNCTION parley.clean_text(text, int) IS 'Trim, cut to p_max characters, and turn empty into NULL (visitor-supplied metadata).';
------------------------------------------------------------------------------------------
-- Starting and writing

-- The writing half of start_conversation (every check, the row, usage; no event), so that a
-- visitor's first message can be stored in the same transaction before any event is written
-- (parley.start_with_message; lock order: nothing is awaited after the first event).
CREATE OR REPLACE FUNCTION parley.open_conversation(p_chatbot_id uuid, p_visitor_id uuid, p_page_url text,
  p_referrer text, p_user_agent text, p_locale text, p_ip inet, p_country text)
RETURNS parley.conversations
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
  v_tenant uuid := parley.current_tenant_id();
  v_conv parley.conversations;
  v_id uuid;
BEGIN
  PERFORM parley.require_live_chatbot(p_chatbot_id);
  PERFORM parley.check_open_conversation_limit();
  PERFORM parley.check_allowance('conversations');  -- a hard cap on plans without overage
  IF parley.current_actor_kind() = 'visitor' THEN
    PERFORM parley.check_visitor_start(p_chatbot_id, p_ip);
  END IF;
  v_id := gen_random_uuid();
  -- A visitor starting a conversation has no conversation id yet; from here on it is this
  -- one, so the visitor policies let it see (RETURNING) what it just created and nothing else.
  IF parley.current_actor_kind() = 'visitor' AND parley.current_actor_id() IS NULL THEN
    PERFORM set_config('app.actor_id', v_id::text, true);
  END IF;
  INSERT INTO parley.conversations (tenant_id, id, chatbot_id, visitor_id, page_url, referrer, user_agent, locale, country, ip)
  VALUES (v_tenant, v_id, p_chatbot_id, coalesce(p_visitor_id, gen_random_uuid()),
          parley.clean_text(p_page_url, 2048), parley.clean_text(p_referrer, 2048),
          parley.clean_text(p_user_agent, 512), parley.clean_text(p_locale, 35),
          CASE WHEN p_country ~ '^[A-Za-z]{2}$' THEN upper(p_country) END, p_ip)
  RETURNING * INTO v_conv;
  PERFORM parley.bump_usage('conversations', 1);
  RETURN v_conv;
END $$;
COMMENT ON FUNCTION parley.open_conversation(uuid, uuid, text, text, text, text, inet, text) IS
  'The writing half of start_conversation: every check and limit, the row, usage ''conversations''; no event (the caller writes conversation_started in the same transaction). Only start_conversation and start_with_message call it.';

CREATE OR REPLACE FUNCTION parley.start_conversation(
  p_chatbot_id uuid, p_visitor_id uuid, p_page_url text DEFAULT NULL, p_referrer text DEFAULT NULL,
  p_user_agent text DEFAULT NULL, p_locale text DEFAULT NULL, p_ip inet DEFAULT NULL, p_country text DEFAULT NULL)
RETURNS parley.conversations
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
  v_conv parley.conversations := parley.open_conversation(p_chatbot_id, p_visitor_id, p_page_url, p_referrer,
                                                          p_user_agent, p_locale, p_ip, p_country);
BEGIN
  PERFORM parley.emit_event('conversation_started', v_conv.id, NULL, jsonb_build_object('chatbot_id', p_chatbot_id));
  RETURN v_conv;
END $$;
COMMENT ON FUNCTION parley.start_conversation(uuid, uuid, text, text, text, text, inet, text) IS
  'Start a conversation (status bot) with a live chatbot of the current tenant. Visitor metadata is trimmed/cut, never refused. 402 plan_limit at max_open_conversations; a visitor (the widget, when the visitor first speaks) is also held to check_visitor_start (429 per address and per chatbot). Counts usage ''conversations''; event conversation_started + NOTIFY.';
CREATE OR REPLACE FUNCTION parley.visitor_conversations(p_chatbot_id uuid, p_visitor_id uuid)
RETURNS TABLE (id uuid, status text, created_at timestamptz, last_activity_at timestamptz, preview text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = ''
AS $$
  SELECT c.id, c.status, c.created_at, c.last_activity_at,
         (SELECT left(m.body, 80) FROM parley.messages m
           WHERE m.tenant_id = c.tenant_id AND m.conversation_id = c.id AND m.author = 'visitor'
           ORDER BY m.id LIMIT 1)
    FROM parley.conversations c
   WHERE c.tenant_id = parley.current_tenant_id() AND c.chatbot_id = p_chatbot_id AND c.visitor_id = p_visitor_id
     AND parley.current_actor_kind() = 'visitor' AND p_visitor_id IS NOT NULL
   ORDER BY c.last_activity_at DESC
   LIMIT 20
$$;
COMMENT ON FUNCTION parley.visitor_conversations(uuid, uuid) IS
  'The widget''s list of a visitor''s conversations with a chatbot (newest activity first, at most 20; preview = the first visitor message, cut to 80 characters). Visitor transactions only (empty otherwise); the visitor id comes from the signed visitor token. Owned by parley_auth: under RLS a visitor sees only its current conversation.';

-- Which of a visitor's conversations already holds the message `p_client_id` (the visitor's own
-- id for it): a first message sent again from another tab, or resent on a new socket before the
-- first one's conversation frame arrived, goes there instead of starting a second conversation.
CREATE OR REPLACE FUNCTION parley.visitor_conversation_with(p_chatbot_id uuid, p_visitor_id uuid, p_client_id text)
RETURNS uuid
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = ''
AS $$
  SELECT c.id FROM parley.conversations c
   WHERE c.tenant_id = parley.current_tenant_id() AND c.chatbot_id = p_chatbot_id AND c.visitor_id = p_visitor_id
     AND parley.current_actor_kind() = 'visitor' AND p_visitor_id IS NOT NULL AND p_client_id IS NOT NULL
     AND EXISTS (SELECT 1 FROM parley.messages m
                  WHERE m.tenant_id = c.tenant_id AND m.conversation_id = c.id AND m.client_id = p_client_id
                    AND m.created_at >= c.created_at - interval '1 day')
   ORDER BY c.created_at DESC
   LIMIT 1
$$;
COMMENT ON FUNCTION parley.visitor_conversation_with(uuid, uuid, text) IS
  'The visitor''s (the signed visitor token''s id) conversation with the chatbot that holds a message with client_id p_client_id, newest first, or NULL. Visitor transactions only (NULL otherwise). Owned by parley_auth: under RLS a visitor without a conversation sees none.';

-- The members' view of the same list: beside an open conversation, the visitor's others.
CREATE OR REPLACE FUNCTION parley.other_visitor_conversations(p_conversation_id uuid)
RETURNS TABLE (id uuid, status text, created_at timestamptz, last_activity_at timestamptz, messages bigint,
               preview text)
LANGUAGE sql STABLE
AS $$
  SELECT o.id, o.status, o.created_at, o.last_activity_at,
         (SELECT count(*) FROM parley.messages m
           WHERE m.tenant_id = o.tenant_id AND m.conversation_id = o.id AND m.author <> 'note'),
         (SELECT left(m.body, 80) FROM parley.messages m
           WHERE m.tenant_id = o.tenant_id AND m.conversation_id = o.id AND m.author = 'visitor'
           ORDER BY m.id LIMIT 1)
    FROM parley.conversations c
    JOIN parley.conversations o ON o.tenant_id = c.tenant_id AND o.visitor_id = c.visitor_id
                               AND o.chatbot_id = c.chatbot_id AND o.id <> c.id
   WHERE c.id = p_conversation_id AND parley.current_actor_kind() <> 'visitor'
   ORDER BY o.created_at DESC
   LIMIT 20
$$;
COMMENT ON FUNCTION parley.other_visitor_conversations(uuid) IS
  'For members (API transcript, console inbox): the same visitor''s other conversations with the same chatbot, newest first, at most 20, with their message count (notes left out) and first visitor message (80 characters). Runs under RLS (the tenant''s own rows only); empty for visitors.';
GRANT EXECUTE ON FUNCTION parley.other_visitor_conversations(uuid) TO parley_app;

------------------------------------------------------------------------------------------
-- Transitions: the state machine above as rows of parley.conversation_transitions (migration
-- 0037), each named as the action of the actions catalog that asks for it (57_actions.sql),
-- applied by the one function transition_conversation(conversation, name[, member]).

GRANT SELECT ON parley.conversation_transitions TO parley_app, parley_jobs;

INSERT INTO parley.conversation_transitions AS t
       (name, from_states, to_status, assignee, event, staff_only, needs_person, assignee_only, counts_seat,
        repeat_is_noop, refusal)
VALUES
  ('human', '{bot}', 'waiting_human', 'kept', 'human_requested', false, false, false, false, true,
   'Cannot ask for a human in a conversation that is %s.'),
  ('claim', '{bot,waiting_human,human}', 'human', 'actor', 'claimed', true, true, false, true, true,
   'The conversation is closed.'),
  ('assign', '{bot,waiting_human,human}', 'human', 'member', 'assigned', true, false, false, false, true,
   'The conversation is closed.'),
  ('release', '{waiting_human,human}', 'bot', 'none', 'released', true, false, true, false, false,
   'Only a conversation with or waiting for a human can go back to the bot (it is %s).'),
  ('close', '{bot,waiting_human,human}', 'closed', 'kept', 'closed', false, false, false, false, false,
   'The conversation is already closed.'),
  ('reopen', '{closed}', 'human', 'actor', 'reopened', false, false, false, false, false,
   'Only a closed conversation can be reopened.')
ON CONFLICT (name) DO UPDATE
   SET from_states = EXCLUDED.from_states, to_status = EXCLUDED.to_status, assignee = EXCLUDED.assignee,
       event = EXCLUDED.event, staff_only = EXCLUDED.staff_only, needs_person = EXCLUDED.needs_person,
       assignee_only = EXCLUDED.assignee_only, counts_seat = EXCLUDED.counts_seat,
       repeat_is_noop = EXCLUDED.repeat_is_noop, refusal = EXCLUDED.refusal;

CREATE OR REPLACE FUNCTION parley.transition_conversation(p_conversation_id uuid, p_action text,
                                                          p_user_id uuid DEFAULT NULL)
RETURNS parley.conversations
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
  v_user uuid := parley.current_user_id();
  v_rule parley.conversation_transitions;
  v_conv parley.conversations;
  v_assignee uuid;
  v_status text;
  v_data jsonb;
BEGIN
  SELECT * INTO v_rule FROM parley.conversation_transitions t WHERE t.name = p_action;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'no conversation transition %', p_action;  -- a caller's mistake, not a client's
  END IF;
  IF v_rule.staff_only THEN
    PERFORM parley.require_staff();
  END IF;
  IF v_rule.needs_person AND v_user IS NULL THEN
    PERFORM parley.raise_error(403, 'forbidden', format('Only a signed-in agent can %s a conversation.', p_action));
  END IF;
  -- Two agents claiming at once: the row lock makes the second wait, then see the first's claim.
  v_conv := parley.lock_conversation(p_conversation_id);
  IF v_rule.assignee = 'member' AND NOT EXISTS (SELECT 1 FROM parley.members m
                                                 WHERE m.tenant_id = v_conv.tenant_id AND m.user_id = p_user_id) THEN
    PERFORM parley.raise_error(422, 'not_a_member', 'Conversations can only be assigned to members of this workspace.');
  END IF;
  v_assignee := CASE v_rule.assignee WHEN 'kept' THEN v_conv.assignee_id WHEN 'actor' THEN v_user
                                     WHEN 'member' THEN p_user_id END;
  -- With nobody to talk to, a move to human goes to the bot (a reopen by an API key or the visitor).
  v_status := CASE WHEN v_rule.to_status = 'human' AND v_assignee IS NULL THEN 'bot' ELSE v_rule.to_status END;
  IF v_rule.repeat_is_noop AND v_conv.status = v_status AND v_conv.assignee_id IS NOT DISTINCT FROM v_assignee THEN
    RETURN v_conv;  -- asking again for what already is: harmless
  END IF;
  IF NOT v_conv.status = ANY (v_rule.from_states) THEN
    PERFORM parley.raise_error(409, 'invalid_transition', format(v_rule.refusal, v_conv.status));
  END IF;
  -- Another agent's conversation changes hands only by assigning it.
  IF v_rule.assignee = 'actor' AND v_conv.status = 'human' AND v_conv.assignee_id <> v_user THEN
    PERFORM parley.raise_error(409, 'invalid_transition', 'Another agent has already claimed this conversation.');
  END IF;
  IF v_rule.assignee_only AND v_user IS NOT NULL AND v_conv.assignee_id <> v_user
     AND parley.actor_role_rank() < parley.role_rank('admin') THEN
    PERFORM parley.raise_error(403, 'forbidden', format('Only the assignee or an admin can %s this conversation.',
                                                      p_action));
  END IF;
  IF v_conv.status = 'closed' THEN
    PERFORM parley.check_open_conversation_limit();  -- leaving closed counts against max_open_conversations
  END IF;
  IF v_rule.counts_seat THEN
    PERFORM parley.note_active_seat(v_user);
  END IF;
  v_data := CASE v_rule.event
              WHEN 'human_requested' THEN parley.handoff_data('requested')
              WHEN 'claimed' THEN jsonb_build_object('assignee_id', v_assignee)
              WHEN 'assigned' THEN jsonb_build_object('assignee_id', v_assignee, 'previous_assignee_id', v_conv.assignee_id)
              WHEN 'closed' THEN jsonb_build_object('reason', 'closed')
              WHEN 'reopened' THEN jsonb_build_object('status', v_status)
              ELSE '{}' END;
  UPDATE parley.conversations c
     SET status = v_status, assignee_id = v_assignee, last_activity_at = now(),
         closed_at = CASE WHEN v_status = 'closed' THEN now() END,
         bot_misses = CASE WHEN v_status = 'closed' THEN c.bot_misses ELSE 0 END
   WHERE c.tenant_id = v_conv.tenant_id AND c.id = v_conv.id RETURNING * INTO v_conv;
  PERFORM parley.emit_event(v_rule.event, v_conv.id, NULL, v_data);
  RETURN v_conv;
END $$;
COMMENT ON FUNCTION parley.transition_conversation(uuid, text, uuid) IS
  'Apply the transition p_action (a row of parley.conversation_transitions) to a conversation of the current tenant, checked in this order: members only (403), a signed-in person (403), the conversation (lock_conversation: 404, 403 for another''s visitor), the member p_user_id to assign (422 not_a_member), already so (no-op, when the row says so), its from_states (409 invalid_transition with the row''s refusal), another agent''s conversation (409), its assignee or an admin (403), leaving closed (402 at max_open_conversations). Then the status (human without an assignee: bot), assignee, activity time, closed_at (now when closing, else none), bot-miss count (0 unless closing), an active seat when the row counts one, and the row''s event with its data.';

-- Each transition had a function of its own before the table (callers name the row now).
DROP FUNCTION IF EXISTS parley.request_human(uuid), parley.claim_conversation(uuid),
  parley.assign_conversation(uuid, uuid), parley.release_conversation(uuid), parley.close_conversation(uuid),
  parley.reopen_conversation(uuid);

CREATE OR REPLACE FUNCTION parley.codename_max() RETURNS int
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT 64 $$;
COMMENT ON FUNCTION parley.codename_max() IS
  'Longest conversation codename, in characters (set_codename; the actions catalog''s codename input says the same).';
GRANT EXECUTE ON FUNCTION parley.codename_max() TO parley_app, parley_jobs;

CREATE OR REPLACE FUNCTION parley.set_codename(p_conversation_id uuid, p_codename text)
RETURNS parley.conversations
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
  v_name text := nullif(btrim(coalesce(p_codename, '')), '');
  v_conv parley.conversations;
BEGIN
  PERFORM parley.require_staff();
  IF v_name IS NOT NULL THEN
    PERFORM parley.check_text(v_name, 'invalid_codename', 'A codename', true);
    IF length(v_name) > parley.codename_max() THEN
      PERFORM parley.raise_error(422, 'invalid_codename',
        format('A codename is at most %s characters.', parley.codename_max()));
    END IF;
  END IF;
  v_conv := parley.lock_conversation(p_conversation_id);
  IF v_conv.codename IS NOT DISTINCT FROM v_name THEN
    RETURN v_conv;
  END IF;
  UPDATE parley.conversations c SET codename = v_name
   WHERE c.tenant_id = v_conv.tenant_id AND c.id = v_conv.id RETURNING * INTO v_conv;
  PERFORM parley.emit_event('codename_set', v_conv.id, NULL, jsonb_build_object('codename', v_name));
  RETURN v_conv;
END $$;
COMMENT ON FUNCTION parley.set_codename(uuid, text) IS
  'Members: the conversation''s codename, how agents call the visitor (1-64 characters through check_text; empty clears it; agents'' eyes only, never sent to the visitor). Event codename_set with {codename} when it changes (channels rename the conversation''s topic).';

CREATE OR REPLACE FUNCTION parley.close_idle_conversations(p_idle interval DEFAULT NULL)
RETURNS int
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
  v_tenant uuid := parley.current_tenant_id();
  v_setting jsonb;
  v_bot int;
  v_human int;
  v_n int := 0;
  r record;
BEGIN
  IF parley.current_actor_kind() = 'visitor' OR parley.actor_role_rank() < parley.role_rank('admin') THEN
    PERFORM parley.raise_error(403, 'forbidden', 'Idle close runs as the jobs process or an admin.');
  END IF;
  -- Idle time: chatbot config idle_close.{bot_minutes,human_minutes}, else the tenant setting
  -- conversations.idle_close (same keys), else 30 minutes (bot) / 24 hours (waiting, human).
  SELECT s.value INTO v_setting FROM parley.tenant_settings s
   WHERE s.tenant_id = v_tenant AND s.key = 'conversations.idle_close';
  v_bot := coalesce(parley.jsonb_int(v_setting->'bot_minutes'), 30);
  v_human := coalesce(parley.jsonb_int(v_setting->'human_minutes'), 1440);
  FOR r IN
    SELECT c.id FROM parley.conversations c
      JOIN parley.chatbots b ON b.tenant_id = c.tenant_id AND b.id = c.chatbot_id
     WHERE c.tenant_id = v_tenant AND c.status <> 'closed'
       AND c.last_activity_at < now() - coalesce(p_idle, make_interval(mins => CASE WHEN c.status = 'bot'
             THEN coalesce(parley.jsonb_int(b.config #> '{idle_close,bot_minutes}'), v_bot)
             ELSE coalesce(parley.jsonb_int(b.config #> '{idle_close,human_minutes}'), v_human) END))
     ORDER BY c.last_activity_at
     LIMIT 1000
       FOR UPDATE OF c SKIP LOCKED  -- a conversation being written to right now is not idle
  LOOP
    UPDATE parley.conversations c SET status = 'closed', closed_at = now()
     WHERE c.tenant_id = v_tenant AND c.id = r.id;
    PERFORM parley.emit_event('closed', r.id, NULL, jsonb_build_object('reason', 'idle'));
    v_n := v_n + 1;
  END LOOP;
  RETURN v_n;
END $$;
COMMENT ON FUNCTION parley.close_idle_conversations(interval) IS
  'Jobs (per tenant, actor system) or an admin: close up to 1000 open conversations of the current tenant idle longer than p_idle, or when NULL the configured time (chatbot config idle_close.bot_minutes / human_minutes, else tenant setting conversations.idle_close, else 30 min for bot and 24 h for waiting_human/human). One closed event each, one NOTIFY. Returns how many were closed.';
-- The jobs process runs the idle sweep.
GRANT EXECUTE ON FUNCTION parley.close_idle_conversations(interval), parley.lock_conversation(uuid) TO parley_jobs;

-- Owners and EXECUTE grants of the functions above (parley.secure_functions, 05_access.sql).
SELECT parley.secure_functions('parley_auth', '{parley_app, parley_jobs}', 'parley.check_open_conversation_limit()');
SELECT parley.secure_functions('parley_auth', '{parley_app}', 'parley.visitor_conversations(uuid, uuid)',
                               'parley.visitor_conversation_with(uuid, uuid, text)');
