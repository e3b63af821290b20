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

-- Member statistics (tenant-scoped by RLS; p_days is 7, 30 or 90 in the API) -------------

CREATE OR REPLACE FUNCTION parley.stats_conversations_per_day(p_days int, p_chatbot_id uuid DEFAULT NULL)
RETURNS TABLE (day date, conversations bigint, closed bigint, closed_without_human bigint)
LANGUAGE sql STABLE
AS $$
  WITH days AS (
    SELECT d::date AS day FROM generate_series(current_date - (p_days - 1), current_date, interval '1 day') d),
  convs AS (
    SELECT c.created_at::date AS day, c.status, c.closed_at,
           EXISTS (SELECT 1 FROM parley.events e
                    WHERE e.tenant_id = c.tenant_id AND e.conversation_id = c.id
                      AND e.kind IN ('human_requested', 'claimed', 'assigned')) AS human
      FROM parley.conversations c
     WHERE c.tenant_id = (SELECT parley.current_tenant_id())
       AND c.created_at >= current_date - (p_days - 1)
       AND (p_chatbot_id IS NULL OR c.chatbot_id = p_chatbot_id))
  SELECT d.day, count(c.day), count(c.day) FILTER (WHERE c.status = 'closed'),
         count(c.day) FILTER (WHERE c.status = 'closed' AND NOT c.human)
    FROM days d LEFT JOIN convs c ON c.day = d.day
   GROUP BY d.day ORDER BY d.day
$$;
COMMENT ON FUNCTION parley.stats_conversations_per_day(int, uuid) IS
  'Conversations started per day over the last p_days days (every day listed), with how many are closed and closed without a human.';

CREATE OR REPLACE FUNCTION parley.stats_top_questions(p_days int, p_chatbot_id uuid DEFAULT NULL, p_limit int DEFAULT 20,
                                                      p_unanswered_only boolean DEFAULT false)
RETURNS TABLE (question text, asked bigint, unanswered bigint, last_asked timestamptz)
LANGUAGE sql STABLE
AS $$
  SELECT t.question_norm, count(*), count(*) FILTER (WHERE NOT t.grounded), max(t.created_at)
    FROM parley.assistant_turns t
   WHERE t.tenant_id = (SELECT parley.current_tenant_id())
     AND t.created_at >= now() - make_interval(days => p_days)
     AND (p_chatbot_id IS NULL OR t.chatbot_id = p_chatbot_id)
     AND t.question_norm <> '' AND t.outcome IN ('answered', 'unknown')
   GROUP BY t.question_norm
  HAVING NOT p_unanswered_only OR count(*) FILTER (WHERE NOT t.grounded) > 0
   ORDER BY CASE WHEN p_unanswered_only THEN count(*) FILTER (WHERE NOT t.grounded) ELSE count(*) END DESC,
            max(t.created_at) DESC
   LIMIT least(greatest(coalesce(p_limit, 20), 1), 100)
$$;
COMMENT ON FUNCTION parley.stats_top_questions(int, uuid, int, boolean) IS
  'Most asked (normalised) questions over the last p_days days with how often the bot found no grounding; p_unanswered_only lists the unanswered ones.';

CREATE OR REPLACE FUNCTION parley.stats_csat_per_day(p_days int, p_chatbot_id uuid DEFAULT NULL)
RETURNS TABLE (day date, ratings bigint, avg_score numeric, thumbs_up bigint, thumbs_down bigint)
LANGUAGE sql STABLE
AS $$
  WITH days AS (
    SELECT d::date AS day FROM generate_series(current_date - (p_days - 1), current_date, interval '1 day') d),
  r AS (
    SELECT x.created_at::date AS day, count(*) AS n, round(avg(x.score), 2) AS avg_score
      FROM parley.conversation_ratings x
     WHERE x.tenant_id = (SELECT parley.current_tenant_id()) AND x.created_at >= current_date - (p_days - 1)
       AND (p_chatbot_id IS NULL OR x.chatbot_id = p_chatbot_id)
     GROUP BY 1),
  f AS (
    SELECT x.created_at::date AS day, count(*) FILTER (WHERE x.value = 'up') AS up,
           count(*) FILTER (WHERE x.value = 'down') AS down
      FROM parley.message_feedback x
     WHERE x.tenant_id = (SELECT parley.current_tenant_id()) AND x.created_at >= current_date - (p_days - 1)
       AND (p_chatbot_id IS NULL OR x.chatbot_id = p_chatbot_id)
     GROUP BY 1)
  SELECT d.day, coalesce(r.n, 0), r.avg_score, coalesce(f.up, 0), coalesce(f.down, 0)
    FROM days d LEFT JOIN r ON r.day = d.day LEFT JOIN f ON f.day = d.day
   ORDER BY d.day
