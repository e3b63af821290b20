-- Conversations: the state machine, messages, events (+ NOTIFY), leads.
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
-- Events and NOTIFY: every state change and message writes one row to parley.events through
-- parley.emit_event; the first event of a transaction also sends the one NOTIFY of that
-- transaction on channel `parley_events` with payload `<tenant_id>:<event_id>:<conversation_id>`
-- (ids only; conversation id empty for tenant-wide events). Listeners treat it as a wake-up and
-- read parley.events_after(last_seen_id): a transaction may write several events.
--
-- Ordering guarantees:
--   * messages: ids of one conversation increase in commit order, because every writer holds
--     the conversation row lock (SELECT ... FOR UPDATE in parley.lock_conversation) from before
--     nextval() until commit. Resume with visible_messages(conversation, last_seen_id) is exact.
--   * events: ids of one tenant are not assigned in commit order (writers run concurrently),
--     but a reader never sees a gap that could still be filled. Writers take a SHARED
--     per-tenant advisory lock (7261003) in emit_event before nextval() and hold it to commit;
--     writers never wait for each other on it. events_after takes the same lock EXCLUSIVE
--     first: that waits until every writer already holding it has committed or rolled back.
--     Holding it, it reads the horizon (the last id the events sequence handed out) and lets
--     go at once: every id up to the horizon belongs to a transaction that has ended, and any
--     later writer gets a larger id. It returns only events up to the horizon, so every event
--     with an id up to the largest one returned is already visible, and resuming after the
--     last seen id (relay cursor, Last-Event-ID) never skips. Writers of the tenant wait only
--     while a reader waits for the writers ahead of them (a barrier, not a queue). A writer
--     that keeps its transaction open makes the reader give up after 250 ms (55P03) and
--     retry, so the tenant's other writers are never stalled for longer than that.
--   Lock order is always: conversation row → open-conversation limit lock → usage rows → tenant
--   event lock, and nothing waits for a lock after its first event (a writer that did could
--   stall behind a queued reader that waits for it, until the deadlock detector steps in).
--   Call event-writing functions for at most one conversation per transaction; the one
--   exception, post_visitor_messages, locks all its conversations (in id order) before
--   anything else and stores all its messages before it writes the first event.

SELECT parley.apply_tenant_policies('parley.conversations');
SELECT parley.apply_tenant_policies('parley.messages');
SELECT parley.apply_tenant_policies('parley.events');
SELECT parley.apply_tenant_policies('parley.leads');

-- Visitors: a widget transaction (actor kind 'visitor', actor id = its conversation) sees only
-- its own conversation, that conversation's messages without notes, and its lead, whatever
-- SQL runs in it. RESTRICTIVE, so these narrow the tenant policies rather than widen them.
DROP POLICY IF EXISTS select_visitor_own ON parley.conversations;
CREATE POLICY select_visitor_own ON parley.conversations AS RESTRICTIVE FOR SELECT
  USING ((SELECT parley.current_actor_kind()) <> 'visitor' OR id::text = (SELECT parley.current_actor_id()));
DROP POLICY IF EXISTS select_visitor_own ON parley.messages;
CREATE POLICY select_visitor_own ON parley.messages AS RESTRICTIVE FOR SELECT
  USING ((SELECT parley.current_actor_kind()) <> 'visitor'
         OR (conversation_id::text = (SELECT parley.current_actor_id()) AND author <> 'note'));
DROP POLICY IF EXISTS select_visitor_own ON parley.leads;
CREATE POLICY select_visitor_own ON parley.leads AS RESTRICTIVE FOR SELECT
  USING ((SELECT parley.current_actor_kind()) <> 'visitor' OR conversation_id::text = (SELECT parley.current_actor_id()));

GRANT SELECT, INSERT,
      UPDATE (status, assignee_id, last_activity_at, closed_at, bot_misses, last_message_id)
   ON parley.conversations TO parley_app;
