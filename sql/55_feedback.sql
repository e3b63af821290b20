-- CSAT: thumbs on bot replies, end-of-chat ratings, and the negative-feedback triage list.
-- Visitors write through the functions (their conversation is checked against the
-- actor id the widget token carries); members read and triage.

SELECT parley.apply_tenant_policies('parley.message_feedback');
SELECT parley.apply_tenant_policies('parley.conversation_ratings');

GRANT SELECT, INSERT, UPDATE ON parley.message_feedback, parley.conversation_ratings TO parley_app;
GRANT SELECT ON parley.message_feedback, parley.conversation_ratings TO parley_jobs;

-- A conversation someone names: the visitor's own (403 for another), one of the tenant's (404).
CREATE OR REPLACE FUNCTION parley.check_conversation_access(p_conversation_id uuid) RETURNS uuid
LANGUAGE plpgsql STABLE
AS $$
DECLARE
  v_chatbot uuid;
BEGIN
  PERFORM parley.require_own_conversation(p_conversation_id);
  SELECT c.chatbot_id INTO v_chatbot FROM parley.conversations c
   WHERE c.tenant_id = (SELECT parley.current_tenant_id()) AND c.id = p_conversation_id;
  IF v_chatbot IS NULL THEN
    PERFORM parley.raise_error(404, 'not_found', 'No such conversation.');
  END IF;
  RETURN v_chatbot;
END $$;
COMMENT ON FUNCTION parley.check_conversation_access(uuid) IS
  'The chatbot of a conversation of the current tenant; 403 when a visitor asks about another conversation, 404 when unknown.';

CREATE OR REPLACE FUNCTION parley.record_feedback(
  p_conversation_id uuid, p_message_id bigint, p_value text, p_comment text DEFAULT '')
RETURNS parley.message_feedback
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
  v_chatbot uuid := parley.check_conversation_access(p_conversation_id);
  v_row parley.message_feedback;
BEGIN
  IF p_value NOT IN ('up', 'down') THEN
    PERFORM parley.raise_error(422, 'invalid_feedback', 'Feedback is "up" or "down".');
  END IF;
  IF NOT EXISTS (SELECT 1 FROM parley.messages m
                  WHERE m.tenant_id = (SELECT parley.current_tenant_id()) AND m.conversation_id = p_conversation_id
                    AND m.id = p_message_id AND m.author = 'bot') THEN
    PERFORM parley.raise_error(404, 'not_found', 'No such bot reply in this conversation.');
  END IF;
  INSERT INTO parley.message_feedback AS f (tenant_id, message_id, conversation_id, chatbot_id, value, comment)
  VALUES (parley.current_tenant_id(), p_message_id, p_conversation_id, v_chatbot, p_value,
          left(coalesce(p_comment, ''), 2000))
  ON CONFLICT (tenant_id, message_id) DO UPDATE
     SET value = EXCLUDED.value, comment = EXCLUDED.comment, updated_at = now(),
         triaged_at = CASE WHEN f.value = EXCLUDED.value THEN f.triaged_at END,
         triaged_by = CASE WHEN f.value = EXCLUDED.value THEN f.triaged_by END
  RETURNING * INTO v_row;
  RETURN v_row;
END $$;
COMMENT ON FUNCTION parley.record_feedback(uuid, bigint, text, text) IS
  'Thumbs up/down (with an optional comment) on one bot reply; a second vote replaces the first.';

CREATE OR REPLACE FUNCTION parley.rate_conversation(p_conversation_id uuid, p_score int, p_comment text DEFAULT '')
RETURNS parley.conversation_ratings
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
  v_chatbot uuid := parley.check_conversation_access(p_conversation_id);
  v_row parley.conversation_ratings;
BEGIN
  IF p_score IS NULL OR p_score NOT BETWEEN 1 AND 5 THEN
    PERFORM parley.raise_error(422, 'invalid_rating', 'A rating is a whole number from 1 to 5.');
  END IF;
  INSERT INTO parley.conversation_ratings AS r (tenant_id, conversation_id, chatbot_id, score, comment)
  VALUES (parley.current_tenant_id(), p_conversation_id, v_chatbot, p_score, left(coalesce(p_comment, ''), 2000))
  ON CONFLICT (tenant_id, conversation_id) DO UPDATE
     SET score = EXCLUDED.score, comment = EXCLUDED.comment, created_at = now()
  RETURNING * INTO v_row;
  RETURN v_row;
END $$;
COMMENT ON FUNCTION parley.rate_conversation(uuid, int, text) IS
  'End-of-chat rating 1..5 with an optional comment; one per conversation, a second one replaces it.';

-- Members triage thumbs-down: the bot's reply, the question before it and the comment.
CREATE OR REPLACE FUNCTION parley.negative_feedback(
  p_chatbot_id uuid DEFAULT NULL, p_include_triaged boolean DEFAULT false, p_limit int DEFAULT 50,
  p_before timestamptz DEFAULT NULL)
RETURNS TABLE (message_id bigint, conversation_id uuid, chatbot_id uuid, comment text, created_at timestamptz,
               triaged_at timestamptz, reply text, question text, citations jsonb)
LANGUAGE sql STABLE
AS $$
  SELECT f.message_id, f.conversation_id, f.chatbot_id, f.comment, f.created_at, f.triaged_at,
         m.body, q.body, coalesce(m.meta->'citations', '[]')
    FROM parley.message_feedback f
    LEFT JOIN LATERAL (
      SELECT mm.body, mm.meta FROM parley.messages mm
       WHERE mm.tenant_id = f.tenant_id AND mm.conversation_id = f.conversation_id AND mm.id = f.message_id
       LIMIT 1) m ON true
    LEFT JOIN LATERAL (
      SELECT mq.body FROM parley.messages mq
       WHERE mq.tenant_id = f.tenant_id AND mq.conversation_id = f.conversation_id
         AND mq.id < f.message_id AND mq.author = 'visitor'
       ORDER BY mq.id DESC LIMIT 1) q ON true
   WHERE f.tenant_id = (SELECT parley.current_tenant_id()) AND f.value = 'down'
     AND (p_chatbot_id IS NULL OR f.chatbot_id = p_chatbot_id)
     AND (p_include_triaged OR f.triaged_at IS NULL)
     AND (p_before IS NULL OR f.created_at < p_before)
   ORDER BY f.created_at DESC
   LIMIT least(greatest(coalesce(p_limit, 50), 1), 200)
$$;
COMMENT ON FUNCTION parley.negative_feedback(uuid, boolean, int, timestamptz) IS
  'Thumbs-down replies of the current tenant, newest first, with the visitor question before each and the reply''s citations: the triage list.';

CREATE OR REPLACE FUNCTION parley.triage_feedback(p_message_id bigint, p_done boolean DEFAULT true) RETURNS boolean
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
  UPDATE parley.message_feedback f
     SET triaged_at = CASE WHEN p_done THEN now() END,
         triaged_by = CASE WHEN p_done THEN parley.current_user_id() END
   WHERE f.tenant_id = (SELECT parley.current_tenant_id()) AND f.message_id = p_message_id;
  RETURN FOUND;
END $$;
COMMENT ON FUNCTION parley.triage_feedback(bigint, boolean) IS
  'Mark a feedback item triaged (or back to open); false when not found.';