$$;
COMMENT ON FUNCTION parley.stats_csat_per_day(int, uuid) IS
  'Per day: number of 1-5 ratings and their average, thumbs up and down on bot replies.';

CREATE OR REPLACE FUNCTION parley.stats_summary(p_days int, p_chatbot_id uuid DEFAULT NULL)
RETURNS TABLE (conversations bigint, closed bigint, closed_without_human bigint, ai_resolution_rate numeric,
               ai_turns bigint, ai_unanswered bigint, ratings bigint, avg_rating numeric,
               human_requests bigint, median_first_human_response_s numeric)
LANGUAGE sql STABLE
AS $$
  WITH conv AS (
    SELECT * FROM parley.stats_conversations_per_day(p_days, p_chatbot_id)),
  req AS (
    SELECT e.conversation_id, min(e.at) AS requested_at
      FROM parley.events e JOIN parley.conversations c ON c.tenant_id = e.tenant_id AND c.id = e.conversation_id
     WHERE e.tenant_id = (SELECT parley.current_tenant_id()) AND e.kind = 'human_requested'
       AND e.at >= current_date - (p_days - 1)
       AND (p_chatbot_id IS NULL OR c.chatbot_id = p_chatbot_id)
     GROUP BY e.conversation_id),
  resp AS (
    SELECT req.conversation_id,
           extract(epoch FROM (SELECT min(m.created_at) FROM parley.messages m
                                WHERE m.tenant_id = (SELECT parley.current_tenant_id())
                                  AND m.conversation_id = req.conversation_id
                                  AND m.author = 'agent' AND m.created_at >= req.requested_at) - req.requested_at) AS s
      FROM req),
  turns AS (
    SELECT count(*) AS n, count(*) FILTER (WHERE NOT t.grounded AND t.outcome IN ('answered', 'unknown')) AS missed
      FROM parley.assistant_turns t
     WHERE t.tenant_id = (SELECT parley.current_tenant_id()) AND t.created_at >= current_date - (p_days - 1)
       AND t.outcome IN ('answered', 'unknown') AND (p_chatbot_id IS NULL OR t.chatbot_id = p_chatbot_id)),
  rat AS (
    SELECT count(*) AS n, round(avg(r.score), 2) AS avg_score FROM parley.conversation_ratings r
     WHERE r.tenant_id = (SELECT parley.current_tenant_id()) AND r.created_at >= current_date - (p_days - 1)
       AND (p_chatbot_id IS NULL OR r.chatbot_id = p_chatbot_id))
  SELECT (SELECT sum(conversations)::bigint FROM conv), (SELECT sum(closed)::bigint FROM conv),
         (SELECT sum(closed_without_human)::bigint FROM conv),
         (SELECT round(sum(closed_without_human) / nullif(sum(closed), 0), 3) FROM conv),
         turns.n, turns.missed, rat.n, rat.avg_score,
         (SELECT count(*) FROM req),
         (SELECT round((percentile_cont(0.5) WITHIN GROUP (ORDER BY s))::numeric, 1) FROM resp WHERE s IS NOT NULL)
    FROM turns, rat
$$;
COMMENT ON FUNCTION parley.stats_summary(int, uuid) IS
  'Headline figures over the last p_days days: conversations, closed, AI resolution rate (closed without a human / closed), AI turns and misses, ratings, human requests and the median seconds from a human request to the first agent reply.';

-- Rollup ------------------------------------------------------------------------------

SELECT parley.apply_tenant_policies('parley.daily_stats');
GRANT SELECT ON parley.daily_stats TO parley_app;
GRANT SELECT, INSERT, UPDATE ON parley.daily_stats TO parley_jobs;