GRANT SELECT, INSERT ON parley.messages, parley.events TO parley_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON parley.leads TO parley_app;
GRANT USAGE ON SEQUENCE parley.messages_id_seq, parley.events_id_seq TO parley_app, parley_jobs;
-- events_after reads the events sequence's last value (its horizon).
GRANT SELECT ON SEQUENCE parley.events_id_seq TO parley_app, parley_jobs;
GRANT SELECT, UPDATE, DELETE ON parley.conversations TO parley_jobs;
GRANT SELECT, DELETE ON parley.messages TO parley_jobs;
GRANT SELECT, INSERT, DELETE ON parley.events TO parley_jobs;
GRANT SELECT ON parley.leads TO parley_jobs;
-- Cross-tenant readers owned by parley_auth (search within the caller's tenant, idle sweep).
GRANT SELECT ON parley.messages, parley.conversations TO parley_auth;

------------------------------------------------------------------------------------------
-- Helpers

CREATE OR REPLACE FUNCTION parley.actor_role_rank() RETURNS int
LANGUAGE sql STABLE
AS $$ SELECT parley.role_rank(coalesce(current_setting('app.role', true), '')) $$;
COMMENT ON FUNCTION parley.actor_role_rank() IS 'role_rank of the role begin_request resolved for this transaction (-1 when none).';

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
LANGUAGE plpgsql
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

CREATE OR REPLACE FUNCTION parley.emit_event(p_kind text, p_conversation_id uuid, p_message_id bigint DEFAULT NULL,
                                             p_data jsonb DEFAULT '{}')
RETURNS bigint
LANGUAGE plpgsql
AS $$
DECLARE
  v_tenant uuid := parley.current_tenant_id();
  v_id bigint;
BEGIN
  -- Gap-safe reading (see the header): announce this writer before nextval(); shared, so
  -- writers of one tenant do not wait for each other, only for a reader's short barrier.
  PERFORM pg_advisory_xact_lock_shared(7261003, hashtext(v_tenant::text));
  INSERT INTO parley.events (tenant_id, kind, conversation_id, message_id, actor_kind, actor_id, data)
  VALUES (v_tenant, p_kind, p_conversation_id, p_message_id, parley.current_actor_kind(),
          parley.current_actor_id(), coalesce(p_data, '{}'))
  RETURNING id INTO v_id;
  -- At most one NOTIFY per transaction: the first event names itself, later ones ride along.
  IF coalesce(current_setting('parley.notified', true), '') = '' THEN
    PERFORM pg_notify('parley_events', format('%s:%s:%s', v_tenant, v_id, coalesce(p_conversation_id::text, '')));
    PERFORM set_config('parley.notified', '1', true);
  END IF;
  RETURN v_id;
END $$;
COMMENT ON FUNCTION parley.emit_event(text, uuid, bigint, jsonb) IS
  'Append a domain event for the current tenant and, once per transaction, NOTIFY parley_events with payload <tenant_id>:<event_id>:<conversation_id> (ids only). Holds the tenant''s event lock (7261003) SHARED to commit, so events_after can wait for writers in flight and never skip an id.';

-- The JSON builders below are plain expressions with no sub-SELECT, so Postgres inlines them
-- into the calling query (a function with a sub-SELECT runs through the SQL-function executor
-- on every row: measured 70-240 µs a call here, against ~10 µs inlined). The name lookups
-- they need live in the small plpgsql functions first, which return at once when there is
-- nothing to look up.
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

CREATE OR REPLACE FUNCTION parley.author_display_name(p_tenant_id uuid, p_conversation_id uuid, p_author text,
                                                      p_author_id uuid) RETURNS text
LANGUAGE plpgsql STABLE
AS $$
DECLARE
  v_name text;
BEGIN
  IF p_author IN ('agent', 'note') THEN
    RETURN parley.user_display_name(p_author_id);
  ELSIF p_author = 'bot' THEN
    SELECT coalesce(b.config #>> '{branding,title}', b.name) INTO v_name FROM parley.conversations c
      JOIN parley.chatbots b ON b.tenant_id = c.tenant_id AND b.id = c.chatbot_id
     WHERE c.tenant_id = p_tenant_id AND c.id = p_conversation_id;
    RETURN v_name;
  END IF;
  RETURN NULL;  -- visitors and system notices have no display name
END $$;
COMMENT ON FUNCTION parley.author_display_name(uuid, uuid, text, uuid) IS
  'The name shown on a message: the agent''s name for agent replies and notes, the chatbot''s branding title (else its name) for bot replies, NULL otherwise.';

CREATE OR REPLACE FUNCTION parley.message_json(p_message parley.messages, p_for_visitor boolean DEFAULT false)
RETURNS jsonb
LANGUAGE sql STABLE
AS $$
  SELECT jsonb_build_object(
           'id', p_message.id,
           'conversation_id', p_message.conversation_id,
           'author', p_message.author,
           'body', p_message.body,
           'client_id', p_message.client_id,
           'created_at', p_message.created_at,
           'author_name', parley.author_display_name(p_message.tenant_id, p_message.conversation_id,
                                                     p_message.author, p_message.author_id),
           'citations', CASE WHEN jsonb_typeof(p_message.meta->'citations') = 'array'
                             THEN p_message.meta->'citations' ELSE '[]'::jsonb END,
           'stream_id', p_message.meta->>'stream_id')
         || CASE WHEN p_for_visitor THEN '{}'::jsonb
                 ELSE jsonb_build_object('author_id', p_message.author_id, 'meta', p_message.meta) END
$$;
COMMENT ON FUNCTION parley.message_json(parley.messages, boolean) IS
  'A message as the protocol''s "message" object (id, author, body, client_id, created_at, author_name, citations, stream_id); for staff also author_id and meta. Visitors get no author ids and no meta. Inlined into the caller (no sub-SELECT).';

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
           'bot_misses', p_conv.bot_misses, 'last_message_id', p_conv.last_message_id)
$$;
COMMENT ON FUNCTION parley.conversation_json(parley.conversations) IS
  'Conversation summary for agents and the relay (no ip or user agent). Inlined into the caller (no sub-SELECT).';

CREATE OR REPLACE FUNCTION parley.check_open_conversation_limit() RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = ''
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
LANGUAGE plpgsql
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
  'Start a conversation (status bot) with a live chatbot of the current tenant. Visitor metadata is trimmed/cut, never refused. 402 plan_limit at max_open_conversations; counts usage ''conversations''; event conversation_started + NOTIFY.';

CREATE OR REPLACE FUNCTION parley.store_message(
  p_conversation_id uuid, p_author text, p_body text, p_client_id text, p_meta jsonb,
  OUT message parley.messages, OUT duplicate boolean, OUT status text, OUT assignee_id uuid,
  OUT reopened boolean, OUT claimed boolean, OUT handoff boolean)
LANGUAGE plpgsql
-- Every statement here is a point lookup or a write. A pooled session caches its plans; made
-- while this month's partition was still small, the idempotency check's plan was a sequential
-- scan of the partition, kept until autovacuum's next ANALYZE of it (seen in the benchmark:
-- 0.55 ms per message and growing). The index is always right here, so say so.
SET enable_seqscan = off
AS $$
DECLARE
  v_kind text := parley.current_actor_kind();
  v_user uuid := parley.current_user_id();
  v_conv parley.conversations;
  v_lim record;
  v_status text;
  v_assignee uuid;
  v_closed_at timestamptz;
  v_misses int;
  v_threshold int;
  v_reopened boolean := false;
  v_claimed boolean := false;
  v_handoff boolean := false;
