-- Messages: storing and posting them (one at a time, or visitor messages in batches), agent
-- replies and notes, and the visitor's read of a conversation. Message ids of one conversation
-- increase in commit order: every writer holds the conversation row lock (SELECT ... FOR UPDATE
-- in parley.lock_conversation, 41_conversations.sql) from before nextval() until commit, so
-- resuming with visible_messages(conversation, last_seen_id) is exact. Events, NOTIFY and the
-- lock order every writer keeps: 45_events.sql.

SELECT parley.apply_tenant_policies('parley.messages');

SELECT parley.ensure_policy('parley.messages', 'select_visitor_own', $$AS RESTRICTIVE FOR SELECT
  USING ((SELECT parley.current_actor_kind()) <> 'visitor'
         OR (conversation_id::text = (SELECT parley.current_actor_id()) AND author <> 'note'))$$);

GRANT SELECT, INSERT ON parley.messages TO parley_app;
GRANT USAGE ON SEQUENCE parley.messages_id_seq TO parley_app, parley_jobs;
GRANT SELECT, DELETE ON parley.messages TO parley_jobs;
-- Cross-tenant reader owned by parley_auth (search within the caller's tenant).
GRANT SELECT ON parley.messages TO parley_auth;

------------------------------------------------------------------------------------------
-- The message object

-- The JSON builders below are plain expressions with no sub-SELECT, so Postgres inlines them
-- into the calling query (a function with a sub-SELECT runs through the SQL-function executor
-- on every row: measured 70-240 µs a call here, against ~10 µs inlined). The name lookups
-- they need live in the small plpgsql functions first, which return at once when there is
-- nothing to look up.
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
         -- A reply that offers a person: the widget shows a button, and a yes hands off.
         || CASE WHEN p_message.meta->'offer_human' = 'true'::jsonb THEN '{"offer_human": true}'::jsonb
                 ELSE '{}'::jsonb END
         || CASE WHEN p_for_visitor THEN '{}'::jsonb
                 ELSE jsonb_build_object('author_id', p_message.author_id, 'meta', p_message.meta) END
$$;
COMMENT ON FUNCTION parley.message_json(parley.messages, boolean) IS
  'A message as the protocol''s "message" object (id, author, body, client_id, created_at, author_name, citations, stream_id, offer_human when the message offers a person); for staff also author_id and meta. Visitors get no author ids and no meta. Inlined into the caller (no sub-SELECT).';
------------------------------------------------------------------------------------------
-- Writing
CREATE OR REPLACE FUNCTION parley.store_message(
  p_conversation_id uuid, p_author text, p_body text, p_client_id text, p_meta jsonb,
  OUT message parley.messages, OUT duplicate boolean, OUT status text, OUT assignee_id uuid,
  OUT reopened boolean, OUT claimed boolean, OUT handoff boolean)
LANGUAGE plpgsql VOLATILE
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
  -- Bodies: not blank; at most message_body_max characters (4000 from people, 16000 from the
  -- bot/system); no control or text-direction characters.
  -- (NUL cannot reach here: Postgres text refuses it and the API answers 422 first.)
  IF p_body IS NULL OR btrim(p_body, E' \t\r\n') = '' THEN
    PERFORM parley.raise_error(422, 'empty_body', 'The message is empty.');
  END IF;
  IF length(p_body) > parley.message_body_max(p_author) THEN
    PERFORM parley.raise_error(422, 'body_too_long',
      format('A message is at most %s characters.', parley.message_body_max(p_author)));
  END IF;
  -- The text rule (15_text.sql): whichever way a message comes, Python's checks or none.
  PERFORM parley.check_text(p_body, 'invalid_text', 'A message');
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
      -- A returning visitor continues a conversation closed less than the chatbot's
      -- reopen_window_minutes ago (default 30; 0 = never) that the visitor has not rated;
      -- otherwise the widget starts a new conversation (409 conversation_closed).
      SELECT parley.jsonb_int(b.config -> 'reopen_window_minutes') INTO v_threshold
        FROM parley.chatbots b WHERE b.tenant_id = v_conv.tenant_id AND b.id = v_conv.chatbot_id;
      IF v_conv.closed_at < now() - make_interval(mins => greatest(coalesce(v_threshold, 30), 0))
         OR EXISTS (SELECT 1 FROM parley.conversation_ratings r
                     WHERE r.tenant_id = v_conv.tenant_id AND r.conversation_id = v_conv.id) THEN
        PERFORM parley.raise_error(409, 'conversation_closed',
          'This conversation has ended; a new message starts a new conversation.');
      END IF;
      v_threshold := NULL;
      PERFORM parley.check_open_conversation_limit();
      v_status := 'bot'; v_assignee := NULL; v_closed_at := NULL; v_reopened := true; v_misses := 0;
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
      v_misses := 0;
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
    IF coalesce(v_lim.msgs_per_min_conversation, 0) > 0 THEN
      PERFORM parley.hit_rate_limit('conversation', v_conv.id::text, v_lim.msgs_per_min_conversation);
    END IF;
    IF coalesce(v_lim.msgs_per_min_tenant, 0) > 0 THEN
      PERFORM parley.hit_rate_limit('tenant', 'all', v_lim.msgs_per_min_tenant);
    END IF;
  ELSIF p_author = 'bot' THEN
    IF coalesce(v_lim.ai_msgs_per_day, 0) > 0 THEN  -- concurrent replies count one after another
      PERFORM parley.lock_limit('usage:ai_messages');
    END IF;
    IF parley.limit_reached(v_lim.ai_msgs_per_day, parley.usage_on('ai_messages')) THEN
      PERFORM parley.raise_error(402, 'plan_limit',
        format('The daily allowance of %s AI replies is used up.', v_lim.ai_msgs_per_day));
    END IF;
    IF NOT v_lim.metered THEN
      PERFORM parley.check_allowance('ai_messages');  -- Free: this month's allowance is a hard cap
    END IF;
    -- The one handoff-after-misses rule (see 41_conversations.sql): an answer the bot could not
    -- ground (meta.grounded = false) is a miss; handoff.miss_threshold misses in a row hand the
    -- conversation to a person (2 when the chatbot does not say; 0 = never); a grounded answer
    -- starts the count again.
    IF p_meta->'grounded' = 'false'::jsonb THEN
      v_misses := v_misses + 1;
      SELECT parley.jsonb_int(b.config #> '{handoff,miss_threshold}') INTO v_threshold
        FROM parley.chatbots b WHERE b.tenant_id = v_conv.tenant_id AND b.id = v_conv.chatbot_id;
      IF v_status = 'bot' AND coalesce(v_threshold, 2) > 0 AND v_misses >= coalesce(v_threshold, 2) THEN
        v_status := 'waiting_human';
        v_handoff := true;
        v_misses := 0;
      END IF;
    ELSIF p_meta->'grounded' = 'true'::jsonb THEN
      v_misses := 0;
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
  -- What needs a bot turn: a visitor message that leaves the conversation with the bot. Its turn
  -- is a claim written here, in the message's own transaction, named after the server storing it
  -- (sql/53_bot_turns.sql).
  IF p_author = 'visitor' AND v_status = 'bot' THEN
    INSERT INTO parley.bot_turns (tenant_id, question_id, conversation_id, leased_by)
    VALUES (v_conv.tenant_id, message.id, v_conv.id, parley.storing_server());
  END IF;

  duplicate := false; status := v_status; assignee_id := v_assignee;
  reopened := v_reopened; claimed := v_claimed; handoff := v_handoff;
END $$;
COMMENT ON FUNCTION parley.store_message(uuid, text, text, text, jsonb) IS
  'The writing half of post_message: every check, the message row, the conversation''s new state, usage, and for a visitor message that leaves the conversation with the bot its turn (parley.bot_turns); no event. Returns the message, whether it was a resend (duplicate: the stored row, nothing written), the conversation''s status and assignee after it, and which events it calls for (reopened, claimed, handoff; message_added or note_added always unless duplicate), to be written with emit_message_events in the same transaction. Only post_message and post_visitor_messages call it: a message stored without its events would never reach the relay.';

-- The events of one stored message, in the order post_message always wrote them.
CREATE OR REPLACE FUNCTION parley.emit_message_events(
  p_message parley.messages, p_status text, p_assignee_id uuid, p_reopened boolean, p_claimed boolean,
  p_handoff boolean)
RETURNS void
LANGUAGE plpgsql VOLATILE
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
    PERFORM parley.emit_event('human_requested', p_message.conversation_id, NULL, parley.handoff_data('bot_misses'));
  END IF;
END $$;
COMMENT ON FUNCTION parley.emit_message_events(parley.messages, text, uuid, boolean, boolean, boolean) IS
  'Write the events of a message stored by store_message (reopened, claimed, message_added or note_added, human_requested, as flagged); the first event of the transaction sends its NOTIFY.';

CREATE OR REPLACE FUNCTION parley.post_message(
  p_conversation_id uuid, p_author text, p_body text, p_client_id text DEFAULT NULL, p_meta jsonb DEFAULT '{}')
RETURNS parley.messages
LANGUAGE plpgsql VOLATILE
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
  'Store one message. Idempotent on (conversation, client_id): a resend returns the stored row with no new event (tell it apart: its created_at < now(), i.e. it was stored by an earlier transaction). Visitors post only visitor messages into their own conversation (403); members post agent/note. Visitor messages: per-chatbot and per-IP messages-per-minute limits (429 rate_limited), and a visitor message to a closed conversation reopens it (status bot) only within the chatbot''s reopen_window_minutes (default 30, 0 = never) and when not rated, else 409 conversation_closed (the widget starts a new conversation). Bot messages: ai_msgs_per_day (402), refused while a human has the conversation (409); meta.grounded=false is a miss: handoff.miss_threshold (default 2, 0 = never) misses in a row set waiting_human (event human_requested, reason bot_misses), meta.grounded=true resets the count. Agent messages claim an unassigned conversation, 409 if assigned to someone else. Body 1..4000 chars (16000 for bot/system). Updates last_activity_at/last_message_id (not for notes), counts usage, writes message_added (note_added for notes) and sends one NOTIFY.';

-- A visitor's first message: the conversation it starts and the message, in one transaction.
-- Started apart (the conversation, then the message through the batch), the same first message
-- from two tabs of one visitor, or resent on a new socket before the first one's conversation
-- frame arrived, started two conversations and was stored in each (bench/races.py). Here the
-- visitor's starts take turns (advisory lock 7261014 on the visitor, to commit) and a message
-- whose client_id one of the visitor's conversations already holds goes there: a resend, stored
-- once. Lock order: the visitor, then what open_conversation and store_message take; the events last.
CREATE OR REPLACE FUNCTION parley.start_with_message(
  p_chatbot_id uuid, p_visitor_id uuid, p_body text, p_client_id text, p_page_url text DEFAULT NULL,
  p_referrer text DEFAULT NULL, p_user_agent text DEFAULT NULL, p_locale text DEFAULT NULL, p_ip inet DEFAULT NULL,
  p_country text DEFAULT NULL)
RETURNS TABLE (id uuid, status text, visitor_id uuid, message jsonb, duplicate boolean)
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
  v_conv parley.conversations;
  v_found uuid;
  v record;
BEGIN
  IF parley.current_actor_kind() IS DISTINCT FROM 'visitor' OR parley.current_actor_id() IS NOT NULL
     OR p_visitor_id IS NULL THEN
    PERFORM parley.raise_error(403, 'forbidden', 'Only a visitor without a conversation starts one this way.');
  END IF;
  PERFORM pg_advisory_xact_lock(7261014, hashtext(parley.current_tenant_id()::text || ':' || p_visitor_id::text));
  v_found := parley.visitor_conversation_with(p_chatbot_id, p_visitor_id, p_client_id);
  IF v_found IS NOT NULL THEN
    PERFORM set_config('app.actor_id', v_found::text, true);  -- from here on the visitor of that one
    v_conv := parley.lock_conversation(v_found);
  ELSE
    v_conv := parley.open_conversation(p_chatbot_id, p_visitor_id, p_page_url, p_referrer, p_user_agent, p_locale,
                                       p_ip, p_country);
  END IF;
  SELECT * INTO v FROM parley.store_message(v_conv.id, 'visitor', p_body, p_client_id, '{}');
  IF v_found IS NULL THEN
    PERFORM parley.emit_event('conversation_started', v_conv.id, NULL, jsonb_build_object('chatbot_id', p_chatbot_id));
  END IF;
  IF NOT v.duplicate THEN
    PERFORM parley.emit_message_events(v.message, v.status, v.assignee_id, v.reopened, v.claimed, v.handoff);
  END IF;
  RETURN QUERY SELECT v_conv.id, v.status, v_conv.visitor_id, parley.message_json(v.message, true), v.duplicate;
END $$;
COMMENT ON FUNCTION parley.start_with_message(uuid, uuid, text, text, text, text, text, text, inet, text) IS
  'A visitor without a conversation speaks (the widget''s first message): start a conversation as start_conversation would (its checks and limits) and store the message as post_message would, in one transaction; or, when one of this visitor''s conversations with the chatbot already holds a message with p_client_id (the same first message from another tab, or resent), that conversation and the stored row (duplicate, nothing written). A visitor''s starts take turns (advisory lock 7261014 on the visitor). Returns the conversation (id, status after the message, visitor) and the message in the visitor''s shape. 403 for anyone but a visitor without a conversation.';

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
DROP FUNCTION IF EXISTS parley.post_visitor_messages(uuid, uuid[], text[], text[], text[], text[]);
-- The result grew error_detail (a rate limit's retry_after): the old shape (if any) is dropped once.
DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_proc
              WHERE oid = to_regprocedure('parley.post_visitor_messages(uuid, uuid[], text[], text[], text[], text[], text[])')
                AND NOT 'error_detail' = ANY (proargnames)) THEN
    DROP FUNCTION parley.post_visitor_messages(uuid, uuid[], text[], text[], text[], text[], text[]);
  END IF;
END $$;
CREATE OR REPLACE FUNCTION parley.post_visitor_messages(
  p_tenant_id uuid, p_conversation_ids uuid[], p_bodies text[], p_client_ids text[], p_ips text[],
  p_request_ids text[], p_traceparents text[] DEFAULT NULL)
RETURNS TABLE (ord int, message jsonb, duplicate boolean, status text,
               error_state text, error_message text, error_hint text, error_detail text)
LANGUAGE plpgsql VOLATILE
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
  v_traceparent text[];
  v_state text[] := array_fill(NULL::text, ARRAY[v_n]);
  v_text text[] := array_fill(NULL::text, ARRAY[v_n]);
  v_hint text[] := array_fill(NULL::text, ARRAY[v_n]);
  v_detail text[] := array_fill(NULL::text, ARRAY[v_n]);
  v_stored_message parley.messages[] := array_fill(NULL::parley.messages, ARRAY[v_n]);
  v_status text[] := array_fill(NULL::text, ARRAY[v_n]);
  v_reopened boolean[] := array_fill(NULL::boolean, ARRAY[v_n]);
  v_duplicate boolean[] := array_fill(NULL::boolean, ARRAY[v_n]);
  v_stored record;
  v_role text;
  v_e_state text;
  v_e_text text;
  v_e_hint text;
  v_e_detail text;
  v_lock_timeout text := current_setting('lock_timeout');
BEGIN
  IF v_n > 24 THEN
    PERFORM parley.raise_error(413, 'batch_too_large', 'At most 24 messages per batch.');
  END IF;
  IF coalesce(cardinality(p_bodies), 0) <> v_n OR coalesce(cardinality(p_client_ids), 0) <> v_n
     OR coalesce(cardinality(p_ips), 0) <> v_n OR coalesce(cardinality(p_request_ids), 0) <> v_n
     OR coalesce(cardinality(p_traceparents), v_n) <> v_n THEN
    PERFORM parley.raise_error(422, 'invalid_batch', 'Every array needs one entry per message.');
  END IF;
  IF v_n = 0 THEN
    RETURN;
  END IF;
  SELECT array_agg(x.n::int ORDER BY x.conversation_id, x.n), array_agg(x.conversation_id ORDER BY x.conversation_id, x.n),
         array_agg(x.body ORDER BY x.conversation_id, x.n), array_agg(x.client_id ORDER BY x.conversation_id, x.n),
         array_agg(x.ip ORDER BY x.conversation_id, x.n), array_agg(x.request_id ORDER BY x.conversation_id, x.n),
         array_agg(x.traceparent ORDER BY x.conversation_id, x.n)
    INTO v_ord, v_conv, v_body, v_client_id, v_ip, v_request_id, v_traceparent
    FROM unnest(p_conversation_ids, p_bodies, p_client_ids, p_ips, p_request_ids, p_traceparents) WITH ORDINALITY
         AS x(conversation_id, body, client_id, ip, request_id, traceparent, n);

  PERFORM set_config('lock_timeout', '1s', true);
  -- 1. The conversations.
  FOR i IN 1..v_n LOOP
    BEGIN
      v_role := parley.begin_request(p_tenant_id, 'visitor', v_conv[i]::text, NULL, v_ip[i], v_request_id[i],
                                     'visitor');
      PERFORM parley.lock_conversation(v_conv[i]);
    EXCEPTION WHEN others THEN  -- not query_canceled: a cancel ends the whole batch
      GET STACKED DIAGNOSTICS v_e_state = RETURNED_SQLSTATE, v_e_text = MESSAGE_TEXT, v_e_hint = PG_EXCEPTION_HINT,
                              v_e_detail = PG_EXCEPTION_DETAIL;
      v_state[i] := v_e_state; v_text[i] := v_e_text; v_hint[i] := v_e_hint; v_detail[i] := v_e_detail;
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
      GET STACKED DIAGNOSTICS v_e_state = RETURNED_SQLSTATE, v_e_text = MESSAGE_TEXT, v_e_hint = PG_EXCEPTION_HINT,
                              v_e_detail = PG_EXCEPTION_DETAIL;
      v_state[i] := v_e_state; v_text[i] := v_e_text; v_hint[i] := v_e_hint; v_detail[i] := v_e_detail;
    END;
  END LOOP;
  PERFORM set_config('lock_timeout', v_lock_timeout, true);
  -- 3. The events, each as written by its own visitor. (A visitor message never claims a
  --    conversation or hands it off: only reopened varies.)
  FOR i IN 1..v_n LOOP
    CONTINUE WHEN v_state[i] IS NOT NULL OR v_duplicate[i];
    v_role := parley.begin_request(p_tenant_id, 'visitor', v_conv[i]::text, NULL, v_ip[i], v_request_id[i], 'visitor');
    IF p_traceparents IS NOT NULL THEN  -- traces on: what the events enqueue carries this message's trace
      PERFORM set_config('app.traceparent', coalesce(v_traceparent[i], ''), true);
    END IF;
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
    error_detail := v_detail[i];
    RETURN NEXT;
  END LOOP;
  IF p_traceparents IS NOT NULL THEN
    PERFORM set_config('app.traceparent', '', true);
  END IF;
END $$;
COMMENT ON FUNCTION parley.post_visitor_messages(uuid, uuid[], text[], text[], text[], text[], text[]) IS
  'Store up to 24 visitor messages of one tenant in one transaction, each as post_message would for that visitor (actor = the conversation, with its IP and request id, and its trace context when p_traceparents is given: app.traceparent while its events are written, so their outbox rows carry it; all its checks, limits, idempotency and events). One row per message (ord = its position in the arrays, rows in conversation order): message (visitor shape), duplicate (a resend: the stored row, no event), status (the conversation''s after it), or error_state/error_message/error_hint/error_detail (SQLSTATE, message, stable code and detail, such as a rate limit''s retry_after=<seconds>, of the error that refused that message alone; nothing of it was written). Locks all conversations first (in id order), then stores the messages, then writes the events, so the batch keeps the lock order of single writers and awaits no lock after its first event. A message waits at most 1 s for a lock (then 55P03 in its row), so one busy conversation does not hold up the others.';

CREATE OR REPLACE FUNCTION parley.agent_reply(p_conversation_id uuid, p_body text, p_client_id text DEFAULT NULL)
RETURNS parley.messages
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
  PERFORM parley.require_staff();
  RETURN parley.post_message(p_conversation_id, 'agent', p_body, p_client_id, '{}');
END $$;
COMMENT ON FUNCTION parley.agent_reply(uuid, text, text) IS
  'An agent''s reply. Decision: replying to an unassigned conversation (bot or waiting_human) claims it implicitly (status human, assignee = the agent); a conversation assigned to another agent gives 409 invalid_transition; closed gives 409. Idempotent on client_id.';

CREATE OR REPLACE FUNCTION parley.add_note(p_conversation_id uuid, p_body text, p_client_id text DEFAULT NULL)
RETURNS parley.messages
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
  PERFORM parley.require_staff();
  RETURN parley.post_message(p_conversation_id, 'note', p_body, p_client_id, '{}');
END $$;
COMMENT ON FUNCTION parley.add_note(uuid, text, text) IS
  'An internal note by a member (author note): never returned by visible_messages, event note_added; allowed in any status, does not change the status or the activity time.';
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
  PERFORM parley.check_conversation_access(p_conversation_id);
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

-- Owners and EXECUTE grants of the functions above (parley.secure_functions, 05_access.sql).
SELECT parley.secure_functions(NULL, '{parley_app}',
  'parley.post_visitor_messages(uuid, uuid[], text[], text[], text[], text[], text[])');