CREATE OR REPLACE FUNCTION parley.rollup_daily_stats(p_since date DEFAULT current_date - 1)
RETURNS int
LANGUAGE sql VOLATILE
AS $$
  WITH t AS (SELECT (SELECT parley.current_tenant_id()) AS id),
  keys AS (
    SELECT c.chatbot_id, c.created_at::date AS day FROM parley.conversations c, t
     WHERE c.tenant_id = t.id AND c.created_at >= p_since
    UNION SELECT a.chatbot_id, a.created_at::date FROM parley.assistant_turns a, t
     WHERE a.tenant_id = t.id AND a.created_at >= p_since
    UNION SELECT r.chatbot_id, r.created_at::date FROM parley.conversation_ratings r, t
     WHERE r.tenant_id = t.id AND r.created_at >= p_since
    UNION SELECT f.chatbot_id, f.created_at::date FROM parley.message_feedback f, t
     WHERE f.tenant_id = t.id AND f.created_at >= p_since),
  up AS (
    INSERT INTO parley.daily_stats AS s (tenant_id, chatbot_id, day, conversations, closed, closed_without_human,
                                         ai_turns, ai_unanswered, ratings, rating_sum, thumbs_up, thumbs_down, computed_at)
    SELECT t.id, k.chatbot_id, k.day,
           (SELECT count(*) FROM parley.conversations c WHERE c.tenant_id = t.id AND c.chatbot_id = k.chatbot_id
               AND c.created_at >= k.day AND c.created_at < k.day + 1),
           (SELECT count(*) FROM parley.conversations c WHERE c.tenant_id = t.id AND c.chatbot_id = k.chatbot_id
               AND c.created_at >= k.day AND c.created_at < k.day + 1 AND c.status = 'closed'),
           (SELECT count(*) FROM parley.conversations c WHERE c.tenant_id = t.id AND c.chatbot_id = k.chatbot_id
               AND c.created_at >= k.day AND c.created_at < k.day + 1 AND c.status = 'closed'
               AND NOT EXISTS (SELECT 1 FROM parley.events e WHERE e.tenant_id = c.tenant_id AND e.conversation_id = c.id
                                  AND e.kind IN ('human_requested', 'claimed', 'assigned'))),
           (SELECT count(*) FROM parley.assistant_turns a WHERE a.tenant_id = t.id AND a.chatbot_id = k.chatbot_id
               AND a.created_at >= k.day AND a.created_at < k.day + 1 AND a.outcome IN ('answered', 'unknown')),
           (SELECT count(*) FROM parley.assistant_turns a WHERE a.tenant_id = t.id AND a.chatbot_id = k.chatbot_id
               AND a.created_at >= k.day AND a.created_at < k.day + 1 AND a.outcome IN ('answered', 'unknown')
               AND NOT a.grounded),
           (SELECT count(*) FROM parley.conversation_ratings r WHERE r.tenant_id = t.id AND r.chatbot_id = k.chatbot_id
               AND r.created_at >= k.day AND r.created_at < k.day + 1),
           (SELECT coalesce(sum(r.score), 0) FROM parley.conversation_ratings r WHERE r.tenant_id = t.id
               AND r.chatbot_id = k.chatbot_id AND r.created_at >= k.day AND r.created_at < k.day + 1),
           (SELECT count(*) FROM parley.message_feedback f WHERE f.tenant_id = t.id AND f.chatbot_id = k.chatbot_id
               AND f.created_at >= k.day AND f.created_at < k.day + 1 AND f.value = 'up'),
           (SELECT count(*) FROM parley.message_feedback f WHERE f.tenant_id = t.id AND f.chatbot_id = k.chatbot_id
               AND f.created_at >= k.day AND f.created_at < k.day + 1 AND f.value = 'down'),
           now()
      FROM keys k, t
    ON CONFLICT (tenant_id, chatbot_id, day) DO UPDATE
       SET conversations = EXCLUDED.conversations, closed = EXCLUDED.closed,
           closed_without_human = EXCLUDED.closed_without_human, ai_turns = EXCLUDED.ai_turns,
           ai_unanswered = EXCLUDED.ai_unanswered, ratings = EXCLUDED.ratings, rating_sum = EXCLUDED.rating_sum,
           thumbs_up = EXCLUDED.thumbs_up, thumbs_down = EXCLUDED.thumbs_down, computed_at = now()
    RETURNING 1)
  SELECT count(*)::int FROM up
$$;
COMMENT ON FUNCTION parley.rollup_daily_stats(date) IS
  'Jobs: recompute the current tenant''s per-chatbot daily_stats rows from p_since (default yesterday) to today; returns rows written.';
REVOKE ALL ON FUNCTION parley.rollup_daily_stats(date) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION parley.rollup_daily_stats(date) TO parley_jobs;