BEGIN
  -- Who may write what: visitors only as themselves, members only as agent or note;
  -- the server (service) and jobs (system) write bot, system and channel-relayed visitor text.
  IF p_author IS NULL OR p_author NOT IN ('visitor', 'bot', 'agent', 'system', 'note') THEN
    PERFORM parley.raise_error(422, 'invalid_author', 'author must be visitor, bot, agent, system or note.');
  END IF;
  IF v_kind = 'visitor' AND p_author <> 'visitor' THEN
    PERFORM parley.raise_error(403, 'forbidden', 'Visitors can only post visitor messages.');
  END IF;
  IF v_kind IN ('user', 'api_key') AND p_author NOT IN ('agent', 'note') THEN
    PERFORM parley.raise_error(403, 'forbidden', 'Members post as agent (reply) or note.');
  END IF;
  -- Bodies: not blank; at most 4000 characters from people, 16000 from the bot/system.
  -- (NUL cannot reach here: Postgres text refuses it and the API answers 422 first.)
  IF p_body IS NULL OR btrim(p_body, E' \t\r\n') = '' THEN
    PERFORM parley.raise_error(422, 'empty_body', 'The message is empty.');
  END IF;
  IF length(p_body) > (CASE WHEN p_author IN ('bot', 'system') THEN 16000 ELSE 4000 END) THEN
    PERFORM parley.raise_error(422, 'body_too_long',
      format('A message is at most %s characters.', CASE WHEN p_author IN ('bot', 'system') THEN 16000 ELSE 4000 END));
  END IF;
  IF p_client_id IS NOT NULL AND (length(p_client_id) NOT BETWEEN 1 AND 100) THEN
    PERFORM parley.raise_error(422, 'invalid_client_id', 'client_id must be 1 to 100 characters.');
  END IF;
  IF p_meta IS NOT NULL AND (jsonb_typeof(p_meta) <> 'object' OR octet_length(p_meta::text) > 32768) THEN
    PERFORM parley.raise_error(422, 'invalid_meta', 'meta must be a JSON object of at most 32 KiB.');
  END IF;

  -- The conversation row lock, held until commit, serialises every writer of this conversation:
  --  * the client_id idempotency check below cannot race with a concurrent resend (a unique
  --    index cannot span the monthly partitions, so the lock enforces it);
  --  * message ids (nextval at INSERT, after the lock) increase in commit order within a
  --    conversation, which the realtime resume (last_seen_id) relies on.
  v_conv := parley.lock_conversation(p_conversation_id);
  IF p_client_id IS NOT NULL THEN
    -- The created_at bounds only prune partitions (months before the conversation, months
    -- created ahead); the day of slack covers a clock stepping back. No ORDER BY: the lock
    -- keeps client_id unique per conversation, and "ORDER BY id LIMIT 1" lets the planner
    -- (before the first ANALYZE of a new partition) walk the whole conversation by id
    -- instead of probing the client_id index: every new message then cost O(conversation).
    SELECT * INTO message FROM parley.messages m
     WHERE m.tenant_id = v_conv.tenant_id AND m.conversation_id = v_conv.id AND m.client_id = p_client_id
       AND m.created_at >= v_conv.created_at - interval '1 day' AND m.created_at <= now() + interval '1 day'
     LIMIT 1;
    IF FOUND THEN
      -- A resend: the stored row, no new event, no usage.
      duplicate := true; status := v_conv.status; assignee_id := v_conv.assignee_id;
      reopened := false; claimed := false; handoff := false;
      RETURN;
    END IF;
  END IF;

  v_status := v_conv.status;
  v_assignee := v_conv.assignee_id;
  v_closed_at := v_conv.closed_at;
  v_misses := v_conv.bot_misses;

  IF v_status = 'closed' AND p_author <> 'note' THEN
    IF p_author = 'visitor' THEN
      PERFORM parley.check_open_conversation_limit();
      v_status := 'bot'; v_assignee := NULL; v_closed_at := NULL; v_reopened := true;
    ELSE
      PERFORM parley.raise_error(409, 'invalid_transition', 'The conversation is closed; reopen it first.');
    END IF;
  END IF;

  IF p_author = 'bot' AND v_status = 'human' THEN
    PERFORM parley.raise_error(409, 'invalid_transition', 'A human agent has taken over this conversation.');
  END IF;

  IF p_author = 'agent' THEN
    -- Replying claims an unassigned conversation; someone else's conversation is refused.
    IF v_status IN ('bot', 'waiting_human') OR (v_status = 'human' AND v_assignee IS NULL) THEN
      v_status := 'human';
      v_assignee := coalesce(v_user, v_assignee);
      v_claimed := true;
    ELSIF v_user IS NOT NULL AND v_assignee IS DISTINCT FROM v_user THEN
      PERFORM parley.raise_error(409, 'invalid_transition',
        'This conversation is assigned to another agent; assign it to yourself first.');
    END IF;
  END IF;

  SELECT * INTO v_lim FROM parley.effective_limits(v_conv.tenant_id);
  IF p_author = 'visitor' THEN
    IF coalesce(v_lim.msgs_per_min_chatbot, 0) > 0 THEN
      PERFORM parley.hit_rate_limit('chatbot', v_conv.chatbot_id::text, v_lim.msgs_per_min_chatbot);
    END IF;
    IF coalesce(v_lim.msgs_per_min_ip, 0) > 0 THEN
      PERFORM parley.hit_rate_limit('ip', host(coalesce(parley.current_request_ip(), v_conv.ip)), v_lim.msgs_per_min_ip);
    END IF;
  ELSIF p_author = 'bot' THEN
    IF parley.limit_reached(v_lim.ai_msgs_per_day, parley.usage_on('ai_messages')) THEN
      PERFORM parley.raise_error(402, 'plan_limit',
        format('The daily allowance of %s AI replies is used up.', v_lim.ai_msgs_per_day));
    END IF;
    -- A reply the bot marks as a miss (meta.miss = true) counts toward the handoff threshold.
    IF p_meta->'miss' = 'true'::jsonb THEN
      v_misses := v_misses + 1;
      SELECT parley.jsonb_int(b.config #> '{handoff,miss_threshold}') INTO v_threshold
        FROM parley.chatbots b WHERE b.tenant_id = v_conv.tenant_id AND b.id = v_conv.chatbot_id;
      IF v_status = 'bot' AND coalesce(v_threshold, 0) > 0 AND v_misses >= v_threshold THEN
        v_status := 'waiting_human';
        v_handoff := true;
      END IF;
    END IF;
  END IF;

  INSERT INTO parley.messages (tenant_id, conversation_id, author, author_id, body, client_id, meta)
  VALUES (v_conv.tenant_id, v_conv.id, p_author,
          CASE WHEN p_author IN ('agent', 'note') THEN v_user WHEN p_author = 'visitor' THEN v_conv.visitor_id END,
          p_body, p_client_id, coalesce(p_meta, '{}'))
  RETURNING * INTO message;

  -- Notes are internal: they neither keep a conversation alive nor move last_message_id.
  UPDATE parley.conversations c
     SET status = v_status, assignee_id = v_assignee, closed_at = v_closed_at, bot_misses = v_misses,
         last_activity_at = CASE WHEN p_author = 'note' THEN c.last_activity_at ELSE now() END,
         last_message_id = CASE WHEN p_author = 'note' THEN c.last_message_id ELSE message.id END
   WHERE c.tenant_id = v_conv.tenant_id AND c.id = v_conv.id;

  IF p_author NOT IN ('note', 'system') THEN
    PERFORM parley.bump_usage('messages', 1);
  END IF;
  IF p_author = 'bot' THEN
    PERFORM parley.bump_usage('ai_messages', 1);
  END IF;
  IF p_author IN ('agent', 'note') THEN
    PERFORM parley.note_active_seat(v_user);
  END IF;

  duplicate := false; status := v_status; assignee_id := v_assignee;
  reopened := v_reopened; claimed := v_claimed; handoff := v_handoff;
END $$;
COMMENT ON FUNCTION parley.store_message(uuid, text, text, text, jsonb) IS
  'The writing half of post_message: every check, the message row, the conversation''s new state, usage; no event. Returns the message, whether it was a resend (duplicate: the stored row, nothing written), the conversation''s status and assignee after it, and which events it calls for (reopened, claimed, handoff; message_added or note_added always unless duplicate), to be written with emit_message_events in the same transaction. Only post_message and post_visitor_messages call it: a message stored without its events would never reach the relay.';

-- The events of one stored message, in the order post_message always wrote them.
CREATE OR REPLACE FUNCTION parley.emit_message_events(
  p_message parley.messages, p_status text, p_assignee_id uuid, p_reopened boolean, p_claimed boolean,
  p_handoff boolean)
RETURNS void
LANGUAGE plpgsql
AS $$
BEGIN
  IF p_reopened THEN
    PERFORM parley.emit_event('reopened', p_message.conversation_id, NULL,
                              jsonb_build_object('status', p_status, 'by', 'visitor_message'));
  END IF;
  IF p_claimed THEN
    PERFORM parley.emit_event('claimed', p_message.conversation_id, NULL,
                              jsonb_build_object('assignee_id', p_assignee_id, 'implicit', true));
  END IF;
  PERFORM parley.emit_event(CASE WHEN p_message.author = 'note' THEN 'note_added' ELSE 'message_added' END,
                            p_message.conversation_id, p_message.id, jsonb_build_object('author', p_message.author));
  IF p_handoff THEN
    PERFORM parley.emit_event('human_requested', p_message.conversation_id, NULL, jsonb_build_object('reason', 'bot_misses'));
  END IF;
END $$;
COMMENT ON FUNCTION parley.emit_message_events(parley.messages, text, uuid, boolean, boolean, boolean) IS
  'Write the events of a message stored by store_message (reopened, claimed, message_added or note_added, human_requested, as flagged); the first event of the transaction sends its NOTIFY.';

CREATE OR REPLACE FUNCTION parley.post_message(
  p_conversation_id uuid, p_author text, p_body text, p_client_id text DEFAULT NULL, p_meta jsonb DEFAULT '{}')
RETURNS parley.messages
LANGUAGE plpgsql
AS $$
DECLARE
  v record;
BEGIN
  SELECT * INTO v FROM parley.store_message(p_conversation_id, p_author, p_body, p_client_id, p_meta);
  IF NOT v.duplicate THEN
    PERFORM parley.emit_message_events(v.message, v.status, v.assignee_id, v.reopened, v.claimed, v.handoff);
  END IF;
  RETURN v.message;
END $$;
COMMENT ON FUNCTION parley.post_message(uuid, text, text, text, jsonb) IS
  'Store one message. Idempotent on (conversation, client_id): a resend returns the stored row with no new event (tell it apart: its created_at < now(), i.e. it was stored by an earlier transaction). Visitors post only visitor messages into their own conversation (403); members post agent/note. Visitor messages: per-chatbot and per-IP messages-per-minute limits (429 rate_limited), and a visitor message to a closed conversation reopens it (status bot). Bot messages: ai_msgs_per_day (402), refused while a human has the conversation (409); meta.miss=true counts toward handoff.miss_threshold. Agent messages claim an unassigned conversation, 409 if assigned to someone else. Body 1..4000 chars (16000 for bot/system). Updates last_activity_at/last_message_id (not for notes), counts usage, writes message_added (note_added for notes) and sends one NOTIFY.';

-- Visitor messages of one tenant, many per statement: most of PostgreSQL's time per message
-- was the round trip, the transaction and its WAL flush, not the work (bench/chat_flow.py),
-- so the server hands over what arrived together (pyapp/message_batch.py). Each message is
-- exactly what post_message would do for that visitor: the actor is set per message with
-- begin_request (its conversation, IP and request id), and each step runs in a subtransaction
-- of that message's own, so a refused message (rate limit, validation, a conversation of
-- another tenant, a lock it could not get) is rolled back alone and reported in its row,
-- while the others commit.
--
-- Lock order (see the header) holds for the batch as a whole, in three passes over the
-- messages in conversation id order:
--   1. lock every conversation (two batches never wait for each other crosswise, and a batch
--      holds nothing else yet, so a single writer holding a conversation and wanting a usage
--      row cannot be waiting for it);
--   2. store every message (limits, usage and rate-limit rows, the message, the conversation);
--   3. write the events: nothing is awaited after the first one.
-- A lock is awaited at most a second in passes 1 and 2, so a conversation held by a long
-- transaction does not hold up the rest. At most 24 messages: each one's two subtransactions
-- keep their ids until commit, and past 64 a backend's subtransaction cache overflows, which
-- makes every snapshot in the cluster slower.
CREATE OR REPLACE FUNCTION parley.post_visitor_messages(
  p_tenant_id uuid, p_conversation_ids uuid[], p_bodies text[], p_client_ids text[], p_ips text[],
  p_request_ids text[])
