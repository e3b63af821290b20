-- Telegram for agents, outbound: a tenant connects its bot (token sealed by the server as the
-- destination's 'token' secret, sql/81_channels.sql) and a forum group; the outbox delivers
-- each conversation's events there in order (an ordered destination), one forum topic per
-- conversation (parley.channel_threads, written by the drainer when the adapter creates it),
-- under Telegram's rate limits as token buckets: 1 message/s per chat, 20/min per group,
-- 30/s per bot token.

SELECT parley.apply_tenant_policies('parley.channel_threads');
GRANT SELECT ON parley.channel_threads TO parley_app, parley_jobs;
GRANT INSERT, UPDATE (thread_ref, title) ON parley.channel_threads TO parley_jobs;
GRANT DELETE ON parley.channel_threads TO parley_app;

CREATE OR REPLACE FUNCTION parley.telegram_event_kinds() RETURNS text[]
LANGUAGE sql IMMUTABLE
AS $$ SELECT ARRAY['message_added', 'human_requested', 'claimed', 'released', 'closed', 'reopened',
                   'lead_captured', 'codename_set']::text[] $$;
COMMENT ON FUNCTION parley.telegram_event_kinds() IS
  'The conversation events a Telegram channel posts into the conversation''s forum topic (closed/reopened also close and reopen the topic; lead_captured and codename_set rename it).';

CREATE OR REPLACE FUNCTION parley.telegram_rate_keys(p_destination_id uuid, p_bot_id bigint) RETURNS text[]
LANGUAGE sql IMMUTABLE
AS $$ SELECT ARRAY['dest:' || p_destination_id::text || ':chat', 'dest:' || p_destination_id::text || ':group',
                   'telegram-bot:' || p_bot_id::text] $$;
COMMENT ON FUNCTION parley.telegram_rate_keys(uuid, bigint) IS
  'The token buckets a Telegram channel sends through: its chat (1/s), its group (20/min), its bot (30/s, shared by every channel of the bot in the tenant).';

CREATE OR REPLACE FUNCTION parley.connect_telegram(p_id uuid, p_name text, p_chat_id bigint, p_bot_id bigint,
                                                  p_bot_username text, p_chatbot_id uuid DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
  v_tenant uuid := parley.current_tenant_id();
  v_keys text[] := parley.telegram_rate_keys(p_id, p_bot_id);
BEGIN
  PERFORM parley.require_role('admin');
  IF p_name IS NULL OR length(btrim(p_name)) NOT BETWEEN 1 AND 100 THEN
    PERFORM parley.raise_error(422, 'invalid_name', 'The name is 1 to 100 characters.');
  END IF;
  -- Forum groups are supergroups: ids -100xxxxxxxxxx.
  IF p_chat_id IS NULL OR p_chat_id > -1000000000000 THEN
    PERFORM parley.raise_error(422, 'invalid_chat_id',
      'Give the id of a supergroup with topics enabled (it starts with -100).');
  END IF;
  IF p_bot_id IS NULL OR p_bot_id <= 0 OR p_bot_username IS NULL OR p_bot_username !~ '^[A-Za-z0-9_]{1,64}$' THEN
    PERFORM parley.raise_error(422, 'invalid_bot', 'The bot token does not name a bot.');
  END IF;
  IF p_chatbot_id IS NOT NULL THEN
    PERFORM parley.require_live_chatbot(p_chatbot_id);
  END IF;
  IF EXISTS (SELECT 1 FROM parley.outbox_destinations d
              WHERE d.tenant_id = v_tenant AND d.kind = 'telegram' AND d.target = p_chat_id::text) THEN
    PERFORM parley.raise_error(409, 'already_connected', 'This group is already connected.');
  END IF;
  INSERT INTO parley.outbox_destinations (tenant_id, id, kind, name, target, config, event_kinds, chatbot_id,
                                          ordered, rate_keys)
  VALUES (v_tenant, p_id, 'telegram', btrim(p_name), p_chat_id::text,
          jsonb_build_object('chat_id', p_chat_id, 'bot_id', p_bot_id, 'bot_username', p_bot_username),
          parley.telegram_event_kinds(), p_chatbot_id, true, v_keys);
  INSERT INTO parley.outbox_rate_buckets (tenant_id, key, capacity, per_second, tokens)
  VALUES (v_tenant, v_keys[1], 1, 1, 1), (v_tenant, v_keys[2], 20, 20.0 / 60, 20), (v_tenant, v_keys[3], 30, 30, 30)
  ON CONFLICT (tenant_id, key) DO NOTHING;
  PERFORM parley.write_audit('telegram_channel.connected', 'outbox_destination', p_id::text,
                             jsonb_build_object('chat_id', p_chat_id, 'bot_username', p_bot_username,
                                                'chatbot_id', p_chatbot_id));
  RETURN parley.telegram_channel_json(p_id);
END $$;
COMMENT ON FUNCTION parley.connect_telegram(uuid, text, bigint, bigint, text, uuid) IS
  'Admins: connect a Telegram forum group (supergroup id p_chat_id) through the bot p_bot_id/@p_bot_username as an ordered destination of the current tenant (every chatbot, or p_chatbot_id only) with its three rate buckets; the server seals the bot token as the destination''s token secret in the same transaction. 422 bad name/chat/bot, 404 unknown chatbot, 409 group already connected.';

CREATE OR REPLACE FUNCTION parley.telegram_channel_json(p_id uuid) RETURNS jsonb
LANGUAGE sql STABLE
AS $$
  SELECT jsonb_build_object('id', d.id, 'name', d.name, 'chat_id', (d.config ->> 'chat_id')::bigint,
                            'bot_username', d.config ->> 'bot_username', 'chatbot_id', d.chatbot_id,
                            'status', d.status, 'paused_reason', d.paused_reason, 'last_error', d.last_error,
                            'last_success_at', d.last_success_at, 'created_at', d.created_at,
                            'token_hint', (SELECT s.hint FROM parley.channel_secrets(d.id, 'token') s LIMIT 1),
                            'inbound', CASE WHEN p.destination_id IS NULL THEN 'webhook' ELSE 'polling' END,
                            'polled_at', p.polled_at, 'poll_error', p.last_error)
    FROM parley.outbox_destinations d
    LEFT JOIN parley.channel_polls p ON p.tenant_id = d.tenant_id AND p.destination_id = d.id
   WHERE d.tenant_id = parley.current_tenant_id() AND d.id = p_id AND d.kind = 'telegram'
$$;
COMMENT ON FUNCTION parley.telegram_channel_json(uuid) IS
  'One Telegram channel of the current tenant as the API shows it (never the token: its last characters only), with how its updates arrive (inbound webhook | polling, sql/86_telegram_polling.sql) and the last poll; NULL when unknown.';

-- The result grew the title column: the old shape is dropped once, then replaced in place.
DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_proc WHERE oid = to_regprocedure('parley.channel_threads_for(uuid, uuid[])')
              AND NOT 'title' = ANY (proargnames)) THEN
    DROP FUNCTION parley.channel_threads_for(uuid, uuid[]);
  END IF;
END $$;

CREATE OR REPLACE FUNCTION parley.channel_threads_for(p_destination_id uuid, p_conversation_ids uuid[])
RETURNS TABLE (conversation_id uuid, thread_ref text, title text)
LANGUAGE sql STABLE
AS $$
  SELECT t.conversation_id, t.thread_ref, t.title FROM parley.channel_threads t
   WHERE t.tenant_id = parley.current_tenant_id() AND t.destination_id = p_destination_id
     AND t.conversation_id = ANY (p_conversation_ids)
$$;
COMMENT ON FUNCTION parley.channel_threads_for(uuid, uuid[]) IS
  'Drainers: the threads a channel destination of the current tenant already has for these conversations, with their current titles (NULL: unknown).';

DROP FUNCTION IF EXISTS parley.record_channel_thread(uuid, uuid, text);
CREATE OR REPLACE FUNCTION parley.record_channel_thread(p_destination_id uuid, p_conversation_id uuid,
                                                       p_thread_ref text, p_title text)
RETURNS void
LANGUAGE sql VOLATILE
AS $$
  INSERT INTO parley.channel_threads (tenant_id, destination_id, conversation_id, thread_ref, title)
  SELECT d.tenant_id, d.id, p_conversation_id, p_thread_ref, left(p_title, 128) FROM parley.outbox_destinations d
   WHERE d.tenant_id = parley.current_tenant_id() AND d.id = p_destination_id
  ON CONFLICT (tenant_id, destination_id, conversation_id)
  DO UPDATE SET thread_ref = EXCLUDED.thread_ref, title = coalesce(EXCLUDED.title, parley.channel_threads.title)
$$;
COMMENT ON FUNCTION parley.record_channel_thread(uuid, uuid, text, text) IS
  'Drainers: remember the thread (Telegram topic) an adapter created for a conversation on a destination of the current tenant, and its title once made or renamed (NULL keeps the one known).';

-- Posting to a busy group (the 20/min per group limit is shared by every topic): a conversation's
-- consecutive messages waiting for the same topic go as ONE post, and conversations waiting for a
-- person go before the backlog. Posts, not deliveries, take the rate buckets' tokens.
CREATE OR REPLACE FUNCTION parley.channel_post_bytes_max() RETURNS int
LANGUAGE sql IMMUTABLE
AS $$ SELECT 3500 $$;
COMMENT ON FUNCTION parley.channel_post_bytes_max() IS
  'The most UTF-8 bytes of message bodies coalesced into one channel post (UTF-8 bytes ≥ UTF-16 units, so with the authors'' prefixes the post stays under Telegram''s 4096 units); a longer message goes alone, split in parts.';

-- The result grew parts_sent and post: the old shape (if any) is dropped once.
DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_proc WHERE oid = to_regprocedure('parley.take_channel_batch(uuid, text, int, int)')
              AND NOT 'post' = ANY (proargnames)) THEN
    DROP FUNCTION parley.take_channel_batch(uuid, text, int, int);
  END IF;
