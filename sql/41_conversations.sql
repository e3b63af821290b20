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
-- through parley.emit_event; the lock order all writers keep is in 45_events.sql.
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
DROP POLICY IF EXISTS select_visitor_own ON parley.conversations;
CREATE POLICY select_visitor_own ON parley.conversations AS RESTRICTIVE FOR SELECT
  USING ((SELECT parley.current_actor_kind()) <> 'visitor' OR id::text = (SELECT parley.current_actor_id()));

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

CREATE OR REPLACE FUNCTION parley.lock_conversation(p_conversation_id uuid)
RETURNS parley.conversations
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
  v_conv parley.conversations;
BEGIN
  -- A visitor acts only on the conversation in its widget token (actor_id).
  IF parley.current_actor_kind() = 'visitor'
     AND parley.current_actor_id() IS DISTINCT FROM p_conversation_id::text THEN
    PERFORM parley.raise_error(403, 'forbidden', 'Visitors can only act on their own conversation.');
  END IF;
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

-- How every transition below is applied, once its rule has been checked on the locked row.
CREATE OR REPLACE FUNCTION parley.move_conversation(p_conv parley.conversations, p_status text, p_assignee uuid,
                                                    p_event text, p_data jsonb)
RETURNS parley.conversations
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
  v_conv parley.conversations;
BEGIN
  UPDATE parley.conversations c
     SET status = p_status, assignee_id = p_assignee, last_activity_at = now(),
         closed_at = CASE WHEN p_status = 'closed' THEN now() END,
         bot_misses = CASE WHEN p_status = 'closed' THEN c.bot_misses ELSE 0 END
   WHERE c.tenant_id = p_conv.tenant_id AND c.id = p_conv.id RETURNING * INTO v_conv;
  PERFORM parley.emit_event(p_event, v_conv.id, NULL, p_data);
  RETURN v_conv;
END $$;
COMMENT ON FUNCTION parley.move_conversation(parley.conversations, text, uuid, text, jsonb) IS
  'Internal to the transitions: set a locked conversation''s status and assignee, its activity time, closed_at (now when closing, else none) and the bot-miss count (0 unless closing), and emit p_event with p_data. The caller has checked the move.';

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
ALTER FUNCTION parley.check_open_conversation_limit() OWNER TO parley_auth;
REVOKE ALL ON FUNCTION parley.check_open_conversation_limit() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION parley.check_open_conversation_limit() TO parley_app, parley_jobs;

CREATE OR REPLACE FUNCTION parley.clean_text(p_value text, p_max int) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT nullif(left(btrim(p_value), p_max), '') $$;
COMMENT ON FUNCTION parley.clean_text(text, int) IS 'Trim, cut to p_max characters, and turn empty into NULL (visitor-supplied metadata).';
------------------------------------------------------------------------------------------
-- Starting and writing

CREATE OR REPLACE FUNCTION parley.start_conversation(
  p_chatbot_id uuid, p_visitor_id uuid, p_page_url text DEFAULT NULL, p_referrer text DEFAULT NULL,
  p_user_agent text DEFAULT NULL, p_locale text DEFAULT NULL, p_ip inet DEFAULT NULL, p_country text DEFAULT NULL)
RETURNS parley.conversations
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
  v_tenant uuid := parley.current_tenant_id();
  v_conv parley.conversations;
  v_id uuid;