RETURNS TABLE (ord int, message jsonb, duplicate boolean, status text,
               error_state text, error_message text, error_hint text)
LANGUAGE plpgsql
AS $$
DECLARE
  v_n int := coalesce(cardinality(p_conversation_ids), 0);
  -- The messages in conversation id order (then array order), and what became of each.
  v_ord int[];
  v_conv uuid[];
  v_body text[];
  v_client_id text[];
  v_ip text[];
  v_request_id text[];
  v_state text[] := array_fill(NULL::text, ARRAY[v_n]);
  v_text text[] := array_fill(NULL::text, ARRAY[v_n]);
  v_hint text[] := array_fill(NULL::text, ARRAY[v_n]);
  v_stored_message parley.messages[] := array_fill(NULL::parley.messages, ARRAY[v_n]);
  v_status text[] := array_fill(NULL::text, ARRAY[v_n]);
  v_reopened boolean[] := array_fill(NULL::boolean, ARRAY[v_n]);
  v_duplicate boolean[] := array_fill(NULL::boolean, ARRAY[v_n]);
  v_stored record;
  v_role text;
  v_e_state text;
  v_e_text text;
  v_e_hint text;
  v_lock_timeout text := current_setting('lock_timeout');
BEGIN
  IF v_n > 24 THEN
    PERFORM parley.raise_error(413, 'batch_too_large', 'At most 24 messages per batch.');
  END IF;
  IF coalesce(cardinality(p_bodies), 0) <> v_n OR coalesce(cardinality(p_client_ids), 0) <> v_n
     OR coalesce(cardinality(p_ips), 0) <> v_n OR coalesce(cardinality(p_request_ids), 0) <> v_n THEN
    PERFORM parley.raise_error(422, 'invalid_batch', 'Every array needs one entry per message.');
  END IF;
  IF v_n = 0 THEN
    RETURN;
  END IF;
  SELECT array_agg(x.n::int ORDER BY x.conversation_id, x.n), array_agg(x.conversation_id ORDER BY x.conversation_id, x.n),
         array_agg(x.body ORDER BY x.conversation_id, x.n), array_agg(x.client_id ORDER BY x.conversation_id, x.n),
         array_agg(x.ip ORDER BY x.conversation_id, x.n), array_agg(x.request_id ORDER BY x.conversation_id, x.n)
    INTO v_ord, v_conv, v_body, v_client_id, v_ip, v_request_id
    FROM unnest(p_conversation_ids, p_bodies, p_client_ids, p_ips, p_request_ids) WITH ORDINALITY
         AS x(conversation_id, body, client_id, ip, request_id, n);

  PERFORM set_config('lock_timeout', '1s', true);
  -- 1. The conversations.
  FOR i IN 1..v_n LOOP
    BEGIN
      v_role := parley.begin_request(p_tenant_id, 'visitor', v_conv[i]::text, NULL, v_ip[i], v_request_id[i],
                                     'visitor');
      PERFORM parley.lock_conversation(v_conv[i]);
    EXCEPTION WHEN others THEN  -- not query_canceled: a cancel ends the whole batch
      GET STACKED DIAGNOSTICS v_e_state = RETURNED_SQLSTATE, v_e_text = MESSAGE_TEXT, v_e_hint = PG_EXCEPTION_HINT;
      v_state[i] := v_e_state; v_text[i] := v_e_text; v_hint[i] := v_e_hint;
    END;
  END LOOP;
  -- 2. The messages.
  FOR i IN 1..v_n LOOP
    CONTINUE WHEN v_state[i] IS NOT NULL;
    BEGIN
      v_role := parley.begin_request(p_tenant_id, 'visitor', v_conv[i]::text, NULL, v_ip[i], v_request_id[i],
                                     'visitor');
      SELECT * INTO v_stored FROM parley.store_message(v_conv[i], 'visitor', v_body[i], v_client_id[i], '{}');
      v_stored_message[i] := v_stored.message;
      v_status[i] := v_stored.status;
      v_reopened[i] := v_stored.reopened;
      v_duplicate[i] := v_stored.duplicate;
    EXCEPTION WHEN others THEN
      GET STACKED DIAGNOSTICS v_e_state = RETURNED_SQLSTATE, v_e_text = MESSAGE_TEXT, v_e_hint = PG_EXCEPTION_HINT;
      v_state[i] := v_e_state; v_text[i] := v_e_text; v_hint[i] := v_e_hint;
    END;
  END LOOP;
  PERFORM set_config('lock_timeout', v_lock_timeout, true);
  -- 3. The events, each as written by its own visitor. (A visitor message never claims a
  --    conversation or hands it off: only reopened varies.)
  FOR i IN 1..v_n LOOP
    CONTINUE WHEN v_state[i] IS NOT NULL OR v_duplicate[i];
    v_role := parley.begin_request(p_tenant_id, 'visitor', v_conv[i]::text, NULL, v_ip[i], v_request_id[i], 'visitor');
    PERFORM parley.emit_message_events(v_stored_message[i], v_status[i], NULL, v_reopened[i], false, false);
  END LOOP;

  FOR i IN 1..v_n LOOP
    ord := v_ord[i];
    message := CASE WHEN v_state[i] IS NULL THEN parley.message_json(v_stored_message[i], true) END;
    duplicate := v_duplicate[i];
    status := v_status[i];
    error_state := v_state[i];
    error_message := v_text[i];
    error_hint := v_hint[i];
    RETURN NEXT;
  END LOOP;
