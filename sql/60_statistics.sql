-- Statistics: the assistant's turn log, tenant-scoped statistics for members (SECURITY
-- INVOKER, so RLS scopes them) and the daily rollup they and the analyst views read.
-- Analyst views: 61_analytics.sql; retention and partitions: 62_retention.sql; the job
-- schedule: 63_jobs.sql.

-- Questions ---------------------------------------------------------------------------

-- The only form in which visitor text reaches analytics: lower-cased, e-mail addresses,
-- URLs and digits masked, punctuation dropped, whitespace collapsed, 200 characters at most.
CREATE OR REPLACE FUNCTION parley.normalize_question(p_text text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
  SELECT left(btrim(regexp_replace(regexp_replace(regexp_replace(regexp_replace(regexp_replace(
           lower(coalesce(p_text, '')),
           '\S+@\S+', ' email ', 'g'),
           'https?://\S+', ' url ', 'g'),
           '[0-9]+', '0', 'g'),
           '[^[:alnum:][:space:]'']+', ' ', 'g'),
           '\s+', ' ', 'g')), 200)
$$;
COMMENT ON FUNCTION parley.normalize_question(text) IS
  'Normalised question text for grouping and for analysts: lower case, e-mails/URLs/digits masked, punctuation removed, at most 200 characters.';

CREATE OR REPLACE FUNCTION parley.record_assistant_turn(
  p_conversation_id uuid, p_question text, p_outcome text, p_grounded boolean,
  p_question_message_id bigint DEFAULT NULL, p_reply_message_id bigint DEFAULT NULL,
  p_provider text DEFAULT NULL, p_passages int DEFAULT 0, p_first_token_ms int DEFAULT NULL,
  p_total_ms int DEFAULT NULL)
RETURNS bigint
LANGUAGE sql VOLATILE
AS $$
  INSERT INTO parley.assistant_turns (tenant_id, chatbot_id, conversation_id, question_message_id, reply_message_id,
                                      question_norm, outcome, grounded, provider, passages, first_token_ms, total_ms)
  SELECT c.tenant_id, c.chatbot_id, c.id, p_question_message_id, p_reply_message_id,
         parley.normalize_question(p_question), p_outcome, p_grounded, p_provider, coalesce(p_passages, 0),
         p_first_token_ms, p_total_ms
    FROM parley.conversations c
   WHERE c.tenant_id = (SELECT parley.current_tenant_id()) AND c.id = p_conversation_id
  RETURNING id
$$;
COMMENT ON FUNCTION parley.record_assistant_turn(uuid, text, text, boolean, bigint, bigint, text, int, int, int) IS
  'Log one assistant turn (answered, unknown, quota, error, handoff) with the normalised question; the source of AI analytics (the handoff after misses counts on the conversation: bot_misses).';

-- The handoff after misses is store_message's rule (bot_misses, 44_messages.sql); the turn
-- log's reading of it is gone.
DROP FUNCTION IF EXISTS parley.consecutive_misses(uuid);

GRANT EXECUTE ON FUNCTION parley.normalize_question(text) TO parley_app, parley_jobs, parley_reporting;

-- Human involvement, kept on the conversation -----------------------------------------

-- What the day figures need from a conversation's events and agent messages, written when they
-- are (migration 0035 filled in the older ones), so counting the days the rollup does not hold
-- reads one row per conversation. The definitions:
--   human_at              min(at) of its human_requested / claimed / assigned events
--   human_requested_at    min(at) of its human_requested events
--   first_human_reply_at  min(created_at) of its agent messages at or after human_requested_at
-- least() ignores NULLs, so an event or message that arrives out of time order still leaves the
-- minimum; a request earlier than the one known re-reads the first reply after it.
CREATE OR REPLACE FUNCTION parley.note_human_event() RETURNS trigger
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
  UPDATE parley.conversations c
     SET human_at = least(c.human_at, NEW.at),
         human_requested_at = CASE WHEN NEW.kind = 'human_requested' THEN least(c.human_requested_at, NEW.at)
                                   ELSE c.human_requested_at END,
         first_human_reply_at = CASE
           WHEN NEW.kind = 'human_requested' AND NEW.at < coalesce(c.human_requested_at, 'infinity') THEN
             (SELECT min(m.created_at) FROM parley.messages m
               WHERE m.tenant_id = c.tenant_id AND m.conversation_id = c.id AND m.author = 'agent'
                 AND m.created_at >= NEW.at)
           ELSE c.first_human_reply_at END
   WHERE c.tenant_id = NEW.tenant_id AND c.id = NEW.conversation_id
     AND (NEW.at < coalesce(c.human_at, 'infinity')
          OR (NEW.kind = 'human_requested' AND NEW.at < coalesce(c.human_requested_at, 'infinity')));
  RETURN NULL;
END $$;
COMMENT ON FUNCTION parley.note_human_event() IS
  'Trigger (events, after insert of human_requested / claimed / assigned): keep the conversation''s human_at, human_requested_at (the earliest such events) and, when the request time moves earlier, first_human_reply_at (the first agent message at or after it). Read by parley.day_stats_from_rows.';

CREATE OR REPLACE FUNCTION parley.note_human_reply() RETURNS trigger
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
  UPDATE parley.conversations c SET first_human_reply_at = NEW.created_at
   WHERE c.tenant_id = NEW.tenant_id AND c.id = NEW.conversation_id
     AND c.human_requested_at <= NEW.created_at AND NEW.created_at < coalesce(c.first_human_reply_at, 'infinity');
  RETURN NULL;
END $$;
COMMENT ON FUNCTION parley.note_human_reply() IS
  'Trigger (messages, after insert of an agent message): the conversation''s first_human_reply_at becomes this message''s time when it is at or after human_requested_at and earlier than the one known. Read by parley.day_stats_from_rows.';

-- Rows edited in place (not something the app does; a repair, a test moving time) are
-- counted again from scratch for their conversation.
CREATE OR REPLACE FUNCTION parley.recount_human_facts(p_tenant_id uuid, p_conversation_id uuid) RETURNS void
LANGUAGE sql VOLATILE
AS $$
  UPDATE parley.conversations c
     SET human_at = x.human_at, human_requested_at = x.requested_at,
         first_human_reply_at = (SELECT min(m.created_at) FROM parley.messages m
                                  WHERE m.tenant_id = c.tenant_id AND m.conversation_id = c.id AND m.author = 'agent'
                                    AND m.created_at >= x.requested_at)
    FROM (SELECT min(e.at) AS human_at, min(e.at) FILTER (WHERE e.kind = 'human_requested') AS requested_at
            FROM parley.events e
           WHERE e.tenant_id = p_tenant_id AND e.conversation_id = p_conversation_id
             AND e.kind IN ('human_requested', 'claimed', 'assigned')) x
   WHERE c.tenant_id = p_tenant_id AND c.id = p_conversation_id
$$;
COMMENT ON FUNCTION parley.recount_human_facts(uuid, uuid) IS
  'Set a conversation''s human_at, human_requested_at and first_human_reply_at from its events and agent messages (their definitions, in full).';

CREATE OR REPLACE FUNCTION parley.recount_human_facts_on_change() RETURNS trigger
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
  PERFORM parley.recount_human_facts(OLD.tenant_id, OLD.conversation_id);
  IF (NEW.tenant_id, NEW.conversation_id) IS DISTINCT FROM (OLD.tenant_id, OLD.conversation_id) THEN
    PERFORM parley.recount_human_facts(NEW.tenant_id, NEW.conversation_id);
  END IF;
  RETURN NULL;
END $$;
COMMENT ON FUNCTION parley.recount_human_facts_on_change() IS
  'Trigger (events or messages updated in a way the human facts depend on): parley.recount_human_facts for the old and the new conversation.';

SELECT parley.ensure_trigger('parley.events', 't41_recount_human_event', 'AFTER UPDATE OF at, kind, conversation_id',
  $$FOR EACH ROW WHEN (OLD.kind IN ('human_requested', 'claimed', 'assigned') OR NEW.kind IN ('human_requested', 'claimed', 'assigned'))
    EXECUTE FUNCTION parley.recount_human_facts_on_change()$$);
SELECT parley.ensure_trigger('parley.messages', 't41_recount_human_reply', 'AFTER UPDATE OF created_at, author, conversation_id',
  $$FOR EACH ROW WHEN (OLD.author = 'agent' OR NEW.author = 'agent')
    EXECUTE FUNCTION parley.recount_human_facts_on_change()$$);
SELECT parley.ensure_trigger('parley.events', 't40_note_human_event', 'AFTER INSERT',
  $$FOR EACH ROW WHEN (NEW.kind IN ('human_requested', 'claimed', 'assigned') AND NEW.conversation_id IS NOT NULL)
    EXECUTE FUNCTION parley.note_human_event()$$);
SELECT parley.ensure_trigger('parley.messages', 't40_note_human_reply', 'AFTER INSERT',
  $$FOR EACH ROW WHEN (NEW.author = 'agent')
    EXECUTE FUNCTION parley.note_human_reply()$$);
GRANT UPDATE (human_at, human_requested_at, first_human_reply_at) ON parley.conversations TO parley_app;

-- Member statistics (tenant-scoped by RLS; p_days is 7, 30 or 90 in the API) -------------

-- The day figures: one rule, two readers. parley.day_stats_from_rows counts them from the rows;
-- the rollup job stores its answer per chatbot and day in parley.daily_stats and notes when it
-- ran (parley.daily_stats_state); parley.stats_days serves a window from the rollup for the
-- days before that run and from the rows for the days since (today at least), so a call costs
-- a few days of rows whatever the history. Conversations (closed, without a human, human
-- requests and first human response times) count on the day the conversation started;
-- assistant turns, ratings and thumbs on their own day.

CREATE OR REPLACE FUNCTION parley.day_stats_from_rows(p_from date, p_to date, p_chatbot_id uuid DEFAULT NULL)
RETURNS TABLE (chatbot_id uuid, day date, conversations int, closed int, closed_without_human int,
               human_requests int, first_response_s int[], ai_turns int, ai_unanswered int, ratings int,
               rating_sum int, thumbs_up int, thumbs_down int)
LANGUAGE sql STABLE
AS $$
  -- Bounds as timestamptz: under RLS only leakproof operators are index conditions, and
  -- timestamptz >= date is not (timestamptz >= timestamptz is).
  WITH facts AS (
    SELECT c.chatbot_id, c.created_at::date AS day, 1 AS conversations, (c.status = 'closed')::int AS closed,
           (c.status = 'closed' AND c.human_at IS NULL)::int AS closed_without_human,
           (c.human_requested_at IS NOT NULL)::int AS human_requests,
           round(extract(epoch FROM c.first_human_reply_at - c.human_requested_at))::int AS response_s,
           0 AS ai_turns, 0 AS ai_unanswered, 0 AS ratings, 0 AS rating_sum, 0 AS thumbs_up, 0 AS thumbs_down
      FROM parley.conversations c
     WHERE c.tenant_id = (SELECT parley.current_tenant_id()) AND c.created_at >= p_from::timestamptz AND c.created_at < p_to::timestamptz
       AND (p_chatbot_id IS NULL OR c.chatbot_id = p_chatbot_id)
    UNION ALL
    SELECT a.chatbot_id, a.created_at::date, 0, 0, 0, 0, NULL, 1, (NOT a.grounded)::int, 0, 0, 0, 0
      FROM parley.assistant_turns a
     WHERE a.tenant_id = (SELECT parley.current_tenant_id()) AND a.created_at >= p_from::timestamptz AND a.created_at < p_to::timestamptz
       AND a.outcome IN ('answered', 'unknown') AND (p_chatbot_id IS NULL OR a.chatbot_id = p_chatbot_id)
    UNION ALL
    SELECT r.chatbot_id, r.created_at::date, 0, 0, 0, 0, NULL, 0, 0, 1, r.score, 0, 0
      FROM parley.conversation_ratings r
     WHERE r.tenant_id = (SELECT parley.current_tenant_id()) AND r.created_at >= p_from::timestamptz AND r.created_at < p_to::timestamptz
       AND (p_chatbot_id IS NULL OR r.chatbot_id = p_chatbot_id)
    UNION ALL
    SELECT f.chatbot_id, f.created_at::date, 0, 0, 0, 0, NULL, 0, 0, 0, 0, (f.value = 'up')::int, (f.value = 'down')::int
      FROM parley.message_feedback f
     WHERE f.tenant_id = (SELECT parley.current_tenant_id()) AND f.created_at >= p_from::timestamptz AND f.created_at < p_to::timestamptz
       AND (p_chatbot_id IS NULL OR f.chatbot_id = p_chatbot_id))
  SELECT x.chatbot_id, x.day, sum(x.conversations)::int, sum(x.closed)::int, sum(x.closed_without_human)::int,
         sum(x.human_requests)::int,
         coalesce(array_agg(x.response_s ORDER BY x.response_s) FILTER (WHERE x.response_s IS NOT NULL), '{}'),
         sum(x.ai_turns)::int, sum(x.ai_unanswered)::int, sum(x.ratings)::int, sum(x.rating_sum)::int,
         sum(x.thumbs_up)::int, sum(x.thumbs_down)::int
    FROM facts x
   GROUP BY x.chatbot_id, x.day
$$;
COMMENT ON FUNCTION parley.day_stats_from_rows(date, date, uuid) IS
  'The current tenant''s day figures per chatbot and day in [p_from, p_to), counted from the rows: conversations started that day (closed, closed without a human, asking for a human, seconds from the first request to the first agent reply: one row each, through the conversation''s human_at / human_requested_at / first_human_reply_at), assistant turns (answered/unknown, ungrounded), ratings (count, sum) and thumbs of that day. The one definition the rollup stores and the readers use for the days since it ran.';

CREATE OR REPLACE FUNCTION parley.stats_rolled_until() RETURNS date
LANGUAGE sql STABLE
AS $$
  SELECT s.rolled_at::date FROM parley.daily_stats_state s WHERE s.tenant_id = (SELECT parley.current_tenant_id())
$$;
COMMENT ON FUNCTION parley.stats_rolled_until() IS
  'The first day the current tenant''s rollup does not hold complete (the day of its last run); NULL before the first run.';

CREATE OR REPLACE FUNCTION parley.stats_days(p_days int, p_chatbot_id uuid DEFAULT NULL)
RETURNS TABLE (chatbot_id uuid, day date, conversations int, closed int, closed_without_human int,
               human_requests int, first_response_s int[], ai_turns int, ai_unanswered int, ratings int,
               rating_sum int, thumbs_up int, thumbs_down int)
LANGUAGE sql STABLE
AS $$
  SELECT s.chatbot_id, s.day, s.conversations, s.closed, s.closed_without_human, s.human_requests,
         s.first_response_s, s.ai_turns, s.ai_unanswered, s.ratings, s.rating_sum, s.thumbs_up, s.thumbs_down
    FROM parley.daily_stats s
   WHERE s.tenant_id = (SELECT parley.current_tenant_id()) AND s.day >= current_date - (p_days - 1)
     AND s.day < (SELECT parley.stats_rolled_until())
     AND (p_chatbot_id IS NULL OR s.chatbot_id = p_chatbot_id)
  UNION ALL
  -- Bounds as values (not a join), so the rows are found by (tenant_id, created_at).
  SELECT r.* FROM parley.day_stats_from_rows(
    greatest(current_date - (p_days - 1), (SELECT parley.stats_rolled_until())), current_date + 1, p_chatbot_id) r
$$;
COMMENT ON FUNCTION parley.stats_days(int, uuid) IS
  'The day figures (parley.day_stats_from_rows) of the last p_days days per chatbot and day: from the rollup (parley.daily_stats) for the days before its last run, from the rows for the days since, so the cost does not grow with the history. A finished day changed after the last run (an old conversation closed) shows on the next run (rollup_daily_stats, every 10 minutes).';

DROP FUNCTION IF EXISTS parley.stats_conversations_per_day(int, uuid), parley.stats_csat_per_day(int, uuid);
CREATE OR REPLACE FUNCTION parley.stats_per_day(p_days int, p_chatbot_id uuid DEFAULT NULL)
RETURNS TABLE (day date, conversations bigint, closed bigint, closed_without_human bigint,
               ratings bigint, avg_score numeric, thumbs_up bigint, thumbs_down bigint)
LANGUAGE sql STABLE
AS $$
  SELECT d.day::date, coalesce(sum(s.conversations), 0)::bigint, coalesce(sum(s.closed), 0)::bigint,
         coalesce(sum(s.closed_without_human), 0)::bigint,
         coalesce(sum(s.ratings), 0)::bigint, round(sum(s.rating_sum)::numeric / nullif(sum(s.ratings), 0), 2),
         coalesce(sum(s.thumbs_up), 0)::bigint, coalesce(sum(s.thumbs_down), 0)::bigint
    FROM generate_series(current_date - (p_days - 1), current_date, interval '1 day') AS d(day)
    LEFT JOIN parley.stats_days(p_days, p_chatbot_id) s ON s.day = d.day::date
   GROUP BY d.day ORDER BY d.day
$$;
COMMENT ON FUNCTION parley.stats_per_day(int, uuid) IS
  'Per day of the last p_days days (every day listed, all chatbots or one): conversations started, how many of them are closed and closed without a human, the number of 1-5 ratings and their average, thumbs up and down on bot replies (parley.stats_days).';

CREATE OR REPLACE FUNCTION parley.day_questions_from_rows(p_from date, p_to date, p_chatbot_id uuid DEFAULT NULL)
RETURNS TABLE (chatbot_id uuid, day date, question_norm text, asked int, unanswered int, last_asked timestamptz)
LANGUAGE sql STABLE
AS $$
  SELECT t.chatbot_id, t.created_at::date, t.question_norm, count(*)::int, (count(*) FILTER (WHERE NOT t.grounded))::int,
         max(t.created_at)
    FROM parley.assistant_turns t
   WHERE t.tenant_id = (SELECT parley.current_tenant_id())
     AND t.created_at >= p_from::timestamptz AND t.created_at < p_to::timestamptz
     AND (p_chatbot_id IS NULL OR t.chatbot_id = p_chatbot_id)
     AND t.question_norm <> '' AND t.outcome IN ('answered', 'unknown')
   GROUP BY t.chatbot_id, t.created_at::date, t.question_norm
$$;
COMMENT ON FUNCTION parley.day_questions_from_rows(date, date, uuid) IS
  'The current tenant''s questions per chatbot, day in [p_from, p_to) and normalised text: how often asked (answered or unknown turns), how often without grounding, when last. The one definition the rollup stores (daily_questions) and stats_top_questions reads for the days since it ran.';

CREATE OR REPLACE FUNCTION parley.stats_top_questions(p_days int, p_chatbot_id uuid DEFAULT NULL, p_limit int DEFAULT 20,
                                                      p_unanswered_only boolean DEFAULT false)
RETURNS TABLE (question text, asked bigint, unanswered bigint, last_asked timestamptz)
LANGUAGE sql STABLE
AS $$
  WITH q AS (
    SELECT d.question_norm, d.asked, d.unanswered, d.last_asked
      FROM parley.daily_questions d
     WHERE d.tenant_id = (SELECT parley.current_tenant_id()) AND d.day >= current_date - (p_days - 1)
       AND d.day < (SELECT parley.stats_rolled_until())
       AND (p_chatbot_id IS NULL OR d.chatbot_id = p_chatbot_id)
    UNION ALL
    SELECT r.question_norm, r.asked, r.unanswered, r.last_asked
      FROM parley.day_questions_from_rows(
        greatest(current_date - (p_days - 1), (SELECT parley.stats_rolled_until())), current_date + 1, p_chatbot_id) r)
  SELECT q.question_norm, sum(q.asked)::bigint, sum(q.unanswered)::bigint, max(q.last_asked)
    FROM q
   GROUP BY q.question_norm
  HAVING NOT p_unanswered_only OR sum(q.unanswered) > 0
   ORDER BY CASE WHEN p_unanswered_only THEN sum(q.unanswered) ELSE sum(q.asked) END DESC, max(q.last_asked) DESC
   LIMIT least(greatest(coalesce(p_limit, 20), 1), 100)
$$;
COMMENT ON FUNCTION parley.stats_top_questions(int, uuid, int, boolean) IS
  'Most asked (normalised) questions over the last p_days days (from the rollup, daily_questions, for the days before its last run and from the rows since) with how often the bot found no grounding; p_unanswered_only lists the unanswered ones.';

CREATE OR REPLACE FUNCTION parley.stats_summary(p_days int, p_chatbot_id uuid DEFAULT NULL)
RETURNS TABLE (conversations bigint, closed bigint, closed_without_human bigint, ai_resolution_rate numeric,
               ai_turns bigint, ai_unanswered bigint, ratings bigint, avg_rating numeric,
               human_requests bigint, median_first_human_response_s numeric)
LANGUAGE sql STABLE
AS $$
  WITH d AS (SELECT * FROM parley.stats_days(p_days, p_chatbot_id))
  SELECT coalesce(sum(d.conversations), 0)::bigint, coalesce(sum(d.closed), 0)::bigint,
         coalesce(sum(d.closed_without_human), 0)::bigint,
         round(sum(d.closed_without_human)::numeric / nullif(sum(d.closed), 0), 3),
         coalesce(sum(d.ai_turns), 0)::bigint, coalesce(sum(d.ai_unanswered), 0)::bigint,
         coalesce(sum(d.ratings), 0)::bigint, round(sum(d.rating_sum)::numeric / nullif(sum(d.ratings), 0), 2),
         coalesce(sum(d.human_requests), 0)::bigint,
         (SELECT round((percentile_cont(0.5) WITHIN GROUP (ORDER BY x.s))::numeric, 1)
            FROM d, unnest(d.first_response_s) AS x(s))
    FROM d
$$;
COMMENT ON FUNCTION parley.stats_summary(int, uuid) IS
  'Headline figures over the last p_days days (parley.stats_days): conversations started, closed, AI resolution rate (closed without a human / closed), AI turns and misses, ratings, conversations that asked for a human and the median seconds from that request to the first agent reply.';

-- Rollup ------------------------------------------------------------------------------

SELECT parley.apply_tenant_policies('parley.daily_stats');
SELECT parley.apply_tenant_policies('parley.daily_stats_state');
SELECT parley.apply_tenant_policies('parley.daily_questions');
GRANT SELECT ON parley.daily_questions TO parley_app;
GRANT SELECT, INSERT, DELETE ON parley.daily_questions TO parley_jobs;
GRANT SELECT ON parley.daily_stats, parley.daily_stats_state TO parley_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON parley.daily_stats TO parley_jobs;
GRANT SELECT, INSERT, UPDATE ON parley.daily_stats_state TO parley_jobs;

CREATE OR REPLACE FUNCTION parley.rollup_daily_stats(p_since date DEFAULT NULL)
RETURNS int
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
  v_tenant uuid := parley.current_tenant_id();
  v_prev timestamptz;
  v_from timestamptz;
  v_days date[];
  v_rows int;
BEGIN
  SELECT s.rolled_at INTO v_prev FROM parley.daily_stats_state s WHERE s.tenant_id = v_tenant FOR UPDATE;
  IF p_since IS NOT NULL OR v_prev IS NULL THEN
    -- Every day from p_since (first run: from the tenant's first row).
    v_from := coalesce(p_since::timestamptz, least(
      (SELECT min(c.created_at) FROM parley.conversations c WHERE c.tenant_id = v_tenant),
      (SELECT min(a.created_at) FROM parley.assistant_turns a WHERE a.tenant_id = v_tenant),
      (SELECT min(r.created_at) FROM parley.conversation_ratings r WHERE r.tenant_id = v_tenant),
      (SELECT min(f.created_at) FROM parley.message_feedback f WHERE f.tenant_id = v_tenant)), now());
    SELECT array_agg(g::date) INTO v_days FROM generate_series(v_from::date, current_date, interval '1 day') g;
  ELSE
    -- The days touched since the last run (5 minutes of slack for transactions that were
    -- running then): every state change and reply moves last_activity_at, and turns, ratings
    -- and thumbs count on their own day.
    v_from := v_prev - interval '5 minutes';
    SELECT array_agg(DISTINCT x.day) INTO v_days FROM (
      SELECT c.created_at::date AS day FROM parley.conversations c
       WHERE c.tenant_id = v_tenant AND c.last_activity_at >= v_from
      UNION SELECT g::date FROM generate_series(v_from::date, current_date, interval '1 day') g) x;
  END IF;
  DELETE FROM parley.daily_stats s WHERE s.tenant_id = v_tenant AND s.day = ANY (v_days);
  INSERT INTO parley.daily_stats (tenant_id, chatbot_id, day, conversations, closed, closed_without_human,
                                  human_requests, first_response_s, ai_turns, ai_unanswered, ratings, rating_sum,
                                  thumbs_up, thumbs_down, computed_at)
  SELECT v_tenant, r.chatbot_id, r.day, r.conversations, r.closed, r.closed_without_human, r.human_requests,
         r.first_response_s, r.ai_turns, r.ai_unanswered, r.ratings, r.rating_sum, r.thumbs_up, r.thumbs_down, now()
    FROM unnest(v_days) d, parley.day_stats_from_rows(d, d + 1) r;
  GET DIAGNOSTICS v_rows = ROW_COUNT;
  DELETE FROM parley.daily_questions q WHERE q.tenant_id = v_tenant AND q.day = ANY (v_days);
  INSERT INTO parley.daily_questions (tenant_id, day, chatbot_id, question_norm, asked, unanswered, last_asked)
  SELECT v_tenant, r.day, r.chatbot_id, r.question_norm, r.asked, r.unanswered, r.last_asked
    FROM unnest(v_days) d, parley.day_questions_from_rows(d, d + 1) r;
  INSERT INTO parley.daily_stats_state AS s (tenant_id, rolled_at) VALUES (v_tenant, now())
  ON CONFLICT (tenant_id) DO UPDATE SET rolled_at = EXCLUDED.rolled_at;
  RETURN v_rows;
END
$$;
COMMENT ON FUNCTION parley.rollup_daily_stats(date) IS
  'Jobs: store the current tenant''s day figures (parley.day_stats_from_rows) per chatbot and day in daily_stats, and its questions (parley.day_questions_from_rows) in daily_questions, for every day from p_since, or (p_since NULL) for the days touched since the last run (all days on the first run), and record the run in daily_stats_state; returns rows written.';

-- Owners and EXECUTE grants of the functions above (parley.secure_functions, 05_access.sql).
SELECT parley.secure_functions(NULL, '{parley_jobs}', 'parley.rollup_daily_stats(date)');