BEGIN
  IF NOT EXISTS (SELECT 1 FROM parley.chatbots b
                  WHERE b.tenant_id = v_tenant AND b.id = p_chatbot_id AND b.deleted_at IS NULL) THEN
    PERFORM parley.raise_error(404, 'not_found', 'No such chatbot.');
  END IF;
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
ALTER FUNCTION parley.visitor_conversations(uuid, uuid) OWNER TO parley_auth;
REVOKE ALL ON FUNCTION parley.visitor_conversations(uuid, uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION parley.visitor_conversations(uuid, uuid) TO parley_app;

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
-- Transitions

CREATE OR REPLACE FUNCTION parley.request_human(p_conversation_id uuid)
RETURNS parley.conversations
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
  v_conv parley.conversations;
BEGIN
  v_conv := parley.lock_conversation(p_conversation_id);
  IF v_conv.status = 'waiting_human' THEN
    RETURN v_conv;  -- asking twice is harmless
  ELSIF v_conv.status <> 'bot' THEN
    PERFORM parley.raise_error(409, 'invalid_transition',
      format('Cannot ask for a human in a conversation that is %s.', v_conv.status));
  END IF;
  RETURN parley.move_conversation(v_conv, 'waiting_human', v_conv.assignee_id, 'human_requested',
                                  parley.handoff_data('requested'));
END $$;
COMMENT ON FUNCTION parley.request_human(uuid) IS
  'bot → waiting_human (visitor or member); already waiting is a no-op; human/closed give 409 invalid_transition. Event human_requested (data: parley.handoff_data, with how many members were online).';

CREATE OR REPLACE FUNCTION parley.claim_conversation(p_conversation_id uuid)
RETURNS parley.conversations
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
  v_user uuid := parley.current_user_id();
  v_conv parley.conversations;
BEGIN
  PERFORM parley.require_staff();
  IF v_user IS NULL THEN
    PERFORM parley.raise_error(403, 'forbidden', 'Only a signed-in agent can claim a conversation.');
  END IF;
  -- Two agents claiming at once: the row lock makes the second wait, then see the first's claim.
  v_conv := parley.lock_conversation(p_conversation_id);
  IF v_conv.status = 'human' AND v_conv.assignee_id = v_user THEN
    RETURN v_conv;
  ELSIF v_conv.status = 'closed' OR (v_conv.status = 'human' AND v_conv.assignee_id IS NOT NULL) THEN
    PERFORM parley.raise_error(409, 'invalid_transition',
      CASE WHEN v_conv.status = 'closed' THEN 'The conversation is closed.'
           ELSE 'Another agent has already claimed this conversation.' END);
  END IF;
  PERFORM parley.note_active_seat(v_user);
  RETURN parley.move_conversation(v_conv, 'human', v_user, 'claimed', jsonb_build_object('assignee_id', v_user));
END $$;
COMMENT ON FUNCTION parley.claim_conversation(uuid) IS
  'The signed-in agent takes an unassigned conversation (bot / waiting_human / human without assignee → human, assignee = me). Claiming one''s own is a no-op; claimed by someone else or closed → 409. Exactly one of two concurrent claims wins. Event claimed.';

CREATE OR REPLACE FUNCTION parley.assign_conversation(p_conversation_id uuid, p_user_id uuid)
RETURNS parley.conversations
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
  v_conv parley.conversations;
BEGIN
  PERFORM parley.require_staff();
  v_conv := parley.lock_conversation(p_conversation_id);
  IF NOT EXISTS (SELECT 1 FROM parley.members m
                  WHERE m.tenant_id = v_conv.tenant_id AND m.user_id = p_user_id) THEN
    PERFORM parley.raise_error(422, 'not_a_member', 'Conversations can only be assigned to members of this workspace.');
  END IF;
  IF v_conv.status = 'closed' THEN
    PERFORM parley.raise_error(409, 'invalid_transition', 'The conversation is closed.');
  END IF;
  IF v_conv.status = 'human' AND v_conv.assignee_id = p_user_id THEN
    RETURN v_conv;
  END IF;
  RETURN parley.move_conversation(v_conv, 'human', p_user_id, 'assigned',
    jsonb_build_object('assignee_id', p_user_id, 'previous_assignee_id', v_conv.assignee_id));
END $$;
COMMENT ON FUNCTION parley.assign_conversation(uuid, uuid) IS
  'Give a conversation to a member (status human, assignee = p_user_id); 422 not_a_member, 409 when closed, no-op when already theirs. Event assigned.';

CREATE OR REPLACE FUNCTION parley.release_conversation(p_conversation_id uuid)
RETURNS parley.conversations
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
  v_user uuid := parley.current_user_id();
  v_conv parley.conversations;
BEGIN
  PERFORM parley.require_staff();
  v_conv := parley.lock_conversation(p_conversation_id);
  IF v_conv.status NOT IN ('human', 'waiting_human') THEN
    PERFORM parley.raise_error(409, 'invalid_transition',
      format('Only a conversation with or waiting for a human can go back to the bot (it is %s).', v_conv.status));
  END IF;
  IF v_user IS NOT NULL AND v_conv.assignee_id IS NOT NULL AND v_conv.assignee_id <> v_user
     AND parley.actor_role_rank() < parley.role_rank('admin') THEN
    PERFORM parley.raise_error(403, 'forbidden', 'Only the assignee or an admin can release this conversation.');
  END IF;
  RETURN parley.move_conversation(v_conv, 'bot', NULL, 'released', '{}');
END $$;
COMMENT ON FUNCTION parley.release_conversation(uuid) IS
  'human / waiting_human → bot, unassigned (the assignee, an admin, or an API key); bot/closed → 409. Event released.';

CREATE OR REPLACE FUNCTION parley.close_conversation(p_conversation_id uuid)
RETURNS parley.conversations
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
  v_conv parley.conversations;
BEGIN
  v_conv := parley.lock_conversation(p_conversation_id);
  IF v_conv.status = 'closed' THEN
    PERFORM parley.raise_error(409, 'invalid_transition', 'The conversation is already closed.');
  END IF;
  RETURN parley.move_conversation(v_conv, 'closed', v_conv.assignee_id, 'closed',
                                  jsonb_build_object('reason', 'closed'));
END $$;
COMMENT ON FUNCTION parley.close_conversation(uuid) IS
  'Any open status → closed (a member, or the visitor of this conversation); closed → 409. The assignee is kept for the record. Event closed.';

CREATE OR REPLACE FUNCTION parley.reopen_conversation(p_conversation_id uuid)
RETURNS parley.conversations
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
  v_user uuid := parley.current_user_id();
  v_conv parley.conversations;
  v_status text;
BEGIN
  v_conv := parley.lock_conversation(p_conversation_id);
  IF v_conv.status <> 'closed' THEN
    PERFORM parley.raise_error(409, 'invalid_transition', 'Only a closed conversation can be reopened.');
  END IF;
  PERFORM parley.check_open_conversation_limit();
  v_status := CASE WHEN v_user IS NOT NULL THEN 'human' ELSE 'bot' END;
  RETURN parley.move_conversation(v_conv, v_status, v_user, 'reopened', jsonb_build_object('status', v_status));
END $$;
COMMENT ON FUNCTION parley.reopen_conversation(uuid) IS
  'closed → human assigned to the reopening agent (signed-in user), or → bot for anyone else; not closed → 409; 402 at max_open_conversations. Event reopened.';

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