END $$;
COMMENT ON FUNCTION parley.post_visitor_messages(uuid, uuid[], text[], text[], text[], text[]) IS
  'Store up to 24 visitor messages of one tenant in one transaction, each as post_message would for that visitor (actor = the conversation, with its IP and request id; all its checks, limits, idempotency and events). One row per message (ord = its position in the arrays, rows in conversation order): message (visitor shape), duplicate (a resend: the stored row, no event), status (the conversation''s after it), or error_state/error_message/error_hint (SQLSTATE, message and stable code of the error that refused that message alone; nothing of it was written). Locks all conversations first (in id order), then stores the messages, then writes the events, so the batch keeps the lock order of single writers and awaits no lock after its first event. A message waits at most 1 s for a lock (then 55P03 in its row), so one busy conversation does not hold up the others.';
REVOKE ALL ON FUNCTION parley.post_visitor_messages(uuid, uuid[], text[], text[], text[], text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION parley.post_visitor_messages(uuid, uuid[], text[], text[], text[], text[]) TO parley_app;

CREATE OR REPLACE FUNCTION parley.agent_reply(p_conversation_id uuid, p_body text, p_client_id text DEFAULT NULL)
RETURNS parley.messages
LANGUAGE plpgsql
AS $$
BEGIN
  PERFORM parley.require_staff();
  RETURN parley.post_message(p_conversation_id, 'agent', p_body, p_client_id, '{}');
END $$;
COMMENT ON FUNCTION parley.agent_reply(uuid, text, text) IS
  'An agent''s reply. Decision: replying to an unassigned conversation (bot or waiting_human) claims it implicitly (status human, assignee = the agent); a conversation assigned to another agent gives 409 invalid_transition; closed gives 409. Idempotent on client_id.';

CREATE OR REPLACE FUNCTION parley.add_note(p_conversation_id uuid, p_body text, p_client_id text DEFAULT NULL)
RETURNS parley.messages
LANGUAGE plpgsql
AS $$
BEGIN
  PERFORM parley.require_staff();
  RETURN parley.post_message(p_conversation_id, 'note', p_body, p_client_id, '{}');
END $$;
COMMENT ON FUNCTION parley.add_note(uuid, text, text) IS
  'An internal note by a member (author note): never returned by visible_messages, event note_added; allowed in any status, does not change the status or the activity time.';

------------------------------------------------------------------------------------------
-- Transitions

CREATE OR REPLACE FUNCTION parley.request_human(p_conversation_id uuid)
RETURNS parley.conversations
LANGUAGE plpgsql
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
  UPDATE parley.conversations c SET status = 'waiting_human', last_activity_at = now()
   WHERE c.tenant_id = v_conv.tenant_id AND c.id = v_conv.id RETURNING * INTO v_conv;
  PERFORM parley.emit_event('human_requested', v_conv.id, NULL, jsonb_build_object('reason', 'requested'));
  RETURN v_conv;
END $$;
COMMENT ON FUNCTION parley.request_human(uuid) IS
  'bot → waiting_human (visitor or member); already waiting is a no-op; human/closed give 409 invalid_transition. Event human_requested.';

CREATE OR REPLACE FUNCTION parley.claim_conversation(p_conversation_id uuid)
RETURNS parley.conversations
LANGUAGE plpgsql
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
  UPDATE parley.conversations c SET status = 'human', assignee_id = v_user, last_activity_at = now()
   WHERE c.tenant_id = v_conv.tenant_id AND c.id = v_conv.id RETURNING * INTO v_conv;
  PERFORM parley.note_active_seat(v_user);
  PERFORM parley.emit_event('claimed', v_conv.id, NULL, jsonb_build_object('assignee_id', v_user));
  RETURN v_conv;
END $$;
COMMENT ON FUNCTION parley.claim_conversation(uuid) IS
  'The signed-in agent takes an unassigned conversation (bot / waiting_human / human without assignee → human, assignee = me). Claiming one''s own is a no-op; claimed by someone else or closed → 409. Exactly one of two concurrent claims wins. Event claimed.';

CREATE OR REPLACE FUNCTION parley.assign_conversation(p_conversation_id uuid, p_user_id uuid)
RETURNS parley.conversations
LANGUAGE plpgsql
AS $$
DECLARE
  v_conv parley.conversations;
  v_previous uuid;
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
  v_previous := v_conv.assignee_id;
  UPDATE parley.conversations c SET status = 'human', assignee_id = p_user_id, last_activity_at = now()
   WHERE c.tenant_id = v_conv.tenant_id AND c.id = v_conv.id RETURNING * INTO v_conv;
  PERFORM parley.emit_event('assigned', v_conv.id, NULL,
                            jsonb_build_object('assignee_id', p_user_id, 'previous_assignee_id', v_previous));
  RETURN v_conv;
END $$;
COMMENT ON FUNCTION parley.assign_conversation(uuid, uuid) IS
  'Give a conversation to a member (status human, assignee = p_user_id); 422 not_a_member, 409 when closed, no-op when already theirs. Event assigned.';

CREATE OR REPLACE FUNCTION parley.release_conversation(p_conversation_id uuid)
RETURNS parley.conversations
LANGUAGE plpgsql
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
  UPDATE parley.conversations c SET status = 'bot', assignee_id = NULL, last_activity_at = now()
   WHERE c.tenant_id = v_conv.tenant_id AND c.id = v_conv.id RETURNING * INTO v_conv;
  PERFORM parley.emit_event('released', v_conv.id, NULL, '{}');
  RETURN v_conv;
END $$;
COMMENT ON FUNCTION parley.release_conversation(uuid) IS
  'human / waiting_human → bot, unassigned (the assignee, an admin, or an API key); bot/closed → 409. Event released.';

CREATE OR REPLACE FUNCTION parley.close_conversation(p_conversation_id uuid)
RETURNS parley.conversations
LANGUAGE plpgsql
AS $$
DECLARE
  v_conv parley.conversations;
BEGIN
  v_conv := parley.lock_conversation(p_conversation_id);
  IF v_conv.status = 'closed' THEN
    PERFORM parley.raise_error(409, 'invalid_transition', 'The conversation is already closed.');
  END IF;
  UPDATE parley.conversations c SET status = 'closed', closed_at = now(), last_activity_at = now()
   WHERE c.tenant_id = v_conv.tenant_id AND c.id = v_conv.id RETURNING * INTO v_conv;
  PERFORM parley.emit_event('closed', v_conv.id, NULL, jsonb_build_object('reason', 'closed'));
  RETURN v_conv;
END $$;
COMMENT ON FUNCTION parley.close_conversation(uuid) IS
  'Any open status → closed (a member, or the visitor of this conversation); closed → 409. The assignee is kept for the record. Event closed.';

CREATE OR REPLACE FUNCTION parley.reopen_conversation(p_conversation_id uuid)
RETURNS parley.conversations
LANGUAGE plpgsql
AS $$
DECLARE
  v_user uuid := parley.current_user_id();
  v_conv parley.conversations;
BEGIN
  v_conv := parley.lock_conversation(p_conversation_id);
  IF v_conv.status <> 'closed' THEN
    PERFORM parley.raise_error(409, 'invalid_transition', 'Only a closed conversation can be reopened.');
  END IF;
  PERFORM parley.check_open_conversation_limit();
  UPDATE parley.conversations c
     SET status = CASE WHEN v_user IS NOT NULL THEN 'human' ELSE 'bot' END,
         assignee_id = v_user, closed_at = NULL, last_activity_at = now()
   WHERE c.tenant_id = v_conv.tenant_id AND c.id = v_conv.id RETURNING * INTO v_conv;
  PERFORM parley.emit_event('reopened', v_conv.id, NULL, jsonb_build_object('status', v_conv.status));
  RETURN v_conv;
END $$;
COMMENT ON FUNCTION parley.reopen_conversation(uuid) IS
  'closed → human assigned to the reopening agent (signed-in user), or → bot for anyone else; not closed → 409; 402 at max_open_conversations. Event reopened.';

CREATE OR REPLACE FUNCTION parley.close_idle_conversations(p_idle interval DEFAULT NULL)
RETURNS int
LANGUAGE plpgsql
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

------------------------------------------------------------------------------------------
-- Reading

CREATE OR REPLACE FUNCTION parley.visible_messages(p_conversation_id uuid, p_after_id bigint DEFAULT 0,
                                                   p_limit int DEFAULT 500)
RETURNS TABLE (id bigint, created_at timestamptz, author text, body text, client_id text, meta jsonb,
               author_name text, message jsonb)
LANGUAGE plpgsql STABLE
-- A conversation is read through its index, never by scanning the month (see post_message).
SET enable_seqscan = off
AS $$
DECLARE
  -- Bounds as plain variables: under RLS an expression such as coalesce(p_after_id, 0) is
  -- not known to be leakproof, so it would filter rows after the scan instead of bounding it.
  v_after bigint := coalesce(p_after_id, 0);
  v_limit int := least(greatest(coalesce(p_limit, 500), 1), 1000);
BEGIN
  IF parley.current_actor_kind() = 'visitor'
     AND parley.current_actor_id() IS DISTINCT FROM p_conversation_id::text THEN
    PERFORM parley.raise_error(403, 'forbidden', 'Visitors can only read their own conversation.');
  END IF;
  IF NOT EXISTS (SELECT 1 FROM parley.conversations c
                  WHERE c.tenant_id = parley.current_tenant_id() AND c.id = p_conversation_id) THEN
    PERFORM parley.raise_error(404, 'not_found', 'No such conversation.');
  END IF;
  RETURN QUERY
    SELECT m.id, m.created_at, m.author, m.body, m.client_id, m.meta, j.doc->>'author_name', j.doc
      FROM parley.messages m
      CROSS JOIN LATERAL (SELECT parley.message_json(m, true) AS doc) j
     WHERE m.tenant_id = parley.current_tenant_id() AND m.conversation_id = p_conversation_id
       AND m.id > v_after AND m.author <> 'note'
     ORDER BY m.id
     LIMIT v_limit;
END $$;
COMMENT ON FUNCTION parley.visible_messages(uuid, bigint, int) IS
  'Messages a visitor may see (every author except note) with id > p_after_id, oldest first, at most p_limit (≤ 1000). message is the protocol''s visitor-safe message object (no author ids, no meta). A visitor may only read its own conversation (403).';

CREATE OR REPLACE FUNCTION parley.events_after(p_after_id bigint, p_limit int DEFAULT 100)
RETURNS TABLE (id bigint, at timestamptz, kind text, conversation_id uuid, message_id bigint,
               actor_kind text, actor_id text, data jsonb, message jsonb, conversation jsonb)
LANGUAGE plpgsql VOLATILE
-- A custom plan knows the LIMIT and always looks cheaper than the generic one, so the read
-- was planned afresh on every call (0.8 ms, more than running it); the generic plan is the
-- same shape (the partitions are pruned at run time either way). And, as in post_message, a
-- plan cached while the month's partitions were small must not be a sequential scan.
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
AS $$
DECLARE
  -- Plain variables, so that "e.id > v_after" bounds the index scan (see visible_messages).
  v_after bigint := coalesce(p_after_id, 0);
  v_limit int := least(greatest(coalesce(p_limit, 100), 1), 1000);
  v_key int := hashtext(parley.current_tenant_id()::text);
  v_high bigint;
BEGIN
  PERFORM parley.require_staff();
  -- The barrier (see the header): wait for the tenant's writers in flight, note the horizon
  -- (the last event id handed out, to anyone), let writers go again. While it waits, new
  -- writers queue behind it; the lock timeout bounds that stall when a writer keeps its
  -- transaction open (55P03: the caller retries later). The lock is session-level so that it
  -- ends right after the horizon is read, not after the read below; the handler makes sure
  -- no error or cancel can leave a pooled session holding it.
  PERFORM set_config('lock_timeout', '250ms', true);
  BEGIN
    PERFORM pg_advisory_lock(7261003, v_key);
    SELECT CASE WHEN s.is_called THEN s.last_value ELSE 0 END INTO v_high FROM parley.events_id_seq s;
    PERFORM pg_advisory_unlock(7261003, v_key);
  EXCEPTION WHEN query_canceled OR others THEN
    IF EXISTS (SELECT 1 FROM pg_locks l
                WHERE l.locktype = 'advisory' AND l.pid = pg_backend_pid() AND l.mode = 'ExclusiveLock'
                  AND l.classid = 7261003 AND l.objid = v_key::oid AND l.objsubid = 2) THEN
      PERFORM pg_advisory_unlock(7261003, v_key);
    END IF;
    RAISE;
  END;
  -- VOLATILE: this query takes its snapshot now, after every writer holding an id up to
  -- v_high has ended; ids above it may still be in flight and wait for the next read.
  RETURN QUERY
    SELECT e.id, e.at, e.kind, e.conversation_id, e.message_id, e.actor_kind, e.actor_id, e.data,
           -- A message's event is written in its transaction (at = created_at = now()); the
           -- created_at range only lets each lookup visit one partition. The conversation_id
           -- makes it one probe of (tenant_id, conversation_id, id) whatever the statistics
           -- say (without them the planner skip-scanned that index once per conversation).
           (SELECT parley.message_json(m) FROM parley.messages m
             WHERE m.tenant_id = e.tenant_id AND m.conversation_id = e.conversation_id AND m.id = e.message_id
               AND m.created_at BETWEEN e.at - interval '1 day' AND e.at + interval '1 day'),
           (SELECT parley.conversation_json(c) FROM parley.conversations c
             WHERE c.tenant_id = e.tenant_id AND c.id = e.conversation_id)
      FROM parley.events e
     WHERE e.tenant_id = parley.current_tenant_id() AND e.id > v_after AND e.id <= v_high
     ORDER BY e.id
     LIMIT v_limit;
END $$;
COMMENT ON FUNCTION parley.events_after(bigint, int) IS
  'The current tenant''s events with id > p_after_id, oldest first (≤ 1000), for the relay, the agent socket and SSE. message = the message (staff shape, notes included: never forward kind note_added to visitors) for message_added/note_added; conversation = the conversation''s CURRENT summary. It first takes the tenant''s event lock (7261003) EXCLUSIVE, waiting for writers in flight, reads the horizon (the events sequence''s last value) and releases the lock; it returns events up to the horizon only, so no event with a smaller id than those returned can appear later: resuming after the last seen id never skips (events above the horizon come with the next read). Waits at most 250 ms (sets lock_timeout for the transaction), then raises 55P03 lock_not_available: retry. The lock is session-level for that moment only; an error or cancel while holding it releases it. Members and the service actor only (403 for visitors).';

CREATE OR REPLACE FUNCTION parley.search_conversation_ids(p_query text, p_limit int DEFAULT 200)
RETURNS TABLE (conversation_id uuid)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = ''
AS $$
DECLARE
  v_tenant uuid := parley.current_tenant_id();
  v_query tsquery;
BEGIN
  -- Definer (owned by parley_auth, BYPASSRLS) so the planner may use the (tenant_id, tsvector)
  -- GIN index: under RLS, @@ is not leakproof and cannot be an index condition. The tenant
  -- filter is therefore explicit, and the caller must be a member of that tenant.
  IF v_tenant IS NULL OR parley.current_actor_kind() = 'visitor'
     OR parley.role_rank(coalesce(current_setting('app.role', true), '')) < parley.role_rank('agent') THEN
    PERFORM parley.raise_error(403, 'forbidden', 'Only members can search conversations.');
  END IF;
  v_query := websearch_to_tsquery('simple'::regconfig, coalesce(p_query, ''));
  IF numnode(v_query) = 0 THEN
    RETURN;
  END IF;
  RETURN QUERY
    SELECT DISTINCT m.conversation_id FROM parley.messages m
     WHERE m.tenant_id = v_tenant AND to_tsvector('simple'::regconfig, m.body) @@ v_query
     LIMIT least(greatest(coalesce(p_limit, 200), 1), 5000);
END $$;
COMMENT ON FUNCTION parley.search_conversation_ids(text, int) IS
  'Full-text search (websearch syntax, ''simple'' configuration, notes included) over the current tenant''s messages; returns matching conversation ids. SECURITY DEFINER owned by parley_auth so the tenant-led GIN index is usable; filters by parley.current_tenant_id() explicitly; members only.';
ALTER FUNCTION parley.search_conversation_ids(text, int) OWNER TO parley_auth;
REVOKE ALL ON FUNCTION parley.search_conversation_ids(text, int) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION parley.search_conversation_ids(text, int) TO parley_app;

CREATE OR REPLACE FUNCTION parley.list_conversations(
  p_status text DEFAULT NULL, p_assignee_id uuid DEFAULT NULL, p_chatbot_id uuid DEFAULT NULL,
  p_from timestamptz DEFAULT NULL, p_to timestamptz DEFAULT NULL, p_q text DEFAULT NULL,
  p_before timestamptz DEFAULT NULL, p_limit int DEFAULT 50)
RETURNS SETOF jsonb
LANGUAGE plpgsql STABLE
AS $$
DECLARE
  v_ids uuid[];
BEGIN
  PERFORM parley.require_staff();
  IF nullif(btrim(p_q), '') IS NOT NULL THEN
    v_ids := ARRAY(SELECT s.conversation_id FROM parley.search_conversation_ids(p_q, 5000) s);
  END IF;
  RETURN QUERY
    SELECT parley.conversation_json(c) || jsonb_build_object(
             'last_message', (SELECT parley.message_json(m) FROM parley.messages m
                               WHERE m.tenant_id = c.tenant_id AND m.conversation_id = c.id AND m.id = c.last_message_id))
      FROM parley.conversations c
     WHERE c.tenant_id = parley.current_tenant_id()
       AND (p_status IS NULL OR c.status = p_status)
       AND (p_assignee_id IS NULL OR c.assignee_id = p_assignee_id)
       AND (p_chatbot_id IS NULL OR c.chatbot_id = p_chatbot_id)
       AND (p_from IS NULL OR c.created_at >= p_from)
       AND (p_to IS NULL OR c.created_at < p_to)
       AND (p_before IS NULL OR c.last_activity_at < p_before)
       AND (v_ids IS NULL OR c.id = ANY (v_ids))
     ORDER BY c.last_activity_at DESC, c.id
     LIMIT least(greatest(coalesce(p_limit, 50), 1), 200);
END $$;
COMMENT ON FUNCTION parley.list_conversations(text, uuid, uuid, timestamptz, timestamptz, text, timestamptz, int) IS
  'Members: the tenant''s conversations, most recently active first, filtered by status, assignee, chatbot, creation date range [p_from, p_to), full-text p_q over messages (notes included), and keyset p_before (last_activity_at). Each row is conversation_json plus last_message.';

------------------------------------------------------------------------------------------
-- Leads. Status workflow: new → contacted | qualified | lost; contacted → qualified | won | lost;
-- qualified → contacted | won | lost; lost → new (reopened); won is final.

CREATE OR REPLACE FUNCTION parley.check_lead_fields(p_name text, p_email text, p_phone text, p_custom jsonb)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
  IF p_email IS NOT NULL AND (length(p_email) > 320 OR p_email !~ '^[^@\s]+@[^@\s]+\.[^@\s]+$') THEN
    PERFORM parley.raise_error(422, 'invalid_email', 'That email address does not look right.');
  END IF;
  IF p_phone IS NOT NULL AND (length(p_phone) > 50 OR p_phone !~ '^[0-9+()./ -]{3,50}$') THEN
    PERFORM parley.raise_error(422, 'invalid_phone', 'That phone number does not look right.');
  END IF;
  IF p_name IS NOT NULL AND length(p_name) > 200 THEN
    PERFORM parley.raise_error(422, 'invalid_name', 'A name is at most 200 characters.');
  END IF;
  IF p_custom IS NOT NULL AND (jsonb_typeof(p_custom) <> 'object' OR octet_length(p_custom::text) > 8192) THEN
    PERFORM parley.raise_error(422, 'invalid_custom', 'custom must be a JSON object of at most 8 KiB.');
  END IF;
END $$;
COMMENT ON FUNCTION parley.check_lead_fields(text, text, text, jsonb) IS 'Validate lead fields (422 with a field-specific code).';

CREATE OR REPLACE FUNCTION parley.capture_lead(p_conversation_id uuid, p_name text, p_email text, p_phone text,
                                               p_custom jsonb DEFAULT '{}')
RETURNS parley.leads
LANGUAGE plpgsql
AS $$
DECLARE
  v_conv parley.conversations;
  v_lead parley.leads;
  v_name text := parley.clean_text(p_name, 201);
  v_email text := lower(parley.clean_text(p_email, 321));
  v_phone text := parley.clean_text(p_phone, 51);
BEGIN
  v_conv := parley.lock_conversation(p_conversation_id);
  IF v_name IS NULL AND v_email IS NULL AND v_phone IS NULL THEN
    PERFORM parley.raise_error(422, 'empty_lead', 'Give at least a name, an email or a phone number.');
  END IF;
  PERFORM parley.check_lead_fields(v_name, v_email, v_phone, coalesce(p_custom, '{}'));
  -- One lead per conversation: a second form fills in / updates the first.
  INSERT INTO parley.leads AS l (tenant_id, chatbot_id, conversation_id, name, email, phone, custom)
  VALUES (v_conv.tenant_id, v_conv.chatbot_id, v_conv.id, v_name, v_email, v_phone, coalesce(p_custom, '{}'))
  ON CONFLICT (tenant_id, conversation_id) WHERE conversation_id IS NOT NULL DO UPDATE
     SET name = coalesce(EXCLUDED.name, l.name), email = coalesce(EXCLUDED.email, l.email),
         phone = coalesce(EXCLUDED.phone, l.phone), custom = l.custom || EXCLUDED.custom, updated_at = now()
  RETURNING * INTO v_lead;
  PERFORM parley.emit_event('lead_captured', v_conv.id, NULL, jsonb_build_object('lead_id', v_lead.id));
  RETURN v_lead;
END $$;
COMMENT ON FUNCTION parley.capture_lead(uuid, text, text, text, jsonb) IS
  'The lead form of a conversation (visitor of that conversation, or a member): creates the conversation''s lead or updates it (non-empty fields replace, custom merges). 422 on an invalid email/phone or when all are empty. Event lead_captured.';

CREATE OR REPLACE FUNCTION parley.create_lead(p_chatbot_id uuid, p_name text, p_email text, p_phone text,
                                              p_custom jsonb DEFAULT '{}')
RETURNS parley.leads
LANGUAGE plpgsql
AS $$
DECLARE
  v_lead parley.leads;
  v_name text := parley.clean_text(p_name, 201);
  v_email text := lower(parley.clean_text(p_email, 321));
  v_phone text := parley.clean_text(p_phone, 51);
BEGIN
  PERFORM parley.require_staff();
  IF v_name IS NULL AND v_email IS NULL AND v_phone IS NULL THEN
    PERFORM parley.raise_error(422, 'empty_lead', 'Give at least a name, an email or a phone number.');
  END IF;
  PERFORM parley.check_lead_fields(v_name, v_email, v_phone, coalesce(p_custom, '{}'));
  IF p_chatbot_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM parley.chatbots b
      WHERE b.tenant_id = parley.current_tenant_id() AND b.id = p_chatbot_id) THEN
    PERFORM parley.raise_error(404, 'not_found', 'No such chatbot.');
  END IF;
  INSERT INTO parley.leads (tenant_id, chatbot_id, name, email, phone, custom)
  VALUES (parley.current_tenant_id(), p_chatbot_id, v_name, v_email, v_phone, coalesce(p_custom, '{}'))
  RETURNING * INTO v_lead;
  RETURN v_lead;