END $$;

CREATE OR REPLACE FUNCTION parley.take_channel_batch(p_destination_id uuid, p_worker text, p_limit int,
                                                    p_lease_seconds int DEFAULT 30)
RETURNS TABLE (id bigint, created_at timestamptz, delivery_key uuid, kind text, payload jsonb, attempts int,
               event_id bigint, conversation_id uuid, parts_sent int, post int)
LANGUAGE plpgsql VOLATILE
SET enable_seqscan = off
AS $$
DECLARE
  v_tenant uuid := parley.current_tenant_id();
  -- Per conversation, the run of pending deliveries before its first one waiting for a retry
  -- (each topic's order; a topic waiting holds only itself): channel destinations are ordered.
  v_ids bigint[] := parley.lease_ready_ids(p_destination_id, p_worker, p_limit, p_lease_seconds);
  v_granted int;
  r record;
  v_group int := 0;
  v_open jsonb := '{}';     -- conversation → {"g": its open group, "bytes": bodies in it}
  v_rows jsonb := '[]';     -- [{"id", "g"}] in id order
  v_bytes int;
  v_joinable boolean;
  v_key text;
  v_posts int;
BEGIN
  IF v_ids IS NULL THEN
    RETURN;
  END IF;
  -- Bodies first (built on first take, see enqueue_event_deliveries): coalescing reads them.
  PERFORM parley.fill_delivery_payloads(p_destination_id, v_ids);
  -- Posts: a message joins its conversation's open post when both are whole messages (not part
  -- way through a split, not a system text to pin: that one is pinned alone) and the bodies stay under channel_post_bytes_max; anything else
  -- (another kind, a long message) is a post of its own and closes the conversation's open one.
  FOR r IN SELECT o.id, o.conversation_id, o.kind, o.parts_sent,
                  octet_length(coalesce(o.payload #>> '{data,message,body}', '')) AS bytes,
                  coalesce(o.payload #> '{data,message,meta,pin}' = 'true', false) AS pin
             FROM parley.outbox o
            WHERE o.tenant_id = v_tenant AND o.destination_id = p_destination_id AND o.status = 'pending'
              AND o.id = ANY (v_ids)
            ORDER BY o.id LOOP
    v_key := coalesce(r.conversation_id::text, 'none');
    v_joinable := r.kind = 'conversation.message_added' AND r.parts_sent = 0 AND NOT r.pin
                  AND r.bytes <= parley.channel_post_bytes_max();
    v_bytes := (v_open -> v_key ->> 'bytes')::int;
    IF v_joinable AND v_bytes IS NOT NULL AND v_bytes + r.bytes <= parley.channel_post_bytes_max() THEN
      v_rows := v_rows || jsonb_build_object('id', r.id, 'g', (v_open -> v_key ->> 'g')::int);
      v_open := jsonb_set(v_open, ARRAY[v_key, 'bytes'], to_jsonb(v_bytes + r.bytes));
    ELSE
      v_group := v_group + 1;
      v_rows := v_rows || jsonb_build_object('id', r.id, 'g', v_group);
      v_open := CASE WHEN v_joinable THEN v_open || jsonb_build_object(v_key, jsonb_build_object('g', v_group, 'bytes', r.bytes))
                     ELSE v_open - v_key END;
    END IF;
  END LOOP;
  v_granted := parley.take_destination_tokens(p_destination_id, v_group);
  IF v_granted = 0 THEN
    RETURN;
  END IF;
  -- Conversations waiting for a person first (their own order kept), then the rest by age; as many
  -- posts as the buckets granted.
  RETURN QUERY
    WITH g AS (
      SELECT (x ->> 'id')::bigint AS id, (x ->> 'g')::int AS g FROM jsonb_array_elements(v_rows) x
    ), rows AS (
      SELECT o.*, g.g,
             bool_or(o.kind = 'conversation.human_requested') OVER (PARTITION BY o.conversation_id) AS urgent,
             min(o.id) OVER (PARTITION BY g.g) AS first_id
        FROM parley.outbox o JOIN g ON g.id = o.id
       WHERE o.tenant_id = v_tenant AND o.destination_id = p_destination_id AND o.status = 'pending'
         AND o.id = ANY (v_ids)
    ), ranked AS (
      SELECT rows.*, dense_rank() OVER (ORDER BY NOT rows.urgent, rows.first_id)::int AS rank FROM rows
    )
    SELECT k.id, k.created_at, k.delivery_key, k.kind, k.payload, k.attempts, k.event_id, k.conversation_id,
           k.parts_sent, k.rank
      FROM ranked k
     WHERE k.rank <= v_granted
     ORDER BY k.rank, k.id;
END $$;
COMMENT ON FUNCTION parley.take_channel_batch(uuid, text, int, int) IS
  'Drainers, for a channel destination (Telegram) this worker leases: the ready pending deliveries (up to p_limit; per conversation, the run before its first waiting for a retry, outbox_ready_ids) as posts: a conversation''s consecutive whole messages coalesced into one post (bodies up to channel_post_bytes_max), anything else a post of its own; conversations with a handoff request first, then by age, each conversation in its own order; as many posts as the rate buckets grant (one token per post; none: the destination is held until one refills). Column post numbers the posts in sending order.';

-- Owners and callers (parley.secure_functions, sql/05_access.sql).
SELECT parley.secure_functions(NULL, '{parley_jobs}',
  'parley.record_channel_thread(uuid, uuid, text, text)', 'parley.take_channel_batch(uuid, text, int, int)');
