-- Alert channels per chatbot: tell people when a visitor asks for a person (human_requested), leaves
-- their details (lead_captured) or is unhappy (negative_feedback: a thumbs-down on a bot reply or an
-- end-of-chat rating of 1-2), by e-mail or a Slack incoming webhook, through the outbox (a generic
-- webhook is a customer webhook endpoint limited to the chatbot, sql/82_webhooks.sql). Also the
-- owners' notice when a webhook endpoint is paused after failing for days.

CREATE OR REPLACE FUNCTION parley.alert_event_kinds() RETURNS text[]
LANGUAGE sql IMMUTABLE
AS $$ SELECT ARRAY['human_requested', 'lead_captured', 'negative_feedback']::text[] $$;
COMMENT ON FUNCTION parley.alert_event_kinds() IS 'What an alert channel can be told about.';

CREATE OR REPLACE FUNCTION parley.create_alert_channel(p_id uuid, p_chatbot_id uuid, p_kind text, p_name text,
                                                      p_target text, p_events text[])
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
  PERFORM parley.require_role('admin');
  IF p_kind NOT IN ('email', 'slack') THEN
    PERFORM parley.raise_error(422, 'invalid_kind', 'An alert channel is email or slack (a generic webhook is a webhook endpoint with a chatbot).');
  END IF;
  IF p_events IS NULL OR cardinality(p_events) = 0 OR NOT p_events <@ parley.alert_event_kinds() THEN
    PERFORM parley.raise_error(422, 'invalid_event_kinds',
      'Alert on at least one of: ' || array_to_string(parley.alert_event_kinds(), ', ') || '.');
  END IF;
  IF p_kind = 'email' AND (p_target IS NULL OR p_target !~ '^[^@\s,;<>]+@[^@\s,;<>]+\.[^@\s,;<>]+$' OR length(p_target) > 320) THEN
    PERFORM parley.raise_error(422, 'invalid_email', 'Give one e-mail address.');
  END IF;
  IF p_name IS NULL OR length(btrim(p_name)) NOT BETWEEN 1 AND 100 THEN
    PERFORM parley.raise_error(422, 'invalid_name', 'The name is 1 to 100 characters.');
  END IF;
  PERFORM parley.require_live_chatbot(p_chatbot_id);
  PERFORM parley.lock_limit('alert_channels:' || p_chatbot_id);
  IF (SELECT count(*) FROM parley.outbox_destinations d
       WHERE d.tenant_id = parley.current_tenant_id() AND d.chatbot_id = p_chatbot_id AND d.kind IN ('email', 'slack')) >= 10 THEN
    PERFORM parley.raise_error(409, 'too_many_alerts', 'A chatbot has at most 10 alert channels.');
  END IF;
  INSERT INTO parley.outbox_destinations (tenant_id, id, kind, name, target, event_kinds, chatbot_id)
  VALUES (parley.current_tenant_id(), p_id, p_kind, btrim(p_name), p_target, p_events, p_chatbot_id);
  PERFORM parley.write_audit('alert_channel.created', 'alert_channel', p_id::text,
                             jsonb_build_object('kind', p_kind, 'chatbot_id', p_chatbot_id, 'events', p_events));
  RETURN parley.alert_channel_json(p_id);
END $$;
COMMENT ON FUNCTION parley.create_alert_channel(uuid, uuid, text, text, text, text[]) IS
  'Admins: an alert channel (email to one address, or slack whose incoming-webhook URL the server seals as its token; p_target is then a display label) for a chatbot of the current tenant, on a non-empty subset of alert_event_kinds(); at most 10 per chatbot. 422/404/409 otherwise.';

CREATE OR REPLACE FUNCTION parley.alert_channel_json(p_id uuid) RETURNS jsonb
LANGUAGE sql STABLE
AS $$
  SELECT jsonb_build_object('id', d.id, 'chatbot_id', d.chatbot_id, 'kind', d.kind, 'name', d.name,
                            'target', d.target, 'events', d.event_kinds, 'status', d.status,
                            'paused_reason', d.paused_reason, 'last_error', d.last_error,
                            'last_success_at', d.last_success_at, 'created_at', d.created_at)
    FROM parley.outbox_destinations d
   WHERE d.tenant_id = parley.current_tenant_id() AND d.id = p_id AND d.kind IN ('email', 'slack')
     AND d.chatbot_id IS NOT NULL
$$;
COMMENT ON FUNCTION parley.alert_channel_json(uuid) IS
  'An alert channel of the current tenant as the API shows it (never its Slack URL); NULL when unknown.';

CREATE OR REPLACE FUNCTION parley.send_test_alert(p_id uuid) RETURNS bigint
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
  v_bot text;
BEGIN
  PERFORM parley.require_role('admin');
  SELECT c.name INTO v_bot FROM parley.outbox_destinations d
    JOIN parley.chatbots c ON c.tenant_id = d.tenant_id AND c.id = d.chatbot_id
   WHERE d.tenant_id = parley.current_tenant_id() AND d.id = p_id AND d.kind IN ('email', 'slack');
  IF v_bot IS NULL THEN
    PERFORM parley.raise_error(404, 'not_found', 'No such alert channel.');
  END IF;
  RETURN parley.enqueue_delivery(p_id, 'alert.test', jsonb_build_object(
    'type', 'alert.test', 'timestamp', now(), 'data', jsonb_build_object('chatbot_name', v_bot)));
END $$;
COMMENT ON FUNCTION parley.send_test_alert(uuid) IS
  'Admins: queue a test alert to an alert channel of the current tenant; returns the delivery id.';