END $$;
COMMENT ON FUNCTION parley.create_lead(uuid, text, text, text, jsonb) IS 'Members: record a lead by hand (no conversation).';

DROP FUNCTION IF EXISTS parley.update_lead(uuid, text, text, text, jsonb);
CREATE OR REPLACE FUNCTION parley.update_lead(p_lead_id uuid, p_name text DEFAULT NULL, p_email text DEFAULT NULL,
                                              p_phone text DEFAULT NULL, p_custom jsonb DEFAULT NULL,
                                              p_status text DEFAULT NULL)
RETURNS parley.leads
LANGUAGE plpgsql
AS $$
DECLARE
  v_lead parley.leads;
BEGIN
  PERFORM parley.require_staff();
  PERFORM parley.check_lead_fields(parley.clean_text(p_name, 201), lower(parley.clean_text(p_email, 321)),
                                   parley.clean_text(p_phone, 51), p_custom);
  UPDATE parley.leads l
     SET name = CASE WHEN p_name IS NULL THEN l.name ELSE parley.clean_text(p_name, 201) END,
         email = CASE WHEN p_email IS NULL THEN l.email ELSE lower(parley.clean_text(p_email, 321)) END,
         phone = CASE WHEN p_phone IS NULL THEN l.phone ELSE parley.clean_text(p_phone, 51) END,
         custom = coalesce(p_custom, l.custom), updated_at = now()
   WHERE l.tenant_id = parley.current_tenant_id() AND l.id = p_lead_id
  RETURNING * INTO v_lead;
  IF NOT FOUND THEN
    PERFORM parley.raise_error(404, 'not_found', 'No such lead.');
  END IF;
  IF p_status IS NOT NULL THEN
    v_lead := parley.set_lead_status(p_lead_id, p_status);
  END IF;
  RETURN v_lead;