-- Negative feedback has no domain event: these triggers enqueue it for the subscribed destinations.
CREATE OR REPLACE FUNCTION parley.enqueue_negative_feedback() RETURNS trigger
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
  v_payload jsonb;
  v_row jsonb := to_jsonb(NEW);  -- the two tables have different columns
BEGIN
  IF coalesce(v_row->>'value', 'down') <> 'down' OR coalesce((v_row->>'score')::int, 1) > 2 THEN
    RETURN NULL;
  END IF;
  IF NOT EXISTS (SELECT 1 FROM parley.outbox_destinations d
                  WHERE d.tenant_id = NEW.tenant_id AND d.status <> 'disabled'
                    AND 'negative_feedback' = ANY (d.event_kinds)) THEN
    RETURN NULL;
  END IF;
  v_payload := jsonb_build_object(
    'type', 'conversation.negative_feedback', 'timestamp', now(),
    'data', jsonb_build_object(
      'conversation_id', NEW.conversation_id, 'chatbot_id', NEW.chatbot_id,
      'chatbot_name', (SELECT c.name FROM parley.chatbots c WHERE c.tenant_id = NEW.tenant_id AND c.id = NEW.chatbot_id),
      'rating', v_row->'score',
      'message_id', v_row->'message_id',
      'comment', NEW.comment));
  INSERT INTO parley.outbox (tenant_id, destination_id, kind, conversation_id, payload, deadline)
  SELECT NEW.tenant_id, d.id, 'conversation.negative_feedback', NEW.conversation_id, v_payload, now() + d.retry_window
    FROM parley.outbox_destinations d
   WHERE d.tenant_id = NEW.tenant_id AND d.status <> 'disabled' AND 'negative_feedback' = ANY (d.event_kinds)
     AND (d.chatbot_id IS NULL OR d.chatbot_id = NEW.chatbot_id);
  RETURN NULL;
END $$;
COMMENT ON FUNCTION parley.enqueue_negative_feedback() IS
  'Triggers t50_enqueue_negative_feedback on message_feedback (a thumbs-down) and conversation_ratings (score 1-2): one delivery per destination subscribed to negative_feedback, in the same transaction; drainers find it by polling (no NOTIFY).';

SELECT parley.ensure_trigger('parley.message_feedback', 't50_enqueue_negative_feedback', 'AFTER INSERT OR UPDATE OF value',
  $$FOR EACH ROW EXECUTE FUNCTION parley.enqueue_negative_feedback()$$);
SELECT parley.ensure_trigger('parley.conversation_ratings', 't50_enqueue_negative_feedback', 'AFTER INSERT OR UPDATE OF score',
  $$FOR EACH ROW EXECUTE FUNCTION parley.enqueue_negative_feedback()$$);

-- Owners' notices ------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION parley.workspace_owner_emails() RETURNS text[]
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = ''
AS $$
  SELECT coalesce(array_agg(u.email ORDER BY u.email), '{}')
    FROM parley.members m JOIN parley.users u ON u.id = m.user_id
   WHERE m.tenant_id = parley.current_tenant_id() AND m.role = 'owner'
$$;
COMMENT ON FUNCTION parley.workspace_owner_emails() IS
  'E-mail addresses of the current workspace''s owners (for notices sent through the outbox); definer because the jobs role reads no users.';
GRANT SELECT ON parley.members TO parley_auth;

-- The workspace's notice channel: e-mail to its owners (their addresses go with each notice).
CREATE OR REPLACE FUNCTION parley.notify_owners(p_kind text, p_data jsonb) RETURNS bigint
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
  v_tenant uuid := parley.current_tenant_id();
  v_id bigint;
BEGIN
  INSERT INTO parley.outbox (tenant_id, destination_id, kind, payload, deadline)
  VALUES (v_tenant, parley.system_destination(v_tenant, 'email', 'owners', 'Workspace owners', false), p_kind, jsonb_build_object(
            'type', p_kind, 'timestamp', now(), 'to', to_jsonb(parley.workspace_owner_emails()), 'data', p_data),
          now() + interval '72 hours')
  RETURNING id INTO v_id;
  RETURN v_id;
END $$;
COMMENT ON FUNCTION parley.notify_owners(text, jsonb) IS
  'Queue one e-mail notice (p_kind, e.g. notice.webhook_paused, notice.usage_warning; p_data its details) to the current workspace''s owners through the outbox (destination "Workspace owners", parley.system_destination); returns the delivery id.';

CREATE OR REPLACE FUNCTION parley.on_destination_paused(p_destination_id uuid) RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
  v_dest parley.outbox_destinations := parley.lock_destination(p_destination_id);  -- the pausing UPDATE holds it
BEGIN
  IF v_dest.kind IS DISTINCT FROM 'webhook' THEN
    RETURN;
  END IF;
  PERFORM parley.notify_owners('notice.webhook_paused', jsonb_build_object(
    'endpoint_id', v_dest.id, 'name', v_dest.name, 'url', v_dest.target,
    'reason', v_dest.paused_reason, 'failing_since', v_dest.failing_since));
END $$;
COMMENT ON FUNCTION parley.on_destination_paused(uuid) IS
  'Run in the transaction that pauses a destination: for a webhook endpoint (auto-disabled after failing for 5 days), queue an e-mail to the workspace owners through the outbox (destination "Workspace owners", created on first use).';
GRANT INSERT ON parley.outbox_destinations TO parley_jobs;

-- Owners and callers (parley.secure_functions, sql/05_access.sql).
SELECT parley.secure_functions('parley_auth', '{parley_app, parley_jobs}', 'parley.workspace_owner_emails()');
SELECT parley.secure_functions(NULL, '{parley_app, parley_jobs}', 'parley.notify_owners(text, jsonb)');