END $$;
COMMENT ON FUNCTION parley.update_lead(uuid, text, text, text, jsonb, text) IS
  'Members: change a lead''s fields (NULL keeps, empty string clears; custom replaces) and, with p_status, move its status through set_lead_status (409 on an invalid move). 404 when not in this tenant.';

CREATE OR REPLACE FUNCTION parley.set_lead_status(p_lead_id uuid, p_status text)
RETURNS parley.leads
LANGUAGE plpgsql
AS $$
DECLARE
  v_lead parley.leads;
BEGIN
  PERFORM parley.require_staff();
  SELECT * INTO v_lead FROM parley.leads l
   WHERE l.tenant_id = parley.current_tenant_id() AND l.id = p_lead_id FOR UPDATE;
  IF NOT FOUND THEN
    PERFORM parley.raise_error(404, 'not_found', 'No such lead.');
  END IF;
  IF p_status IS NULL OR p_status NOT IN ('new', 'contacted', 'qualified', 'won', 'lost') THEN
    PERFORM parley.raise_error(422, 'invalid_status', 'status must be new, contacted, qualified, won or lost.');
  END IF;
  IF v_lead.status = p_status THEN
    RETURN v_lead;
  END IF;
  IF NOT (v_lead.status, p_status) IN (('new', 'contacted'), ('new', 'qualified'), ('new', 'lost'),
                                       ('contacted', 'qualified'), ('contacted', 'won'), ('contacted', 'lost'),
                                       ('qualified', 'contacted'), ('qualified', 'won'), ('qualified', 'lost'),
                                       ('lost', 'new')) THEN
    PERFORM parley.raise_error(409, 'invalid_transition', format('A %s lead cannot become %s.', v_lead.status, p_status));
  END IF;
  UPDATE parley.leads l SET status = p_status, updated_at = now()
   WHERE l.tenant_id = v_lead.tenant_id AND l.id = v_lead.id RETURNING * INTO v_lead;
  RETURN v_lead;
END $$;
COMMENT ON FUNCTION parley.set_lead_status(uuid, text) IS
  'Members: move a lead along new → contacted → qualified → won | lost (lost → new reopens; won is final); other moves 409 invalid_transition, same status is a no-op.';

CREATE OR REPLACE FUNCTION parley.delete_lead(p_lead_id uuid)
RETURNS void
LANGUAGE plpgsql
AS $$
BEGIN
  PERFORM parley.require_staff();
  DELETE FROM parley.leads l WHERE l.tenant_id = parley.current_tenant_id() AND l.id = p_lead_id;
  IF NOT FOUND THEN
    PERFORM parley.raise_error(404, 'not_found', 'No such lead.');
  END IF;
  PERFORM parley.write_audit('lead.delete', 'lead', p_lead_id::text, '{}');
END $$;
COMMENT ON FUNCTION parley.delete_lead(uuid) IS 'Members: delete a lead (audited).';

-- The app calls these; jobs call the sweeps. (Functions default to EXECUTE for PUBLIC,
-- but the tables behind them are granted only to the roles above.)
GRANT EXECUTE ON FUNCTION parley.close_idle_conversations(interval),
  parley.emit_event(text, uuid, bigint, jsonb), parley.lock_conversation(uuid) TO parley_jobs;
